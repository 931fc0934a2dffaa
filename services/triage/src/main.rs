//! `coval-triage`: the triage stage as its own worker process on NATS JetStream.
//! `coval-triage --help` lists its options; `coval worker triage` runs the same code.

fn main() -> std::process::ExitCode {
    bus::worker::main(proto::Stage::Triage, |w| {
        triage::handler::TriageStage::from_context(&w.context)
    })
}

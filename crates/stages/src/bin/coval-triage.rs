//! `coval-triage`: the triage stage as its own worker process on NATS JetStream.
//! `coval-triage --help` lists its options; `coval worker triage` runs the same code.

fn main() -> std::process::ExitCode {
    stages::main(proto::Stage::Triage)
}

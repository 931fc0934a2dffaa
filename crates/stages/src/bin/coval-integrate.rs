//! `coval-integrate`: the integrate stage as its own worker process on NATS JetStream.
//! `coval-integrate --help` lists its options; `coval worker integrate` runs the same code.

fn main() -> std::process::ExitCode {
    stages::main(proto::Stage::Integrate)
}

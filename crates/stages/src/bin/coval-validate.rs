//! `coval-validate`: the validate stage as its own worker process on NATS JetStream.
//! `coval-validate --help` lists its options; `coval worker validate` runs the same code.

stages::worker_binary!(proto::Stage::Validate);

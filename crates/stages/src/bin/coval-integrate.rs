//! `coval-integrate`: the integrate stage as its own worker process on NATS JetStream.
//! `coval-integrate --help` lists its options; `coval worker integrate` runs the same code.

stages::worker_binary!(proto::Stage::Integrate);

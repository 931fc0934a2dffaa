//! `coval-decision`: the decision stage as its own worker process on NATS JetStream.
//! `coval-decision --help` lists its options; `coval worker decision` runs the same code.

stages::worker_binary!(proto::Stage::Decision);

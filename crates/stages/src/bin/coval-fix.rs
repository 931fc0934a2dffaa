//! `coval-fix`: the fix stage as its own worker process on NATS JetStream.
//! `coval-fix --help` lists its options; `coval worker fix` runs the same code.

stages::worker_binary!(proto::Stage::Fix);

//! `coval-mre`: the mre stage as its own worker process on NATS JetStream.
//! `coval-mre --help` lists its options; `coval worker mre` runs the same code.

stages::worker_binary!(proto::Stage::Mre);

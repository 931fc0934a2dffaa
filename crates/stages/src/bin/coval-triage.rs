//! `coval-triage`: the triage stage as its own worker process on NATS JetStream.
//! `coval-triage --help` lists its options; `coval worker triage` runs the same code.

stages::worker_binary!(proto::Stage::Triage);

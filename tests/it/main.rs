//! coval's integration tests: one binary, one module per area. Services are real: a
//! nats-server per test (from `scripts/dev-services.sh`), sled on disk, real child processes.

mod architecture;
mod bus;
mod ci;
mod cluster;
mod compose;
mod crash;
mod faults;
mod health;
mod k8s;
mod mre;
mod patch;
mod real;
mod sandbox;
mod trace;
mod triage;
mod workers;

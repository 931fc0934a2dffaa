//! coval's shared runtime: the two buses (in-process and NATS JetStream), the stage runtime
//! that runs a handler on either, the sled store, configuration and telemetry.

pub mod bus;
pub mod config;
pub mod context;
pub mod jetstream;
pub mod memory;
pub mod patch;
pub mod projects;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod worker;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

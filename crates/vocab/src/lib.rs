//! The words every coval crate shares, defined once: what belongs to a project tree and how
//! it is copied (`tree`), the snapshot size limit, and the clock. It owns no state and does no
//! network IO; it must never import another coval crate but `proto`, so that everything else
//! can depend on it.

pub mod tree;

/// The default largest snapshot: 256 MiB of file contents.
pub const DEFAULT_SNAPSHOT_MAX_BYTES: u64 = 256 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

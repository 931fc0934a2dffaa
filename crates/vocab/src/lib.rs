//! The words every coval crate shares, defined once: what belongs to a project tree and how
//! it is copied (`tree`), the languages and which file is written in which (`language`), which
//! files are tests (`test_path`), the layout of a workspace (`workspace`), scratch dirs that
//! do not outlive their process (`scratch`), the exit codes (`exit`), the snapshot size
//! limit, and the clock. It owns no state and does no network IO; it must never import
//! another coval crate but `proto`, so that everything else can depend on it.

pub mod exit;
pub mod language;
pub mod scratch;
pub mod test_path;
pub mod tree;
pub mod workspace;

pub use language::{Language, LanguageExt, language_of};
pub use test_path::is_test_path;
pub use workspace::Workspace;

/// The default largest snapshot: 256 MiB of file contents.
pub const DEFAULT_SNAPSHOT_MAX_BYTES: u64 = 256 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

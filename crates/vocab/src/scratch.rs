//! Scratch directories that do not outlive their process: sandbox copies, warm-server and
//! staging dirs in the system temp dir, validation work trees and staged trees in the
//! workspace. Each is locked (an exclusive `flock` on the directory itself) by the process
//! that made it for as long as that process holds it; the kernel drops the lock when the
//! process dies, however it dies (SIGKILL included), so [`sweep`] removes exactly the dirs
//! whose maker is gone and never one a live process still uses.
//!
//! Names are `<prefix>p<pid>-<n>-<random>`: unique among live processes (the pid and a
//! per-process counter), and only names of this shape are swept, never someone else's dir
//! that happens to share the prefix. A dir is made under a hidden name
//! (`.creating-<name>`), locked, and only then renamed to its sweepable name, so a sweep
//! running at the same time never sees it unlocked. A process killed in those few
//! microseconds leaves a hidden dir: swept once the process its name carries is gone (no
//! `/proc/<pid>`), or, where that cannot be told, once it is older than [`CREATING_GRACE`].
//!
//! `flock` locks belong to an open file description, not to a process: a sweep in the same
//! process as a live dir cannot take its lock either. The lock's descriptor is opened with
//! `O_CLOEXEC` (std's default), so sandboxed children never inherit it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where a dir is made before it is locked and given its sweepable name.
const CREATING: &str = ".creating-";

/// How old a hidden, still-being-created dir whose maker may be alive must be before a sweep
/// removes it (its maker renames it within microseconds, so an older one lost its maker).
pub const CREATING_GRACE: Duration = Duration::from_secs(600);

/// A directory removed when dropped, locked while it lives (see the module docs).
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// The directory opened and `flock`ed: held until drop, after the dir is removed.
    _lock: File,
    keep: bool,
}

impl ScratchDir {
    /// Makes `<parent>/<prefix>p<pid>-<n>-<random>` (mode 0700), locked by this process.
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{prefix}p{}-{n}-{}", std::process::id(), random_hex(n));
            let hidden = parent.join(format!("{CREATING}{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&hidden) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let locked = File::open(&hidden).and_then(|f| match f.try_lock() {
                Ok(()) => Ok(f),
                Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "a fresh scratch dir is locked by someone else",
                )),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            });
            let path = parent.join(&name);
            // The name is unique among live processes: this rename replaces no dir in use.
            match locked.and_then(|f| std::fs::rename(&hidden, &path).map(|()| f)) {
                Ok(lock) => {
                    return Ok(ScratchDir {
                        path,
                        _lock: lock,
                        keep: false,
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&hidden);
                    return Err(e);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "cannot make a scratch dir in {}: every name tried exists",
                parent.display()
            ),
        ))
    }

    /// Like [`ScratchDir::new_in`] in the system temp dir.
    pub fn new(prefix: &str) -> io::Result<ScratchDir> {
        ScratchDir::new_in(&std::env::temp_dir(), prefix)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames `self.path()/<inner>` to `dst` (the way a staged tree is put in place), then
    /// removes the rest as drop does.
    pub fn persist_inner(self, inner: &str, dst: &Path) -> io::Result<()> {
        std::fs::rename(self.path.join(inner), dst)
    }

    /// Leaves the directory on disk when dropped (its lock is still released).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Removed while still locked, so no sweep can race the removal.
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// The prefixes of coval's scratch dirs in the system temp dir: the local sandbox's copies,
/// its warm servers' dirs, the Docker sandbox's staging dirs, `--apply`'s planning copies.
pub const TEMP_PREFIXES: [&str; 4] = [
    "coval-local-",
    "coval-warm-",
    "coval-sandbox-",
    "coval-apply-",
];

/// [`sweep`] of every prefix in [`TEMP_PREFIXES`] in the system temp dir.
pub fn sweep_temp() -> Swept {
    let dir = std::env::temp_dir();
    let mut swept = Swept::default();
    for p in TEMP_PREFIXES {
        swept += sweep(&dir, p);
    }
    swept
}

/// What one [`sweep`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Dirs of processes that are gone, removed.
    pub removed: usize,
    /// Dirs locked by a live process, left alone.
    pub live: usize,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, o: Swept) {
        self.removed += o.removed;
        self.live += o.live;
    }
}

/// Removes the scratch dirs `<parent>/<prefix>…` whose maker is gone (their lock can be
/// taken), and hidden half-made ones whose maker is gone or that are older than
/// [`CREATING_GRACE`]. Symlinks, files and
/// names of any other shape are never touched. A missing `parent` is nothing to sweep.
pub fn sweep(parent: &Path, prefix: &str) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return swept;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let (hidden, rest) = match name.strip_prefix(CREATING) {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if !rest.strip_prefix(prefix).is_some_and(is_scratch_suffix) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if hidden
            && !maker_gone(&rest[prefix.len()..])
            && meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age < CREATING_GRACE)
        {
            continue;
        }
        match remove_if_unlocked(&e.path()) {
            Some(true) => swept.removed += 1,
            Some(false) => swept.live += 1,
            None => {}
        }
    }
    swept
}

/// Whether a live process holds the scratch dir `dir` (false when it is gone or unlocked):
/// what decides that a resource tied to it (a container mounting it) lost its owner.
pub fn owner_alive(dir: &Path) -> bool {
    File::open(dir).is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// `Some(true)`: its maker was gone and it is removed; `Some(false)`: a live process holds
/// it; `None`: it could not be opened or removed (another user's, say).
fn remove_if_unlocked(dir: &Path) -> Option<bool> {
    let f = File::open(dir).ok()?;
    match f.try_lock() {
        Ok(()) => {
            // Still locked by us while it goes.
            remove_tree(dir).ok().map(|()| true)
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(false),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Removes `dir` and everything in it, also directories whose mode forbids it (a copy of a
/// read-only tree): those are opened up (owner rwx, no symlink followed) and removal tried
/// again.
fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(dir);
            std::fs::remove_dir_all(dir)
        }
        r => r,
    }
}

fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        open_up(&e.path());
    }
}

/// Whether the process whose pid the scratch name `p<pid>-…` carries is gone: no
/// `/proc/<pid>` where `/proc` is mounted. (A reused pid only keeps the dir until
/// [`CREATING_GRACE`]; a live process's dir is never taken for a dead one's.)
fn maker_gone(suffix: &str) -> bool {
    let Some(pid) = suffix
        .strip_prefix('p')
        .and_then(|s| s.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// `p<pid>-<n>-<16 hex>`: the shape [`ScratchDir::new_in`] makes, and nothing else.
fn is_scratch_suffix(s: &str) -> bool {
    let Some(s) = s.strip_prefix('p') else {
        return false;
    };
    let parts: Vec<&str> = s.split('-').collect();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [pid, n, r]
        if digits(pid) && digits(n) && r.len() == 16 && r.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn random_hex(n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_is_removed_on_drop_and_a_live_one_is_never_swept() {
        let t = tempfile::tempdir().unwrap();
        let a = ScratchDir::new_in(t.path(), "coval-x-").unwrap();
        std::fs::write(a.path().join("f"), "x").unwrap();
        let name = a.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("coval-x-p"), "{name}");
        // The same process, another descriptor: still locked.
        assert_eq!(
            sweep(t.path(), "coval-x-"),
            Swept {
                removed: 0,
                live: 1
            }
        );
        assert!(a.path().join("f").is_file());
        assert!(owner_alive(a.path()));
        let p = a.path().to_owned();
        drop(a);
        assert!(!p.exists() && !owner_alive(&p));
    }

    #[test]
    fn an_unlocked_dir_of_the_scratch_shape_is_swept_and_nothing_else_is() {
        let t = tempfile::tempdir().unwrap();
        // What a killed process leaves: the dir, its lock gone with the process.
        let dead = ScratchDir::new_in(t.path(), "coval-x-").unwrap().keep();
        std::fs::write(dead.join("f"), "x").unwrap();
        assert!(!owner_alive(&dead));
        // Same prefix, another shape (an older tempfile-made dir, or someone else's).
        let other = t.path().join("coval-x-abc123");
        std::fs::create_dir(&other).unwrap();
        // A file and a symlink of the scratch shape.
        let file = t.path().join("coval-x-p1-2-0123456789abcdef");
        std::fs::write(&file, "x").unwrap();
        let target = tempfile::tempdir().unwrap();
        let link = t.path().join("coval-x-p1-3-0123456789abcdef");
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        // A half-made hidden dir of a process that may live (pid 1 does): kept for now. One
        // of a process that is gone (pid 2^22 + 1 is above Linux's pid_max): swept.
        let fresh = t.path().join(".creating-coval-x-p1-4-0123456789abcdef");
        std::fs::create_dir(&fresh).unwrap();
        let orphan = t
            .path()
            .join(".creating-coval-x-p4194305-4-0123456789abcdef");
        std::fs::create_dir(&orphan).unwrap();
        assert_eq!(
            sweep(t.path(), "coval-x-"),
            Swept {
                removed: 2,
                live: 0
            }
        );
        assert!(!dead.exists() && !orphan.exists());
        assert!(other.is_dir() && file.is_file() && link.exists() && fresh.is_dir());
        assert!(target.path().is_dir());
        // Another prefix is another kind of dir.
        let y = ScratchDir::new_in(t.path(), "coval-y-").unwrap().keep();
        assert_eq!(sweep(t.path(), "coval-x-"), Swept::default());
        assert!(y.is_dir());
    }

    #[test]
    fn a_dir_holding_read_only_directories_is_still_removed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let a = ScratchDir::new_in(t.path(), "coval-x-").unwrap();
        let ro = a.path().join("tree/sub");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(ro.join("f"), "x").unwrap();
        for d in [ro.as_path(), ro.parent().unwrap()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        let p = a.path().to_owned();
        drop(a);
        assert!(!p.exists());
    }

    #[test]
    fn the_shape_is_exactly_pid_counter_random() {
        for ok in ["p1-0-0123456789abcdef", "p4242-17-ffffffffffffffff"] {
            assert!(is_scratch_suffix(ok), "{ok}");
        }
        for bad in [
            "",
            "abc123",
            "p-0-0123456789abcdef",
            "p1-0-0123456789abcde",
            "p1-0-0123456789abcdeg",
            "p1-0-0123456789abcdef-x",
            "1-0-0123456789abcdef",
        ] {
            assert!(!is_scratch_suffix(bad), "{bad}");
        }
    }

    #[test]
    fn a_missing_parent_is_nothing_to_sweep() {
        assert_eq!(
            sweep(Path::new("/nonexistent/coval"), "coval-x-"),
            Swept::default()
        );
    }
}

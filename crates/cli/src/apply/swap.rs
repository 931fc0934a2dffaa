//! Replacing files in a tree that its user may be editing at the same moment, without ever
//! losing their edit.
//!
//! No file system offers compare-and-swap on a path, and editors take no locks, so "check the
//! file is unchanged, then write it" always leaves a window in which an edit is overwritten.
//! Instead, each file is swapped first and checked after:
//!
//! 1. The new content is written to a hidden file beside the target (same directory, so the
//!    same file system), with the target's mode and owner, and synced. Every file is written
//!    before any is swapped: a directory coval cannot write fails here, with nothing changed.
//! 2. `renameat2(RENAME_EXCHANGE)` swaps the two names in one atomic step: the path now holds
//!    the new content, and the hidden name holds exactly the file that was at the path at
//!    that instant. From then on, anything that opens the path (an editor saving, `echo >`)
//!    writes the new file: the user's later edit wins over the patch, and nothing is lost.
//! 3. The displaced file is compared with what the repair started from. Before reading it,
//!    coval takes a write lease on it (`F_SETLEASE`), which the kernel grants only when no
//!    other process has the file open: no one can still be writing into it through a
//!    descriptor opened before the swap. (A process waits for the lease up to
//!    [`LEASE_WAIT`]; where leases are not supported the check is made twice, [`SETTLE`]
//!    apart.) If it differs, the user edited it: the swap is undone and coval refuses.
//! 4. When every file is swapped and checked, the displaced files are checked once more and
//!    removed. A refusal at any file undoes the files swapped before it: each is swapped back
//!    only if the path still holds coval's file unchanged (else the user edited it after the
//!    swap, and their file stays).
//!
//! What is left, and cannot be closed without the editors' cooperation: a process inside
//! open(2) of the old file at the instant the lease is granted (it then writes into a file
//! coval is removing), and the order of a patch's files (they are swapped one after the
//! other, so another program can see the first swapped before the last). A patch that only
//! creates or deletes files uses `RENAME_NOREPLACE` and a rename away, checked the same way.
//! File systems without `renameat2` flags get the same steps from `rename`, `link` and
//! `unlink`, with a window of microseconds in which the path is missing.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a check waits for other processes to close a displaced file.
pub const LEASE_WAIT: Duration = Duration::from_secs(2);

/// Without leases: the time between the two reads of a displaced file.
pub const SETTLE: Duration = Duration::from_millis(50);

/// One file of a patch: its content when the repair started and after the patch (`None`:
/// absent).
#[derive(Debug, Clone)]
pub struct Change {
    pub rel: String,
    pub then: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

#[derive(Debug)]
pub enum CommitError {
    /// These files were edited (or created, or deleted) since the repair started; nothing
    /// was changed.
    Changed(Vec<String>),
    /// A directory (or file) coval may not write; nothing was changed.
    Denied { path: PathBuf, source: io::Error },
    /// Anything else, with what was being done; the files swapped before it were restored.
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> CommitError + 'a {
    move |source| {
        if is_denied(&source) {
            CommitError::Denied {
                path: path.to_owned(),
                source,
            }
        } else {
            CommitError::Io {
                path: path.to_owned(),
                what,
                source,
            }
        }
    }
}

/// Permission refused, or a read-only file system.
pub fn is_denied(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    ) || e.raw_os_error() == Some(libc::EPERM)
}

/// A file's identity, to tell coval's file from one the user put at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id {
    dev: u64,
    ino: u64,
}

fn id_of(path: &Path) -> Option<Id> {
    std::fs::symlink_metadata(path).ok().map(|m| Id {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// A new content written beside its target, not yet swapped in.
struct Staged {
    target: PathBuf,
    tmp: PathBuf,
    id: Id,
}

/// A file swapped (or created, or removed); what undoing it needs.
enum Done {
    /// `held` is the displaced file (equal to `then` when checked); the path holds `ours`.
    Replaced {
        target: PathBuf,
        held: PathBuf,
        ours: Id,
        then: Vec<u8>,
        new: Vec<u8>,
    },
    Created {
        target: PathBuf,
        ours: Id,
        new: Vec<u8>,
    },
    Deleted {
        target: PathBuf,
        held: PathBuf,
        then: Vec<u8>,
    },
}

/// A hidden name beside `target` that this process has not used: `.<name>.coval-<what>-<pid>-<n>`.
fn beside(target: &Path, what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.coval-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Applies `changes` under `root` as the module docs describe: all or nothing, never over an
/// edit made since the repair started.
pub fn commit(root: &Path, changes: &[Change]) -> Result<(), CommitError> {
    ignore_lease_breaks();
    // 1. Every new content beside its target, before anything is swapped.
    let mut staged: Vec<Option<Staged>> = vec![];
    for c in changes {
        match c.new.as_deref().map(|n| stage(&root.join(&c.rel), n)) {
            None => staged.push(None),
            Some(Ok(s)) => staged.push(Some(s)),
            Some(Err(e)) => {
                remove_staged(&staged);
                return Err(e);
            }
        }
    }
    // 2, 3. Swap and check, one file at a time.
    let mut done: Vec<Done> = vec![];
    for (i, c) in changes.iter().enumerate() {
        let target = root.join(&c.rel);
        let step = match (&c.then, &c.new, staged[i].as_ref()) {
            (Some(then), Some(new), Some(s)) => replace(s, then, new),
            (None, Some(new), Some(s)) => create(s, new),
            (Some(then), None, _) => delete(&target, then),
            _ => Ok(None),
        };
        match step {
            Ok(Some(d)) => done.push(d),
            Ok(None) => {}
            Err(e) => {
                let e = match e {
                    Swap::Changed => CommitError::Changed(vec![c.rel.clone()]),
                    Swap::Failed(e) => e,
                };
                remove_staged(&staged[i + 1..]);
                if let Some(s) = &staged[i] {
                    let _ = std::fs::remove_file(&s.tmp);
                }
                undo_all(done);
                return Err(e);
            }
        }
    }
    // 4. The displaced files once more (a descriptor opened before a swap may have written
    // since), then they go.
    let late: Vec<String> = done
        .iter()
        .zip(changes)
        .filter_map(|(d, c)| match d {
            Done::Replaced { held, then, .. } | Done::Deleted { held, then, .. } => {
                (!unchanged(held, then).unwrap_or(false)).then(|| c.rel.clone())
            }
            Done::Created { .. } => None,
        })
        .collect();
    if !late.is_empty() {
        undo_all(done);
        return Err(CommitError::Changed(late));
    }
    for d in done {
        if let Done::Replaced { held, .. } | Done::Deleted { held, .. } = d {
            let _ = std::fs::remove_file(held);
        }
    }
    Ok(())
}

enum Swap {
    /// The user's file differs from what the repair started from; this file is as it was.
    Changed,
    Failed(CommitError),
}

impl From<CommitError> for Swap {
    fn from(e: CommitError) -> Swap {
        Swap::Failed(e)
    }
}

fn stage(target: &Path, content: &[u8]) -> Result<Staged, CommitError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create the directory"))?;
    }
    let old = std::fs::metadata(target).ok();
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let tmp = beside(target, "new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(dir, "cannot write a file in"))?;
    let written = (|| {
        f.write_all(content)?;
        if let Some(m) = &old {
            // Root applying to a user's tree: the file stays theirs (an error here is not
            // worth refusing for).
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        f.metadata()
    })();
    match written {
        Ok(m) => Ok(Staged {
            target: target.to_owned(),
            tmp,
            id: Id {
                dev: m.dev(),
                ino: m.ino(),
            },
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(&tmp, "cannot write")(e))
        }
    }
}

fn remove_staged(staged: &[Option<Staged>]) {
    for s in staged.iter().flatten() {
        let _ = std::fs::remove_file(&s.tmp);
    }
}

fn replace(s: &Staged, then: &[u8], new: &[u8]) -> Result<Option<Done>, Swap> {
    match exchange(&s.tmp, &s.target) {
        Ok(()) => {}
        // The user deleted the file.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(&s.tmp);
            return Err(Swap::Changed);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&s.tmp);
            return Err(io_err(&s.target, "cannot swap in")(e).into());
        }
    }
    let done = Done::Replaced {
        target: s.target.clone(),
        held: s.tmp.clone(),
        ours: s.id,
        then: then.to_vec(),
        new: new.to_vec(),
    };
    match unchanged(&s.tmp, then) {
        Ok(true) => Ok(Some(done)),
        Ok(false) => {
            undo(done);
            Err(Swap::Changed)
        }
        Err(e) => {
            undo(done);
            Err(io_err(&s.target, "cannot read back")(e).into())
        }
    }
}

fn create(s: &Staged, new: &[u8]) -> Result<Option<Done>, Swap> {
    match rename_noreplace(&s.tmp, &s.target) {
        Ok(()) => Ok(Some(Done::Created {
            target: s.target.clone(),
            ours: s.id,
            new: new.to_vec(),
        })),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&s.tmp);
            Err(Swap::Changed)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&s.tmp);
            Err(io_err(&s.target, "cannot create")(e).into())
        }
    }
}

fn delete(target: &Path, then: &[u8]) -> Result<Option<Done>, Swap> {
    let held = beside(target, "old");
    match rename_noreplace(target, &held) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Swap::Changed),
        Err(e) => return Err(io_err(target, "cannot remove")(e).into()),
    }
    let done = Done::Deleted {
        target: target.to_owned(),
        held: held.clone(),
        then: then.to_vec(),
    };
    match unchanged(&held, then) {
        Ok(true) => Ok(Some(done)),
        Ok(false) => {
            undo(done);
            Err(Swap::Changed)
        }
        Err(e) => {
            undo(done);
            Err(io_err(target, "cannot read back")(e).into())
        }
    }
}

fn undo_all(done: Vec<Done>) {
    for d in done.into_iter().rev() {
        undo(d);
    }
}

/// Puts back what was at the path, unless the user has since put something there of their
/// own (then theirs stays, and the displaced file goes only if it is what the repair started
/// from).
fn undo(d: Done) {
    match d {
        Done::Replaced {
            target,
            held,
            ours,
            then,
            new,
        } => {
            if id_of(&target) == Some(ours) && exchange(&held, &target).is_ok() {
                // `held` now names coval's file: an edit made into it after the swap goes
                // back to the path.
                if unchanged(&held, &new).unwrap_or(false) {
                    let _ = std::fs::remove_file(&held);
                } else if exchange(&held, &target).is_ok() {
                    discard_if(&held, &then);
                }
            } else {
                discard_if(&held, &then);
            }
        }
        Done::Created { target, ours, new } => {
            if id_of(&target) == Some(ours) {
                let gone = beside(&target, "old");
                if rename_noreplace(&target, &gone).is_ok() {
                    if unchanged(&gone, &new).unwrap_or(false) {
                        let _ = std::fs::remove_file(&gone);
                    } else {
                        let _ = rename_noreplace(&gone, &target);
                    }
                }
            }
        }
        Done::Deleted { target, held, then } => {
            if rename_noreplace(&held, &target).is_err() {
                discard_if(&held, &then);
            }
        }
    }
}

/// Removes `path` if it holds `content`; otherwise it is someone's edit and stays (named in
/// a warning, since it now sits under a hidden name).
fn discard_if(path: &Path, content: &[u8]) {
    if unchanged(path, content).unwrap_or(false) {
        let _ = std::fs::remove_file(path);
    } else if path.exists() {
        eprintln!(
            "coval: warning: an edit made while the patch was being applied is kept in {}",
            path.display()
        );
    }
}

/// Whether the file at `path` (displaced, so nothing opens it by its old name any more)
/// holds exactly `expected`, read when no other process has it open.
fn unchanged(path: &Path, expected: &[u8]) -> io::Result<bool> {
    let f = File::open(path)?;
    match lease(&f) {
        Ok(()) => {
            let same = read_all(&f)? == expected;
            unlease(&f);
            Ok(same)
        }
        // No leases here (another file system, another owner without CAP_LEASE): read twice,
        // far enough apart for a write in flight to land.
        Err(_) => {
            if read_all(&f)? != expected {
                return Ok(false);
            }
            std::thread::sleep(SETTLE);
            Ok(read_all(&f)? == expected)
        }
    }
}

fn read_all(mut f: &File) -> io::Result<Vec<u8>> {
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(0))?;
    let mut v = vec![];
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// A write lease on `f`: granted only while no other descriptor has the file open. Waits up
/// to [`LEASE_WAIT`] for others to close it; `Err` when leases are not available here.
#[allow(unsafe_code)]
fn lease(f: &File) -> io::Result<()> {
    let deadline = Instant::now() + LEASE_WAIT;
    loop {
        // SAFETY: fcntl on a descriptor this function borrows; no memory is passed.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
        if Instant::now() >= deadline {
            // Still open elsewhere: read it anyway (the caller compares), but say why the
            // answer may change.
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[allow(unsafe_code)]
fn unlease(f: &File) {
    // SAFETY: as in `lease`.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

/// A lease break is announced with SIGIO, whose default action ends the process; coval holds
/// a lease for one read, so the announcement is not needed.
#[allow(unsafe_code)]
fn ignore_lease_breaks() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
}

#[allow(unsafe_code)]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Swaps the names `a` and `b` atomically (both must exist).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    match renameat2(a, b, libc::RENAME_EXCHANGE) {
        Err(e) if unsupported(&e) => {
            // Rename `b` away, `a` into its place, the old `b` to `a`'s name.
            let away = beside(b, "old");
            rename_noreplace(b, &away)?;
            if let Err(e) = rename_noreplace(a, b) {
                let _ = rename_noreplace(&away, b);
                return Err(e);
            }
            std::fs::rename(&away, a)
        }
        r => r,
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if unsupported(&e) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rel: &str, then: Option<&str>, new: Option<&str>) -> Change {
        Change {
            rel: rel.into(),
            then: then.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn modifies_creates_and_deletes_keeping_the_mode_and_leaving_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.py"), "old\n").unwrap();
        std::fs::set_permissions(
            t.path().join("a.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(t.path().join("gone.py"), "x\n").unwrap();
        commit(
            t.path(),
            &[
                change("a.py", Some("old\n"), Some("new\n")),
                change("sub/b.py", None, Some("b\n")),
                change("gone.py", Some("x\n"), None),
            ],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("a.py")).unwrap(),
            "new\n"
        );
        assert_eq!(
            std::fs::metadata(t.path().join("a.py"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("sub/b.py")).unwrap(),
            "b\n"
        );
        assert_eq!(names(t.path()), ["a.py", "sub"]);
    }

    #[test]
    fn an_edited_file_refuses_the_whole_patch_and_undoes_the_files_before_it() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.py"), "a\n").unwrap();
        std::fs::write(t.path().join("b.py"), "the user's edit\n").unwrap();
        let e = commit(
            t.path(),
            &[
                change("a.py", Some("a\n"), Some("A\n")),
                change("new.py", None, Some("n\n")),
                change("b.py", Some("b\n"), Some("B\n")),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(&e, CommitError::Changed(f) if f == &["b.py"]),
            "{e:?}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("a.py")).unwrap(),
            "a\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("b.py")).unwrap(),
            "the user's edit\n"
        );
        assert_eq!(names(t.path()), ["a.py", "b.py"]);
    }

    #[test]
    fn a_file_created_or_deleted_by_the_user_meanwhile_refuses() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("new.py"), "mine\n").unwrap();
        let e = commit(t.path(), &[change("new.py", None, Some("theirs\n"))]).unwrap_err();
        assert!(matches!(e, CommitError::Changed(_)));
        assert_eq!(
            std::fs::read_to_string(t.path().join("new.py")).unwrap(),
            "mine\n"
        );
        let e = commit(t.path(), &[change("del.py", Some("x\n"), Some("y\n"))]).unwrap_err();
        assert!(matches!(e, CommitError::Changed(_)));
        assert_eq!(names(t.path()), ["new.py"]);
    }

    #[test]
    fn a_descriptor_held_open_on_the_old_file_is_waited_for_and_its_write_counts() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a.py");
        std::fs::write(&a, "old\n").unwrap();
        // Another process's editor: opened before the swap, writes a moment after it.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3<>a.py; sleep 0.3; printf 'typed\\n' >&3; sleep 0.1")
            .current_dir(t.path())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let e = commit(t.path(), &[change("a.py", Some("old\n"), Some("new\n"))]).unwrap_err();
        child.wait().unwrap();
        assert!(matches!(e, CommitError::Changed(_)), "{e:?}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "typed\n");
        assert_eq!(names(t.path()), ["a.py"]);
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_denied_with_nothing_changed() {
        let probe = tempfile::NamedTempFile::new().unwrap();
        if probe.as_file().metadata().unwrap().uid() == 0 {
            // Root writes anywhere; the CLI test runs this as an unprivileged user.
            return;
        }
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.py"), "old\n").unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let e = commit(t.path(), &[change("a.py", Some("old\n"), Some("new\n"))]).unwrap_err();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(e, CommitError::Denied { .. }), "{e:?}");
        assert_eq!(names(t.path()), ["a.py"]);
    }
}

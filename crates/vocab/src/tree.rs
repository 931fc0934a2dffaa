//! File-tree helpers for staging project copies: copy a tree without following symlinks
//! (special files are skipped), make it readable by the sandbox's unprivileged user, and check
//! relative paths.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Component, Path};

/// Whether the symlink at `link` (relative to the tree's `root`) pointing at `target` may be
/// copied with the tree: a relative target must resolve inside the tree and not to a
/// directory the link itself lies in (`up -> ..` or `a/loop -> ..` would make a test runner
/// walk the project again and again); an absolute target must not point into the original
/// tree or above it (a copy must not reach back into the user's files).
pub fn link_is_safe(root: &Path, link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return !(target.starts_with(root) || root.starts_with(target));
    }
    let dir: Vec<Component> = link
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    let mut at = dir.clone();
    for c in target.components() {
        match c {
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(_) => at.push(c),
            Component::CurDir => {}
            _ => return false,
        }
    }
    !(at.len() <= dir.len() && dir[..at.len()] == at[..])
}

/// `path` is relative, non-empty and has no `..`, root or prefix components.
pub fn is_safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && !path.contains('\0')
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)))
}

/// How a copy treats permissions.
#[derive(Clone, Copy)]
pub enum Perms {
    /// Keep the modes, adding only the owner's write permission (and search, on
    /// directories): coval's copies are its own to patch, stage and remove, also those of a
    /// project its user may only read.
    Keep,
    /// Add read permission for everyone (and search permission on directories), so an
    /// unprivileged user in a container can read a tree a root process staged.
    WorldReadable,
}

/// Directories that are never part of a project's tree, at any depth: version control,
/// coval's own workspace, installed dependencies (virtualenvs, `node_modules`: a project's
/// environment brings them) and caches a run rebuilds. Snapshots, iterations, MREs and sandbox
/// copies leave them out, so a workspace inside the project (`cd repo && coval repair`, the
/// default `.coval`) is never copied into itself, and a project with its dependencies
/// installed beside it is copied as its source. See also [`is_not_project_dir`].
pub const NOT_PROJECT_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".coval",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
];

/// Whether the directory `name` inside `parent` is left out of project copies: one of the
/// [`NOT_PROJECT_DIRS`], a virtualenv of any name (it holds `pyvenv.cfg`), or a Rust build
/// directory (`target` beside a `Cargo.toml`, or one marked with `CACHEDIR.TAG`).
pub fn is_not_project_dir(parent: &Path, name: &str) -> bool {
    if NOT_PROJECT_DIRS.contains(&name) {
        return true;
    }
    let dir = parent.join(name);
    if fs::symlink_metadata(dir.join("pyvenv.cfg")).is_ok_and(|m| m.is_file()) {
        return true;
    }
    name == "target" && (parent.join("Cargo.toml").is_file() || dir.join("CACHEDIR.TAG").is_file())
}

/// Copies the contents of `src` into `dst` (created if missing). Symlinks are copied as
/// symlinks, never followed; sockets, fifos and devices are skipped, and so are the
/// directories [`is_not_project_dir`] names.
pub fn copy_tree(src: &Path, dst: &Path, perms: Perms) -> io::Result<u64> {
    copy_tree_except(src, dst, perms, None)
}

/// [`copy_tree`], also leaving out the directory `except` (compared as given, so pass it
/// canonical when `src` is): a workspace with another name inside the project.
pub fn copy_tree_except(
    src: &Path,
    dst: &Path,
    perms: Perms,
    except: Option<&Path>,
) -> io::Result<u64> {
    let meta = fs::symlink_metadata(src)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", src.display()),
        ));
    }
    fs::create_dir_all(dst)?;
    let mut bytes = 0;
    copy_dir(src, src, dst, perms, except, &mut bytes)?;
    set_dir_mode(dst, meta.permissions().mode(), perms)?;
    Ok(bytes)
}

fn copy_dir(
    root: &Path,
    src: &Path,
    dst: &Path,
    perms: Perms,
    except: Option<&Path>,
    bytes: &mut u64,
) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let name = entry.file_name();
        if except == Some(from.as_path()) {
            continue;
        }
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() && is_not_project_dir(src, &name.to_string_lossy()) {
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from)?;
            let rel = from.strip_prefix(root).unwrap_or(&from);
            if link_is_safe(root, rel, &target) {
                symlink(&target, &to)?;
            }
        } else if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_dir(root, &from, &to, perms, except, bytes)?;
            set_dir_mode(&to, meta.permissions().mode(), perms)?;
        } else if ft.is_file() {
            *bytes += fs::copy(&from, &to)?;
            let mode = meta.permissions().mode() & 0o7777;
            let mode = match perms {
                Perms::Keep => mode | 0o200,
                // Readable by all; executable by all where the owner could execute.
                Perms::WorldReadable => {
                    (mode | 0o444 | if mode & 0o100 != 0 { 0o111 } else { 0 }) & 0o777
                }
            };
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

fn set_dir_mode(dir: &Path, mode: u32, perms: Perms) -> io::Result<()> {
    let mode = match perms {
        Perms::Keep => (mode | 0o700) & 0o7777,
        Perms::WorldReadable => (mode | 0o755) & 0o777,
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Gives the whole tree (symlinks themselves, not their targets) to `uid:gid`.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    lchown(root, Some(uid), Some(gid))?;
    let meta = fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in fs::read_dir(root)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Reads a regular file (not through a symlink) under `root`, at most `cap` bytes.
pub fn read_capped(root: &Path, rel: &str, cap: usize) -> Option<String> {
    use std::io::Read;
    if !is_safe_relative(rel) {
        return None;
    }
    let mut p = root.to_path_buf();
    for c in Path::new(rel).components() {
        p.push(c);
        if fs::symlink_metadata(&p).ok()?.file_type().is_symlink() {
            return None;
        }
    }
    if !fs::symlink_metadata(&p).ok()?.is_file() {
        return None;
    }
    let f = fs::File::open(&p).ok()?;
    let mut buf = Vec::new();
    f.take(cap as u64).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Copies a project tree (symlinks as symlinks, special files skipped, modes kept): the copy
/// a patch is applied to.
pub fn copy_project(src: &Path, dst: &Path) -> std::io::Result<()> {
    copy_tree(src, dst, Perms::Keep).map(|_| ())
}

/// [`copy_project`] of a tree that may hold the workspace `workspace` (any name): the
/// workspace is left out when it lies inside `src`.
pub fn copy_project_outside(src: &Path, dst: &Path, workspace: &Path) -> std::io::Result<()> {
    let src = src.canonicalize()?;
    let except = workspace
        .canonicalize()
        .ok()
        .filter(|w| w.starts_with(&src) && *w != src);
    copy_tree_except(&src, dst, Perms::Keep, except.as_deref()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert!(is_safe_relative("a/b.xml"));
        assert!(is_safe_relative("./a"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a/../../b"));
        assert!(!is_safe_relative(""));
        assert!(!is_safe_relative("."));
    }

    #[test]
    fn copies_without_following_symlinks() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/f.txt"), "x").unwrap();
        fs::set_permissions(
            src.path().join("d/f.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("/etc/hostname", src.path().join("link")).unwrap();
        copy_tree(src.path(), dst.path(), Perms::WorldReadable).unwrap();
        let m = fs::metadata(dst.path().join("d/f.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
        assert!(
            fs::symlink_metadata(dst.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read_capped(dst.path(), "d/f.txt", 10).as_deref(), Some("x"));
        assert_eq!(read_capped(dst.path(), "link", 10), None);
    }

    #[test]
    fn leaves_out_version_control_and_workspaces_at_any_depth() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("repo");
        for d in [
            ".git/objects",
            ".coval/iterations/iter-001",
            "pkg/.git",
            "work/ws/state",
        ] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        fs::write(src.join("pkg/mod.py"), "x = 1\n").unwrap();
        fs::write(src.join("work/keep.txt"), "k").unwrap();
        fs::write(src.join("work/ws/state/db"), "d").unwrap();
        let dst = t.path().join("copy");
        copy_project_outside(&src, &dst, &src.join("work/ws")).unwrap();
        assert!(dst.join("pkg/mod.py").is_file());
        assert!(dst.join("work/keep.txt").is_file());
        for gone in [".git", ".coval", "pkg/.git", "work/ws"] {
            assert!(!dst.join(gone).exists(), "{gone} was copied");
        }
        // A workspace outside the tree changes nothing; the tree itself is never left out.
        let again = t.path().join("again");
        copy_project_outside(&src, &again, t.path()).unwrap();
        assert!(again.join("work/ws/state/db").is_file());
    }

    #[test]
    fn installed_dependencies_and_build_dirs_are_not_copied() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("p");
        for d in [
            "pkg/__pycache__",
            "node_modules/left-pad",
            ".venv/lib",
            "env3/lib",
            "web/node_modules/x",
            "rs/target/debug",
            "py/target",
        ] {
            fs::create_dir_all(src.join(d)).unwrap();
        }
        fs::write(src.join("env3/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        fs::write(src.join("rs/Cargo.toml"), "[package]\n").unwrap();
        fs::write(src.join("py/target/mod.py"), "x = 1\n").unwrap();
        fs::write(src.join("pkg/mod.py"), "x = 1\n").unwrap();
        let dst = t.path().join("copy");
        copy_tree(&src, &dst, Perms::Keep).unwrap();
        assert!(dst.join("pkg/mod.py").is_file());
        // `target` is a build dir only in a Rust project; elsewhere it may be code.
        assert!(dst.join("py/target/mod.py").is_file());
        for gone in [
            "pkg/__pycache__",
            "node_modules",
            ".venv",
            "env3",
            "web/node_modules",
            "rs/target",
        ] {
            assert!(!dst.join(gone).exists(), "{gone} was copied");
        }
    }

    #[test]
    fn links_that_leave_the_tree_or_loop_back_are_not_copied() {
        let root = Path::new("/home/u/proj");
        let safe =
            |link: &str, target: &str| link_is_safe(root, Path::new(link), Path::new(target));
        assert!(safe("a/x", "../b/c.py"));
        assert!(safe("x", "pkg/mod.py"));
        assert!(safe("x", "/usr/lib/python3"));
        for (link, target) in [
            ("up", ".."),
            ("self", "."),
            ("a/loop", ".."),
            ("a/b/loop", "../../a"),
            ("a/out", "../../elsewhere"),
            ("abs", "/home/u/proj/pkg"),
            ("abs", "/home/u"),
        ] {
            assert!(!safe(link, target), "{link} -> {target}");
        }

        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("p");
        fs::create_dir_all(src.join("pkg")).unwrap();
        fs::write(src.join("pkg/m.py"), "x = 1\n").unwrap();
        symlink("..", src.join("up")).unwrap();
        symlink("..", src.join("pkg/loop")).unwrap();
        symlink("pkg/m.py", src.join("alias.py")).unwrap();
        let dst = t.path().join("c");
        copy_project(&src, &dst).unwrap();
        assert!(fs::symlink_metadata(dst.join("alias.py")).is_ok());
        assert!(fs::symlink_metadata(dst.join("up")).is_err());
        assert!(fs::symlink_metadata(dst.join("pkg/loop")).is_err());
    }
}

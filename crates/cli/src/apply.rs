//! `--apply`: put a validated patch into the user's source tree, only when every file it
//! touches is unchanged since the snapshot the repair worked on; otherwise refuse and touch
//! nothing. Only this step writes into the project: a project coval may not write is still
//! repaired, and `--apply` then says what it needs (exit 2, nothing changed).

mod swap;

use std::path::Path;

use patch::{Edit, PatchLimits};
use proto::messages::RepairCompleted;
use store::Store;

use crate::exit::Failure;

fn touched(edits: &[Edit]) -> Vec<String> {
    let strip = |p: &str| {
        p.strip_prefix("a/")
            .or_else(|| p.strip_prefix("b/"))
            .unwrap_or(p)
            .to_owned()
    };
    let mut v: Vec<String> = edits
        .iter()
        .flat_map(|e| match e {
            Edit::Diff(d) => [
                d.old_path.as_deref().map(strip),
                d.new_path.as_deref().map(strip),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
            Edit::SearchReplace { path, .. } | Edit::WholeFile { path, .. } => vec![path.clone()],
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn apply(
    store: &Store,
    workspace: &Path,
    done: &RepairCompleted,
    source: &Path,
) -> Result<(), Failure> {
    let Some(new) = done.new_iteration else {
        return Err(Failure::internal(
            "the repair stored no iteration to compare with".into(),
        ));
    };
    let parent = store
        .iterations()
        .map_err(|e| Failure::internal(e.to_string()))?
        .into_iter()
        .find(|i| i.id == new)
        .and_then(|i| i.parent)
        .ok_or_else(|| Failure::internal(format!("{new} has no parent snapshot")))?;
    let snapshot = vocab::Workspace::new(workspace).iteration_dir(parent);
    let dir = workspace.join(done.report_dir.as_deref().unwrap_or(""));
    apply_patch(&dir.join("final.patch"), source, |f| {
        std::fs::read(snapshot.join(f)).ok()
    })
}

/// Applies the patch at `patch_path` to `source` when every file it touches is as it was in
/// the snapshot the repair worked on (`then(path)`: its bytes then, `None` if absent). The
/// new contents are computed from those bytes, never from the live tree, and each file is
/// swapped in and checked in one step ([`swap`]), so an edit made at any moment is never
/// overwritten: the patch is refused instead.
pub fn apply_patch(
    patch_path: &Path,
    source: &Path,
    then: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), Failure> {
    let text = std::fs::read_to_string(patch_path)
        .map_err(|e| Failure::internal(format!("cannot read {}: {e}", patch_path.display())))?;
    let limits = PatchLimits::default();
    let edits = patch::parse(&text, &limits).map_err(|e| Failure::internal(e.to_string()))?;
    let files = touched(&edits);
    let refuse = |changed: &[String]| {
        Failure::input(format!(
            "not applying: {} changed in {} since the repair started; the validated patch is in {}",
            changed.join(", "),
            source.display(),
            patch_path.display()
        ))
    };
    // What can be seen now is said now, all of it; the swap checks again, file by file.
    let changed: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read(source.join(f)).ok() != then(f))
        .cloned()
        .collect();
    if !changed.is_empty() {
        return Err(refuse(&changed));
    }
    let changes = plan(&edits, &files, &then, &limits)?;
    swap::commit(source, &changes).map_err(|e| match e {
        swap::CommitError::Changed(files) => refuse(&files),
        swap::CommitError::Denied { path, source: e } => Failure::input(format!(
            "--apply needs write access to {}: {e}; nothing was changed. The validated patch is in {}: apply it as a user who may write there (`git apply {}` in {})",
            path.display(),
            patch_path.display(),
            patch_path.display(),
            source.display()
        )),
        swap::CommitError::Io { path, what, source: e } => Failure::internal(format!(
            "applying the patch failed ({what} {}: {e}); the files already swapped were restored. The validated patch is in {}",
            path.display(),
            patch_path.display()
        )),
    })?;
    eprintln!("applied {} to {}", patch_path.display(), source.display());
    Ok(())
}

/// Each touched file's content then and after the patch, computed in a scratch copy of just
/// those files as they were when the repair started.
fn plan(
    edits: &[Edit],
    files: &[String],
    then: &impl Fn(&str) -> Option<Vec<u8>>,
    limits: &PatchLimits,
) -> Result<Vec<swap::Change>, Failure> {
    let internal = |e: std::io::Error| Failure::internal(format!("cannot plan the patch: {e}"));
    let scratch = vocab::scratch::ScratchDir::new("coval-apply-").map_err(internal)?;
    let root = scratch.path().join("tree");
    let mut changes = vec![];
    for f in files {
        if !vocab::tree::is_safe_relative(f) {
            return Err(Failure::internal(format!(
                "the patch names {f:?}, which is not a path inside the project"
            )));
        }
        let t = then(f);
        if let Some(bytes) = &t {
            let p = root.join(f);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(internal)?;
            }
            std::fs::write(&p, bytes).map_err(internal)?;
        }
        changes.push(swap::Change {
            rel: f.clone(),
            then: t,
            new: None,
        });
    }
    std::fs::create_dir_all(&root).map_err(internal)?;
    patch::apply(&root, edits, limits).map_err(|e| {
        Failure::internal(format!(
            "the patch does not apply to the snapshot it was made from, nothing was written: {e}"
        ))
    })?;
    for c in &mut changes {
        c.new = std::fs::read(root.join(&c.rel)).ok();
    }
    changes.retain(|c| c.then != c.new);
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};
    use std::time::{Duration, Instant};

    const THEN: &str = "def price(n):\n    return n * 10\n";
    const PATCH: &str = "--- a/shop.py\n+++ b/shop.py\n@@ -1,2 +1,2 @@\n def price(n):\n-    return n * 10\n+    return n * 11\n";

    /// How a user's program writes the file while `--apply` runs.
    #[derive(Clone, Copy, Debug)]
    enum Writer {
        /// `open(O_TRUNC)` and write, by name (`echo >`, most scripts).
        Truncate,
        /// Write a temp file and rename it over (vim, VS Code, most editors).
        RenameOver,
        /// A descriptor opened before the apply started, written in place later.
        HeldOpen,
    }

    /// Races `--apply` against a writer `tries` times (at most `budget`); returns how many
    /// edits were lost, how many writes landed while the apply ran, and how often it applied.
    fn race(tries: usize, budget: Duration) -> (usize, usize, usize, usize) {
        let t = tempfile::tempdir().unwrap();
        let patch = t.path().join("final.patch");
        std::fs::write(&patch, PATCH).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let file = src.join("shop.py");
        // How long one apply takes here, to spread the writes over it.
        std::fs::write(&file, THEN).unwrap();
        let started = Instant::now();
        apply_patch(&patch, &src, |_| Some(THEN.as_bytes().to_vec())).unwrap();
        let span = started.elapsed().as_micros() as u64 * 2 + 200;
        let (mut lost, mut overlapping, mut applied, mut n) = (0, 0, 0, 0);
        let deadline = Instant::now() + budget;
        while n < tries && Instant::now() < deadline {
            n += 1;
            std::fs::write(&file, THEN).unwrap();
            let edit = format!("def price(n):\n    return n * 12  # edit {n}\n");
            let mode = [Writer::Truncate, Writer::RenameOver, Writer::HeldOpen][n % 3];
            let delay = Duration::from_micros((n as u64 * 7919) % span);
            let held = matches!(mode, Writer::HeldOpen).then(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&file)
                    .unwrap()
            });
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let writer = {
                let (file, edit, barrier) = (file.clone(), edit.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    std::thread::sleep(delay);
                    match (mode, held) {
                        (Writer::Truncate, _) => std::fs::write(&file, &edit).unwrap(),
                        (Writer::RenameOver, _) => {
                            let tmp = file.with_file_name(".shop.py.swp");
                            std::fs::write(&tmp, &edit).unwrap();
                            std::fs::rename(&tmp, &file).unwrap();
                        }
                        (Writer::HeldOpen, Some(mut f)) => {
                            f.seek(std::io::SeekFrom::Start(0)).unwrap();
                            f.write_all(edit.as_bytes()).unwrap();
                            f.set_len(edit.len() as u64).unwrap();
                        }
                        (Writer::HeldOpen, None) => unreachable!(),
                    }
                    Instant::now()
                })
            };
            barrier.wait();
            let began = Instant::now();
            let result = apply_patch(&patch, &src, |_| Some(THEN.as_bytes().to_vec()));
            let ended = Instant::now();
            let wrote = writer.join().unwrap();
            if began < wrote && wrote < ended {
                overlapping += 1;
            }
            if result.is_ok() {
                applied += 1;
            }
            // The writer wrote once, after or before the apply: its edit must be the file.
            if std::fs::read_to_string(&file).unwrap() != edit {
                lost += 1;
                eprintln!("try {n} ({mode:?}, {delay:?}): edit lost, apply said {result:?}");
            }
            let names: Vec<_> = std::fs::read_dir(&src)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["shop.py"], "try {n}: files left beside it");
        }
        (lost, overlapping, applied, n)
    }

    /// `--apply` against a program writing the file at the same moment, 300 times (at most
    /// 60 s), in the three ways programs write files: no edit may be lost, and the race must
    /// really have been run (writes landing while the apply ran).
    #[test]
    fn apply_never_loses_an_edit_made_while_it_runs() {
        let (lost, overlapping, applied, tries) = race(300, Duration::from_secs(60));
        eprintln!(
            "{tries} tries: {lost} edits lost, {overlapping} writes landed during the apply, {applied} applied"
        );
        assert_eq!(lost, 0, "edits lost in {tries} tries");
        assert!(
            overlapping * 10 >= tries,
            "only {overlapping} of {tries} writes landed during an apply: the race was not run"
        );
        assert!(
            applied > 0 && applied < tries,
            "{applied} of {tries} applied"
        );
    }

    #[test]
    fn the_new_content_comes_from_the_snapshot_not_the_live_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("final.patch"), PATCH).unwrap();
        std::fs::write(t.path().join("shop.py"), THEN).unwrap();
        let changes = plan(
            &patch::parse(PATCH, &PatchLimits::default()).unwrap(),
            &["shop.py".to_owned()],
            &|_: &str| Some(THEN.as_bytes().to_vec()),
            &PatchLimits::default(),
        )
        .unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].new.as_deref(),
            Some("def price(n):\n    return n * 11\n".as_bytes())
        );
    }
}

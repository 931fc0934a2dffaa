//! `--apply`: put a validated patch into the user's source tree, only when every file it
//! touches is unchanged since the snapshot the repair worked on; otherwise refuse and touch
//! nothing.

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
/// the snapshot the repair worked on (`then(path)`: its bytes then, `None` if absent).
pub fn apply_patch(
    patch_path: &Path,
    source: &Path,
    then: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), Failure> {
    let text = std::fs::read_to_string(patch_path)
        .map_err(|e| Failure::internal(format!("cannot read {}: {e}", patch_path.display())))?;
    let limits = PatchLimits::default();
    let edits = patch::parse(&text, &limits).map_err(|e| Failure::internal(e.to_string()))?;
    let mut changed = vec![];
    for f in touched(&edits) {
        let now = std::fs::read(source.join(&f)).ok();
        if now != then(&f) {
            changed.push(f);
        }
    }
    if !changed.is_empty() {
        return Err(Failure::input(format!(
            "not applying: {} changed in {} since the repair started; the validated patch is in {}",
            changed.join(", "),
            source.display(),
            patch_path.display()
        )));
    }
    patch::apply(source, &edits, &limits).map_err(|e| {
        Failure::internal(format!(
            "applying the patch failed, nothing was written: {e}"
        ))
    })?;
    eprintln!("applied {} to {}", patch_path.display(), source.display());
    Ok(())
}

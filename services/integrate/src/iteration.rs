//! Iterations on disk: a project tree stored under `<workspace>/iterations/<id>`, written in
//! a staging directory and renamed, so an iteration directory is always whole.

use std::path::Path;

use patch::PatchLimits;
use proto::IterationId;
use store::{IterationOrigin, Store, StoreError};
use vocab::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("cannot copy the project: {0}")]
    Copy(std::io::Error),
    #[error("{0}")]
    Patch(String),
    #[error("{0}")]
    Io(std::io::Error),
}

/// Writes the tree `fill` makes into `dst` (replaced if a crash left one) by way of a scratch
/// directory beside it (`vocab::scratch`), renamed into place only when whole: a failure
/// leaves nothing behind, and a killed process's staging copy is swept by the next one.
fn write_whole(
    dst: &Path,
    fill: impl FnOnce(&Path) -> Result<(), MaterialiseError>,
) -> Result<(), MaterialiseError> {
    let _ = std::fs::remove_dir_all(dst);
    let parent = dst.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(MaterialiseError::Io)?;
    let scratch = vocab::scratch::ScratchDir::new_in(parent, vocab::workspace::STAGE_PREFIX)
        .map_err(MaterialiseError::Io)?;
    fill(&scratch.path().join("tree"))?;
    scratch
        .persist_inner("tree", dst)
        .map_err(MaterialiseError::Io)
}

/// The project tree with `patch` applied, as iteration `dst`.
pub fn materialise(
    src: &Path,
    dst: &Path,
    patch_text: Option<&str>,
) -> Result<(), MaterialiseError> {
    write_whole(dst, |staging| {
        vocab::tree::copy_project(src, staging).map_err(MaterialiseError::Copy)?;
        if let Some(p) = patch_text {
            let limits = PatchLimits::default();
            let edits =
                patch::parse(p, &limits).map_err(|e| MaterialiseError::Patch(e.to_string()))?;
            patch::apply(staging, &edits, &limits)
                .map_err(|e| MaterialiseError::Patch(e.to_string()))?;
        }
        Ok(())
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The ledger did not record the iteration.
    #[error("{0}")]
    Record(StoreError),
    /// The iteration is recorded but its files are not (all) there.
    #[error("{0}")]
    Files(MaterialiseError),
}

/// Stores the tree at `source` as a new iteration with no parent: recorded in the ledger,
/// then copied to the workspace's iteration directory. The copy leaves out version control,
/// any `.coval`, and `workspace` itself when it lies inside `source` (`cd repo && coval
/// repair`); a copy that fails leaves no partial tree.
pub fn import(
    store: &Store,
    workspace: &Workspace,
    source: &Path,
) -> Result<IterationId, ImportError> {
    let it = store
        .add_iteration(
            None,
            IterationOrigin::Import {
                path: source.display().to_string(),
            },
        )
        .map_err(ImportError::Record)?;
    write_whole(&workspace.iteration_dir(it.id), |staging| {
        vocab::tree::copy_project_outside(source, staging, workspace.root())
            .map_err(MaterialiseError::Copy)
    })
    .map_err(ImportError::Files)?;
    Ok(it.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_tree_is_recorded_and_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::write(src.join("pkg/a.py"), "x = 1\n").unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let ws = Workspace::new(dir.path());
        let id = import(&store, &ws, &src).unwrap();
        let stored = ws.iteration_dir(id);
        assert_eq!(
            std::fs::read_to_string(stored.join("pkg/a.py")).unwrap(),
            "x = 1\n"
        );
        assert!(!stored.with_extension("partial").exists());
        let its = store.iterations().unwrap();
        assert_eq!(its.len(), 1);
        assert_eq!(its[0].id, id);
        assert!(
            matches!(&its[0].origin, IterationOrigin::Import { path } if *path == src.display().to_string())
        );
    }

    #[test]
    fn a_workspace_inside_the_source_is_not_imported_into_itself() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("repo");
        std::fs::create_dir_all(src.join(".git")).unwrap();
        std::fs::write(src.join("a.py"), "x = 1\n").unwrap();
        for ws in [src.join(".coval"), src.join("work")] {
            let ws = Workspace::new(&ws);
            std::fs::create_dir_all(ws.root()).unwrap();
            let store = Store::open(&ws.state_dir()).unwrap();
            for _ in 0..2 {
                let id = import(&store, &ws, &src).unwrap();
                let stored = ws.iteration_dir(id);
                let mut names: Vec<String> = std::fs::read_dir(&stored)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                assert_eq!(names, ["a.py"], "{}", stored.display());
            }
        }
    }

    #[test]
    fn a_failed_import_leaves_no_partial_tree() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"));
        std::fs::create_dir_all(ws.root()).unwrap();
        let store = Store::open(&ws.state_dir()).unwrap();
        let missing = dir.path().join("no-such-project");
        assert!(matches!(
            import(&store, &ws, &missing),
            Err(ImportError::Files(_))
        ));
        let left: Vec<_> = std::fs::read_dir(ws.iterations_dir())
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}

//! Iterations on disk: a project tree stored under `<workspace>/iterations/<id>`, written in
//! a staging directory and renamed, so an iteration directory is always whole.

use std::path::Path;

use patch::PatchLimits;
use proto::IterationId;
use store::{IterationOrigin, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("cannot copy the project: {0}")]
    Copy(std::io::Error),
    #[error("{0}")]
    Patch(String),
    #[error("{0}")]
    Io(std::io::Error),
}

/// The project tree with `patch` applied, as iteration `dst` (replaced if a crash left one).
pub fn materialise(
    src: &Path,
    dst: &Path,
    patch_text: Option<&str>,
) -> Result<(), MaterialiseError> {
    let _ = std::fs::remove_dir_all(dst);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(MaterialiseError::Io)?;
    }
    let staging = dst.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    sandbox::copy_project(src, &staging).map_err(MaterialiseError::Copy)?;
    if let Some(p) = patch_text {
        let limits = PatchLimits::default();
        let edits = patch::parse(p, &limits).map_err(|e| MaterialiseError::Patch(e.to_string()))?;
        patch::apply(&staging, &edits, &limits)
            .map_err(|e| MaterialiseError::Patch(e.to_string()))?;
    }
    std::fs::rename(&staging, dst).map_err(MaterialiseError::Io)
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
/// then copied to `<iterations_dir>/<id>`.
pub fn import(
    store: &Store,
    iterations_dir: &Path,
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
    materialise(source, &iterations_dir.join(it.id.to_string()), None)
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
        let iterations = dir.path().join("iterations");
        let id = import(&store, &iterations, &src).unwrap();
        let stored = iterations.join(id.to_string());
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
}

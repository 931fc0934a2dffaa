//! The layout of a workspace (`--workspace`, `.coval` by default): every path under its root
//! comes from one method here, so the CLI, the workers, the stages and deploy agree on it.
//!
//! ```text
//! <root>/state/                 the ledger (sled): repairs, iterations, history, deployments
//! <root>/iterations/iter-NNN/   the project tree of each stored iteration
//! <root>/iterations/.stage-…/   an iteration or generation being written (a scratch dir),
//!                               renamed into place when whole
//! <root>/repairs/repair-<id>/   one repair's report and patches, with `mre/` and `validation/`
//!                               (its candidates' copies in `validation/work-…` scratch dirs)
//! <root>/cache/snapshots/       project snapshots fetched from the object store (staged in
//!                               `.stage-…` scratch dirs)
//! <root>/workers/<stages>-<n>/  the own database of a worker process without the ledger
//! <root>/deploy/proxy-<port>/   a deployment proxy's state and control socket
//! ```

use std::path::{Path, PathBuf};

use proto::{IterationId, RepairId};

use crate::scratch::{self, Swept};

/// The prefix of the scratch dirs in which a tree is written before it is renamed into
/// `iterations/` or the snapshot cache.
pub const STAGE_PREFIX: &str = ".stage-";

/// The prefix of a validation attempt's scratch dir (candidate copies) in `validation/`.
pub const WORK_PREFIX: &str = "work-";

/// A workspace root; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Workspace {
        Workspace { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ledger database.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn iterations_dir(&self) -> PathBuf {
        self.root.join("iterations")
    }

    pub fn iteration_dir(&self, id: IterationId) -> PathBuf {
        self.iterations_dir().join(id.to_string())
    }

    pub fn repairs_dir(&self) -> PathBuf {
        self.root.join("repairs")
    }

    pub fn repair_dir(&self, id: RepairId) -> PathBuf {
        self.repairs_dir().join(repair_dir_name(id))
    }

    /// What the MRE stage built for a repair.
    pub fn mre_dir(&self, id: RepairId) -> PathBuf {
        self.repair_dir(id).join("mre")
    }

    /// The validate stage's work trees and attempt results for a repair.
    pub fn validation_dir(&self, id: RepairId) -> PathBuf {
        self.repair_dir(id).join("validation")
    }

    /// Project snapshots downloaded from the object store.
    pub fn snapshot_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("snapshots")
    }

    /// The own databases of worker processes that do not hold the ledger.
    pub fn workers_dir(&self) -> PathBuf {
        self.root.join("workers")
    }

    /// The database of the `n`th worker process serving `stages` (e.g. `fix+validate`).
    pub fn worker_dir(&self, stages: &str, n: u32) -> PathBuf {
        self.workers_dir().join(format!("{stages}-{n}"))
    }

    /// Removes the scratch dirs under this workspace whose process is gone (killed in the
    /// middle of a repair): staged iterations and snapshots, validation work trees. Dirs of
    /// live processes, this one's included, stay (`vocab::scratch`).
    pub fn sweep_scratch(&self) -> Swept {
        let mut swept = scratch::sweep(&self.iterations_dir(), STAGE_PREFIX);
        swept += scratch::sweep(&self.snapshot_cache_dir(), STAGE_PREFIX);
        for repair in std::fs::read_dir(self.repairs_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            swept += scratch::sweep(&repair.path().join("validation"), WORK_PREFIX);
        }
        swept
    }

    /// The state of the deployment proxy listening on `port`.
    pub fn proxy_dir(&self, port: u16) -> PathBuf {
        self.root.join("deploy").join(format!("proxy-{port}"))
    }
}

/// The name of a repair's report directory, also the prefix of its files in the report
/// bucket, so a client downloads them into the same layout.
pub fn repair_dir_name(id: RepairId) -> String {
    format!("repair-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root() {
        let ws = Workspace::new("/w");
        let id: RepairId = "rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8".parse().unwrap();
        let cases = [
            (ws.state_dir(), "/w/state"),
            (ws.iterations_dir(), "/w/iterations"),
            (ws.iteration_dir(IterationId(4)), "/w/iterations/iter-004"),
            (ws.repairs_dir(), "/w/repairs"),
            (
                ws.repair_dir(id),
                "/w/repairs/repair-rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8",
            ),
            (
                ws.mre_dir(id),
                "/w/repairs/repair-rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8/mre",
            ),
            (
                ws.validation_dir(id),
                "/w/repairs/repair-rep_01JDQ7Z8W6Y9S7B2C4D5E6F7G8/validation",
            ),
            (ws.snapshot_cache_dir(), "/w/cache/snapshots"),
            (ws.workers_dir(), "/w/workers"),
            (
                ws.worker_dir("fix+validate", 2),
                "/w/workers/fix+validate-2",
            ),
            (ws.proxy_dir(8080), "/w/deploy/proxy-8080"),
        ];
        for (got, want) in cases {
            assert_eq!(got, PathBuf::from(want));
        }
        assert_eq!(ws.root(), Path::new("/w"));
    }
}

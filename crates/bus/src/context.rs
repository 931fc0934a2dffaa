//! What a stage is built from, the same in the embedded command and in a worker process:
//! the configuration, the workspace this process owns, how projects are found, and the
//! outcome history the estimates learn from; and, in the process that integrates, the
//! workspace ledger and (distributed mode) where report files go for remote clients.

use std::sync::Arc;

use settings::Config;
use store::projects::{Bucket, Projects};
use store::{HistorySource, Store};
use vocab::Workspace;

#[derive(Clone)]
pub struct StageContext {
    pub config: Config,
    /// This process's workspace: `repairs/`, `iterations/`, caches.
    pub workspace: Workspace,
    pub projects: Arc<Projects>,
    pub history: Arc<dyn HistorySource>,
    /// The workspace ledger (`<workspace>/state`), when this process owns it: only then can
    /// it run the integration stage.
    pub ledger: Option<Store>,
    /// Where the integration stage leaves report files for clients on other machines (the
    /// distributed mode); none in the embedded mode, whose client is this process.
    pub reports: Option<Bucket>,
}

//! What a stage is built from, the same in the embedded command and in a worker process:
//! the configuration, the workspace this process owns, how projects are found, and the
//! outcome history the estimates learn from.

use std::sync::Arc;

use settings::Config;
use store::HistorySource;
use store::projects::Projects;
use vocab::Workspace;

#[derive(Clone)]
pub struct StageContext {
    pub config: Config,
    /// This process's workspace: `repairs/`, `iterations/`, caches.
    pub workspace: Workspace,
    pub projects: Arc<Projects>,
    pub history: Arc<dyn HistorySource>,
}

//! coval's wire contracts: the messages stages exchange, their ids, the envelope carried in
//! NATS headers, and the names of subjects and streams. No IO and no async runtime here, so
//! every stage, the CLI and the tests agree on one definition.

pub mod envelope;
pub mod ids;
pub mod messages;
pub mod outgoing;
pub mod subjects;
pub mod summary;

pub use envelope::{Envelope, EnvelopeError};
pub use ids::{IdError, IterationId, MessageId, RepairId};
pub use messages::{DecodeError, Kind, Message};
pub use outgoing::{Outgoing, Wire};

use serde::{Deserialize, Serialize};

/// The six stages of the repair workflow, plus the client that starts a repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Client,
    Triage,
    Decision,
    Mre,
    Fix,
    Validate,
    Integrate,
}

impl Stage {
    /// The six stages that consume messages, in workflow order.
    pub const WORKERS: [Stage; 6] = [
        Stage::Triage,
        Stage::Decision,
        Stage::Mre,
        Stage::Fix,
        Stage::Validate,
        Stage::Integrate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Client => "client",
            Stage::Triage => "triage",
            Stage::Decision => "decision",
            Stage::Mre => "mre",
            Stage::Fix => "fix",
            Stage::Validate => "validate",
            Stage::Integrate => "integrate",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        [Stage::Client]
            .into_iter()
            .chain(Stage::WORKERS)
            .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

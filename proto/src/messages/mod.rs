//! The messages of the repair workflow, one per edge, and their MessagePack encoding.
//!
//! Versioning rule: within a released version only optional fields with `#[serde(default)]`
//! may be added (bodies are MessagePack maps, so old readers ignore them and new readers fill
//! them in). Any other change is a new version module with an upgrade from the old one;
//! handlers only ever see the current version. Committed snapshots in `proto/snapshots/`
//! prove that every released version still decodes.

pub mod v1;
pub mod v2;
pub mod v3;

pub use v3::*;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{IterationId, RepairId, Stage};

/// The type of a message, carried in the `Coval-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RepairRequested,
    Triaged,
    Decided,
    MreReady,
    FixProposed,
    ValidationFailed,
    ValidationPassed,
    RepairCompleted,
    DeadLetter,
    StageProgress,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::RepairRequested,
        Kind::Triaged,
        Kind::Decided,
        Kind::MreReady,
        Kind::FixProposed,
        Kind::ValidationFailed,
        Kind::ValidationPassed,
        Kind::RepairCompleted,
        Kind::DeadLetter,
        Kind::StageProgress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RepairRequested => "repair_requested",
            Kind::Triaged => "triaged",
            Kind::Decided => "decided",
            Kind::MreReady => "mre_ready",
            Kind::FixProposed => "fix_proposed",
            Kind::ValidationFailed => "validation_failed",
            Kind::ValidationPassed => "validation_passed",
            Kind::RepairCompleted => "repair_completed",
            Kind::DeadLetter => "dead_letter",
            Kind::StageProgress => "stage_progress",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The version new messages of this kind are written in.
    pub fn current_version(self) -> u16 {
        *self.supported_versions().last().unwrap_or(&1)
    }

    /// Every version of this kind this build can still read, oldest first.
    pub fn supported_versions(self) -> &'static [u16] {
        match self {
            // v2: the engine is an `Engine`, in the message and in its attempt history.
            Kind::FixProposed | Kind::ValidationFailed | Kind::ValidationPassed => &[1, 2],
            // v3: a repair whose tests cannot run is its own outcome.
            Kind::RepairCompleted => &[1, 3],
            _ => &[1],
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown message type `{0}`")]
    UnknownKind(String),
    #[error("unsupported version {version} of `{kind}` (this build reads {supported:?})")]
    UnsupportedVersion {
        kind: Kind,
        version: u16,
        supported: &'static [u16],
    },
    #[error("malformed `{kind}` v{version} body: {source}")]
    Malformed {
        kind: Kind,
        version: u16,
        #[source]
        source: rmp_serde::decode::Error,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode `{kind}`: {source}")]
pub struct EncodeError {
    pub kind: Kind,
    #[source]
    pub source: rmp_serde::encode::Error,
}

/// Any message of the workflow, in its current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    RepairRequested(RepairRequested),
    Triaged(Triaged),
    Decided(Decided),
    MreReady(MreReady),
    FixProposed(FixProposed),
    ValidationFailed(ValidationFailed),
    ValidationPassed(ValidationPassed),
    RepairCompleted(RepairCompleted),
    DeadLetter(DeadLetter),
    StageProgress(StageProgress),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::RepairRequested(_) => Kind::RepairRequested,
            Message::Triaged(_) => Kind::Triaged,
            Message::Decided(_) => Kind::Decided,
            Message::MreReady(_) => Kind::MreReady,
            Message::FixProposed(_) => Kind::FixProposed,
            Message::ValidationFailed(_) => Kind::ValidationFailed,
            Message::ValidationPassed(_) => Kind::ValidationPassed,
            Message::RepairCompleted(_) => Kind::RepairCompleted,
            Message::DeadLetter(_) => Kind::DeadLetter,
            Message::StageProgress(_) => Kind::StageProgress,
        }
    }

    pub fn repair_id(&self) -> RepairId {
        match self {
            Message::RepairRequested(m) => m.repair_id,
            Message::Triaged(m) => m.request.repair_id,
            Message::Decided(m) => m.request.repair_id,
            Message::MreReady(m) => m.request.repair_id,
            Message::FixProposed(m) => m.request.repair_id,
            Message::ValidationFailed(m) => m.request.repair_id,
            Message::ValidationPassed(m) => m.request.repair_id,
            Message::RepairCompleted(m) => m.repair_id,
            Message::DeadLetter(m) => m.repair_id,
            Message::StageProgress(m) => m.repair_id,
        }
    }

    /// The fix attempt this message belongs to, where it belongs to one.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            Message::FixProposed(m) => Some(m.attempt),
            Message::ValidationFailed(m) => Some(m.attempt),
            Message::ValidationPassed(m) => Some(m.attempt),
            _ => None,
        }
    }

    /// Where this message goes next; `None` for messages no stage consumes (completions,
    /// progress events and dead letters, which go to their own subjects).
    pub fn route(&self) -> Option<Stage> {
        match self {
            Message::RepairRequested(_) => Some(Stage::Triage),
            Message::Triaged(_) => Some(Stage::Decision),
            Message::Decided(m) => {
                if m.request.analyze_only || m.decision.verdict == Verdict::Rebuild {
                    Some(Stage::Integrate)
                } else {
                    Some(Stage::Mre)
                }
            }
            // Tests that cannot run leave nothing to fix: integration reports why.
            Message::MreReady(m) if m.mre.blocked.is_some() => Some(Stage::Integrate),
            Message::MreReady(_) => Some(Stage::Fix),
            Message::FixProposed(_) => Some(Stage::Validate),
            Message::ValidationFailed(m) if m.attempts_left > 0 => Some(Stage::Fix),
            Message::ValidationFailed(_) => Some(Stage::Integrate),
            Message::ValidationPassed(_) => Some(Stage::Integrate),
            Message::RepairCompleted(_) | Message::DeadLetter(_) | Message::StageProgress(_) => {
                None
            }
        }
    }

    /// The body as MessagePack (a map with field names, so optional fields can be added).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        fn enc<T: Serialize>(kind: Kind, v: &T) -> Result<Vec<u8>, EncodeError> {
            // Sized for a typical body up front: growing from empty took several
            // reallocations per message on the hot path.
            let mut buf = Vec::with_capacity(1024);
            rmp_serde::encode::write_named(&mut buf, v)
                .map_err(|source| EncodeError { kind, source })?;
            Ok(buf)
        }
        let kind = self.kind();
        match self {
            Message::RepairRequested(m) => enc(kind, m),
            Message::Triaged(m) => enc(kind, m),
            Message::Decided(m) => enc(kind, m),
            Message::MreReady(m) => enc(kind, m),
            Message::FixProposed(m) => enc(kind, m),
            Message::ValidationFailed(m) => enc(kind, m),
            Message::ValidationPassed(m) => enc(kind, m),
            Message::RepairCompleted(m) => enc(kind, m),
            Message::DeadLetter(m) => enc(kind, m),
            Message::StageProgress(m) => enc(kind, m),
        }
    }

    /// Decode a body given the type and version from its headers. Old versions are upgraded
    /// to the current one; anything unknown is an error, never a panic.
    pub fn decode(kind: &str, version: u16, body: &[u8]) -> Result<Message, DecodeError> {
        let kind = Kind::parse(kind).ok_or_else(|| DecodeError::UnknownKind(truncate(kind)))?;
        if !kind.supported_versions().contains(&version) {
            return Err(DecodeError::UnsupportedVersion {
                kind,
                version,
                supported: kind.supported_versions(),
            });
        }
        fn dec<T: DeserializeOwned>(kind: Kind, version: u16, b: &[u8]) -> Result<T, DecodeError> {
            rmp_serde::from_slice(b).map_err(|source| DecodeError::Malformed {
                kind,
                version,
                source,
            })
        }
        // An old version decodes into its own struct and is upgraded to the current one.
        Ok(match (kind, version) {
            (Kind::FixProposed, 1) => {
                Message::FixProposed(dec::<v1::FixProposed>(kind, version, body)?.into())
            }
            (Kind::ValidationFailed, 1) => {
                Message::ValidationFailed(dec::<v1::ValidationFailed>(kind, version, body)?.into())
            }
            (Kind::ValidationPassed, 1) => {
                Message::ValidationPassed(dec::<v1::ValidationPassed>(kind, version, body)?.into())
            }
            (Kind::RepairCompleted, 1) => {
                Message::RepairCompleted(dec::<v1::RepairCompleted>(kind, version, body)?.into())
            }
            (Kind::RepairRequested, _) => Message::RepairRequested(dec(kind, version, body)?),
            (Kind::Triaged, _) => Message::Triaged(dec(kind, version, body)?),
            (Kind::Decided, _) => Message::Decided(dec(kind, version, body)?),
            (Kind::MreReady, _) => Message::MreReady(dec(kind, version, body)?),
            (Kind::FixProposed, _) => Message::FixProposed(dec(kind, version, body)?),
            (Kind::ValidationFailed, _) => Message::ValidationFailed(dec(kind, version, body)?),
            (Kind::ValidationPassed, _) => Message::ValidationPassed(dec(kind, version, body)?),
            (Kind::RepairCompleted, _) => Message::RepairCompleted(dec(kind, version, body)?),
            (Kind::DeadLetter, _) => Message::DeadLetter(dec(kind, version, body)?),
            (Kind::StageProgress, _) => Message::StageProgress(dec(kind, version, body)?),
        })
    }

    /// The iteration a completed repair produced, if any.
    pub fn new_iteration(&self) -> Option<IterationId> {
        match self {
            Message::RepairCompleted(m) => m.new_iteration,
            _ => None,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests;

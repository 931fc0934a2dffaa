//! Typed identifiers: ULIDs with a readable prefix, and iteration numbers.
//!
//! Message ids of outputs are derived from their cause, so a handler that runs twice for the
//! same input produces the same ids and JetStream's duplicate window drops the second copy.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::Stage;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("`{value}` is not a {what} id: expected `{prefix}_` followed by 26 base32 characters")]
    Malformed {
        what: &'static str,
        prefix: &'static str,
        value: String,
    },
    #[error("`{0}` is not an iteration id: expected `iter-NNN` or a number")]
    Iteration(String),
}

macro_rules! prefixed_ulid {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(Ulid::new())
            }

            /// The all-zero id, for records whose real id could not be read.
            pub fn nil() -> Self {
                Self(Ulid::nil())
            }

            pub fn from_ulid(u: Ulid) -> Self {
                Self(u)
            }

            pub fn ulid(&self) -> Ulid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let malformed = || IdError::Malformed { what: $what, prefix: $prefix, value: s.chars().take(64).collect() };
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(malformed)?;
                Ulid::from_string(rest).map(Self).map_err(|_| malformed())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_ulid!(
    /// One repair, from request to report.
    RepairId, "rep", "repair"
);
prefixed_ulid!(
    /// One message; also its `Nats-Msg-Id`.
    MessageId, "msg", "message"
);

impl MessageId {
    /// The id of the `index`-th output that `stage` produces when it handles `cause`.
    ///
    /// Deterministic: the same cause, stage and index give the same id. The timestamp part is
    /// the cause's, so derived ids still sort next to their cause.
    pub fn derive(cause: &MessageId, stage: Stage, index: u32) -> MessageId {
        let mut h = Sha256::new();
        h.update(cause.0.to_bytes());
        h.update(stage.as_str().as_bytes());
        h.update(index.to_be_bytes());
        let digest = h.finalize();
        let mut random = [0u8; 16];
        random.copy_from_slice(&digest[..16]);
        let random = u128::from_be_bytes(random) & ((1u128 << 80) - 1);
        MessageId(Ulid::from_parts(cause.0.timestamp_ms(), random))
    }
}

/// An iteration of the user's project: `iter-001`, `iter-002`, ... with parent lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IterationId(pub u32);

impl fmt::Display for IterationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iter-{:03}", self.0)
    }
}

impl FromStr for IterationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let digits = s.strip_prefix("iter-").unwrap_or(s);
        match digits.parse::<u32>() {
            Ok(n) if n > 0 => Ok(IterationId(n)),
            _ => Err(IdError::Iteration(s.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let r = RepairId::new();
        assert_eq!(r.to_string().parse::<RepairId>().unwrap(), r);
        assert!(r.to_string().starts_with("rep_"));
        assert!(
            "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV"
                .parse::<RepairId>()
                .is_err()
        );
        assert!("rep_not-a-ulid".parse::<RepairId>().is_err());
        assert_eq!("iter-007".parse::<IterationId>().unwrap(), IterationId(7));
        assert_eq!(IterationId(7).to_string(), "iter-007");
        assert_eq!(IterationId(1234).to_string(), "iter-1234");
        assert!("iter-0".parse::<IterationId>().is_err());
        assert!("iter-x".parse::<IterationId>().is_err());
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let cause = MessageId::new();
        let a = MessageId::derive(&cause, Stage::Triage, 0);
        assert_eq!(a, MessageId::derive(&cause, Stage::Triage, 0));
        assert_ne!(a, MessageId::derive(&cause, Stage::Triage, 1));
        assert_ne!(a, MessageId::derive(&cause, Stage::Decision, 0));
        assert_ne!(a, MessageId::derive(&MessageId::new(), Stage::Triage, 0));
        assert_eq!(a.ulid().timestamp_ms(), cause.ulid().timestamp_ms());
    }
}

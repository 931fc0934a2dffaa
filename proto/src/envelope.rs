//! The envelope: everything about a message that is not its body, carried in NATS headers
//! (and in memory on the in-process bus) so that routing, de-duplication and tracing never
//! need to decode the body.

use crate::{Kind, MessageId, RepairId, Stage};

/// Header names. `Nats-Msg-Id` is JetStream's de-duplication key; `traceparent` and
/// `tracestate` are W3C Trace Context.
pub mod headers {
    pub const KIND: &str = "Coval-Type";
    pub const VERSION: &str = "Coval-Version";
    pub const MESSAGE_ID: &str = "Coval-Message-Id";
    pub const REPAIR_ID: &str = "Coval-Repair-Id";
    pub const CAUSATION_ID: &str = "Coval-Causation-Id";
    pub const ATTEMPT: &str = "Coval-Attempt";
    pub const PRODUCER: &str = "Coval-Producer";
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub message_id: MessageId,
    pub kind: Kind,
    pub version: u16,
    pub repair_id: RepairId,
    /// The message whose handling produced this one; `None` for a client's request.
    pub causation_id: Option<MessageId>,
    /// The fix attempt this message belongs to (0 before the first attempt).
    pub attempt: u32,
    pub producer: Stage,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header `{0}` is missing")]
    Missing(&'static str),
    #[error("header `{name}` has an invalid value `{value}`")]
    Invalid { name: &'static str, value: String },
}

impl Envelope {
    /// The envelope of a message a client starts a repair with.
    pub fn origin(kind: Kind, repair_id: RepairId) -> Envelope {
        Envelope {
            message_id: MessageId::new(),
            kind,
            version: kind.current_version(),
            repair_id,
            causation_id: None,
            attempt: 0,
            producer: Stage::Client,
            traceparent: None,
            tracestate: None,
        }
    }

    /// The envelope of the `index`-th output of `stage` handling the message `cause`.
    pub fn derived(
        cause: &Envelope,
        stage: Stage,
        index: u32,
        kind: Kind,
        repair_id: RepairId,
        attempt: Option<u32>,
    ) -> Envelope {
        Envelope {
            message_id: MessageId::derive(&cause.message_id, stage, index),
            kind,
            version: kind.current_version(),
            repair_id,
            causation_id: Some(cause.message_id),
            attempt: attempt.unwrap_or(cause.attempt),
            producer: stage,
            traceparent: None,
            tracestate: None,
        }
    }

    /// Headers to send, `Nats-Msg-Id` included.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (headers::KIND, self.kind.as_str().to_owned()),
            (headers::VERSION, self.version.to_string()),
            (headers::MESSAGE_ID, self.message_id.to_string()),
            (headers::NATS_MSG_ID, self.message_id.to_string()),
            (headers::REPAIR_ID, self.repair_id.to_string()),
            (headers::ATTEMPT, self.attempt.to_string()),
            (headers::PRODUCER, self.producer.as_str().to_owned()),
        ];
        if let Some(c) = &self.causation_id {
            h.push((headers::CAUSATION_ID, c.to_string()));
        }
        if let Some(t) = &self.traceparent {
            h.push((headers::TRACEPARENT, t.clone()));
        }
        if let Some(t) = &self.tracestate {
            h.push((headers::TRACESTATE, t.clone()));
        }
        h
    }

    /// Read an envelope from received headers. `get` looks a header up by name (always one
    /// of [`headers`], so a lookup may use the name without copying it).
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Envelope, EnvelopeError> {
        fn req<'a>(
            get: &impl Fn(&'static str) -> Option<&'a str>,
            n: &'static str,
        ) -> Result<&'a str, EnvelopeError> {
            get(n).ok_or(EnvelopeError::Missing(n))
        }
        fn invalid(name: &'static str, value: &str) -> EnvelopeError {
            EnvelopeError::Invalid {
                name,
                value: value.chars().take(64).collect(),
            }
        }
        let kind_s = req(&get, headers::KIND)?;
        let kind = Kind::parse(kind_s).ok_or_else(|| invalid(headers::KIND, kind_s))?;
        let version_s = req(&get, headers::VERSION)?;
        let version = version_s
            .parse()
            .map_err(|_| invalid(headers::VERSION, version_s))?;
        let id_s = req(&get, headers::MESSAGE_ID)?;
        let message_id = id_s
            .parse()
            .map_err(|_| invalid(headers::MESSAGE_ID, id_s))?;
        let rep_s = req(&get, headers::REPAIR_ID)?;
        let repair_id = rep_s
            .parse()
            .map_err(|_| invalid(headers::REPAIR_ID, rep_s))?;
        let causation_id = match get(headers::CAUSATION_ID) {
            Some(c) => Some(c.parse().map_err(|_| invalid(headers::CAUSATION_ID, c))?),
            None => None,
        };
        let attempt = match get(headers::ATTEMPT) {
            Some(a) => a.parse().map_err(|_| invalid(headers::ATTEMPT, a))?,
            None => 0,
        };
        let producer = match get(headers::PRODUCER) {
            Some(p) => Stage::parse(p).ok_or_else(|| invalid(headers::PRODUCER, p))?,
            None => Stage::Client,
        };
        Ok(Envelope {
            message_id,
            kind,
            version,
            repair_id,
            causation_id,
            attempt,
            producer,
            traceparent: get(headers::TRACEPARENT).map(str::to_owned),
            tracestate: get(headers::TRACESTATE).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn envelope_round_trips_through_headers() {
        let origin = Envelope::origin(Kind::RepairRequested, RepairId::new());
        let mut e = Envelope::derived(
            &origin,
            Stage::Triage,
            0,
            Kind::Triaged,
            origin.repair_id,
            None,
        );
        e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let map: HashMap<&str, String> = e.to_headers().into_iter().collect();
        assert_eq!(map[headers::NATS_MSG_ID], e.message_id.to_string());
        let back = Envelope::from_headers(|n| map.get(n).map(String::as_str)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let map: HashMap<&str, &str> = [(headers::KIND, "triaged")].into();
        assert_eq!(
            Envelope::from_headers(|n| map.get(n).copied()),
            Err(EnvelopeError::Missing(headers::VERSION))
        );
        let map: HashMap<&str, &str> = [(headers::KIND, "nope")].into();
        assert!(matches!(
            Envelope::from_headers(|n| map.get(n).copied()),
            Err(EnvelopeError::Invalid {
                name: headers::KIND,
                ..
            })
        ));
    }
}

//! A message on its way out of a stage. The runtime records it in the ledger and then
//! publishes it; on a bus that sends bytes both need its wire form (the envelope as headers,
//! the body as MessagePack). That form is made once, when first asked for, and shared: the
//! ledger keeps exactly the bytes that are sent, and the in-process bus never makes it.

use std::sync::{Arc, OnceLock};

use crate::messages::EncodeError;
use crate::{Envelope, Message};

/// The headers and body a message is sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// [`Envelope::to_headers`].
    pub headers: Vec<(&'static str, String)>,
    /// [`Message::encode`].
    pub body: Vec<u8>,
}

impl Wire {
    pub fn of(envelope: &Envelope, message: &Message) -> Result<Wire, EncodeError> {
        Ok(Wire {
            body: message.encode()?,
            headers: envelope.to_headers(),
        })
    }
}

/// A stage's output: its envelope, the message (shared with whoever else reads it), and its
/// wire form once made.
#[derive(Debug)]
pub struct Outgoing {
    pub envelope: Envelope,
    pub message: Arc<Message>,
    wire: OnceLock<Wire>,
}

impl Outgoing {
    pub fn new(envelope: Envelope, message: Arc<Message>) -> Outgoing {
        Outgoing {
            envelope,
            message,
            wire: OnceLock::new(),
        }
    }

    /// The wire form, made on the first call.
    pub fn wire(&self) -> Result<&Wire, EncodeError> {
        if let Some(w) = self.wire.get() {
            return Ok(w);
        }
        let w = Wire::of(&self.envelope, &self.message)?;
        Ok(self.wire.get_or_init(|| w))
    }

    /// The wire form, taken (made now if nobody asked for it before).
    pub fn into_wire(self) -> Result<Wire, EncodeError> {
        match self.wire.into_inner() {
            Some(w) => Ok(w),
            None => Wire::of(&self.envelope, &self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, RepairId};

    fn outgoing() -> Outgoing {
        let r = RepairId::new();
        let msg = Message::RepairCompleted(crate::messages::RepairCompleted {
            repair_id: r,
            outcome: crate::messages::RepairOutcome::Fixed,
            summary: "fixed app/calc.py:3".into(),
            new_iteration: None,
            report_dir: None,
            completed_at_ms: 1_764_000_005_000,
            report: None,
            blocked: None,
        });
        Outgoing::new(Envelope::origin(Kind::RepairCompleted, r), Arc::new(msg))
    }

    #[test]
    fn the_wire_form_is_made_once_and_is_what_is_taken() {
        let out = outgoing();
        let expected = Wire::of(&out.envelope, &out.message).unwrap();
        let first: *const Wire = out.wire().unwrap();
        let again: *const Wire = out.wire().unwrap();
        assert_eq!(first, again, "made a second time");
        assert_eq!(out.into_wire().unwrap(), expected);
        // Never asked for: made when taken.
        let fresh = outgoing();
        let expected = Wire::of(&fresh.envelope, &fresh.message).unwrap();
        assert_eq!(fresh.into_wire().unwrap(), expected);
    }
}

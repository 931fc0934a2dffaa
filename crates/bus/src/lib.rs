//! How stages run and talk: the `Bus` trait (what the stage runtime needs from a message bus,
//! so one runtime serves the in-process bus of the embedded mode and JetStream in the
//! distributed mode), the two buses (`memory`, `jetstream`), the stage runtime (`runtime`:
//! handlers, outcomes, acks, dead letters, idempotent redelivery), what a stage is built from
//! (`context`), the progress every stage announces (`announce`) and the worker process
//! (`worker`). It must never import a stage crate nor the sandbox: stages are plugged in
//! through `runtime::Handler`, and the registry that knows all six is the `stages` crate.

pub mod announce;
pub mod context;
pub mod jetstream;
pub mod memory;
pub mod runtime;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proto::{Envelope, Message, Stage};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(
        "cannot reach NATS at {url}: {reason}; start it with `scripts/dev-services.sh up` or pass --nats URL"
    )]
    Connect { url: String, reason: String },
    #[error("NATS credentials: {0}")]
    Auth(String),
    #[error("JetStream setup failed for {what}: {reason}")]
    Setup { what: String, reason: String },
    #[error("publish to `{subject}` failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("receiving from `{stage}` failed: {reason}")]
    Receive { stage: Stage, reason: String },
    #[error("acknowledging a `{stage}` message failed: {reason}")]
    Ack { stage: Stage, reason: String },
    #[error("cannot encode `{0}`")]
    Encode(#[from] proto::messages::EncodeError),
    #[error("the bus is closed")]
    Closed,
}

impl BusError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            BusError::Encode(_) | BusError::Closed | BusError::Auth(_)
        )
    }
}

/// The server's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The server had already stored a message with this id and dropped this copy.
    pub duplicate: bool,
}

/// A received message that could not be opened: it goes to the dead-letter subject.
#[derive(Debug, Clone)]
pub struct Poison {
    pub reason: String,
}

/// A message as received, with the controls to settle it.
pub trait Delivery: Send + 'static {
    /// The envelope and the decoded body, or why they cannot be read.
    fn open(&mut self) -> Result<(Envelope, Arc<Message>), Poison>;
    /// How many times this message has been delivered, this time included (1 on first).
    fn delivered(&self) -> u32;
    fn subject(&self) -> String;
    /// The raw headers and body, kept in dead letters.
    fn raw(&self) -> (Vec<(String, String)>, Vec<u8>);
    /// Handled: never deliver again.
    fn ack(self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Not handled: deliver again after `delay`.
    fn nak(self, delay: Duration) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Never deliver again, without success (after a dead-letter publish).
    fn term(self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Still working: restart the redelivery timer.
    fn progress(&self) -> impl Future<Output = Result<(), BusError>> + Send;
}

pub trait Subscription: Send + 'static {
    type Delivery: Delivery;
    fn next(&mut self) -> impl Future<Output = Option<Result<Self::Delivery, BusError>>> + Send;
}

pub trait Bus: Clone + Send + Sync + 'static {
    type Delivery: Delivery;
    type Subscription: Subscription<Delivery = Self::Delivery>;

    /// Publish one message where it routes ([`proto::subjects::subject_for`]) and wait until
    /// the bus has stored it.
    fn publish(
        &self,
        envelope: &Envelope,
        message: Message,
    ) -> impl Future<Output = Result<Published, BusError>> + Send;

    /// Start receiving `stage`'s work.
    fn subscribe(
        &self,
        stage: Stage,
    ) -> impl Future<Output = Result<Self::Subscription, BusError>> + Send;
}

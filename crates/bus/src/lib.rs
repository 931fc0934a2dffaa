//! How stages run and talk: the `Bus` trait (what the stage runtime needs from a message bus,
//! so one runtime serves the in-process bus of the embedded mode and JetStream in the
//! distributed mode), the two buses (`memory`, `jetstream`), the stage runtime (`runtime`:
//! handlers, outcomes, acks, dead letters, idempotent redelivery), what a stage is built from
//! (`context`), the progress every stage announces (`announce`) and the worker process
//! (`worker`). It must never import a stage crate nor the sandbox: stages are plugged in
//! through `runtime::Handler`, and the registry that knows all six is the `stages` crate.

pub mod announce;
pub mod context;
pub mod health;
pub mod jetstream;
pub mod memory;
pub mod runtime;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proto::{Envelope, Message, Outgoing, Stage};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(
        "cannot reach NATS at {url}: {reason}; start it with `scripts/dev-services.sh up` or pass --nats URL"
    )]
    Connect { url: String, reason: String },
    #[error("NATS credentials: {0}")]
    Auth(String),
    /// `transient`: the server may succeed later (a timeout, no answer, a cluster electing a
    /// leader or short of peers for the replicas); not a refused or invalid request.
    #[error("JetStream setup failed for {what}: {reason}")]
    Setup {
        what: String,
        reason: String,
        transient: bool,
    },
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
        match self {
            BusError::Setup { transient, .. } => *transient,
            BusError::Encode(_) | BusError::Closed | BusError::Auth(_) => false,
            _ => true,
        }
    }
}

/// Runs a setup step (creating streams, binding a consumer) until it succeeds, trying again
/// while its error may pass (a cluster electing a leader, a node killed mid-request) for up to
/// `bus.setup_timeout_secs`, with a backoff from 250 ms to 5 s. `None` when `shutdown` came
/// first.
pub async fn retry_setup<T, F, Fut>(
    cfg: &settings::BusConfig,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
    mut step: F,
) -> Result<Option<T>, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BusError>>,
{
    let deadline = tokio::time::Instant::now() + cfg.setup_timeout();
    let mut wait = Duration::from_millis(250);
    loop {
        let e = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = step() => match r {
                Ok(v) => return Ok(Some(v)),
                Err(e) => e,
            },
        };
        if !e.is_retryable() || tokio::time::Instant::now() + wait > deadline {
            return Err(e);
        }
        tracing::warn!(error = %e, retry_in = ?wait, "cannot set up {what} yet; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
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

    /// [`publish`](Self::publish) of a shared message: what the stage runtime uses, so a
    /// message (over a kilobyte) is not copied at each step between the handler and the bus.
    fn publish_shared(
        &self,
        envelope: &Envelope,
        message: Arc<Message>,
    ) -> impl Future<Output = Result<Published, BusError>> + Send {
        self.publish(envelope, Arc::unwrap_or_clone(message))
    }

    /// [`publish`](Self::publish) of a stage's output. A bus that sends bytes takes the
    /// output's wire form (made once, and already made if the ledger recorded it); the
    /// in-process bus passes the message itself.
    fn publish_output(
        &self,
        output: Outgoing,
    ) -> impl Future<Output = Result<Published, BusError>> + Send {
        let Outgoing {
            envelope, message, ..
        } = output;
        async move { self.publish_shared(&envelope, message).await }
    }

    /// Start receiving `stage`'s work.
    fn subscribe(
        &self,
        stage: Stage,
    ) -> impl Future<Output = Result<Self::Subscription, BusError>> + Send;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use tokio_util::sync::CancellationToken;

    fn cfg(setup_timeout_secs: u64) -> settings::BusConfig {
        // The built-in defaults alone: no settings file is found under a missing directory.
        let opts = settings::LoadOptions {
            cwd: "/nonexistent".into(),
            ..Default::default()
        };
        let mut c = settings::load(&opts)
            .expect("built-in settings")
            .settings
            .bus;
        c.setup_timeout_secs = setup_timeout_secs;
        c
    }

    fn setup_error(transient: bool) -> BusError {
        BusError::Setup {
            what: "consumer `x`".into(),
            reason: "timed out".into(),
            transient,
        }
    }

    #[tokio::test]
    async fn a_transient_setup_error_is_retried_until_the_step_succeeds() {
        let calls = AtomicU32::new(0);
        let r = retry_setup(&cfg(60), &CancellationToken::new(), "x", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(setup_error(true)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(r.ok().flatten(), Some(3));
    }

    #[tokio::test]
    async fn a_refused_setup_is_not_retried_and_a_lasting_outage_ends_at_the_timeout() {
        let calls = AtomicU32::new(0);
        let r: Result<Option<()>, _> =
            retry_setup(&cfg(60), &CancellationToken::new(), "x", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(setup_error(false))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let started = std::time::Instant::now();
        let r: Result<Option<()>, _> =
            retry_setup(&cfg(1), &CancellationToken::new(), "x", || async {
                Err(setup_error(true))
            })
            .await;
        assert!(matches!(r, Err(BusError::Setup { .. })));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_retries_without_an_error() {
        let stop = CancellationToken::new();
        stop.cancel();
        let r: Result<Option<()>, _> =
            retry_setup(&cfg(60), &stop, "x", || async { Err(setup_error(true)) }).await;
        assert!(matches!(r, Ok(None)));
    }
}

//! The stage runtime: runs one stage's handler on either bus and turns its outcome into bus
//! actions. Outputs are recorded, published and acknowledged by the bus before the input is
//! acked; transient failures are Nak'ed with backoff; poison input and messages out of
//! deliveries are published to the dead-letter subject and terminated; in-progress acks keep a
//! long handler's message from being redelivered; shutdown stops pulling and lets in-flight
//! work finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use proto::messages::DeadLetter;
use proto::{Envelope, Kind, Message, MessageId, Outgoing, RepairId, Stage};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Bus, BusError, Delivery, Subscription};
use settings::BusConfig;
use store::{Store, StoreError};

/// A message handed to a handler.
#[derive(Debug, Clone)]
pub struct Input {
    pub envelope: Envelope,
    pub message: Arc<Message>,
    /// 1 on first delivery.
    pub delivered: u32,
}

/// What a handler decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Publish these messages (possibly none), then ack the input.
    Publish(Vec<Message>),
    /// Nothing to do for this input (a message for another flow, already done): ack it.
    Skip(String),
    /// A transient failure: deliver again after `after` (or the configured backoff).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The input can never succeed: dead-letter it with this reason.
    Reject(String),
}

/// One stage's logic. Handlers should not do network IO where that can be avoided, and they
/// must be idempotent: the runtime may call them again for the same input after a crash.
pub trait Handler: Send + Sync + 'static {
    fn stage(&self) -> Stage;
    fn handle(&self, input: Input) -> impl Future<Output = Outcome> + Send;
}

/// Where the runtime remembers which inputs were handled and what they produced.
pub trait Ledger: Send + Sync + 'static {
    fn outputs(
        &self,
        stage: Stage,
        id: &MessageId,
    ) -> Result<Option<Vec<(Envelope, Message)>>, StoreError>;
    fn record(&self, stage: Stage, id: &MessageId, outputs: &[Outgoing]) -> Result<(), StoreError>;
    /// Resolves once every record made before the call is on disk. The runtime acks an input
    /// only after this, so an acked message's record survives a crash. Implementations share
    /// one flush among all who wait at once (a group commit), not one flush per message.
    fn durable(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
}

impl Ledger for Store {
    fn outputs(
        &self,
        stage: Stage,
        id: &MessageId,
    ) -> Result<Option<Vec<(Envelope, Message)>>, StoreError> {
        self.processed(stage, id)
    }

    fn record(&self, stage: Stage, id: &MessageId, outputs: &[Outgoing]) -> Result<(), StoreError> {
        self.record_processed(stage, id, outputs)
    }

    fn durable(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(self.flush_grouped())
    }
}

/// For the in-process bus: nothing is redelivered after a crash (the process is the unit of
/// failure) and the bus itself drops duplicate ids, so there is nothing to remember.
pub struct NoLedger;

impl Ledger for NoLedger {
    fn outputs(
        &self,
        _: Stage,
        _: &MessageId,
    ) -> Result<Option<Vec<(Envelope, Message)>>, StoreError> {
        Ok(None)
    }

    fn record(&self, _: Stage, _: &MessageId, _: &[Outgoing]) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The stage metrics exported over OTLP (through the global meter provider, which
/// `telemetry` sets only when an exporter is configured; otherwise recording is a no-op).
/// Every point carries the `stage` attribute.
struct Meters {
    /// Inputs the handler ran on (attribute `outcome`: publish, skip, retry, reject).
    handled: opentelemetry::metrics::Counter<u64>,
    /// Inputs that were retried or dead-lettered (attribute `reason`).
    failed: opentelemetry::metrics::Counter<u64>,
    /// Deliveries after the first (a worker died, an ack was lost, a retry).
    redelivered: opentelemetry::metrics::Counter<u64>,
    /// How long the handler ran, in seconds.
    duration: opentelemetry::metrics::Histogram<f64>,
    stage: opentelemetry::KeyValue,
}

impl Meters {
    fn new(stage: Stage) -> Meters {
        let m = opentelemetry::global::meter("coval");
        Meters {
            handled: m
                .u64_counter("coval.stage.handled")
                .with_description("inputs a stage's handler ran on")
                .build(),
            failed: m
                .u64_counter("coval.stage.failed")
                .with_description("inputs retried or dead-lettered")
                .build(),
            redelivered: m
                .u64_counter("coval.stage.redelivered")
                .with_description("deliveries after the first")
                .build(),
            duration: m
                .f64_histogram("coval.stage.handler.duration")
                .with_unit("s")
                .with_description("time a stage's handler took per input")
                .build(),
            stage: opentelemetry::KeyValue::new("stage", stage.as_str()),
        }
    }

    fn failed(&self, reason: &'static str) {
        self.failed.add(
            1,
            &[
                self.stage.clone(),
                opentelemetry::KeyValue::new("reason", reason),
            ],
        );
    }
}

/// Counters of one stage runtime.
#[derive(Debug, Default)]
pub struct Stats {
    pub handled: AtomicU64,
    pub republished: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped: AtomicU64,
    /// The stage's subscription is bound (its consumer exists and pulls): the worker is ready.
    pub bound: AtomicBool,
}

struct Shared<B, H> {
    bus: B,
    handler: Arc<H>,
    ledger: Arc<dyn Ledger>,
    cfg: BusConfig,
    stats: Arc<Stats>,
    meters: Meters,
}

/// Run `handler` on `bus` until `shutdown` is cancelled or the subscription ends.
pub async fn run<B: Bus, H: Handler>(
    bus: B,
    handler: Arc<H>,
    ledger: Arc<dyn Ledger>,
    cfg: BusConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let stage = handler.stage();
    let what = format!("the `{stage}` consumer");
    let Some(mut sub) = crate::retry_setup(&cfg, &shutdown, &what, || bus.subscribe(stage)).await?
    else {
        return Ok(());
    };
    stats.bound.store(true, Ordering::Release);
    let shared = Arc::new(Shared {
        bus,
        handler,
        ledger,
        cfg,
        stats,
        meters: Meters::new(stage),
    });
    let slots = Arc::new(Semaphore::new(shared.cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    tracing::debug!(%stage, "stage runtime started");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = sub.next() => n,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(%stage, error = %e, "receive failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Some(Ok(delivery)) => {
                let shared = shared.clone();
                // Boxed: the spawned future is then a few words, so spawning and polling it
                // do not copy the whole state of `handle_one` (several kilobytes) around;
                // those copies were the largest cost of an in-process hop.
                tasks.spawn(async move {
                    Box::pin(handle_one(&shared, delivery)).await;
                    drop(permit);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    // Stop pulling first, then let in-flight work finish.
    drop(sub);
    while tasks.join_next().await.is_some() {}
    tracing::debug!(%stage, "stage runtime stopped");
    Ok(())
}

async fn handle_one<B: Bus, H: Handler>(s: &Shared<B, H>, mut d: B::Delivery) {
    let stage = s.handler.stage();
    let delivered = d.delivered();
    if delivered > 1 {
        s.meters
            .redelivered
            .add(1, std::slice::from_ref(&s.meters.stage));
    }
    let (envelope, message) = match d.open() {
        Ok(x) => x,
        Err(p) => {
            Box::pin(dead_letter(s, d, None, p.reason)).await;
            return;
        }
    };
    if envelope.kind != message.kind() || message.route() != Some(stage) {
        let reason = format!(
            "a `{}` message does not belong to the `{stage}` stage",
            message.kind()
        );
        Box::pin(dead_letter(s, d, Some(&envelope), reason)).await;
        return;
    }

    // Handled before (a redelivery after a crash or a lost ack): publish the same outputs
    // again, with the same ids, and do not redo the handler's side effects.
    match s.ledger.outputs(stage, &envelope.message_id) {
        Ok(Some(outputs)) => {
            let outputs = outputs
                .into_iter()
                .map(|(e, m)| Outgoing::new(e, Arc::new(m)))
                .collect();
            s.stats.republished.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%stage, message = %envelope.message_id, "already handled; republishing its outputs");
            // The record may be this process's own, not yet on disk (a redelivery while its
            // first handling waits for the flush).
            Box::pin(settle_publish(s, d, &envelope, outputs, true)).await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%stage, error = %e, "cannot read the processed-message ledger; retrying later");
            Box::pin(retry(
                s,
                d,
                &envelope,
                None,
                format!("ledger unreadable: {e}"),
            ))
            .await;
            return;
        }
    }

    let span = tracing::info_span!(
        "stage",
        otel.name = %format!("{stage} {}", envelope.kind),
        stage = %stage,
        repair = %envelope.repair_id,
        message = %envelope.message_id,
        delivered,
        trace_id = tracing::field::Empty,
    );
    // No subscriber wants the span (no log output, no exporter): skip the trace context work.
    if !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&EnvelopeHeaders(&envelope));
        let _ = span.set_parent(parent);
        // The trace id in the span's fields, so JSON log lines name it beside the repair id.
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
    }

    let input = Input {
        envelope: envelope.clone(),
        message,
        delivered,
    };
    // A panicking handler is a failed attempt, not a dead worker.
    let started = std::time::Instant::now();
    let task = std::panic::AssertUnwindSafe(s.handler.handle(input).instrument(span.clone()))
        .catch_unwind();
    tokio::pin!(task);
    // A handler that is done on its first poll (one that waits on nothing) needs no progress
    // timer: making one per message took a timer allocation and a clock read per hop.
    let joined = match task.as_mut().now_or_never() {
        Some(r) => r,
        None => {
            let every = s.cfg.progress_interval();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    biased;
                    r = &mut task => break r,
                    _ = tick.tick() => {
                        if let Err(e) = d.progress().await {
                            tracing::warn!(%stage, error = %e, "in-progress ack failed");
                        }
                    }
                }
            }
        }
    };
    let outcome = match joined {
        Ok(o) => o,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::Retry {
                after: None,
                reason: format!("handler panicked: {what}"),
            }
        }
    };
    s.stats.handled.fetch_add(1, Ordering::Relaxed);
    let took = started.elapsed();
    let label = match &outcome {
        Outcome::Publish(_) => "publish",
        Outcome::Skip(_) => "skip",
        Outcome::Retry { .. } => "retry",
        Outcome::Reject(_) => "reject",
    };
    s.meters
        .duration
        .record(took.as_secs_f64(), std::slice::from_ref(&s.meters.stage));
    s.meters.handled.add(
        1,
        &[
            s.meters.stage.clone(),
            opentelemetry::KeyValue::new("outcome", label),
        ],
    );
    span.in_scope(
        || tracing::info!(%stage, outcome = label, elapsed_ms = took.as_millis() as u64, "handled"),
    );

    match outcome {
        Outcome::Publish(messages) => {
            // Shared from here on: the ledger and the bus read the same copy (and, on a bus
            // that sends bytes, the same encoding).
            let outputs: Vec<Outgoing> = messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut env = Envelope::derived(
                        &envelope,
                        stage,
                        i as u32,
                        m.kind(),
                        m.repair_id(),
                        m.attempt(),
                    );
                    inject_trace(&span, &envelope, &mut env);
                    Outgoing::new(env, Arc::new(m))
                })
                .collect();
            let recorded = match s.ledger.record(stage, &envelope.message_id, &outputs) {
                Ok(()) => true,
                Err(e) => {
                    // Outputs have deterministic ids, so publishing without the record is
                    // still safe: a redelivery would produce the same ids and be
                    // de-duplicated (but the handler would run again).
                    tracing::warn!(%stage, error = %e, "cannot record the handled message");
                    false
                }
            };
            settle_publish(s, d, &envelope, outputs, recorded).await;
        }
        Outcome::Skip(reason) => {
            s.stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%stage, %reason, "skipped");
            if s.ledger.record(stage, &envelope.message_id, &[]).is_ok()
                && let Err(e) = s.ledger.durable().await
            {
                Box::pin(retry(
                    s,
                    d,
                    &envelope,
                    None,
                    format!("ledger flush failed: {e}"),
                ))
                .await;
                return;
            }
            ack(d, stage).await;
        }
        // The rare outcomes are boxed so their state does not enlarge every hop's future.
        Outcome::Retry { after, reason } => Box::pin(retry(s, d, &envelope, after, reason)).await,
        Outcome::Reject(reason) => Box::pin(dead_letter(s, d, Some(&envelope), reason)).await,
    }
}

/// Publish the outputs and, when the input was recorded, wait for the record to be durable
/// at the same time (a grouped flush: the publishes hide its latency); ack only after both.
async fn settle_publish<B: Bus, H: Handler>(
    s: &Shared<B, H>,
    d: B::Delivery,
    input: &Envelope,
    outputs: Vec<Outgoing>,
    recorded: bool,
) {
    let stage = s.handler.stage();
    let publish = async {
        for out in outputs {
            let (kind, id) = (out.envelope.kind, out.envelope.message_id);
            match s.bus.publish_output(out).await {
                Ok(p) if p.duplicate => {
                    tracing::debug!(%stage, message = %id, "output was already published")
                }
                Ok(_) => {}
                Err(e) => return Err(format!("publishing `{kind}` failed: {e}")),
            }
        }
        Ok(())
    };
    let durable = async {
        if recorded {
            s.ledger
                .durable()
                .await
                .map_err(|e| format!("ledger flush failed: {e}"))
        } else {
            Ok(())
        }
    };
    match tokio::join!(publish, durable) {
        (Ok(()), Ok(())) => ack(d, stage).await,
        (Err(reason), _) | (_, Err(reason)) => Box::pin(retry(s, d, input, None, reason)).await,
    }
}

async fn ack<D: Delivery>(d: D, stage: Stage) {
    if let Err(e) = d.ack().await {
        // The message will be redelivered and its outputs republished with the same ids.
        tracing::warn!(%stage, error = %e, "ack failed");
    }
}

async fn retry<B: Bus, H: Handler>(
    s: &Shared<B, H>,
    d: B::Delivery,
    env: &Envelope,
    after: Option<Duration>,
    reason: String,
) {
    let stage = s.handler.stage();
    let delivered = d.delivered();
    if delivered >= s.cfg.max_deliver {
        let reason = format!("gave up after {delivered} deliveries: {reason}");
        dead_letter(s, d, Some(env), reason).await;
        return;
    }
    s.stats.retried.fetch_add(1, Ordering::Relaxed);
    s.meters.failed("retry");
    let delay = after.unwrap_or_else(|| s.cfg.backoff(delivered));
    tracing::warn!(%stage, message = %env.message_id, delivered, delay_ms = delay.as_millis() as u64, %reason, "will retry");
    if let Err(e) = d.nak(delay).await {
        tracing::warn!(%stage, error = %e, "nak failed; the message is redelivered after the ack wait");
    }
}

/// Publish a dead-letter record (the original headers, body and the reason), then terminate
/// the delivery. When the dead-letter publish fails the message is left to redelivery, so it
/// is never lost silently.
async fn dead_letter<B: Bus, H: Handler>(
    s: &Shared<B, H>,
    d: B::Delivery,
    env: Option<&Envelope>,
    reason: String,
) {
    let stage = s.handler.stage();
    let (headers, body) = d.raw();
    // Without a readable envelope, the repair id header alone (when it parses) still lets
    // `coval watch` and `repair --nats` see that their repair died.
    let repair_id = env.map(|e| e.repair_id).unwrap_or_else(|| {
        headers
            .iter()
            .find(|(k, _)| k == proto::envelope::headers::REPAIR_ID)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(RepairId::nil)
    });
    let record = DeadLetter {
        repair_id,
        stage,
        message_id: env.map(|e| e.message_id),
        original_kind: headers
            .iter()
            .find(|(k, _)| k == proto::envelope::headers::KIND)
            .map(|(_, v)| v.clone()),
        original_subject: d.subject(),
        reason: reason.clone(),
        deliveries: d.delivered(),
        headers,
        body,
        dead_at_ms: vocab::now_ms(),
    };
    let dl_env = match env {
        Some(e) => Envelope::derived(e, stage, u32::MAX, Kind::DeadLetter, repair_id, None),
        None => {
            let mut e = Envelope::origin(Kind::DeadLetter, repair_id);
            e.producer = stage;
            e
        }
    };
    tracing::error!(%stage, repair = %repair_id, %reason, "dead-lettering a message");
    match s.bus.publish(&dl_env, Message::DeadLetter(record)).await {
        Ok(_) => {
            s.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            s.meters.failed("dead_letter");
            if let Err(e) = d.term().await {
                tracing::warn!(%stage, error = %e, "term failed");
            }
        }
        Err(e) => {
            tracing::error!(%stage, error = %e, "dead-letter publish failed; leaving the message for redelivery");
            let delay = s.cfg.backoff(1);
            let _ = d.nak(delay).await;
        }
    }
}

struct EnvelopeHeaders<'a>(&'a Envelope);

impl Extractor for EnvelopeHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent.as_deref(),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

struct EnvelopeHeadersMut<'a>(&'a mut Envelope);

impl Injector for EnvelopeHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = Some(value),
            "tracestate" => self.0.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

/// Carry the trace on: the handler's span when tracing exports, else the input's context
/// unchanged, so a worker without an exporter does not break the trace.
fn inject_trace(span: &Span, input: &Envelope, out: &mut Envelope) {
    let cx = if span.is_disabled() {
        opentelemetry::Context::new()
    } else {
        span.context()
    };
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut EnvelopeHeadersMut(out));
    } else {
        out.traceparent = input.traceparent.clone();
        out.tracestate = input.tracestate.clone();
    }
}

/// Start a repair's trace from an OpenTelemetry context (a client's span) made without
/// `tracing`.
pub fn inject_context(cx: &opentelemetry::Context, env: &mut Envelope) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut EnvelopeHeadersMut(env));
    }
}

/// Start a repair's trace: the context of the current span, if any, goes into `env`.
pub fn inject_current_trace(env: &mut Envelope) {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut EnvelopeHeadersMut(env));
    }
}

/// The outcome for a stage whose project cannot be resolved: retried when the error is
/// transient (the object store did not answer), rejected otherwise.
pub fn outcome_for(e: store::projects::ProjectError) -> Outcome {
    if e.is_retryable() {
        Outcome::Retry {
            after: None,
            reason: e.to_string(),
        }
    } else {
        Outcome::Reject(e.to_string())
    }
}

//! The stage runtime on both buses: a chain through six stages, duplicates, poison messages,
//! idempotent redelivery and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use bus::memory::MemoryBus;
use bus::runtime::{self, Handler, Input, Ledger, NoLedger, Outcome, Stats};
use coval_tests::{NatsServer, NoopStage, SyncMode, request, test_bus_config};
use futures::StreamExt;
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use store::Store;
use tokio_util::sync::CancellationToken;

fn origin(repair: RepairId) -> (Envelope, Message) {
    (
        Envelope::origin(Kind::RepairRequested, repair),
        Message::RepairRequested(request(repair)),
    )
}

fn spawn_stage<B: Bus, H: Handler>(
    bus: &B,
    h: H,
    ledger: Arc<dyn Ledger>,
    stop: &CancellationToken,
) -> (tokio::task::JoinHandle<()>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let (bus, stop, s) = (bus.clone(), stop.clone(), stats.clone());
    let task = tokio::spawn(async move {
        runtime::run(bus, Arc::new(h), ledger, test_bus_config(), s, stop)
            .await
            .expect("stage runtime");
    });
    (task, stats)
}

/// A no-op stage of each kind on `bus`, each with a sled ledger of its own (kept in the
/// returned directories), as six worker processes would run.
fn spawn_noop_chain(
    bus: &JetStreamBus,
    stop: &CancellationToken,
) -> Result<(Vec<tempfile::TempDir>, Vec<tokio::task::JoinHandle<()>>)> {
    let dirs: Vec<_> = (0..6)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut tasks = vec![];
    for (stage, dir) in Stage::WORKERS.into_iter().zip(&dirs) {
        let store = Store::open(dir.path())?;
        tasks.push(spawn_stage(bus, NoopStage::new(stage), Arc::new(store), stop).0);
    }
    Ok((dirs, tasks))
}

/// Reads completions and dead letters from the event and dead-letter streams.
async fn js_events(
    bus: &JetStreamBus,
    subject: String,
) -> Result<async_nats::jetstream::consumer::pull::Stream> {
    let ns = bus.namespace();
    let stream_name = if subject.starts_with(&format!("{}.dlq", ns.as_str())) {
        ns.dead_letter_stream()
    } else {
        ns.event_stream()
    };
    let stream = bus.context().get_stream(stream_name).await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

async fn next_message(
    s: &mut async_nats::jetstream::consumer::pull::Stream,
    within: Duration,
) -> Result<(Envelope, Message)> {
    let m = tokio::time::timeout(within, s.next())
        .await
        .context("timed out waiting for a message")?
        .context("stream ended")??;
    m.ack().await.ok();
    let h = m.headers.as_ref().context("no headers")?;
    let env = Envelope::from_headers(|n| h.get(n).map(|v| v.as_str()))?;
    let msg = Message::decode(env.kind.as_str(), env.version, &m.payload)?;
    Ok((env, msg))
}

#[tokio::test]
async fn chain_completes_on_the_in_process_bus() -> Result<()> {
    let bus = MemoryBus::default();
    let stop = CancellationToken::new();
    let tasks: Vec<_> = Stage::WORKERS
        .into_iter()
        .map(|s| spawn_stage(&bus, NoopStage::new(s), Arc::new(NoLedger), &stop).0)
        .collect();
    let repairs: Vec<RepairId> = (0..50).map(|_| RepairId::new()).collect();
    for r in &repairs {
        let (e, m) = origin(*r);
        bus.publish(&e, m).await?;
    }
    let mut done = std::collections::HashSet::new();
    while done.len() < repairs.len() {
        let (env, msg) = tokio::time::timeout(Duration::from_secs(10), bus.next_event())
            .await?
            .context("bus closed")?;
        assert_eq!(msg.kind(), Kind::RepairCompleted);
        assert_eq!(env.producer, Stage::Integrate);
        assert!(
            done.insert(env.repair_id),
            "completed twice: {}",
            env.repair_id
        );
    }
    stop.cancel();
    for t in tasks {
        t.await?;
    }
    Ok(())
}

#[tokio::test]
async fn chain_completes_on_jetstream() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Always)?;
    let bus = JetStreamBus::connect(&nats.url, Namespace::new("chain")?, test_bus_config()).await?;
    let stop = CancellationToken::new();
    let (_dirs, tasks) = spawn_noop_chain(&bus, &stop)?;
    let mut completions = js_events(&bus, bus.namespace().event_subjects()).await?;
    let repairs: Vec<RepairId> = (0..30).map(|_| RepairId::new()).collect();
    for r in &repairs {
        let (e, m) = origin(*r);
        assert!(!bus.publish(&e, m).await?.duplicate);
    }
    let mut done = std::collections::HashSet::new();
    while done.len() < repairs.len() {
        let (env, msg) = next_message(&mut completions, Duration::from_secs(20)).await?;
        assert_eq!(msg.kind(), Kind::RepairCompleted);
        // The chain of causes leads back to the request: every hop derived its id.
        assert!(env.causation_id.is_some());
        assert!(
            done.insert(env.repair_id),
            "completed twice: {}",
            env.repair_id
        );
    }
    // Work-queue retention: nothing is left unhandled in any stage's stream. A stage acks its
    // input after it has published the output, so the last acks may land just after the
    // last completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for stage in Stage::WORKERS {
        let mut work = bus
            .context()
            .get_stream(bus.namespace().work_stream(stage))
            .await?;
        let mut left = work.info().await?.state.messages;
        while left > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = work.info().await?.state.messages;
        }
        assert_eq!(left, 0, "unhandled work left in the {stage} stream");
    }
    stop.cancel();
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Counts calls; optionally always asks for a retry.
struct Counting {
    stage: Stage,
    calls: Arc<AtomicU32>,
    fail: bool,
}

impl Handler for Counting {
    fn stage(&self) -> Stage {
        self.stage
    }
    async fn handle(&self, input: Input) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Outcome::Retry {
                after: Some(Duration::from_millis(100)),
                reason: "sandbox unavailable".into(),
            };
        }
        Outcome::Publish(vec![
            coval_tests::advance(self.stage, &input.message).expect("chain message"),
        ])
    }
}

#[tokio::test]
async fn the_same_message_twice_is_handled_once() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Default)?;
    let bus = JetStreamBus::connect(&nats.url, Namespace::new("dup")?, test_bus_config()).await?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let calls = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    let h = Counting {
        stage: Stage::Triage,
        calls: calls.clone(),
        fail: false,
    };
    let (task, stats) = spawn_stage(&bus, h, Arc::new(store), &stop);
    let mut triaged = js_events_work(&bus, Stage::Decision).await?;

    // Same id published twice: JetStream drops the second copy.
    let (env, msg) = origin(RepairId::new());
    assert!(!bus.publish(&env, msg.clone()).await?.duplicate);
    assert!(bus.publish(&env, msg.clone()).await?.duplicate);
    let (first, _) = next_message(&mut triaged, Duration::from_secs(10)).await?;

    // The same message again under another Nats-Msg-Id (as after the duplicate window): the
    // runtime's ledger recognises it and republishes the same output instead of handling it.
    let subject = proto::subjects::subject_for(bus.namespace(), &msg);
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in env.to_headers() {
        let v = if k == proto::envelope::headers::NATS_MSG_ID {
            format!("{v}-again")
        } else {
            v
        };
        headers.insert(k, v);
    }
    bus.context()
        .publish_with_headers(subject, headers, msg.encode()?.into())
        .await?
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.republished.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivered copy was not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler ran more than once"
    );
    // The republished output kept its id, so the server dropped it: only one Triaged exists.
    let again = tokio::time::timeout(Duration::from_millis(500), triaged.next()).await;
    assert!(again.is_err(), "a second Triaged was delivered");
    assert_eq!(first.causation_id, Some(env.message_id));
    stop.cancel();
    task.await?;
    Ok(())
}

/// A consumer reading what `stage` would receive, without being that stage.
async fn js_events_work(
    bus: &JetStreamBus,
    stage: Stage,
) -> Result<async_nats::jetstream::consumer::pull::Stream> {
    let stream = bus
        .context()
        .get_stream(bus.namespace().work_stream(stage))
        .await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(bus.namespace().consumer(stage)),
            filter_subject: bus.namespace().stage_filter(stage),
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_reason() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Default)?;
    let bus =
        JetStreamBus::connect(&nats.url, Namespace::new("poison")?, test_bus_config()).await?;
    let dir = tempfile::tempdir()?;
    let calls = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    let h = Counting {
        stage: Stage::Triage,
        calls: calls.clone(),
        fail: true,
    };
    let (task, stats) = spawn_stage(&bus, h, Arc::new(Store::open(dir.path())?), &stop);
    let mut dlq = js_events(&bus, bus.namespace().dead_letter_subjects()).await?;

    // 1. A body that does not decode: dead-lettered at once, never handled.
    let (env, _) = origin(RepairId::new());
    let subject = bus
        .namespace()
        .stage_subject(Stage::Triage, Kind::RepairRequested);
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in env.to_headers() {
        headers.insert(k, v);
    }
    bus.context()
        .publish_with_headers(subject.clone(), headers, b"\xc1garbage".to_vec().into())
        .await?
        .await?;
    let (_, dl) = next_message(&mut dlq, Duration::from_secs(10)).await?;
    let Message::DeadLetter(dl) = dl else {
        panic!("not a dead letter")
    };
    assert!(dl.reason.contains("bad body"), "{}", dl.reason);
    assert_eq!(dl.body, b"\xc1garbage");
    assert_eq!(dl.message_id, None);
    // The envelope is unusable, but its repair id header still names the repair.
    assert_eq!(dl.repair_id, env.repair_id);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // 2. No headers at all.
    bus.context()
        .publish(subject, "hello".into())
        .await?
        .await?;
    let (_, dl) = next_message(&mut dlq, Duration::from_secs(10)).await?;
    let Message::DeadLetter(dl) = dl else {
        panic!("not a dead letter")
    };
    assert!(dl.reason.contains("no headers"), "{}", dl.reason);
    assert_eq!(dl.repair_id, RepairId::nil());

    // 3. A handler that fails every time: dead-lettered after max_deliver deliveries.
    let (env, msg) = origin(RepairId::new());
    bus.publish(&env, msg).await?;
    let (dl_env, dl) = next_message(&mut dlq, Duration::from_secs(20)).await?;
    let Message::DeadLetter(dl) = dl else {
        panic!("not a dead letter")
    };
    let max = test_bus_config().max_deliver;
    assert_eq!(dl.deliveries, max);
    assert!(
        dl.reason
            .contains(&format!("gave up after {max} deliveries"))
            && dl.reason.contains("sandbox unavailable"),
        "{}",
        dl.reason
    );
    assert_eq!(dl.message_id, Some(env.message_id));
    assert_eq!(dl_env.repair_id, env.repair_id);
    assert_eq!(calls.load(Ordering::SeqCst), max);
    assert_eq!(stats.dead_lettered.load(Ordering::SeqCst), 3);
    // And it is never delivered again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), max);
    stop.cancel();
    task.await?;
    Ok(())
}

struct SlowOnce {
    started: Arc<tokio::sync::Notify>,
}

impl Handler for SlowOnce {
    fn stage(&self) -> Stage {
        Stage::Triage
    }
    async fn handle(&self, input: Input) -> Outcome {
        self.started.notify_one();
        // Longer than the ack wait (2 s): in-progress acks must keep it from redelivery.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Outcome::Publish(vec![
            coval_tests::advance(Stage::Triage, &input.message).expect("chain"),
        ])
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_progress_acks_prevent_redelivery() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Default)?;
    let bus = JetStreamBus::connect(&nats.url, Namespace::new("stop")?, test_bus_config()).await?;
    let dir = tempfile::tempdir()?;
    let started = Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    let (task, stats) = spawn_stage(
        &bus,
        SlowOnce {
            started: started.clone(),
        },
        Arc::new(Store::open(dir.path())?),
        &stop,
    );
    let mut out = js_events_work(&bus, Stage::Decision).await?;
    let (env, msg) = origin(RepairId::new());
    bus.publish(&env, msg).await?;
    started.notified().await;
    stop.cancel();
    // The runtime stops only after the in-flight message is handled and its output published.
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    let (out_env, _) = next_message(&mut out, Duration::from_secs(2)).await?;
    assert_eq!(out_env.causation_id, Some(env.message_id));
    assert_eq!(stats.handled.load(Ordering::SeqCst), 1);
    // Nothing is left for redelivery: the input was acked.
    let work = bus
        .context()
        .get_stream(bus.namespace().work_stream(Stage::Triage))
        .await?;
    let mut c = work
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            &bus.namespace().consumer(Stage::Triage),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = c.info().await?;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(
        info.num_redelivered, 0,
        "in-progress acks did not prevent redelivery"
    );
    Ok(())
}

/// A server holding the single work stream of an earlier release, with unhandled work in it:
/// workers of this release retire it (new work goes to a stream per stage), handle what was
/// left in it exactly once, and delete it once it is empty.
#[tokio::test]
async fn workers_drain_and_delete_the_work_stream_of_an_earlier_release() -> Result<()> {
    use async_nats::jetstream::{consumer, stream};
    let nats = NatsServer::start(SyncMode::Default)?;
    let ns = Namespace::new("upgrade")?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    // What an earlier release made: one stream for every stage's work, a consumer per stage.
    let legacy = js
        .create_stream(stream::Config {
            name: ns.legacy_work_stream(),
            subjects: vec![ns.work_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    legacy
        .create_consumer(consumer::pull::Config {
            durable_name: Some(ns.consumer(Stage::Triage)),
            filter_subject: ns.stage_filter(Stage::Triage),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let left: Vec<RepairId> = (0..4).map(|_| RepairId::new()).collect();
    for r in &left {
        let (e, m) = origin(*r);
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in e.to_headers() {
            headers.insert(k, v);
        }
        js.publish_with_headers(
            proto::subjects::subject_for(&ns, &m),
            headers,
            m.encode()?.into(),
        )
        .await?
        .await?;
    }

    let bus = JetStreamBus::connect(&nats.url, ns.clone(), test_bus_config()).await?;
    let info = js
        .get_stream(ns.legacy_work_stream())
        .await?
        .info()
        .await?
        .clone();
    assert_eq!(info.config.subjects, vec![ns.retired_work_subject()]);
    assert_eq!(
        info.state.messages, 4,
        "the work left must stay until handled"
    );
    for stage in Stage::WORKERS {
        js.get_stream(ns.work_stream(stage)).await?;
    }

    let stop = CancellationToken::new();
    let (_dirs, tasks) = spawn_noop_chain(&bus, &stop)?;
    let mut completions = js_events(&bus, bus.namespace().event_subjects()).await?;
    let new: Vec<RepairId> = (0..3).map(|_| RepairId::new()).collect();
    for r in &new {
        let (e, m) = origin(*r);
        bus.publish(&e, m).await?;
    }
    let mut done = std::collections::HashSet::new();
    while done.len() < left.len() + new.len() {
        let (env, _) = next_message(&mut completions, Duration::from_secs(20)).await?;
        assert!(
            left.contains(&env.repair_id) || new.contains(&env.repair_id),
            "a completion of an unknown repair"
        );
        assert!(done.insert(env.repair_id), "completed twice");
    }
    // Emptied, the retired stream goes (a subscription checks every 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while js.get_stream(ns.legacy_work_stream()).await.is_ok() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the emptied work stream of the earlier release is still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No completion came twice in the meantime.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), completions.next())
            .await
            .is_err(),
        "a repair completed again"
    );
    stop.cancel();
    for t in tasks {
        t.await?;
    }
    Ok(())
}

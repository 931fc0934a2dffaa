//! Trace context crosses a JetStream hop: the downstream stage's span belongs to the
//! upstream trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use bus::runtime::{self, Input, Stats};
use coval_tests::{NatsServer, NoopStage, SyncMode, request, test_bus_config};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type Seen = Arc<Mutex<Vec<(Stage, TraceId, Option<String>)>>>;

fn observer(stage: Stage, seen: Seen) -> NoopStage<impl Fn(&Input) + Send + Sync + 'static> {
    NoopStage {
        stage,
        observe: move |input: &Input| {
            let cx = tracing::Span::current().context();
            let id = cx.span().span_context().trace_id();
            seen.lock()
                .unwrap()
                .push((stage, id, input.envelope.traceparent.clone()));
        },
    }
}

#[test]
fn trace_context_survives_a_hop() -> Result<()> {
    let provider = telemetry::tracer_provider("coval-test")?;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("coval-test")));
    // A current-thread runtime keeps every task on this thread, under this subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tracing::subscriber::with_default(subscriber, || rt.block_on(run()))
}

async fn run() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Default)?;
    let bus = JetStreamBus::connect(&nats.url, Namespace::new("trace")?, test_bus_config()).await?;
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut tasks = vec![];
    for (stage, dir) in [Stage::Triage, Stage::Decision].into_iter().zip(&dirs) {
        let (bus, stop, h, store) = (
            bus.clone(),
            stop.clone(),
            observer(stage, seen.clone()),
            Store::open(dir.path())?,
        );
        tasks.push(tokio::spawn(async move {
            runtime::run(
                bus,
                Arc::new(h),
                Arc::new(store),
                test_bus_config(),
                Arc::new(Stats::default()),
                stop,
            )
            .await
        }));
    }
    let client_span = tracing::info_span!("client submit");
    let client_trace = client_span.context().span().span_context().trace_id();
    assert_ne!(
        client_trace,
        TraceId::INVALID,
        "the test's tracer is not recording"
    );
    let repair = RepairId::new();
    let mut env = Envelope::origin(Kind::RepairRequested, repair);
    async { runtime::inject_current_trace(&mut env) }
        .instrument(client_span)
        .await;
    assert!(
        env.traceparent
            .as_deref()
            .is_some_and(|t| t.contains(&client_trace.to_string()))
    );
    bus.publish(&env, Message::RepairRequested(request(repair)))
        .await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the chain did not reach decision"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    let seen = seen.lock().unwrap().clone();
    let triage = seen
        .iter()
        .find(|s| s.0 == Stage::Triage)
        .context("triage")?;
    let decision = seen
        .iter()
        .find(|s| s.0 == Stage::Decision)
        .context("decision")?;
    assert_eq!(triage.1, client_trace);
    assert_eq!(
        decision.1, client_trace,
        "the downstream span left the trace"
    );
    // The header the decision stage received names triage's span as its parent, not the client's.
    let hop = decision.2.as_deref().context("no traceparent on the hop")?;
    assert!(hop.contains(&client_trace.to_string()));
    assert_ne!(Some(hop), env.traceparent.as_deref());
    Ok(())
}

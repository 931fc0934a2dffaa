//! Trace context crosses a JetStream hop: the downstream stage's span belongs to the
//! upstream trace.

use std::collections::HashMap;
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

/// The trace of one repair across the six stage binaries, as a real OTLP/HTTP receiver gets
/// it from them (protobuf, decoded): six stage spans under the client's trace id, each the
/// child of the previous stage's span, each from its own process; the JSON logs name the
/// trace and the repair; the stage metrics arrive too.
#[test]
fn one_trace_per_repair_across_six_worker_processes_reaches_an_otlp_receiver() -> Result<()> {
    use crate::workers::{Cluster, STAGES, project, text};
    use coval_tests::otlp::Receiver;

    let rx = Receiver::start()?;
    let mut c = Cluster::new(
        "otel",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("COVAL_LOG_FORMAT", "json"),
            ("COVAL_TRIAGE__COVERAGE", "false"),
        ],
    )?;
    for s in STAGES {
        c.start(s, 0)?;
    }
    // A message without an envelope: triage dead-letters it, which counts as failed.
    let ns = Namespace::new(&c.ns)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = async_nats::connect(&c.nats.url).await?;
        let js = async_nats::jetstream::new(client);
        js.publish(
            ns.stage_subject(Stage::Triage, Kind::RepairRequested),
            "poison".into(),
        )
        .await?
        .await?;
        anyhow::Ok(())
    })?;

    let proj = project(c.dir.path(), None)?;
    let out = c
        .coval()?
        .args(["submit", "--nats", &c.nats.url, "-e"])
        .arg(proj.join("error.log"))
        .arg("-s")
        .arg(&proj)
        .output()?;
    anyhow::ensure!(out.status.success(), "submit: {}", text(&out));
    let repair = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = c
        .coval()?
        .args([
            "watch",
            &repair,
            "--json",
            "--timeout",
            "300",
            "--nats",
            &c.nats.url,
        ])
        .output()?;
    anyhow::ensure!(out.status.code() == Some(0), "watch: {}", text(&out));
    // `watch --json`: one event per line, the completion last, with the report.
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "watch --json printed a line that is not JSON: {}",
                text(&out)
            )
        })?;
    let last = events.last().context("no events")?;
    anyhow::ensure!(
        last["event"] == "repair_completed"
            && last["outcome"] == "fixed"
            && last["report"]["patch"]
                .as_str()
                .is_some_and(|p| p.contains("@@")),
        "last event: {last}"
    );
    let stages_seen: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "stage_progress")
        .filter_map(|e| e["stage"].as_str())
        .collect();
    // Integrate's own progress event may come after the completion that ends the watch.
    for s in &STAGES[..5] {
        anyhow::ensure!(
            stages_seen.contains(s),
            "no progress event of {s}: {stages_seen:?}"
        );
    }

    // JSON logs: a line inside a stage span names the repair and the trace.
    let logs: Vec<(String, String)> = c
        .workers
        .iter()
        .map(|w| (w.name.clone(), w.log_text()))
        .collect();
    // Stopping the workers flushes what their exporters hold.
    for w in std::mem::take(&mut c.workers) {
        let name = w.name.clone();
        anyhow::ensure!(w.stop()?.success(), "{name} did not stop cleanly");
    }

    let spans = rx.spans();
    let client = spans
        .iter()
        .find(|s| s.name == format!("submit {repair}"))
        .with_context(|| format!("no client span among {} spans", spans.len()))?;
    anyhow::ensure!(client.service == "coval" && client.parent_span_id.is_empty());
    let ours: Vec<&coval_tests::otlp::Span> = spans
        .iter()
        .filter(|s| {
            s.attributes.get("repair") == Some(&repair) && s.attributes.contains_key("stage")
        })
        .collect();
    let by_id: HashMap<&str, &coval_tests::otlp::Span> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut first = vec![];
    for (i, stage) in STAGES.iter().enumerate() {
        let of_stage: Vec<_> = ours
            .iter()
            .filter(|s| s.attributes.get("stage").map(String::as_str) == Some(*stage))
            .collect();
        anyhow::ensure!(!of_stage.is_empty(), "no {stage} span: {ours:#?}");
        for s in &of_stage {
            anyhow::ensure!(
                s.trace_id == client.trace_id,
                "{stage}'s span left the repair's trace"
            );
            anyhow::ensure!(
                s.service == format!("coval-{stage}"),
                "{stage}'s span came from {}",
                s.service
            );
            let parent = by_id
                .get(s.parent_span_id.as_str())
                .with_context(|| format!("{stage}'s parent span was not received"))?;
            // Each stage span is the child of the span of the stage that sent its input.
            let expected: &[&str] = match *stage {
                "triage" => &[],
                "fix" => &["mre", "validate"],
                "integrate" => &["validate", "decision", "mre"],
                _ => &STAGES[i - 1..i],
            };
            if expected.is_empty() {
                anyhow::ensure!(
                    parent.span_id == client.span_id,
                    "triage's parent is not the client's span"
                );
            } else {
                let p = parent
                    .attributes
                    .get("stage")
                    .map(String::as_str)
                    .unwrap_or("");
                anyhow::ensure!(
                    expected.contains(&p),
                    "{stage}'s parent is a `{p}` span ({})",
                    parent.name
                );
            }
        }
        first.push(of_stage[0]);
    }
    // The first attempt's chain: triage → decision → mre → fix → validate → integrate.
    for pair in first.windows(2) {
        if pair[1].attributes["stage"] == "integrate" {
            continue; // after the last validation, not necessarily the first
        }
        anyhow::ensure!(
            pair[1].parent_span_id == pair[0].span_id,
            "{} is not the child of {}",
            pair[1].name,
            pair[0].name
        );
    }
    eprintln!(
        "OTLP receiver: {} spans ({} of this repair's stages) from {} services, {:?} requests/bytes",
        spans.len(),
        ours.len(),
        spans
            .iter()
            .map(|s| &s.service)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        rx.traffic()
    );

    let trace_line = logs.iter().find_map(|(name, log)| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["span"]["repair"] == repair.as_str()
                    && v["span"]["trace_id"] == client.trace_id.as_str()
            })
            .map(|v| (name.clone(), v))
    });
    anyhow::ensure!(
        trace_line.is_some(),
        "no JSON log line names both the repair and its trace id"
    );

    // Metrics: handled and the handler's latency per stage, failed for the poison message.
    let points = rx.points();
    let max = |metric: &str, stage: &str, f: &dyn Fn(&coval_tests::otlp::Point) -> f64| {
        points
            .iter()
            .filter(|p| {
                p.metric == metric && p.attributes.get("stage").map(String::as_str) == Some(stage)
            })
            .map(f)
            .fold(0.0, f64::max)
    };
    for stage in STAGES {
        let handled = max("coval.stage.handled", stage, &|p| p.value);
        let timed = max("coval.stage.handler.duration", stage, &|p| {
            p.count.unwrap_or(0) as f64
        });
        anyhow::ensure!(handled >= 1.0, "{stage}: handled {handled}");
        anyhow::ensure!(timed >= 1.0, "{stage}: {timed} latencies recorded");
        anyhow::ensure!(
            points.iter().any(|p| p.metric == "coval.stage.consumer.lag"
                && p.attributes.get("stage").map(String::as_str) == Some(stage)),
            "{stage}: no consumer lag"
        );
    }
    let failed = max("coval.stage.failed", "triage", &|p| p.value);
    anyhow::ensure!(
        failed >= 1.0,
        "the poison message was not counted as failed"
    );
    let triage_handled = max("coval.stage.handled", "triage", &|p| p.value);
    eprintln!(
        "metrics: {} points; triage handled {triage_handled}, failed {failed}",
        points.len()
    );
    Ok(())
}

/// The fix stage, failing its first delivery of each input with a retry.
struct FlakyFix {
    calls: Arc<std::sync::atomic::AtomicU32>,
}

impl runtime::Handler for FlakyFix {
    fn stage(&self) -> Stage {
        Stage::Fix
    }
    async fn handle(&self, _: Input) -> runtime::Outcome {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return runtime::Outcome::Retry {
                after: Some(Duration::from_millis(10)),
                reason: "flaky".into(),
            };
        }
        runtime::Outcome::Skip("done".into())
    }
}

/// A retried input counts as failed (reason `retry`) and its next delivery as redelivered, in
/// what the OTLP receiver gets. This process's global meter provider is shared with the other
/// tests running beside it, so only the fix stage is asserted: no other test retries fix.
#[test]
fn a_retry_counts_as_failed_and_the_next_delivery_as_redelivered() -> Result<()> {
    use coval_tests::otlp::Receiver;
    let rx = Receiver::start()?;
    let meters = telemetry::meter_provider_to(
        "coval-metrics-test",
        &rx.endpoint,
        Duration::from_secs(3600),
    )?;
    opentelemetry::global::set_meter_provider(meters.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    rt.block_on(async {
        let bus = bus::memory::MemoryBus::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(runtime::run(
            bus.clone(),
            Arc::new(FlakyFix {
                calls: calls.clone(),
            }),
            Arc::new(runtime::NoLedger),
            test_bus_config(),
            Arc::new(Stats::default()),
            stop.clone(),
        ));
        let repair = RepairId::new();
        let mut m = Message::RepairRequested(request(repair));
        for s in [Stage::Triage, Stage::Decision, Stage::Mre] {
            m = coval_tests::advance(s, &m).context("advance")?;
        }
        bus.publish(&Envelope::origin(m.kind(), repair), m).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no redelivery");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await??;
        anyhow::Ok(())
    })?;
    meters.force_flush()?;
    let points = rx.points();
    let fix = |metric: &str, extra: Option<(&str, &str)>| {
        points
            .iter()
            .filter(|p| {
                p.metric == metric
                    && p.attributes.get("stage").map(String::as_str) == Some("fix")
                    && extra.is_none_or(|(k, v)| p.attributes.get(k).map(String::as_str) == Some(v))
            })
            .map(|p| p.value)
            .fold(0.0, f64::max)
    };
    anyhow::ensure!(
        fix("coval.stage.failed", Some(("reason", "retry"))) >= 1.0,
        "retry not counted: {points:#?}"
    );
    anyhow::ensure!(
        fix("coval.stage.redelivered", None) >= 1.0,
        "redelivery not counted"
    );
    anyhow::ensure!(fix("coval.stage.handled", Some(("outcome", "retry"))) >= 1.0);
    anyhow::ensure!(fix("coval.stage.handled", Some(("outcome", "skip"))) >= 1.0);
    Ok(())
}

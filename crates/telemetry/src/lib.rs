//! Logs and traces. Logs go to stderr as text or JSON lines (stdout is for `--json` output).
//! A tracer provider is always installed so every repair has a trace id that travels in
//! message headers; spans and metrics are exported over OTLP/HTTP (protobuf) only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! It must never import another coval crate: every binary can set up its logs first.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format: use text or json")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("bad RUST_LOG filter: {0}")]
    Filter(String),
    #[error(
        "cannot set up the OTLP exporter for {endpoint}: {reason}; check OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    Exporter { endpoint: String, reason: String },
    #[error("logging was already set up")]
    AlreadyInitialised,
}

/// Flushes exported spans and metrics when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
        if let Some(m) = &self.meters {
            let _ = m.force_flush();
            let _ = m.shutdown();
        }
    }
}

/// Crates whose logs `-v` raises.
const OURS: &[&str] = &[
    "coval",
    "cli",
    "vocab",
    "settings",
    "telemetry",
    "store",
    "bus",
    "sandbox",
    "patch",
    "proto",
    "triage",
    "decision",
    "mre",
    "fix",
    "validate",
    "integrate",
];

/// Who reads the logs, which sets where `-v` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A service's log (workers, the deployment proxy, JSON logs): info and up.
    Service,
    /// A person at a terminal running a command: only warnings and errors, so the command's
    /// own lines are not drowned; `-v` adds info, `-vv` debug.
    Person,
}

/// The level of coval's own crates for `-v` repeated `verbosity` times.
fn level(verbosity: u8, audience: Audience) -> &'static str {
    let steps = match audience {
        Audience::Service => verbosity.saturating_add(1),
        Audience::Person => verbosity,
    };
    match steps {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

fn filter(verbosity: u8, audience: Audience) -> Result<EnvFilter, TelemetryError> {
    if let Ok(f) = std::env::var("RUST_LOG") {
        return EnvFilter::try_new(f).map_err(|e| TelemetryError::Filter(e.to_string()));
    }
    let ours = level(verbosity, audience);
    let others = if verbosity >= 3 { "debug" } else { "warn" };
    let directives: Vec<String> = std::iter::once(others.to_owned())
        .chain(OURS.iter().map(|c| format!("{c}={ours}")))
        .collect();
    EnvFilter::try_new(directives.join(",")).map_err(|e| TelemetryError::Filter(e.to_string()))
}

/// Where a person's log lines go: stderr, unless the command line draws a progress bar and
/// set a function that prints above it.
static PERSON_SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Sends a person's log lines (see [`Audience::Person`]) to `sink` from now on (first call
/// wins).
pub fn set_person_sink(sink: fn(&str)) {
    let _ = PERSON_SINK.set(sink);
}

/// Makes one [`PersonLine`] per event.
struct PersonWriter;

/// One event's text, handed on whole when dropped (so a bar is never drawn mid-line).
struct PersonLine(Vec<u8>);

impl std::io::Write for PersonLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PersonLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        match PERSON_SINK.get() {
            Some(sink) => sink(&text),
            None => eprint!("{text}"),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PersonWriter {
    type Writer = PersonLine;
    fn make_writer(&'a self) -> PersonLine {
        PersonLine(vec![])
    }
}

/// A person's log line: `coval: warning: <message> <fields>`, without time, target or
/// spans. A warning from a place in the code that has warned already is not repeated (the
/// same trouble, seen by another lane or candidate); `-v` shows every one.
#[derive(Default)]
struct PersonFormat {
    warned: std::sync::Mutex<std::collections::HashSet<tracing::callsite::Identifier>>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for PersonFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let word = match *meta.level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        if *meta.level() == tracing::Level::WARN
            && !self
                .warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(meta.callsite())
        {
            return Ok(());
        }
        write!(writer, "coval: {word}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Whether [`init_for`] installed an exporting meter provider (so sampling a gauge is worth
/// the work).
static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether metrics are exported by this process.
pub fn metrics_enabled() -> bool {
    METRICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`, when set and not empty.
fn otlp_endpoint() -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
}

/// The exporters' HTTP client is reqwest on rustls with the ring provider and no default
/// provider compiled in: the process-wide provider must be installed before the client is
/// built (on the exporter's own thread), or that thread panics and nothing is exported.
fn install_crypto_provider() {
    // Err only means a provider is installed already (the model client's, say): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// A tracer provider with the OTLP exporter when the endpoint variable is set.
pub fn tracer_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    match otlp_endpoint() {
        Some(endpoint) => tracer_provider_to(service, &endpoint),
        None => Ok(SdkTracerProvider::builder()
            .with_resource(resource(service))
            .build()),
    }
}

/// A tracer provider exporting over OTLP/HTTP (protobuf) to `endpoint` (`/v1/traces` is
/// appended), in batches.
pub fn tracer_provider_to(
    service: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    install_crypto_provider();
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_batch_exporter(exporter)
        .build())
}

/// A meter provider exporting over OTLP/HTTP to `endpoint` (`/v1/metrics` appended) every
/// `interval` (`OTEL_METRIC_EXPORT_INTERVAL` in milliseconds overrides it, as the
/// specification says), and on shutdown.
pub fn meter_provider_to(
    service: &str,
    endpoint: &str,
    interval: std::time::Duration,
) -> Result<SdkMeterProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    install_crypto_provider();
    let metrics = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(metrics)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    let interval = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
        .unwrap_or(interval);
    let reader = PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_resource(resource(service))
        .with_reader(reader)
        .build())
}

/// Set up logging and tracing for a process named `service`, logging as a service does.
pub fn init(service: &str, format: LogFormat, verbosity: u8) -> Result<Telemetry, TelemetryError> {
    init_for(service, format, verbosity, Audience::Service)
}

/// [`init`] for a given audience (JSON logs are always a service's).
pub fn init_for(
    service: &str,
    format: LogFormat,
    verbosity: u8,
    audience: Audience,
) -> Result<Telemetry, TelemetryError> {
    let audience = if format == LogFormat::Json {
        Audience::Service
    } else {
        audience
    };
    let provider = tracer_provider(service)?;
    let tracer = provider.tracer(service.to_owned());
    opentelemetry::global::set_tracer_provider(provider.clone());
    // Metrics only where they go somewhere: without an endpoint the global meter stays the
    // no-op one and recording costs nothing.
    let meters = match otlp_endpoint() {
        Some(endpoint) => {
            let m = meter_provider_to(service, &endpoint, std::time::Duration::from_secs(10))?;
            opentelemetry::global::set_meter_provider(m.clone());
            METRICS.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(m)
        }
        None => None,
    };
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = match format {
        // A person without -v: warnings and errors as short lines, each kind once.
        LogFormat::Text if audience == Audience::Person && verbosity == 0 => {
            tracing_subscriber::fmt::layer()
                .with_writer(PersonWriter)
                .with_ansi(ansi)
                .event_format(PersonFormat::default())
                .boxed()
        }
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter(verbosity, audience)?)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(Telemetry { provider, meters })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what a layer writes.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_person_reads_short_lines_without_spans_and_each_warning_once() {
        let out = Capture::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(PersonFormat::default());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("stage", otel.name = "validate", mre_ready = 1);
            let _in = span.enter();
            // Two lanes of one session hit the same trouble.
            for candidate in ["c1", "c2"] {
                tracing::warn!(
                    candidate,
                    "warm test server failed; running this candidate as a fresh process"
                );
            }
            tracing::error!("stage stopped");
            tracing::error!("stage stopped");
            tracing::warn!("another warning");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "coval: warning: warm test server failed; running this candidate as a fresh process candidate=\"c1\"\n\
             coval: error: stage stopped\n\
             coval: error: stage stopped\n\
             coval: warning: another warning\n"
        );
    }

    #[test]
    fn a_person_sees_warnings_until_asking_for_more_and_a_service_logs_info() {
        let person: Vec<_> = (0..4).map(|v| level(v, Audience::Person)).collect();
        assert_eq!(person, ["warn", "info", "debug", "trace"]);
        let service: Vec<_> = (0..3).map(|v| level(v, Audience::Service)).collect();
        assert_eq!(service, ["info", "debug", "trace"]);
        assert_eq!(level(u8::MAX, Audience::Service), "trace");
    }
}

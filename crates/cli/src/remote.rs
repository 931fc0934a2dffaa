//! The distributed side of the command line: `coval repair --nats` (snapshot the project into
//! the JetStream object store, publish the request, follow it to the end, fetch the report),
//! `coval submit` (publish and return), `coval watch` (follow a repair by id), `coval status
//! --nats` (ask the integration worker for its ledger) and `coval worker`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus::Bus;
use bus::jetstream::JetStreamBus;
use clap::Args;
use futures::StreamExt;
use proto::messages::{EngineChoice, RepairCompleted};
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use settings::Config;
use store::projects::{self, Bucket, ProjectError};

use crate::exit::{self, Failure};
use crate::repair::{EngineArg, RepairArgs};

async fn connect(
    url: &str,
    auth: &bus::jetstream::NatsAuth,
    cfg: &Config,
) -> Result<JetStreamBus, Failure> {
    JetStreamBus::check_url(url).map_err(|e| {
        Failure::input(format!(
            "--nats {url:?} is not a NATS server URL: {e}; write it as nats://HOST:PORT"
        ))
    })?;
    let ns = Namespace::new(&cfg.settings.bus.namespace)
        .map_err(|e| Failure::input(format!("bus.namespace: {e}")))?;
    JetStreamBus::connect_with(
        url,
        ns,
        cfg.settings.bus.clone(),
        auth,
        bus::jetstream::Role::Client,
    )
    .await
    .map_err(|e| match e {
        bus::BusError::Auth(_) => Failure::input(e.to_string()),
        e => Failure::unreachable(format!(
            "{e}; start the workers' nats-server (scripts/dev-services.sh up) or run without --nats to repair embedded"
        )),
    })
}

fn project_failure(e: ProjectError) -> Failure {
    if e.is_retryable() {
        Failure::unreachable(e.to_string())
    } else {
        Failure::input(e.to_string())
    }
}

/// A request published to the workers, with the snapshot it names.
struct Submitted {
    repair_id: RepairId,
    snapshot: Vec<u8>,
    /// The de-duplication key had been submitted before: nothing new was started.
    duplicate: bool,
}

/// What the submissions bucket remembers of one de-duplication key. `published` is set
/// once the request is stored in the work stream; a submit that finds it unset (the first
/// one died in between) publishes the same request again, with the same ids.
#[derive(serde::Serialize, serde::Deserialize)]
struct SubmissionRecord {
    repair_id: RepairId,
    message_id: proto::MessageId,
    published: bool,
    submitted_at_ms: u64,
}

/// The bucket key of a de-duplication key: its SHA-256 (keys allow only a few characters).
fn submission_key(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The record of `key`, if any.
async fn submission(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
) -> Result<Option<SubmissionRecord>, Failure> {
    let entry = kv
        .entry(key)
        .await
        .map_err(|e| Failure::unreachable(format!("cannot read the submissions bucket: {e}")))?;
    Ok(entry
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}

fn record_bytes(r: &SubmissionRecord) -> bytes::Bytes {
    serde_json::to_vec(r).unwrap_or_default().into()
}

/// `ci_key`: whether the CI's own run and job may be the de-duplication key (`coval submit`);
/// `coval repair --nats` de-duplicates only on an explicit `--dedup-key`, since one CI job
/// may well run several repairs.
async fn submit_request(
    bus: &JetStreamBus,
    args: &RepairArgs,
    cfg: &Config,
    log: String,
    source: &Path,
    workspace: &Path,
    ci_key: bool,
) -> Result<Submitted, Failure> {
    let limit = cfg.settings.bus.snapshot_max_bytes;
    let src = source.to_owned();
    let ws = workspace.to_owned();
    let snapshot =
        tokio::task::spawn_blocking(move || projects::pack_outside(&src, limit, Some(&ws)))
            .await
            .map_err(|e| Failure::internal(format!("snapshot task failed: {e}")))?
            .map_err(project_failure)?;
    let mut origin = crate::ci::origin(&args.origin);
    if !ci_key && args.origin.dedup_key.is_none() {
        origin.dedup_key = None;
    }
    // A retried CI job submits the same key: the first submission's repair is the answer.
    // The record outlives JetStream's duplicate window (bus.dead_letter_max_age_hours).
    let mut claim = None;
    let (repair_id, message_id) = match &origin.dedup_key {
        None => (RepairId::new(), proto::MessageId::new()),
        Some(key) => {
            let kv = bus.submissions().await.map_err(|e| {
                Failure::unreachable(format!("{e}; a worker creates it when it starts"))
            })?;
            let k = submission_key(key);
            let mut found = submission(&kv, &k).await?;
            if found.is_none() {
                let fresh = SubmissionRecord {
                    repair_id: RepairId::new(),
                    message_id: proto::MessageId::new(),
                    published: false,
                    submitted_at_ms: vocab::now_ms(),
                };
                match kv.create(&k, record_bytes(&fresh)).await {
                    Ok(_) => found = Some(fresh),
                    // Another submit with this key got there first: take its record.
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
                    {
                        found = submission(&kv, &k).await?;
                    }
                    Err(e) => {
                        return Err(Failure::unreachable(format!(
                            "cannot record the submission: {e}"
                        )));
                    }
                }
            }
            let record = found.ok_or_else(|| {
                Failure::unreachable(format!(
                    "the submission of {key:?} is recorded but unreadable; pass --dedup-key with another key"
                ))
            })?;
            if record.published {
                eprintln!(
                    "note: {key:?} was submitted before as {}; not starting another repair (--no-dedup starts one)",
                    record.repair_id
                );
                return Ok(Submitted {
                    repair_id: record.repair_id,
                    snapshot,
                    duplicate: true,
                });
            }
            let ids = (record.repair_id, record.message_id);
            claim = Some((kv, k, record));
            ids
        }
    };
    let bucket = Bucket::open_replicated(
        bus.context(),
        &bus.namespace().snapshot_bucket(),
        bus.replicas(),
    )
    .await
    .map_err(project_failure)?;
    let project = bucket
        .put_snapshot(&repair_id, &snapshot)
        .await
        .map_err(project_failure)?;
    let engine = match args.engine {
        EngineArg::Auto => EngineChoice::Auto,
        EngineArg::Llm => EngineChoice::Llm,
        EngineArg::Search => EngineChoice::Search,
    };
    // Iteration ids are the local workspace's; the workers' ledger has its own.
    let mut request = crate::repair::request(args, cfg, repair_id, project, log, None, engine);
    request.origin = Some(origin).filter(|o| !o.is_empty());
    warn_if_no_workers(bus).await;
    let mut envelope = Envelope::origin(Kind::RepairRequested, repair_id);
    envelope.message_id = message_id;
    // The repair's trace starts here: the client's span is the triage span's parent. It is
    // made with the OpenTelemetry API, not `tracing`, so a person's log filter (warnings
    // only) does not switch it off.
    let span = {
        use opentelemetry::trace::{Tracer, TracerProvider};
        opentelemetry::global::tracer_provider()
            .tracer("coval")
            .start(format!("submit {repair_id}"))
    };
    let cx = {
        use opentelemetry::trace::TraceContextExt;
        opentelemetry::Context::current_with_span(span)
    };
    bus::runtime::inject_context(&cx, &mut envelope);
    let published = bus
        .publish(&envelope, Message::RepairRequested(request))
        .await
        .map_err(|e| Failure::unreachable(format!("cannot publish the repair: {e}")));
    {
        use opentelemetry::trace::TraceContextExt;
        cx.span().end();
    }
    published?;
    if let Some((kv, k, mut record)) = claim {
        record.published = true;
        if let Err(e) = kv.put(&k, record_bytes(&record)).await {
            // The request is stored; a retry would publish it again with the same ids, which
            // the duplicate window or the workers' ledgers drop.
            eprintln!("coval: warning: the submission is not marked as published: {e}");
        }
    }
    Ok(Submitted {
        repair_id,
        snapshot,
        duplicate: false,
    })
}

/// A request waits in the stream until a worker pulls it; say so when no triage worker is
/// bound (none waits for work and none holds any): busy workers are workers.
async fn warn_if_no_workers(bus: &JetStreamBus) {
    let ns = bus.namespace();
    let bound = bus
        .consumer_load(Stage::Triage)
        .await
        .is_some_and(|l| l.has_workers());
    if !bound {
        eprintln!(
            "note: no triage worker is pulling work in namespace `{}` right now; the repair waits in the queue until one starts (`coval worker all --nats URL`)",
            ns.as_str()
        );
    }
}

/// Follows `repair` until it completes or is dead-lettered, showing each stage's progress.
async fn follow(
    bus: &JetStreamBus,
    repair: RepairId,
    from_start: bool,
    json: bool,
    lines: bool,
    timeout: Option<Duration>,
) -> Result<RepairCompleted, Failure> {
    let mut events = bus
        .follow(repair, from_start)
        .await
        .map_err(|e| Failure::unreachable(e.to_string()))?;
    let progress = crate::progress::Progress::new(json);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let end = loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(n) => n,
                Err(_) => {
                    break Err(Failure::internal(format!(
                        "{repair} did not finish within {} s; it goes on in the workers: `coval watch {repair}`",
                        timeout.unwrap_or_default().as_secs()
                    )));
                }
            },
            None => events.next().await,
        };
        match next {
            None => {
                break Err(Failure::unreachable(
                    "the connection to NATS ended while following the repair".into(),
                ));
            }
            Some(Message::StageProgress(p)) => {
                if lines {
                    print_event("stage_progress", serde_json::to_value(&p).ok());
                }
                progress.stage(&p)
            }
            Some(Message::RepairCompleted(c)) => break Ok(c),
            Some(Message::DeadLetter(d)) => {
                if lines {
                    print_event(
                        "dead_letter",
                        Some(serde_json::json!({
                            "repair_id": repair.to_string(),
                            "stage": d.stage,
                            "reason": d.reason,
                            "deliveries": d.deliveries,
                        })),
                    );
                }
                break Err(Failure::input(format!(
                    "the {} stage gave up on {repair}: {}",
                    d.stage, d.reason
                )));
            }
            Some(_) => {}
        }
    };
    progress.finish();
    end
}

/// One event as one line of JSON on stdout: `{"event": KIND, ...fields}`.
fn print_event(kind: &str, fields: Option<serde_json::Value>) {
    let mut line = serde_json::json!({ "event": kind });
    if let (Some(serde_json::Value::Object(fields)), Some(out)) = (fields, line.as_object_mut()) {
        for (k, v) in fields {
            out.entry(k).or_insert(v);
        }
    }
    println!("{line}");
}

/// Copies the report files the integration worker left in the object store into
/// `<workspace>/repairs/repair-<id>/`.
async fn fetch_reports(
    bus: &JetStreamBus,
    workspace: &Path,
    done: &RepairCompleted,
) -> Result<PathBuf, Failure> {
    let dir = vocab::Workspace::new(workspace).repair_dir(done.repair_id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::input(format!("cannot create {}: {e}", dir.display())))?;
    let bucket = Bucket::open_replicated(
        bus.context(),
        &bus.namespace().report_bucket(),
        bus.replicas(),
    )
    .await
    .map_err(project_failure)?;
    for name in integrate::handler::REPORT_FILES {
        match bucket
            .get(
                &integrate::handler::report_key(done.repair_id, name),
                64 << 20,
            )
            .await
        {
            Ok(bytes) => {
                let tmp = dir.join(format!("{name}.tmp"));
                std::fs::write(&tmp, &bytes)
                    .and_then(|_| std::fs::rename(&tmp, dir.join(name)))
                    .map_err(|e| Failure::input(format!("cannot write {name}: {e}")))?;
            }
            Err(ProjectError::Missing { .. }) => {}
            Err(e) => return Err(project_failure(e)),
        }
    }
    Ok(dir)
}

/// `coval repair --nats URL`.
pub async fn repair(
    args: RepairArgs,
    cfg: &Config,
    workspace: &Path,
    url: &str,
    log: String,
    source: PathBuf,
) -> Result<u8, Failure> {
    let bus = connect(url, &args.auth, cfg).await?;
    let submitted = submit_request(&bus, &args, cfg, log, &source, workspace, false).await?;
    let repair = submitted.repair_id;
    eprintln!("submitted {repair} to {url}");
    let done = follow(&bus, repair, true, args.json, false, None).await?;
    let dir = fetch_reports(&bus, workspace, &done).await?;
    let local = RepairCompleted {
        report_dir: Some(
            dir.strip_prefix(workspace)
                .unwrap_or(&dir)
                .display()
                .to_string(),
        ),
        ..done.clone()
    };
    let applying = args.apply && done.outcome == proto::messages::RepairOutcome::Fixed;
    let code = crate::report::print_completion(&local, workspace, args.json, false, applying);
    if args.apply && done.outcome == proto::messages::RepairOutcome::Fixed {
        let then: BTreeMap<String, Vec<u8>> =
            projects::files(&submitted.snapshot).map_err(|e| Failure::internal(e.to_string()))?;
        crate::apply::apply_patch(&dir.join("final.patch"), &source, |f| then.get(f).cloned())?;
    }
    Ok(code)
}

/// `coval submit`: publish the repair and print its id; `coval watch ID` follows it.
pub async fn submit(args: RepairArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    let Some(url) = args.nats.clone() else {
        return Err(Failure::input(
            "coval submit publishes to NATS workers: pass --nats URL (or set NATS_URL)".into(),
        ));
    };
    if args.apply || args.deploy {
        return Err(Failure::input(
            "coval submit does not wait for the result, so --apply and --deploy need `coval repair --nats`".into(),
        ));
    }
    let inputs = crate::repair::inputs(&args, cfg, workspace)?;
    let bus = connect(&url, &args.auth, cfg).await?;
    let s = submit_request(
        &bus,
        &args,
        cfg,
        inputs.log,
        &inputs.source,
        workspace,
        true,
    )
    .await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "repair_id": s.repair_id.to_string(), "duplicate": s.duplicate })
        );
    } else {
        println!("{}", s.repair_id);
    }
    Ok(exit::DONE)
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The repair to follow (as printed by `coval submit`)
    #[arg(value_name = "REPAIR_ID")]
    repair: String,
    /// NATS server URL
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    nats: String,
    /// Give up after this many seconds (default: wait for the end)
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Print one JSON object per line on stdout for each event (`stage_progress`,
    /// `dead_letter`), the last one `repair_completed` with the report; the exit code is the
    /// repair's, as for `coval repair`
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    auth: bus::jetstream::NatsAuth,
}

/// `coval watch REPAIR_ID`: its progress so far and to the end; exit code as for `repair`.
pub async fn watch(args: WatchArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    let repair: RepairId = args
        .repair
        .parse()
        .map_err(|e| Failure::input(format!("{e}: pass the id `coval submit` printed")))?;
    let bus = connect(&args.nats, &args.auth, cfg).await?;
    if !has_events(&bus, &repair).await {
        eprintln!(
            "note: no events for {repair} in namespace `{}` yet (not started, or older than bus.event_max_age_hours); waiting",
            bus.namespace().as_str()
        );
    }
    let done = follow(
        &bus,
        repair,
        true,
        args.json,
        args.json,
        args.timeout.map(Duration::from_secs),
    )
    .await?;
    let dir = fetch_reports(&bus, workspace, &done).await?;
    let local = RepairCompleted {
        report_dir: Some(
            dir.strip_prefix(workspace)
                .unwrap_or(&dir)
                .display()
                .to_string(),
        ),
        ..done
    };
    if args.json {
        let report = local
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
        print_event(
            "repair_completed",
            Some(serde_json::json!({
                "repair_id": local.repair_id.to_string(),
                "outcome": proto::summary::outcome_label(local.outcome),
                "summary": local.summary,
                "new_iteration": local.new_iteration.map(|i| i.to_string()),
                "report_dir": dir.display().to_string(),
                "report": report,
            })),
        );
        return Ok(vocab::exit::of_repair(&local));
    }
    Ok(crate::report::print_completion(
        &local, workspace, args.json, false, false,
    ))
}

/// Has the event stream anything about `repair`?
async fn has_events(bus: &JetStreamBus, repair: &RepairId) -> bool {
    let ns = bus.namespace();
    let Ok(stream) = bus.context().get_stream(ns.event_stream()).await else {
        return false;
    };
    match stream.info_with_subjects(ns.repair_events(repair)).await {
        Ok(mut subjects) => subjects.next().await.is_some(),
        Err(_) => false,
    }
}

/// `coval status --nats URL`: the integration worker's ledger.
pub async fn status(
    url: &str,
    auth: &bus::jetstream::NatsAuth,
    cfg: &Config,
    json: bool,
) -> Result<u8, Failure> {
    let bus = connect(url, auth, cfg).await?;
    let subject = bus.namespace().status_subject();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        bus.client().request(subject, Vec::new().into()),
    )
    .await
    .map_err(|_| {
        Failure::unreachable("no integration worker answered within 5 s: is `coval worker integrate` (or `all`) running?".into())
    })?
    .map_err(|e| {
        Failure::unreachable(format!(
            "no integration worker answers status requests ({e}): start `coval worker integrate` (or `all`)"
        ))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| Failure::internal(format!("unreadable status reply: {e}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::DONE);
    }
    let list = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let its = list("iterations");
    let repairs = list("repairs");
    println!("ledger of the integration worker at {url}");
    println!("iterations: {}", its.len());
    for i in &its {
        println!(
            "  {}{}",
            i["id"].as_str().unwrap_or("?"),
            i["parent"]
                .as_str()
                .map(|p| format!(" (parent {p})"))
                .unwrap_or_default()
        );
    }
    println!("repairs: {}", repairs.len());
    for r in &repairs {
        println!(
            "  {}  {}  {}",
            r["id"].as_str().unwrap_or("?"),
            r["outcome"].as_str().unwrap_or("in flight"),
            r["summary"].as_str().unwrap_or("")
        );
    }
    Ok(exit::DONE)
}

#[derive(Args, Debug)]
pub struct WorkerCmd {
    /// The stage to run, or `all` for the six in one process
    #[arg(value_parser = worker_choices())]
    stage: String,
    #[command(flatten)]
    worker: bus::worker::WorkerArgs,
}

/// The stages of the registry, then `all`.
fn worker_choices() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        stages::STAGES
            .iter()
            .map(|e| e.stage.as_str())
            .chain(["all"]),
    )
}

/// `coval worker <stage>|all --nats URL`: the same workers as the `coval-<stage>` binaries.
pub async fn worker(cmd: WorkerCmd, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    use bus::worker::{Worker, WorkerError};
    let stages: Vec<Stage> = stages::STAGES
        .iter()
        .map(|e| e.stage)
        .filter(|s| cmd.stage == "all" || s.as_str() == cmd.stage)
        .collect();
    let fail = |e: WorkerError| Failure {
        code: e.exit_code(),
        message: e.to_string(),
    };
    let mut w = Worker::start(&cmd.worker, cfg.clone(), workspace, &stages)
        .await
        .map_err(fail)?;
    for s in &stages {
        let h = stages::build(*s, &w.context)
            .map_err(|e| fail(WorkerError::Internal(e.to_string())))?;
        w.spawn(h);
    }
    w.serve().await.map_err(fail)?;
    Ok(exit::DONE)
}

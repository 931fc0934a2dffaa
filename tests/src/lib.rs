//! Test support shared by the integration tests, the `testkit` helper binary and the
//! benchmarks: a real nats-server per test (killed on drop), and no-op stage handlers that
//! advance a repair through all six stages with the real message types.

pub mod faults;
pub mod fleet;
pub mod jwt;
pub mod otlp;
pub mod real;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bus::runtime::{Handler, Input, Outcome};
use proto::messages::*;
use proto::{Message, RepairId, Stage};
use settings::BusConfig;

/// A nats-server with JetStream on its own port and store, killed when dropped.
pub struct NatsServer {
    child: Child,
    pub url: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// `sync_interval` of the JetStream store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The server's default (fsync every 2 minutes; acks before fsync).
    Default,
    /// fsync before every ack.
    Always,
}

fn nats_server_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/venv/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    bail!(
        "no nats-server: run `scripts/dev-services.sh up` and export NATS_SERVER_BIN (the README's test command does both)"
    )
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_server(conf: &Path, log: &Path, envs: &[(&str, &str)]) -> Result<Child> {
    let bin = nats_server_bin()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(&bin)
        .arg("-c")
        .arg(conf)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

fn wait_listening(port: u16) -> Result<()> {
    // Generous: on a loaded machine a server can take seconds to listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server on port {port} did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl NatsServer {
    /// The server process's id (for its CPU time, in benches).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(sync: SyncMode) -> Result<NatsServer> {
        Self::start_with(sync, "", "nats")
    }

    /// A server whose configuration also has `extra` (an `authorization` or `tls` block,
    /// say); `scheme` is the URL's (`nats` or `tls`). `{dir}` in `extra` is the server's
    /// own directory (certificates a test put there with [`NatsServer::start_in`]).
    pub fn start_with(sync: SyncMode, extra: &str, scheme: &str) -> Result<NatsServer> {
        Self::start_in(tempfile::tempdir()?, sync, extra, scheme)
    }

    /// [`start_with`](Self::start_with) in a directory the caller prepared.
    pub fn start_in(
        dir: tempfile::TempDir,
        sync: SyncMode,
        extra: &str,
        scheme: &str,
    ) -> Result<NatsServer> {
        let port = free_port()?;
        let sync_line = match sync {
            SyncMode::Default => String::new(),
            SyncMode::Always => "  sync_interval: always\n".into(),
        };
        let conf = format!(
            "listen: 127.0.0.1:{port}\nserver_name: coval-test-{port}\njetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n{}\n",
            dir.path().join("js").display(),
            extra.replace("{dir}", &dir.path().display().to_string())
        );
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf)?;
        let child = spawn_server(&conf_path, &dir.path().join("nats.log"), &[])?;
        let server = NatsServer {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            _dir: dir,
        };
        if let Err(e) = wait_listening(port) {
            // A configuration the server refuses: say why (its log), not only that it is silent.
            let log =
                std::fs::read_to_string(server._dir.path().join("nats.log")).unwrap_or_default();
            bail!("{e}; its log:\n{log}");
        }
        Ok(server)
    }

    /// SIGKILL the server and wait for it to exit (bring it back with [`restart`](Self::restart)).
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGKILL the server, then start it again on the same port and store (what it had
    /// synced survives).
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.child = spawn_server(
            &self._dir.path().join("nats.conf"),
            &self._dir.path().join("nats.log"),
            &[],
        )?;
        wait_listening(self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node of a [`NatsCluster`].
struct Node {
    name: String,
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
    log: PathBuf,
}

/// Three nats-servers forming a JetStream cluster on loopback ports, each started from the
/// shipped `deploy/nats/cluster.conf` with only its addresses and store moved (so the test
/// proves the deployed file), killed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// Every node, comma-separated: what clients connect to.
    pub url: String,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start(sync: SyncMode) -> Result<NatsCluster> {
        let shipped = std::fs::read_to_string(repo_root().join("deploy/nats/cluster.conf"))
            .context("deploy/nats/cluster.conf")?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let mut nodes = vec![];
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let mut conf = shipped
                .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
                .replace("0.0.0.0:8222", &format!("127.0.0.1:{http}"))
                .replace("0.0.0.0:6222", &format!("127.0.0.1:{route}"))
                .replace(
                    "/data/jetstream",
                    &dir.path().join(&name).join("js").display().to_string(),
                );
            for (j, (_, r, _)) in ports.iter().enumerate() {
                conf = conf.replace(
                    &format!("nats-route://nats-{}:6222", j + 1),
                    &format!("nats-route://127.0.0.1:{r}"),
                );
            }
            if sync == SyncMode::Default {
                conf = conf.replace("sync_interval: always", "");
            }
            ensure_conf(&conf, &name)?;
            let conf_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf_path, conf)?;
            nodes.push(Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
                port: *client,
                conf: conf_path,
            });
        }
        let url = ports
            .iter()
            .map(|(c, _, _)| format!("nats://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster { nodes, url, dir };
        for i in 0..3 {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        let n = &mut self.nodes[i];
        n.child = Some(spawn_server(
            &n.conf,
            &n.log,
            &[("NATS_SERVER_NAME", n.name.as_str())],
        )?);
        wait_listening(n.port)
    }

    /// SIGKILL node `i` (0, 1 or 2).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let mut c = self.nodes[i].child.take().context("node is not running")?;
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    /// Start node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.start_node(i)
    }

    /// The URL of node `i` alone.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The nodes' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let _ = &self.dir;
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until JetStream answers through the cluster (a meta leader is elected).
    pub async fn wait_jetstream(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ok = async {
                let addrs = bus::jetstream::JetStreamBus::server_addrs(&self.url)
                    .map_err(anyhow::Error::msg)?;
                let c = async_nats::connect(addrs).await?;
                let js = async_nats::jetstream::new(c);
                js.query_account().await?;
                anyhow::Ok(())
            };
            let last = match tokio::time::timeout(Duration::from_secs(3), ok).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 3 s".to_owned(),
            };
            if Instant::now() > deadline {
                bail!(
                    "the cluster's JetStream did not answer within {within:?} ({last})\n{}",
                    self.logs()
                )
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The rewritten config must not still name a container address or path.
fn ensure_conf(conf: &str, name: &str) -> Result<()> {
    let live: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for left in ["0.0.0.0", "nats-1:", "nats-2:", "nats-3:", "/data/"] {
        if live.contains(left) {
            bail!(
                "{name}: deploy/nats/cluster.conf changed shape: `{left}` was not moved to loopback"
            );
        }
    }
    Ok(())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Bus settings for tests: short waits so redelivery happens within seconds.
pub fn test_bus_config() -> BusConfig {
    BusConfig {
        namespace: "coval".into(),
        concurrency: 4,
        ack_wait_secs: 2,
        progress_interval_secs: 1,
        max_deliver: 3,
        retry_backoff_secs: 1,
        retry_backoff_max_secs: 2,
        duplicate_window_secs: 120,
        max_ack_pending: 1000,
        work_max_bytes: -1,
        dead_letter_max_age_hours: 1,
        event_max_age_hours: 1,
        connect_timeout_secs: 5,
        publish_timeout_secs: 10,
        max_reconnects: 10,
        snapshot_max_bytes: store::projects::DEFAULT_SNAPSHOT_MAX_BYTES,
        replicas: 1,
        setup_timeout_secs: 60,
    }
}

pub fn request(repair_id: RepairId) -> RepairRequested {
    RepairRequested {
        repair_id,
        project: ProjectRef::LocalPath {
            path: "/nonexistent/project".into(),
        },
        error_log: "ZeroDivisionError: division by zero".into(),
        test_cmd: None,
        iteration: None,
        engine: EngineChoice::Search,
        model: None,
        max_attempts: 1,
        analyze_only: false,
        requested_at_ms: vocab::now_ms(),
        no_rebuild: false,
        origin: None,
    }
}

/// The message a no-op `stage` publishes for `input`: the next edge of the workflow.
pub fn advance(stage: Stage, input: &Message) -> Option<Message> {
    Some(match (stage, input) {
        (Stage::Triage, Message::RepairRequested(r)) => Message::Triaged(Triaged {
            request: r.clone(),
            report: TriageReport::default(),
        }),
        (Stage::Decision, Message::Triaged(t)) => Message::Decided(Decided {
            request: t.request.clone(),
            triage: t.report.clone(),
            decision: Decision::default(),
        }),
        (Stage::Mre, Message::Decided(d)) => Message::MreReady(MreReady {
            request: d.request.clone(),
            triage: d.triage.clone(),
            decision: d.decision.clone(),
            mre: MreSummary::default(),
        }),
        (Stage::Fix, Message::MreReady(m)) => Message::FixProposed(FixProposed {
            request: m.request.clone(),
            triage: m.triage.clone(),
            decision: m.decision.clone(),
            mre: m.mre.clone(),
            attempt: 1,
            engine: Engine::Model {
                name: "noop".into(),
            },
            candidates: vec![],
            usage: Usage::default(),
            history: vec![],
        }),
        (Stage::Validate, Message::FixProposed(f)) => Message::ValidationPassed(ValidationPassed {
            request: f.request.clone(),
            triage: f.triage.clone(),
            decision: f.decision.clone(),
            mre: f.mre.clone(),
            attempt: f.attempt,
            history: vec![],
            winner: CandidateResult {
                candidate_id: "noop".into(),
                passed: true,
                tests: vec![],
                regressions: vec![],
                changed_lines: 0,
                reason: None,
                duration_ms: 0,
                path: String::new(),
            },
            patch: String::new(),
            why: String::new(),
        }),
        (Stage::Integrate, m @ Message::ValidationPassed(_)) => {
            Message::RepairCompleted(RepairCompleted {
                repair_id: m.repair_id(),
                outcome: RepairOutcome::Fixed,
                summary: "no-op chain".into(),
                new_iteration: None,
                report_dir: None,
                completed_at_ms: vocab::now_ms(),
                report: None,
                blocked: None,
            })
        }
        _ => return None,
    })
}

/// A handler that advances the chain, optionally observing each call.
pub struct NoopStage<F = fn(&Input)> {
    pub stage: Stage,
    pub observe: F,
}

impl NoopStage {
    pub fn new(stage: Stage) -> NoopStage {
        NoopStage {
            stage,
            observe: |_| {},
        }
    }
}

impl<F: Fn(&Input) + Send + Sync + 'static> Handler for NoopStage<F> {
    fn stage(&self) -> Stage {
        self.stage
    }

    async fn handle(&self, input: Input) -> Outcome {
        (self.observe)(&input);
        match advance(self.stage, &input.message) {
            Some(m) => Outcome::Publish(vec![m]),
            None => Outcome::Reject(format!(
                "no-op {} cannot handle {}",
                self.stage,
                input.message.kind()
            )),
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds the Python base image once per test process (the script itself skips an existing
/// image and serialises concurrent builds with a lock).
pub fn ensure_python_image() -> Result<()> {
    ensure_base_image("python")
}

/// The host's `/usr/bin/python3` must have pytest for the local-sandbox tests (a per-run user
/// cannot use an interpreter under root's home); install Debian's package once if missing.
pub fn ensure_host_pytest() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let ok = |_: ()| {
            Command::new("/usr/bin/python3")
                .args(["-c", "import pytest"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if ok(()) {
            return Ok(());
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "python3-pytest"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
        };
        let out = install().map_err(|e| format!("apt-get: {e}"))?;
        if !out.status.success() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).output();
            let _ = install();
        }
        if ok(()) {
            Ok(())
        } else {
            Err("the host's /usr/bin/python3 has no pytest and `apt-get install python3-pytest` failed".into())
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The workspace's binaries (`coval` and the six `coval-<stage>` workers), built once per
/// test process so a test never runs a stale copy: `cargo test` builds test harnesses of
/// other packages' binaries, not the binaries themselves.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // target/<profile>/deps/<test> → target/<profile>
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("cannot find the target directory")?
                .to_owned();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(repo_root())
                .args(["build", "--quiet", "--bins"]);
            // `coval` is the cli package's; the six workers are the stage registry's.
            for p in ["cli", "stages"] {
                cmd.args(["-p", p]);
            }
            // The features `cargo test --workspace` resolves (cli's tests enable llm's
            // protocol test server): else every crate above llm builds a second time.
            cmd.args(["--features", "llm/testing"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let t0 = Instant::now();
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run cargo build: {e}"))?;
            eprintln!("cargo build --bins: {:.1} s", t0.elapsed().as_secs_f64());
            if !out.status.success() {
                return Err(format!(
                    "cargo build --bins failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(dir)
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// Builds a base image variant (`python-web`, `node-web`, ...) once per test process with
/// `scripts/build-base-images.sh` (which skips an image that exists).
pub fn ensure_base_image(variant: &str) -> Result<()> {
    static BUILT: std::sync::Mutex<Vec<(String, Result<(), String>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = built.iter().find(|(v, _)| v == variant) {
        return r.clone().map_err(anyhow::Error::msg);
    }
    let t0 = std::time::Instant::now();
    let r = Command::new(repo_root().join("scripts/build-base-images.sh"))
        .arg(variant)
        .output()
        .map_err(|e| format!("cannot run scripts/build-base-images.sh: {e}"))
        .and_then(|out| {
            eprintln!(
                "build-base-images.sh {variant}: {:.1} s\n{}",
                t0.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "scripts/build-base-images.sh {variant} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        });
    built.push((variant.to_owned(), r.clone()));
    r.map_err(anyhow::Error::msg)
}

/// The number after `name` on a bench's command line, else `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

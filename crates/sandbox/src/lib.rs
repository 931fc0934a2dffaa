//! Sandboxes that run a project's tests on untrusted code: one interface ([`Sandbox`]), two
//! implementations ([`DockerSandbox`], hardened containers through bollard, and
//! [`LocalSandbox`], a temp copy with rlimits for machines without Docker), per-repair
//! [`Session`]s that reuse one container across candidates and serve pytest candidates from a
//! warm test server that forks per candidate (`warm`), [`detect`] to pick a backend, and
//! [`detect_project`] / [`outcomes::parse_outcomes`] to find a project's test command and read
//! its per-test results.
//!
//! Both backends give the process exactly [`RunSpec::env`] and nothing of the host's
//! environment. Paths in env values that start with `/work` or `/tmp` name the sandbox's work
//! area and temp dir; the local sandbox maps them onto its own copies, so one `RunSpec` means
//! the same thing on both.
//!
//! It owns everything that runs untrusted code; it must never import the bus, the store or a
//! stage (stages call it, never the other way round).

pub mod command;
pub mod docker;
pub mod env;
pub mod local;
pub mod outcomes;
pub mod project;
mod sys;

mod capture;
mod warm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use command::{split_plain, widen};
pub use docker::{DockerSandbox, DockerSession};
pub use env::{EnvError, Environment, UserDirs};
pub use local::{LocalSandbox, LocalSession};
pub use outcomes::parse_outcomes;
pub use project::{ProjectKind, Runner, detect_project, detect_project_with, node_test_cmd};
pub use warm::{Changed, WarmStats};

use settings::{SandboxBackend, SandboxConfig};
use vocab::{Language, LanguageExt};

/// Resource limits of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory including swap (Docker: memory = memory+swap; local: RLIMIT_DATA).
    pub memory_bytes: u64,
    /// Processes (Docker: pids cgroup and RLIMIT_NPROC; local: RLIMIT_NPROC).
    pub pids: u32,
    /// CPUs (Docker: CFS quota; local: RLIMIT_CPU of `cpus × timeout` seconds).
    pub cpus: f64,
    /// stdout + stderr kept; the process is killed when it writes more.
    pub output_bytes: usize,
    /// Size of the writable work area (Docker: tmpfs; local: RLIMIT_FSIZE per file).
    pub tmpfs_bytes: u64,
    /// Open files (RLIMIT_NOFILE).
    pub nofile: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 512 << 20,
            pids: 256,
            cpus: 1.0,
            output_bytes: 1 << 20,
            tmpfs_bytes: 256 << 20,
            nofile: 1024,
        }
    }
}

/// What to run, where, and within which limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Host directory holding the project copy; it is copied into the sandbox's work area and
    /// never written to.
    pub dir: PathBuf,
    /// The program and its arguments; a shell command is `["sh", "-c", "..."]`.
    pub argv: Vec<String>,
    /// The only environment the process gets.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub limits: Limits,
    /// Docker image (ignored by the local sandbox).
    pub image: String,
    /// Files (relative to the work dir) to read back after the run, e.g. a JUnit report.
    pub collect: Vec<String>,
}

/// The image a project of `language` runs on before its environment: the user's own
/// `sandbox.image`, else the configured image for the language, else coval's Python image.
pub fn base_image(cfg: &SandboxConfig, language: Language) -> String {
    if !cfg.image.trim().is_empty() {
        return cfg.image.trim().to_owned();
    }
    cfg.image_for(language)
        .unwrap_or("coval/python:bookworm")
        .to_owned()
}

/// Whether `argv` is `python3 -m pytest ARGS...`: the command sessions can serve from a warm
/// test server, and to which pytest node ids can be appended.
pub fn is_pytest_module_run(argv: &[String]) -> bool {
    warm::pytest_invocation(argv).is_some()
}

/// The environment a test command needs and nothing more.
pub fn default_env() -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("GOFLAGS", "-mod=mod"),
        ("GOPROXY", "off"),
        ("GOTOOLCHAIN", "local"),
        ("CI", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl RunSpec {
    pub fn new(dir: impl Into<PathBuf>, argv: Vec<String>) -> RunSpec {
        RunSpec {
            dir: dir.into(),
            argv,
            env: default_env(),
            timeout: Duration::from_secs(300),
            limits: Limits::default(),
            image: "coval/python:bookworm".into(),
            collect: vec![],
        }
    }

    /// A spec that runs `kind`'s tests in `dir` under the `sandbox:` settings: its command,
    /// the reports it writes and the environment it needs.
    pub fn for_project(
        cfg: &SandboxConfig,
        kind: &ProjectKind,
        dir: impl Into<PathBuf>,
    ) -> RunSpec {
        let mut s = RunSpec::from_config(cfg, kind.language, dir, kind.test_cmd.clone());
        s.collect = kind.reports.clone();
        for (name, value) in &kind.env {
            s.env.retain(|(n, _)| n != name);
            s.env.push((name.clone(), value.clone()));
        }
        s
    }

    /// A spec from the `sandbox:` settings, for a project of `language`.
    pub fn from_config(
        cfg: &SandboxConfig,
        language: Language,
        dir: impl Into<PathBuf>,
        argv: Vec<String>,
    ) -> RunSpec {
        let mut s = RunSpec::new(dir, argv);
        s.timeout = Duration::from_secs(cfg.timeout_secs);
        s.limits = cfg.limits();
        s.image = base_image(cfg, language);
        s
    }

    /// Refuses what no backend can run faithfully.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let bad = |m: String| Err(SandboxError::BadSpec(m));
        let Some(prog) = self.argv.first() else {
            return bad("argv is empty".into());
        };
        if prog.is_empty() || prog.contains('=') || prog.starts_with('-') {
            return bad(format!(
                "program `{prog}` is empty, starts with `-` or contains `=`"
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return bad("an argument contains a NUL byte".into());
        }
        for (k, v) in &self.env {
            let name_ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok || v.contains('\0') {
                return bad(format!(
                    "environment variable `{k}` has an invalid name or value"
                ));
            }
        }
        for c in &self.collect {
            if !vocab::tree::is_safe_relative(c) || c.contains('\n') {
                return bad(format!(
                    "collect path `{c}` must be relative, without `..` or newlines"
                ));
            }
        }
        if self.timeout.is_zero() {
            return bad("timeout is zero".into());
        }
        if self.limits.pids < 4 || self.limits.memory_bytes < (8 << 20) {
            return bad("limits too small: pids must be ≥ 4 and memory ≥ 8 MiB".into());
        }
        if !(self.limits.cpus.is_finite() && self.limits.cpus > 0.0) {
            return bad(format!("cpus {} must be positive", self.limits.cpus));
        }
        Ok(())
    }
}

/// What happened to one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// The exit code, when the process exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Stopped by the memory limit: killed by the kernel (Docker), or an allocation refused by
    /// RLIMIT_DATA (local).
    pub oom_killed: bool,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond [`Limits::output_bytes`] was dropped and the process killed.
    pub output_truncated: bool,
    pub duration: Duration,
    /// The timeout that applied (for the verdict).
    pub timeout: Duration,
    /// The output cap that applied (for the verdict).
    pub output_cap: usize,
    /// The files of [`RunSpec::collect`] that existed after the run (contents capped).
    pub collected: BTreeMap<String, String>,
}

impl RunResult {
    /// Exited 0, and nothing stopped it.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom_killed && !self.output_truncated
    }

    /// What happened, in words: "exited 1", "killed after 30 s timeout", "killed: out of
    /// memory", "output capped at 1 MiB".
    pub fn verdict(&self) -> String {
        let primary = if self.oom_killed {
            "killed: out of memory".to_owned()
        } else if self.timed_out {
            format!("killed after {} timeout", human_secs(self.timeout))
        } else if self.output_truncated {
            return format!(
                "output capped at {}; process killed",
                human_bytes(self.output_cap as u64)
            );
        } else if let Some(code) = self.exit_code {
            format!("exited {code}")
        } else if let Some(sig) = self.signal {
            format!("killed by signal {sig} ({})", signal_name(sig))
        } else {
            "ended without an exit status".to_owned()
        };
        if self.output_truncated {
            format!(
                "{primary} (output capped at {})",
                human_bytes(self.output_cap as u64)
            )
        } else {
            primary
        }
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {:.2} s",
            self.verdict(),
            self.duration.as_secs_f64()
        )
    }
}

pub(crate) fn human_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 && (s - s.round()).abs() < 1e-9 {
        format!("{} s", s as u64)
    } else {
        format!("{s:.1} s")
    }
}

pub(crate) fn human_bytes(b: u64) -> String {
    const K: u64 = 1024;
    if b >= K * K && b.is_multiple_of(K * K) {
        format!("{} MiB", b / (K * K))
    } else if b >= K && b.is_multiple_of(K) {
        format!("{} KiB", b / K)
    } else {
        format!("{b} bytes")
    }
}

pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "signal",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "docker engine not reachable ({reason}); start it with `scripts/dev-services.sh up`, or set sandbox.backend: local"
    )]
    Unreachable { reason: String },
    #[error("base image `{image}` is missing; build it with `scripts/build-base-images.sh {lang}`")]
    ImageMissing { image: String, lang: String },
    #[error("docker {op} failed: {reason}")]
    Docker { op: &'static str, reason: String },
    #[error("bad run spec: {0}")]
    BadSpec(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox session is no longer usable: {0}; open a new session")]
    SessionLost(String),
}

impl SandboxError {
    /// Worth trying again later (the engine may come back); bad specs and missing images are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SandboxError::Unreachable { .. }
                | SandboxError::Docker { .. }
                | SandboxError::SessionLost(_)
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> SandboxError {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One interface, two implementations.
pub trait Sandbox: Send + Sync {
    /// "docker" or "local".
    fn name(&self) -> &'static str;

    /// What this sandbox does not isolate, if anything; shown to users.
    fn notice(&self) -> Option<String>;

    /// One run in a fresh sandbox.
    fn run(&self, spec: &RunSpec) -> impl Future<Output = Result<RunResult, SandboxError>> + Send;

    /// A sandbox for many candidates of one repair; `template` gives env, limits and image.
    fn open_session(
        &self,
        template: &RunSpec,
    ) -> impl Future<Output = Result<Session, SandboxError>> + Send;
}

/// A sandbox reused across the candidates of one repair: Docker runs each candidate as a
/// process in one long-lived container; the local sandbox makes a fresh copy each time. In
/// both, `python3 -m pytest` candidates are served by a warm test server that forks per
/// candidate (see `warm_server.py`), unless it is switched off or fails. Candidates never see
/// each other's files. Dropping it removes the container and stops the server.
pub enum Session {
    Docker(Box<DockerSession>),
    Local(Box<LocalSession>),
}

impl Session {
    /// Runs `argv` on a fresh copy of `dir`, within the template's limits and `timeout`.
    pub async fn run(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
    ) -> Result<RunResult, SandboxError> {
        match self {
            Session::Docker(s) => s.run(dir, argv, timeout).await,
            Session::Local(s) => s.run(dir, argv, timeout).await,
        }
    }

    /// [`Session::run`] for a candidate that is `changed.base` with `changed.changed` changed
    /// and nothing else: the warm server may serve it from a pytest session collected on the
    /// base, when that cannot change the verdict (else it runs as `run` would).
    pub async fn run_changed(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
        changed: warm::Changed<'_>,
    ) -> Result<RunResult, SandboxError> {
        match self {
            Session::Docker(s) => s.run_changed(dir, argv, timeout, Some(changed)).await,
            Session::Local(s) => s.run_changed(dir, argv, timeout, Some(changed)).await,
        }
    }

    /// How candidates were served by the session's warm test server.
    pub fn warm_stats(&self) -> &WarmStats {
        match self {
            Session::Docker(s) => s.warm_stats(),
            Session::Local(s) => s.warm_stats(),
        }
    }

    /// Removes the session's container, or stops the local session's warm server.
    pub async fn close(self) -> Result<(), SandboxError> {
        match self {
            Session::Docker(s) => s.close().await,
            Session::Local(s) => {
                (*s).close().await;
                Ok(())
            }
        }
    }
}

/// Either backend, as [`detect`] chose it.
pub enum AnySandbox {
    Docker(DockerSandbox),
    Local(LocalSandbox),
}

impl Sandbox for AnySandbox {
    fn name(&self) -> &'static str {
        match self {
            AnySandbox::Docker(s) => s.name(),
            AnySandbox::Local(s) => s.name(),
        }
    }

    fn notice(&self) -> Option<String> {
        match self {
            AnySandbox::Docker(s) => Sandbox::notice(s),
            AnySandbox::Local(s) => Sandbox::notice(s),
        }
    }

    async fn run(&self, spec: &RunSpec) -> Result<RunResult, SandboxError> {
        match self {
            AnySandbox::Docker(s) => s.run(spec).await,
            AnySandbox::Local(s) => s.run(spec).await,
        }
    }

    async fn open_session(&self, template: &RunSpec) -> Result<Session, SandboxError> {
        match self {
            AnySandbox::Docker(s) => Sandbox::open_session(s, template).await,
            AnySandbox::Local(s) => Sandbox::open_session(s, template).await,
        }
    }
}

/// The chosen backend and why.
pub struct Detected {
    pub sandbox: AnySandbox,
    pub reason: String,
}

/// A project's sandbox and environment, resolved once: what every stage that runs the
/// project's tests starts from.
pub struct Prepared {
    pub detected: Detected,
    pub env: Environment,
}

/// Why a project's tests cannot be run at all.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Env(#[from] EnvError),
}

impl PrepareError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PrepareError::Sandbox(e) => e.is_retryable(),
            PrepareError::Env(e) => e.is_retryable(),
        }
    }

    /// The command line's exit code for it (2 or 3).
    pub fn exit_code(&self) -> u8 {
        match self {
            PrepareError::Sandbox(SandboxError::BadSpec(_)) => vocab::exit::BAD_INPUT,
            PrepareError::Sandbox(_) => vocab::exit::UNREACHABLE,
            PrepareError::Env(e) => e.exit_code(),
        }
    }
}

/// The sandbox for `kind`'s project (as [`detect_for`]) and its environment (as
/// [`env::prepare`]): built at most once per process and key, reused after.
pub async fn prepare(
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
    user: &UserDirs,
) -> Result<Prepared, PrepareError> {
    let detected = detect_for(cfg, kind.language).await?;
    let env = env::prepare(cfg, &detected.sandbox, kind, root, user).await?;
    Ok(Prepared { detected, env })
}

impl Prepared {
    /// A spec from the `sandbox:` settings that runs in this environment.
    pub fn spec(
        &self,
        cfg: &SandboxConfig,
        language: Language,
        dir: impl Into<PathBuf>,
        argv: Vec<String>,
    ) -> RunSpec {
        let mut s = RunSpec::from_config(cfg, language, dir, argv);
        self.env.apply(&mut s);
        s
    }

    /// [`RunSpec::for_project`] in this environment.
    pub fn project_spec(
        &self,
        cfg: &SandboxConfig,
        kind: &ProjectKind,
        dir: impl Into<PathBuf>,
    ) -> RunSpec {
        let mut s = RunSpec::for_project(cfg, kind, dir);
        self.env.apply(&mut s);
        s
    }

    /// "sandbox: docker (why); environment: ...", for notes and the terminal.
    pub fn describe(&self) -> String {
        format!(
            "sandbox: {} ({}); environment: {}",
            self.detected.sandbox.name(),
            self.detected.reason,
            self.env.description
        )
    }
}

/// Docker when the engine answers and a configured base image is present, else the local
/// sandbox; `sandbox.backend` forces one (a forced Docker that does not answer is an error).
pub async fn detect(cfg: &SandboxConfig) -> Result<Detected, SandboxError> {
    detect_inner(cfg, None).await
}

/// Like [`detect`], but Docker only when the image for `language` is present.
pub async fn detect_for(cfg: &SandboxConfig, language: Language) -> Result<Detected, SandboxError> {
    detect_inner(cfg, Some(language)).await
}

async fn detect_inner(
    cfg: &SandboxConfig,
    language: Option<Language>,
) -> Result<Detected, SandboxError> {
    let local = |reason: String| Detected {
        sandbox: AnySandbox::Local(LocalSandbox::new().with_warm_server(cfg.warm_server)),
        reason,
    };
    if cfg.backend == SandboxBackend::Local {
        return Ok(local("sandbox.backend is local".into()));
    }
    let docker = match DockerSandbox::connect(&cfg.runtime).await {
        Ok(d) => d
            .with_warm_server(cfg.warm_server)
            .with_warm_node(cfg.warm_node),
        Err(e) if cfg.backend == SandboxBackend::Auto => {
            return Ok(local(format!("docker is not available: {e}")));
        }
        Err(e) => return Err(e),
    };
    let wanted: Vec<(String, String)> = match language {
        Some(l) if !cfg.image.trim().is_empty() => {
            vec![(l.key().to_owned(), cfg.image.trim().to_owned())]
        }
        Some(l) => match cfg.image_for(l) {
            Some(img) => vec![(l.key().to_owned(), img.to_owned())],
            None => vec![],
        },
        None => cfg
            .images
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut present = vec![];
    let mut missing = vec![];
    for (lang, img) in &wanted {
        if docker.image_exists(img).await? {
            present.push(img.clone());
        } else {
            missing.push((lang.clone(), img.clone()));
        }
    }
    if present.is_empty() {
        let why = match missing.first() {
            Some((lang, img)) => SandboxError::ImageMissing {
                image: img.clone(),
                lang: lang.clone(),
            }
            .to_string(),
            None => "no base image is configured for this language".to_owned(),
        };
        if cfg.backend == SandboxBackend::Docker {
            return match missing.into_iter().next() {
                Some((lang, image)) => Err(SandboxError::ImageMissing { image, lang }),
                None => Err(SandboxError::BadSpec(why)),
            };
        }
        return Ok(local(format!("docker answers but {why}")));
    }
    let mut reason = format!("docker answers; images present: {}", present.join(", "));
    if !missing.is_empty() {
        let m: Vec<String> = missing.iter().map(|(_, i)| i.clone()).collect();
        reason.push_str(&format!("; missing: {}", m.join(", ")));
    }
    Ok(Detected {
        sandbox: AnySandbox::Docker(docker),
        reason,
    })
}

/// What the sandbox reads from its configuration section (`sandbox:` in coval.config.yaml),
/// in the sandbox's own types.
pub trait SandboxConfigExt {
    fn limits(&self) -> Limits;
    fn timeout(&self) -> Duration;
    /// The configured image for `language`, if any.
    fn image_for(&self, language: Language) -> Option<&str>;
}

impl SandboxConfigExt for SandboxConfig {
    fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mb.saturating_mul(1 << 20),
            pids: self.pids,
            cpus: self.cpus,
            output_bytes: usize::try_from(self.output_kb.saturating_mul(1024))
                .unwrap_or(usize::MAX),
            tmpfs_bytes: self.tmpfs_mb.saturating_mul(1 << 20),
            nofile: self.nofile,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    fn image_for(&self, language: Language) -> Option<&str> {
        self.images.get(language.key()).map(String::as_str)
    }
}

pub use vocab::tree::copy_project;

/// Removes, once per process (when its first sandbox is made), the temp dirs that sandboxes
/// of killed coval processes left behind; a live process's dirs are locked and stay
/// (`vocab::scratch`).
pub fn sweep_stale_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let swept = vocab::scratch::sweep_temp();
        if swept.removed > 0 {
            tracing::debug!(
                removed = swept.removed,
                live = swept.live,
                "removed the temp dirs of killed coval processes"
            );
        }
    });
}

/// A random hex string (nonces, container labels, per-run user ids).
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A user id no other sandbox uses at the same time, so RLIMIT_NPROC (counted per user,
/// host-wide) and the final kill sweep concern this run only.
pub(crate) fn ephemeral_uid() -> u32 {
    let h = u64::from_str_radix(&random_hex()[..12], 16).unwrap_or(0);
    // Even ids in [200000, 1000000); the odd neighbour is the session's keep-alive user.
    200_000 + ((h % 400_000) as u32) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> RunResult {
        RunResult {
            exit_code: Some(1),
            signal: None,
            timed_out: false,
            oom_killed: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            duration: Duration::from_millis(10),
            timeout: Duration::from_secs(30),
            output_cap: 1 << 20,
            collected: BTreeMap::new(),
        }
    }

    #[test]
    fn verdicts_say_what_happened() {
        let mut r = result();
        assert_eq!(r.verdict(), "exited 1");
        r.timed_out = true;
        r.exit_code = None;
        r.signal = Some(9);
        assert_eq!(r.verdict(), "killed after 30 s timeout");
        r.oom_killed = true;
        assert_eq!(r.verdict(), "killed: out of memory");
        let mut r = result();
        r.output_truncated = true;
        assert_eq!(r.verdict(), "output capped at 1 MiB; process killed");
        let mut r = result();
        r.exit_code = None;
        r.signal = Some(11);
        assert_eq!(r.verdict(), "killed by signal 11 (SIGSEGV)");
        assert!(!r.success());
    }

    #[test]
    fn specs_are_validated() {
        let mut s = RunSpec::new("/x", vec![]);
        assert!(s.validate().is_err());
        s.argv = vec!["A=b".into()];
        assert!(s.validate().is_err());
        s.argv = vec!["true".into()];
        s.validate().unwrap();
        s.collect = vec!["../x".into()];
        assert!(s.validate().is_err());
        s.collect = vec![];
        s.env.push(("BAD=NAME".into(), "1".into()));
        assert!(s.validate().is_err());
    }

    #[test]
    fn uids_are_even_and_high() {
        for _ in 0..100 {
            let u = ephemeral_uid();
            assert!(
                (200_000..1_000_000).contains(&u) && u.is_multiple_of(2),
                "{u}"
            );
        }
        assert_ne!(random_hex(), random_hex());
    }
}

//! The local-process sandbox, for machines without Docker: a temp copy of the project, an
//! environment of exactly `RunSpec::env`, rlimits set in the child, its own process group
//! (killed whole on timeout), a fresh user id per run when coval runs as root (so RLIMIT_NPROC
//! and a final kill sweep cover exactly this run), and a new network namespace where the
//! kernel allows one. It isolates less than Docker: see [`LocalSandbox::notice`].

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::capture::{Capture, Flow};
use super::sys::{self, ChildSetup, Netns};
use super::warm::{self, Candidate, Channel, Chunk, Transport, WarmClient, WarmFailure, WarmStats};
use super::{RunResult, RunSpec, Sandbox, SandboxError, Session, ephemeral_uid};
use vocab::tree::{Perms, chown_tree, copy_tree, read_capped};

/// How long pipes may stay open after the process group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct NetSupport {
    mode: Netns,
    /// How the network is (or is not) isolated, in words.
    note: String,
}

static NET: OnceLock<NetSupport> = OnceLock::new();

/// Whether a child can get its own network namespace here; probed once per process.
fn net_support() -> &'static NetSupport {
    NET.get_or_init(|| {
        let tries: &[Netns] = if sys::euid() == 0 {
            &[Netns::New, Netns::NewWithUserns]
        } else {
            &[Netns::NewWithUserns]
        };
        let mut last = String::from("not tried");
        for &mode in tries {
            match probe(mode) {
                Ok(()) => {
                    let how = match mode {
                        Netns::New => "a new network namespace",
                        _ => "new user and network namespaces",
                    };
                    return NetSupport {
                        mode,
                        note: format!(
                            "network blocked: each run gets {how} with no interfaces up"
                        ),
                    };
                }
                Err(e) => last = e,
            }
        }
        NetSupport {
            mode: Netns::Host,
            note: format!(
                "network NOT blocked: the kernel refused a new network namespace ({last}); the process can reach the host's network"
            ),
        }
    })
}

fn probe(mode: Netns) -> Result<(), String> {
    if mode == Netns::Host {
        return Ok(());
    }
    // The same pre-exec hook a run uses, on a program that does nothing.
    let mut cmd = std::process::Command::new("true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::install(
        &mut cmd,
        ChildSetup {
            netns: mode,
            rlimits: vec![],
            user: None,
        },
    );
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs tests as local processes. Cheap to create; the namespace probe runs once.
#[derive(Debug, Clone)]
pub struct LocalSandbox {
    warm: bool,
}

impl Default for LocalSandbox {
    fn default() -> Self {
        LocalSandbox::new()
    }
}

impl LocalSandbox {
    pub fn new() -> LocalSandbox {
        crate::sweep_stale_dirs();
        let _ = net_support();
        LocalSandbox { warm: true }
    }

    /// Whether sessions serve `python3 -m pytest` candidates from a warm test server (on by
    /// default; `sandbox.warm_server`). Off: one fresh process per candidate.
    pub fn with_warm_server(mut self, on: bool) -> LocalSandbox {
        self.warm = on;
        self
    }

    /// The network is cut off (a new network namespace could be made here).
    pub fn network_isolated(&self) -> bool {
        net_support().mode != Netns::Host
    }

    /// Runs get their own user id (coval runs as root).
    pub fn separate_user(&self) -> bool {
        sys::euid() == 0
    }

    /// What this sandbox does and does not isolate.
    pub fn notice(&self) -> String {
        let user = if self.separate_user() {
            "each run gets its own unprivileged user id, so the process limit and the final kill sweep cover exactly that run"
        } else {
            "runs as the current user (coval is not root), so processes that leave their process group survive the timeout kill"
        };
        format!(
            "local sandbox: isolates less than Docker. It runs tests in a temp copy with a scrubbed environment, \
rlimits (memory via RLIMIT_DATA, processes, file size, open files, CPU time) and a process-group kill on timeout; \
{user}; {}. It does NOT isolate the file system (the process can read whatever its user can read), \
does not cap total disk use (only the size of each file), and shares the host's kernel, processes and IPC. \
Use the Docker sandbox for untrusted code.",
            net_support().note
        )
    }

    pub async fn run(&self, spec: &RunSpec) -> Result<RunResult, SandboxError> {
        spec.validate()?;
        run_local(spec).await
    }

    pub fn open_session(&self, template: &RunSpec) -> Result<LocalSession, SandboxError> {
        template.validate()?;
        Ok(LocalSession {
            warm: WarmClient::new(self.warm),
            host: LocalHost {
                template: template.clone(),
                server: None,
            },
            counter: 0,
        })
    }
}

impl Sandbox for LocalSandbox {
    fn name(&self) -> &'static str {
        "local"
    }

    fn notice(&self) -> Option<String> {
        Some(LocalSandbox::notice(self))
    }

    async fn run(&self, spec: &RunSpec) -> Result<RunResult, SandboxError> {
        LocalSandbox::run(self, spec).await
    }

    /// Like [`LocalSandbox::open_session`], and starts the warm server now when the
    /// template's command is one it serves (the inherent method starts it on first use).
    async fn open_session(&self, template: &RunSpec) -> Result<Session, SandboxError> {
        let mut s = LocalSandbox::open_session(self, template)?;
        s.prestart().await;
        Ok(Session::Local(Box::new(s)))
    }
}

/// Local session: every candidate runs in its own fresh temp copy; `python3 -m pytest`
/// candidates go to a warm test server (one per session, started on first use, with the same
/// rlimits, namespace and user a fresh run gets), anything else runs as a fresh process.
pub struct LocalSession {
    warm: WarmClient,
    host: LocalHost,
    counter: u64,
}

impl std::fmt::Debug for LocalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSession")
            .field("template", &self.host.template)
            .field("warm", self.warm.stats())
            .field("server", &self.host.server.as_ref().map(|s| s.pid))
            .finish()
    }
}

/// The warm server's side on this host (the [`Transport`]): its process and the directory
/// tree it works in.
struct LocalHost {
    /// The session's template: the server is started with its limits, whichever candidate
    /// starts it.
    template: RunSpec,
    server: Option<LocalServer>,
}

/// The warm server of a local session and the directory tree it works in: `cands/` (staged
/// by the host, read-only to the server's user), `work/` and `tmp/` (wiped after each
/// candidate).
struct LocalServer {
    root: vocab::scratch::ScratchDir,
    process: tokio::process::Child,
    pid: Option<u32>,
    /// The session's own user (coval runs as root), else `None`.
    user: Option<(u32, u32)>,
    /// The base tree staged for collected runs: its host path and staged name.
    base: Option<(PathBuf, String)>,
}

impl LocalServer {
    /// Stages `base` under the server's `cands` once (again when another base comes, as
    /// `base-{id}`); its staged name, or `None` when it could not be copied.
    async fn stage_base(&mut self, base: &Path, id: &str) -> Option<String> {
        if let Some((path, name)) = &self.base
            && path == base
        {
            return Some(name.clone());
        }
        let cands = self.root.path().join("cands");
        if let Some((_, old)) = self.base.take() {
            let old = cands.join(old);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(old)).await;
        }
        let name = format!("base-{id}");
        let (from, to) = (base.to_path_buf(), cands.join(&name));
        let copied =
            tokio::task::spawn_blocking(move || copy_tree(&from, &to, Perms::WorldReadable)).await;
        matches!(copied, Ok(Ok(_))).then(|| {
            self.base = Some((base.to_path_buf(), name.clone()));
            name
        })
    }
}

/// A fresh run maps `/work` in env values to its own copy; one server cannot do that per
/// candidate.
fn env_names_work(spec: &RunSpec) -> bool {
    spec.env.iter().any(|(_, v)| {
        v.split(':').any(|p| {
            p == "/work" || (p.starts_with("/work/") && std::fs::symlink_metadata(p).is_err())
        })
    })
}

/// Cap on each collected file of a warm run (as `read_capped` in a fresh run).
const WARM_COLLECT_CAP: usize = 4 << 20;

impl LocalSession {
    pub async fn run(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
    ) -> Result<RunResult, SandboxError> {
        self.run_changed(dir, argv, timeout, None).await
    }

    /// [`LocalSession::run`], told how `dir` differs from a base tree: the warm server may
    /// then serve it from a pytest session collected on that base (staged once per base).
    pub async fn run_changed(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
        changed: Option<warm::Changed<'_>>,
    ) -> Result<RunResult, SandboxError> {
        let mut spec = self.host.template.clone();
        spec.dir = dir.to_path_buf();
        spec.argv = argv.to_vec();
        spec.timeout = timeout;
        spec.validate()?;
        if self.warm.usable()
            && let Some((interpreter, args, cwd)) = warm::pytest_invocation(&spec.argv)
        {
            if env_names_work(&spec) {
                // A fresh run maps /work to its own copy; one server cannot do that per candidate.
                self.warm.turn_off(
                    "the environment names /work, which means another dir for every candidate"
                        .into(),
                );
            } else {
                let started = Instant::now();
                self.counter += 1;
                let cid = format!("c{}", self.counter);
                let served = warm::Served::Pytest {
                    interpreter,
                    args,
                    cwd,
                };
                let candidate = Candidate {
                    id: &cid,
                    served: &served,
                    spec: &spec,
                    changed,
                    started,
                };
                if let Some(r) = self.warm.serve(&mut self.host, candidate).await {
                    return Ok(r);
                }
            }
        }
        run_local(&spec).await
    }

    /// How candidates were served by the warm test server.
    pub fn warm_stats(&self) -> &WarmStats {
        self.warm.stats()
    }

    /// Starts the warm server for the template's command, when it is one the server serves.
    async fn prestart(&mut self) {
        let template = self.host.template.clone();
        let Some((interpreter, args, cwd)) = warm::pytest_invocation(&template.argv) else {
            return;
        };
        if env_names_work(&template) {
            return;
        }
        let served = warm::Served::Pytest {
            interpreter,
            args,
            cwd,
        };
        self.warm.prestart(&mut self.host, &served, &template).await;
    }

    /// Stops the warm server, if one runs.
    pub async fn close(mut self) {
        self.warm.stop(&mut self.host).await;
    }
}

impl Transport for LocalHost {
    const COLLECT_CAP: usize = WARM_COLLECT_CAP;

    async fn start(
        &mut self,
        served: &warm::Served<'_>,
        _spec: &RunSpec,
    ) -> Result<Channel, WarmFailure> {
        let warm::Served::Pytest { interpreter, .. } = served else {
            return Err(WarmFailure(format!(
                "the local sandbox serves only pytest, not `{}`",
                served.server()
            )));
        };
        let (server, channel) = start_local_server(interpreter, &self.template).await?;
        self.server = Some(server);
        Ok(channel)
    }

    /// Kills the warm server, the candidate it was running and (with a user of its own) every
    /// process of the session's user; removes its directory tree.
    async fn stop(&mut self, channel: Option<Channel>) {
        let Some(mut s) = self.server.take() else {
            return;
        };
        let child = channel.as_ref().and_then(|c| c.child);
        kill_server(&s, child);
        let _ = tokio::time::timeout(Duration::from_secs(5), s.process.wait()).await;
        let _ = s.process.start_kill();
        kill_server(&s, child);
        let root = s.root;
        drop(channel);
        let _ = tokio::task::spawn_blocking(move || drop(root)).await;
    }

    /// Copies the candidate into the server's `cands` (and its base, once per base).
    async fn stage(
        &mut self,
        id: &str,
        spec: &RunSpec,
        changed: Option<warm::Changed<'_>>,
    ) -> Result<warm::Staged, WarmFailure> {
        let Some(server) = self.server.as_mut() else {
            return Err(WarmFailure("no server".into()));
        };
        let src = server.root.path().join("cands").join(id);
        let work = server.root.path().join("work").join(id);
        let (from, to) = (spec.dir.clone(), src.clone());
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, Perms::WorldReadable))
            .await
            .map_err(|e| WarmFailure(format!("staging task failed: {e}")))?
            .map_err(|e| WarmFailure(format!("cannot stage {}: {e}", spec.dir.display())))?;
        let (Some(src), Some(work)) = (src.to_str(), work.to_str()) else {
            return Err(WarmFailure("the temp dir's path is not UTF-8".into()));
        };
        let (src, work) = (src.to_owned(), work.to_owned());
        let mut base = None;
        if let Some(c) = changed
            && let Some(name) = server.stage_base(c.base, id).await
        {
            let r = server.root.path();
            base = Some((
                r.join("cands").join(name).to_string_lossy().into_owned(),
                r.join("work").join("base").to_string_lossy().into_owned(),
            ));
        }
        Ok(warm::Staged { src, work, base })
    }

    async fn unstage(&mut self, staged: warm::Staged) {
        let src = PathBuf::from(staged.src);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(src)).await;
    }

    fn kill_at(&self, spec: &RunSpec) -> usize {
        spec.limits.output_bytes
    }

    fn last_oom(&self) -> u64 {
        0
    }

    /// As a fresh local run judges them: CPU-limit kills are timeouts, allocation failures
    /// are out-of-memory.
    fn judge(&mut self, mut r: RunResult, _oom_after: Option<u64>) -> RunResult {
        r.timed_out = r.timed_out || r.signal == Some(libc::SIGXCPU);
        r.oom_killed = !r.success() && !r.timed_out && looks_out_of_memory(&r.stderr);
        r
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        // A cancelled repair: nothing of the session may outlive it.
        if let Some(s) = &self.host.server {
            kill_server(s, self.warm.channel().and_then(|c| c.child));
        }
    }
}

/// Kills the candidate the server runs (`child`, its process group), the server, and (with a
/// user of its own) every process of the session's user.
fn kill_server(s: &LocalServer, child: Option<u32>) {
    if let Some(child) = child {
        sys::kill_group(child);
    }
    kill_all(s.pid, s.user);
}

/// Starts a local warm server with the setup a fresh run of `template` gets, and waits until
/// it has imported pytest.
async fn start_local_server(
    interpreter: &str,
    template: &RunSpec,
) -> Result<(LocalServer, Channel), WarmFailure> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| WarmFailure(format!("{what}: {e}"));
    let root = vocab::scratch::ScratchDir::new("coval-warm-")
        .map_err(|e| io("cannot create the server's dir", e))?;
    let (cands, work, tmp) = (
        root.path().join("cands"),
        root.path().join("work"),
        root.path().join("tmp"),
    );
    for d in [&cands, &work, &tmp] {
        std::fs::create_dir(d).map_err(|e| io("cannot create the server's dir", e))?;
    }
    for (d, mode) in [(root.path(), 0o755), (cands.as_path(), 0o755)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("cannot open up the server's dir", e))?;
    }
    let user = if sys::euid() == 0 {
        let uid = ephemeral_uid();
        for d in [&work, &tmp] {
            chown_tree(d, uid, uid).map_err(|e| io("cannot hand the work dir to its user", e))?;
        }
        Some((uid, uid))
    } else {
        None
    };
    let (Some(work_s), Some(tmp_s)) = (work.to_str(), tmp.to_str()) else {
        return Err(WarmFailure("the temp dir's path is not UTF-8".into()));
    };
    let setup = child_setup(template, user);
    let mut cmd = std::process::Command::new(interpreter);
    cmd.args(["-c", warm::SERVER, "coval-warm"]);
    // Killing "every process of my user" is only safe with a user of the session's own.
    if user.is_some() {
        cmd.arg("--sweep");
    }
    cmd.args(["--wipe", work_s, tmp_s])
        .current_dir("/")
        .env_clear()
        .envs(map_env(&template.env, &work, &tmp))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    sys::install(&mut cmd, setup);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut process = cmd
        .spawn()
        .map_err(|e| io(&format!("cannot start `{interpreter}`"), e))?;
    let pid = process.id();
    let (Some(stdin), Some(stdout), Some(stderr)) = (
        process.stdin.take(),
        process.stdout.take(),
        process.stderr.take(),
    ) else {
        return Err(WarmFailure("the server's pipes are missing".into()));
    };
    let output = futures::stream::select(
        read_chunks(stdout, Chunk::Out).chain(futures::stream::once(async {
            Chunk::Broken("the server closed its output".into())
        })),
        read_chunks(stderr, Chunk::Log),
    );
    let max_body = template.limits.output_bytes + template.collect.len() * WARM_COLLECT_CAP + 4096;
    let mut server = LocalServer {
        root,
        process,
        pid,
        user,
        base: None,
    };
    let mut channel = Channel::new(Box::pin(stdin), Box::pin(output), max_body);
    match channel.hello().await {
        Ok(about) => {
            tracing::debug!(%about, "local warm test server ready");
            Ok((server, channel))
        }
        Err(e) => {
            kill_server(&server, None);
            let _ = server.process.start_kill();
            Err(e)
        }
    }
}

/// A pipe as a stream of chunks, ending at EOF (or with `Broken` on a read error).
fn read_chunks<R>(r: R, wrap: fn(Bytes) -> Chunk) -> impl Stream<Item = Chunk> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
{
    futures::stream::unfold(Some(r), move |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; 64 << 10];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((wrap(Bytes::from(buf)), Some(r)))
            }
            Err(e) => Some((Chunk::Broken(e.to_string()), None)),
        }
    })
}

/// Maps the sandbox paths `/work` and `/tmp` in env values onto this run's copies.
/// A directory, last on the sandbox's PATH, that gives `python` where the machine has only
/// `python3` (Debian without python-is-python3): a user's `python -m pytest` then runs with
/// the interpreter their shell would have found under that name. `None` when `python` exists
/// on `path` or no `python3` does.
fn python_shim(path: &str) -> Option<PathBuf> {
    use std::hash::{Hash, Hasher};
    let on_path = |name: &str| {
        path.split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    if on_path("python").is_some() {
        return None;
    }
    let python3 = on_path("python3")?;
    // One directory per python3, made once and then only read.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    python3.hash(&mut h);
    let dir = std::env::temp_dir().join(format!(
        "coval-python-shim-{}-{:016x}",
        sys::euid(),
        h.finish()
    ));
    let link = dir.join("python");
    if std::fs::read_link(&link).is_ok_and(|t| t == python3) {
        return Some(dir);
    }
    std::fs::create_dir_all(&dir).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).ok()?;
    // Made beside it and renamed over it, so a concurrent run never sees half a shim.
    let tmp = dir.join(format!(".python-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&python3, &tmp).ok()?;
    std::fs::rename(&tmp, &link).ok()?;
    Some(dir)
}

fn map_env(env: &[(String, String)], src: &Path, tmp: &Path) -> Vec<(String, String)> {
    // Each `:`-separated part on its own (PATH-like values); a path under /tmp or /work that
    // exists on the host (a project environment under a cache in /tmp) is the host's.
    let map_one = |v: &str| -> String {
        for (prefix, to) in [("/work", src), ("/tmp", tmp)] {
            if v == prefix {
                return to.display().to_string();
            }
            if let Some(rest) = v.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
                && std::fs::symlink_metadata(v).is_err()
            {
                return to.join(rest).display().to_string();
            }
        }
        v.to_owned()
    };
    let map = |v: &str| -> String { v.split(':').map(map_one).collect::<Vec<_>>().join(":") };
    env.iter()
        .map(|(k, v)| match (k.as_str(), python_shim(v)) {
            ("PATH", Some(shim)) => (k.clone(), format!("{}:{}", map(v), shim.display())),
            _ => (k.clone(), map(v)),
        })
        .collect()
}

/// Processes whose real uid is `uid` (for RLIMIT_NPROC, which counts them all).
fn count_user_processes(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok())
                == Some(uid)
        })
        .count() as u64
}

struct Staged {
    root: vocab::scratch::ScratchDir,
    src: PathBuf,
    tmp: PathBuf,
    user: Option<(u32, u32)>,
}

/// The project environment's `node_modules`: the first `NODE_PATH` entry, when it is a
/// directory named `node_modules` on this host.
fn env_node_modules(env: &[(String, String)]) -> Option<PathBuf> {
    let first = env
        .iter()
        .rev()
        .find(|(k, _)| k == "NODE_PATH")?
        .1
        .split(':')
        .next()?;
    let p = PathBuf::from(first);
    (p.is_absolute() && p.file_name()? == "node_modules" && p.is_dir()).then_some(p)
}

/// Tool caches kept in `node_modules` (vitest's and vite's `.vite`, babel's and others'
/// `.cache`): never linked from the environment, so a run makes its own in the copy.
const NODE_CACHES: &[&str] = &[".vite", ".cache"];

/// Gives the copy a `node_modules` of its own when it has none: a directory of links to the
/// entries of `modules` (packages, scopes, `.bin`), owned by the sandbox's user. An ES module
/// finds what it `import`s only by walking up from its own file to a `node_modules`, never
/// through `NODE_PATH` (which only `require` reads); in Docker the environment's
/// `/node_modules` is on that walk already. A directory, not one link to the environment:
/// tools write their caches there (vitest its results in `node_modules/.vite`, which failed
/// every passing run with EACCES, exit 1), and the environment is read-only to the user.
fn link_node_modules(src: &Path, modules: &Path, user: Option<(u32, u32)>) -> std::io::Result<()> {
    let dir = src.join("node_modules");
    if std::fs::symlink_metadata(&dir).is_ok() || !src.join("package.json").is_file() {
        return Ok(());
    }
    std::fs::create_dir(&dir)?;
    for e in std::fs::read_dir(modules)? {
        let e = e?;
        let name = e.file_name();
        if NODE_CACHES.iter().any(|c| name == *c) {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.join(&name))?;
    }
    if let Some((uid, gid)) = user {
        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn stage(dir: &Path, modules: Option<&Path>) -> Result<Staged, SandboxError> {
    let root = vocab::scratch::ScratchDir::new("coval-local-")
        .map_err(|e| SandboxError::io("cannot create a temp dir for the local sandbox", e))?;
    let src = root.path().join("src");
    let tmp = root.path().join("tmp");
    copy_tree(dir, &src, Perms::Keep)
        .map_err(|e| SandboxError::io(format!("cannot copy {}", dir.display()), e))?;
    std::fs::create_dir(&tmp).map_err(|e| SandboxError::io("cannot create the temp dir", e))?;
    let user = if sys::euid() == 0 {
        let uid = ephemeral_uid();
        chown_tree(root.path(), uid, uid)
            .map_err(|e| SandboxError::io("cannot hand the copy to the sandbox user", e))?;
        Some((uid, uid))
    } else {
        None
    };
    // After the chown: the links are the only entries that point out of the copy, and the
    // trees they point at stay the environment's own (read-only to the sandbox's user).
    if let Some(m) = modules {
        link_node_modules(&src, m, user)
            .map_err(|e| SandboxError::io("cannot link the environment's node_modules", e))?;
    }
    Ok(Staged {
        root,
        src,
        tmp,
        user,
    })
}

/// Allocation failures as the common runtimes print them.
fn looks_out_of_memory(stderr: &str) -> bool {
    [
        "MemoryError",
        "Cannot allocate memory",
        "out of memory",
        "std::bad_alloc",
        "JavaScript heap out of memory",
        "memory allocation of",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

async fn run_local(spec: &RunSpec) -> Result<RunResult, SandboxError> {
    let started = Instant::now();
    let dir = spec.dir.clone();
    let modules = env_node_modules(&spec.env);
    let staged = tokio::task::spawn_blocking(move || stage(&dir, modules.as_deref()))
        .await
        .map_err(|e| SandboxError::io("staging task failed", std::io::Error::other(e)))??;
    let lim = &spec.limits;
    let setup = child_setup(spec, staged.user);
    let mut cmd = std::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .current_dir(&staged.src)
        .env_clear()
        .envs(map_env(&spec.env, &staged.src, &staged.tmp))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    sys::install(&mut cmd, setup);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // As a shell says it, with a shell's status: the program is not installed, which is
        // what the run tells (a run that cannot start), not a failure of the sandbox.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RunResult {
                exit_code: Some(127),
                signal: None,
                timed_out: false,
                oom_killed: false,
                stdout: String::new(),
                stderr: format!("coval-local: {}: command not found\n", spec.argv[0]),
                output_truncated: false,
                duration: started.elapsed(),
                timeout: spec.timeout,
                output_cap: lim.output_bytes,
                collected: BTreeMap::new(),
            });
        }
        Err(e) => {
            return Err(SandboxError::io(
                format!("cannot start `{}` in the local sandbox", spec.argv[0]),
                e,
            ));
        }
    };
    let pgid = child.id();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let mut cap = Capture::new(lim.output_bytes, 0);
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut timed_out = false;
    let mut over_cap = false;
    let mut status = None;
    let (mut b1, mut b2) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    // Read until the main process exits, the output cap is hit, or time runs out.
    while status.is_none() {
        tokio::select! {
            r = read_opt(&mut out, &mut b1) => match r {
                Some(n) => if cap.push_stdout(&b1[..n]) == Flow::OverCap { over_cap = true; break },
                None => out = None,
            },
            r = read_opt(&mut err, &mut b2) => match r {
                Some(n) => if cap.push_stderr(&b2[..n]) == Flow::OverCap { over_cap = true; break },
                None => err = None,
            },
            s = child.wait() => status = Some(s),
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break }
        }
    }
    // Whatever is left of the run (background processes, the whole tree on timeout) dies now.
    kill_all(pgid, staged.user);
    let drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
    while out.is_some() || err.is_some() {
        tokio::select! {
            r = read_opt(&mut out, &mut b1) => match r {
                Some(n) => if !over_cap && cap.push_stdout(&b1[..n]) == Flow::OverCap { over_cap = true },
                None => out = None,
            },
            r = read_opt(&mut err, &mut b2) => match r {
                Some(n) => if !over_cap && cap.push_stderr(&b2[..n]) == Flow::OverCap { over_cap = true },
                None => err = None,
            },
            _ = tokio::time::sleep_until(drain_until) => {
                kill_all(pgid, staged.user);
                break;
            }
        }
    }
    let status = match status {
        Some(s) => s,
        None => match tokio::time::timeout(DRAIN_GRACE, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await
            }
        },
    }
    .map_err(|e| SandboxError::io("cannot wait for the sandboxed process", e))?;
    if staged.user.is_some() {
        // A process that left the group and was still starting when we swept.
        kill_all(pgid, staged.user);
    }
    let duration = started.elapsed();
    let mut collected = BTreeMap::new();
    for c in &spec.collect {
        if let Some(text) = read_capped(&staged.src, c, lim.output_bytes.max(1 << 20)) {
            collected.insert(c.clone(), text);
        }
    }
    let truncated = over_cap || cap.truncated();
    let (stdout, stderr) = cap.into_strings();
    let signal = status.signal();
    let timed_out = timed_out || signal == Some(libc::SIGXCPU);
    let oom_killed = !status.success() && !timed_out && looks_out_of_memory(&stderr);
    drop(staged.root);
    Ok(RunResult {
        exit_code: status.code(),
        signal,
        timed_out,
        oom_killed,
        stdout,
        stderr,
        output_truncated: truncated,
        duration,
        timeout: spec.timeout,
        output_cap: lim.output_bytes,
        collected,
    })
}

/// The limits a run (or a session's warm server) is started under: `spec`'s memory, file
/// size, open files and CPU time, and a process count that only this run's processes use.
fn child_setup(spec: &RunSpec, user: Option<(u32, u32)>) -> ChildSetup {
    let lim = &spec.limits;
    let netns = net_support().mode;
    let nproc = if user.is_some() || netns == Netns::NewWithUserns {
        // A user of its own, or a user namespace of its own (since Linux 5.14 RLIMIT_NPROC
        // counts per user namespace): only this run's processes count.
        u64::from(lim.pids)
    } else {
        // RLIMIT_NPROC counts every process of the user, not just this run's.
        count_user_processes(sys::euid()) + u64::from(lim.pids)
    };
    let cpu_secs = (spec.timeout.as_secs_f64() * lim.cpus.max(0.01)).ceil() as u64 + 1;
    ChildSetup {
        netns,
        rlimits: vec![
            // RLIMIT_DATA rather than RLIMIT_AS: Go and V8 reserve large address ranges they
            // never touch, which RLIMIT_AS would refuse.
            (sys::RLIMIT_DATA, lim.memory_bytes),
            (sys::RLIMIT_NPROC, nproc),
            (sys::RLIMIT_FSIZE, lim.tmpfs_bytes),
            (sys::RLIMIT_NOFILE, u64::from(lim.nofile)),
            (sys::RLIMIT_CPU, cpu_secs),
            (sys::RLIMIT_CORE, 0),
        ],
        user,
    }
}

fn kill_all(pgid: Option<u32>, user: Option<(u32, u32)>) {
    if let Some(p) = pgid {
        sys::kill_group(p);
    }
    if let Some((uid, _)) = user {
        // With a uid of its own, anything this run started is found even after setsid().
        for _ in 0..50 {
            if sys::kill_user(uid) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Reads from an optional pipe; `None` at EOF or error, and pends forever when closed.
async fn read_opt<R: tokio::io::AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    match r {
        Some(r) => match r.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_paths_are_mapped() {
        let env = vec![
            ("HOME".to_owned(), "/tmp".to_owned()),
            ("X".to_owned(), "/work/a/b".to_owned()),
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("Y".to_owned(), "/tmpfoo".to_owned()),
        ];
        let m = map_env(&env, Path::new("/s"), Path::new("/t"));
        assert_eq!(m[0].1, "/t");
        assert_eq!(m[1].1, "/s/a/b");
        assert!(m[2].1.starts_with("/usr/bin:/bin"), "{}", m[2].1);
        assert_eq!(m[3].1, "/tmpfoo");
        // A host path under /tmp (an environment in a cache there) stays the host's.
        let host = tempfile::tempdir_in("/tmp").unwrap();
        let bin = host.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = format!("{}:/tmp/x:/usr/bin", bin.display());
        let m = map_env(&[("PATH".into(), path)], Path::new("/s"), Path::new("/t"));
        assert!(
            m[0].1
                .starts_with(&format!("{}:/t/x:/usr/bin", bin.display())),
            "{}",
            m[0].1
        );
    }

    #[test]
    fn python_is_python3_where_only_python3_exists() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("python3"), "").unwrap();
        let path = bin.display().to_string();
        let shim = python_shim(&path).expect("a shim where only python3 exists");
        let target = std::fs::read_link(shim.join("python")).unwrap();
        assert_eq!(target, bin.join("python3"));
        assert_eq!(
            python_shim(&path),
            Some(shim.clone()),
            "made once, then reused"
        );
        std::fs::write(bin.join("python"), "").unwrap();
        assert_eq!(python_shim(&path), None, "python exists: no shim");
    }

    /// An ES module project imports a package of the environment's `node_modules` (outside
    /// the copy, named by NODE_PATH), and the environment is left as it was.
    #[tokio::test]
    async fn es_modules_import_from_the_environment() {
        // Not under /tmp or /work: the local sandbox maps those to the run's own directories.
        let env = tempfile::tempdir_in("/var/tmp").unwrap();
        let pkg = env.path().join("node_modules/shout");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            r#"{"name":"shout","type":"module","exports":"./index.js"}"#,
        )
        .unwrap();
        std::fs::write(
            pkg.join("index.js"),
            "export default (s) => s.toUpperCase();\n",
        )
        .unwrap();
        for d in [env.path(), &env.path().join("node_modules"), &pkg] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let project = tempfile::tempdir().unwrap();
        std::fs::write(
            project.path().join("package.json"),
            r#"{"name":"p","type":"module"}"#,
        )
        .unwrap();
        std::fs::write(
            project.path().join("main.js"),
            "import shout from 'shout';\nconsole.log(shout('ok'));\n",
        )
        .unwrap();
        let mut spec = RunSpec::new(project.path(), vec!["node".into(), "main.js".into()]);
        spec.env.push((
            "NODE_PATH".into(),
            env.path().join("node_modules").display().to_string(),
        ));
        let r = run_local(&spec).await.unwrap();
        assert_eq!(r.exit_code, Some(0), "{}{}", r.stdout, r.stderr);
        assert_eq!(r.stdout.trim(), "OK");
        assert!(!project.path().join("node_modules").exists());
        // A tool's cache in node_modules (vitest's results) is written in the run's copy,
        // even where the environment already has one.
        std::fs::create_dir_all(env.path().join("node_modules/.vite")).unwrap();
        std::fs::write(
            project.path().join("cache.js"),
            "import fs from 'node:fs';\nimport shout from 'shout';\n\
             fs.mkdirSync('node_modules/.vite/vitest', { recursive: true });\n\
             fs.writeFileSync('node_modules/.vite/vitest/results.json', '{}');\n\
             console.log(shout('cached'));\n",
        )
        .unwrap();
        let mut cached = spec.clone();
        cached.argv = vec!["node".into(), "cache.js".into()];
        let r = run_local(&cached).await.unwrap();
        assert_eq!(r.exit_code, Some(0), "{}{}", r.stdout, r.stderr);
        assert_eq!(r.stdout.trim(), "CACHED");
        assert!(
            !env.path().join("node_modules/.vite/vitest").exists(),
            "the environment's own cache is untouched"
        );
        std::fs::remove_dir(env.path().join("node_modules/.vite")).unwrap();
        // Without the environment the import fails: the link is what resolves it.
        spec.env.retain(|(k, _)| k != "NODE_PATH");
        let r = run_local(&spec).await.unwrap();
        assert_ne!(r.exit_code, Some(0), "{}", r.stdout);
        assert!(r.stderr.contains("ERR_MODULE_NOT_FOUND"), "{}", r.stderr);
        assert_eq!(
            std::fs::read_dir(env.path().join("node_modules"))
                .unwrap()
                .count(),
            1,
            "the environment gained nothing"
        );
    }

    #[test]
    fn oom_markers() {
        assert!(looks_out_of_memory("Traceback...\nMemoryError\n"));
        assert!(!looks_out_of_memory("AssertionError"));
    }
}

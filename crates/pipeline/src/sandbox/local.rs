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

use tokio::io::AsyncReadExt;

use super::capture::{Capture, Flow};
use super::fs::{Perms, chown_tree, copy_tree, read_capped};
use super::sys::{self, ChildSetup, Netns};
use super::{RunResult, RunSpec, Sandbox, SandboxError, Session, ephemeral_uid};

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
    _private: (),
}

impl Default for LocalSandbox {
    fn default() -> Self {
        LocalSandbox::new()
    }
}

impl LocalSandbox {
    pub fn new() -> LocalSandbox {
        let _ = net_support();
        LocalSandbox { _private: () }
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
            template: template.clone(),
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

    async fn open_session(&self, template: &RunSpec) -> Result<Session, SandboxError> {
        Ok(Session::Local(LocalSandbox::open_session(self, template)?))
    }
}

/// Local "session": every candidate runs in its own fresh temp copy.
#[derive(Debug, Clone)]
pub struct LocalSession {
    template: RunSpec,
}

impl LocalSession {
    pub async fn run(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
    ) -> Result<RunResult, SandboxError> {
        let mut spec = self.template.clone();
        spec.dir = dir.to_path_buf();
        spec.argv = argv.to_vec();
        spec.timeout = timeout;
        spec.validate()?;
        run_local(&spec).await
    }
}

/// Maps the sandbox paths `/work` and `/tmp` in env values onto this run's copies.
fn map_env(env: &[(String, String)], src: &Path, tmp: &Path) -> Vec<(String, String)> {
    let map = |v: &str| -> String {
        for (prefix, to) in [("/work", src), ("/tmp", tmp)] {
            if v == prefix {
                return to.display().to_string();
            }
            if let Some(rest) = v.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
                return to.join(rest).display().to_string();
            }
        }
        v.to_owned()
    };
    env.iter().map(|(k, v)| (k.clone(), map(v))).collect()
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
    root: tempfile::TempDir,
    src: PathBuf,
    tmp: PathBuf,
    user: Option<(u32, u32)>,
}

fn stage(dir: &Path) -> Result<Staged, SandboxError> {
    let root = tempfile::Builder::new()
        .prefix("coval-local-")
        .tempdir()
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
    let staged = tokio::task::spawn_blocking(move || stage(&dir))
        .await
        .map_err(|e| SandboxError::io("staging task failed", std::io::Error::other(e)))??;
    let lim = &spec.limits;
    let netns = net_support().mode;
    let nproc = if staged.user.is_some() || netns == Netns::NewWithUserns {
        // A user of its own, or a user namespace of its own (since Linux 5.14 RLIMIT_NPROC
        // counts per user namespace): only this run's processes count.
        u64::from(lim.pids)
    } else {
        // RLIMIT_NPROC counts every process of the user, not just this run's.
        count_user_processes(sys::euid()) + u64::from(lim.pids)
    };
    let cpu_secs = (spec.timeout.as_secs_f64() * lim.cpus.max(0.01)).ceil() as u64 + 1;
    let setup = ChildSetup {
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
        user: staged.user,
    };
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
    let mut child = cmd.spawn().map_err(|e| {
        SandboxError::io(
            format!("cannot start `{}` in the local sandbox", spec.argv[0]),
            e,
        )
    })?;
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
        assert_eq!(m[2].1, "/usr/bin:/bin");
        assert_eq!(m[3].1, "/tmpfoo");
    }

    #[test]
    fn oom_markers() {
        assert!(looks_out_of_memory("Traceback...\nMemoryError\n"));
        assert!(!looks_out_of_memory("AssertionError"));
    }
}

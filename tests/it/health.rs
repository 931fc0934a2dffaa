//! A worker's health endpoint (`--health ADDR`), probed over HTTP as Kubernetes would, with the
//! real `coval-integrate` binary and a real nats-server on its own loopback port: live while
//! the process answers, ready only while NATS is connected and its consumer is bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use coval_tests::{NatsServer, SyncMode, free_port, workspace_binary};

use crate::workers::WorkerProc;

/// `GET path` on `port`: the status code and the body, or `None` when nothing listens.
fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Some((status, body))
}

/// Probes until `want` holds for the answer, then returns it.
fn wait_probe(
    w: &WorkerProc,
    port: u16,
    path: &str,
    within: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> Result<(u16, String)> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some((status, body)) = probe(port, path) {
            if want(status, &body) {
                return Ok((status, body));
            }
            last = Some((status, body));
        }
        if Instant::now() > deadline {
            bail!(
                "{} {path}: last answer {last:?} after {within:?}\n{}",
                w.name,
                w.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn integrate(nats: &str, ws: &std::path::Path, port: u16, name: &str) -> Result<WorkerProc> {
    let dir = ws.parent().context("workspace parent")?;
    let log = dir.join(format!("{name}.log"));
    let bin = workspace_binary("coval-integrate")?;
    let child = Command::new(&bin)
        .args(["--nats", nats, "--health", &format!("127.0.0.1:{port}")])
        .arg("--workspace")
        .arg(ws)
        .current_dir(dir)
        .env("COVAL_BUS__NAMESPACE", "health")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(WorkerProc::new(name, child, log))
}

#[test]
fn readiness_follows_the_consumer_and_the_nats_connection() -> Result<()> {
    let mut nats = NatsServer::start(SyncMode::Default)?;
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("ws");
    let (pa, pb) = (free_port()?, free_port()?);
    let a = integrate(&nats.url, &ws, pa, "integrate-a")?;
    let is = |s: u16| move |status: u16, _: &str| status == s;
    wait_probe(&a, pa, "/readyz", Duration::from_secs(60), is(200))?;
    ensure!(probe(pa, "/livez") == Some((200, "ok".into())));
    // The probe and the "ready" line come from the same bound consumers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.log_text().contains(": ready") {
        ensure!(
            Instant::now() < deadline,
            "ready on the probe, never in the log:\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second integration worker on the same workspace stands by for the ledger: alive,
    // connected, but no consumer of its own, so not ready (a Service sends it nothing).
    let b = integrate(&nats.url, &ws, pb, "integrate-b")?;
    wait_probe(&b, pb, "/livez", Duration::from_secs(30), is(200))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.log_text().contains("standing by") {
        ensure!(
            Instant::now() < deadline,
            "b never stood by:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = probe(pb, "/readyz").context("b's /readyz")?;
    ensure!(
        status == 503 && body.contains("no stage consumer"),
        "standby: {status} {body}"
    );

    // NATS goes away: not ready (still alive); back: ready again.
    nats.kill()?;
    let (_, why) = wait_probe(&a, pa, "/readyz", Duration::from_secs(30), is(503))?;
    ensure!(why.contains("nats connection"), "{why}");
    ensure!(
        probe(pa, "/livez").map(|r| r.0) == Some(200),
        "a died with NATS"
    );
    nats.restart()?;
    wait_probe(&a, pa, "/readyz", Duration::from_secs(60), is(200))?;

    // The first lets go of the ledger on SIGTERM; the standby takes it and becomes ready.
    let status = a.stop()?;
    ensure!(status.success(), "a: {status}");
    ensure!(probe(pa, "/livez").is_none(), "a's listener outlived it");
    wait_probe(&b, pb, "/readyz", Duration::from_secs(60), is(200))?;
    Ok(())
}

#[test]
fn a_health_address_in_use_is_exit_code_2_at_once() -> Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    // No NATS at all: the address is checked before connecting.
    let out = Command::new(workspace_binary("coval-triage")?)
        .args(["--nats", "nats://127.0.0.1:1", "--health"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .env("COVAL_BUS__CONNECT_TIMEOUT_SECS", "2")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "{:?}: {err}", out.status);
    ensure!(
        err.contains("--health") && err.contains(&port.to_string()),
        "{err}"
    );
    Ok(())
}

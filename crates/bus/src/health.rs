//! A worker's health endpoint (`--health ADDR`): a tiny HTTP/1.1 responder on tokio for
//! Kubernetes probes and load balancers, no web framework.
//!
//! - `GET /livez`: 200 while the process answers (its async runtime is not wedged);
//! - `GET /readyz`: 200 only while NATS is connected and every stage consumer of the process is
//!   bound (pulls work); 503 with the reason otherwise: still connecting, a standby
//!   integration worker waiting for the ledger, NATS gone, stopping.
//!
//! One request per connection (`Connection: close`); anything else is 404, 405 or 400. The
//! request head is read with a size and time bound, so a slow or hostile client cannot hold a
//! task for long.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use proto::Stage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runtime::Stats;

/// The longest request head read; a longer one is answered 400.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// What readiness is computed from, shared by the worker and its health listener.
#[derive(Default)]
pub struct Readiness {
    client: OnceLock<async_nats::Client>,
    stages: Mutex<Vec<(Stage, Arc<Stats>)>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// The connection whose state counts.
    pub fn set_client(&self, client: async_nats::Client) {
        let _ = self.client.set(client);
    }

    /// A stage runtime the process runs; it counts once its consumer is bound.
    pub fn add_stage(&self, stage: Stage, stats: Arc<Stats>) {
        if let Ok(mut s) = self.stages.lock() {
            s.push((stage, stats));
        }
    }

    /// The worker is draining: not ready for new work any more.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The stages whose consumer is not bound yet (none once all are, or before any started).
    pub fn unbound(&self) -> Vec<&'static str> {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages
            .iter()
            .filter(|(_, s)| !s.bound.load(Ordering::Acquire))
            .map(|(stage, _)| stage.as_str())
            .collect()
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("stopping".into());
        }
        let Some(client) = self.client.get() else {
            return Err("not connected to NATS yet".into());
        };
        match client.connection_state() {
            async_nats::connection::State::Connected => {}
            s => return Err(format!("NATS connection is {s:?}").to_lowercase()),
        }
        let started = self
            .stages
            .lock()
            .map_err(|_| "internal: readiness state poisoned".to_owned())?
            .len();
        if started == 0 {
            return Err("no stage consumer started yet".into());
        }
        let unbound = self.unbound();
        if !unbound.is_empty() {
            return Err(format!("consumer not bound yet: {}", unbound.join(", ")));
        }
        Ok(())
    }
}

/// Binds `addr` (before anything slow, so a bad address is a configuration error at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers probes on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>) {
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait and keep serving.
                tracing::warn!(error = %e, "health listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(conn, &readiness).await {
                tracing::debug!(error = %e, "health probe connection");
            }
        });
    }
}

async fn answer(mut conn: TcpStream, readiness: &Readiness) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let read = tokio::time::timeout(READ_WITHIN, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_HEAD {
                return Ok(());
            }
        }
    })
    .await;
    let (status, body) = match read {
        Ok(Ok(())) if head.len() > MAX_HEAD => (400, "request head too long".to_owned()),
        Ok(Ok(())) => respond(&head, || readiness.check()),
        Ok(Err(e)) => return Err(e),
        Err(_) => (408, "request head not received in time".to_owned()),
    };
    let is_head = head.starts_with(b"HEAD ");
    conn.write_all(&response(status, &body, is_head)).await?;
    conn.shutdown().await
}

/// The status and body for a request head (`ready` is asked only for `/readyz`).
pub fn respond(head: &[u8], ready: impl FnOnce() -> Result<(), String>) -> (u16, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return (400, "request line is not UTF-8".into());
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (400, "malformed request line".into());
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "only HTTP/1.x is served".into());
    }
    // A probe may add a query string (`/readyz?verbose`): the path decides.
    let path = target.split('?').next().unwrap_or_default();
    if !matches!(path, "/livez" | "/readyz") {
        return (404, "not found: ask /livez or /readyz".into());
    }
    if !matches!(method, "GET" | "HEAD") {
        return (405, "only GET and HEAD".into());
    }
    match path {
        "/livez" => (200, "ok".into()),
        _ => match ready() {
            Ok(()) => (200, "ready".into()),
            Err(why) => (503, format!("not ready: {why}")),
        },
    }
}

fn response(status: u16, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let body = format!("{body}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(head: &str, ready: Result<(), String>) -> (u16, String) {
        respond(head.as_bytes(), || ready)
    }

    #[test]
    fn liveness_answers_without_asking_readiness() {
        let r = respond(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", || {
            panic!("liveness must not depend on readiness")
        });
        assert_eq!(r, (200, "ok".into()));
    }

    #[test]
    fn readiness_is_200_or_503_with_the_reason() {
        assert_eq!(ask("GET /readyz HTTP/1.1\r\n\r\n", Ok(())).0, 200);
        let r = ask(
            "GET /readyz?verbose HTTP/1.0\r\n\r\n",
            Err("consumer not bound yet: validate".into()),
        );
        assert_eq!(
            r,
            (503, "not ready: consumer not bound yet: validate".into())
        );
        assert_eq!(ask("HEAD /readyz HTTP/1.1\r\n\r\n", Ok(())).0, 200);
    }

    #[test]
    fn other_requests_are_refused_without_panicking() {
        for (head, status) in [
            ("GET / HTTP/1.1\r\n\r\n", 404),
            ("POST /readyz HTTP/1.1\r\n\r\n", 405),
            ("GET /readyz\r\n\r\n", 400),
            ("GET /readyz HTTP/2\r\n\r\n", 400),
            ("GET  /readyz HTTP/1.1\r\n\r\n", 400),
            ("", 400),
            ("\u{fffd}\r\n\r\n", 400),
        ] {
            let got = ask(head, Ok(())).0;
            assert_eq!(got, status, "{head:?}");
        }
        assert_eq!(respond(b"\xff\xfe /livez HTTP/1.1\r\n", || Ok(())).0, 400);
    }

    #[test]
    fn a_response_has_a_length_and_closes() {
        let r = String::from_utf8(response(503, "not ready: stopping", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("Content-Length: 20\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nnot ready: stopping\n"), "{r}");
        let h = String::from_utf8(response(200, "ok", true)).unwrap();
        assert!(h.ends_with("Connection: close\r\n\r\n"), "{h}");
    }

    #[test]
    fn readiness_needs_a_client_and_bound_consumers() {
        let r = Readiness::default();
        assert_eq!(r.check(), Err("not connected to NATS yet".into()));
        r.set_stopping();
        assert_eq!(r.check(), Err("stopping".into()));
    }
}

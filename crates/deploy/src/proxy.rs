//! The blue-green switch: a small TCP proxy that owns the stable port and sends each new
//! connection to the current backend. `coval proxy` runs it (inside a container on the host
//! network, the coval binary bind-mounted read-only), and `coval run` steers it through a
//! Unix socket in the workspace:
//!
//! - `set ADDR`: new connections go to ADDR from now on (persisted, so a restarted proxy
//!   keeps serving the same version);
//! - `drain ADDR SECS`: wait until no connection to ADDR is open (or SECS pass): `ok 0`, or
//!   `timeout N` with N still open;
//! - `status`: JSON with the backend and the open connections per backend; `ping`: `pong`.
//!
//! Switching is atomic per connection: the backend is read and the connection counted under
//! one lock, so a drain never misses a connection that chose the old backend. A connection
//! whose backend refuses it (a version that just stopped) is retried on the current backend
//! for a short while, so a client sees no error across a switch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;

/// The socket and state file names in the proxy's directory.
pub const SOCKET: &str = "control.sock";
pub const STATE: &str = "backend";

/// How long a connection may wait for a backend that refuses it.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Inner {
    backend: Option<String>,
    active: HashMap<String, usize>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    state_file: PathBuf,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current backend, counted as one more open connection.
    fn claim(&self) -> Option<String> {
        let mut g = self.lock();
        let b = g.backend.clone()?;
        *g.active.entry(b.clone()).or_default() += 1;
        Some(b)
    }

    fn release(&self, b: &str) {
        let mut g = self.lock();
        if let Some(n) = g.active.get_mut(b) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.active.remove(b);
            }
        }
        drop(g);
        self.changed.notify_waiters();
    }

    fn open(&self, b: &str) -> usize {
        self.lock().active.get(b).copied().unwrap_or(0)
    }
}

/// Serve: listen on `listen` for traffic and on `dir/control.sock` for commands, until the
/// process is stopped.
pub async fn serve(listen: &str, dir: &Path) -> std::io::Result<()> {
    let state_file = dir.join(STATE);
    let backend = std::fs::read_to_string(&state_file)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| valid_addr(s));
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            backend,
            active: HashMap::new(),
        }),
        changed: Notify::new(),
        state_file,
    });
    let sock = dir.join(SOCKET);
    let _ = std::fs::remove_file(&sock);
    let control = UnixListener::bind(&sock)?;
    let traffic = TcpListener::bind(listen).await?;
    tracing::info!(%listen, control = %sock.display(), "proxy serving");
    let s = shared.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = control.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                if let Err(e) = command(conn, &s).await {
                    tracing::warn!(error = %e, "control connection failed");
                }
            });
        }
    });
    loop {
        let (conn, _) = match traffic.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let s = shared.clone();
        tokio::spawn(async move { forward(conn, &s).await });
    }
}

async fn forward(mut client: TcpStream, s: &Shared) {
    let _ = client.set_nodelay(true);
    let Some(mut backend) = s.claim() else {
        return;
    };
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let upstream = loop {
        match TcpStream::connect(&backend).await {
            Ok(u) => break Some(u),
            Err(e) => {
                if Instant::now() > deadline {
                    tracing::warn!(%backend, error = %e, "backend refuses connections");
                    break None;
                }
                // The version may just have been switched away from: follow the switch.
                let current = s.lock().backend.clone();
                if let Some(c) = current
                    && c != backend
                {
                    s.release(&backend);
                    match s.claim() {
                        Some(b) => backend = b,
                        None => return,
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    if let Some(mut up) = upstream {
        let _ = up.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    }
    s.release(&backend);
}

fn valid_addr(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
        None => false,
    }
}

async fn command(conn: UnixStream, s: &Shared) -> std::io::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    BufReader::new(r).take_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let reply = match (parts.next(), parts.next(), parts.next()) {
        (Some("ping"), None, None) => "pong".to_owned(),
        (Some("set"), Some(addr), None) if valid_addr(addr) => {
            let tmp = s.state_file.with_extension("tmp");
            std::fs::write(&tmp, format!("{addr}\n"))
                .and_then(|_| std::fs::rename(&tmp, &s.state_file))?;
            s.lock().backend = Some(addr.to_owned());
            tracing::info!(backend = %addr, "switched");
            "ok".to_owned()
        }
        (Some("drain"), Some(addr), Some(secs)) => {
            let secs: u64 = secs.parse().unwrap_or(10).min(3600);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            loop {
                let waiter = s.changed.notified();
                let n = s.open(addr);
                if n == 0 {
                    break "ok 0".to_owned();
                }
                if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                    break format!("timeout {}", s.open(addr));
                }
            }
        }
        (Some("status"), None, None) => {
            let g = s.lock();
            serde_json::json!({"backend": g.backend, "active": g.active}).to_string()
        }
        _ => format!("error: unknown command {:?}", line.trim()),
    };
    w.write_all(reply.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.shutdown().await
}

trait TakeLine {
    async fn take_line(&mut self, out: &mut String) -> std::io::Result<()>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeLine for BufReader<R> {
    /// One line of at most 4 KiB.
    async fn take_line(&mut self, out: &mut String) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut limited = (&mut *self).take(4096);
        let mut buf = String::new();
        AsyncBufReadExt::read_line(&mut BufReader::new(&mut limited), &mut buf).await?;
        *out = buf;
        Ok(())
    }
}

/// Send one command to the proxy whose directory is `dir`; its one-line answer.
pub async fn control(dir: &Path, line: &str, timeout: Duration) -> Result<String, String> {
    let sock = dir.join(SOCKET);
    let work = async {
        let conn = UnixStream::connect(&sock)
            .await
            .map_err(|e| format!("cannot reach the proxy at {}: {e}", sock.display()))?;
        let (r, mut w) = conn.into_split();
        w.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(r)
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.trim().to_owned())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("the proxy at {} did not answer", sock.display()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server(tag: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = c.write_all(tag.as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        (addr, h)
    }

    async fn fetch(addr: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn switches_per_connection_and_drains() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let (blue, _b) = echo_server("blue").await;
        let (green, _g) = echo_server("green").await;
        let d = dir.path().to_owned();
        let l2 = listen.clone();
        tokio::spawn(async move { serve(&l2, &d).await });
        let t = Duration::from_secs(2);
        let mut tries = 0;
        while control(dir.path(), "ping", t).await.is_err() {
            tries += 1;
            assert!(tries < 100, "proxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            control(dir.path(), &format!("set {blue}"), t)
                .await
                .unwrap(),
            "ok"
        );
        assert_eq!(fetch(&listen).await, "blue");
        // A connection held open to blue across the switch.
        let held = TcpStream::connect(&listen).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            control(dir.path(), &format!("set {green}"), t)
                .await
                .unwrap(),
            "ok"
        );
        assert_eq!(fetch(&listen).await, "green");
        assert_eq!(
            control(dir.path(), &format!("drain {blue} 0"), t)
                .await
                .unwrap(),
            "timeout 1"
        );
        drop(held);
        assert_eq!(
            control(dir.path(), &format!("drain {blue} 5"), t)
                .await
                .unwrap(),
            "ok 0"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(STATE))
                .unwrap()
                .trim(),
            green
        );
        let bad = control(dir.path(), "set $(reboot)", t).await.unwrap();
        assert!(bad.starts_with("error"), "{bad}");
    }
}

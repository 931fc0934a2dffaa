//! A minimal HTTP/1.1 GET over loopback for health checks: one connection, `Connection:
//! close`, the status code of the answer. No client library: it must not follow redirects,
//! use proxies from the environment, or pool connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status code `GET path` gets from `addr` (`host:port`) within `timeout`, or why none.
pub async fn get_status(addr: &str, path: &str, timeout: Duration) -> Result<u16, String> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = vec![0u8; 512];
        let mut n = 0;
        while n < 12 {
            let m = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if m == 0 {
                break;
            }
            n += m;
        }
        parse_status(&buf[..n]).ok_or_else(|| "no HTTP status line in the answer".to_owned())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer from {addr} within {} ms", timeout.as_millis()))?
}

/// The full answer to `GET path` (status and body), for tests and the benchmark's client.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut out = vec![];
        s.take(1 << 20)
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let status = parse_status(&out).ok_or("no HTTP status line in the answer")?;
        let text = String::from_utf8_lossy(&out);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer from {addr} within {} ms", timeout.as_millis()))?
}

fn parse_status(b: &[u8]) -> Option<u16> {
    let line = b.split(|&c| c == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        assert_eq!(super::parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(super::parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(super::parse_status(b"SSH-2.0-x"), None);
        assert_eq!(super::parse_status(b""), None);
    }
}

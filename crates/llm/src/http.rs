//! The HTTP plumbing both clients share: building the reqwest client (rustls with the ring
//! provider), sending with the API key, mapping statuses and transport failures to
//! `LlmError`, the retry loop, and reading NDJSON/SSE bodies line by line.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use settings::{LlmApi, LlmSettings};

use crate::LlmError;
use crate::client::{ClientOptions, RetryPolicy, alias_for};

/// Longest line accepted in a streamed body, and longest error body read.
const MAX_LINE: usize = 8 << 20;
const MAX_ERROR_BODY: usize = 64 << 10;
/// Longest non-streamed body read.
const MAX_BODY: usize = 64 << 20;

pub(crate) struct Http {
    client: reqwest::Client,
    /// The base URL without a trailing slash (and without `/v1` for OpenAI servers).
    base: String,
    /// The URL as configured, for messages.
    url: String,
    api: LlmApi,
    pub(crate) opts: ClientOptions,
    api_key_env: String,
    settings: LlmSettings,
}

/// Install ring as the process's rustls provider (reqwest is built without one, so that
/// async-nats's ring and reqwest never bring two providers into one binary).
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Http {
    pub fn new(settings: &LlmSettings, opts: ClientOptions) -> Result<Http, LlmError> {
        install_crypto_provider();
        let url = settings.server.url.trim().to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(LlmError::Setup {
                reason: format!(
                    "server url `{url}` is not an http(s) URL; set server.url or COVAL_LLM_URL, e.g. http://127.0.0.1:11434"
                ),
            });
        }
        let mut base = url.trim_end_matches('/').to_owned();
        if settings.server.api == LlmApi::Openai
            && let Some(b) = base.strip_suffix("/v1")
        {
            base = b.to_owned();
        }
        let mut builder = reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.timeout)
            .user_agent(concat!("coval/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base) {
            // A proxy from the environment must not capture a local model server.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| LlmError::Setup { reason: chain(&e) })?;
        Ok(Http {
            client,
            base,
            url,
            api: settings.server.api,
            opts,
            api_key_env: settings.server.api_key_env.clone(),
            settings: settings.clone(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn alias_for(&self, model: &str) -> String {
        alias_for(&self.settings, model)
    }

    /// Send one request; a non-2xx status becomes the matching error. `model` names the
    /// model the request is about, so a 404 can say that it is missing.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        model: Option<&str>,
    ) -> Result<reqwest::Response, LlmError> {
        let endpoint = format!("{}{}", self.base, path);
        let mut req = self.client.request(method, &endpoint);
        if let Some(key) = &self.opts.api_key {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    LlmError::Setup {
                        reason: format!(
                            "the API key in {} contains characters not allowed in an HTTP header",
                            self.api_key_env
                        ),
                    }
                })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        tracing::debug!(%endpoint, model, "model server request");
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let text = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
        Err(self.status_error(status, retry_after, &text, model))
    }

    fn status_error(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &str,
        model: Option<&str>,
    ) -> LlmError {
        let message = self.redact(&error_message(body));
        let url = self.url.clone();
        match status.as_u16() {
            401 | 403 => LlmError::Unauthorized {
                url,
                status: status.as_u16(),
                env: self.api_key_env.clone(),
            },
            429 => LlmError::RateLimited { url, retry_after },
            404 if model.is_some() && mentions_missing_model(&message) => {
                let model = model.unwrap_or_default().to_owned();
                match self.api {
                    LlmApi::Ollama => LlmError::NotPulled {
                        alias: self.alias_for(&model),
                        model,
                    },
                    LlmApi::Openai => LlmError::NotServed { model, url },
                }
            }
            code => LlmError::Status {
                url,
                status: code,
                message,
            },
        }
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> LlmError {
        let reason = self.redact(&chain(e));
        if e.is_connect() {
            LlmError::NoServer {
                url: self.url.clone(),
                reason,
            }
        } else if e.is_timeout() {
            LlmError::Timeout {
                url: self.url.clone(),
                after: self.opts.timeout,
            }
        } else if e.is_builder() {
            LlmError::Setup { reason }
        } else {
            // The connection closed or broke while sending or reading.
            LlmError::Stream {
                url: self.url.clone(),
                reason,
            }
        }
    }

    pub fn malformed(&self, reason: impl Into<String>) -> LlmError {
        LlmError::Malformed {
            url: self.url.clone(),
            reason: self.redact(&reason.into()),
        }
    }

    pub fn broken(&self, reason: impl Into<String>) -> LlmError {
        LlmError::Stream {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    pub fn remote(&self, message: impl Into<String>) -> LlmError {
        LlmError::Remote {
            url: self.url.clone(),
            message: self.redact(&message.into()),
        }
    }

    /// Never let the key into a message, even if a server echoes it.
    fn redact(&self, s: &str) -> String {
        match &self.opts.api_key {
            Some(k) if !k.expose().is_empty() => s.replace(k.expose(), "[redacted]"),
            _ => s.to_owned(),
        }
    }

    /// Run `attempt` under the overall timeout.
    pub async fn timed<T>(
        &self,
        attempt: impl Future<Output = Result<T, LlmError>>,
    ) -> Result<T, LlmError> {
        match tokio::time::timeout(self.opts.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout {
                url: self.url.clone(),
                after: self.opts.timeout,
            }),
        }
    }

    /// Read a whole (non-streamed) body as JSON.
    pub async fn json_body(&self, resp: reqwest::Response) -> Result<Value, LlmError> {
        let text = read_capped(resp, MAX_BODY)
            .await
            .map_err(|e| self.transport_error(&e))?;
        serde_json::from_str(&text)
            .map_err(|e| self.malformed(format!("body is not JSON ({e}): {}", snippet(&text))))
    }

    pub fn lines(&self, resp: reqwest::Response) -> Lines<'_> {
        Lines {
            http: self,
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            eof: false,
        }
    }
}

/// Counts attempts and decides whether, and after how long, to try again.
pub(crate) struct Tries<'p> {
    policy: &'p RetryPolicy,
    pub attempt: u32,
    connect_failures: u32,
}

impl<'p> Tries<'p> {
    pub fn new(policy: &'p RetryPolicy) -> Tries<'p> {
        Tries {
            policy,
            attempt: 1,
            connect_failures: 0,
        }
    }

    /// After a failed attempt: wait and return `Ok` to try again, or give the error back.
    pub async fn again(&mut self, e: LlmError, what: &str) -> Result<(), LlmError> {
        let p = self.policy;
        let delay = match &e {
            LlmError::NoServer { .. } => {
                self.connect_failures += 1;
                if self.connect_failures > p.connect_retries {
                    return Err(e);
                }
                p.connect_delay
            }
            LlmError::RateLimited {
                retry_after: Some(d),
                ..
            } => {
                if *d > p.max_retry_after {
                    return Err(e);
                }
                *d
            }
            LlmError::RateLimited { .. } | LlmError::Stream { .. } | LlmError::Remote { .. } => {
                p.backoff(self.attempt)
            }
            LlmError::Status { status, .. } if *status >= 500 => p.backoff(self.attempt),
            _ => return Err(e),
        };
        if self.attempt >= p.max_attempts {
            return Err(e);
        }
        tracing::warn!(what, attempt = self.attempt, delay_ms = delay.as_millis() as u64, error = %e, "model server call failed, retrying");
        tokio::time::sleep(delay).await;
        self.attempt += 1;
        Ok(())
    }
}

/// A streamed body split into lines (`\n`, with any `\r` removed).
pub(crate) struct Lines<'h> {
    http: &'h Http,
    stream: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    eof: bool,
}

impl Lines<'_> {
    /// The next line, `None` at the end of the body.
    pub async fn next_line(&mut self) -> Result<Option<String>, LlmError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned(),
                ));
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > MAX_LINE {
                        return Err(self.http.malformed(format!(
                            "a streamed line is longer than {MAX_LINE} bytes"
                        )));
                    }
                }
                Some(Err(e)) => return Err(self.http.transport_error(&e)),
                None => self.eof = true,
            }
        }
    }
}

/// Read at most `cap` bytes of a body as text.
async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<String, reqwest::Error> {
    let mut stream = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `Retry-After` in seconds (the HTTP-date form is rare from model servers and ignored).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

/// The message in an error body: Ollama's `{"error":"..."}`, OpenAI's
/// `{"error":{"message":"..."}}`, else the text itself, shortened.
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body)
        && let Some(m) = error_in(&v)
    {
        return snippet(&m);
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty body)".to_owned()
    } else {
        snippet(t)
    }
}

/// The error carried by a JSON value, if it carries one.
pub(crate) fn error_in(v: &Value) -> Option<String> {
    match v.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => Some(
            o.get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
        ),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn mentions_missing_model(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("does not exist") || m.contains("model_not_found")
}

/// At most 300 characters of `s`, on one line.
pub(crate) fn snippet(s: &str) -> String {
    let one_line: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = one_line.chars().take(300).collect();
    if one_line.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// An error with its sources, which is where reqwest says what really happened.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn is_loopback(base: &str) -> bool {
    let rest = base
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(h) => h.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(
            error_message(r#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"auth"}}"#),
            "bad key"
        );
        assert_eq!(error_message("  "), "(empty body)");
        assert!(error_message(&"x".repeat(1000)).chars().count() <= 301);
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:11434"));
        assert!(is_loopback("http://localhost:8080/x"));
        assert!(is_loopback("http://[::1]:8080"));
        assert!(!is_loopback("https://api.example.com"));
    }
}

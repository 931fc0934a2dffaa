//! `ProtocolServer`: a scripted model server on 127.0.0.1 for tests (feature `testing`).
//!
//! Hand-written HTTP/1.1 over std's `TcpListener`, one thread per connection, every response
//! `Connection: close`. It speaks Ollama (`/api/chat` NDJSON or whole, `/api/tags`,
//! `/api/pull` progress, `/api/version`) and OpenAI (`/v1/chat/completions` SSE or whole,
//! `/v1/models`), replaying a queue of scripted [`Reply`]s per path and recording every
//! request, so tests can assert what a client sent. Replies can be delayed, trickled, cut
//! off mid-stream, malformed, or be the error statuses servers really send.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use settings::{LlmApi, LlmServer, LlmSettings, ModelConfig};

use crate::client::{ClientOptions, RetryPolicy};

/// Token counts the scripted chat replies report.
pub const PROMPT_TOKENS: u64 = 321;
pub const COMPLETION_TOKENS: u64 = 54;
/// Ollama's `total_duration` in the scripted chat replies (nanoseconds).
pub const TOTAL_DURATION_NS: u64 = 1_500_000_000;
/// The variable `ProtocolServer::settings` names for the API key.
pub const API_KEY_ENV: &str = "COVAL_TEST_LLM_API_KEY";

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Wait before sending anything.
    pub first_byte_delay: Duration,
    /// Wait between chunks of a streamed body.
    pub chunk_delay: Duration,
    /// Close the connection after this many chunks (or bytes, for a whole body).
    pub drop_after: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum Body {
    /// Sent with `Content-Length`.
    Whole(String),
    /// Sent with `Transfer-Encoding: chunked`, one HTTP chunk each.
    Chunks(Vec<String>),
}

fn pieces(content: &str) -> Vec<String> {
    // Split on char boundaries into short pieces, as a model streams tokens.
    let chars: Vec<char> = content.chars().collect();
    chars.chunks(7).map(|c| c.iter().collect()).collect()
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: Body) -> Reply {
        Reply {
            status,
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body,
            first_byte_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            drop_after: None,
        }
    }

    pub fn json(status: u16, v: Value) -> Reply {
        Reply::new(status, "application/json", Body::Whole(v.to_string()))
    }

    /// Any body, as given (e.g. malformed JSON).
    pub fn raw(status: u16, content_type: &str, body: &str) -> Reply {
        Reply::new(status, content_type, Body::Whole(body.to_owned()))
    }

    /// NDJSON lines as given, one chunk each (a newline is added to each).
    pub fn ndjson(lines: &[&str]) -> Reply {
        Reply::new(
            200,
            "application/x-ndjson",
            Body::Chunks(lines.iter().map(|l| format!("{l}\n")).collect()),
        )
    }

    /// SSE `data:` payloads as given, one event per chunk (no `[DONE]` added).
    pub fn sse(datas: &[&str]) -> Reply {
        Reply::new(
            200,
            "text/event-stream",
            Body::Chunks(datas.iter().map(|d| format!("data: {d}\n\n")).collect()),
        )
    }

    /// Ollama `/api/chat` streamed: content pieces, then the `done` line with counts.
    pub fn ollama_chat(content: &str) -> Reply {
        let mut chunks: Vec<String> = pieces(content)
            .into_iter()
            .map(|p| {
                let line = json!({"model": "test-model", "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": p}, "done": false});
                format!("{line}\n")
            })
            .collect();
        let last = json!({"model": "test-model", "created_at": "2026-01-01T00:00:01Z",
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
            "total_duration": TOTAL_DURATION_NS, "load_duration": 1000, "prompt_eval_count": PROMPT_TOKENS,
            "prompt_eval_duration": 1000, "eval_count": COMPLETION_TOKENS, "eval_duration": 1000});
        chunks.push(format!("{last}\n"));
        Reply::new(200, "application/x-ndjson", Body::Chunks(chunks))
    }

    /// Ollama `/api/chat` with `stream: false`.
    pub fn ollama_chat_whole(content: &str) -> Reply {
        Reply::json(
            200,
            json!({"model": "test-model", "created_at": "2026-01-01T00:00:01Z",
                "message": {"role": "assistant", "content": content}, "done": true, "done_reason": "stop",
                "total_duration": TOTAL_DURATION_NS, "prompt_eval_count": PROMPT_TOKENS, "eval_count": COMPLETION_TOKENS}),
        )
    }

    /// OpenAI `/v1/chat/completions` streamed as SSE, with a usage event and `[DONE]`.
    pub fn openai_chat(content: &str) -> Reply {
        let mut chunks: Vec<String> = Vec::new();
        for (i, p) in pieces(content).into_iter().enumerate() {
            let mut delta = json!({"content": p});
            if i == 0 {
                delta["role"] = json!("assistant");
            }
            let ev = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "test-model", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
            chunks.push(format!("data: {ev}\n\n"));
        }
        let stop = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "test-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        chunks.push(format!("data: {stop}\n\n"));
        let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "test-model", "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}});
        chunks.push(format!(": keep-alive comment\n\ndata: {usage}\n\n"));
        chunks.push("data: [DONE]\n\n".to_owned());
        Reply::new(200, "text/event-stream", Body::Chunks(chunks))
    }

    /// OpenAI `/v1/chat/completions` with `stream: false`.
    pub fn openai_chat_whole(content: &str) -> Reply {
        Reply::json(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}}),
        )
    }

    /// Ollama `/api/tags` listing these models.
    pub fn ollama_tags(names: &[&str]) -> Reply {
        let models: Vec<Value> = names
            .iter()
            .map(|n| {
                json!({"name": n, "model": n, "modified_at": "2026-01-01T00:00:00Z",
                "size": 4_683_087_332u64, "digest": "sha256:0123", "details": {"format": "gguf"}})
            })
            .collect();
        Reply::json(200, json!({"models": models}))
    }

    /// OpenAI `/v1/models` listing these ids.
    pub fn openai_models(ids: &[&str]) -> Reply {
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 1, "owned_by": "test"}))
            .collect();
        Reply::json(200, json!({"object": "list", "data": data}))
    }

    /// Ollama `/api/pull` progress: manifest, one layer in `steps` steps of `total` bytes,
    /// verification, `success`.
    pub fn ollama_pull(total: u64, steps: u64) -> Reply {
        let mut lines = vec![json!({"status": "pulling manifest"}).to_string()];
        let steps = steps.max(1);
        for s in 0..=steps {
            lines.push(
                json!({"status": "pulling 6a0746a1ec1a", "digest": "sha256:6a0746a1ec1a",
                    "total": total, "completed": total * s / steps})
                .to_string(),
            );
        }
        lines.push(json!({"status": "verifying sha256 digest"}).to_string());
        lines.push(json!({"status": "writing manifest"}).to_string());
        lines.push(json!({"status": "success"}).to_string());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        Reply::ndjson(&refs)
    }

    pub fn ollama_version(v: &str) -> Reply {
        Reply::json(200, json!({"version": v}))
    }

    /// What Ollama answers for a model it does not have.
    pub fn ollama_model_not_found(model: &str) -> Reply {
        Reply::json(
            404,
            json!({"error": format!("model \"{model}\" not found, try pulling it first")}),
        )
    }

    /// What OpenAI-compatible servers answer for an unknown model.
    pub fn openai_model_not_found(model: &str) -> Reply {
        Reply::json(
            404,
            json!({"error": {"message": format!("The model `{model}` does not exist or you do not have access to it."),
                "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
        )
    }

    pub fn server_error() -> Reply {
        Reply::json(500, json!({"error": "llama runner process has terminated"}))
    }

    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::json(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}),
        )
        .header("Retry-After", &retry_after_secs.to_string())
    }

    pub fn unauthorized() -> Reply {
        Reply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                "code": "invalid_api_key"}}),
        )
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.first_byte_delay = d;
        self
    }

    pub fn chunk_delay(mut self, d: Duration) -> Reply {
        self.chunk_delay = d;
        self
    }

    /// Close the connection after `n` chunks (or `n` bytes of a whole body).
    pub fn drop_after(mut self, n: usize) -> Reply {
        self.drop_after = Some(n);
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Reply>>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A scripted model server, stopped on drop.
pub struct ProtocolServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ProtocolServer {
    /// Listen on 127.0.0.1 on a free port.
    pub fn start() -> io::Result<ProtocolServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("protocol-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("protocol-conn".into())
                        .spawn(move || {
                            let _ = serve(conn, &s);
                        });
                }
            })?;
        Ok(ProtocolServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue a reply for requests to `path` (e.g. `/api/chat`); replies are used in order.
    pub fn push(&self, path: &str, reply: Reply) {
        self.shared
            .lock()
            .queues
            .entry(path.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Model settings pointing at this server: aliases `qwen` (qwen2.5-coder:7b) and
    /// `mistral` (mistral:7b), `timeout_secs` 5, `auto_pull` on, key variable
    /// [`API_KEY_ENV`].
    pub fn settings(&self, api: LlmApi) -> LlmSettings {
        let model = |name: &str, ctx: u32| ModelConfig {
            model_name: name.to_owned(),
            max_tokens: 1024,
            temperature: 0.2,
            base_capability: 0.7,
            context_window: ctx,
            retry_attempts: 3,
        };
        LlmSettings {
            default_model: "qwen".into(),
            server: LlmServer {
                url: self.url(),
                api,
                api_key_env: API_KEY_ENV.into(),
                timeout_secs: 5,
                auto_pull: true,
            },
            models: BTreeMap::from([
                ("qwen".to_owned(), model("qwen2.5-coder:7b", 32768)),
                ("mistral".to_owned(), model("mistral:7b", 8192)),
            ]),
        }
    }

    /// Client options for tests: a 5 s timeout and retries 10 ms apart.
    pub fn fast_options(&self) -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            api_key: None,
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                connect_retries: 1,
                connect_delay: Duration::from_millis(10),
                max_retry_after: Duration::from_secs(2),
            },
        }
    }
}

impl Drop for ProtocolServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || header_bytes > 64 << 10 {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(&mut reader)?
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            .min(64 << 20);
        let mut buf = vec![0; len];
        reader.read_exact(&mut buf)?;
        buf
    };
    let reply = {
        let mut st = shared.lock();
        st.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        st.queues.get_mut(&path).and_then(VecDeque::pop_front)
    };
    let reply = reply.unwrap_or_else(|| match path.as_str() {
        "/api/version" => Reply::ollama_version("0.0.0-protocol-server"),
        _ => Reply::json(
            404,
            json!({"error": format!("protocol server: no scripted reply for {method} {path}")}),
        ),
    });
    write_reply(conn, &reply)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if n == 0 {
            let mut end = String::new();
            r.read_line(&mut end)?;
            return Ok(out);
        }
        let mut buf = vec![0; n.min(64 << 20)];
        r.read_exact(&mut buf)?;
        out.extend_from_slice(&buf);
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_reply(mut conn: TcpStream, reply: &Reply) -> io::Result<()> {
    if !reply.first_byte_delay.is_zero() {
        std::thread::sleep(reply.first_byte_delay);
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &reply.body {
        Body::Whole(b) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
            conn.write_all(head.as_bytes())?;
            match reply.drop_after {
                Some(n) => {
                    conn.write_all(&b.as_bytes()[..n.min(b.len())])?;
                    conn.flush()?;
                    return conn.shutdown(Shutdown::Both);
                }
                None => conn.write_all(b.as_bytes())?,
            }
        }
        Body::Chunks(chunks) => {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            conn.write_all(head.as_bytes())?;
            conn.flush()?;
            for (i, c) in chunks.iter().enumerate() {
                if reply.drop_after == Some(i) {
                    return conn.shutdown(Shutdown::Both);
                }
                if i > 0 && !reply.chunk_delay.is_zero() {
                    std::thread::sleep(reply.chunk_delay);
                }
                if c.is_empty() {
                    continue;
                }
                conn.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                conn.write_all(c.as_bytes())?;
                conn.write_all(b"\r\n")?;
                conn.flush()?;
            }
            if reply.drop_after.is_some_and(|n| n >= chunks.len()) {
                return conn.shutdown(Shutdown::Both);
            }
            conn.write_all(b"0\r\n\r\n")?;
        }
    }
    conn.flush()?;
    conn.shutdown(Shutdown::Write)
}

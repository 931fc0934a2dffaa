//! Both clients against the scripted protocol server: chat streamed and whole, listing,
//! pulling, options and headers sent, every error kind and its message, retries, timeouts,
//! broken and malformed streams.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm::progress::PullReporter;
use llm::testing::{API_KEY_ENV, COMPLETION_TOKENS, PROMPT_TOKENS, ProtocolServer, Reply};
use llm::{
    ApiKey, ChatMessage, ChatRequest, ClientOptions, LlmError, ModelClient, PullProgress,
    connect_with, ensure_model, model_config,
};
use serde_json::json;
use settings::{LlmApi, LlmSettings};

const ANSWER: &str = "The list may be empty.\n\n```diff\n--- a/app/calc.py\n+++ b/app/calc.py\n@@ -1,1 +1,1 @@\n-x\n+y\n```\n";

fn server() -> ProtocolServer {
    ProtocolServer::start().expect("protocol server")
}

fn client(s: &ProtocolServer, api: LlmApi) -> Box<dyn ModelClient> {
    connect_with(&s.settings(api), s.fast_options()).expect("client")
}

fn client_with(settings: &LlmSettings, opts: ClientOptions) -> Box<dyn ModelClient> {
    connect_with(settings, opts).expect("client")
}

fn request(s: &ProtocolServer, alias: &str) -> ChatRequest {
    let settings = s.settings(LlmApi::Ollama);
    let m = model_config(&settings, alias).expect("alias");
    ChatRequest::new(
        m,
        vec![
            ChatMessage::system("you fix code"),
            ChatMessage::user("fix it"),
        ],
    )
}

fn single_attempt(s: &ProtocolServer) -> ClientOptions {
    let mut o = s.fast_options();
    o.retry.max_attempts = 1;
    o
}

#[tokio::test]
async fn ollama_chat_streams_and_always_sends_num_ctx() {
    let s = server();
    s.push("/api/chat", Reply::ollama_chat(ANSWER));
    let c = client(&s, LlmApi::Ollama);
    let r = c.chat(&request(&s, "qwen")).await.expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.usage.prompt_tokens, PROMPT_TOKENS);
    assert_eq!(r.usage.completion_tokens, COMPLETION_TOKENS);
    assert_eq!(r.server_duration_ms, Some(1500));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.attempts, 1);
    assert!(!r.truncated());

    let reqs = s.requests_to("/api/chat");
    assert_eq!(reqs.len(), 1);
    let body = reqs[0].json();
    assert_eq!(body["model"], "qwen2.5-coder:7b");
    assert_eq!(body["stream"], true);
    assert_eq!(body["options"]["num_ctx"], 32768);
    assert_eq!(body["options"]["num_predict"], 1024);
    assert_eq!(body["options"]["temperature"], 0.2);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "you fix code"})
    );
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(reqs[0].header("authorization"), None);
}

#[tokio::test]
async fn ollama_chat_without_streaming() {
    let s = server();
    s.push("/api/chat", Reply::ollama_chat_whole(ANSWER));
    let c = client(&s, LlmApi::Ollama);
    let r = c
        .chat(&request(&s, "mistral").streaming(false))
        .await
        .expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.usage.completion_tokens, COMPLETION_TOKENS);
    let body = s.requests_to("/api/chat")[0].json();
    assert_eq!(body["stream"], false);
    assert_eq!(body["model"], "mistral:7b");
    assert_eq!(body["options"]["num_ctx"], 8192);
}

#[tokio::test]
async fn ollama_reports_a_length_cut() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ndjson(&[
            r#"{"message":{"role":"assistant","content":"--- a/x"},"done":false}"#,
            r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","eval_count":1024}"#,
        ]),
    );
    let r = client(&s, LlmApi::Ollama)
        .chat(&request(&s, "qwen"))
        .await
        .expect("chat");
    assert!(r.truncated());
    assert_eq!(r.usage.completion_tokens, 1024);
    assert_eq!(r.usage.prompt_tokens, 0);
}

#[tokio::test]
async fn openai_chat_streams_sse_with_usage_and_bearer_key() {
    let s = server();
    s.push("/v1/chat/completions", Reply::openai_chat(ANSWER));
    let settings = s.settings(LlmApi::Openai);
    let mut opts = s.fast_options();
    opts.api_key = Some(ApiKey::new("sk-test-secret-123"));
    let c = client_with(&settings, opts);
    let r = c.chat(&request(&s, "qwen")).await.expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.usage.prompt_tokens, PROMPT_TOKENS);
    assert_eq!(r.usage.completion_tokens, COMPLETION_TOKENS);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.model, "test-model");
    let req = &s.requests_to("/v1/chat/completions")[0];
    assert_eq!(
        req.header("authorization"),
        Some("Bearer sk-test-secret-123")
    );
    let body = req.json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["model"], "qwen2.5-coder:7b");
}

#[tokio::test]
async fn openai_chat_without_streaming_and_with_v1_in_the_url() {
    let s = server();
    s.push("/v1/chat/completions", Reply::openai_chat_whole(ANSWER));
    let mut settings = s.settings(LlmApi::Openai);
    settings.server.url = format!("{}/v1/", s.url());
    let c = client_with(&settings, s.fast_options());
    let r = c
        .chat(&request(&s, "qwen").streaming(false))
        .await
        .expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.usage.prompt_tokens, PROMPT_TOKENS);
    let body = s.requests_to("/v1/chat/completions")[0].json();
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
}

#[tokio::test]
async fn listing_models() {
    let s = server();
    s.push(
        "/api/tags",
        Reply::ollama_tags(&["qwen2.5-coder:7b", "mistral:latest"]),
    );
    s.push("/v1/models", Reply::openai_models(&["qwen2.5-coder:7b"]));
    let names: Vec<String> = client(&s, LlmApi::Ollama)
        .list()
        .await
        .expect("tags")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["qwen2.5-coder:7b", "mistral:latest"]);
    let models = client(&s, LlmApi::Openai).list().await.expect("models");
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, "qwen2.5-coder:7b");
}

#[tokio::test]
async fn ollama_version() {
    let s = server();
    s.push("/api/version", Reply::ollama_version("0.6.5"));
    let c = llm::ollama::OllamaClient::new(&s.settings(LlmApi::Ollama), s.fast_options())
        .expect("client");
    assert_eq!(c.version().await.expect("version"), "0.6.5");
}

/// A writer tests can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn pull_reports_progress() {
    let s = server();
    s.push("/api/pull", Reply::ollama_pull(1000, 4));
    let c = client(&s, LlmApi::Ollama);
    let mut seen: Vec<PullProgress> = Vec::new();
    let mut cb = |p: &PullProgress| seen.push(p.clone());
    c.pull("qwen2.5-coder:7b", &mut cb).await.expect("pull");
    assert_eq!(
        seen.first().map(|p| p.status.as_str()),
        Some("pulling manifest")
    );
    assert_eq!(seen.last().map(|p| p.status.as_str()), Some("success"));
    let completed: Vec<u64> = seen.iter().filter_map(|p| p.completed).collect();
    assert_eq!(completed, [0, 250, 500, 750, 1000]);
    assert!(
        seen.iter()
            .filter(|p| p.total.is_some())
            .all(|p| p.total == Some(1000))
    );
    let body = s.requests_to("/api/pull")[0].json();
    assert_eq!(body["model"], "qwen2.5-coder:7b");
    assert_eq!(body["stream"], true);

    // Plain lines for logs: each status once, progress in 10% steps.
    let out = Shared::default();
    let mut rep = PullReporter::plain("qwen2.5-coder:7b", Box::new(out.clone()));
    for p in &seen {
        rep.update(p);
    }
    rep.finish();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("qwen2.5-coder:7b: pulling manifest\n"),
        "{text}"
    );
    assert!(text.contains("100% (1000 of 1000 bytes)"), "{text}");
    assert!(text.contains("qwen2.5-coder:7b: success\n"), "{text}");
    assert_eq!(text.matches("50%").count(), 1, "{text}");
}

#[tokio::test]
async fn pull_error_line_is_a_pull_error() {
    let s = server();
    s.push(
        "/api/pull",
        Reply::ndjson(&[
            r#"{"status":"pulling manifest"}"#,
            r#"{"error":"pull model manifest: file does not exist"}"#,
        ]),
    );
    let mut cb = |_: &PullProgress| {};
    let e = client(&s, LlmApi::Ollama)
        .pull("qwen9:1b", &mut cb)
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Pull { .. }), "{e:?}");
    assert!(e.to_string().contains("file does not exist"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn ensure_model_pulls_when_missing_and_auto_pull_is_on() {
    let s = server();
    s.push("/api/tags", Reply::ollama_tags(&["mistral:7b"]));
    s.push("/api/pull", Reply::ollama_pull(100, 2));
    let settings = s.settings(LlmApi::Ollama);
    let c = client(&s, LlmApi::Ollama);
    let mut n = 0;
    let mut cb = |_: &PullProgress| n += 1;
    let m = ensure_model(c.as_ref(), &settings, "qwen", &mut cb)
        .await
        .expect("ensure");
    assert_eq!(m.model_name, "qwen2.5-coder:7b");
    assert!(n > 3);
    assert_eq!(
        s.requests_to("/api/pull")[0].json()["model"],
        "qwen2.5-coder:7b"
    );

    // Present: no pull.
    s.push("/api/tags", Reply::ollama_tags(&["mistral:7b"]));
    ensure_model(c.as_ref(), &settings, "mistral", &mut |_| {})
        .await
        .expect("present");
    assert_eq!(s.requests_to("/api/pull").len(), 1);
}

#[tokio::test]
async fn ensure_model_without_auto_pull_says_how_to_pull() {
    let s = server();
    s.push("/api/tags", Reply::ollama_tags(&[]));
    let mut settings = s.settings(LlmApi::Ollama);
    settings.server.auto_pull = false;
    let c = client_with(&settings, s.fast_options());
    let e = ensure_model(c.as_ref(), &settings, "qwen", &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "model qwen2.5-coder:7b not pulled: run `coval models pull qwen`"
    );
    let e = ensure_model(c.as_ref(), &settings, "nope", &mut |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("use one of mistral, qwen"), "{e}");

    // OpenAI servers cannot pull: the error says so.
    s.push("/v1/models", Reply::openai_models(&["other"]));
    let settings = s.settings(LlmApi::Openai);
    let c = client_with(&settings, s.fast_options());
    let e = ensure_model(c.as_ref(), &settings, "qwen", &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::NotServed { .. }), "{e:?}");
    let e = c.pull("qwen2.5-coder:7b", &mut |_| {}).await.unwrap_err();
    assert!(matches!(e, LlmError::Unsupported { .. }), "{e:?}");
}

#[tokio::test]
async fn model_not_found_names_the_pull_command() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ollama_model_not_found("qwen2.5-coder:7b"),
    );
    let e = client(&s, LlmApi::Ollama)
        .chat(&request(&s, "qwen"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "model qwen2.5-coder:7b not pulled: run `coval models pull qwen`"
    );
    assert!(!e.is_retryable());
    assert_eq!(s.requests_to("/api/chat").len(), 1);

    s.push(
        "/v1/chat/completions",
        Reply::openai_model_not_found("qwen2.5-coder:7b"),
    );
    let e = client(&s, LlmApi::Openai)
        .chat(&request(&s, "qwen"))
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::NotServed { .. }), "{e:?}");
}

#[tokio::test]
async fn no_server_says_what_to_start_and_retries_once_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = server();
    let mut settings = s.settings(LlmApi::Ollama);
    settings.server.url = format!("http://127.0.0.1:{port}");
    let mut opts = s.fast_options();
    opts.retry.connect_delay = Duration::from_millis(200);
    opts.retry.base_delay = Duration::from_secs(3);
    let c = client_with(&settings, opts);
    let started = Instant::now();
    let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, LlmError::NoServer { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "no model server at http://127.0.0.1:{port}: start `ollama serve` or set COVAL_LLM_URL"
        )),
        "{e}"
    );
    assert!(e.is_retryable() && e.is_unreachable());
    // One quick retry (200 ms), not the 3 s backoff of other transient errors.
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn bad_api_key_is_not_retried_and_never_shown() {
    let s = server();
    s.push(
        "/v1/chat/completions",
        Reply::json(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-live-abcdef"}}),
        ),
    );
    let mut opts = s.fast_options();
    opts.api_key = Some(ApiKey::new("sk-live-abcdef"));
    assert!(!format!("{opts:?}").contains("sk-live"));
    let c = client_with(&s.settings(LlmApi::Openai), opts);
    let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
    assert!(
        matches!(e, LlmError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("set {API_KEY_ENV} to a valid key")),
        "{msg}"
    );
    assert!(
        !msg.contains("sk-live") && !format!("{e:?}").contains("sk-live"),
        "{msg}"
    );
    assert!(!e.is_retryable());
    assert_eq!(s.requests().len(), 1);

    // A server echoing the key in another error gets it redacted.
    s.push(
        "/v1/chat/completions",
        Reply::json(
            400,
            json!({"error": {"message": "bad request for key sk-live-abcdef"}}),
        ),
    );
    let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
    assert!(
        e.to_string().contains("[redacted]") && !e.to_string().contains("sk-live"),
        "{e}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn retries_after_a_500() {
    let s = server();
    s.push("/api/chat", Reply::server_error());
    s.push("/api/chat", Reply::ollama_chat(ANSWER));
    let r = client(&s, LlmApi::Ollama)
        .chat(&request(&s, "qwen"))
        .await
        .expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.attempts, 2);
    assert_eq!(s.requests_to("/api/chat").len(), 2);
}

#[tokio::test]
async fn gives_up_after_max_attempts_of_500() {
    let s = server();
    for _ in 0..5 {
        s.push("/api/chat", Reply::server_error());
    }
    let e = client(&s, LlmApi::Ollama)
        .chat(&request(&s, "qwen"))
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Status { status: 500, .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("llama runner process has terminated"),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_eq!(s.requests_to("/api/chat").len(), 4);
}

#[tokio::test]
async fn retries_after_a_429_honouring_retry_after() {
    let s = server();
    s.push("/v1/chat/completions", Reply::rate_limited(1));
    s.push("/v1/chat/completions", Reply::openai_chat(ANSWER));
    let started = Instant::now();
    let r = client(&s, LlmApi::Openai)
        .chat(&request(&s, "qwen"))
        .await
        .expect("chat");
    // The backoff is 10 ms: only Retry-After explains the wait.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.attempts, 2);
    assert!(r.usage.duration_ms >= 1000);

    // A wait longer than the policy allows goes back to the caller, with the delay.
    s.push("/v1/chat/completions", Reply::rate_limited(120));
    let e = client(&s, LlmApi::Openai)
        .chat(&request(&s, "qwen"))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    assert!(e.is_retryable());
    assert!(e.to_string().contains("HTTP 429"), "{e}");
    assert_eq!(s.requests_to("/v1/chat/completions").len(), 3);
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ollama_chat(ANSWER).delay(Duration::from_secs(3)),
    );
    let mut opts = s.fast_options();
    opts.timeout = Duration::from_millis(300);
    let c = client_with(&s.settings(LlmApi::Ollama), opts);
    let started = Instant::now();
    let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
    assert!(matches!(e, LlmError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("raise server.timeout_secs"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(e.is_retryable());
    assert_eq!(s.requests_to("/api/chat").len(), 1);
}

#[tokio::test]
async fn slow_chunks_within_the_timeout_arrive_whole() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ollama_chat("a short answer").chunk_delay(Duration::from_millis(30)),
    );
    s.push(
        "/v1/chat/completions",
        Reply::openai_chat("a short answer").chunk_delay(Duration::from_millis(30)),
    );
    for api in [LlmApi::Ollama, LlmApi::Openai] {
        let r = client(&s, api)
            .chat(&request(&s, "qwen"))
            .await
            .expect("chat");
        assert_eq!(r.content, "a short answer");
    }
}

#[tokio::test]
async fn a_stream_dropped_midway_is_retried() {
    let s = server();
    s.push("/api/chat", Reply::ollama_chat(ANSWER).drop_after(3));
    s.push("/api/chat", Reply::ollama_chat(ANSWER));
    let r = client(&s, LlmApi::Ollama)
        .chat(&request(&s, "qwen"))
        .await
        .expect("chat");
    assert_eq!(r.content, ANSWER);
    assert_eq!(r.attempts, 2);
}

#[tokio::test]
async fn a_dropped_stream_is_a_stream_error() {
    let s = server();
    s.push("/api/chat", Reply::ollama_chat(ANSWER).drop_after(2));
    s.push(
        "/v1/chat/completions",
        Reply::openai_chat(ANSWER).drop_after(2),
    );
    // A clean end without the final line is broken too.
    s.push(
        "/api/chat",
        Reply::ndjson(&[r#"{"message":{"role":"assistant","content":"x"},"done":false}"#]),
    );
    s.push(
        "/v1/chat/completions",
        Reply::sse(&[r#"{"choices":[{"delta":{"content":"x"}}]}"#]),
    );
    for api in [
        LlmApi::Ollama,
        LlmApi::Openai,
        LlmApi::Ollama,
        LlmApi::Openai,
    ] {
        let c = client_with(&s.settings(api), single_attempt(&s));
        let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
        assert!(matches!(e, LlmError::Stream { .. }), "{api:?}: {e:?}");
        assert!(e.to_string().contains("broke off"), "{e}");
        assert!(e.is_retryable());
    }
}

#[tokio::test]
async fn malformed_answers_are_typed_errors() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ndjson(&["{\"message\": {\"content\": \"x\"}", "{not json"]),
    );
    s.push(
        "/api/chat",
        Reply::raw(200, "application/json", "{\"model\": "),
    );
    s.push("/api/tags", Reply::raw(200, "application/json", "[1, 2]"));
    s.push(
        "/v1/chat/completions",
        Reply::sse(&["{\"choices\": [{\"delta\": "]),
    );
    s.push(
        "/v1/chat/completions",
        Reply::json(200, json!({"id": "x", "choices": []})),
    );
    let ollama = client_with(&s.settings(LlmApi::Ollama), single_attempt(&s));
    let openai = client_with(&s.settings(LlmApi::Openai), single_attempt(&s));
    let results = [
        ollama.chat(&request(&s, "qwen")).await.unwrap_err(),
        ollama
            .chat(&request(&s, "qwen").streaming(false))
            .await
            .unwrap_err(),
        ollama.list().await.unwrap_err(),
        openai.chat(&request(&s, "qwen")).await.unwrap_err(),
        openai
            .chat(&request(&s, "qwen").streaming(false))
            .await
            .unwrap_err(),
    ];
    for e in results {
        assert!(matches!(e, LlmError::Malformed { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }
}

#[tokio::test]
async fn an_error_inside_the_stream_is_reported() {
    let s = server();
    s.push(
        "/api/chat",
        Reply::ndjson(&[
            r#"{"message":{"role":"assistant","content":"x"},"done":false}"#,
            r#"{"error":"an error was encountered while running the model: CUDA error: out of memory"}"#,
        ]),
    );
    let c = client_with(&s.settings(LlmApi::Ollama), single_attempt(&s));
    let e = c.chat(&request(&s, "qwen")).await.unwrap_err();
    assert!(matches!(e, LlmError::Remote { .. }), "{e:?}");
    assert!(e.to_string().contains("out of memory"), "{e}");
}

#[tokio::test]
async fn https_clients_build_with_the_ring_provider() {
    // No traffic leaves the machine: nothing listens on 127.0.0.1:9 for TLS.
    let s = server();
    let mut settings = s.settings(LlmApi::Openai);
    settings.server.url = "https://127.0.0.1:9".into();
    let c = client_with(&settings, single_attempt(&s));
    let e = c.list().await.unwrap_err();
    assert!(e.is_unreachable(), "{e:?}");
}

#[test]
fn options_come_from_the_server_config() {
    let s = server();
    let settings = s.settings(LlmApi::Ollama);
    let o = ClientOptions::from_server_with_key(&settings.server, Some(" k \n".into()));
    assert_eq!(o.timeout, Duration::from_secs(5));
    assert_eq!(o.connect_timeout, Duration::from_secs(5));
    assert_eq!(o.api_key.as_ref().map(ApiKey::expose), Some("k"));
    assert_eq!(format!("{:?}", o.api_key), "Some(ApiKey([redacted]))");
    let p = llm::RetryPolicy::default();
    assert!(p.backoff(1) < p.backoff(2) && p.backoff(2) < p.backoff(3));
    assert_eq!(p.backoff(30), p.max_delay);
}

#[test]
fn model_names_match_with_latest() {
    assert!(llm::model_matches("mistral", "mistral:latest"));
    assert!(llm::model_matches("qwen2.5-coder:7b", "qwen2.5-coder:7b"));
    assert!(!llm::model_matches("qwen2.5-coder:7b", "qwen2.5-coder:14b"));
}

//! Ollama's native API: `POST /api/chat` (NDJSON stream or one body), `GET /api/tags`,
//! `POST /api/pull` (NDJSON progress), `GET /api/version`.

use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use proto::messages::Usage;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use settings::{LlmApi, LlmSettings};

use crate::LlmError;
use crate::client::{
    ChatRequest, ChatResponse, ClientOptions, ModelClient, ModelInfo, ProgressFn, PullProgress,
};
use crate::http::{Http, Tries, error_in, snippet};

pub struct OllamaClient {
    http: Http,
}

/// One NDJSON line of `/api/chat`, or the whole non-streamed answer.
#[derive(Debug, Default, Deserialize)]
struct ChatChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    /// Nanoseconds.
    #[serde(default)]
    total_duration: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    name: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    modified_at: Option<String>,
}

impl OllamaClient {
    pub fn new(settings: &LlmSettings, options: ClientOptions) -> Result<OllamaClient, LlmError> {
        Ok(OllamaClient {
            http: Http::new(settings, options)?,
        })
    }

    /// The server's version (`GET /api/version`): a cheap check that Ollama is running.
    pub async fn version(&self) -> Result<String, LlmError> {
        let v = self
            .http
            .timed(async {
                let resp = self
                    .http
                    .send(Method::GET, "/api/version", None, None)
                    .await?;
                self.http.json_body(resp).await
            })
            .await?;
        v.get("version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.http.malformed("/api/version has no `version`"))
    }

    async fn chat_impl(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let body = chat_body(req);
        let mut tries = Tries::new(&self.http.opts.retry);
        loop {
            match self.http.timed(self.chat_once(req, &body)).await {
                Ok(mut r) => {
                    r.usage.duration_ms = started.elapsed().as_millis() as u64;
                    r.attempts = tries.attempt;
                    return Ok(r);
                }
                Err(e) => tries.again(e, "chat").await?,
            }
        }
    }

    async fn chat_once(&self, req: &ChatRequest, body: &Value) -> Result<ChatResponse, LlmError> {
        let resp = self
            .http
            .send(Method::POST, "/api/chat", Some(body), Some(&req.model))
            .await?;
        if !req.stream {
            let v = self.http.json_body(resp).await?;
            if let Some(e) = error_in(&v) {
                return Err(self.http.remote(e));
            }
            let chunk: ChatChunk = serde_json::from_value(v)
                .map_err(|e| self.http.malformed(format!("/api/chat answer: {e}")))?;
            let content = chunk
                .message
                .as_ref()
                .and_then(|m| m.content.clone())
                .ok_or_else(|| {
                    self.http
                        .malformed("/api/chat answer has no message content")
                })?;
            return Ok(finish(content, &chunk, req));
        }
        let mut lines = self.http.lines(resp);
        let mut content = String::new();
        let mut n = 0usize;
        while let Some(line) = lines.next_line().await? {
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| {
                self.http.malformed(format!(
                    "/api/chat stream line {n} is not JSON ({e}): {}",
                    snippet(&line)
                ))
            })?;
            if let Some(e) = error_in(&v) {
                return Err(self.http.remote(e));
            }
            let chunk: ChatChunk = serde_json::from_value(v).map_err(|e| {
                self.http
                    .malformed(format!("/api/chat stream line {n}: {e}"))
            })?;
            if let Some(c) = chunk.message.as_ref().and_then(|m| m.content.as_deref()) {
                content.push_str(c);
            }
            if chunk.done {
                return Ok(finish(content, &chunk, req));
            }
        }
        Err(self.http.broken(format!(
            "the /api/chat stream ended after {n} lines without its final `done` line"
        )))
    }

    async fn list_impl(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut tries = Tries::new(&self.http.opts.retry);
        loop {
            let once = self.http.timed(async {
                let resp = self.http.send(Method::GET, "/api/tags", None, None).await?;
                let v = self.http.json_body(resp).await?;
                serde_json::from_value::<Tags>(v)
                    .map_err(|e| self.http.malformed(format!("/api/tags answer: {e}")))
            });
            match once.await {
                Ok(tags) => {
                    return Ok(tags
                        .models
                        .into_iter()
                        .map(|t| ModelInfo {
                            name: t.name,
                            size: t.size,
                            modified_at: t.modified_at,
                        })
                        .collect());
                }
                Err(e) => tries.again(e, "list").await?,
            }
        }
    }

    async fn pull_impl(&self, model: &str, progress: &mut ProgressFn<'_>) -> Result<(), LlmError> {
        let mut tries = Tries::new(&self.http.opts.retry);
        loop {
            // No overall timeout: a pull takes as long as the download. The client's read
            // timeout still ends a pull that goes silent.
            match self.pull_once(model, progress).await {
                Ok(()) => return Ok(()),
                Err(e) => tries.again(e, "pull").await?,
            }
        }
    }

    async fn pull_once(&self, model: &str, progress: &mut ProgressFn<'_>) -> Result<(), LlmError> {
        // `name` is what Ollama before 0.5 reads; later versions read `model`.
        let body = json!({"model": model, "name": model, "stream": true});
        let resp = self
            .http
            .send(Method::POST, "/api/pull", Some(&body), None)
            .await?;
        let mut lines = self.http.lines(resp);
        let mut n = 0usize;
        while let Some(line) = lines.next_line().await? {
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| {
                self.http.malformed(format!(
                    "/api/pull line {n} is not JSON ({e}): {}",
                    snippet(&line)
                ))
            })?;
            if let Some(message) = error_in(&v) {
                return Err(LlmError::Pull {
                    model: model.to_owned(),
                    message,
                });
            }
            let p: PullProgress = serde_json::from_value(v)
                .map_err(|e| self.http.malformed(format!("/api/pull line {n}: {e}")))?;
            progress(&p);
            if p.status == "success" {
                return Ok(());
            }
        }
        Err(self.http.broken(format!(
            "the /api/pull stream ended after {n} lines without `success`"
        )))
    }
}

/// The request body. `num_ctx` is always sent: without it Ollama uses its small default
/// window and silently drops the start of a long prompt.
pub(crate) fn chat_body(req: &ChatRequest) -> Value {
    json!({
        "model": req.model,
        "messages": req.messages,
        "stream": req.stream,
        "options": {
            "temperature": req.temperature,
            "num_predict": req.max_tokens,
            "num_ctx": req.context_window,
        },
    })
}

fn finish(content: String, last: &ChatChunk, req: &ChatRequest) -> ChatResponse {
    ChatResponse {
        content,
        model: last.model.clone().unwrap_or_else(|| req.model.clone()),
        usage: Usage {
            prompt_tokens: last.prompt_eval_count.unwrap_or(0),
            completion_tokens: last.eval_count.unwrap_or(0),
            duration_ms: 0,
        },
        finish_reason: last.done_reason.clone(),
        server_duration_ms: last.total_duration.map(|ns| ns / 1_000_000),
        attempts: 1,
    }
}

impl ModelClient for OllamaClient {
    fn api(&self) -> LlmApi {
        LlmApi::Ollama
    }

    fn url(&self) -> &str {
        self.http.url()
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        self.chat_impl(req).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, LlmError>> {
        self.list_impl().boxed()
    }

    fn pull<'a>(
        &'a self,
        model: &'a str,
        progress: &'a mut ProgressFn<'_>,
    ) -> BoxFuture<'a, Result<(), LlmError>> {
        self.pull_impl(model, progress).boxed()
    }
}

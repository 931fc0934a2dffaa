//! OpenAI-compatible servers (llama.cpp, vLLM, LM Studio, hosted APIs):
//! `POST /v1/chat/completions` (SSE stream or one body) and `GET /v1/models`.

use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use proto::messages::Usage;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use settings::{LlmApi, LlmSettings};

use crate::LlmError;
use crate::client::{ChatRequest, ChatResponse, ClientOptions, ModelClient, ModelInfo, ProgressFn};
use crate::http::{Http, Tries, error_in, snippet};

pub struct OpenAiClient {
    http: Http,
}

#[derive(Debug, Default, Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Content>,
    #[serde(default)]
    delta: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ApiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct Models {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

impl OpenAiClient {
    pub fn new(settings: &LlmSettings, options: ClientOptions) -> Result<OpenAiClient, LlmError> {
        Ok(OpenAiClient {
            http: Http::new(settings, options)?,
        })
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
            .send(
                Method::POST,
                "/v1/chat/completions",
                Some(body),
                Some(&req.model),
            )
            .await?;
        let mut out = ChatResponse {
            content: String::new(),
            model: req.model.clone(),
            usage: Usage::default(),
            finish_reason: None,
            server_duration_ms: None,
            attempts: 1,
        };
        if !req.stream {
            let v = self.http.json_body(resp).await?;
            if let Some(e) = error_in(&v) {
                return Err(self.http.remote(e));
            }
            let c: Completion = serde_json::from_value(v)
                .map_err(|e| self.http.malformed(format!("chat completion: {e}")))?;
            let choice = c
                .choices
                .first()
                .ok_or_else(|| self.http.malformed("chat completion has no choices"))?;
            out.content = choice
                .message
                .as_ref()
                .and_then(|m| m.content.clone())
                .unwrap_or_default();
            out.finish_reason = choice.finish_reason.clone();
            absorb_meta(&mut out, &c);
            return Ok(out);
        }
        let mut lines = self.http.lines(resp);
        let mut n = 0usize;
        while let Some(line) = lines.next_line().await? {
            n += 1;
            // SSE: `data:` lines carry the payload; comments (`:`), `event:`, `id:` and
            // blank separators carry nothing we need.
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(out);
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| {
                self.http
                    .malformed(format!("SSE line {n} is not JSON ({e}): {}", snippet(data)))
            })?;
            if let Some(e) = error_in(&v) {
                return Err(self.http.remote(e));
            }
            let c: Completion = serde_json::from_value(v)
                .map_err(|e| self.http.malformed(format!("SSE line {n}: {e}")))?;
            for choice in &c.choices {
                if let Some(t) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                    out.content.push_str(t);
                }
                if choice.finish_reason.is_some() {
                    out.finish_reason = choice.finish_reason.clone();
                }
            }
            absorb_meta(&mut out, &c);
        }
        Err(self.http.broken(format!(
            "the chat completion stream ended after {n} lines without `data: [DONE]`"
        )))
    }

    async fn list_impl(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let mut tries = Tries::new(&self.http.opts.retry);
        loop {
            let once = self.http.timed(async {
                let resp = self
                    .http
                    .send(Method::GET, "/v1/models", None, None)
                    .await?;
                let v = self.http.json_body(resp).await?;
                serde_json::from_value::<Models>(v)
                    .map_err(|e| self.http.malformed(format!("/v1/models answer: {e}")))
            });
            match once.await {
                Ok(m) => {
                    return Ok(m
                        .data
                        .into_iter()
                        .map(|e| ModelInfo {
                            name: e.id,
                            size: None,
                            modified_at: None,
                        })
                        .collect());
                }
                Err(e) => tries.again(e, "list").await?,
            }
        }
    }
}

fn absorb_meta(out: &mut ChatResponse, c: &Completion) {
    if let Some(m) = &c.model {
        out.model = m.clone();
    }
    if let Some(u) = &c.usage {
        out.usage.prompt_tokens = u.prompt_tokens;
        out.usage.completion_tokens = u.completion_tokens;
    }
}

/// The request body. The context window cannot be set per request on these servers (it is
/// fixed when the model is loaded), so only temperature and max_tokens travel.
pub(crate) fn chat_body(req: &ChatRequest) -> Value {
    let mut body = json!({
        "model": req.model,
        "messages": req.messages,
        "stream": req.stream,
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
    });
    if req.stream {
        // Without this, streamed answers carry no token counts.
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

impl ModelClient for OpenAiClient {
    fn api(&self) -> LlmApi {
        LlmApi::Openai
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
        _progress: &'a mut ProgressFn<'_>,
    ) -> BoxFuture<'a, Result<(), LlmError>> {
        async move {
            Err(LlmError::Unsupported {
                what: format!("pulling {model} through an OpenAI-compatible server"),
                hint: "load the model on the server itself, or set server.api: ollama".into(),
            })
        }
        .boxed()
    }
}

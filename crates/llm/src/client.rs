//! The `ModelClient` trait shared by both server APIs, its request and response types, client
//! options (timeouts, retries, API key), `connect` and `ensure_model`.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use proto::messages::Usage;
use serde::{Deserialize, Serialize};
use settings::{LlmApi, LlmServer, LlmSettings, ModelConfig};

use crate::LlmError;
use crate::ollama::OllamaClient;
use crate::openai::OpenAiClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// One chat call. Built from a model's configuration so its options are always sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The server's model name (e.g. `qwen2.5-coder:7b`), not the alias.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: f64,
    /// Ollama `num_predict`, OpenAI `max_tokens`.
    pub max_tokens: u32,
    /// Ollama `num_ctx`: always sent, because Ollama's default window is small and it drops
    /// silently what does not fit. OpenAI servers fix the window at load time.
    pub context_window: u32,
    pub stream: bool,
}

impl ChatRequest {
    /// A streaming request with the model's configured options.
    pub fn new(model: &ModelConfig, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: model.model_name.clone(),
            messages,
            temperature: model.temperature,
            max_tokens: model.max_tokens,
            context_window: model.context_window,
            stream: true,
        }
    }

    pub fn streaming(mut self, stream: bool) -> ChatRequest {
        self.stream = stream;
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assembled answer text, as the model wrote it.
    pub content: String,
    /// The model that answered, as the server names it.
    pub model: String,
    /// Prompt and completion tokens as the server counted them (0 when it did not say), and
    /// the wall time of the whole call including retries.
    pub usage: Usage,
    /// Why generation stopped (`stop`, `length`, ...), when the server says.
    pub finish_reason: Option<String>,
    /// The server's own duration (Ollama `total_duration`), when reported.
    pub server_duration_ms: Option<u64>,
    /// Attempts made; 1 means no retry was needed.
    pub attempts: u32,
}

impl ChatResponse {
    /// The answer was cut at `max_tokens`: a diff in it is likely incomplete.
    pub fn truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub size: Option<u64>,
    pub modified_at: Option<String>,
}

/// One progress line of `POST /api/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PullProgress {
    pub status: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub completed: Option<u64>,
}

/// A callback that sees each pull progress line.
pub type ProgressFn<'a> = dyn FnMut(&PullProgress) + Send + 'a;

/// A model server. Object-safe so stages can hold `Box<dyn ModelClient>` and tests can
/// substitute their own.
pub trait ModelClient: Send + Sync {
    fn api(&self) -> LlmApi;

    /// The server's base URL, as configured.
    fn url(&self) -> &str;

    fn chat<'a>(&'a self, req: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, LlmError>>;

    /// The models the server has.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, LlmError>>;

    /// Download a model onto the server, reporting progress.
    fn pull<'a>(
        &'a self,
        model: &'a str,
        progress: &'a mut ProgressFn<'_>,
    ) -> BoxFuture<'a, Result<(), LlmError>>;
}

/// Retries with exponential backoff on transient errors: 5xx, 429 (honouring Retry-After),
/// a broken stream, an error reported mid-stream. A refused connection gets only
/// `connect_retries` quick retries: a server that is not running rarely starts in a second.
/// Timeouts are not retried here (each one already cost `timeout`); callers may, since
/// `LlmError::is_retryable` says they are transient.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub connect_retries: u32,
    pub connect_delay: Duration,
    /// A Retry-After longer than this is returned to the caller instead of waited out.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            connect_retries: 1,
            connect_delay: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after a transient failure of attempt `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }
}

/// An API key that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Limit on one attempt of a chat or list call, from connect to the last byte; for a
    /// pull, the longest silence between two progress lines.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub api_key: Option<ApiKey>,
    pub retry: RetryPolicy,
}

impl ClientOptions {
    /// Timeouts from `server.timeout_secs`; the API key from the variable named by
    /// `server.api_key_env`, read from the process environment.
    pub fn from_server(server: &LlmServer) -> ClientOptions {
        let key = std::env::var(&server.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty());
        ClientOptions::from_server_with_key(server, key)
    }

    /// As `from_server`, with the key given (tests, or keys from elsewhere).
    pub fn from_server_with_key(server: &LlmServer, key: Option<String>) -> ClientOptions {
        let timeout = Duration::from_secs(server.timeout_secs.max(1));
        ClientOptions {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(10)),
            api_key: key.map(|k| ApiKey::new(k.trim())),
            retry: RetryPolicy::default(),
        }
    }
}

/// The client for the configured server, with options from the configuration and the
/// environment.
pub fn connect(settings: &LlmSettings) -> Result<Box<dyn ModelClient>, LlmError> {
    connect_with(settings, ClientOptions::from_server(&settings.server))
}

pub fn connect_with(
    settings: &LlmSettings,
    options: ClientOptions,
) -> Result<Box<dyn ModelClient>, LlmError> {
    Ok(match settings.server.api {
        LlmApi::Ollama => Box::new(OllamaClient::new(settings, options)?),
        LlmApi::Openai => Box::new(OpenAiClient::new(settings, options)?),
    })
}

/// The configuration of a model alias, or an error listing the known aliases.
pub fn model_config<'a>(
    settings: &'a LlmSettings,
    alias: &str,
) -> Result<&'a ModelConfig, LlmError> {
    settings
        .models
        .get(alias)
        .ok_or_else(|| LlmError::UnknownAlias {
            alias: alias.to_owned(),
            known: settings
                .models
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The alias configured for a server model name, else the name itself.
pub fn alias_for(settings: &LlmSettings, model_name: &str) -> String {
    settings
        .models
        .iter()
        .find(|(_, m)| model_matches(&m.model_name, model_name))
        .map(|(a, _)| a.clone())
        .unwrap_or_else(|| model_name.to_owned())
}

/// Whether a listed model is the configured one: `mistral` is `mistral:latest` on Ollama.
pub fn model_matches(configured: &str, listed: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        if s.contains(':') {
            s.to_owned()
        } else {
            format!("{s}:latest")
        }
    };
    configured.trim() == listed.trim() || norm(configured) == norm(listed)
}

/// Make sure the server has the model of `alias`: list, and pull it when it is missing and
/// `server.auto_pull` is on (Ollama only). Returns the alias's configuration.
pub async fn ensure_model<'s>(
    client: &dyn ModelClient,
    settings: &'s LlmSettings,
    alias: &str,
    progress: &mut ProgressFn<'_>,
) -> Result<&'s ModelConfig, LlmError> {
    let model = model_config(settings, alias)?;
    let listed = client.list().await?;
    if listed
        .iter()
        .any(|m| model_matches(&model.model_name, &m.name))
    {
        return Ok(model);
    }
    match client.api() {
        LlmApi::Ollama if settings.server.auto_pull => {
            tracing::info!(model = %model.model_name, alias, "model missing on the server, pulling it");
            client.pull(&model.model_name, progress).await?;
            Ok(model)
        }
        LlmApi::Ollama => Err(LlmError::NotPulled {
            model: model.model_name.clone(),
            alias: alias.to_owned(),
        }),
        LlmApi::Openai => Err(LlmError::NotServed {
            model: model.model_name.clone(),
            url: client.url().to_owned(),
        }),
    }
}

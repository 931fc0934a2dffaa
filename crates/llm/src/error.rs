//! `LlmError`: what went wrong talking to a model server, what to do about it, and whether
//! trying the same call again can help.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// Nothing accepted a connection (refused, unknown host, connect timeout).
    #[error("no model server at {url}: start `ollama serve` or set COVAL_LLM_URL ({reason})")]
    NoServer { url: String, reason: String },
    /// Ollama does not have the model.
    #[error("model {model} not pulled: run `coval models pull {alias}`")]
    NotPulled { model: String, alias: String },
    /// An OpenAI-compatible server does not serve the model (it cannot pull).
    #[error(
        "model {model} is not served by {url}: load it on the server, or choose another model with --model"
    )]
    NotServed { model: String, url: String },
    #[error("unknown model alias `{alias}`: use one of {known} (llm.config.yaml `models`)")]
    UnknownAlias { alias: String, known: String },
    /// 401 or 403. The key itself never appears in any message.
    #[error("model server at {url} refused the API key (HTTP {status}): set {env} to a valid key")]
    Unauthorized {
        url: String,
        status: u16,
        env: String,
    },
    #[error("model server at {url} is rate limiting requests (HTTP 429){}; wait and try again", after_hint(.retry_after))]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
    },
    /// Any other unsuccessful HTTP status.
    #[error("model server at {url} answered HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// An error the server reported inside a successful response (e.g. in the stream).
    #[error("model server at {url} reported an error: {message}")]
    Remote { url: String, message: String },
    #[error(
        "model server at {url} did not answer within {after:?}: raise server.timeout_secs in llm.config.yaml or use a smaller model"
    )]
    Timeout { url: String, after: Duration },
    /// The connection or the stream broke off before the answer was complete.
    #[error("the answer from {url} broke off: {reason}")]
    Stream { url: String, reason: String },
    /// The server answered something that is not the protocol (bad JSON, NDJSON or SSE).
    #[error("malformed answer from {url}: {reason}")]
    Malformed { url: String, reason: String },
    /// The server could not pull the model (unknown name, registry unreachable, disk full).
    #[error("could not pull model {model}: {message}; check the name in llm.config.yaml")]
    Pull { model: String, message: String },
    #[error("{what} is not supported here: {hint}")]
    Unsupported { what: String, hint: String },
    #[error("cannot set up the model client: {reason}")]
    Setup { reason: String },
}

fn after_hint(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {d:?}"),
        None => String::new(),
    }
}

impl LlmError {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::NoServer { .. }
            | LlmError::RateLimited { .. }
            | LlmError::Remote { .. }
            | LlmError::Timeout { .. }
            | LlmError::Stream { .. } => true,
            LlmError::Status { status, .. } => *status >= 500 || *status == 408,
            LlmError::NotPulled { .. }
            | LlmError::NotServed { .. }
            | LlmError::UnknownAlias { .. }
            | LlmError::Unauthorized { .. }
            | LlmError::Malformed { .. }
            | LlmError::Pull { .. }
            | LlmError::Unsupported { .. }
            | LlmError::Setup { .. } => false,
        }
    }

    /// How long the server asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The server could not be reached at all (the CLI exits with 3 for this).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, LlmError::NoServer { .. })
    }
}

//! Model clients, prompts, and parsing of model answers into typed edits.
//!
//! - [`ModelClient`]: one trait over Ollama's native API ([`ollama::OllamaClient`]) and
//!   OpenAI-compatible servers ([`openai::OpenAiClient`]); [`connect`] picks one from
//!   `llm.config.yaml`, [`ensure_model`] pulls a missing model when `auto_pull` is on.
//!   Timeouts, retries with backoff, and errors that say what to do ([`LlmError`]).
//! - [`prompt`]: first-attempt and retry prompts with delimited, capped, budgeted data.
//! - [`parse`]: model answers into [`Edit`]s (unified diff, search/replace, whole file).
//! - [`progress::PullReporter`]: pull progress as a bar on a terminal, plain lines elsewhere.
//! - `testing::ProtocolServer` (feature `testing`): a scripted model server for tests.

mod client;
mod error;
mod http;
pub mod ollama;
pub mod openai;
pub mod parse;
pub mod progress;
pub mod prompt;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{
    ApiKey, ChatMessage, ChatRequest, ChatResponse, ClientOptions, ModelClient, ModelInfo,
    ProgressFn, PullProgress, RetryPolicy, Role, alias_for, connect, connect_with, ensure_model,
    model_config, model_matches,
};
pub use error::LlmError;
pub use http::install_crypto_provider;
pub use parse::{Edit, ParseError, parse_response};

/// Does something listen at the model server's address? A TCP connect within half a
/// second, nothing sent: how `auto` chooses between a model and the search engine.
pub async fn server_answers(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = if hostport.contains(':') {
        hostport.to_owned()
    } else if url.starts_with("https") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

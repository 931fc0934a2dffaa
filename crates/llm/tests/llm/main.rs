//! The llm crate's integration tests: clients against the scripted protocol server,
//! prompt construction, and the parser on real-style model answers in `fixtures/responses/`.

mod client;
mod parse;
mod prompt;

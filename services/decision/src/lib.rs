//! The decision stage: repair or rebuild. `model` holds the cost model and the success
//! probability (pure functions), `handler` turns a `Triaged` message into a `Decided` one, and
//! `explain` writes decision.md.

pub mod handler;
pub mod model;

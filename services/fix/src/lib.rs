//! The fix stage: candidate changes for a localised fault, from a language model or from the
//! built-in search-based engine (`search`), which needs no model at all.

pub mod diff;
pub mod handler;
pub mod model;
pub mod search;
pub mod unlocated;

//! The decision stage: repair or rebuild. `model` holds the cost model and the success
//! probability, `decide` applies them to one triage report and gives the reasons in words (both
//! pure functions), and `handler` reads the category's recorded outcomes and turns a `Triaged`
//! message into a `Decided` one.

pub mod decide;
pub mod handler;
pub mod model;

//! The MRE stage: build the minimal reproducible example (the trace's project files, their
//! local imports, the failing tests, manifests and config, a Dockerfile and a README), run it
//! in the sandbox, and record whether the original failure reproduces. When it does not, the
//! whole project is the example, and the report says so. The whole project's test run is also
//! the baseline every candidate is compared with. Tests that cannot run at all (a missing
//! runner, interpreter or package) stop the repair there, with the reason ([`blocked`]).

pub mod blocked;
pub mod build;
pub mod handler;
pub mod run;

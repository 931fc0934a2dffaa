//! The stage registry: the one place that knows all six stages. [`STAGES`] lists them in
//! pipeline order with the settings section each one owns, and [`build`] makes a stage's
//! handler from a [`StageContext`] with that service's own builder. Everything that runs
//! stages takes them from here: the six `coval-<stage>` binaries (`src/bin`), `coval worker
//! <stage>|all`, and the embedded `coval repair`. It sits above the six service crates and the
//! bus, and below the command line; `bus` must never import it (nor any stage), and no service
//! imports it.

use std::process::ExitCode;

/// The allocator of the programs that run stages: the six `coval-<stage>` workers, `coval`
/// (its embedded pipeline and `coval worker`) and the chain bench, which must measure what
/// workers run. A hop allocates dozens of small, short-lived buffers (headers, bodies,
/// futures) on one thread and frees them on another; glibc's malloc spent about a third of a
/// worker's CPU on that (its arena locks and `malloc_consolidate`). Each binary declares it
/// (`#[global_allocator]`) itself, so a bench may still count allocations with its own.
pub use mimalloc::MiMalloc as Allocator;

/// A `coval-<stage>` binary: the stage's worker, with the workers' [`Allocator`].
#[macro_export]
macro_rules! worker_binary {
    ($stage:expr) => {
        #[global_allocator]
        static ALLOCATOR: $crate::Allocator = $crate::Allocator;

        fn main() -> std::process::ExitCode {
            $crate::main($stage)
        }
    };
}

use bus::context::StageContext;
use bus::runtime::{Handler, Input, Outcome};
use bus::worker::WorkerError;
use proto::Stage;

/// One stage as the registry lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub stage: Stage,
    /// The top-level section of `coval.config.yaml` that is this stage's own, if any (the
    /// decision's is its cost model, whose weights triage also reads); the shared sections
    /// (`sandbox`, `bus`, `global`, `project`, ...) are everyone's.
    pub section: Option<&'static str>,
}

/// The six stages, in the order a repair passes through them.
pub const STAGES: [Entry; 6] = [
    Entry {
        stage: Stage::Triage,
        section: Some("triage"),
    },
    Entry {
        stage: Stage::Decision,
        section: Some("cost_calculation"),
    },
    Entry {
        stage: Stage::Mre,
        section: None,
    },
    Entry {
        stage: Stage::Fix,
        section: None,
    },
    Entry {
        stage: Stage::Validate,
        section: Some("validate"),
    },
    Entry {
        stage: Stage::Integrate,
        section: None,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("`{0}` is not a stage a worker runs")]
    NotAStage(Stage),
    #[error("the integration stage needs the workspace ledger, and this process does not hold it")]
    NoLedger,
}

/// A built stage: one of the six handlers, each as its service made it.
pub enum StageHandler {
    Triage(triage::handler::TriageStage),
    Decision(decision::handler::DecisionStage),
    Mre(mre::handler::MreStage),
    Fix(fix::handler::FixStage),
    Validate(validate::handler::ValidateStage),
    /// Boxed: the ledger's handle is larger than all the other stages together.
    Integrate(Box<integrate::handler::IntegrateStage>),
}

/// `stage`'s handler, from its service's builder.
pub fn build(stage: Stage, ctx: &StageContext) -> Result<StageHandler, BuildError> {
    Ok(match stage {
        Stage::Triage => StageHandler::Triage(triage::handler::TriageStage::from_context(ctx)),
        Stage::Decision => {
            StageHandler::Decision(decision::handler::DecisionStage::from_context(ctx))
        }
        Stage::Mre => StageHandler::Mre(mre::handler::MreStage::from_context(ctx)),
        Stage::Fix => StageHandler::Fix(fix::handler::FixStage::from_context(ctx)),
        Stage::Validate => {
            StageHandler::Validate(validate::handler::ValidateStage::from_context(ctx))
        }
        Stage::Integrate => StageHandler::Integrate(Box::new(
            integrate::handler::IntegrateStage::from_context(ctx).ok_or(BuildError::NoLedger)?,
        )),
        Stage::Client => return Err(BuildError::NotAStage(stage)),
    })
}

impl Handler for StageHandler {
    fn stage(&self) -> Stage {
        match self {
            StageHandler::Triage(h) => h.stage(),
            StageHandler::Decision(h) => h.stage(),
            StageHandler::Mre(h) => h.stage(),
            StageHandler::Fix(h) => h.stage(),
            StageHandler::Validate(h) => h.stage(),
            StageHandler::Integrate(h) => h.stage(),
        }
    }

    async fn handle(&self, input: Input) -> Outcome {
        match self {
            StageHandler::Triage(h) => h.handle(input).await,
            StageHandler::Decision(h) => h.handle(input).await,
            StageHandler::Mre(h) => h.handle(input).await,
            StageHandler::Fix(h) => h.handle(input).await,
            StageHandler::Validate(h) => h.handle(input).await,
            StageHandler::Integrate(h) => h.handle(input).await,
        }
    }
}

/// The main of a `coval-<stage>` binary: a worker process running that one stage.
pub fn main(stage: Stage) -> ExitCode {
    bus::worker::main(stage, |ctx| {
        build(stage, ctx).map_err(|e| WorkerError::Internal(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_each_worker_stage_once_in_pipeline_order() {
        let listed: Vec<Stage> = STAGES.iter().map(|e| e.stage).collect();
        assert_eq!(listed, Stage::WORKERS);
    }

    #[test]
    fn every_section_a_stage_owns_is_in_the_default_settings() {
        for e in STAGES {
            if let Some(section) = e.section {
                assert!(
                    settings::DEFAULT_SETTINGS.lines().any(|l| l
                        .split('#')
                        .next()
                        .unwrap_or("")
                        .trim_end()
                        == format!("{section}:")),
                    "{}: no `{section}:` section in config/coval.config.yaml",
                    e.stage
                );
            }
        }
    }
}

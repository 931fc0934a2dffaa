//! The exit codes of `coval` and of the stage workers, one contract for scripts and CI.

/// The command did its job (a validated fix, a healthy deployment, ...).
pub const DONE: u8 = 0;
/// No validated fix, rebuild recommended, unhealthy.
pub const NOT_DONE: u8 = 1;
/// Bad usage or bad input (arguments, configuration, files).
pub const BAD_INPUT: u8 = 2;
/// A required service (NATS, Docker, the model server) is unreachable, or what the project's
/// tests need to run (an interpreter, the test runner, a package, a registry) is missing.
pub const UNREACHABLE: u8 = 3;
/// An internal failure; it shares `NOT_DONE`'s code, so a script reading only 0/1 still
/// learns that nothing was done.
pub const INTERNAL: u8 = NOT_DONE;

/// The exit code of a finished repair: 0 fixed or analysed; 3 when its tests cannot run for
/// want of something (2 when what is broken is the project's own manifest, which is input);
/// 1 otherwise.
pub fn of_repair(c: &proto::messages::RepairCompleted) -> u8 {
    use proto::messages::{BlockedReason, RepairOutcome};
    match c.outcome {
        RepairOutcome::Fixed | RepairOutcome::Analyzed => DONE,
        RepairOutcome::CannotRun => match c.blocked.as_ref().map(|b| b.reason) {
            Some(BlockedReason::Manifest) => BAD_INPUT,
            _ => UNREACHABLE,
        },
        RepairOutcome::NoFix | RepairOutcome::RebuildRecommended | RepairOutcome::Failed => {
            NOT_DONE
        }
    }
}

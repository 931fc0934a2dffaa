//! The exit codes of `coval` and of the stage workers, one contract for scripts and CI.

/// The command did its job (a validated fix, a healthy deployment, ...).
pub const DONE: u8 = 0;
/// No validated fix, rebuild recommended, unhealthy.
pub const NOT_DONE: u8 = 1;
/// Bad usage or bad input (arguments, configuration, files).
pub const BAD_INPUT: u8 = 2;
/// A required service (NATS, Docker, the model server) is unreachable.
pub const UNREACHABLE: u8 = 3;
/// An internal failure; it shares `NOT_DONE`'s code, so a script reading only 0/1 still
/// learns that nothing was done.
pub const INTERNAL: u8 = NOT_DONE;

//! Pumping a container's or exec's output into a [`Capture`] until it ends, the cap is hit or
//! time runs out, and turning what was captured (and the wrapper's trailer) into a
//! [`RunResult`].

use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use futures::{Stream, StreamExt};

use super::trailer::{Trailer, split_status};
use crate::RunResult;
use crate::capture::{Capture, Flow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PumpEnd {
    Eof,
    OverCap,
    Deadline,
    Broken,
}

pub(super) async fn pump<S>(
    output: &mut S,
    cap: &mut Capture,
    deadline: tokio::time::Instant,
) -> PumpEnd
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    loop {
        tokio::select! {
            item = output.next() => match item {
                None => return PumpEnd::Eof,
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    if cap.push_stdout(&message) == Flow::OverCap {
                        return PumpEnd::OverCap;
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    if cap.push_stderr(&message) == Flow::OverCap {
                        return PumpEnd::OverCap;
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "sandbox output stream broke");
                    return PumpEnd::Broken;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return PumpEnd::Deadline,
        }
    }
}

pub(super) struct FinishArgs {
    pub cap: Capture,
    pub trailer: Option<Trailer>,
    pub fallback_code: i64,
    pub engine_oom: bool,
    pub oom_before: u64,
    pub end: PumpEnd,
    pub spec_timeout: Duration,
    pub output_cap: usize,
    pub started: Instant,
}

pub(super) fn finish(a: FinishArgs) -> RunResult {
    let duration = a.started.elapsed();
    let code = a
        .trailer
        .as_ref()
        .and_then(|t| t.rc)
        .unwrap_or(a.fallback_code);
    let (exit_code, signal) = split_status(code);
    let trailer_oom = a
        .trailer
        .as_ref()
        .and_then(|t| t.oom)
        .is_some_and(|(before, after)| after > before.max(a.oom_before));
    let oom_killed = a.engine_oom || trailer_oom;
    let timed_out = !oom_killed
        && (a.end == PumpEnd::Deadline
            || (signal == Some(9) && duration >= a.spec_timeout && a.end != PumpEnd::OverCap));
    let truncated = a.end == PumpEnd::OverCap || a.cap.truncated();
    let collected = a.trailer.map(|t| t.files).unwrap_or_default();
    let (stdout, stderr) = a.cap.into_strings();
    RunResult {
        exit_code,
        signal,
        timed_out,
        oom_killed,
        stdout,
        stderr,
        output_truncated: truncated,
        duration,
        timeout: a.spec_timeout,
        output_cap: a.output_cap,
        collected,
    }
}

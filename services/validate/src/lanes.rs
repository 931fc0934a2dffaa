//! Opening and closing an attempt's lanes: the sandbox sessions its candidates run in, one
//! candidate per lane at a time.

use std::path::Path;

use sandbox::{ProjectKind, RunSpec, Sandbox, Session};
use settings::SandboxConfig;

/// The template every lane of an attempt on this project is opened from: the project's
/// environment (built once, shared with triage and the MRE).
fn lane_template(
    p: &sandbox::Prepared,
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
) -> RunSpec {
    p.project_spec(cfg, kind, root)
}

/// Opens `n` sandbox sessions for `kind`'s project at once. Lanes that fail are logged and
/// left out; only when none opens is it an error (the last one).
pub async fn open_lanes(
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
    n: usize,
) -> Result<Vec<Session>, sandbox::PrepareError> {
    let prepared = sandbox::prepare(cfg, kind, root, &sandbox::UserDirs::default()).await?;
    let template = lane_template(&prepared, cfg, kind, root);
    let detected = &prepared.detected;
    let opened =
        futures::future::join_all((0..n).map(|_| detected.sandbox.open_session(&template))).await;
    let mut sessions = vec![];
    let mut last_error = None;
    for o in opened {
        match o {
            Ok(s) => sessions.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "a validation lane did not open");
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) if sessions.is_empty() => Err(e.into()),
        _ => Ok(sessions),
    }
}

/// Closes sessions in the background: nothing waits for container removal. If the process
/// ends first, dropping the task drops the sessions, whose guards remove what they own.
pub fn close_later(sessions: Vec<Session>) {
    if sessions.is_empty() {
        return;
    }
    tokio::spawn(async move {
        futures::future::join_all(sessions.into_iter().map(Session::close)).await;
    });
}

/// Logs what each lane's warm test server did, for lanes that started one or turned it off.
/// The warm servers' counts summed over `lanes` (the run paths' `runs` left at 0), with the
/// first reason a lane's server went off.
pub fn warm_totals(lanes: &[Session]) -> proto::messages::RunPaths {
    let mut t = proto::messages::RunPaths::default();
    for session in lanes {
        let w = session.warm_stats();
        t.warm += w.served;
        t.collected += w.collected;
        if t.warm_off.is_none() {
            t.warm_off = w.off.clone();
        }
    }
    t
}

pub fn log_warm_stats(repair: &proto::RepairId, lanes: &[Session]) {
    for session in lanes {
        let w = session.warm_stats();
        if w.starts > 0 || w.off.is_some() {
            tracing::info!(
                repair = %repair,
                served = w.served,
                collected = w.collected,
                fallbacks = w.fallbacks,
                starts = w.starts,
                off = w.off.as_deref().unwrap_or(""),
                "warm test server"
            );
        }
    }
}

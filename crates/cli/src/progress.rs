//! Progress of a repair on stderr: a spinner with a line per finished stage on a terminal,
//! plain lines otherwise (CI logs, pipes). Nothing is written in `--json` mode except plain
//! lines on stderr, so stdout stays machine-readable.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use proto::messages::StageProgress;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && !json;
        let bar = tty.then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b.set_message("triage");
            b
        });
        Progress { bar }
    }

    /// Shows what a stage did, in either mode.
    pub fn stage(&self, e: &StageProgress) {
        let line = line(e);
        match &self.bar {
            Some(b) => {
                b.println(line);
                let next = match e.stage {
                    proto::Stage::Triage => "decision",
                    proto::Stage::Decision => "reproducing the failure in the sandbox",
                    proto::Stage::Mre | proto::Stage::Validate => "generating candidates",
                    proto::Stage::Fix => "validating candidates in the sandbox",
                    _ => "writing the report",
                };
                b.set_message(next);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `<stage> <summary> [<worker>] (<seconds> s)`: the worker only in the distributed mode.
fn line(e: &StageProgress) -> String {
    format!(
        "{:<9} {}{} ({:.1} s)",
        e.stage.as_str(),
        e.summary,
        e.worker
            .as_ref()
            .map(|w| format!(" [{w}]"))
            .unwrap_or_default(),
        std::time::Duration::from_millis(e.elapsed_ms).as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(worker: Option<&str>) -> StageProgress {
        StageProgress {
            repair_id: proto::RepairId::new(),
            stage: proto::Stage::Mre,
            summary: "reproduced".into(),
            elapsed_ms: 1_240,
            at_ms: 0,
            worker: worker.map(str::to_owned),
        }
    }

    #[test]
    fn a_line_names_the_stage_what_it_did_and_the_worker_when_there_is_one() {
        assert_eq!(line(&progress(None)), "mre       reproduced (1.2 s)");
        assert_eq!(
            line(&progress(Some("host/42"))),
            "mre       reproduced [host/42] (1.2 s)"
        );
    }
}

//! Progress of a repair on stderr: a spinner with a line per finished stage on a terminal,
//! plain lines otherwise (CI logs, pipes). Nothing is written in `--json` mode except plain
//! lines on stderr, so stdout stays machine-readable.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::repair::StageEvent;

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

    pub fn stage(&self, e: &StageEvent) {
        let line = format!(
            "{:<9} {} ({:.1} s)",
            e.stage.as_str(),
            e.what,
            e.elapsed.as_secs_f64()
        );
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

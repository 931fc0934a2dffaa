//! Showing pull progress: an indicatif bar when stderr is a terminal, plain lines otherwise
//! (logs, CI), without colour when NO_COLOR is set.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::PullProgress;

const BAR_COLOR: &str =
    "{msg:30!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
const BAR_PLAIN: &str = "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// Draws pull progress. Feed it every [`PullProgress`] (`update`) and call `finish` at the end.
pub struct PullReporter {
    model: String,
    mode: Mode,
    last_status: String,
    /// Last percentage printed in plain mode, so a log gets one line per 10%.
    last_pct: Option<u64>,
}

enum Mode {
    Bar(ProgressBar),
    Plain(Box<dyn Write + Send>),
}

impl PullReporter {
    /// A bar on stderr when it is a terminal, else plain lines on stderr.
    pub fn stderr(model: &str) -> PullReporter {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stderr().is_terminal() {
            PullReporter::bar(model, ProgressDrawTarget::stderr(), !no_color)
        } else {
            PullReporter::plain(model, Box::new(std::io::stderr()))
        }
    }

    /// Plain lines to `out`: each new status once, download progress every 10%.
    pub fn plain(model: &str, out: Box<dyn Write + Send>) -> PullReporter {
        PullReporter {
            model: model.to_owned(),
            mode: Mode::Plain(out),
            last_status: String::new(),
            last_pct: None,
        }
    }

    /// A bar drawn to `target`.
    pub fn bar(model: &str, target: ProgressDrawTarget, color: bool) -> PullReporter {
        let template = if color { BAR_COLOR } else { BAR_PLAIN };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("pulling {model}"));
        PullReporter {
            model: model.to_owned(),
            mode: Mode::Bar(bar),
            last_status: String::new(),
            last_pct: None,
        }
    }

    pub fn update(&mut self, p: &PullProgress) {
        let new_status = p.status != self.last_status;
        if new_status {
            self.last_status = p.status.clone();
            self.last_pct = None;
        }
        match &mut self.mode {
            Mode::Bar(bar) => {
                if new_status {
                    bar.set_message(p.status.clone());
                }
                match (p.total, p.completed) {
                    (Some(total), completed) if total > 0 => {
                        bar.set_length(total);
                        bar.set_position(completed.unwrap_or(0).min(total));
                    }
                    _ => bar.tick(),
                }
            }
            Mode::Plain(out) => {
                let pct = match (p.total, p.completed) {
                    (Some(t), Some(c)) if t > 0 => Some(c.min(t).saturating_mul(100) / t),
                    _ => None,
                };
                // Write errors (a closed stderr) must not fail the pull.
                if new_status {
                    let _ = writeln!(out, "{}: {}", self.model, p.status);
                }
                if let Some(pct) = pct {
                    let step = pct / 10 * 10;
                    if self.last_pct.is_none_or(|l| step > l) {
                        self.last_pct = Some(step);
                        let _ = writeln!(
                            out,
                            "{}: {} {}% ({} of {} bytes)",
                            self.model,
                            p.status,
                            pct,
                            p.completed.unwrap_or(0),
                            p.total.unwrap_or(0)
                        );
                    }
                }
            }
        }
    }

    pub fn finish(&mut self) {
        match &mut self.mode {
            Mode::Bar(bar) => bar.finish_with_message(format!("pulled {}", self.model)),
            Mode::Plain(out) => {
                let _ = out.flush();
            }
        }
    }

    /// A callback for [`crate::ModelClient::pull`] that feeds this reporter.
    pub fn callback(&mut self) -> impl FnMut(&PullProgress) + Send + '_ {
        move |p| self.update(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_templates_are_valid_and_a_hidden_bar_takes_updates() {
        assert!(ProgressStyle::with_template(BAR_COLOR).is_ok());
        assert!(ProgressStyle::with_template(BAR_PLAIN).is_ok());
        let mut r = PullReporter::bar("m", ProgressDrawTarget::hidden(), false);
        r.update(&PullProgress {
            status: "pulling x".into(),
            total: Some(10),
            completed: Some(20),
            ..Default::default()
        });
        r.update(&PullProgress {
            status: "success".into(),
            ..Default::default()
        });
        r.finish();
    }
}

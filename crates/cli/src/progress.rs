//! Progress of a repair on stderr. On a terminal: a line per finished stage above a spinner
//! that says what runs now, which becomes a bar (candidates validated of those proposed)
//! while candidates are validated; coloured unless `NO_COLOR` is set. Otherwise (CI logs,
//! pipes): plain lines, one per finished stage, and during a long validation one line every
//! [`PLAIN_EVERY`]. With `--json` only the stage lines, plain, so stdout stays the report.
//! Warnings logged while the bar is drawn are printed above it (`telemetry::set_person_sink`).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use proto::messages::StageProgress;

/// In plain output, the least time between two lines of one stage's interim progress.
pub const PLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// stderr is a terminal: spinner, bar, colour when `color`.
    Terminal { color: bool },
    /// Plain lines (stderr is a file or a pipe).
    Plain,
    /// `--json`: the stage lines only.
    Json,
}

impl Mode {
    /// From `--json`, whether stderr is a terminal, and `NO_COLOR` / `TERM=dumb`.
    pub fn detect(json: bool) -> Mode {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Mode::choose(json, std::io::stderr().is_terminal(), no_color)
    }

    fn choose(json: bool, terminal: bool, no_color: bool) -> Mode {
        match (json, terminal) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Terminal { color: !no_color },
            (false, false) => Mode::Plain,
        }
    }
}

/// What the display does for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// A line printed for good (above the bar on a terminal).
    Line(String),
    /// The spinner says what runs now.
    Working(&'static str),
    /// The bar: `done` of `of` candidates validated.
    Bar { done: u32, of: u32 },
}

/// The display's decisions, without the terminal: which lines, spinner texts and bar
/// positions events turn into.
#[derive(Debug)]
pub struct View {
    mode: Mode,
    /// Plain mode: the elapsed time of the stage's last interim line printed.
    last_plain_ms: Option<u64>,
}

impl View {
    pub fn new(mode: Mode) -> View {
        View {
            mode,
            last_plain_ms: None,
        }
    }

    pub fn event(&mut self, e: &StageProgress) -> Vec<Show> {
        match (e.interim, self.mode) {
            (Some((done, of)), Mode::Terminal { .. }) => vec![Show::Bar { done, of }],
            (Some(_), Mode::Json) => vec![],
            (Some(_), Mode::Plain) => {
                let every = PLAIN_EVERY.as_millis() as u64;
                let due = self.last_plain_ms.unwrap_or(0) + every;
                if e.elapsed_ms < due {
                    return vec![];
                }
                self.last_plain_ms = Some(e.elapsed_ms);
                vec![Show::Line(line(e))]
            }
            (None, Mode::Terminal { .. }) => {
                self.last_plain_ms = None;
                vec![Show::Line(line(e)), Show::Working(next(e))]
            }
            (None, _) => {
                self.last_plain_ms = None;
                vec![Show::Line(line(e))]
            }
        }
    }
}

/// What runs after a stage has said what it did (`proto::summary::describe`'s words).
fn next(e: &StageProgress) -> &'static str {
    match e.stage {
        proto::Stage::Triage => "deciding",
        proto::Stage::Decision => "reproducing the failure in the sandbox",
        proto::Stage::Mre => "generating candidates",
        proto::Stage::Fix => "validating candidates in the sandbox",
        // Another attempt follows a failed one with attempts left.
        proto::Stage::Validate
            if !e.summary.starts_with("passed") && !e.summary.ends_with(" 0 attempt(s) left") =>
        {
            "generating candidates"
        }
        _ => "writing the report",
    }
}

/// The spinner's template, and the bar's: plain text, colour only when asked.
fn templates(color: bool) -> (&'static str, &'static str) {
    if color {
        (
            "{spinner:.cyan} {elapsed:>4} {msg}",
            "{spinner:.cyan} {elapsed:>4} [{bar:30.cyan/blue}] {pos}/{len} candidates validated",
        )
    } else {
        (
            "{spinner} {elapsed:>4} {msg}",
            "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} candidates validated",
        )
    }
}

/// The bar being drawn, for warnings logged meanwhile (printed above it).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn print_above(line: &str) {
    let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    match active.as_ref() {
        Some(b) => b.println(line.trim_end_matches('\n')),
        None => eprint!("{line}"),
    }
}

pub struct Progress {
    view: Mutex<View>,
    bar: Option<(ProgressBar, ProgressStyle, ProgressStyle)>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        let mode = Mode::detect(json);
        let p = Progress::drawn(mode, indicatif::ProgressDrawTarget::stderr());
        if let Some((b, _, _)) = &p.bar {
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(b.clone());
            telemetry::set_person_sink(print_above);
        }
        p
    }

    /// The display in `mode`; a terminal's spinner and bar are drawn to `target`.
    fn drawn(mode: Mode, target: indicatif::ProgressDrawTarget) -> Progress {
        let bar = match mode {
            Mode::Terminal { color } => {
                let (spin, bar) = templates(color);
                let spin = ProgressStyle::with_template(spin)
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bar = ProgressStyle::with_template(bar)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                let b = ProgressBar::with_draw_target(None, target);
                b.set_style(spin.clone());
                b.set_message("triage");
                Some((b, spin, bar))
            }
            _ => None,
        };
        Progress {
            view: Mutex::new(View::new(mode)),
            bar,
        }
    }

    /// Shows what a stage did, or how far it is.
    pub fn stage(&self, e: &StageProgress) {
        let shows = self.view.lock().unwrap_or_else(|p| p.into_inner()).event(e);
        for s in shows {
            match (&self.bar, s) {
                (Some((b, _, _)), Show::Line(l)) => b.println(l),
                (None, Show::Line(l)) => eprintln!("{l}"),
                (Some((b, spin, _)), Show::Working(msg)) => {
                    b.set_style(spin.clone());
                    b.set_message(msg);
                }
                (Some((b, _, bar)), Show::Bar { done, of }) => {
                    if b.length() != Some(u64::from(of)) {
                        b.set_style(bar.clone());
                        b.set_length(u64::from(of));
                    }
                    b.set_position(u64::from(done));
                }
                (None, _) => {}
            }
        }
    }

    pub fn finish(&self) {
        if let Some((b, _, _)) = &self.bar {
            *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
            interim: None,
        }
    }

    fn validating(done: u32, of: u32, elapsed_ms: u64) -> StageProgress {
        StageProgress {
            stage: proto::Stage::Validate,
            summary: format!("{done} of {of} candidates validated"),
            elapsed_ms,
            interim: Some((done, of)),
            ..progress(None)
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

    #[test]
    fn the_mode_follows_json_the_terminal_and_no_color() {
        assert_eq!(Mode::choose(true, true, false), Mode::Json);
        assert_eq!(Mode::choose(false, false, false), Mode::Plain);
        assert_eq!(
            Mode::choose(false, true, false),
            Mode::Terminal { color: true }
        );
        assert_eq!(
            Mode::choose(false, true, true),
            Mode::Terminal { color: false }
        );
    }

    /// A validation of 60 candidates reported every 2 s for 14 s, then the stage's line.
    fn a_long_validation() -> Vec<StageProgress> {
        let mut v: Vec<StageProgress> = (1..=7)
            .map(|k| validating(k * 4, 60, u64::from(k) * 2_000 - 100))
            .collect();
        v.push(StageProgress {
            stage: proto::Stage::Validate,
            summary: "passed after 30 candidate(s): 2 changed lines".into(),
            elapsed_ms: 14_000,
            ..progress(None)
        });
        v
    }

    #[test]
    fn plain_output_is_the_stage_lines_and_one_line_per_ten_seconds_of_validation() {
        let mut view = View::new(Mode::Plain);
        let shown: Vec<Show> = std::iter::once(progress(None))
            .chain(a_long_validation())
            .flat_map(|e| view.event(&e))
            .collect();
        assert_eq!(
            shown,
            [
                Show::Line("mre       reproduced (1.2 s)".into()),
                Show::Line("validate  24 of 60 candidates validated (11.9 s)".into()),
                Show::Line(
                    "validate  passed after 30 candidate(s): 2 changed lines (14.0 s)".into()
                ),
            ]
        );
        // A short validation says nothing until its line.
        let mut view = View::new(Mode::Plain);
        assert!(view.event(&validating(3, 60, 600)).is_empty());
    }

    #[test]
    fn json_mode_shows_the_stage_lines_and_nothing_else() {
        let mut view = View::new(Mode::Json);
        let shown: Vec<Show> = a_long_validation()
            .iter()
            .flat_map(|e| view.event(e))
            .collect();
        assert_eq!(
            shown,
            [Show::Line(
                "validate  passed after 30 candidate(s): 2 changed lines (14.0 s)".into()
            )]
        );
    }

    #[test]
    fn a_terminal_shows_a_bar_while_candidates_are_validated_then_the_line_and_what_is_next() {
        let mut view = View::new(Mode::Terminal { color: false });
        let fix = StageProgress {
            stage: proto::Stage::Fix,
            summary: "attempt 1: 60 candidates from search".into(),
            ..progress(None)
        };
        let mut shown = view.event(&fix);
        for e in a_long_validation() {
            shown.extend(view.event(&e));
        }
        let bars: Vec<(u32, u32)> = shown
            .iter()
            .filter_map(|s| match s {
                Show::Bar { done, of } => Some((*done, *of)),
                _ => None,
            })
            .collect();
        assert_eq!(bars, (1..=7).map(|k| (k * 4, 60)).collect::<Vec<_>>());
        assert_eq!(
            shown.first(),
            Some(&Show::Line(
                "fix       attempt 1: 60 candidates from search (1.2 s)".into()
            ))
        );
        assert_eq!(
            shown[1],
            Show::Working("validating candidates in the sandbox")
        );
        assert_eq!(
            &shown[shown.len() - 2..],
            [
                Show::Line(
                    "validate  passed after 30 candidate(s): 2 changed lines (14.0 s)".into()
                ),
                Show::Working("writing the report"),
            ]
        );
        let failed = |left: u32| StageProgress {
            stage: proto::Stage::Validate,
            summary: format!("60 candidate(s) failed; {left} attempt(s) left"),
            ..progress(None)
        };
        assert_eq!(next(&failed(2)), "generating candidates");
        assert_eq!(next(&failed(0)), "writing the report");
    }

    /// A terminal that keeps what is drawn on it, line by line.
    #[derive(Debug, Default, Clone)]
    struct Screen(std::sync::Arc<Mutex<Vec<String>>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_bar_is_drawn_with_its_count_and_the_stage_lines_above_it() {
        let screen = Screen::default();
        let p = Progress::drawn(
            Mode::Terminal { color: false },
            indicatif::ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        let events = [
            StageProgress {
                stage: proto::Stage::Fix,
                summary: "attempt 1: 60 candidates from search".into(),
                ..progress(None)
            },
            validating(15, 60, 2_000),
            validating(30, 60, 4_000),
        ];
        for e in &events {
            p.stage(e);
            // Past the draw rate limit, so every state is drawn.
            std::thread::sleep(std::time::Duration::from_millis(120));
        }
        let drawn = screen.0.lock().unwrap().join("\n");
        assert!(
            drawn.contains("fix       attempt 1: 60 candidates from search (1.2 s)"),
            "{drawn}"
        );
        assert!(
            drawn.contains("validating candidates in the sandbox"),
            "{drawn}"
        );
        let bar = |done: usize| {
            let filled = 30 * done / 60;
            format!(
                "[{}>{}] {done}/60 candidates validated",
                "=".repeat(filled),
                " ".repeat(30 - filled - 1)
            )
        };
        for done in [15, 30] {
            assert!(
                drawn.contains(&bar(done)),
                "no {:?} in:\n{drawn}",
                bar(done)
            );
        }
        assert!(
            !drawn.contains('\u{1b}'),
            "colour without asking: {drawn:?}"
        );
        p.finish();
    }

    #[test]
    fn no_color_templates_have_no_colour_and_every_template_parses() {
        let (spin, bar) = templates(false);
        for t in [spin, bar] {
            assert!(!t.contains(".cyan") && !t.contains(".blue"), "{t}");
        }
        for color in [true, false] {
            let (spin, bar) = templates(color);
            assert!(ProgressStyle::with_template(spin).is_ok(), "{spin}");
            assert!(ProgressStyle::with_template(bar).is_ok(), "{bar}");
        }
    }
}

//! The cleaned log as lines, plus the small text helpers every parser uses.

use crate::input::MAX_LINE_BYTES;

/// A cleaned log split into lines (trailing whitespace removed, each cut to 16 KiB).
pub(crate) struct Log<'a> {
    pub text: &'a str,
    pub lines: Vec<&'a str>,
}

impl<'a> Log<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut lines: Vec<&str> = text.split('\n').map(|l| cut(l.trim_end())).collect();
        strip_line_prefixes(&mut lines);
        Log { text, lines }
    }

    pub fn has(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }

    /// Index of the first line at or after `from` matching `pred`.
    pub fn find_from(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        let rest = self.lines.get(from..)?;
        rest.iter().position(|l| pred(l)).map(|p| p + from)
    }

    pub fn line(&self, i: usize) -> &'a str {
        self.lines.get(i).copied().unwrap_or("")
    }
}

/// Removes the per-line prefixes that CI systems, log collectors and Android's logcat add:
/// timestamps (GitHub Actions and GitLab raw logs, GitLab's stream marker `01O`, Jenkins'
/// Timestamper `[2024-05-14T09:12:44.123Z]`), a `docker compose` service column
/// (`web-1  | `) and logcat's tags (`E/AndroidRuntime( 1234): `, `-v threadtime`, Android
/// Studio's columns). A prefix is removed only when most lines carry it, so a log line that
/// happens to start like one is left alone. Android Studio prints the columns on the first line
/// of an entry only and indents the rest deeply: those lines lose the indentation.
fn strip_line_prefixes(lines: &mut [&str]) {
    let prefixes = [
        // logcat first: its own timestamps would otherwise be taken for a CI system's.
        regex!(r"^[VDIWEFA]/[^():]+\(\s*\d+\): ?"),
        regex!(r"^\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\s+\d+\s+\d+ [VDIWEFA] [^:]*: ?"),
        regex!(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} \d+-\d+/\S+ [VDIWEFA]/[^:]+: ?"),
        regex!(
            r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?(?: \d{2}[OE]\+?)? ?"
        ),
        regex!(r"^\[(?:\d{4}-\d{2}-\d{2}T)?\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?\] ?"),
        regex!(r"^[A-Za-z][\w.-]*\s+\| ?"),
    ];
    // Whether most lines carry a prefix is decided on an even sample of at most ~1000 lines,
    // so the prefixes a long log does not have cost little.
    let step = (lines.len() / 1000).max(1);
    // Again after a prefix came off: prefixes nest (a CI runner's timestamp before `docker
    // compose`'s or logcat's).
    for _ in 0..2 {
        let mut stripped = false;
        for prefix in prefixes {
            let sample = lines.iter().step_by(step).filter(|l| !l.is_empty());
            let (with_prefix, non_empty) = sample.fold((0, 0), |(w, n), l| {
                (w + usize::from(prefix.is_match(l)), n + 1)
            });
            if with_prefix * 2 <= non_empty {
                continue;
            }
            stripped = true;
            for l in lines.iter_mut() {
                if let Some(m) = prefix.find(l) {
                    *l = l.get(m.end()..).unwrap_or(l);
                }
            }
        }
        if !stripped {
            break;
        }
    }
    let studio =
        regex!(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\s+\d+-\d+\s+\S+\s+\S+\s+[VDIWEFA]\s+");
    let indent = " ".repeat(STUDIO_INDENT);
    let mut in_entry = false;
    for l in lines.iter_mut() {
        // `2024-05-14 09:12:44.001 …`: checked by bytes before the regex runs.
        let b = l.as_bytes();
        let dated = b.get(4) == Some(&b'-') && b.get(10) == Some(&b' ') && b.get(19) == Some(&b'.');
        if let Some(m) = dated.then(|| studio.find(l)).flatten() {
            *l = l.get(m.end()..).unwrap_or(l);
            in_entry = true;
        } else if in_entry && l.starts_with(indent.as_str()) {
            *l = l.trim_start_matches(' ');
        } else {
            in_entry = false;
        }
    }
}

/// Android Studio's logcat indents the continuation lines of an entry at least this deep.
const STUDIO_INDENT: usize = 40;

/// `s` cut to at most [`MAX_LINE_BYTES`], on a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_LINE_BYTES {
        return s;
    }
    let mut end = MAX_LINE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Parses a line or column number; `None` for anything that is not a `u32`.
pub(crate) fn num(s: &str) -> Option<u32> {
    s.parse().ok()
}

/// A capture group as `&str` ("" when absent).
pub(crate) fn cap<'h>(c: &regex::Captures<'h>, i: usize) -> &'h str {
    c.get(i).map_or("", |m| m.as_str())
}

/// The first line of a possibly multi-line text.
pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Pushes `name` unless already present.
pub(crate) fn push_unique(names: &mut Vec<String>, name: &str) {
    if !name.is_empty() && !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// `captures` that tries the cheaper `is_match` first: most lines match nothing, and a
/// failed `captures` still allocates its slots.
pub(crate) trait Caps {
    fn caps<'h>(&self, haystack: &'h str) -> Option<regex::Captures<'h>>;
}

impl Caps for regex::Regex {
    fn caps<'h>(&self, haystack: &'h str) -> Option<regex::Captures<'h>> {
        if self.is_match(haystack) {
            self.captures(haystack)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_prefixes_are_stripped_when_most_lines_have_them() {
        let gha =
            "2024-05-01T10:00:01.1234567Z Traceback\n2024-05-01T10:00:01Z   File \"x\"\n\nplain";
        assert_eq!(
            Log::new(gha).lines,
            ["Traceback", "  File \"x\"", "", "plain"]
        );
        let compose = "web-1  | Error: x\nweb-1  |     at f (a.js:1:2)\nweb-1 exited with code 1";
        assert_eq!(
            Log::new(compose).lines,
            [
                "Error: x",
                "    at f (a.js:1:2)",
                "web-1 exited with code 1"
            ]
        );
        let jenkins = "[Pipeline] sh\n[2024-05-14T09:12:44.019Z] + pytest\n[2024-05-14T09:12:44.039Z] Traceback\n[09:12:44] ZeroDivisionError: x";
        assert_eq!(
            Log::new(jenkins).lines,
            [
                "[Pipeline] sh",
                "+ pytest",
                "Traceback",
                "ZeroDivisionError: x"
            ]
        );
        let gitlab =
            "2024-05-14T09:12:44.021100Z 01O $ pytest\n2024-05-14T09:12:44.042200Z 01E+Error: x";
        assert_eq!(Log::new(gitlab).lines, ["$ pytest", "Error: x"]);
        let logcat = "D/AndroidRuntime( 4321): Shutting down VM\nE/AndroidRuntime( 4321): FATAL EXCEPTION: main\nE/AndroidRuntime( 4321): \tat a.B.c(B.java:1)";
        assert_eq!(
            Log::new(logcat).lines,
            [
                "Shutting down VM",
                "FATAL EXCEPTION: main",
                "\tat a.B.c(B.java:1)"
            ]
        );
        let threadtime = "05-14 09:12:44.001  4321  4321 E AndroidRuntime: FATAL EXCEPTION: main\n05-14 09:12:44.002  4321  4321 E AndroidRuntime: Process: x, PID: 4321";
        assert_eq!(
            Log::new(threadtime).lines,
            ["FATAL EXCEPTION: main", "Process: x, PID: 4321"]
        );
        let studio = format!(
            "2024-05-14 09:12:44.001  4321-4321  AndroidRuntime          com.example.app  E  FATAL EXCEPTION: main\n{}java.lang.X: y\n{}\tat a.B.c(B.java:1)\nnext",
            " ".repeat(100),
            " ".repeat(100)
        );
        assert_eq!(
            Log::new(&studio).lines,
            [
                "FATAL EXCEPTION: main",
                "java.lang.X: y",
                "\tat a.B.c(B.java:1)",
                "next"
            ]
        );
        let nested = "2024-05-14T09:12:44.0137000Z E/AndroidRuntime( 812): FATAL EXCEPTION: main\n2024-05-14T09:12:44.0274000Z E/AndroidRuntime( 812): java.lang.X: y";
        assert_eq!(
            Log::new(nested).lines,
            ["FATAL EXCEPTION: main", "java.lang.X: y"]
        );
        let few = "2024-05-01T10:00:01Z started\nError: x\n    at f (a.js:1:2)";
        assert_eq!(
            Log::new(few).lines.first(),
            Some(&"2024-05-01T10:00:01Z started")
        );
    }
}

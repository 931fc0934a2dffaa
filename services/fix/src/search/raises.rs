//! What a test log says was expected to be raised and was not: the exception's name and,
//! where the test pins it, its message.
//!
//! - pytest: `DID NOT RAISE <class 'ValueError'>`; the message from the `match=` of the
//!   `pytest.raises(...)` line pytest prints with `>` above it.
//! - node: `Missing expected exception (RangeError).`, or `Missing expected exception.` when
//!   the test gave a pattern, not a class; the message from the `assert.throws` line the
//!   stack points at in the test file (`/pattern/`, or `{ message: '...' }`).
//! - Go: errors are values, so a failing test's own words (`gave no error`, `expected an
//!   error`, `err = <nil>`); a sentinel (`ErrBadDigit`) when the line names one.

use std::path::Path;

/// An exception (Go: an error) the tests expected and that was not raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The class (`ValueError`), a Go sentinel (`ErrEmpty`), or `error` for any Go error.
    pub name: String,
    /// The message the test asks for, when it names one as plain text.
    pub message: Option<String>,
}

/// [`Expected`] for Go's "any error".
pub const ANY_ERROR: &str = "error";

/// The exceptions `log` says were expected and not raised, with the messages the tests ask
/// for. `read` returns a test file's text from a path as the log writes it (absolute paths of
/// another machine included), or `None`; it is asked only for node's `assert.throws` lines.
pub fn expected_raises(log: &str, read: &dyn Fn(&str) -> Option<String>) -> Vec<Expected> {
    let mut out: Vec<Expected> = vec![];
    let mut push = |e: Expected| {
        if !out.contains(&e) {
            out.push(e);
        }
    };
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = between(l, "DID NOT RAISE <class '", '\'') {
            let Some(name) = class_name(name) else {
                continue;
            };
            // The `>` line pytest prints is the statement that failed: `with pytest.raises(..)`.
            let message = lines[..i]
                .iter()
                .rev()
                .take(30)
                .find(|p| p.trim_start().starts_with('>'))
                .and_then(|p| pytest_match(p));
            push(Expected { name, message });
        } else if let Some(rest) = l
            .find("Missing expected exception")
            .map(|k| &l[k + "Missing expected exception".len()..])
        {
            let name = rest
                .strip_prefix(" (")
                .and_then(|r| r.split(')').next())
                .and_then(class_name);
            let message = lines[i..]
                .iter()
                .take(20)
                .find_map(|s| stack_location(s))
                .and_then(|(path, line)| {
                    let text = read(path)?;
                    let at = text.lines().nth(line.checked_sub(1)?)?;
                    node_throws_message(at)
                });
            // A pattern without a class: any Error with that message passes.
            match (name, message) {
                (Some(name), message) => push(Expected { name, message }),
                (None, Some(m)) => push(Expected {
                    name: "Error".to_owned(),
                    message: Some(m),
                }),
                (None, None) => {}
            }
        } else if let Some(e) = go_expected_error(l) {
            push(e);
        }
    }
    out
}

/// A reader for [`expected_raises`]: the file a log's path names inside `root`, found by the
/// longest suffix of the path that exists there (a log written on another machine has other
/// absolute paths). Only regular files inside `root`, at most 1 MB.
pub fn reader_under(root: &Path) -> impl Fn(&str) -> Option<String> + '_ {
    move |path: &str| {
        let parts: Vec<&str> = path.split(['/', '\\']).collect();
        (0..parts.len()).find_map(|k| {
            let rest = &parts[k..];
            if rest.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
                return None;
            }
            let file = root.join(rest.join("/"));
            let meta = std::fs::symlink_metadata(&file).ok()?;
            if !meta.is_file() || meta.len() > 1 << 20 {
                return None;
            }
            std::fs::read_to_string(file).ok()
        })
    }
}

/// The text between `marker` and the next `end`.
fn between<'a>(l: &'a str, marker: &str, end: char) -> Option<&'a str> {
    let i = l.find(marker)?;
    l[i + marker.len()..].split(end).next()
}

/// A plain class name: the last part of a module path, an identifier with a capital.
fn class_name(name: &str) -> Option<String> {
    let name = name.rsplit('.').next().unwrap_or(name);
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_uppercase());
    plain.then(|| name.to_owned())
}

/// The message of `pytest.raises(X, match=r"...")` on a line, when the pattern is plain text.
fn pytest_match(l: &str) -> Option<String> {
    let call = &l[l.find("pytest.raises(")?..];
    let rest = call[call.find("match")? + "match".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let raw = rest.starts_with(['r', 'R']);
    let rest = if raw { &rest[1..] } else { rest };
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &rest[1..];
    let end = body.find(q)?;
    plain_pattern(&body[..end])
}

/// `file:line` of the first stack frame in a node TAP block (`at ... (/p/t.test.js:15:10)`
/// or `TestContext.<anonymous> (/p/t.test.js:15:10)`), or its `location:` line.
fn stack_location(l: &str) -> Option<(&str, usize)> {
    let t = l.trim();
    let t = t
        .strip_prefix("location: ")
        .map(|x| x.trim_matches('\''))
        .or_else(|| t.rsplit_once('(').map(|(_, r)| r.trim_end_matches(')')))?;
    if t.starts_with("node:") {
        return None;
    }
    let (path_line, _col) = t.rsplit_once(':')?;
    let (path, line) = path_line.rsplit_once(':')?;
    let line = line.parse().ok()?;
    let test_file = [".js", ".mjs", ".cjs", ".ts"]
        .iter()
        .any(|x| path.ends_with(x));
    test_file.then_some((path, line))
}

/// The message an `assert.throws(fn, /pattern/)` or `assert.throws(fn, { message: '...' })`
/// line asks for.
fn node_throws_message(l: &str) -> Option<String> {
    let call = &l[l.find("throws(")?..];
    if let Some(k) = call.find("message") {
        let rest = call[k + "message".len()..].trim_start().strip_prefix(':')?;
        let rest = rest.trim_start();
        let q = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))?;
        let body = &rest[1..];
        return Some(body[..body.find(q)?].to_owned()).filter(|m| !m.is_empty());
    }
    // The pattern: a regex literal after the first top-level comma.
    let mut depth = 0i32;
    for (i, c) in call.char_indices().skip("throws(".len()) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                let rest = call[i + 1..].trim_start().strip_prefix('/')?;
                let end = rest.find('/')?;
                return plain_pattern(&rest[..end]);
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    None
}

/// A regular expression that matches one plain text (anchors and escaped punctuation
/// allowed): that text, else `None`.
fn plain_pattern(p: &str) -> Option<String> {
    let p = p.strip_prefix('^').unwrap_or(p);
    let p = p.strip_suffix('$').unwrap_or(p);
    let mut out = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() || e == ' ' => out.push(e),
                _ => return None,
            },
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                return None;
            }
            _ => out.push(c),
        }
    }
    (!out.trim().is_empty() && out.len() <= 200).then_some(out)
}

/// A Go test's line saying an error was expected and none came: `gave no error`,
/// `expected an error`, `want error`, `err = <nil>`; with the sentinel it names, if any.
fn go_expected_error(l: &str) -> Option<Expected> {
    let t = l.trim_start();
    // go test's own lines and a test's log lines are `file_test.go:17: ...`.
    let (_, said) = t.split_once("_test.go:")?;
    let low = said.to_ascii_lowercase();
    let says = [
        "no error",
        "expected error",
        "expected an error",
        "expected err",
        "want error",
        "want an error",
        "wanted error",
        "wanted an error",
        "want err",
        "want non-nil",
    ]
    .iter()
    .any(|p| low.contains(p))
        || (low.contains("err") && low.contains("<nil>"));
    if !says {
        return None;
    }
    let sentinel = said
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| {
            w.len() > 3
                && w.starts_with("Err")
                && w[3..].starts_with(|c: char| c.is_ascii_uppercase())
        });
    Some(Expected {
        name: sentinel.unwrap_or(ANY_ERROR).to_owned(),
        message: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn pytest_names_the_class_and_match_gives_the_message() {
        let log = "    def test_cycle():\n>       with pytest.raises(ValueError, match=r\"^cycle found\\.$\"):\nE       Failed: DID NOT RAISE <class 'ValueError'>\n";
        assert_eq!(
            expected_raises(log, &none),
            [Expected {
                name: "ValueError".into(),
                message: Some("cycle found.".into())
            }]
        );
        // A pattern that is not plain text gives no message; a module path its last name.
        let log = ">       with pytest.raises(ValueError, match='cyc.*'):\nE       Failed: DID NOT RAISE <class 'topo.CycleError'>\n";
        assert_eq!(
            expected_raises(log, &none),
            [Expected {
                name: "CycleError".into(),
                message: None
            }]
        );
        assert!(expected_raises("E   Failed: DID NOT RAISE <class 'x y'>", &none).is_empty());
    }

    #[test]
    fn node_reads_the_assert_throws_line_the_stack_points_at() {
        let log = "not ok 2 - reduce\n  error: 'Missing expected exception.'\n  stack: |-\n    TestContext.<anonymous> (/tmp/other/js_gcd/test/gcd.test.js:3:10)\n    Test.runInAsyncScope (node:async_hooks:206:9)\n";
        let test = "const x = 1;\n\n  assert.throws(() => reduce(1, 0), /^zero denominator$/);\n";
        let read = |p: &str| (p == "/tmp/other/js_gcd/test/gcd.test.js").then(|| test.to_owned());
        assert_eq!(
            expected_raises(log, &read),
            [Expected {
                name: "Error".into(),
                message: Some("zero denominator".into())
            }]
        );
        let test = "\n\n  assert.throws(() => f(), { name: 'RangeError', message: 'too big' });\n";
        let read = |_: &str| Some(test.to_owned());
        let log = log.replace("exception.'", "exception (RangeError).'");
        assert_eq!(
            expected_raises(&log, &read),
            [Expected {
                name: "RangeError".into(),
                message: Some("too big".into())
            }]
        );
        // Without the test file the class alone; without a class or a message nothing.
        assert_eq!(
            expected_raises(&log, &none),
            [Expected {
                name: "RangeError".into(),
                message: None
            }]
        );
        assert!(expected_raises("error: 'Missing expected exception.'", &none).is_empty());
    }

    #[test]
    fn go_tests_say_an_error_was_expected_in_their_own_words() {
        let log = "--- FAIL: TestParseErrors (0.00s)\n    roman_test.go:17: Parse(\"XIZ\") gave no error\nFAIL\n";
        assert_eq!(
            expected_raises(log, &none),
            [Expected {
                name: ANY_ERROR.into(),
                message: None
            }]
        );
        let log = "    stack_test.go:9: Pop() err = <nil>, want ErrEmpty\n";
        assert_eq!(expected_raises(log, &none)[0].name, "ErrEmpty");
        // A failure about values is not an expected error.
        assert!(expected_raises("    sum_test.go:9: Sum() = 3, want 4\n", &none).is_empty());
    }
}

//! Java: exceptions (`Caused by:`, `... N more`, `Suppressed:`), javac, JUnit 4
//! (JUnitCore), JUnit 5 ConsoleLauncher, Maven Surefire, maven-compiler-plugin errors and
//! Maven's own build failures.

use proto::messages::{Category, Frame, Language};

use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};
use crate::{MAX_CAUSE_DEPTH, ParsedLog};

const LANG: Language = Language::Java;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    surefire(log)
        .or_else(|| junit5(log))
        .or_else(|| junit4(log))
        .or_else(|| compile_error(log))
        .or_else(|| uncaught(log))
        .or_else(|| maven_failure(log))
}

/// `java.lang.IllegalStateException: msg`: (class, message). The class must be qualified.
fn exception_header(l: &str) -> Option<(&str, &str)> {
    let c = regex!(r"^([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+)(?:: (.*))?$").caps(l)?;
    Some((c.get(1)?.as_str(), cap(&c, 2)))
}

/// `pkg.Class.method(File.java:N)` with an optional module prefix (`java.base/`).
fn frame_of(entry: &str) -> Option<Frame> {
    let c = regex!(r"^([^\s(]+)\(([^()]*)\)$").caps(entry.trim())?;
    let (file, line) = match cap(&c, 2).rsplit_once(':') {
        Some((file, line)) => (file, num(line)),
        None => (cap(&c, 2), None),
    };
    Some(frame(LANG, file, line, None, Some(cap(&c, 1))))
}

/// One exception of a printed chain.
struct Segment<'a> {
    class: &'a str,
    message: &'a str,
    frames: Vec<Frame>,
}

/// The exception whose header is at `lines[h]` (after any `Exception in thread "x" `
/// prefix) and its `Caused by:` chain, stopping at the first line that belongs to neither.
fn chain<'a>(lines: &[&'a str], h: usize, header: &'a str) -> Vec<Segment<'a>> {
    let mut segments = Vec::new();
    let Some((class, message)) = exception_header(header) else {
        return segments;
    };
    segments.push(Segment {
        class,
        message,
        frames: Vec::new(),
    });
    let mut suppressed = false;
    for l in lines.iter().skip(h + 1) {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("Caused by: ").filter(|_| l.starts_with('C')) {
            let Some((class, message)) = exception_header(rest) else {
                break;
            };
            segments.push(Segment {
                class,
                message,
                frames: Vec::new(),
            });
            suppressed = false;
        } else if t.starts_with("Suppressed: ") || (suppressed && l.starts_with("\t\t")) {
            suppressed = true;
        } else if let Some(entry) = t.strip_prefix("at ") {
            suppressed = false;
            if let (Some(f), Some(s)) = (frame_of(entry), segments.last_mut()) {
                s.frames.push(f);
            }
        } else if !(t.starts_with("... ") && t.ends_with(" more")) {
            break;
        }
    }
    segments
}

/// The report for the first segment, with the rest as nested causes (depth-capped).
fn report(segments: Vec<Segment>, format: &str) -> Option<ParsedLog> {
    let mut reports: Vec<ParsedLog> = segments
        .into_iter()
        .take(MAX_CAUSE_DEPTH + 1)
        .map(|s| {
            let mut p = ParsedLog::new(LANG, format);
            p.frames = s.frames;
            p.set_error(s.class, s.message);
            p
        })
        .collect();
    let mut cause: Option<ParsedLog> = None;
    while let Some(mut p) = reports.pop() {
        if let Some(c) = cause.take() {
            p.set_cause(c);
        }
        cause = Some(p);
    }
    cause
}

/// `Exception in thread "main" …`, else the first qualified exception header followed by an
/// `at` line.
fn uncaught(log: &Log) -> Option<ParsedLog> {
    let thread = regex!(r#"^Exception in thread ".*?" (.*)$"#);
    let (h, header) = log
        .lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| thread.caps(l).map(|c| (i, cap(&c, 1))))
        .or_else(|| {
            log.lines.iter().enumerate().find_map(|(i, l)| {
                let next_is_frame = log.line(i + 1).trim_start().starts_with("at ")
                    && frame_of(log.line(i + 1).trim_start().trim_start_matches("at ")).is_some();
                (next_is_frame && exception_header(l).is_some()).then_some((i, *l))
            })
        })?;
    report(chain(&log.lines, h, header), "java-exception")
}

/// Surefire: `[ERROR] test(Class)  Time elapsed: … <<< FAILURE!` then the trimmed trace.
fn surefire(log: &Log) -> Option<ParsedLog> {
    let test = regex!(r"^\[ERROR\] (.+?)(?:\s+--)?\s+Time elapsed:.*<<< (?:FAILURE|ERROR)!$");
    let mut names = Vec::new();
    let mut first = None;
    for (i, l) in log.lines.iter().enumerate() {
        if let Some(c) = test.caps(l) {
            push_unique(&mut names, cap(&c, 1));
            first = first.or(Some(i));
        }
    }
    let first = first?;
    let mut p = report(
        chain(&log.lines, first + 1, log.line(first + 1)),
        "maven-surefire",
    )
    .unwrap_or_else(|| ParsedLog::new(LANG, "maven-surefire"));
    p.failing_tests = names;
    Some(p)
}

/// JUnit 5 ConsoleLauncher: a `Failures (N):` section with `  JUnit Jupiter:Class:test()`
/// names, `=> Class: message` and frames without `at `.
fn junit5(log: &Log) -> Option<ParsedLog> {
    let start = log.find_from(0, |l| regex!(r"^Failures \(\d+\):$").is_match(l))?;
    let name = regex!(r"^  (JUnit [^:]+:.+)$");
    let mut p: Option<ParsedLog> = None;
    let mut names = Vec::new();
    let mut i = start + 1;
    while let Some(l) = log.lines.get(i) {
        i += 1;
        if let Some(c) = name.caps(l) {
            push_unique(&mut names, cap(&c, 1));
        } else if let Some(rest) = l.trim_start().strip_prefix("=> ")
            && p.is_none()
        {
            let Some((class, message)) = exception_header(rest) else {
                continue;
            };
            let mut r = ParsedLog::new(LANG, "junit5");
            while let Some(f) = log.lines.get(i).and_then(|l| frame_of(l)) {
                r.frames.push(f);
                i += 1;
            }
            r.set_error(class, message);
            p = Some(r);
        } else if l.starts_with("Test run finished") {
            break;
        }
    }
    let mut p = p?;
    p.failing_tests = names;
    Some(p)
}

/// JUnit 4 (JUnitCore): `There were N failures:` then `1) test(Class)` blocks.
fn junit4(log: &Log) -> Option<ParsedLog> {
    let start = log.find_from(0, |l| {
        regex!(r"^There (?:was|were) \d+ failures?:$").is_match(l)
    })?;
    let name = regex!(r"^\d+\) (.+)$");
    let mut names = Vec::new();
    let mut p = None;
    for (i, l) in log.lines.iter().enumerate().skip(start + 1) {
        let Some(c) = name.caps(l) else { continue };
        push_unique(&mut names, cap(&c, 1));
        if p.is_none() {
            p = report(chain(&log.lines, i + 1, log.line(i + 1)), "junit4");
        }
    }
    let mut p = p?;
    p.failing_tests = names;
    Some(p)
}

/// javac (`File.java:7: error: msg`) and maven-compiler-plugin (`[ERROR] /abs/File.java:[14,17] msg`).
fn compile_error(log: &Log) -> Option<ParsedLog> {
    let javac = regex!(r"^(.+?\.java):(\d+): error: (.*)$");
    let maven = regex!(r"^\[ERROR\] (.+?\.java):\[(\d+),(\d+)\] (.*)$");
    let (format, file, line, col, msg) = log.lines.iter().find_map(|l| {
        if let Some(c) = maven.caps(l) {
            Some((
                "maven-compiler",
                cap(&c, 1),
                num(cap(&c, 2)),
                num(cap(&c, 3)),
                cap(&c, 4),
            ))
        } else {
            javac
                .caps(l)
                .map(|c| ("javac", cap(&c, 1), num(cap(&c, 2)), None, cap(&c, 3)))
        }
    })?;
    let mut p = ParsedLog::new(LANG, format);
    p.location = Some(frame(LANG, file, line, col, None));
    p.set_error("compile error", msg);
    p.category = compile_category(msg);
    Some(p)
}

fn compile_category(msg: &str) -> Category {
    if msg.contains("expected")
        || msg.starts_with("illegal start of")
        || msg.starts_with("unclosed")
        || msg.contains("reached end of file")
    {
        Category::Syntax
    } else if msg.starts_with("package ") && msg.ends_with("does not exist") {
        Category::Import
    } else if msg.starts_with("cannot find symbol") {
        Category::Name
    } else {
        Category::Type
    }
}

/// Maven's own failure (plugin or dependency resolution, bad POM): the first `[ERROR]`
/// line, typed by the exception named in its `[Help 1]` link.
fn maven_failure(log: &Log) -> Option<ParsedLog> {
    if !log.has("BUILD FAILURE") {
        return None;
    }
    let msg = log.lines.iter().find_map(|l| {
        l.strip_prefix("[ERROR] ")
            .map(str::trim)
            .filter(|m| !m.is_empty())
    })?;
    let kind = log
        .lines
        .iter()
        .find_map(|l| regex!(r"/MAVEN/(\w+)\s*$").caps(l))
        .map_or("BUILD FAILURE", |c| c.get(1).map_or("", |m| m.as_str()));
    let mut p = ParsedLog::new(LANG, "maven");
    p.set_error(kind, msg);
    p.category = match crate::category::by_message(msg) {
        Some(c) => c,
        None if msg.contains("offline") || msg.contains("Cannot access") => Category::Environment,
        None => match kind {
            "PluginResolutionException" => Category::Environment,
            "DependencyResolutionException" | "ArtifactResolutionException" => Category::Import,
            "ProjectBuildingException" | "ModelParseException" => Category::FileConfig,
            _ => Category::Other,
        },
    };
    Some(p)
}

//! C and C++: gcc/clang diagnostics (`file:line:col: error:`), linker errors, sanitizer
//! reports (ASan, LSan, UBSan) and crashes reported by the shell or make (`Segmentation
//! fault`).

use proto::messages::{Category, Frame, Language};

use crate::ParsedLog;
use crate::frames::{external, frame};
use crate::lines::{Caps, Log, cap, num};

const LANG: Language = Language::C;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    sanitizer(log)
        .or_else(|| compile_error(log))
        .or_else(|| link_error(log))
        .or_else(|| signal(log))
}

fn compile_error(log: &Log) -> Option<ParsedLog> {
    let diag = regex!(
        r"^(.+?\.(?:c|h|cc|cpp|cxx|c\+\+|hh|hpp|hxx|ipp|inl|m|mm|C|H)):(\d+):(?:(\d+):)? (?:fatal )?error: (.*)$"
    );
    let c = log.lines.iter().find_map(|l| diag.caps(l))?;
    let msg = cap(&c, 4);
    let mut p = ParsedLog::new(LANG, "c-compiler");
    p.location = Some(frame(
        LANG,
        cap(&c, 1),
        num(cap(&c, 2)),
        num(cap(&c, 3)),
        None,
    ));
    p.set_error("compile error", msg);
    p.category = compile_category(msg);
    Some(p)
}

fn compile_category(msg: &str) -> Category {
    if msg.contains("No such file or directory") || msg.ends_with("file not found") {
        // `#include "x.h"` that cannot be found.
        Category::Import
    } else if msg.starts_with("expected") || msg.starts_with("unterminated") || msg.contains("before") && msg.contains("expected") {
        Category::Syntax
    } else if regex!(r"undeclared|use of undeclared|implicit declaration|unknown type name|was not declared|not declared in this scope|has no member named|no member named").is_match(msg) {
        Category::Name
    } else {
        Category::Type
    }
}

/// `undefined reference to `f'`, `multiple definition of`, `cannot find -lx`, macOS
/// `Undefined symbols`.
fn link_error(log: &Log) -> Option<ParsedLog> {
    let link = regex!(
        r"(undefined reference to .*|multiple definition of .*|cannot find -l\S+.*|Undefined symbols for architecture .*)$"
    );
    let (l, c) = log
        .lines
        .iter()
        .find_map(|l| link.caps(l).map(|c| (*l, c)))?;
    let msg = cap(&c, 1);
    let mut p = ParsedLog::new(LANG, "linker");
    p.set_error("link error", msg);
    p.category = if msg.starts_with("cannot find -l") {
        Category::Import
    } else {
        Category::Name
    };
    // With debug info, ld names the source line: `main.c:12: undefined reference to …`.
    if let Some(s) = regex!(r"^(.+?):(\d+): ").caps(l) {
        p.location = Some(frame(LANG, cap(&s, 1), num(cap(&s, 2)), None, None));
    }
    Some(p)
}

/// `==PID==ERROR: AddressSanitizer: heap-buffer-overflow on address …` with the first stack,
/// or UBSan's `file:line:col: runtime error: …`.
fn sanitizer(log: &Log) -> Option<ParsedLog> {
    let error = regex!(r"^==\d+==ERROR: (\w+Sanitizer: (.*))$");
    let Some((i, c)) = log
        .lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| error.caps(l).map(|c| (i, c)))
    else {
        return ubsan(log);
    };
    let what = cap(&c, 2);
    let kind = if what.starts_with("detected memory leaks") {
        "memory-leak"
    } else {
        let w = what.strip_prefix("attempting ").unwrap_or(what);
        w.split_whitespace().next().unwrap_or(w)
    };
    let mut p = ParsedLog::new(LANG, "sanitizer");
    p.set_error(kind, cap(&c, 1));
    p.category = Category::Runtime;
    let entry = regex!(r"^\s+#\d+ 0x[0-9a-fA-F]+ (.*)$");
    let start = log.find_from(i + 1, |l| entry.is_match(l));
    if let Some(start) = start {
        p.frames = log
            .lines
            .iter()
            .skip(start)
            .map_while(|l| entry.caps(l))
            .map(|c| sanitizer_frame(cap(&c, 1)))
            .collect();
    }
    Some(p)
}

/// `in fill /path/buffer.c:12`, `in _start (/path/app+0x10f0)`, `(/lib/libc.so.6+0x29d90)`.
fn sanitizer_frame(s: &str) -> Frame {
    let s = s.strip_prefix("in ").unwrap_or(s);
    let (function, location) = match s.rsplit_once(' ') {
        Some((f, loc)) => (Some(f), loc),
        None if s.starts_with('(') => (None, s),
        None => (Some(s), ""),
    };
    if let Some(module) = location.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
        // A binary and offset: no source, not something to repair.
        return external(module, function);
    }
    match regex!(r"^(.+?):(\d+)(?::(\d+))?$").caps(location) {
        Some(c) => frame(LANG, cap(&c, 1), num(cap(&c, 2)), num(cap(&c, 3)), function),
        None => frame(LANG, location, None, None, function),
    }
}

fn ubsan(log: &Log) -> Option<ParsedLog> {
    let c = log.lines.iter().find_map(|l| {
        regex!(r"^(.+?\.(?:c|h|cc|cpp|cxx|hpp)):(\d+):(\d+): runtime error: (.*)$").caps(l)
    })?;
    let mut p = ParsedLog::new(LANG, "sanitizer");
    p.location = Some(frame(
        LANG,
        cap(&c, 1),
        num(cap(&c, 2)),
        num(cap(&c, 3)),
        None,
    ));
    p.set_error("runtime error", cap(&c, 4));
    p.category = Category::Runtime;
    Some(p)
}

/// A crash with no report but the shell's or make's word for the signal.
fn signal(log: &Log) -> Option<ParsedLog> {
    let sig =
        regex!(r"(Segmentation fault|Bus error|Floating point exception|Illegal instruction)");
    let (l, c) = log
        .lines
        .iter()
        .rev()
        .find_map(|l| sig.caps(l).map(|c| (*l, c)))?;
    // Only C when the log shows a C toolchain; any program can segfault.
    let c_toolchain = log.lines.iter().any(|l| {
        regex!(r"^(?:gcc|cc|clang|g\+\+|clang\+\+|make)(?:\s|:|$)").is_match(l)
            || regex!(r"\.(?:c|cc|cpp)\b").is_match(l)
    });
    let mut p = ParsedLog::new(if c_toolchain { LANG } else { Language::Unknown }, "signal");
    p.set_error(cap(&c, 1), l.trim());
    p.category = Category::Runtime;
    Some(p)
}

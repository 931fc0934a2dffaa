//! Parse error logs (stack traces, compiler errors, test-runner output) into typed reports.
//!
//! [`parse`] strips ANSI escapes and normalises line endings, then asks the parser of each
//! language family in turn whether it recognises the log; inside a family the most specific
//! format goes first (a test runner before the stack traces it prints). The first parser that
//! recognises the log produces the [`ParsedLog`]; when none does, a generic fallback picks the
//! most error-like line. Formats are recognised by content only.
//!
//! Nothing here panics on input: indexing goes through `get`, the input is capped
//! ([`MAX_LOG_BYTES`], lines at 16 KiB), chains are depth-limited, and the `regex` crate
//! matches in linear time.

/// A `&'static Regex` compiled once. Patterns are literals, so compiling cannot fail at run
/// time on any input; the fixture tests exercise every pattern.
macro_rules! regex {
    ($re:literal) => {{
        static RE: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new($re).expect("static regex is valid"));
        &*RE
    }};
}

mod c;
mod category;
mod frames;
mod generic;
mod go;
mod input;
mod java;
mod js;
mod lines;
mod php;
mod python;
mod ruby;
mod rust;

pub use input::{InputError, MAX_LOG_BYTES, text_from_bytes};
pub use proto::messages::{Category, Frame, Language};

use lines::Log;

/// Chained causes kept at most (the rest of a longer chain is dropped).
const MAX_CAUSE_DEPTH: usize = 8;

/// What a log says went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedLog {
    pub language: Language,
    /// Class or code as printed (`ZeroDivisionError`, `E0308`, `TS2322`,
    /// `java.lang.NullPointerException`), or a label where the tool prints none (`panic`,
    /// `compile error`, `link error`, `test failure`).
    pub error_type: String,
    /// First line of the error message.
    pub message: String,
    pub category: Category,
    /// Stack of the final error, innermost first (`frames[0]` is where it was raised).
    pub frames: Vec<Frame>,
    /// Where the tool says the error is when that is not a stack entry: a compiler
    /// diagnostic, a panic or assertion location, a PHP throw site, the source banner of a
    /// JavaScript SyntaxError, a Ruby SyntaxError position.
    pub location: Option<Frame>,
    /// Failing tests as the runner names them, in report order.
    pub failing_tests: Vec<String>,
    /// The chained cause ("During handling…", "direct cause", Java `Caused by:`, JS `[cause]`).
    pub cause: Option<Box<ParsedLog>>,
    /// Which parser recognised the log: `python-traceback`, `pytest`, `go-test-json`, ...
    pub format: String,
}

impl ParsedLog {
    fn new(language: Language, format: &str) -> Self {
        ParsedLog {
            language,
            format: format.to_string(),
            ..ParsedLog::default()
        }
    }

    /// The innermost place in the project's own code: the reported location when it is in
    /// the project, else the innermost project stack frame.
    pub fn innermost_project_frame(&self) -> Option<&Frame> {
        self.location
            .iter()
            .chain(&self.frames)
            .find(|f| f.in_project)
    }

    /// The innermost project frame of the error, else of its nearest cause that has one: a
    /// wrapper (`ExecutionException`, Android's `RuntimeException: Unable to start activity`)
    /// whose own frames are all framework code points at its cause's.
    pub fn project_frame(&self) -> Option<&Frame> {
        let mut cur = Some(self);
        while let Some(p) = cur {
            if let Some(f) = p.innermost_project_frame() {
                return Some(f);
            }
            cur = p.cause.as_deref();
        }
        None
    }

    /// Stack frames inside the project.
    pub fn project_frame_count(&self) -> usize {
        self.frames.iter().filter(|f| f.in_project).count()
    }

    /// Stack frames outside the project (stdlib, dependencies, runtime internals).
    pub fn external_frame_count(&self) -> usize {
        self.frames.len() - self.project_frame_count()
    }

    /// Sets `error_type` and `message` and derives `category` from them.
    fn set_error(&mut self, error_type: &str, message: &str) {
        self.error_type = error_type.to_string();
        self.message = message.trim().to_string();
        self.category = category::of(self.language, &self.error_type, &self.message);
    }

    /// Attaches a cause; a runtime-level error whose cause is about the environment (the
    /// network, a file, permissions) takes that category.
    fn set_cause(&mut self, cause: ParsedLog) {
        if matches!(self.category, Category::Runtime | Category::Other)
            && matches!(
                cause.category,
                Category::Network | Category::FileConfig | Category::Environment
            )
        {
            self.category = cause.category;
        }
        self.cause = Some(Box::new(cause));
    }
}

type Parser = fn(&Log) -> Option<ParsedLog>;

/// Language families in the order they are asked. Each family's own detection is specific
/// enough (see the module docs) that the order only matters for logs mixing languages.
const PARSERS: [Parser; 8] = [
    python::parse,
    js::parse,
    go::parse,
    rust::parse,
    java::parse,
    ruby::parse,
    php::parse,
    c::parse,
];

/// Parses an error log. Never panics; unknown input gives [`Language::Unknown`] and
/// [`Category::Other`] with the most error-like line as the message.
pub fn parse(log: &str) -> ParsedLog {
    let text = input::clean(log);
    let log = Log::new(&text);
    PARSERS
        .iter()
        .find_map(|p| p(&log))
        .unwrap_or_else(|| generic::parse(&log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn python_traceback() -> String {
        "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 3, in <module>\n    main()\nZeroDivisionError: division by zero\n".to_string()
    }

    #[test]
    fn ansi_and_crlf_do_not_change_the_result() {
        let plain = parse(&python_traceback());
        let dirty = python_traceback()
            .replace('\n', "\r\n")
            .replace("ZeroDivisionError", "\x1b[1;31mZeroDivisionError\x1b[0m");
        assert_eq!(parse(&dirty), plain);
        assert_eq!(plain.error_type, "ZeroDivisionError");
        assert_eq!(plain.message, "division by zero");
    }

    #[test]
    fn unknown_input_gives_the_most_error_like_line() {
        let p = parse("starting\nsomething went wrong: fatal error in widget\nbye\n");
        assert_eq!(p.language, Language::Unknown);
        assert_eq!(p.category, Category::Other);
        assert_eq!(p.message, "something went wrong: fatal error in widget");
        assert_eq!(parse("").message, "");
        assert_eq!(parse("just text").message, "just text");
    }

    /// Release builds must parse a 50 MB log in well under a second; debug builds are only
    /// held to not blowing up.
    fn budget(release: Duration) -> Duration {
        // A guard against quadratic blow-ups, not a measurement (that is `cargo bench -p
        // logparse`): a debug build on a busy two-core machine runs these 3 to 20 s.
        if cfg!(debug_assertions) {
            release * 120
        } else {
            release
        }
    }

    #[test]
    fn fifty_megabyte_log_is_fast() {
        let mut log = String::with_capacity(50 << 20);
        let filler =
            "2024-01-01T00:00:00Z INFO worker: processed batch id=42 items=100 error=none\n";
        for i in 0usize.. {
            if log.len() >= (50 << 20) - 1024 {
                break;
            }
            log.push_str(filler);
            if i & 7 == 0 {
                log.push_str("    at Object.<anonymous> (/srv/app/x.js:1:2)\n");
            }
        }
        log.push_str(&python_traceback());
        let start = Instant::now();
        let text = text_from_bytes(log.as_bytes()).expect("text");
        let p = parse(&text);
        let took = start.elapsed();
        eprintln!("50 MB log: text_from_bytes + parse took {took:?}");
        assert_eq!(p.error_type, "ZeroDivisionError");
        assert!(took < budget(Duration::from_millis(500)), "took {took:?}");
    }

    #[test]
    fn fifty_megabyte_log_without_a_known_error_is_fast() {
        let log = "INFO nothing to see here, all fine\n".repeat((50 << 20) / 35);
        let start = Instant::now();
        let p = parse(&text_from_bytes(log.as_bytes()).expect("text"));
        let took = start.elapsed();
        eprintln!("50 MB unrecognised log: text_from_bytes + parse took {took:?}");
        assert_eq!(p.format, "unknown");
        assert!(took < budget(Duration::from_millis(500)), "took {took:?}");
    }

    /// Variants of the supported formats that the real fixtures do not cover.
    #[test]
    fn format_variants() {
        let cases: &[(&str, Language, &str, &str, &str, &str)] = &[
            (
                "2024-05-01T10:00:01.1234567Z Traceback (most recent call last):\n2024-05-01T10:00:01.1234567Z   File \"/w/app/main.py\", line 3, in <module>\n2024-05-01T10:00:01.1234567Z ZeroDivisionError: division by zero\n2024-05-01T10:00:01.2Z ##[error]Process completed with exit code 1.\n",
                Language::Python,
                "python-traceback",
                "ZeroDivisionError",
                "division by zero",
                "/w/app/main.py:3",
            ),
            (
                // Python 2.7's layout (written from its documented format; no Python 2 runs here).
                "Traceback (most recent call last):\n  File \"manage.py\", line 10, in <module>\n    execute(sys.argv)\n  File \"/srv/app/settings.py\", line 4, in load\n    return json.loads(raw)\n  File \"/usr/lib/python2.7/json/__init__.py\", line 339, in loads\n    return _default_decoder.decode(s)\nValueError: No JSON object could be decoded\n",
                Language::Python,
                "python-traceback",
                "ValueError",
                "No JSON object could be decoded",
                "/srv/app/settings.py:4",
            ),
            (
                "web-1  | Traceback (most recent call last):\nweb-1  |   File \"/app/main.py\", line 3, in <module>\nweb-1  | ModuleNotFoundError: No module named 'flask'\nweb-1 exited with code 1\n",
                Language::Python,
                "python-traceback",
                "ModuleNotFoundError",
                "No module named 'flask'",
                "/app/main.py:3",
            ),
            (
                "=== FAILURES ===\n_____ test_x _____\nTraceback (most recent call last):\n  File \"/app/tests/test_x.py\", line 5, in test_x\nAssertionError: assert 1 == 2\n=== short test summary info ===\nFAILED tests/test_x.py::test_x - AssertionError\n",
                Language::Python,
                "pytest",
                "AssertionError",
                "assert 1 == 2",
                "/app/tests/test_x.py:5",
            ),
            (
                "/app/src/index.ts:5\n    throw new Error('boom');\n          ^\n\nError: boom\n    at main (/app/src/index.ts:5:11)\n    at Module._compile (node:internal/modules/cjs/loader:1521:14)\n",
                Language::TypeScript,
                "node",
                "Error",
                "boom",
                "/app/src/index.ts:5",
            ),
            (
                "Exception in thread \"main\" java.io.IOException: write failed\n\tat com.x.A.run(A.java:10)\n\tSuppressed: java.lang.IllegalStateException: close\n\t\tat com.x.B.close(B.java:3)\n\tat com.x.Main.main(Main.java:5)\nCaused by: java.net.ConnectException: Connection refused\n\tat com.x.A.open(A.java:20)\n\t... 2 more\n",
                Language::Java,
                "java-exception",
                "java.io.IOException",
                "write failed",
                "A.java:10",
            ),
            (
                "/app/lib/stats.rb:3:in 'Integer#/': divided by 0 (ZeroDivisionError)\n\tfrom main.rb:3:in '<main>'\n",
                Language::Ruby,
                "ruby",
                "ZeroDivisionError",
                "divided by 0",
                "/app/lib/stats.rb:3",
            ),
            (
                "Traceback (most recent call last):\n\t1: from main.rb:3:in `<main>'\n/app/lib/stats.rb:3:in `/': divided by 0 (ZeroDivisionError)\n",
                Language::Ruby,
                "ruby",
                "ZeroDivisionError",
                "divided by 0",
                "/app/lib/stats.rb:3",
            ),
            (
                "thread 'main' panicked at 'index out of bounds: the len is 3 but the index is 5', src/main.rs:4:5\n",
                Language::Rust,
                "rust-panic",
                "panic",
                "index out of bounds: the len is 3 but the index is 5",
                "src/main.rs:4",
            ),
            (
                "main.c:1:10: fatal error: foo.h: No such file or directory\ncompilation terminated.\n",
                Language::C,
                "c-compiler",
                "compile error",
                "foo.h: No such file or directory",
                "main.c:1",
            ),
            (
                "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 [chan receive]:\nmain.main()\n\t/app/main.go:5 +0x25\n",
                Language::Go,
                "go-panic",
                "fatal error",
                "all goroutines are asleep - deadlock!",
                "/app/main.go:5",
            ),
            (
                "PHPUnit 10.5.0\n\nThere was 1 failure:\n\n1) Tests\\CalcTest::testAdd\nFailed asserting that 3 matches expected 4.\n\n/app/tests/CalcTest.php:12\n",
                Language::Php,
                "phpunit",
                "PHPUnit\\Framework\\ExpectationFailedException",
                "Failed asserting that 3 matches expected 4.",
                "/app/tests/CalcTest.php:12",
            ),
        ];
        for (log, language, format, error_type, message, innermost) in cases {
            let p = parse(log);
            let got = p
                .innermost_project_frame()
                .map(|f| format!("{}:{}", f.file, f.line.unwrap_or(0)));
            assert_eq!(
                (
                    p.language,
                    p.format.as_str(),
                    p.error_type.as_str(),
                    p.message.as_str(),
                    got.as_deref()
                ),
                (*language, *format, *error_type, *message, Some(*innermost)),
                "{log}"
            );
        }
    }

    #[test]
    fn a_php_trace_without_its_error_and_a_github_annotation() {
        let p = parse(
            "#0 /var/www/app/Exceptions/Handler.php(26): App\\Exceptions\\Handler->report()\n#1 /var/www/vendor/laravel/framework/src/Illuminate/Foundation/Http/Kernel.php(491): App\\Exceptions\\Handler->report()\n#2 /var/www/public/index.php(52): Illuminate\\Foundation\\Http\\Kernel->handle()\n#3 {main}\n",
        );
        assert_eq!((p.language, p.error_type.as_str()), (Language::Php, ""));
        assert_eq!(p.frames.len(), 3);
        assert!(!p.frames[1].in_project, "vendor/ is external");
        let f = p.innermost_project_frame().expect("a project frame");
        assert_eq!(
            (f.file.as_str(), f.line),
            ("/var/www/app/Exceptions/Handler.php", Some(26))
        );

        let p = parse(
            "Run npx tsc --noEmit\n::error file=src/app.ts,line=12,col=5::TypeError: x is not a function\n",
        );
        assert_eq!(p.language, Language::TypeScript);
        assert_eq!(p.format, "github-annotation");
        assert_eq!(p.error_type, "TypeError");
        let f = p.innermost_project_frame().expect("the annotation's place");
        assert_eq!(
            (f.file.as_str(), f.line, f.column),
            ("src/app.ts", Some(12), Some(5))
        );
    }

    #[test]
    fn a_wrapper_without_project_frames_points_at_its_cause() {
        let log = "E/AndroidRuntime( 812): FATAL EXCEPTION: main\nE/AndroidRuntime( 812): Process: com.example.notes, PID: 812\nE/AndroidRuntime( 812): java.lang.RuntimeException: Unable to start activity ComponentInfo{com.example.notes/com.example.notes.MainActivity}: java.lang.NullPointerException\nE/AndroidRuntime( 812): \tat android.app.ActivityThread.performLaunchActivity(ActivityThread.java:2416)\nE/AndroidRuntime( 812): \tat android.os.Looper.loop(Looper.java:154)\nE/AndroidRuntime( 812): Caused by: java.lang.NullPointerException: Attempt to invoke virtual method on a null object reference\nE/AndroidRuntime( 812): \tat com.example.notes.MainActivity.onCreate(MainActivity.java:27)\nE/AndroidRuntime( 812): \tat android.app.Activity.performCreate(Activity.java:6679)\nE/AndroidRuntime( 812): \t... 2 more\n";
        let p = parse(log);
        assert_eq!(p.language, Language::Java);
        assert_eq!(p.error_type, "java.lang.RuntimeException");
        assert!(p.innermost_project_frame().is_none());
        let f = p.project_frame().expect("the cause's frame");
        assert_eq!((f.file.as_str(), f.line), ("MainActivity.java", Some(27)));
    }

    #[test]
    fn pathological_lines_do_not_blow_up() {
        let cases = [
            "a".repeat(10 << 20),
            "Error: ".repeat(1 << 20),
            "\tat ".repeat(2 << 20),
            format!(
                "Traceback (most recent call last):\n{}",
                "  File \"".repeat(1 << 20)
            ),
            "thread 'main' panicked at ".repeat(300_000),
            "panic: x\n\ngoroutine 1 [running]:\n".to_string() + &"f()\n\tx.go:1\n".repeat(300_000),
            "==1==ERROR: AddressSanitizer: ".repeat(300_000),
            "\x1b[".repeat(3 << 20),
            "é".repeat(5 << 20),
        ];
        for log in cases {
            let start = Instant::now();
            let _ = parse(&log);
            let took = start.elapsed();
            eprintln!("pathological {} bytes: {took:?}", log.len());
            assert!(took < budget(Duration::from_millis(500)), "took {took:?}");
        }
    }

    #[test]
    fn long_cause_chains_are_capped() {
        let mut log = String::new();
        for i in 0..10_000 {
            log.push_str(&format!(
                "Traceback (most recent call last):\n  File \"a.py\", line {i}, in f\nValueError: {i}\n\nDuring handling of the above exception, another exception occurred:\n\n"
            ));
        }
        log.push_str(
            "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nKeyError: 'x'\n",
        );
        let p = parse(&log);
        let mut depth = 0;
        let mut c = p.cause.as_deref();
        while let Some(x) = c {
            depth += 1;
            c = x.cause.as_deref();
        }
        assert_eq!(depth, MAX_CAUSE_DEPTH);

        let java = format!(
            "Exception in thread \"main\" java.lang.RuntimeException: top\n\tat a.B.c(B.java:1)\n{}",
            "Caused by: java.lang.RuntimeException: x\n\tat a.B.c(B.java:1)\n".repeat(50_000)
        );
        let p = parse(&java);
        assert_eq!(p.error_type, "java.lang.RuntimeException");
        assert!(p.cause.is_some());
    }
}

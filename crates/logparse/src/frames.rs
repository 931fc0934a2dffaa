//! Frame construction and the project/external classifier shared by all parsers.
//!
//! A frame is external when it is stdlib, runtime or third-party code: what a repair should
//! not touch. Everything else is in the project. Rules go by path segments, not substrings,
//! so a project directory called `node_modules_error` stays in the project.

use proto::messages::{Frame, Language};

use crate::lines::Caps;

/// A frame classified for `lang`.
pub(crate) fn frame(
    lang: Language,
    file: &str,
    line: Option<u32>,
    column: Option<u32>,
    function: Option<&str>,
) -> Frame {
    let function = function.map(str::trim).filter(|f| !f.is_empty());
    let in_project = !is_external(lang, file, function.unwrap_or(""));
    Frame {
        file: file.to_string(),
        line,
        column,
        function: function.map(str::to_string),
        in_project,
        // By the path as written; triage decides again from the project's own layout.
        test: in_project && vocab::is_test_path(&file.replace('\\', "/")),
        resolved: None,
    }
}

/// A frame known to be outside the project (a native frame without source, say).
pub(crate) fn external(file: &str, function: Option<&str>) -> Frame {
    Frame {
        file: file.to_string(),
        function: function.map(str::to_string),
        ..Frame::default()
    }
}

pub(crate) fn is_external(lang: Language, file: &str, function: &str) -> bool {
    // A trace from Windows (`C:\\Users\\dev\\.cargo\\registry\\...`) is judged like one from Unix.
    let file = &file.replace('\\', "/");
    match lang {
        Language::Python => python(file),
        Language::JavaScript | Language::TypeScript => js(file),
        Language::Go => go(file, function),
        Language::Rust => rust(file, function),
        Language::Java => java(function),
        Language::Ruby => ruby(file),
        Language::Php => php(file),
        Language::C => c(file, function),
        Language::Unknown => {
            python(file) || js(file) || rust(file, "") || ruby(file) || php(file) || c(file, "")
        }
    }
}

/// Whether one of `path`'s components (split at `/` and `\`) is `segment`.
fn has_segment(path: &str, segment: &str) -> bool {
    path.split(['/', '\\']).any(|s| s == segment)
}

fn python(file: &str) -> bool {
    file.starts_with("<frozen")
        || file == "<string>"
        || has_segment(file, "site-packages")
        || has_segment(file, "dist-packages")
        || ["/usr/lib/python", "/usr/lib64/python", "/usr/local/lib/python"]
            .iter()
            .any(|p| file.starts_with(p))
        // An interpreter's own stdlib: pyenv, venv base, conda, python.org builds; on Windows
        // `...\\Python311\\Lib\\json\\decoder.py` (the stdlib directory is `Lib`).
        || regex!(r"[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\]").is_match(file)
        || regex!(r"(?i)[/\\]python\d*[/\\]lib[/\\]").is_match(file)
        || regex!(r"^[A-Za-z]:[/\\].*[/\\]Lib[/\\]").is_match(file)
}

fn js(file: &str) -> bool {
    let file = file.strip_prefix("file://").unwrap_or(file);
    file.starts_with("node:")
        || file.starts_with("internal/")
        || file.starts_with('<')
        || file == "native"
        || file.is_empty()
        || has_segment(file, "node_modules")
}

fn go(file: &str, function: &str) -> bool {
    if file.is_empty() {
        let f = function.strip_prefix("created by ").unwrap_or(function);
        return f == "panic" || f.starts_with("runtime.") || f.starts_with("testing.");
    }
    if has_segment(file, "vendor") || file.contains("/pkg/mod/") {
        return true;
    }
    // GOROOT (`/usr/lib/go-1.19/src/regexp/...`, `/usr/local/go/src/net/...`, `C:/Program
    // Files/Go/src/...`): the first package segment is a standard library package, unlike a
    // project in a GOPATH (`/go/src/app/...` in the golang images, `~/go/src/github.com/...`).
    regex!(r"(?i)(?:^|/)go(?:-?\d+(?:\.\d+)*)?/src/([^/]+)/")
        .caps(file)
        .and_then(|c| c.get(1))
        .is_some_and(|m| GO_STD.contains(&m.as_str()))
}

/// The top-level directories of Go's standard library (`$GOROOT/src/*`).
const GO_STD: &[&str] = &[
    "archive",
    "bufio",
    "builtin",
    "bytes",
    "cmd",
    "cmp",
    "compress",
    "container",
    "context",
    "crypto",
    "database",
    "debug",
    "embed",
    "encoding",
    "errors",
    "expvar",
    "flag",
    "fmt",
    "go",
    "hash",
    "html",
    "image",
    "index",
    "internal",
    "io",
    "iter",
    "log",
    "maps",
    "math",
    "mime",
    "net",
    "os",
    "path",
    "plugin",
    "reflect",
    "regexp",
    "runtime",
    "slices",
    "sort",
    "strconv",
    "strings",
    "structs",
    "sync",
    "syscall",
    "testing",
    "text",
    "time",
    "unicode",
    "unique",
    "unsafe",
    "vendor",
    "weak",
];

fn rust(file: &str, function: &str) -> bool {
    // `RUST_BACKTRACE=full` symbols: `std[e28293b1aa0f68bd]::io::Write::write_fmt::h8336…`.
    let function = &regex!(r"\[[0-9a-f]{8,}\]").replace_all(function, "");
    if file.is_empty() {
        return [
            "std::",
            "core::",
            "alloc::",
            "<std::",
            "<core::",
            "<alloc::",
            "__rustc::",
            "test::",
            "rust_begin_unwind",
            "__libc_start",
            "_start",
        ]
        .iter()
        .any(|p| function.starts_with(p));
    }
    file.starts_with("/rustc/")
        || [
            "/.cargo/registry/",
            "/.cargo/git/",
            "/.rustup/toolchains/",
            "/library/std/src/",
        ]
        .iter()
        .any(|p| file.contains(p))
}

fn java(function: &str) -> bool {
    // `java.base/java.lang.String.compareTo`, `app//com.example.Main.main`: drop the module.
    let qualified = function.rsplit('/').next().unwrap_or(function);
    [
        "java.",
        "javax.",
        "jdk.",
        "sun.",
        "com.sun.",
        "org.junit.",
        "junit.",
        "org.apache.maven.",
        "org.opentest4j.",
        "org.hamcrest.",
        "org.gradle.",
        "kotlin.",
        "kotlinx.",
        "scala.",
        // The Android framework, its runtime and support libraries.
        "android.",
        "androidx.",
        "com.android.",
        "dalvik.",
        "libcore.",
        "com.google.android.",
    ]
    .iter()
    .any(|p| qualified.starts_with(p))
}

fn ruby(file: &str) -> bool {
    file.starts_with("<internal:")
        || has_segment(file, "gems")
        || ["/usr/lib/ruby/", "/usr/local/lib/ruby/", "/opt/ruby/"]
            .iter()
            .any(|p| file.starts_with(p))
        || [
            "/.rbenv/versions/",
            "/.rvm/rubies/",
            "/.rubies/",
            "/vendor/bundle/",
        ]
        .iter()
        .any(|p| file.contains(p))
        || regex!(r"/lib/ruby/\d").is_match(file)
}

fn php(file: &str) -> bool {
    file == "[internal function]"
        || has_segment(file, "vendor")
        || file.starts_with("/usr/share/php/")
        || file.starts_with("phar://")
}

fn c(file: &str, function: &str) -> bool {
    [
        "__libc_",
        "__interceptor_",
        "__asan",
        "__sanitizer",
        "__ubsan",
        "_start",
    ]
    .iter()
    .any(|p| function.starts_with(p))
        || regex!(r"(?:^|/)(?:sysdeps|csu|libsanitizer|compiler-rt)/").is_match(file)
        || [
            "/usr/include/",
            "/usr/lib/",
            "/lib/x86_64-linux-gnu/",
            "/lib64/",
        ]
        .iter()
        .any(|p| file.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_modules_only_as_a_segment() {
        assert!(js("/p/node_modules/tiny-csv/lib/parse.js"));
        assert!(js("file:///p/node_modules/x/index.js"));
        assert!(!js("/tmp/node/node_modules_error/src/report.js"));
        assert!(js("node:internal/modules/cjs/loader"));
        assert!(js("<anonymous>"));
    }

    #[test]
    fn python_stdlib_and_packages() {
        assert!(python(
            "/root/.pyenv/versions/3.11.7/lib/python3.11/socket.py"
        ));
        assert!(python("/usr/lib/python3.11/json/decoder.py"));
        assert!(python(
            "/app/.venv/lib/python3.12/site-packages/requests/api.py"
        ));
        assert!(python("<frozen os>"));
        assert!(!python(
            "/tmp/coval-fixtures/python/key_error/users/lookup.py"
        ));
        assert!(!python("tests/test_x.py"));
    }

    #[test]
    fn go_root_versus_gopath_projects() {
        assert!(go(
            "/usr/lib/go-1.19/src/testing/testing.go",
            "testing.tRunner"
        ));
        assert!(go("/usr/local/go/src/runtime/panic.go", "panic"));
        assert!(go("/root/go/pkg/mod/github.com/x/y@v1.0.0/y.go", "y.F"));
        assert!(!go("/home/u/go/src/github.com/me/app/main.go", "main.main"));
        assert!(!go(
            "/tmp/app/internal/queue/queue.go",
            "x/internal/queue.F"
        ));
        assert!(go("", "runtime.gopanic"));
        assert!(!go(
            "/go/src/nilptr/store/store.go",
            "example.com/nilptr/store.F"
        ));
        assert!(go("C:/Program Files/Go/src/runtime/panic.go", "panic"));
    }

    #[test]
    fn other_families() {
        assert!(rust("/rustc/5980/library/core/src/result.rs", ""));
        assert!(rust(
            "/root/.cargo/registry/src/index/bytes-1.12.2/src/lib.rs",
            ""
        ));
        assert!(!rust("./src/main.rs", "app::main"));
        assert!(java("java.base/java.util.TimSort.sort"));
        assert!(java("org.junit.Assert.fail"));
        assert!(!java("com.example.Main.main"));
        assert!(java("android.os.Handler.dispatchMessage"));
        assert!(java("com.android.internal.os.ZygoteInit.main"));
        assert!(is_external(
            Language::Python,
            r"C:\Users\dev\AppData\Local\Programs\Python\Python311\Lib\json\decoder.py",
            ""
        ));
        assert!(!is_external(
            Language::Python,
            r"C:\Users\dev\shop\app\config.py",
            ""
        ));
        assert!(is_external(
            Language::Rust,
            r"C:\Users\dev\.cargo\registry\src\index.crates.io-1\bytes-1.12.2\src\lib.rs",
            ""
        ));
        assert!(rust("", "std[e28293b1aa0f68bd]::io::Write::write_fmt"));
        assert!(ruby(
            "<internal:/usr/lib/ruby/vendor_ruby/rubygems/core_ext/kernel_require.rb>"
        ));
        assert!(ruby("/usr/lib/ruby/3.1.0/json/common.rb"));
        assert!(ruby("/home/u/.gem/ruby/3.1.0/gems/rack-3.0/lib/rack.rb"));
        assert!(php("/app/vendor/guzzle/src/Client.php"));
        assert!(php("[internal function]"));
        assert!(c(
            "../sysdeps/nptl/libc_start_call_main.h",
            "__libc_start_call_main"
        ));
        assert!(!c("/tmp/app/buffer.c", "fill"));
    }
}

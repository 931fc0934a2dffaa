//! Mapping an error (language, type, message) to a [`Category`].
//!
//! Precedence: a data-format parse error (JSON, YAML, TOML) is a config problem whatever its
//! class; then a type that names a category outright (SyntaxError, ModuleNotFoundError,
//! NameError, ConnectionRefusedError, FileNotFoundError, PermissionError, ...); then words in
//! the message that point at the environment (connection refused, no such file, permission
//! denied); then a type that only suggests a category (TypeError, which also covers a
//! `fetch failed` network error); then Runtime.

use proto::messages::{Category, Language};

/// How sure a type-based category is: `Strong` beats message keywords, `Weak` does not.
#[derive(Clone, Copy, PartialEq)]
enum Strength {
    Strong,
    Weak,
}

pub(crate) fn of(lang: Language, error_type: &str, message: &str) -> Category {
    if is_data_format_error(error_type, message) {
        return Category::FileConfig;
    }
    let by_type = by_type(lang, error_type, message);
    if let Some((c, Strength::Strong)) = by_type {
        return c;
    }
    if let Some(c) = by_message(message) {
        return c;
    }
    by_type.map_or(Category::Runtime, |(c, _)| c)
}

fn is_data_format_error(error_type: &str, message: &str) -> bool {
    let t = error_type.to_ascii_lowercase();
    ["json", "yaml", "toml", "psych::", "configparser"]
        .iter()
        .any(|k| t.contains(k))
        || regex!(r"\bin JSON at position\b|^Unexpected token .* in JSON|^Unexpected end of JSON")
            .is_match(message)
}

/// Message words that name an environment problem, whatever the exception class.
pub(crate) fn by_message(message: &str) -> Option<Category> {
    let network = regex!(
        r"(?i)connection refused|ECONNREFUSED|ECONNRESET|connection reset|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|getaddrinfo|name or service not known|temporary failure in name resolution|no route to host|network is unreachable|fetch failed|socket hang up|kind: ConnectionRefused|kind: TimedOut|dial tcp|certificate verify failed|connection timed out"
    );
    let file = regex!(
        r"(?i)no such file or directory|\bENOENT\b|kind: NotFound|failed to open stream|cannot find the file"
    );
    let environment = regex!(
        r"(?i)permission denied|\bEACCES\b|\bEPERM\b|kind: PermissionDenied|out of memory|cannot allocate memory|\bENOMEM\b|no space left on device|\bENOSPC\b|command not found"
    );
    let import =
        regex!(r"Cannot find module|ERR_MODULE_NOT_FOUND|No module named|cannot load such file");
    if network.is_match(message) {
        Some(Category::Network)
    } else if file.is_match(message) {
        Some(Category::FileConfig)
    } else if environment.is_match(message) {
        Some(Category::Environment)
    } else if import.is_match(message) {
        Some(Category::Import)
    } else {
        None
    }
}

fn by_type(lang: Language, error_type: &str, message: &str) -> Option<(Category, Strength)> {
    use Category::*;
    use Strength::*;
    // `json.decoder.JSONDecodeError`, `Errno::ENOENT`, `App\Error`: the last component names it.
    let simple = error_type.rsplit(['.', '\\']).next().unwrap_or(error_type);
    let found = match lang {
        Language::Python => match simple {
            "SyntaxError" | "IndentationError" | "TabError" => (Syntax, Strong),
            "ModuleNotFoundError" | "ImportError" => (Import, Strong),
            "NameError" | "UnboundLocalError" => (Name, Strong),
            "FileNotFoundError" | "IsADirectoryError" | "NotADirectoryError" => {
                (FileConfig, Strong)
            }
            "PermissionError" | "MemoryError" => (Environment, Strong),
            "TypeError" | "AttributeError" => (Type, Weak),
            s if is_network_class(s) => (Network, Strong),
            _ => return None,
        },
        Language::JavaScript | Language::TypeScript => match simple {
            "SyntaxError" => (Syntax, Strong),
            "ReferenceError" => (Name, Strong),
            "TypeError" => (Type, Weak),
            "FATAL ERROR" => (Environment, Strong),
            _ => return None,
        },
        Language::Java => match simple {
            "ClassCastException" | "ArrayStoreException" => (Type, Weak),
            "ClassNotFoundException" | "NoClassDefFoundError" => (Import, Strong),
            "NoSuchMethodError" | "NoSuchFieldError" => (Name, Strong),
            "FileNotFoundException" | "NoSuchFileException" => (FileConfig, Strong),
            "AccessDeniedException" | "OutOfMemoryError" => (Environment, Strong),
            s if is_network_class(s) => (Network, Strong),
            _ => return None,
        },
        Language::Ruby => {
            if let Some(errno) = error_type.strip_prefix("Errno::") {
                return errno_category(errno).map(|c| (c, Strong));
            }
            match simple {
                "SyntaxError" => (Syntax, Strong),
                "LoadError" => (Import, Strong),
                "NoMethodError" if message.contains("nil") => (Type, Weak),
                "NameError" | "NoMethodError" => (Name, Strong),
                "TypeError" => (Type, Weak),
                "NoMemoryError" => (Environment, Strong),
                "SocketError" | "OpenTimeout" | "ReadTimeout" => (Network, Strong),
                _ => return None,
            }
        }
        Language::Php => match simple {
            "ParseError" | "Parse error" => (Syntax, Strong),
            "TypeError" | "ArgumentCountError" => (Type, Weak),
            "Error" if message.starts_with("Call to undefined") => (Name, Strong),
            "Error" if message.starts_with("Class \"") && message.ends_with("not found") => {
                (Import, Strong)
            }
            _ => return None,
        },
        Language::Go | Language::Rust | Language::C | Language::Unknown => return None,
    };
    Some(found)
}

fn is_network_class(simple: &str) -> bool {
    simple.starts_with("Connection")
        || simple.contains("Timeout")
        || matches!(
            simple,
            "URLError"
                | "HTTPError"
                | "gaierror"
                | "herror"
                | "timeout"
                | "SSLError"
                | "ConnectException"
                | "UnknownHostException"
                | "SocketException"
                | "NoRouteToHostException"
        )
}

fn errno_category(errno: &str) -> Option<Category> {
    match errno {
        "ENOENT" | "EISDIR" | "ENOTDIR" => Some(Category::FileConfig),
        "EACCES" | "EPERM" | "ENOSPC" | "ENOMEM" | "EROFS" => Some(Category::Environment),
        "ECONNREFUSED" | "ECONNRESET" | "ETIMEDOUT" | "EHOSTUNREACH" | "ENETUNREACH" | "EPIPE" => {
            Some(Category::Network)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let py = Language::Python;
        assert_eq!(
            of(py, "json.decoder.JSONDecodeError", "x"),
            Category::FileConfig
        );
        assert_eq!(
            of(py, "ImportError", "libx.so: No such file or directory"),
            Category::Import
        );
        assert_eq!(
            of(py, "ValueError", "connection refused"),
            Category::Network
        );
        assert_eq!(of(py, "TypeError", "unsupported operand"), Category::Type);
        assert_eq!(
            of(py, "ZeroDivisionError", "division by zero"),
            Category::Runtime
        );
        let js = Language::JavaScript;
        assert_eq!(of(js, "TypeError", "fetch failed"), Category::Network);
        assert_eq!(
            of(
                js,
                "SyntaxError",
                "Unexpected token } in JSON at position 37"
            ),
            Category::FileConfig
        );
        assert_eq!(
            of(Language::Ruby, "Errno::ENOENT", "x"),
            Category::FileConfig
        );
    }
}

//! The one `Language`: the wire enum of `proto`, with what the other crates ask of it (which
//! language a file is written in, which sandbox image runs it).

pub use proto::messages::Language;

/// What crates above `proto` ask of a [`Language`]; `proto` stays free of sandbox settings.
pub trait LanguageExt {
    /// The key of this language in `sandbox.images` (TypeScript runs on the node image).
    fn key(self) -> &'static str;
}

impl LanguageExt for Language {
    fn key(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript | Language::TypeScript => "node",
            Language::Go => "go",
            Language::Rust => "rust",
            Language::Java => "java",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::C => "c",
            Language::Unknown => "unknown",
        }
    }
}

/// The language of a source file, from its extension; `None` for anything that is not source.
pub fn language_of(path: &str) -> Option<Language> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "py" => Language::Python,
        "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
        "ts" | "tsx" | "mts" | "cts" => Language::TypeScript,
        "go" => Language::Go,
        "rs" => Language::Rust,
        "java" => Language::Java,
        "rb" => Language::Ruby,
        "php" => Language::Php,
        "c" | "h" | "cc" | "cpp" | "hpp" => Language::C,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_extension() {
        let cases = [
            ("app/calc.py", Some(Language::Python)),
            ("web/x.mjs", Some(Language::JavaScript)),
            ("ui/App.tsx", Some(Language::TypeScript)),
            ("cmd/main.go", Some(Language::Go)),
            ("src/lib.rs", Some(Language::Rust)),
            ("A.java", Some(Language::Java)),
            ("spec/a_spec.rb", Some(Language::Ruby)),
            ("index.php", Some(Language::Php)),
            ("vm/x.hpp", Some(Language::C)),
            ("README.md", None),
            ("Makefile", None),
            // A dot in a directory name is not an extension.
            ("pkg.v2/Makefile", None),
        ];
        for (path, want) in cases {
            assert_eq!(language_of(path), want, "{path}");
        }
    }

    #[test]
    fn image_keys_are_the_sandbox_config_keys() {
        assert_eq!(Language::JavaScript.key(), "node");
        assert_eq!(Language::TypeScript.key(), "node");
        assert_eq!(Language::Python.key(), "python");
        assert_eq!(Language::Php.key(), "php");
    }
}

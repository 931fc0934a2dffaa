//! An answer as lines with its fenced blocks found, and how to read a file path from the
//! lines around an edit (`**app/calc.py**`, `# File: app/calc.py`, a fence's info string).

/// A fenced block: the opening line, the closing line (none when the answer ends inside it).
#[derive(Debug, Clone)]
pub struct Fence {
    pub open: usize,
    pub close: Option<usize>,
    pub info: String,
    pub indent: usize,
}

pub struct Doc<'a> {
    pub lines: Vec<&'a str>,
    /// Top-level fences, in order.
    pub fences: Vec<Fence>,
}

/// `(indent, marker char, marker length, info)` when `line` is a fence line.
pub fn fence_marker(line: &str) -> Option<(usize, char, usize, &str)> {
    let rest = line.trim_start_matches(' ');
    let indent = line.len() - rest.len();
    let c = rest.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = rest.chars().take_while(|&x| x == c).count();
    if n < 3 {
        return None;
    }
    let info = rest[n..].trim();
    if c == '`' && info.contains('`') {
        return None;
    }
    Some((indent, c, n, info))
}

impl<'a> Doc<'a> {
    pub fn new(text: &'a str) -> Doc<'a> {
        let lines: Vec<&str> = text.split('\n').collect();
        let fences = find_fences(&lines, 0, lines.len());
        Doc { lines, fences }
    }

    /// The top-level fence whose body holds line `i`.
    pub fn fence_at(&self, i: usize) -> Option<&Fence> {
        self.fences
            .iter()
            .find(|f| f.open < i && f.close.is_none_or(|c| i < c))
    }

    pub fn is_fence_open(&self, i: usize) -> Option<&Fence> {
        self.fences.iter().find(|f| f.open == i)
    }

    /// The path named just before line `i`: on the lines above it (up to four non-blank
    /// ones, not above `stop`), or in the info string of a fence opened above it.
    pub fn path_before(&self, i: usize, stop: usize) -> Option<String> {
        let mut seen = 0;
        let mut j = i;
        while j > stop {
            j -= 1;
            let line = self.lines[j];
            if line.trim().is_empty() {
                continue;
            }
            if fence_marker(line).is_some() {
                match self.is_fence_open(j) {
                    Some(f) => {
                        if let Some(p) = path_from_info(&f.info) {
                            return Some(p);
                        }
                        continue;
                    }
                    // A closing fence ends the look-back: what is above belongs elsewhere.
                    None => return None,
                }
            }
            if let Some(p) = path_from_line(line) {
                return Some(p);
            }
            seen += 1;
            if seen >= 4 {
                return None;
            }
        }
        None
    }
}

/// Fences in `lines[from..to]`. A fence closes on a bare marker of the same character, at
/// least as long, at the same indentation; a marker with an info string inside it opens a
/// nested block (models nest fences without lengthening the outer one).
pub fn find_fences(lines: &[&str], from: usize, to: usize) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        let Some((indent, c, n, info)) = fence_marker(lines[i]) else {
            i += 1;
            continue;
        };
        let mut depth = 1usize;
        let mut close = None;
        let mut j = i + 1;
        while j < to {
            if let Some((ind2, c2, n2, info2)) = fence_marker(lines[j])
                && ind2 == indent
                && c2 == c
            {
                if info2.is_empty() && n2 >= n {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                } else if !info2.is_empty() {
                    depth += 1;
                }
            }
            j += 1;
        }
        out.push(Fence {
            open: i,
            close,
            info: info.to_owned(),
            indent,
        });
        i = match close {
            Some(c) => c + 1,
            None => to,
        };
    }
    out
}

/// Language names that never are paths, though some look like one.
const LANGS: &[&str] = &[
    "diff",
    "patch",
    "json",
    "python",
    "py",
    "javascript",
    "js",
    "typescript",
    "ts",
    "go",
    "rust",
    "java",
    "ruby",
    "php",
    "c",
    "cpp",
    "c++",
    "bash",
    "sh",
    "shell",
    "text",
    "txt",
    "yaml",
    "yml",
    "toml",
    "html",
    "css",
    "sql",
    "markdown",
    "md",
    "jsx",
    "tsx",
    "kotlin",
    "swift",
    "console",
];

/// A path in a fence's info string: `python:app/calc.py`, `app/calc.py`, `python
/// title="app/calc.py"`, `{path=app/calc.py}`.
pub fn path_from_info(info: &str) -> Option<String> {
    let info = info.trim().trim_start_matches('{').trim_end_matches('}');
    for token in info.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
        let t = token
            .split_once('=')
            .map_or(token, |(_, v)| v)
            .trim_matches(|c| c == '"' || c == '\'' || c == '`');
        if !LANGS.contains(&t.to_ascii_lowercase().as_str()) && looks_like_path(t) {
            return Some(t.to_owned());
        }
    }
    None
}

/// A path on a line of its own, decorated the ways models decorate it: `**app/calc.py**`,
/// `### app/calc.py`, `# File: app/calc.py`, `` `app/calc.py`: ``, `app/calc.py:`, or a
/// short line ending with `:` naming one backticked path ("Update `app/calc.py`:").
pub fn path_from_line(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() || t.len() > 300 {
        return None;
    }
    let stripped = strip_decoration(t);
    if looks_like_path(stripped) {
        return Some(stripped.to_owned());
    }
    if t.ends_with(':') || t.ends_with(":**") || t.ends_with("**") {
        let ticked: Vec<&str> = t
            .split('`')
            .enumerate()
            .filter(|(k, _)| k % 2 == 1)
            .map(|(_, s)| s.trim())
            .filter(|s| looks_like_path(s))
            .collect();
        if ticked.len() == 1 {
            return Some(ticked[0].to_owned());
        }
    }
    None
}

fn strip_decoration(t: &str) -> &str {
    let mut s = t.trim();
    loop {
        let before = s;
        s = s
            .trim_start_matches(['#', '>', '*', '_', '-', ' '])
            .trim_end_matches(['*', '_', ':', ' '])
            .trim_matches('`')
            .trim();
        for label in [
            "file path:",
            "filepath:",
            "filename:",
            "file name:",
            "file:",
            "path:",
            "updated file:",
            "modified file:",
            "new file:",
        ] {
            if s.get(..label.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(label))
            {
                s = &s[label.len()..];
            }
        }
        if s == before {
            return s;
        }
    }
}

/// Extension-less file names that are still files.
const BARE_FILES: &[&str] = &[
    "Makefile",
    "Dockerfile",
    "Gemfile",
    "Rakefile",
    "Procfile",
    "LICENSE",
    "Containerfile",
];

pub fn looks_like_path(s: &str) -> bool {
    if s.is_empty()
        || s.len() > 260
        || s.contains("://")
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
        || s.starts_with(['-', '<', '=', '>', '+', '@', '(', '[', '{'])
        || s.ends_with(['.', '/', ','])
    {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_alphanumeric() || "._-/\\+@~$".contains(c))
    {
        return false;
    }
    let name = s.rsplit(['/', '\\']).next().unwrap_or(s);
    if BARE_FILES.contains(&name) {
        return true;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => {
            !ext.is_empty()
                && ext.len() <= 10
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && ext.chars().any(|c| c.is_ascii_alphabetic())
                && (!stem.is_empty() || name.starts_with('.'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_decorated_lines() {
        for (line, want) in [
            ("**app/calc.py**", Some("app/calc.py")),
            ("### `src/lib.rs`", Some("src/lib.rs")),
            ("# File: app/calc.py", Some("app/calc.py")),
            ("File: `app/calc.py`:", Some("app/calc.py")),
            ("app/calc.py:", Some("app/calc.py")),
            ("Update `app/calc.py`:", Some("app/calc.py")),
            ("Here is the fix.", None),
            ("def add(a, b):", None),
            ("e.g.", None),
            ("fileé: x", None),
            ("éééé", None),
            ("- item", None),
            ("Dockerfile", Some("Dockerfile")),
            (".env.example", Some(".env.example")),
        ] {
            assert_eq!(path_from_line(line).as_deref(), want, "{line}");
        }
    }

    #[test]
    fn paths_from_info_strings() {
        assert_eq!(
            path_from_info("python:app/calc.py").as_deref(),
            Some("app/calc.py")
        );
        assert_eq!(
            path_from_info("python title=\"app/x.py\"").as_deref(),
            Some("app/x.py")
        );
        assert_eq!(path_from_info("python"), None);
        assert_eq!(path_from_info("diff"), None);
    }

    #[test]
    fn nested_fences_close_at_the_outer_marker() {
        let text = "```markdown\n# x\n```python\nprint(1)\n```\n```\nafter";
        let d = Doc::new(text);
        assert_eq!(d.fences.len(), 1);
        assert_eq!(d.fences[0].close, Some(5));
    }
}

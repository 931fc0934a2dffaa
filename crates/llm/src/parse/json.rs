//! JSON answers: `{"files":[{"path":..,"content":..}]}` and `{"edits":[...]}` (items with
//! `content`, `search`/`replace`, or `diff`), fenced or bare, with prose around them, and
//! with the usual slips repaired: trailing commas, raw newlines inside strings.

use serde_json::{Map, Value};

use super::clean::{clean_content, normalize_newlines, resolve_conflicts};
use super::doc::Doc;
use super::{Edit, ParseError, check_path, diff};

/// The edits of the first JSON edit document in `text`; `Ok(None)` when there is none.
/// Near misses (JSON that is not valid even after repair) add a hint for the final error.
pub fn parse(text: &str, hints: &mut Vec<String>) -> Result<Option<Vec<Edit>>, ParseError> {
    for candidate in candidates(text) {
        let value = match serde_json::from_str::<Value>(&candidate) {
            Ok(v) => v,
            Err(first) => match serde_json::from_str::<Value>(&repair(&candidate)) {
                Ok(v) => v,
                Err(_) => {
                    if candidate.contains("\"files\"") || candidate.contains("\"edits\"") {
                        hints.push(format!("the JSON edits are not valid JSON ({first})"));
                    }
                    continue;
                }
            },
        };
        if let Some(edits) = document(&value)? {
            return Ok(Some(edits));
        }
    }
    Ok(None)
}

/// Texts that may be a JSON document: fenced blocks starting with `{` or `[`, the whole
/// answer, and the span from the first `{` to the last `}`.
fn candidates(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let doc = Doc::new(text);
    for f in &doc.fences {
        let end = f.close.unwrap_or(doc.lines.len());
        let body = doc.lines[f.open + 1..end].join("\n");
        if body.trim_start().starts_with(['{', '[']) {
            out.push(body);
        }
    }
    let t = text.trim();
    if t.starts_with(['{', '[']) {
        out.push(t.to_owned());
    }
    if let (Some(a), Some(b)) = (text.find('{'), text.rfind('}'))
        && a < b
    {
        let span = &text[a..=b];
        if span.contains("\"files\"") || span.contains("\"edits\"") {
            out.push(span.to_owned());
        }
    }
    out
}

/// Remove trailing commas before `}`/`]` and escape raw control characters in strings.
fn repair(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut in_str = false;
    let mut escaped = false;
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_str = false;
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => {}
                c if c.is_control() => {}
                c => out.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            ',' => {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if !matches!(next, Some('}') | Some(']')) {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn document(v: &Value) -> Result<Option<Vec<Edit>>, ParseError> {
    let items = match v {
        Value::Object(o) => match o.get("files").or_else(|| o.get("edits")) {
            Some(Value::Array(a)) => a,
            _ => return Ok(None),
        },
        Value::Array(a) => a,
        _ => return Ok(None),
    };
    // Only arrays of edit objects count: `"files": ["dist"]` in a package.json is not one.
    if !items.iter().any(|i| {
        i.as_object()
            .is_some_and(|o| path_of(o).is_some() || o.contains_key("diff"))
    }) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let Some(o) = item.as_object() else {
            return Err(ParseError::new(format!(
                "JSON edit {} is not an object",
                n + 1
            )));
        };
        out.extend(edit(o, n + 1)?);
    }
    if out.is_empty() {
        return Err(ParseError::new("the JSON edits change nothing"));
    }
    Ok(Some(out))
}

fn path_of(o: &Map<String, Value>) -> Option<&str> {
    ["path", "file", "filename", "file_path", "filepath"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str))
}

fn text_of<'a>(o: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| o.get(*k).and_then(Value::as_str))
}

fn edit(o: &Map<String, Value>, n: usize) -> Result<Vec<Edit>, ParseError> {
    if let Some(d) = text_of(o, &["diff", "patch"]) {
        let text = normalize_newlines(d);
        let doc = Doc::new(&text);
        let mut hints = Vec::new();
        let edits = diff::parse(&doc, &mut hints)?;
        if edits.is_empty() {
            return Err(ParseError::new(format!(
                "JSON edit {n} has a `diff` that is not a unified diff{}",
                hints.first().map(|h| format!(": {h}")).unwrap_or_default()
            )));
        }
        return Ok(edits);
    }
    let path = path_of(o).ok_or_else(|| ParseError::new(format!("JSON edit {n} has no `path`")))?;
    let path = check_path(path)?;
    if let (Some(s), Some(r)) = (
        text_of(o, &["search", "old", "original"]),
        text_of(o, &["replace", "new", "updated"]),
    ) {
        return Ok(vec![Edit::SearchReplace {
            path,
            search: normalize_newlines(s),
            replace: resolve_conflicts(&normalize_newlines(r)),
        }]);
    }
    if let Some(c) = text_of(o, &["content", "new_content", "code", "text"]) {
        return Ok(vec![Edit::WholeFile {
            path,
            content: clean_content(c),
        }]);
    }
    Err(ParseError::new(format!(
        "JSON edit {n} for {path} has no `content`, `search`/`replace` or `diff`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_removes_trailing_commas_outside_strings() {
        assert_eq!(
            repair(r#"{"a": [1, 2,], "b": ",]",}"#),
            r#"{"a": [1, 2], "b": ",]"}"#
        );
        assert_eq!(repair("{\"a\": \"x\ny\"}"), "{\"a\": \"x\\ny\"}");
    }
}

//! Code metrics with tree-sitter: cyclomatic complexity, documentation and function extents
//! per file, duplication across files, and the technical-debt score D built from them.
//!
//! D is on a stated 0..=1 scale: D = 0.5·C + 0.3·U + 0.2·M where
//! - C: complexity, the length-weighted mean over functions of (cyclomatic complexity − 1)/9,
//!   clamped to 0..=1 (a function with no branches scores 0, ten or more decision points 1);
//! - U: duplication, the share of significant lines that sit in a 5-line window seen twice;
//! - M: missing documentation, the share of functions and classes of 3 lines or more without
//!   a docstring or doc comment.

use std::collections::HashMap;

use proto::messages::Language;
use tree_sitter::{Node, Parser};

/// One function (or method, closure, class) found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub complexity: u32,
    pub documented: bool,
    /// Classes count for documentation, not for complexity.
    pub is_class: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileMetrics {
    pub loc: u64,
    pub functions: Vec<Function>,
    /// Whether tree-sitter could parse it (it tolerates errors, so this means a grammar exists).
    pub parsed: bool,
}

impl FileMetrics {
    /// The innermost function containing `line`.
    pub fn enclosing(&self, line: u32) -> Option<&Function> {
        self.functions
            .iter()
            .filter(|f| !f.is_class && f.start_line <= line && line <= f.end_line)
            .min_by_key(|f| f.end_line - f.start_line)
    }
}

struct Grammar {
    language: tree_sitter::Language,
    functions: &'static [&'static str],
    classes: &'static [&'static str],
    branches: &'static [&'static str],
    /// Binary-expression kinds whose `&&`/`||`/`??` operators count as decision points.
    binary: &'static [&'static str],
    python_docstrings: bool,
}

fn grammar(lang: Language, path: &str) -> Option<Grammar> {
    Some(match lang {
        Language::Python => Grammar {
            language: tree_sitter_python::LANGUAGE.into(),
            functions: &["function_definition", "lambda"],
            classes: &["class_definition"],
            branches: &[
                "if_statement",
                "elif_clause",
                "for_statement",
                "while_statement",
                "except_clause",
                "conditional_expression",
                "boolean_operator",
                "if_clause",
                "case_clause",
                "for_in_clause",
            ],
            binary: &[],
            python_docstrings: true,
        },
        Language::JavaScript | Language::TypeScript => Grammar {
            language: match lang {
                Language::TypeScript if path.ends_with(".tsx") => {
                    tree_sitter_typescript::LANGUAGE_TSX.into()
                }
                Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
                _ => tree_sitter_javascript::LANGUAGE.into(),
            },
            functions: &[
                "function_declaration",
                "function_expression",
                "arrow_function",
                "method_definition",
                "generator_function_declaration",
            ],
            classes: &["class_declaration", "class"],
            branches: &[
                "if_statement",
                "for_statement",
                "for_in_statement",
                "while_statement",
                "do_statement",
                "switch_case",
                "catch_clause",
                "ternary_expression",
            ],
            binary: &["binary_expression"],
            python_docstrings: false,
        },
        Language::Go => Grammar {
            language: tree_sitter_go::LANGUAGE.into(),
            functions: &["function_declaration", "method_declaration", "func_literal"],
            classes: &["type_declaration"],
            branches: &[
                "if_statement",
                "for_statement",
                "expression_case",
                "type_case",
                "communication_case",
            ],
            binary: &["binary_expression"],
            python_docstrings: false,
        },
        Language::Rust => Grammar {
            language: tree_sitter_rust::LANGUAGE.into(),
            functions: &["function_item", "closure_expression"],
            classes: &["struct_item", "enum_item", "trait_item"],
            branches: &[
                "if_expression",
                "match_arm",
                "while_expression",
                "for_expression",
                "loop_expression",
            ],
            binary: &["binary_expression"],
            python_docstrings: false,
        },
        Language::Java => Grammar {
            language: tree_sitter_java::LANGUAGE.into(),
            functions: &[
                "method_declaration",
                "constructor_declaration",
                "lambda_expression",
            ],
            classes: &[
                "class_declaration",
                "interface_declaration",
                "enum_declaration",
            ],
            branches: &[
                "if_statement",
                "for_statement",
                "enhanced_for_statement",
                "while_statement",
                "do_statement",
                "catch_clause",
                "switch_label",
                "ternary_expression",
            ],
            binary: &["binary_expression"],
            python_docstrings: false,
        },
        _ => return None,
    })
}

fn line_of(n: &Node, end: bool) -> u32 {
    let p = if end {
        n.end_position()
    } else {
        n.start_position()
    };
    u32::try_from(p.row).unwrap_or(u32::MAX - 1) + 1
}

fn name_of(n: &Node, src: &[u8]) -> String {
    n.child_by_field_name("name")
        .and_then(|c| c.utf8_text(src).ok())
        .unwrap_or("<anonymous>")
        .chars()
        .take(80)
        .collect()
}

fn is_decision(g: &Grammar, n: &Node, src: &[u8]) -> bool {
    if g.branches.contains(&n.kind()) {
        return true;
    }
    if g.binary.contains(&n.kind())
        && let Some(op) = n.child_by_field_name("operator")
    {
        return matches!(op.utf8_text(src).unwrap_or(""), "&&" | "||" | "??");
    }
    false
}

fn documented(g: &Grammar, n: &Node) -> bool {
    if g.python_docstrings {
        let first = n.child_by_field_name("body").and_then(|b| b.named_child(0));
        return first.is_some_and(|s| {
            s.kind() == "expression_statement"
                && s.named_child(0).is_some_and(|e| e.kind() == "string")
        });
    }
    // A comment right above the definition (or above its attributes/decorators/export).
    let mut cur = *n;
    if let Some(p) = cur
        .parent()
        .filter(|p| matches!(p.kind(), "export_statement" | "decorated_definition"))
    {
        cur = p;
    }
    let mut prev = cur.prev_sibling();
    while let Some(p) = prev {
        match p.kind() {
            "attribute_item" | "annotation" | "marker_annotation" | "decorator" => {
                prev = p.prev_sibling()
            }
            k if k.contains("comment") => return line_of(&p, true) + 1 >= line_of(&cur, false),
            _ => return false,
        }
    }
    // Java/JS keep a method's doc comment as the previous sibling inside the class body; a
    // comment in the modifiers also counts.
    false
}

/// Complexity counts decision points inside `n` but not inside nested functions.
fn complexity(g: &Grammar, n: &Node, src: &[u8]) -> u32 {
    let mut count = 1;
    let mut stack = vec![];
    let mut c = n.walk();
    for child in n.children(&mut c) {
        stack.push(child);
    }
    while let Some(x) = stack.pop() {
        if g.functions.contains(&x.kind()) {
            continue;
        }
        if is_decision(g, &x, src) {
            count += 1;
        }
        let mut c = x.walk();
        for child in x.children(&mut c) {
            stack.push(child);
        }
    }
    count
}

pub fn analyse(lang: Language, path: &str, text: &str) -> FileMetrics {
    let loc = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let Some(g) = grammar(lang, path) else {
        return FileMetrics {
            loc,
            functions: vec![],
            parsed: false,
        };
    };
    let mut parser = Parser::new();
    if parser.set_language(&g.language).is_err() {
        return FileMetrics {
            loc,
            functions: vec![],
            parsed: false,
        };
    }
    let src = text.as_bytes();
    let Some(tree) = parser.parse(src, None) else {
        return FileMetrics {
            loc,
            functions: vec![],
            parsed: false,
        };
    };
    let mut functions = vec![];
    let mut stack = vec![tree.root_node()];
    while let Some(n) = stack.pop() {
        let is_fn = n.is_named() && g.functions.contains(&n.kind());
        let is_class = n.is_named() && g.classes.contains(&n.kind());
        if is_fn || is_class {
            functions.push(Function {
                name: name_of(&n, src),
                start_line: line_of(&n, false),
                end_line: line_of(&n, true),
                complexity: if is_fn { complexity(&g, &n, src) } else { 1 },
                documented: documented(&g, &n),
                is_class,
            });
        }
        let mut c = n.walk();
        for child in n.children(&mut c) {
            stack.push(child);
        }
    }
    functions.sort_by_key(|f| (f.start_line, f.end_line));
    FileMetrics {
        loc,
        functions,
        parsed: true,
    }
}

/// The parts of D and D itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Debt {
    pub complexity: f64,
    pub duplication: f64,
    pub missing_docs: f64,
    pub debt: f64,
}

const WINDOW: usize = 5;

fn significant(line: &str) -> Option<String> {
    let t: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    (t.len() >= 4 && !t.starts_with('#') && !t.starts_with("//")).then_some(t)
}

/// Share of significant lines inside a 5-line window that occurs more than once.
pub fn duplication<'a>(texts: impl Iterator<Item = &'a str>) -> f64 {
    let files: Vec<Vec<String>> = texts
        .map(|t| t.lines().filter_map(significant).collect())
        .collect();
    let mut seen: HashMap<&[String], u32> = HashMap::new();
    for f in &files {
        for w in f.windows(WINDOW) {
            *seen.entry(w).or_default() += 1;
        }
    }
    let mut total = 0usize;
    let mut dup = 0usize;
    for f in &files {
        total += f.len();
        let mut marked = vec![false; f.len()];
        for (i, w) in f.windows(WINDOW).enumerate() {
            if seen.get(w).copied().unwrap_or(0) > 1 {
                for m in marked.iter_mut().skip(i).take(WINDOW) {
                    *m = true;
                }
            }
        }
        dup += marked.iter().filter(|m| **m).count();
    }
    if total == 0 {
        0.0
    } else {
        dup as f64 / total as f64
    }
}

/// D over a set of analysed files (their texts give the duplication).
pub fn debt<'a>(files: &[(&'a str, &'a FileMetrics)]) -> Debt {
    let mut weighted = 0.0;
    let mut weight = 0.0;
    let mut doc_total = 0usize;
    let mut doc_missing = 0usize;
    for (_, m) in files {
        for f in &m.functions {
            let len = f64::from(f.end_line.saturating_sub(f.start_line) + 1);
            if !f.is_class {
                weighted += len * (f64::from(f.complexity.saturating_sub(1)) / 9.0).min(1.0);
                weight += len;
            }
            if f.end_line.saturating_sub(f.start_line) + 1 >= 3 && f.name != "<anonymous>" {
                doc_total += 1;
                doc_missing += usize::from(!f.documented);
            }
        }
    }
    let complexity = if weight > 0.0 { weighted / weight } else { 0.0 };
    let missing_docs = if doc_total > 0 {
        doc_missing as f64 / doc_total as f64
    } else {
        0.0
    };
    let duplication = duplication(files.iter().map(|(t, _)| *t));
    Debt {
        complexity,
        duplication,
        missing_docs,
        debt: (0.5 * complexity + 0.3 * duplication + 0.2 * missing_docs).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_complexity_docs_and_extents() {
        let src = "def simple(x):\n    \"\"\"Doc.\"\"\"\n    return x\n\n\ndef branchy(a, b):\n    if a and b:\n        return 1\n    elif a:\n        return 2\n    for i in range(3):\n        while b:\n            b -= 1\n    return 3 if a else 4\n";
        let m = analyse(Language::Python, "m.py", src);
        assert!(m.parsed);
        let names: Vec<_> = m
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.complexity, f.documented))
            .collect();
        // if, and, elif, for, while, conditional: 6 decision points.
        assert_eq!(names, [("simple", 1, true), ("branchy", 7, false)]);
        assert_eq!(m.enclosing(8).map(|f| f.name.as_str()), Some("branchy"));
        assert_eq!(m.enclosing(4), None);
    }

    #[test]
    fn every_grammar_finds_functions_and_branches() {
        let cases = [
            (
                Language::JavaScript,
                "a.js",
                "/** doc */\nfunction f(a) {\n  if (a || b) { return 1 }\n  return a ? 2 : 3;\n}\n",
                4,
            ),
            (
                Language::TypeScript,
                "a.ts",
                "function f(a: number): number {\n  if (a > 1 && a < 3) { return 1 }\n  return 2;\n}\n",
                3,
            ),
            (
                Language::Go,
                "a.go",
                "package a\n\n// F does.\nfunc F(a int) int {\n\tif a > 1 || a < 0 {\n\t\treturn 1\n\t}\n\tfor i := 0; i < a; i++ {\n\t}\n\treturn 2\n}\n",
                4,
            ),
            (
                Language::Rust,
                "a.rs",
                "/// Doc.\nfn f(a: i32) -> i32 {\n    if a > 1 && a < 3 { 1 } else { match a { 0 => 0, _ => 2 } }\n}\n",
                5,
            ),
            (
                Language::Java,
                "A.java",
                "class A {\n  /** Doc. */\n  int f(int a) {\n    if (a > 1) { return 1; }\n    for (int i = 0; i < a; i++) {}\n    return a > 2 ? 1 : 0;\n  }\n}\n",
                4,
            ),
        ];
        for (lang, path, src, cc) in cases {
            let m = analyse(lang, path, src);
            let f = m
                .functions
                .iter()
                .find(|f| !f.is_class)
                .unwrap_or_else(|| panic!("{path}: no function"));
            assert_eq!(f.complexity, cc, "{path}: {m:?}");
            if lang != Language::TypeScript {
                assert!(f.documented, "{path}: doc comment not seen: {m:?}");
            }
        }
    }

    #[test]
    fn duplication_and_debt_are_on_the_stated_scale() {
        let block = "a = compute(1)\nb = compute(2)\nc = combine(a, b)\nd = finish(c)\nprint(d)\n";
        let twice = format!("{block}{block}");
        assert!(duplication([twice.as_str()].into_iter()) > 0.99);
        assert_eq!(duplication(["x = 1\ny = 2\n"].into_iter()), 0.0);
        let m = analyse(Language::Python, "m.py", &twice);
        let d = debt(&[(twice.as_str(), &m)]);
        assert!(d.debt > 0.29 && d.debt <= 1.0, "{d:?}");
        // Garbage never panics.
        let _ = analyse(Language::Python, "x.py", "def (((\n\0\u{feff}");
        let _ = analyse(Language::Ruby, "x.rb", "def x; end");
    }
}

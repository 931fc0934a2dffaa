//! Fix ingredients from the program itself, as CapGen, SimFix and TBar take them: the names
//! in scope of each function with how they are used (a simple type: indexed like a sequence,
//! used as a number), the fields and methods used in the file, the conditions and statements
//! written in it; each ranked by its likeness to the suspicious place.

use std::collections::HashMap;

use proto::messages::Language;
use tree_sitter::{Node, Tree};

use super::classes::{Kinds, kinds};
use super::{line, text};

/// Used as a sequence: indexed, sliced, measured, iterated.
const SEQ: u8 = 1;
/// Used as a number: in arithmetic, as an index, compared with a number.
const NUM: u8 = 2;

impl Scope {
    /// The names used as sequences and those used as numbers (and not as sequences), in
    /// first-seen order.
    pub fn typed_names(&self) -> (Vec<&str>, Vec<&str>) {
        let seqs = self
            .names
            .iter()
            .filter(|(_, f)| f & SEQ != 0)
            .map(|(n, _)| n.as_str())
            .collect();
        let nums = self
            .names
            .iter()
            .filter(|(_, f)| f & NUM != 0 && f & SEQ == 0)
            .map(|(n, _)| n.as_str())
            .collect();
        (seqs, nums)
    }
}

/// The names of one function and how each is used.
#[derive(Debug, Default)]
pub struct Scope {
    start: usize,
    end: usize,
    /// Names read or bound in the function, in first-seen order, with their use flags.
    pub names: Vec<(String, u8)>,
    /// The lines each name is on.
    lines: HashMap<String, Vec<u32>>,
}

#[derive(Debug, Default)]
pub struct Ingredients {
    scopes: Vec<Scope>,
    /// Methods called in the file, with their number of arguments.
    pub methods: Vec<(String, usize)>,
    /// Plain functions called in the file, with their number of arguments.
    pub functions: Vec<(String, usize)>,
    fields: Vec<String>,
    /// Comparisons written in the file (conditions, returned booleans), with their names.
    conditions: Vec<(String, Vec<String>)>,
    /// One-line simple statements, with the start of their function and their names.
    statements: Vec<(usize, String, Vec<String>, u32)>,
    /// Two one-line simple statements written one after the other, with the start of their
    /// function and their names.
    pairs: Vec<(usize, String, String, Vec<String>)>,
}

/// A one-line simple statement directly in a block.
fn is_simple(n: &Node, src: &str, k: &Kinds) -> bool {
    n.parent().is_some_and(|p| k.block.contains(&p.kind()))
        && matches!(
            n.kind(),
            "expression_statement"
                | "assignment_statement"
                | "short_var_declaration"
                | "inc_statement"
                | "dec_statement"
        )
        && !text(n, src).contains('\n')
}

fn is_function(kind: &str) -> bool {
    matches!(
        kind,
        "function_definition"
            | "function_declaration"
            | "method_definition"
            | "method_declaration"
            | "arrow_function"
            | "function_expression"
            | "func_literal"
            | "lambda"
    )
}

/// The names of values `n` reads or binds: identifiers, not the fields or methods after a dot
/// (`append` of `out.append(x)`) nor called functions, which are not names in a scope.
pub(super) fn identifiers(n: &Node, src: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut stack = vec![*n];
    while let Some(x) = stack.pop() {
        let named_by_parent = x.parent().is_some_and(|p| {
            ["attribute", "property", "field", "function"]
                .iter()
                .any(|f| p.child_by_field_name(f).is_some_and(|c| c.id() == x.id()))
                && p.kind() != "function_definition"
        });
        if x.kind() == "identifier" && !named_by_parent {
            let t = text(&x, src).to_owned();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        let mut c = x.walk();
        for ch in x.named_children(&mut c) {
            stack.push(ch);
        }
    }
    out
}

/// How alike two names are: shared characters in order (`ra`/`rb`, `left`/`right`).
fn name_likeness(a: &str, b: &str) -> f64 {
    let prefix = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let suffix = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let longest = a.chars().count().max(b.chars().count()).max(1);
    ((prefix + suffix).min(longest) as f64) / longest as f64
}

impl Ingredients {
    pub fn collect(tree: &Tree, src: &str, lang: Language) -> Ingredients {
        let k = kinds(lang);
        let mut ing = Ingredients::default();
        let mut stack = vec![tree.root_node()];
        while let Some(n) = stack.pop() {
            if is_function(n.kind()) {
                ing.scopes.push(scope(&n, src, &k));
            }
            ing.note(&n, src, &k);
            let mut c = n.walk();
            for ch in n.children(&mut c) {
                stack.push(ch);
            }
        }
        // Innermost first, so `scope_of` finds the closest function.
        ing.scopes.sort_by_key(|s| s.end - s.start);
        ing
    }

    fn note(&mut self, n: &Node, src: &str, k: &Kinds) {
        let kind = n.kind();
        if kind == k.call
            && let Some(f) = n.child_by_field_name("function")
        {
            let arity = n
                .child_by_field_name("arguments")
                .map(|a| {
                    let mut c = a.walk();
                    a.named_children(&mut c)
                        .filter(|x| x.kind() != "comment")
                        .count()
                })
                .unwrap_or(0);
            let (pool, name) = if f.kind() == k.member {
                (
                    &mut self.methods,
                    f.child_by_field_name(k.member_field)
                        .map(|x| text(&x, src).to_owned()),
                )
            } else if f.kind() == "identifier" {
                (&mut self.functions, Some(text(&f, src).to_owned()))
            } else {
                (&mut self.functions, None)
            };
            if let Some(name) = name
                && !pool.iter().any(|(x, a)| *x == name && *a == arity)
            {
                pool.push((name, arity));
            }
        }
        if kind == k.member
            && n.parent().is_none_or(|p| p.kind() != k.call)
            && let Some(f) = n.child_by_field_name(k.member_field)
        {
            let f = text(&f, src).to_owned();
            if !self.fields.contains(&f) {
                self.fields.push(f);
            }
        }
        if matches!(kind, "comparison_operator")
            || (kind == "binary_expression"
                && n.child_by_field_name("operator").is_some_and(|o| {
                    matches!(
                        text(&o, src),
                        "<" | "<=" | ">" | ">=" | "==" | "!=" | "===" | "!=="
                    )
                }))
        {
            let t = text(n, src).to_owned();
            if !t.contains('\n') && !self.conditions.iter().any(|(c, _)| *c == t) {
                self.conditions.push((t, identifiers(n, src)));
            }
        }
        if is_simple(n, src, k) {
            let t = text(n, src).to_owned();
            let mut f = n.parent();
            while let Some(p) = f {
                if is_function(p.kind()) {
                    break;
                }
                f = p.parent();
            }
            let start = f.map(|f| f.start_byte()).unwrap_or(0);
            let names = identifiers(n, src);
            if let Some(next) = n.next_named_sibling().filter(|x| is_simple(x, src, k)) {
                let mut both = names.clone();
                for x in identifiers(&next, src) {
                    if !both.contains(&x) {
                        both.push(x);
                    }
                }
                self.pairs
                    .push((start, t.clone(), text(&next, src).to_owned(), both));
            }
            self.statements.push((start, t, names, line(n)));
        }
    }

    /// The innermost function around `n`.
    pub fn scope_of(&self, n: &Node) -> Option<&Scope> {
        self.scopes
            .iter()
            .find(|s| s.start <= n.start_byte() && n.end_byte() <= s.end)
    }

    /// Other field names of the file, the likeliest first.
    pub fn similar_fields(&self, f: &str) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .fields
            .iter()
            .filter(|x| *x != f)
            .map(|x| (x.clone(), 0.7 + 0.3 * name_likeness(f, x)))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(6);
        v
    }

    /// Comparisons of the file whose names are all in `scope`, not already in `cond`, the
    /// ones sharing the most names with it first.
    pub fn similar_conditions(&self, cond: &str, scope: Option<&Scope>) -> Vec<(String, f64)> {
        let Some(scope) = scope else { return vec![] };
        let mut v: Vec<(String, f64)> = self
            .conditions
            .iter()
            .filter(|(c, names)| {
                !cond.contains(c.as_str())
                    && names
                        .iter()
                        .all(|x| scope.names.iter().any(|(n, _)| n == x))
            })
            .map(|(c, names)| {
                let shared = names.iter().filter(|x| cond.contains(x.as_str())).count();
                (
                    c.clone(),
                    0.6 + 0.4 * (shared as f64 / names.len().max(1) as f64),
                )
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(6);
        v
    }

    /// One-line statements of the file that could follow `n`: all their names in scope, not
    /// `n` itself nor its neighbours; those of the same function and sharing names first.
    pub fn similar_statements(&self, n: &Node, src: &str) -> Vec<(String, f64)> {
        let Some(scope) = self.scope_of(n) else {
            return vec![];
        };
        let me = text(n, src);
        let next = n.next_named_sibling().map(|x| text(&x, src)).unwrap_or("");
        let mine = identifiers(n, src);
        let mut v: Vec<(String, f64)> = self
            .statements
            .iter()
            .filter(|(_, t, names, l)| {
                t != me
                    && t != next
                    && *l != line(n)
                    && names
                        .iter()
                        .all(|x| scope.names.iter().any(|(s, _)| s == x))
            })
            .map(|(start, t, names, _)| {
                let shared = names.iter().filter(|x| mine.contains(x)).count();
                let same_fn = *start == scope.start;
                (
                    t.clone(),
                    0.5 + 0.3 * f64::from(u8::from(same_fn))
                        + 0.2 * (shared as f64 / names.len().max(1) as f64),
                )
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.dedup_by(|a, b| a.0 == b.0);
        v.truncate(5);
        v
    }

    /// Two statements the file has together (`out.append(run)` then `run = []`) that could
    /// follow `n`, as [`Ingredients::similar_statements`] ranks one: all their names in
    /// scope, neither `n` itself nor the statement after it.
    pub fn similar_pairs(&self, n: &Node, src: &str) -> Vec<(String, String, f64)> {
        let Some(scope) = self.scope_of(n) else {
            return vec![];
        };
        let me = text(n, src);
        let next = n.next_named_sibling().map(|x| text(&x, src)).unwrap_or("");
        let mine = identifiers(n, src);
        let mut v: Vec<(String, String, f64)> = self
            .pairs
            .iter()
            .filter(|(_, a, b, names)| {
                ![me, next].contains(&a.as_str())
                    && ![me, next].contains(&b.as_str())
                    && names
                        .iter()
                        .all(|x| scope.names.iter().any(|(s, _)| s == x))
            })
            .map(|(start, a, b, names)| {
                let shared = names.iter().filter(|x| mine.contains(x)).count();
                let same_fn = *start == scope.start;
                (
                    a.clone(),
                    b.clone(),
                    0.5 + 0.3 * f64::from(u8::from(same_fn))
                        + 0.2 * (shared as f64 / names.len().max(1) as f64),
                )
            })
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        v.truncate(3);
        v
    }

    /// Comparisons of the file that read `name`, with names all in `scope`.
    pub fn conditions_reading(&self, name: &str, scope: &Scope) -> Vec<String> {
        self.conditions
            .iter()
            .filter(|(_, names)| {
                names.iter().any(|x| x == name)
                    && names
                        .iter()
                        .all(|x| scope.names.iter().any(|(n, _)| n == x))
            })
            .map(|(c, _)| c.clone())
            .take(3)
            .collect()
    }

    /// Expressions of `body` that read `name` (indexing, fields, calls): the values a loop
    /// variable may be advanced to (`x = parent[x]`, `node = node.next`).
    pub fn expressions_reading(&self, body: &Node, name: &str, src: &str) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        let mut stack = vec![*body];
        while let Some(x) = stack.pop() {
            let t = text(&x, src);
            if matches!(
                x.kind(),
                "subscript"
                    | "subscript_expression"
                    | "index_expression"
                    | "attribute"
                    | "member_expression"
                    | "selector_expression"
            ) && t != name
                && !t.contains('\n')
                && super::classes::replace_word(t, name, "\u{1}") != t
                && !out.iter().any(|o| o == t)
            {
                out.push(t.to_owned());
            }
            let mut c = x.walk();
            for ch in x.named_children(&mut c) {
                stack.push(ch);
            }
        }
        out.sort_by_key(|t| t.len());
        out.truncate(3);
        out
    }
}

fn scope(f: &Node, src: &str, k: &Kinds) -> Scope {
    let mut s = Scope {
        start: f.start_byte(),
        end: f.end_byte(),
        ..Scope::default()
    };
    let mut stack = vec![*f];
    while let Some(x) = stack.pop() {
        if x.kind() == "identifier" {
            let t = text(&x, src).to_owned();
            let p = x.parent();
            let callee = p.is_some_and(|p| {
                p.kind() == k.call
                    && p.child_by_field_name("function")
                        .is_some_and(|c| c.id() == x.id())
            });
            let field = p.is_some_and(|p| {
                p.kind() == k.member
                    && p.child_by_field_name(k.member_field)
                        .is_some_and(|c| c.id() == x.id())
            });
            let is_name = x.id()
                == f.child_by_field_name("name")
                    .map(|n| n.id())
                    .unwrap_or(usize::MAX);
            if !callee && !field && !is_name {
                let flags = use_flags(&x, src, k);
                match s.names.iter_mut().find(|(n, _)| *n == t) {
                    Some((_, fl)) => *fl |= flags,
                    None => s.names.push((t.clone(), flags)),
                }
                s.lines.entry(t).or_default().push(line(&x));
            }
        }
        let mut c = x.walk();
        for ch in x.children(&mut c) {
            stack.push(ch);
        }
    }
    // Names that are only ever called (functions, modules) are not values.
    s
}

fn use_flags(x: &Node, src: &str, k: &Kinds) -> u8 {
    let Some(p) = x.parent() else { return 0 };
    let me = |f: &str| p.child_by_field_name(f).is_some_and(|c| c.id() == x.id());
    let mut flags = 0;
    if (p.kind() == k.subscript && me(k.subscript_value))
        || p.kind() == "slice_expression" && me("operand")
    {
        flags |= SEQ;
    }
    if (p.kind() == k.subscript && (me("subscript") || me("index"))) || matches!(p.kind(), "slice")
    {
        flags |= NUM;
    }
    if matches!(p.kind(), "binary_operator" | "binary_expression") {
        let op = p
            .child_by_field_name("operator")
            .map(|o| text(&o, src))
            .unwrap_or("");
        if matches!(op, "-" | "*" | "/" | "//" | "%" | "<" | "<=" | ">" | ">=") {
            flags |= NUM;
        }
    }
    if p.kind() == "argument_list"
        && p.parent()
            .and_then(|c| c.child_by_field_name("function"))
            .is_some_and(|f| text(&f, src) == "len")
    {
        flags |= SEQ;
    }
    if p.kind() == k.member
        && me(k.member_object)
        && p.child_by_field_name(k.member_field)
            .is_some_and(|f| matches!(text(&f, src), "length" | "push" | "pop" | "append"))
    {
        flags |= SEQ;
    }
    flags
}

impl Scope {
    /// Other names of this scope usable where `me` is (compatible use), the likeliest first:
    /// alike names, names used on nearby lines.
    pub fn similar(&self, me: &str, at: u32) -> Vec<(String, f64)> {
        let mine = self
            .names
            .iter()
            .find(|(n, _)| n == me)
            .map(|(_, f)| *f)
            .unwrap_or(0);
        let mut v: Vec<(String, f64)> = self
            .names
            .iter()
            .filter(|(n, f)| n != me && (mine == 0 || *f == 0 || mine & f != 0))
            .filter(|(n, _)| !matches!(n.as_str(), "self" | "this" | "_"))
            .map(|(n, _)| {
                let near = self
                    .lines
                    .get(n)
                    .is_some_and(|ls| ls.iter().any(|l| l.abs_diff(at) <= 3));
                (
                    n.clone(),
                    0.6 + 0.25 * name_likeness(me, n) + 0.15 * f64::from(u8::from(near)),
                )
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(8);
        v
    }
}

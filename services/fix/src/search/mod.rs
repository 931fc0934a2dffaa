//! The search-based repair engine: mutation and template operators applied at the suspicious
//! lines through tree-sitter, so every candidate is a syntactically valid program. Candidates
//! are ranked by suspiciousness × how often the operator's kind of slip occurs, then by edit
//! size. Python gets every operator; JavaScript and TypeScript get operator and constant
//! mutations.

use std::collections::{HashMap, HashSet};

use proto::messages::Language;
use tree_sitter::{InputEdit, Node, Parser, Point, Tree};

mod ast;
mod classes;
mod ingredients;
mod raises;
pub use ast::{leaf_distance, same_ast};
pub use raises::{ANY_ERROR, Expected, expected_raises, reader_under};

/// One candidate program: the whole new text of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutant {
    pub file: String,
    pub line: u32,
    pub operator: &'static str,
    pub description: String,
    pub new_text: String,
    /// What changed, as the byte range of the file that is replaced and its replacement
    /// (the smallest such range): `new_text` without the copy of the file, for callers that
    /// let the whole text go.
    pub change: (usize, usize, String),
    pub score: f64,
    /// Characters replaced plus characters inserted: smaller is preferred.
    pub edit_size: usize,
}

/// A suspicious place in one file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// 1-based; `None` means anywhere in the file.
    pub line: Option<u32>,
    pub score: f64,
}

const ARITH: &[&str] = &["+", "-", "*", "/", "//", "%"];
const COMPARE: &[&str] = &["<", "<=", ">", ">=", "==", "!="];
const JS_ARITH: &[&str] = &["+", "-", "*", "/", "%"];
const JS_COMPARE: &[&str] = &["<", "<=", ">", ">=", "===", "!==", "==", "!="];
const JS_LOGIC: &[&str] = &["&&", "||"];
const GO_COMPARE: &[&str] = &["<", "<=", ">", ">=", "==", "!="];

/// How likely each kind of slip is, relative to the others (from the mutation-testing and
/// program-repair literature: operator and off-by-one slips dominate one-line bugs).
fn prior(op: &str) -> f64 {
    match op {
        // Boundary slips (`<` for `<=`) are the commonest comparison bug.
        "boundary" => 1.0,
        "arithmetic" => 0.95,
        "comparison" => 0.85,
        "constant" | "off-by-one" => 0.9,
        "boolean" | "negation" | "boolean-literal" => 0.75,
        "magnitude" => 0.6,
        "swap-operands" | "swap-arguments" => 0.7,
        "missing-return" | "base-case" => 0.65,
        "guard" => 0.55,
        "variable" => 0.5,
        "delete-statement" => 0.3,
        // The defect classes of small programs (classes.rs): how often each kind of slip
        // is the fix in the repair literature's benchmarks of small programs (QuixBugs,
        // ManySStuBs4J, PySStuBs), relative to the ones above.
        "assignment-operator" => 0.8,
        "method-called" => 0.9,
        "function-name" => 0.6,
        "missing-call" | "array-slice" => 0.65,
        "data-constant" => 0.7,
        "missing-arithmetic" => 0.55,
        "missing-condition" => 0.6,
        "less-specific-if" | "extra-subexpression" => 0.6,
        "field-dereference" => 0.6,
        "variable-swap" => 0.55,
        "variable-prepend" => 0.5,
        "unwrap-call" | "fewer-arguments" => 0.5,
        "more-arguments" => 0.6,
        "wrong-return" => 0.5,
        "loop-update" => 0.6,
        "swapped-statements" => 0.55,
        "missing-line" => 0.4,
        // Generated only when the log says the tests expected an exception that was not
        // raised: then it is the likeliest fix.
        "missing-raise" => 0.9,
        _ => 0.5,
    }
}

struct Edit {
    start: usize,
    end: usize,
    text: String,
}

struct Ctx<'a> {
    lang: Language,
    /// Multipliers of the operators' priors learned from the repair history.
    learned: &'a HashMap<String, f64>,
    /// Exceptions the tests expected and that were not raised ([`expected_raises`]).
    raises: &'a [Expected],
    src: &'a str,
    parser: Parser,
    /// The syntax tree of `src`: mutants are parsed incrementally from it.
    tree: Tree,
    /// Byte offset of each line's start in `src`.
    line_starts: Vec<usize>,
    /// Mutants with their change only (no file, no whole text) until they are ranked, so a
    /// large file's thousands of mutants cost their edits, not thousands of copies of it.
    out: Vec<Mutant>,
    /// The changes already made (a change is the byte range of `src` it replaces and what
    /// replaces it), so an edit reached twice yields one mutant.
    seen: HashSet<(usize, usize, String)>,
}

fn language(lang: Language, path: &str) -> Option<tree_sitter::Language> {
    Some(match lang {
        Language::Python => tree_sitter_python::LANGUAGE.into(),
        Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
        Language::TypeScript if path.ends_with(".tsx") => {
            tree_sitter_typescript::LANGUAGE_TSX.into()
        }
        Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
        Language::Go => tree_sitter_go::LANGUAGE.into(),
        _ => return None,
    })
}

fn line(n: &Node) -> u32 {
    u32::try_from(n.start_position().row).unwrap_or(u32::MAX - 1) + 1
}

fn text<'a>(n: &Node, src: &'a str) -> &'a str {
    src.get(n.start_byte()..n.end_byte()).unwrap_or("")
}

impl Ctx<'_> {
    /// Apply edits (non-overlapping), keep the result if it still parses cleanly and is new.
    fn emit(
        &mut self,
        at: &Node,
        operator: &'static str,
        description: String,
        mut edits: Vec<Edit>,
        score: f64,
    ) {
        edits.sort_by_key(|e| e.start);
        let mut new = String::with_capacity(self.src.len() + 64);
        let mut pos = 0;
        let mut size = 0;
        for e in &edits {
            if e.start < pos || e.end > self.src.len() {
                return;
            }
            new.push_str(&self.src[pos..e.start]);
            new.push_str(&e.text);
            size += (e.end - e.start) + e.text.len();
            pos = e.end;
        }
        new.push_str(&self.src[pos..]);
        let Some((p, end, with)) = changed_range(self.src, &new) else {
            return;
        };
        let change = (p, end, with.to_owned());
        if !self.seen.insert(change.clone()) {
            return;
        }
        let Some(tree) = self.reparse(&new, &change) else {
            return;
        };
        if tree.root_node().has_error() {
            return;
        }
        // Equal scores: the smaller change to the syntax tree first (the edit a person makes).
        let edit_size = self.tree_distance(&tree, &new, &change).unwrap_or(size);
        self.out.push(Mutant {
            file: String::new(),
            line: line(at),
            operator,
            description,
            new_text: String::new(),
            change,
            score: score * prior(operator) * self.learned.get(operator).copied().unwrap_or(1.0),
            edit_size,
        });
    }

    /// Where byte `at` of `src` is, as tree-sitter counts: row and byte column.
    fn point(&self, at: usize) -> Point {
        let row = self
            .line_starts
            .partition_point(|s| *s <= at)
            .saturating_sub(1);
        Point {
            row,
            column: at - self.line_starts.get(row).copied().unwrap_or(0),
        }
    }

    /// `new` (this file with `change` made) parsed from the file's tree, edited: only the
    /// part around the change is parsed again.
    fn reparse(&mut self, new: &str, (p, end, with): &(usize, usize, String)) -> Option<Tree> {
        let start = self.point(*p);
        let new_end = match with.rfind('\n') {
            None => Point {
                row: start.row,
                column: start.column + with.len(),
            },
            Some(i) => Point {
                row: start.row + with.matches('\n').count(),
                column: with.len() - i - 1,
            },
        };
        let mut old = self.tree.clone();
        old.edit(&InputEdit {
            start_byte: *p,
            old_end_byte: *end,
            new_end_byte: p + with.len(),
            start_position: start,
            old_end_position: self.point(*end),
            new_end_position: new_end,
        });
        self.parser.parse(new, Some(&old))
    }

    /// How many leaves differ between this file and `new` ([`leaf_distance`]), counted on the
    /// smallest subtree around the change that spans the same bytes in both trees: the rest
    /// of the two texts is the same, so it adds nothing.
    fn tree_distance(
        &self,
        tree: &Tree,
        new: &str,
        (p, end, with): &(usize, usize, String),
    ) -> Option<usize> {
        // Byte `x` of the file at or after the change, in `new`.
        let shifted = |x: usize| (x + with.len()).checked_sub(end - p);
        let (mut from, mut to) = (*p, *end);
        for _ in 0..64 {
            let before = self.tree.root_node().descendant_for_byte_range(from, to)?;
            let after = tree
                .root_node()
                .descendant_for_byte_range(from, shifted(to)?)?;
            let wider = (
                from.min(before.start_byte()).min(after.start_byte()),
                to.max(before.end_byte())
                    .max(after.end_byte().checked_sub(with.len())? + (end - p)),
            );
            if wider == (from, to) {
                // An ancestor whose kind changed counts too (`=` → `+=` makes an assignment
                // augmented): the window grows to the highest such pair.
                let (mut x, mut y) = (before.parent(), after.parent());
                let mut changed = None;
                while let (Some(b), Some(a)) = (x, y) {
                    if b.kind() != a.kind() {
                        changed = Some((b, a));
                    }
                    (x, y) = (b.parent(), a.parent());
                }
                if let Some((b, a)) = changed {
                    (from, to) = (
                        from.min(b.start_byte()).min(a.start_byte()),
                        to.max(b.end_byte())
                            .max(a.end_byte().checked_sub(with.len())? + (end - p)),
                    );
                    continue;
                }
                return Some(ast::distance(
                    &ast::shape_of(before, self.src),
                    &ast::shape_of(after, new),
                ));
            }
            (from, to) = wider;
        }
        None
    }

    /// One edit: bytes `range` of the file become `with`.
    fn edit(
        &mut self,
        at: &Node,
        operator: &'static str,
        description: String,
        (start, end): (usize, usize),
        with: impl Into<String>,
        score: f64,
    ) {
        let text = with.into();
        self.emit(
            at,
            operator,
            description,
            vec![Edit { start, end, text }],
            score,
        );
    }

    fn replace(&mut self, node: &Node, with: &str, operator: &'static str, score: f64) {
        let old = text(node, self.src).to_owned();
        let desc = format!("line {}: `{}` → `{}`", line(node), old, with);
        self.emit(
            node,
            operator,
            desc,
            vec![Edit {
                start: node.start_byte(),
                end: node.end_byte(),
                text: with.to_owned(),
            }],
            score,
        );
    }
}

impl Ctx<'_> {
    /// `x` and `y` trade places (operands, arguments, statements).
    fn swap(
        &mut self,
        at: &Node,
        x: &Node,
        y: &Node,
        operator: &'static str,
        desc: String,
        score: f64,
    ) {
        let (a, b) = (text(x, self.src).to_owned(), text(y, self.src).to_owned());
        let edits = vec![
            Edit {
                start: x.start_byte(),
                end: x.end_byte(),
                text: b,
            },
            Edit {
                start: y.start_byte(),
                end: y.end_byte(),
                text: a,
            },
        ];
        self.emit(at, operator, desc, edits, score);
    }
}

/// Candidates for `text` (the file at `path`), most promising first, at most `limit`.
pub fn mutants(
    lang: Language,
    path: &str,
    src: &str,
    targets: &[Target],
    limit: usize,
) -> Vec<Mutant> {
    mutants_with(lang, path, src, targets, limit, &HashMap::new())
}

/// How much more likely each operator is in this category of failure than its prior says,
/// learned from the repair history: the operators whose candidates were validated, with
/// Laplace smoothing, so one success moves a prior a little and many move it up to 2×.
pub fn learned_priors<'h>(operators: impl Iterator<Item = &'h str>) -> HashMap<String, f64> {
    let mut counts: HashMap<String, f64> = HashMap::new();
    let mut total = 0.0;
    for op in operators {
        *counts.entry(op.to_owned()).or_default() += 1.0;
        total += 1.0;
    }
    counts
        .into_iter()
        .map(|(op, n)| (op, 1.0 + (n / (total + 2.0)).min(1.0)))
        .collect()
}

/// [`mutants`] with operator priors learned from the repair history ([`learned_priors`]).
pub fn mutants_with(
    lang: Language,
    path: &str,
    src: &str,
    targets: &[Target],
    limit: usize,
    learned: &HashMap<String, f64>,
) -> Vec<Mutant> {
    mutants_guided(lang, path, src, targets, limit, learned, &[])
}

/// [`mutants_with`], also told the exceptions the tests expected ([`expected_raises`]),
/// which a missing raise may be.
pub fn mutants_guided(
    lang: Language,
    path: &str,
    src: &str,
    targets: &[Target],
    limit: usize,
    learned: &HashMap<String, f64>,
    raises: &[Expected],
) -> Vec<Mutant> {
    let Some(language) = language(lang, path) else {
        return vec![];
    };
    let mut parser = Parser::new();
    if parser.set_language(&language).is_err() {
        return vec![];
    }
    let Some(tree) = parser.parse(src, None) else {
        return vec![];
    };
    let line_starts = std::iter::once(0)
        .chain(src.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut ctx = Ctx {
        lang,
        learned,
        raises,
        src,
        parser,
        tree: tree.clone(),
        line_starts,
        out: vec![],
        seen: HashSet::new(),
    };
    let lines = line_scores(&tree, src, targets);
    let ing = ingredients::Ingredients::collect(&tree, src, lang);
    let mut stack = vec![tree.root_node()];
    while let Some(n) = stack.pop() {
        let l = line(&n);
        if let Some(score) = lines.get(&l).copied() {
            mutate(&mut ctx, &n, score);
            classes::mutate(&mut ctx, &n, score, &ing);
        }
        let mut c = n.walk();
        for child in n.children(&mut c) {
            stack.push(child);
        }
    }
    if lang == Language::Python {
        templates(&mut ctx, &tree, &lines);
    }
    let mut out = ctx.out;
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.edit_size.cmp(&b.edit_size))
            .then(a.line.cmp(&b.line))
            .then(a.description.cmp(&b.description))
    });
    out.truncate(limit);
    // Only the mutants kept become whole texts.
    for m in &mut out {
        let (p, end, with) = &m.change;
        m.new_text = format!("{}{with}{}", &src[..*p], &src[*end..]);
        m.file = path.to_owned();
    }
    out
}

/// The byte range of `src` that `new` replaces, and its replacement: what is left between the
/// longest common prefix and suffix. `None` when they are equal or the range would split a
/// character.
fn changed_range<'n>(src: &str, new: &'n str) -> Option<(usize, usize, &'n str)> {
    let (a, b) = (src.as_bytes(), new.as_bytes());
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let room = a.len().min(b.len()) - p;
    let q = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(room)
        .take_while(|(x, y)| x == y)
        .count();
    let (end, new_end) = (a.len() - q, b.len() - q);
    let ok = [src.is_char_boundary(p), src.is_char_boundary(end)]
        .iter()
        .chain(&[new.is_char_boundary(p), new.is_char_boundary(new_end)])
        .all(|x| *x);
    let changed = end > p || new_end > p;
    (ok && changed).then(|| (p, end, &new[p..new_end]))
}

/// Two single edits at once, for the bugs no single edit fixes (combined only when the single
/// edits are exhausted: the caller's choice). `singles` are candidates for `src`, the best
/// first. Two kinds of pairs, bounded:
/// - any two of the first `k` (their number grows with the square: 10 make at most 45);
/// - siblings: the same change at two places among all of `singles` (`n` → `n + 1` and
///   `m` → `m + 1`): one slip repeated is the commonest multi-place bug, and such pairs rank
///   first, at most [`SIBLINGS`] edits of one change.
///
/// A pair whose changes overlap, or whose result does not parse, is left out. Scored by the
/// product of the two scores, a sibling pair twice that.
pub fn pairs(lang: Language, path: &str, src: &str, singles: &[Mutant], k: usize) -> Vec<Mutant> {
    let Some(language) = language(lang, path) else {
        return vec![];
    };
    let mut parser = Parser::new();
    if parser.set_language(&language).is_err() {
        return vec![];
    }
    let ranges: Vec<_> = singles
        .iter()
        .map(|m| {
            let (p, end, with) = &m.change;
            (*end <= src.len() && p <= end).then_some((*p, *end, with.as_str()))
        })
        .collect();
    // The same change: what is removed and what is put in its place.
    let change = |i: usize| ranges[i].map(|(s0, e0, t)| (&src[s0..e0], t));
    let mut wanted: Vec<(usize, usize, f64)> = vec![];
    for i in 0..singles.len() {
        for j in i + 1..singles.len() {
            if i < k && j < k {
                wanted.push((i, j, 1.0));
            } else if change(i).is_some() && change(i) == change(j) {
                let group = (0..i).filter(|x| change(*x) == change(i)).count();
                if group < SIBLINGS && (0..j).filter(|x| change(*x) == change(i)).count() < SIBLINGS
                {
                    wanted.push((i, j, 2.0));
                }
            }
        }
    }
    let mut out = vec![];
    let mut seen = HashSet::new();
    for (i, j, bonus) in wanted {
        let (a, b) = (&singles[i], &singles[j]);
        let (Some(ra), Some(rb)) = (ranges[i], ranges[j]) else {
            continue;
        };
        // In file order, not overlapping (two insertions at one place are ambiguous).
        let ((s1, e1, t1), (s2, e2, t2), first, second) = if ra.0 <= rb.0 {
            (ra, rb, a, b)
        } else {
            (rb, ra, b, a)
        };
        if e1 > s2 || s1 == s2 {
            continue;
        }
        let text = format!("{}{t1}{}{t2}{}", &src[..s1], &src[e1..s2], &src[e2..]);
        if !seen.insert(text.clone()) {
            continue;
        }
        match parser.parse(&text, None) {
            Some(t) if !t.root_node().has_error() => {}
            _ => continue,
        }
        out.push(Mutant {
            file: path.to_owned(),
            line: first.line.min(second.line),
            operator: "two-edits",
            description: format!("{}; and {}", first.description, second.description),
            change: changed_range(src, &text)
                .map(|(p, e, w)| (p, e, w.to_owned()))
                .unwrap_or_default(),
            new_text: text,
            score: a.score * b.score * bonus,
            edit_size: a.edit_size + b.edit_size,
        });
    }
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.edit_size.cmp(&b.edit_size))
    });
    out
}

/// At most this many places of one repeated change are paired ([`pairs`]).
pub const SIBLINGS: usize = 6;

/// Whether a node of this kind is a function, in any of the grammars.
fn is_function_kind(kind: &str) -> bool {
    matches!(
        kind,
        "function_definition"
            | "function_declaration"
            | "method_definition"
            | "method_declaration"
            | "func_literal"
            | "arrow_function"
            | "function_expression"
    )
}

fn functions<'t>(tree: &'t Tree) -> Vec<Node<'t>> {
    let mut v = vec![];
    let mut stack = vec![tree.root_node()];
    while let Some(n) = stack.pop() {
        if is_function_kind(n.kind()) {
            v.push(n);
        }
        let mut c = n.walk();
        for child in n.children(&mut c) {
            stack.push(child);
        }
    }
    v
}

/// Lines to mutate with their suspicion: each target line, and the rest of its enclosing
/// function a little lower (a suspect on a `def` line means "somewhere in this function").
fn line_scores(tree: &Tree, src: &str, targets: &[Target]) -> std::collections::HashMap<u32, f64> {
    let mut m = std::collections::HashMap::new();
    let fns = functions(tree);
    let total = u32::try_from(src.lines().count()).unwrap_or(u32::MAX);
    let mut put = |l: u32, s: f64| {
        let e = m.entry(l).or_insert(0.0f64);
        *e = e.max(s);
    };
    for t in targets {
        match t.line {
            Some(l) => {
                put(l, t.score);
                let enclosing = fns
                    .iter()
                    .filter(|f| {
                        line(f) <= l && l <= u32::try_from(f.end_position().row).unwrap_or(0) + 1
                    })
                    .min_by_key(|f| f.end_byte() - f.start_byte());
                if let Some(f) = enclosing {
                    let end = u32::try_from(f.end_position().row).unwrap_or(0) + 1;
                    for k in line(f)..=end {
                        put(k, t.score * 0.8);
                    }
                }
            }
            None => {
                for k in 1..=total {
                    put(k, t.score * 0.5);
                }
            }
        }
    }
    // A module-level constant is run by every test, passing or failing, so neither the trace
    // nor the spectrum singles it out; the suspect lines that use it point at it instead.
    let constants = module_constants(tree, src);
    let uses = identifier_lines(tree, src, constants.iter().map(|(n, _, _)| n.as_str()));
    let mut boost: Vec<(u32, u32, f64)> = vec![];
    for (name, first, last) in &constants {
        let used = uses
            .get(name.as_str())
            .into_iter()
            .flatten()
            .filter(|l| !(first..=last).contains(l))
            .filter_map(|l| m.get(l).copied())
            .fold(0.0f64, f64::max);
        if used > 0.0 {
            boost.push((*first, *last, used * DEF_USE));
        }
    }
    for (first, last, score) in boost {
        for k in first..=last {
            let e = m.entry(k).or_insert(0.0f64);
            *e = e.max(score);
        }
    }
    m
}

/// How much of the suspicion of the lines that use a module constant its definition gets.
const DEF_USE: f64 = 0.9;

/// Module-level names bound once to a value (`RATE = 0.2`, `const HOUR = 3600;`, also
/// `export const`), with the lines of their definition.
fn module_constants(tree: &Tree, src: &str) -> Vec<(String, u32, u32)> {
    let mut out = vec![];
    let root = tree.root_node();
    let mut c = root.walk();
    let last = |n: &Node| u32::try_from(n.end_position().row).unwrap_or(u32::MAX - 1) + 1;
    for stmt in root.named_children(&mut c) {
        let stmt = match stmt.kind() {
            "export_statement" => match stmt.child_by_field_name("declaration") {
                Some(d) => d,
                None => continue,
            },
            _ => stmt,
        };
        match stmt.kind() {
            "expression_statement" => {
                let left = stmt
                    .named_child(0)
                    .filter(|a| a.kind() == "assignment")
                    .and_then(|a| a.child_by_field_name("left"))
                    .filter(|l| l.kind() == "identifier");
                if let Some(l) = left {
                    out.push((text(&l, src).to_owned(), line(&stmt), last(&stmt)));
                }
            }
            "lexical_declaration" | "variable_declaration" => {
                let mut dc = stmt.walk();
                for d in stmt.named_children(&mut dc) {
                    let name = (d.kind() == "variable_declarator")
                        .then(|| d.child_by_field_name("name"))
                        .flatten()
                        .filter(|n| n.kind() == "identifier");
                    if let Some(n) = name
                        && d.child_by_field_name("value").is_some()
                    {
                        out.push((text(&n, src).to_owned(), line(&d), last(&d)));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The lines where each of `names` appears as an identifier, in one walk of the tree.
fn identifier_lines<'s>(
    tree: &Tree,
    src: &'s str,
    names: impl Iterator<Item = &'s str>,
) -> std::collections::HashMap<&'s str, Vec<u32>> {
    let mut found: std::collections::HashMap<&str, Vec<u32>> = names.map(|n| (n, vec![])).collect();
    if found.is_empty() {
        return found;
    }
    let mut stack = vec![tree.root_node()];
    while let Some(n) = stack.pop() {
        if n.kind() == "identifier"
            && let Some(lines) = found.get_mut(text(&n, src))
        {
            lines.push(line(&n));
        }
        let mut c = n.walk();
        for child in n.children(&mut c) {
            stack.push(child);
        }
    }
    found
}

fn mutate(ctx: &mut Ctx, n: &Node, score: f64) {
    let python = ctx.lang == Language::Python;
    match n.kind() {
        "binary_operator" | "binary_expression" => {
            let Some(op) = n.child_by_field_name("operator") else {
                return;
            };
            let o = text(&op, ctx.src).to_owned();
            let (arith, compare, logic): (&[&str], &[&str], &[&str]) = match ctx.lang {
                Language::Python => (ARITH, COMPARE, &[]),
                Language::Go => (JS_ARITH, GO_COMPARE, JS_LOGIC),
                _ => (JS_ARITH, JS_COMPARE, JS_LOGIC),
            };
            for (class, name) in [
                (arith, "arithmetic"),
                (compare, "comparison"),
                (logic, "boolean"),
            ] {
                other_operators(ctx, &op, class, name, score);
            }
            if matches!(o.as_str(), "-" | "/" | "//" | "%" | "<" | ">" | "<=" | ">=") {
                swap_operands(ctx, n, score);
            }
        }
        "comparison_operator" => {
            // Python: `a < b` (possibly chained); mutate each operator token.
            let mut c = n.walk();
            let ops: Vec<Node> = n.children(&mut c).filter(|k| !k.is_named()).collect();
            for op in &ops {
                other_operators(ctx, op, COMPARE, "comparison", score);
            }
            if ops.len() == 1 {
                swap_operands(ctx, n, score);
            }
        }
        "boolean_operator" => {
            if let Some(op) = n.child_by_field_name("operator") {
                let alt = if text(&op, ctx.src) == "and" {
                    "or"
                } else {
                    "and"
                };
                ctx.replace(&op, alt, "boolean", score);
            }
            // A missing `not` on one side: `a and b` → `a and not b`.
            for side in ["left", "right"] {
                if let Some(x) = n
                    .child_by_field_name(side)
                    .filter(|x| x.kind() != "not_operator")
                {
                    let negated = format!("not {}", text(&x, ctx.src));
                    if x.kind() == "boolean_operator" {
                        continue;
                    }
                    ctx.replace(&x, &negated, "negation", score);
                }
            }
        }
        "integer" | "number" | "int_literal" => {
            let t = text(n, ctx.src);
            if let Ok(v) = t.parse::<i64>() {
                for alt in [v.checked_add(1), v.checked_sub(1)].into_iter().flatten() {
                    ctx.replace(n, &alt.to_string(), "constant", score);
                }
                // A zero too few or too many (`360` for `3600`, `10000` for `1000`).
                if v.unsigned_abs() >= 10 {
                    if let Some(alt) = v.checked_mul(10) {
                        ctx.replace(n, &alt.to_string(), "magnitude", score);
                    }
                    if v % 10 == 0 && v.unsigned_abs() >= 100 {
                        ctx.replace(n, &(v / 10).to_string(), "magnitude", score);
                    }
                }
            }
        }
        // `return True` where `return False` was meant, a flag set the wrong way.
        "true" | "false" => {
            let alt = match (text(n, ctx.src), python) {
                ("True", true) => "False",
                ("False", true) => "True",
                ("true", false) => "false",
                ("false", false) => "true",
                _ => return,
            };
            ctx.replace(n, alt, "boolean-literal", score);
        }
        "not_operator" if python => drop_negation(ctx, n, score),
        "unary_expression" if !python && text(n, ctx.src).starts_with('!') => {
            drop_negation(ctx, n, score);
        }
        _ if python => python_only(ctx, n, score),
        _ => {}
    }
}

/// Operator token `op` replaced by each other operator of its class (`class`, of kind `name`),
/// when it is one of them.
fn other_operators(ctx: &mut Ctx, op: &Node, class: &[&str], name: &'static str, score: f64) {
    let o = text(op, ctx.src).to_owned();
    if !class.contains(&o.as_str()) {
        return;
    }
    for alt in class.iter().filter(|a| **a != o) {
        ctx.replace(op, alt, comparison_kind(name, &o, alt), score);
    }
}

/// `not x` / `!x` → `x`.
fn drop_negation(ctx: &mut Ctx, n: &Node, score: f64) {
    if let Some(arg) = n.child_by_field_name("argument") {
        let inner = text(&arg, ctx.src).to_owned();
        ctx.replace(n, &inner, "negation", score);
    }
}

/// `<` ↔ `<=` and `>` ↔ `>=` move a boundary by one: their own, likelier kind.
fn comparison_kind(kind: &'static str, from: &str, to: &str) -> &'static str {
    let boundary = matches!(
        (from, to),
        ("<", "<=") | ("<=", "<") | (">", ">=") | (">=", ">")
    );
    if kind == "comparison" && boundary {
        "boundary"
    } else {
        kind
    }
}

fn swap_operands(ctx: &mut Ctx, n: &Node, score: f64) {
    let (Some(l), Some(r)) = (n.child(0), n.child(n.child_count().saturating_sub(1))) else {
        return;
    };
    if l.id() == r.id() {
        return;
    }
    let (lt, rt) = (text(&l, ctx.src).to_owned(), text(&r, ctx.src).to_owned());
    let desc = format!("line {}: swap `{lt}` and `{rt}`", line(n));
    ctx.swap(n, &l, &r, "swap-operands", desc, score);
}

fn python_only(ctx: &mut Ctx, n: &Node, score: f64) {
    match n.kind() {
        // Off by one: `xs[i]`, `xs[a:b]`, `range(n)`, `len(xs)`.
        "subscript" | "slice" => {
            let mut c = n.walk();
            let parts: Vec<Node> = n
                .named_children(&mut c)
                .filter(|k| {
                    matches!(
                        k.kind(),
                        "identifier" | "call" | "attribute" | "binary_operator"
                    )
                })
                .collect();
            // For a subscript the first named child is the value being indexed.
            for p in parts.iter().skip(usize::from(n.kind() == "subscript")) {
                off_by_one(ctx, p, score);
            }
        }
        "call" => {
            let func = n
                .child_by_field_name("function")
                .map(|f| text(&f, ctx.src).to_owned())
                .unwrap_or_default();
            let Some(args) = n.child_by_field_name("arguments") else {
                return;
            };
            let mut c = args.walk();
            let list: Vec<Node> = args
                .named_children(&mut c)
                .filter(|a| a.kind() != "comment")
                .collect();
            if func == "range" {
                for a in &list {
                    if !matches!(a.kind(), "integer") {
                        off_by_one(ctx, a, score);
                    }
                }
            }
            if func == "len" && n.parent().is_some_and(|p| p.kind() != "binary_operator") {
                off_by_one(ctx, n, score);
            }
            for pair in list.windows(2) {
                if pair
                    .iter()
                    .any(|a| a.kind() == "keyword_argument" || a.kind() == "list_splat")
                {
                    continue;
                }
                let (a, b) = (
                    text(&pair[0], ctx.src).to_owned(),
                    text(&pair[1], ctx.src).to_owned(),
                );
                let desc = format!(
                    "line {}: swap arguments `{a}` and `{b}` of `{func}`",
                    line(n)
                );
                ctx.swap(n, &pair[0], &pair[1], "swap-arguments", desc, score);
            }
        }
        "if_statement" | "while_statement" | "elif_clause" => {
            if let Some(cond) = n.child_by_field_name("condition")
                && cond.kind() != "not_operator"
            {
                let t = text(&cond, ctx.src);
                let negated = format!("not ({t})");
                ctx.replace(&cond, &negated, "negation", score);
            }
        }
        "identifier" => {
            variable(ctx, n, score);
            // A loop counter used as a value (`index` of `enumerate`, the variable of `range`)
            // is a classic place for a missing `+ 1`.
            if is_counter(n, ctx.src)
                && n.parent().is_some_and(|p| {
                    matches!(
                        p.kind(),
                        "argument_list" | "tuple" | "list" | "return_statement" | "subscript"
                    )
                })
            {
                off_by_one(ctx, n, score);
            }
        }
        "return_statement" => {
            if let Some(v) = n.named_child(0).filter(|v| {
                matches!(
                    v.kind(),
                    "attribute"
                        | "identifier"
                        | "call"
                        | "binary_operator"
                        | "parenthesized_expression"
                )
            }) {
                off_by_one(ctx, &v, score * 0.9);
            }
        }
        "expression_statement" => {
            let t = text(n, ctx.src).to_owned();
            let siblings = n.parent().map(|p| p.named_child_count()).unwrap_or(0);
            let desc = format!(
                "line {}: delete `{}`",
                line(n),
                t.lines().next().unwrap_or("")
            );
            let with = if siblings <= 1 { "pass" } else { "" };
            let (start, end) = if with.is_empty() {
                whole_lines(ctx.src, n)
            } else {
                (n.start_byte(), n.end_byte())
            };
            ctx.edit(n, "delete-statement", desc, (start, end), with, score);
        }
        _ => {}
    }
}

/// Names bound by an assignment or `for` target: `x`, `a, b`, `(a, b)`, `[a, b]`.
fn pattern_names(n: &Node, src: &str) -> Vec<String> {
    match n.kind() {
        "identifier" => vec![text(n, src).to_owned()],
        "pattern_list" | "tuple_pattern" | "list_pattern" => {
            let mut c = n.walk();
            n.named_children(&mut c)
                .flat_map(|k| pattern_names(&k, src))
                .collect()
        }
        _ => vec![],
    }
}

/// Whether identifier `n` is the counter of an enclosing `for` over `range(...)` or the index
/// of an `enumerate(...)`.
fn is_counter(n: &Node, src: &str) -> bool {
    let name = text(n, src);
    let mut p = n.parent();
    while let Some(x) = p {
        if x.kind() == "function_definition" {
            break;
        }
        if x.kind() == "for_statement" {
            let right = x.child_by_field_name("right");
            let callee = right
                .filter(|r| r.kind() == "call")
                .and_then(|r| r.child_by_field_name("function"))
                .map(|f| text(&f, src).to_owned())
                .unwrap_or_default();
            let left = x.child_by_field_name("left");
            let counter = match callee.as_str() {
                "range" => left
                    .filter(|l| l.kind() == "identifier")
                    .map(|l| text(&l, src).to_owned()),
                "enumerate" => left.and_then(|l| pattern_names(&l, src).into_iter().next()),
                _ => None,
            };
            if counter.as_deref() == Some(name) {
                return true;
            }
        }
        p = x.parent();
    }
    false
}

/// The byte range of the lines `n` spans, newline included.
fn whole_lines(src: &str, n: &Node) -> (usize, usize) {
    let start = src[..n.start_byte()]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let end = src[n.end_byte()..]
        .find('\n')
        .map(|i| n.end_byte() + i + 1)
        .unwrap_or(src.len());
    (start, end)
}

fn off_by_one(ctx: &mut Ctx, n: &Node, score: f64) {
    let t = text(n, ctx.src).to_owned();
    for what in ["+ 1", "- 1"] {
        let with = format!("{t} {what}");
        ctx.replace(n, &with, "off-by-one", score);
    }
}

/// Use another variable in scope: names bound in the enclosing function (parameters and
/// assignments) of which this identifier is one.
fn variable(ctx: &mut Ctx, n: &Node, score: f64) {
    let parent = n.parent();
    // Only values being read: not call targets, attribute names, keyword names, or bindings.
    if parent.is_some_and(|p| {
        matches!(
            p.kind(),
            "call"
                | "attribute"
                | "keyword_argument"
                | "parameters"
                | "function_definition"
                | "default_parameter"
        ) || (p.kind() == "assignment"
            && p.child_by_field_name("left")
                .is_some_and(|l| l.id() == n.id()))
            || (p.kind() == "for_statement"
                && p.child_by_field_name("left")
                    .is_some_and(|l| l.id() == n.id()))
    }) {
        return;
    }
    let mut f = n.parent();
    while let Some(p) = f {
        if p.kind() == "function_definition" {
            break;
        }
        f = p.parent();
    }
    let Some(func) = f else { return };
    let mut names: Vec<String> = vec![];
    let mut stack = vec![func];
    while let Some(x) = stack.pop() {
        let bound = match x.kind() {
            "parameters" => {
                let mut c = x.walk();
                x.named_children(&mut c)
                    .filter_map(|p| match p.kind() {
                        "identifier" => Some(text(&p, ctx.src).to_owned()),
                        "default_parameter" | "typed_parameter" | "typed_default_parameter" => p
                            .child_by_field_name("name")
                            .or_else(|| p.named_child(0))
                            .map(|q| text(&q, ctx.src).to_owned()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            }
            "assignment" | "for_statement" => x
                .child_by_field_name("left")
                .map(|l| pattern_names(&l, ctx.src))
                .unwrap_or_default(),
            _ => vec![],
        };
        for b in bound {
            if !names.contains(&b) {
                names.push(b);
            }
        }
        let mut c = x.walk();
        for child in x.children(&mut c) {
            stack.push(child);
        }
    }
    let me = text(n, ctx.src).to_owned();
    if !names.contains(&me) {
        return;
    }
    for other in names.iter().filter(|x| **x != me) {
        ctx.replace(n, other, "variable", score);
    }
}

/// Template operators: a missing `return`, a missing base case, a missing division guard.
fn templates(ctx: &mut Ctx, tree: &Tree, lines: &std::collections::HashMap<u32, f64>) {
    for f in functions(tree) {
        if f.kind() != "function_definition" {
            continue;
        }
        let start = line(&f);
        let end = u32::try_from(f.end_position().row).unwrap_or(0) + 1;
        let score = (start..=end)
            .filter_map(|l| lines.get(&l))
            .fold(0.0f64, |a, b| a.max(*b));
        if score == 0.0 {
            continue;
        }
        let Some(body) = f.child_by_field_name("body") else {
            continue;
        };
        let name = f
            .child_by_field_name("name")
            .map(|n| text(&n, ctx.src).to_owned())
            .unwrap_or_default();
        let params: Vec<String> = f
            .child_by_field_name("parameters")
            .map(|p| {
                let mut c = p.walk();
                p.named_children(&mut c)
                    .filter(|q| q.kind() == "identifier")
                    .map(|q| text(&q, ctx.src).to_owned())
                    .filter(|q| q != "self")
                    .collect()
            })
            .unwrap_or_default();
        let Some(first) = body.named_child(0) else {
            continue;
        };
        let indent = " ".repeat(first.start_position().column);
        let line_start = ctx.src[..first.start_byte()]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let body_text = text(&body, ctx.src);
        let has_return = body_text.contains("return");

        // A function that returns nothing but builds a value: return it at the end.
        if !has_return {
            let mut built: Vec<String> = vec![];
            let mut stack = vec![body];
            while let Some(x) = stack.pop() {
                if x.kind() == "assignment" {
                    for b in x
                        .child_by_field_name("left")
                        .map(|l| pattern_names(&l, ctx.src))
                        .unwrap_or_default()
                    {
                        if !built.contains(&b) {
                            built.push(b);
                        }
                    }
                }
                if x.kind() != "function_definition" {
                    let mut c = x.walk();
                    for child in x.children(&mut c) {
                        stack.push(child);
                    }
                }
            }
            let at = body.end_byte();
            for b in built {
                let desc = format!("line {end}: return `{b}` at the end of `{name}`");
                ctx.edit(
                    &body,
                    "missing-return",
                    desc,
                    (at, at),
                    format!("\n{indent}return {b}"),
                    score,
                );
            }
        }

        // Missing return: the last statement computes a value nobody returns.
        let count = body.named_child_count();
        if let Some(last) = count
            .checked_sub(1)
            .and_then(|i| body.named_child(u32::try_from(i).ok()?))
            && last.kind() == "expression_statement"
            && !has_return
        {
            let expr = text(&last, ctx.src).to_owned();
            if let Some(value) = last
                .named_child(0)
                .filter(|e| e.kind() == "assignment")
                .and_then(|a| a.child_by_field_name("left"))
                .map(|l| text(&l, ctx.src).to_owned())
            {
                let desc = format!(
                    "line {}: return `{value}` at the end of `{name}`",
                    line(&last)
                );
                let at = last.end_byte();
                ctx.edit(
                    &last,
                    "missing-return",
                    desc,
                    (at, at),
                    format!("\n{indent}return {value}"),
                    score,
                );
            } else {
                let desc = format!("line {}: return `{expr}`", line(&last));
                ctx.edit(
                    &last,
                    "missing-return",
                    desc,
                    (last.start_byte(), last.end_byte()),
                    format!("return {expr}"),
                    score,
                );
            }
        }

        // Missing base case: a recursive function whose first statement is not a guard.
        let recursive = body_text.contains(&format!("{name}("));
        if recursive
            && first.kind() != "if_statement"
            && let Some(p) = params.first()
        {
            for (cond, ret) in [
                (format!("{p} <= 0"), "0".to_owned()),
                (format!("{p} <= 1"), p.clone()),
                (format!("{p} == 0"), "1".to_owned()),
                (format!("{p} <= 1"), "1".to_owned()),
                (format!("not {p}"), p.clone()),
            ] {
                let desc = format!(
                    "line {}: base case `if {cond}: return {ret}` in `{name}`",
                    line(&first)
                );
                let text = format!("{indent}if {cond}:\n{indent}    return {ret}\n");
                ctx.edit(
                    &first,
                    "base-case",
                    desc,
                    (line_start, line_start),
                    text,
                    score,
                );
            }
        }

        // Missing guard against an empty input before a division by its length.
        for p in &params {
            if body_text.contains(&format!("/ len({p})"))
                || body_text.contains(&format!("/len({p})"))
            {
                for ret in ["0", "None", "0.0"] {
                    let desc = format!(
                        "line {}: guard `if not {p}: return {ret}` in `{name}`",
                        line(&first)
                    );
                    let text = format!("{indent}if not {p}:\n{indent}    return {ret}\n");
                    ctx.edit(&first, "guard", desc, (line_start, line_start), text, score);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edit size of a mutant, measured on the subtree around its change, is the leaf
    /// distance of the whole two files, bar a few statement deletions next to a like
    /// statement (the whole files' prefix and suffix then slide over it): checked on every
    /// 7th mutant of every line of a third of the corpus programs (all mutants of all of them:
    /// 50 of 34,741 differ).
    #[test]
    fn the_edit_size_around_a_change_is_the_whole_files_leaf_distance() {
        let programs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/classes/programs");
        let (mut checked, mut differ) = (0, vec![]);
        let mut dirs: Vec<_> = std::fs::read_dir(&programs)
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        dirs.sort();
        // A third of the programs, of each language.
        for dir in dirs.into_iter().step_by(3) {
            for f in std::fs::read_dir(dir).unwrap() {
                let path = f.unwrap().path();
                let name = path.to_string_lossy().into_owned();
                let lang = match path.extension().and_then(|e| e.to_str()) {
                    Some("py") => Language::Python,
                    Some("js") => Language::JavaScript,
                    Some("go") => Language::Go,
                    _ => continue,
                };
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("test"))
                {
                    continue;
                }
                let src = std::fs::read_to_string(&path).unwrap();
                let targets: Vec<Target> = (1..=src.lines().count() as u32)
                    .map(|l| Target {
                        line: Some(l),
                        score: 1.0,
                    })
                    .collect();
                for m in mutants_with(lang, &name, &src, &targets, usize::MAX, &HashMap::new())
                    .into_iter()
                    .step_by(7)
                {
                    checked += 1;
                    let whole = leaf_distance(lang, &name, &src, &m.new_text).unwrap();
                    if whole != m.edit_size {
                        differ.push(format!(
                            "{name}: {} ({} != {whole})",
                            m.description, m.edit_size
                        ));
                    }
                }
            }
        }
        assert!(checked > 1000, "only {checked} mutants");
        assert!(
            differ.len() * 200 <= checked,
            "{} of {checked} differ: {:#?}",
            differ.len(),
            &differ[..differ.len().min(20)]
        );
    }

    fn has(ms: &[Mutant], needle: &str) -> bool {
        ms.iter().any(|m| m.new_text.contains(needle))
    }

    #[test]
    fn python_operators_constants_and_bounds() {
        let src = "def mean(xs):\n    return sum(xs) / (len(xs) - 1)\n";
        let ms = mutants(
            Language::Python,
            "m.py",
            src,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "return sum(xs) / (len(xs) + 1)"));
        assert!(has(&ms, "return sum(xs) / (len(xs) - 0)"));
        assert!(has(&ms, "return sum(xs) * (len(xs) - 1)"));
        // Every candidate parses.
        for m in &ms {
            let mut p = Parser::new();
            p.set_language(&tree_sitter_python::LANGUAGE.into())
                .unwrap();
            assert!(
                !p.parse(&m.new_text, None).unwrap().root_node().has_error(),
                "{}",
                m.new_text
            );
        }
        // Ranked: the most suspicious line's operator mutations come before deletions.
        let first_delete = ms
            .iter()
            .position(|m| m.operator == "delete-statement")
            .unwrap_or(ms.len());
        let first_arith = ms.iter().position(|m| m.operator == "arithmetic").unwrap();
        assert!(first_arith < first_delete);
    }

    #[test]
    fn constants_gain_or_lose_a_zero_after_the_off_by_ones() {
        let t = [Target {
            line: Some(1),
            score: 1.0,
        }];
        let js = "const SECONDS_PER_HOUR = 360;\n";
        let ms = mutants(Language::JavaScript, "d.js", js, &t, 500);
        let at = |needle: &str| ms.iter().position(|m| m.new_text.contains(needle));
        let ten = at("= 3600;").expect("×10");
        assert!(at("= 361;").expect("+1") < ten);
        assert!(at("= 36;").is_some(), "÷10");
        let py = "STEP = 1000\nSMALL = 7\n";
        let ms = mutants(Language::Python, "s.py", py, &t, 500);
        assert!(has(&ms, "STEP = 100\n") && has(&ms, "STEP = 10000\n"));
        // Small numbers only move by one; huge ones do not overflow.
        let ms = mutants(Language::Python, "s.py", "X = 7\n", &t, 500);
        assert!(!has(&ms, "X = 70"));
        let big = format!("X = {}\n", i64::MAX);
        let ms = mutants(Language::Python, "s.py", &big, &t, 500);
        assert!(has(&ms, &format!("X = {}\n", i64::MAX - 1)));
    }

    #[test]
    fn module_constants_get_the_suspicion_of_the_lines_that_use_them() {
        let js = "'use strict';\nconst MS = 1000;\nconst HOUR = 360;\nconst UNUSED = 7;\n\nfunction hours(ms) {\n  return Math.floor(ms / MS / HOUR);\n}\nmodule.exports = { hours };\n";
        let t = [Target {
            line: Some(6),
            score: 1.0,
        }];
        let tree = {
            let mut p = Parser::new();
            p.set_language(&tree_sitter_javascript::LANGUAGE.into())
                .unwrap();
            p.parse(js, None).unwrap()
        };
        let scores = line_scores(&tree, js, &t);
        assert_eq!(scores.get(&7).copied(), Some(0.8));
        assert_eq!(scores.get(&3).copied(), Some(0.8 * DEF_USE));
        assert_eq!(scores.get(&2).copied(), Some(0.8 * DEF_USE));
        assert_eq!(scores.get(&4), None, "used nowhere suspect");
        let ms = mutants(Language::JavaScript, "d.js", js, &t, 500);
        assert!(has(&ms, "const HOUR = 3600;"));
        let py =
            "DAYS = [31, 28, 31]\nOTHER = 5\n\n\ndef days(month):\n    return DAYS[month - 1]\n";
        let t = [Target {
            line: Some(6),
            score: 1.0,
        }];
        let ms = mutants(Language::Python, "m.py", py, &t, 500);
        assert!(has(&ms, "DAYS = [31, 29, 31]"));
        assert!(!ms.iter().any(|m| m.line == 2), "OTHER is not used");
    }

    #[test]
    fn boolean_literals_flip_in_python_and_javascript() {
        let t = [Target {
            line: Some(3),
            score: 1.0,
        }];
        let py =
            "def valid(code):\n    if len(code) != 10:\n        return True\n    return False\n";
        let ms = mutants(Language::Python, "v.py", py, &t, 500);
        // The suspicious line's literal first, then the rest of the function's.
        let at = |needle: &str| ms.iter().position(|m| m.new_text.contains(needle));
        let line3 = at("        return False\n    return False").expect("line 3 flipped");
        let line4 = at("        return True\n    return True").expect("line 4 flipped");
        assert!(line3 < line4);
        assert_eq!(ms[line3].operator, "boolean-literal");
        let js = "function valid(code) {\n  if (code.length !== 10) {\n    return true;\n  }\n  return false;\n}\n";
        let ms = mutants(Language::JavaScript, "v.js", js, &t, 500);
        assert!(has(&ms, "    return false;\n  }"));
        assert!(ms.iter().all(|m| !m.new_text.contains("False")));
    }

    #[test]
    fn python_templates() {
        let fact = "def fact(n):\n    return n * fact(n - 1)\n";
        let ms = mutants(
            Language::Python,
            "f.py",
            fact,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(
            has(
                &ms,
                "    if n == 0:\n        return 1\n    return n * fact(n - 1)"
            ),
            "{:#?}",
            ms.iter().map(|m| &m.description).collect::<Vec<_>>()
        );
        let noret = "def total(xs):\n    s = sum(xs)\n";
        let ms = mutants(
            Language::Python,
            "t.py",
            noret,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "s = sum(xs)\n    return s"));
        let cmp = "def adult(age):\n    return age > 18\n";
        let ms = mutants(
            Language::Python,
            "a.py",
            cmp,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "age >= 18"));
        let swap = "def sub(a, b):\n    return minus(b, a)\n";
        let ms = mutants(
            Language::Python,
            "s.py",
            swap,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "minus(a, b)"));
        let var = "def pick(a, b):\n    c = a + 1\n    return a\n";
        let ms = mutants(
            Language::Python,
            "v.py",
            var,
            &[Target {
                line: Some(3),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "    return c\n"));
        let neg = "def ok(x):\n    if x:\n        return 1\n    return 2\n";
        let ms = mutants(
            Language::Python,
            "n.py",
            neg,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "if not (x):"));
    }

    #[test]
    fn python_counters_patterns_negated_operands_and_built_values() {
        let t = |src: &str, line: u32| {
            mutants(
                Language::Python,
                "m.py",
                src,
                &[Target {
                    line: Some(line),
                    score: 1.0,
                }],
                2000,
            )
        };
        let ms = t(
            "def lint(lines):\n    out = []\n    for index, line in enumerate(lines):\n        out.append((index, line))\n    return out\n",
            4,
        );
        assert!(has(&ms, "out.append((index + 1, line))"));
        let ms = t(
            "def alerts(rs, threshold):\n    found = []\n    for sensor, value in rs:\n        found.append((sensor, threshold))\n    return found\n",
            4,
        );
        assert!(has(&ms, "found.append((sensor, value))"));
        let ms = t(
            "def keep(u):\n    if u['a'] and u['b']:\n        return 1\n    return 0\n",
            2,
        );
        assert!(has(&ms, "if u['a'] and not u['b']:"));
        let ms = t(
            "def scale(xs):\n    out = []\n    for x in xs:\n        out.append(x * 2)\n",
            4,
        );
        assert!(has(&ms, "        out.append(x * 2)\n    return out"));
        let ms = t("def days(a, b):\n    return (b - a).days\n", 2);
        assert!(has(&ms, "return (b - a).days + 1"));
    }

    #[test]
    fn javascript_operators_and_constants() {
        let src =
            "function last(xs) {\n  return xs[xs.length - 2];\n}\nmodule.exports = { last };\n";
        let ms = mutants(
            Language::JavaScript,
            "l.js",
            src,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "xs[xs.length - 1]"));
        assert!(has(&ms, "xs[xs.length + 2]"));
        let ts = "export function ok(a: number): boolean {\n  return a > 0 && a < 10;\n}\n";
        let ms = mutants(
            Language::TypeScript,
            "o.ts",
            ts,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(has(&ms, "a >= 0"));
        assert!(has(&ms, "a > 0 || a < 10"));
    }

    #[test]
    fn nothing_outside_the_targets_and_no_panics_on_garbage() {
        let src = "def a():\n    return 1 + 2\n\ndef b():\n    return 3 + 4\n";
        let ms = mutants(
            Language::Python,
            "x.py",
            src,
            &[Target {
                line: Some(2),
                score: 1.0,
            }],
            500,
        );
        assert!(ms.iter().all(|m| m.new_text.contains("return 3 + 4")));
        let _ = mutants(
            Language::Python,
            "g.py",
            "def (\0\u{feff}((",
            &[Target {
                line: Some(1),
                score: 1.0,
            }],
            50,
        );
        let _ = mutants(
            Language::Go,
            "g.go",
            "package x",
            &[Target {
                line: None,
                score: 1.0,
            }],
            50,
        );
    }

    #[test]
    fn priors_learned_from_history_rank_an_operator_that_fixed_this_category_first() {
        let learned = learned_priors(["variable-swap", "variable-swap", "boundary"].into_iter());
        assert!(learned["variable-swap"] > learned["boundary"]);
        assert!(learned["variable-swap"] <= 2.0 && learned["boundary"] > 1.0);
        let src = "def f(a, b):\n    return a - b\n";
        let t = [Target {
            line: Some(2),
            score: 1.0,
        }];
        let plain = mutants(Language::Python, "m.py", src, &t, 100);
        let swap = |ms: &[Mutant]| {
            ms.iter()
                .position(|m| m.new_text.contains("b - a"))
                .unwrap()
        };
        let boosted = mutants_with(
            Language::Python,
            "m.py",
            src,
            &t,
            100,
            &learned_priors(std::iter::repeat_n(plain[swap(&plain)].operator, 8)),
        );
        assert!(
            swap(&boosted) < swap(&plain),
            "{} !< {}",
            swap(&boosted),
            swap(&plain)
        );
    }
}

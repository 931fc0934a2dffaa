//! Comparing programs by their syntax trees: two texts are the same program when their trees
//! have the same shape and the same leaves, whatever the spacing and comments.

use proto::messages::Language;
use tree_sitter::{Node, Parser};

use super::language;

/// The leaves and node kinds of `src` in order, comments left out.
fn shape(parser: &mut Parser, src: &str) -> Option<Vec<String>> {
    let tree = parser.parse(src, None)?;
    Some(shape_of(tree.root_node(), src))
}

/// The leaves and node kinds of the subtree at `node` (of a tree of `src`) in order, comments
/// left out.
pub(super) fn shape_of(node: Node, src: &str) -> Vec<String> {
    let mut out = vec![];
    let mut stack: Vec<Node> = vec![node];
    while let Some(n) = stack.pop() {
        if n.kind().contains("comment") {
            continue;
        }
        if n.child_count() == 0 {
            out.push(format!(
                "{}:{}",
                n.kind(),
                src.get(n.start_byte()..n.end_byte()).unwrap_or("")
            ));
        } else {
            out.push(n.kind().to_owned());
        }
        let mut c = n.walk();
        let children: Vec<Node> = n.children(&mut c).collect();
        stack.extend(children.into_iter().rev());
    }
    out
}

/// Whether `a` and `b` (the file at `path`) are the same syntax tree; `None` when the
/// language has no grammar here or a text does not parse.
pub fn same_ast(lang: Language, path: &str, a: &str, b: &str) -> Option<bool> {
    let mut parser = Parser::new();
    parser.set_language(&language(lang, path)?).ok()?;
    Some(shape(&mut parser, a)? == shape(&mut parser, b)?)
}

/// How many leaves differ between `a` and `b`: the length of the two leaf sequences minus
/// twice their longest common prefix and suffix (a cheap edit size that ignores layout).
pub fn leaf_distance(lang: Language, path: &str, a: &str, b: &str) -> Option<usize> {
    let mut parser = Parser::new();
    parser.set_language(&language(lang, path)?).ok()?;
    leaf_distance_with(&mut parser, a, b)
}

/// [`leaf_distance`] with a parser already set to the language.
fn leaf_distance_with(parser: &mut Parser, a: &str, b: &str) -> Option<usize> {
    Some(distance(&shape(parser, a)?, &shape(parser, b)?))
}

pub(super) fn distance(x: &[String], y: &[String]) -> usize {
    let prefix = x.iter().zip(y).take_while(|(p, q)| p == q).count();
    let suffix = x[prefix..]
        .iter()
        .rev()
        .zip(y[prefix..].iter().rev())
        .take_while(|(p, q)| p == q)
        .count();
    (x.len() - prefix - suffix) + (y.len() - prefix - suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_comments_do_not_count_tokens_do() {
        let a = "def f(x):\n    return x + 1\n";
        let b = "def f(x):\n    # one more\n    return x+1\n";
        let c = "def f(x):\n    return x - 1\n";
        assert_eq!(same_ast(Language::Python, "m.py", a, b), Some(true));
        assert_eq!(same_ast(Language::Python, "m.py", a, c), Some(false));
        assert_eq!(leaf_distance(Language::Python, "m.py", a, c), Some(2));
        let g = "package p\n\nfunc F(x int) int {\n\treturn x + 1\n}\n";
        let h = "package p\n\nfunc F(x int) int { return x+1 }\n";
        assert_eq!(same_ast(Language::Go, "p.go", g, h), Some(true));
        assert_eq!(same_ast(Language::Ruby, "p.rb", g, h), None);
    }
}

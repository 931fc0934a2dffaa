//! Unified diffs of whole-file changes, for candidates: `git apply` reads them, and reports
//! show them. Candidates change few lines, so one hunk spans the changed block plus context.

/// A unified diff turning `old` into `new` for the file at `path`, or `None` when equal.
pub fn unified(path: &str, old: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    const CONTEXT: usize = 3;
    let start = prefix.saturating_sub(CONTEXT);
    let a_end = (a.len() - suffix + CONTEXT).min(a.len());
    let b_end = (b.len() - suffix + CONTEXT).min(b.len());
    let mut out = format!("diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n");
    let range = |start: usize, len: usize| {
        if len == 0 {
            format!("{start},0")
        } else if len == 1 {
            format!("{}", start + 1)
        } else {
            format!("{},{len}", start + 1)
        }
    };
    out.push_str(&format!(
        "@@ -{} +{} @@\n",
        range(start, a_end - start),
        range(start, b_end - start)
    ));
    let line = |out: &mut String, mark: char, l: &str| {
        out.push(mark);
        out.push_str(l);
        if !l.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    };
    for l in &a[start..prefix] {
        line(&mut out, ' ', l);
    }
    for l in &a[prefix..a.len() - suffix] {
        line(&mut out, '-', l);
    }
    for l in &b[prefix..b.len() - suffix] {
        line(&mut out, '+', l);
    }
    for l in &a[a.len() - suffix..a_end] {
        line(&mut out, ' ', l);
    }
    Some(out)
}

/// Lines removed plus lines added.
pub fn changed_lines(diff: &str) -> u32 {
    diff.lines()
        .filter(|l| {
            (l.starts_with('+') && !l.starts_with("+++"))
                || (l.starts_with('-') && !l.starts_with("---"))
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_changed_line_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let d = unified("x.py", old, new).unwrap();
        assert_eq!(
            d,
            "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
        assert_eq!(changed_lines(&d), 2);
        assert!(unified("x.py", old, old).is_none());
    }

    #[test]
    fn git_apply_accepts_the_diffs() {
        let cases = [
            ("a\nb\nc\nd\ne\nf\ng\nh\n", "a\nb\nc\nd\nE\nf\ng\nh\n"),
            ("b\n", "a\nb\n"),
            (
                "def f(n):\n    return n * f(n - 1)\n",
                "def f(n):\n    if n == 0:\n        return 1\n    return n * f(n - 1)\n",
            ),
            ("x\ny\nz\n", "x\nz\n"),
            ("a", "b"),
        ];
        for (old, new) in cases {
            let dir = std::env::temp_dir().join(format!("coval-diff-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("x.py"), old).unwrap();
            std::fs::write(dir.join("p.diff"), unified("x.py", old, new).unwrap()).unwrap();
            let st = std::process::Command::new("git")
                .args(["apply", "p.diff"])
                .current_dir(&dir)
                .status()
                .unwrap();
            assert!(
                st.success(),
                "git apply refused the diff of {old:?} -> {new:?}"
            );
            assert_eq!(std::fs::read_to_string(dir.join("x.py")).unwrap(), new);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn insertions_at_the_start_and_missing_newlines() {
        let d = unified("x.py", "b\n", "a\nb\n").unwrap();
        assert!(d.contains("@@ -1 +1,2 @@\n+a\n b\n"), "{d}");
        let d = unified("x.py", "a", "b").unwrap();
        assert!(
            d.contains("-a\n\\ No newline at end of file\n+b\n\\ No newline at end of file\n"),
            "{d}"
        );
    }
}

//! Patch parsing and application on real-looking patches and a real project copy: git and
//! plain diffs over several files, wrong line numbers located by unambiguous context,
//! ambiguity refused, new/deleted/renamed files, search/replace and whole-file edits,
//! all-or-nothing application, size caps, and a normalised diff that `git apply` accepts.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use patch::{Change, Edit, PatchError, PatchLimits, Refusal};

/// A small Python project, as a model would see it.
fn project() -> Result<tempfile::TempDir> {
    let d = tempfile::tempdir()?;
    let w = |p: &str, c: &str| -> Result<()> {
        let p = d.path().join(p);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, c)?;
        Ok(())
    };
    w(
        "shop/cart.py",
        r#""""Shopping cart."""


class Cart:
    def __init__(self):
        self.items = {}

    def add(self, name, price, qty=1):
        old = self.items.get(name, (price, 0))
        self.items[name] = (price, old[1] + qty)

    def total(self):
        return sum(p for p, q in self.items.values())


def empty():
    return Cart()
"#,
    )?;
    w(
        "shop/util.py",
        "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return lo\n    return x\n",
    )?;
    w(
        "tests/test_cart.py",
        "from shop.cart import Cart\n\n\ndef test_total():\n    c = Cart()\n    c.add(\"tea\", 2, 3)\n    assert c.total() == 6\n",
    )?;
    w("README.md", "# shop\n")?;
    Ok(d)
}

fn read(root: &Path, p: &str) -> String {
    std::fs::read_to_string(root.join(p)).unwrap_or_default()
}

fn lim() -> PatchLimits {
    PatchLimits::default()
}

const TWO_FILES: &str = r#"The total ignores quantities and clamp returns the wrong bound. Fix:

```diff
diff --git a/shop/cart.py b/shop/cart.py
index 5b1c0de..9a8e7f1 100644
--- a/shop/cart.py
+++ b/shop/cart.py
@@ -12,5 +12,5 @@ class Cart:
         self.items[name] = (price, old[1] + qty)
 
     def total(self):
-        return sum(p for p, q in self.items.values())
+        return sum(p * q for p, q in self.items.values())
 
diff --git a/shop/util.py b/shop/util.py
--- a/shop/util.py
+++ b/shop/util.py
@@ -3,4 +3,4 @@ def clamp(x, lo, hi):
         return lo
     if x > hi:
-        return lo
+        return hi
     return x
```
"#;

#[test]
fn git_diff_over_two_files_with_normalised_output() -> Result<()> {
    let d = project()?;
    let edits = patch::parse(TWO_FILES, &lim())?;
    ensure!(edits.len() == 2);
    let a = patch::apply(d.path(), &edits, &lim())?;
    ensure!(read(d.path(), "shop/cart.py").contains("sum(p * q for"));
    ensure!(read(d.path(), "shop/util.py").contains("return hi\n    return x\n"));
    ensure!(a.changed_lines == 4, "{a:?}");
    ensure!(a.files.iter().all(|f| f.change == Change::Modified));
    // cart.py's hunk says line 12, the context is at line 10: relocated, unambiguously.
    let cart = a
        .files
        .iter()
        .find(|f| f.path == "shop/cart.py")
        .context("cart")?;
    ensure!(
        cart.relocated.len() == 1 && cart.relocated[0].actual_line == 10,
        "{cart:?}"
    );
    ensure!(
        a.diff.starts_with(
            "diff --git a/shop/cart.py b/shop/cart.py\n--- a/shop/cart.py\n+++ b/shop/cart.py\n@@ "
        ),
        "{}",
        a.diff
    );
    git_apply_reproduces(&a.diff, d.path())
}

/// `git apply` turns a fresh copy into the patched tree with the normalised diff.
fn git_apply_reproduces(diff: &str, patched: &Path) -> Result<()> {
    let fresh = project()?;
    let file = fresh.path().join("normalised.diff");
    std::fs::write(&file, diff)?;
    let out = Command::new("git")
        .args(["apply", "--verbose", "normalised.diff"])
        .current_dir(fresh.path())
        .output()
        .context("git")?;
    ensure!(
        out.status.success(),
        "git apply refused the normalised diff: {}\n{diff}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file)?;
    for f in [
        "shop/cart.py",
        "shop/util.py",
        "tests/test_cart.py",
        "README.md",
        "shop/discount.py",
        "NOTES.md",
    ] {
        ensure!(
            read(fresh.path(), f) == read(patched, f),
            "{f} differs after git apply"
        );
    }
    Ok(())
}

#[test]
fn wrong_line_numbers_fixed_by_context_and_refused_when_ambiguous() -> Result<()> {
    let d = project()?;
    // Line numbers far off; the context occurs once.
    let off = "--- a/shop/util.py\n+++ b/shop/util.py\n@@ -40,3 +40,3 @@\n     if x > hi:\n-        return lo\n+        return hi\n     return x\n";
    let a = patch::apply(d.path(), &patch::parse(off, &lim())?, &lim())?;
    ensure!(
        a.files[0].relocated[0].stated_line == 40 && a.files[0].relocated[0].actual_line == 4,
        "{a:?}"
    );
    ensure!(read(d.path(), "shop/util.py").contains("return hi"));

    // `return lo` after an `if` appears twice in the original: with the line number wrong and
    // only that as context, there is no telling which one is meant.
    let d = project()?;
    let before = read(d.path(), "shop/util.py");
    let ambiguous = "--- a/shop/util.py\n+++ b/shop/util.py\n@@ -30,1 +30,1 @@\n-        return lo\n+        return hi\n";
    let e = patch::apply(d.path(), &patch::parse(ambiguous, &lim())?, &lim()).unwrap_err();
    ensure!(matches!(&e, PatchError::Ambiguous { count: 2, .. }), "{e}");
    ensure!(e.to_string().contains("lines 3, 5"), "{e}");
    ensure!(
        read(d.path(), "shop/util.py") == before,
        "a refused patch changed the file"
    );

    // The same hunk at its right line number applies: the stated place wins.
    let right = ambiguous.replace("@@ -30,1 +30,1 @@", "@@ -5,1 +5,1 @@");
    patch::apply(d.path(), &patch::parse(&right, &lim())?, &lim())?;
    ensure!(
        read(d.path(), "shop/util.py")
            == before.replacen(
                "        return lo\n    return x",
                "        return hi\n    return x",
                1
            )
    );

    // Context that is nowhere: a clear error naming the hunk.
    let absent = "--- a/shop/util.py\n+++ b/shop/util.py\n@@ -1,2 +1,2 @@\n def clamp(value, lo, hi):\n-    pass\n+    return 0\n";
    let e = patch::apply(d.path(), &patch::parse(absent, &lim())?, &lim()).unwrap_err();
    ensure!(matches!(&e, PatchError::NoMatch { hunk: 1, .. }), "{e}");
    Ok(())
}

#[test]
fn new_deleted_and_renamed_files_and_git_apply() -> Result<()> {
    let d = project()?;
    let text = "diff --git a/shop/discount.py b/shop/discount.py\nnew file mode 100644\nindex 0000000..3c2e1f0\n--- /dev/null\n+++ b/shop/discount.py\n@@ -0,0 +1,2 @@\n+def apply(total, rate):\n+    return round(total * (1 - rate), 2)\ndiff --git a/README.md b/README.md\ndeleted file mode 100644\nindex 8d1c8b6..0000000\n--- a/README.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-# shop\ndiff --git a/shop/util.py b/shop/helpers.py\nsimilarity index 80%\nrename from shop/util.py\nrename to shop/helpers.py\nindex 1111111..2222222 100644\n--- a/shop/util.py\n+++ b/shop/helpers.py\n@@ -4,3 +4,3 @@ def clamp(x, lo, hi):\n     if x > hi:\n-        return lo\n+        return hi\n     return x\n";
    let a = patch::apply(d.path(), &patch::parse(text, &lim())?, &lim())?;
    ensure!(read(d.path(), "shop/discount.py").starts_with("def apply"));
    ensure!(!d.path().join("README.md").exists());
    ensure!(!d.path().join("shop/util.py").exists());
    ensure!(read(d.path(), "shop/helpers.py").contains("return hi"));
    let changes: Vec<_> = a
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.change.clone()))
        .collect();
    ensure!(
        changes
            == [
                ("shop/discount.py", Change::Created),
                ("README.md", Change::Deleted),
                (
                    "shop/helpers.py",
                    Change::Renamed {
                        from: "shop/util.py".into()
                    }
                ),
            ],
        "{changes:?}"
    );
    ensure!(
        a.diff.contains("new file mode 100644")
            && a.diff.contains("deleted file mode 100644")
            && a.diff.contains("rename from shop/util.py"),
        "{}",
        a.diff
    );
    let fresh = project()?;
    std::fs::write(fresh.path().join("n.diff"), &a.diff)?;
    let out = Command::new("git")
        .args(["apply", "n.diff"])
        .current_dir(fresh.path())
        .output()?;
    ensure!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.diff
    );
    ensure!(read(fresh.path(), "shop/helpers.py") == read(d.path(), "shop/helpers.py"));
    ensure!(
        !fresh.path().join("README.md").exists() && !fresh.path().join("shop/util.py").exists()
    );
    Ok(())
}

#[test]
fn plain_diff_u_output_with_path_guessing() -> Result<()> {
    let d = project()?;
    // `diff -u shop/util.py.orig shop/util.py` run one directory up: paths carry the
    // project's directory name, which the tree does not.
    let text = "--- proj/shop/util.py.orig\t2026-05-01 10:00:00.000000000 +0200\n+++ proj/shop/util.py\t2026-05-01 10:05:00.000000000 +0200\n@@ -4,3 +4,3 @@\n     if x > hi:\n-        return lo\n+        return hi\n     return x\n";
    patch::apply(d.path(), &patch::parse(text, &lim())?, &lim())?;
    ensure!(read(d.path(), "shop/util.py").contains("return hi"));
    ensure!(!d.path().join("proj").exists());
    Ok(())
}

#[test]
fn search_replace_and_whole_file_edits() -> Result<()> {
    let d = project()?;
    let text = "I'll fix the total.\n\nshop/cart.py\n```python\n<<<<<<< SEARCH\n    def total(self):\n        return sum(p for p, q in self.items.values())\n=======\n    def total(self):\n        return sum(p * q for p, q in self.items.values())\n>>>>>>> REPLACE\n```\n\nNOTES.md\n```\n<<<<<<< SEARCH\n=======\nTotals now count quantities.\n>>>>>>> REPLACE\n```\n";
    let a = patch::apply(d.path(), &patch::parse(text, &lim())?, &lim())?;
    ensure!(read(d.path(), "shop/cart.py").contains("p * q"));
    ensure!(read(d.path(), "NOTES.md") == "Totals now count quantities.\n");
    ensure!(a.changed_lines == 3, "{a:?}");
    git_apply_reproduces(&a.diff, d.path())?;

    // A SEARCH that matches twice is refused, and nothing is written.
    let d = project()?;
    let twice = "shop/util.py\n<<<<<<< SEARCH\n        return lo\n=======\n        return hi\n>>>>>>> REPLACE\n";
    let e = patch::apply(d.path(), &patch::parse(twice, &lim())?, &lim()).unwrap_err();
    ensure!(matches!(e, PatchError::Ambiguous { count: 2, .. }), "{e}");

    let whole = "Here is the complete file:\n\n`shop/util.py`\n```python\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n```\n";
    let a = patch::apply(d.path(), &patch::parse(whole, &lim())?, &lim())?;
    ensure!(
        read(d.path(), "shop/util.py") == "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n"
    );
    ensure!(a.changed_lines == 6, "{a:?}");
    Ok(())
}

#[test]
fn all_or_nothing_and_size_caps() -> Result<()> {
    let d = project()?;
    let before = read(d.path(), "shop/cart.py");
    // The first file would apply; the second cannot: neither is written.
    let text = format!(
        "{}--- a/shop/util.py\n+++ b/shop/util.py\n@@ -1,1 +1,1 @@\n-def nothing_like_this():\n+def x():\n",
        TWO_FILES
            .split("diff --git a/shop/util.py")
            .next()
            .unwrap_or("")
            .replace("```diff\n", "")
    );
    let e = patch::apply(d.path(), &patch::parse(&text, &lim())?, &lim()).unwrap_err();
    ensure!(matches!(e, PatchError::NoMatch { .. }), "{e}");
    ensure!(
        read(d.path(), "shop/cart.py") == before,
        "the first file was written"
    );

    let small = PatchLimits {
        max_changed_lines: 3,
        ..PatchLimits::default()
    };
    let e = patch::parse(TWO_FILES, &small).unwrap_err();
    ensure!(matches!(e.refusal(), Some(Refusal::TooLarge(_))), "{e}");
    let tiny = PatchLimits {
        max_bytes: 100,
        ..PatchLimits::default()
    };
    let e = patch::parse(TWO_FILES, &tiny).unwrap_err();
    ensure!(matches!(e.refusal(), Some(Refusal::TooLarge(_))), "{e}");
    // A whole-file edit past the line cap is refused at apply time too.
    let big = vec![Edit::WholeFile {
        path: "big.txt".into(),
        content: "x\n".repeat(20_000),
    }];
    let e = patch::apply(d.path(), &big, &lim()).unwrap_err();
    ensure!(matches!(e.refusal(), Some(Refusal::TooLarge(_))), "{e}");
    ensure!(!d.path().join("big.txt").exists());
    Ok(())
}

#[test]
fn mode_changes_and_binary_patches_are_refused() -> Result<()> {
    let d = project()?;
    for (text, want) in [
        (
            "diff --git a/shop/util.py b/shop/util.py\nold mode 100644\nnew mode 100755\n",
            Refusal::ModeChange,
        ),
        (
            "diff --git a/logo.png b/logo.png\nnew file mode 100644\nindex 0000000..1b2c3d4\nGIT binary patch\nliteral 68\nzcmeAS@N?(olHy`uVBq!ia0vp^0wB!61|;P_|4#%`jKx9jP7LeL$-D$|SkfJR9T^xl\n\nliteral 0\nHcmV?d00001\n\n",
            Refusal::Binary,
        ),
        (
            "diff --git a/data.bin b/data.bin\nindex 1..2 100644\nBinary files a/data.bin and b/data.bin differ\n",
            Refusal::Binary,
        ),
    ] {
        let e = patch::parse(text, &lim()).unwrap_err();
        ensure!(e.refusal() == Some(&want), "{e}");
    }
    // A binary file in the tree cannot be edited as text.
    std::fs::write(d.path().join("blob.dat"), b"\x00\x01\x02binary")?;
    let e = patch::apply(
        d.path(),
        &[Edit::SearchReplace {
            path: "blob.dat".into(),
            search: "binary".into(),
            replace: "text".into(),
        }],
        &lim(),
    )
    .unwrap_err();
    ensure!(e.refusal() == Some(&Refusal::Binary), "{e}");
    Ok(())
}

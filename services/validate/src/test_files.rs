//! Reading a Node project's JavaScript test files, for the failing-first decision
//! ([`crate::policy::failing_first::failing_first_cmd`]).

use std::path::{Path, PathBuf};

use crate::policy::failing_first::may_name_tests;

/// The JavaScript test files under `root` as (path relative to `root`, text): at most 200
/// JavaScript files looked at, four directories deep, no hidden directories or `node_modules`,
/// none over 1 MiB. Each file is read only when the caller gets to it.
pub fn javascript_test_files(root: &Path) -> impl Iterator<Item = (String, String)> + '_ {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < 4 && !name.starts_with('.') && name != "node_modules" {
                walk(&e.path(), depth + 1, out);
            } else if ft.is_file()
                && [".js", ".cjs", ".mjs"].iter().any(|x| name.ends_with(x))
                && out.len() < 200
            {
                out.push(e.path());
            }
        }
    }
    let mut files = vec![];
    walk(root, 0, &mut files);
    files.into_iter().filter_map(move |f| {
        let rel = f.strip_prefix(root).ok()?.to_string_lossy().into_owned();
        if !may_name_tests(&rel) {
            return None;
        }
        let meta = f.metadata().ok()?;
        if meta.len() > 1 << 20 {
            return None;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        Some((rel, text))
    })
}

#[cfg(test)]
mod tests {
    use sandbox::{ProjectKind, detect_project_with};

    use super::*;
    use crate::policy::failing_first::failing_first_cmd;

    fn node_project(script: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, ProjectKind) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            format!(r#"{{"name":"p","scripts":{{"test":"{script}"}}}}"#),
        )
        .unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let kind = detect_project_with(dir.path(), None).unwrap();
        (dir, kind)
    }

    #[test]
    fn failing_first_runs_the_one_node_test_file_that_names_the_failing_tests() {
        let test_file = "const test = require('node:test');\n\
             test('adds', () => {});\n\
             test(\"rounds up\", () => {});\n\
             test(`keeps the sign`, () => {});\n";
        let other = "test('other', () => {});\n";
        let failing = vec!["rounds up".to_owned(), "keeps the sign".to_owned()];
        let (dir, kind) = node_project(
            "node --test",
            &[
                ("test/math.test.js", test_file),
                ("test/other.test.js", other),
                ("lib/math.js", "// rounds up\nmodule.exports = {};\n"),
            ],
        );
        let files = || javascript_test_files(dir.path());
        assert_eq!(
            failing_first_cmd(&kind, &failing, files),
            Some(vec![
                "node".to_owned(),
                "--test-reporter=tap".to_owned(),
                "test/math.test.js".to_owned()
            ])
        );
        // A name no file holds, names spread over two files: the whole suite.
        let missing = vec!["rounds up".to_owned(), "nowhere".to_owned()];
        assert_eq!(failing_first_cmd(&kind, &missing, files), None);
        let spread = vec!["rounds up".to_owned(), "other".to_owned()];
        assert_eq!(failing_first_cmd(&kind, &spread, files), None);
        // A script with options of its own (a loader, a setup file) is the user's to run.
        let (dir, kind) = node_project(
            "node --test --require ./setup.js",
            &[("test/math.test.js", test_file)],
        );
        let files = || javascript_test_files(dir.path());
        assert_eq!(failing_first_cmd(&kind, &failing, files), None);
    }

    #[test]
    fn only_test_files_are_read() {
        let (dir, _) = node_project(
            "node --test",
            &[
                ("test/a.test.js", "a"),
                ("lib/b.js", "b"),
                ("node_modules/x/c.test.js", "c"),
                (".hidden/d.test.js", "d"),
                ("src/e.spec.mjs", "e"),
            ],
        );
        let mut got: Vec<(String, String)> = javascript_test_files(dir.path()).collect();
        got.sort();
        let want = [("src/e.spec.mjs", "e"), ("test/a.test.js", "a")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}

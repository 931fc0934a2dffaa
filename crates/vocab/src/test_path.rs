//! Which files are tests: triage weighs them apart from code, fix never edits them nor shows
//! them to a model as code to fix, and validate fails a candidate that touches them.

/// Directories whose files are tests, by convention of pytest, go, jest and rspec.
const TEST_DIRS: [&str; 4] = ["tests", "test", "__tests__", "spec"];

/// Whether `path` (relative, `/`-separated) is a test file: it lies under a test directory or
/// its name follows a test runner's naming rule.
pub fn is_test_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    // The file's own name is not a directory: a file called `test` is not under one.
    let in_test_dir = path
        .split('/')
        .rev()
        .skip(1)
        .any(|d| TEST_DIRS.contains(&d));
    in_test_dir
        || name.starts_with("test_")
        || name == "conftest.py"
        || [".test.", ".spec."].iter().any(|m| name.contains(m))
        || [
            "_test.py",
            "_test.go",
            "_spec.rb",
            "_test.rb",
            "Test.java",
            "Tests.java",
            "Test.php",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_by_directory_and_by_name() {
        let tests = [
            "tests/test_a.py",
            "pkg/tests/helpers.py",
            "test/util.js",
            "src/__tests__/a.js",
            "spec/models/user.js",
            "test_calc.py",
            "calc_test.py",
            "conftest.py",
            "pkg/calc_test.go",
            "src/a.test.js",
            "src/a.spec.ts",
            "lib/user_spec.rb",
            "lib/user_test.rb",
            "src/main/java/CalcTest.java",
            "src/main/java/CalcTests.java",
            "src/CalcTest.php",
        ];
        for p in tests {
            assert!(is_test_path(p), "{p} should be a test file");
        }
        let code = [
            "app/testing.py",
            "app/calc.py",
            "contest.py",
            "src/latest.js",
            "src/Tester.java",
            "test",
            "lib/tests.rb",
            "app/attest_test_helper.py",
        ];
        for p in code {
            assert!(!is_test_path(p), "{p} should not be a test file");
        }
    }
}

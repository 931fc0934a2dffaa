//! `go test` runs a subset of `go vet` before the tests, and on a cold build cache that is
//! most of a candidate's run (measured in the coval/go image, Go 1.19: 3.1-3.8 s with vet,
//! 1.1-1.2 s with `-vet=off`). Candidates are sandbox runs with no cache between them, so
//! each pays it. They run with `-vet=off`; one that passes is run again with the command as
//! written, and that run decides: vet still judges every winner.

/// `argv` with `-vet=off` after its `go test`, when it has a `go test` (also after the
/// `sh -c 'cd DIR && exec ..'` of a command run in a subdirectory) and does not set `-vet`
/// itself; `None` otherwise.
pub fn without_vet(argv: &[String]) -> Option<Vec<String>> {
    let at = argv.windows(2).position(|w| {
        let go = w[0].rsplit('/').next().unwrap_or(&w[0]);
        go == "go" && w[1] == "test"
    })?;
    if argv[at + 2..]
        .iter()
        .any(|a| a.starts_with("-vet") || a.starts_with("--vet"))
    {
        return None;
    }
    let mut out = argv.to_vec();
    out.insert(at + 2, "-vet=off".to_owned());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn go_test_runs_candidates_without_vet_unless_the_command_sets_it() {
        assert_eq!(
            without_vet(&v("go test -json ./...")),
            Some(v("go test -vet=off -json ./..."))
        );
        assert_eq!(
            without_vet(&v("/usr/lib/go/bin/go test ./pkg")),
            Some(v("/usr/lib/go/bin/go test -vet=off ./pkg"))
        );
        let mut cd = vec![
            "sh".to_owned(),
            "-c".into(),
            "cd sub && exec \"$0\" \"$@\"".into(),
        ];
        cd.extend(v("go test -json ./..."));
        let mut want = cd.clone();
        want.insert(5, "-vet=off".into());
        assert_eq!(without_vet(&cd), Some(want));
        assert_eq!(without_vet(&v("go test -vet=all ./...")), None);
        assert_eq!(without_vet(&v("go vet ./...")), None);
        assert_eq!(without_vet(&v("python3 -m pytest -q")), None);
        assert_eq!(without_vet(&v("sh -c go-test-all")), None);
    }
}

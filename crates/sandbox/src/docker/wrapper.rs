//! The shell wrapper that runs one candidate in a container (`wrapper.sh`) and its arguments.

use std::time::Duration;

use crate::RunSpec;

/// Cap on each collected file (e.g. a JUnit report).
pub(super) const COLLECT_CAP: usize = 4 << 20;

/// Runs in the container as the candidate's user: `sh -c WRAPPER coval-sandbox MODE ...`.
/// `run ID TIMEOUT MARK FILECAP NFILES FILES... ENV... ARGV...` or `clean`.
pub(super) const WRAPPER: &str = include_str!("wrapper.sh");

/// The wrapper's arguments for one candidate in `/cands/ID`.
pub(super) fn wrapper_args(
    id: &str,
    timeout: Duration,
    mark: &str,
    collect: &[String],
    env: &[(String, String)],
    argv: &[String],
) -> Vec<String> {
    let mut a = vec![
        "run".to_owned(),
        id.to_owned(),
        format!("{:.3}", timeout.as_secs_f64()),
        mark.to_owned(),
        COLLECT_CAP.to_string(),
        collect.len().to_string(),
    ];
    a.extend(collect.iter().cloned());
    a.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    a.extend(argv.iter().cloned());
    a
}

/// Room for the trailer beyond the output cap: the status lines and every collected file.
pub(super) fn trailer_budget(spec: &RunSpec) -> usize {
    4096 + spec.collect.len() * (COLLECT_CAP + 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_args_keep_env_before_argv() {
        let a = wrapper_args(
            "c1",
            Duration::from_millis(1500),
            "M",
            &["r.xml".into()],
            &[("A".into(), "b c".into())],
            &["python3".into(), "-m".into()],
        );
        assert_eq!(
            a,
            [
                "run",
                "c1",
                "1.500",
                "M",
                &COLLECT_CAP.to_string(),
                "1",
                "r.xml",
                "A=b c",
                "python3",
                "-m"
            ]
        );
    }
}

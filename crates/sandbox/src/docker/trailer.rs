//! What the wrapper prints on stderr after its random marker: the exit status, the cgroup's
//! OOM-kill count before and after, and the collected files.

use std::collections::BTreeMap;

/// What the wrapper reported after the candidate's output.
#[derive(Debug, Default)]
pub(super) struct Trailer {
    pub rc: Option<i64>,
    pub oom: Option<(u64, u64)>,
    pub files: BTreeMap<String, String>,
}

impl Trailer {
    pub fn parse(b: &[u8]) -> Trailer {
        let mut t = Trailer::default();
        let mut rest = b;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
            rest = rest.get(nl + 1..).unwrap_or(&[]);
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("rc"), Some(n), None) => t.rc = n.trim().parse().ok(),
                (Some("oom"), Some(a), Some(b)) => {
                    t.oom = a.trim().parse().ok().zip(b.trim().parse().ok())
                }
                (Some("file"), Some(n), Some(name)) => {
                    let Ok(n) = n.parse::<usize>() else { break };
                    let n = n.min(rest.len());
                    t.files.insert(
                        name.to_owned(),
                        String::from_utf8_lossy(&rest[..n]).into_owned(),
                    );
                    rest = rest.get(n + 1..).unwrap_or(&[]);
                }
                _ => {}
            }
        }
        t
    }
}

/// A shell-style status: 129..=192 is death by signal `code - 128`.
pub(super) fn split_status(code: i64) -> (Option<i32>, Option<i32>) {
    match i32::try_from(code) {
        Ok(c) if (129..=192).contains(&c) => (None, Some(c - 128)),
        Ok(c) => (Some(c), None),
        Err(_) => (Some(-1), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_parses_status_oom_and_files() {
        let t = Trailer::parse(b"rc 1\noom 0 2\nfile 5 r/junit.xml\n<a/>\n\nfile 99 x\nab");
        assert_eq!(t.rc, Some(1));
        assert_eq!(t.oom, Some((0, 2)));
        assert_eq!(t.files["r/junit.xml"], "<a/>\n");
        assert_eq!(t.files["x"], "ab");
        let t = Trailer::parse(b"garbage\nfile nope x\n");
        assert_eq!(t.rc, None);
    }

    #[test]
    fn statuses_split_into_code_or_signal() {
        assert_eq!(split_status(0), (Some(0), None));
        assert_eq!(split_status(137), (None, Some(9)));
        assert_eq!(split_status(125), (Some(125), None));
        assert_eq!(split_status(1 << 40), (Some(-1), None));
    }
}

//! Bounded capture of a sandboxed process's stdout and stderr: keeps the first
//! `cap` bytes (both streams together, in arrival order), and tells the caller when the
//! process has written more than it may, so it can be killed instead of blocking on a pipe.

/// Whether the writer may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// More than `cap + allowance` bytes: stop the process.
    OverCap,
}

pub(crate) struct Capture {
    cap: usize,
    allowance: usize,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// stderr beyond the cap, kept up to `allowance` bytes: the Docker wrapper's trailer
    /// arrives there after the candidate's own output.
    overflow_err: Vec<u8>,
    /// Every byte seen on either stream.
    pub total: usize,
}

impl Capture {
    pub fn new(cap: usize, allowance: usize) -> Capture {
        Capture {
            cap,
            allowance,
            stdout: Vec::new(),
            stderr: Vec::new(),
            overflow_err: Vec::new(),
            total: 0,
        }
    }

    pub fn push_stdout(&mut self, b: &[u8]) -> Flow {
        self.push(b, false)
    }

    pub fn push_stderr(&mut self, b: &[u8]) -> Flow {
        self.push(b, true)
    }

    fn push(&mut self, b: &[u8], err: bool) -> Flow {
        let room = self
            .cap
            .saturating_sub(self.stdout.len() + self.stderr.len());
        let keep = room.min(b.len());
        let (kept, rest) = b.split_at(keep);
        if err {
            self.stderr.extend_from_slice(kept);
            let space = self.allowance.saturating_sub(self.overflow_err.len());
            self.overflow_err
                .extend_from_slice(&rest[..space.min(rest.len())]);
        } else {
            self.stdout.extend_from_slice(kept);
        }
        self.total = self.total.saturating_add(b.len());
        if self.total > self.cap.saturating_add(self.allowance) {
            Flow::OverCap
        } else {
            Flow::Continue
        }
    }

    /// More was written than kept.
    pub fn truncated(&self) -> bool {
        self.total > self.cap
    }

    /// Splits off the trailer that follows the last `\n<marker>\n` on stderr. Returns the
    /// trailer's bytes; afterwards `stderr` and `total` describe the process's own output.
    pub fn split_trailer(&mut self, marker: &str) -> Option<Vec<u8>> {
        let needle = format!("\n{marker}\n").into_bytes();
        let mut all = self.stderr.clone();
        all.extend_from_slice(&self.overflow_err);
        let pos = rfind(&all, &needle)?;
        let trailer = all[pos + needle.len()..].to_vec();
        let own_err = pos;
        self.total = self.total.saturating_sub(all.len() - own_err);
        self.stderr.truncate(own_err.min(self.stderr.len()));
        self.overflow_err.clear();
        Some(trailer)
    }

    pub fn into_strings(self) -> (String, String) {
        (
            String::from_utf8_lossy(&self.stdout).into_owned(),
            String::from_utf8_lossy(&self.stderr).into_owned(),
        )
    }
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_both_streams_together() {
        let mut c = Capture::new(10, 0);
        assert_eq!(c.push_stdout(b"12345"), Flow::Continue);
        assert_eq!(c.push_stderr(b"abcde"), Flow::Continue);
        assert_eq!(c.push_stdout(b"x"), Flow::OverCap);
        assert!(c.truncated());
        assert_eq!(c.stdout, b"12345");
        assert_eq!(c.stderr, b"abcde");
    }

    #[test]
    fn trailer_is_found_across_the_cap() {
        let mut c = Capture::new(8, 100);
        c.push_stdout(b"out");
        c.push_stderr(b"err\nMARK\nrc 0\n");
        let t = c.split_trailer("MARK").unwrap();
        assert_eq!(t, b"rc 0\n");
        assert_eq!(c.stderr, b"err");
        assert!(!c.truncated());
        // a forged marker earlier in the output does not win
        let mut c = Capture::new(1000, 100);
        c.push_stderr(b"\nMARK\nrc 0\nmore\nMARK\nrc 1\n");
        assert_eq!(c.split_trailer("MARK").unwrap(), b"rc 1\n");
        assert_eq!(c.stderr, b"\nMARK\nrc 0\nmore");
    }
}

//! From raw bytes or text to the clean text the parsers read: size cap, binary detection,
//! ANSI escapes, line endings.

/// The most of a log that is kept: the last 4 MiB. The error a run ends with is at the end of
/// its log, so the head is what gets dropped.
pub const MAX_LOG_BYTES: usize = 4 * 1024 * 1024;

/// Lines are cut to this length before parsing: no stack frame or error header is longer,
/// and it bounds the work any single pathological line can cause.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;

/// When the head of a log is dropped, the partial first line is dropped too if a line break
/// comes within this many bytes.
const RESYNC_WINDOW: usize = 64 * 1024;

/// Why some bytes were not accepted as a text log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the log is empty or only whitespace: pass the output of the failing command")]
    Empty,
    #[error(
        "the log looks binary: {nul} of {len} bytes are NUL; pass the text output of the failing command"
    )]
    NulBytes { nul: usize, len: usize },
    #[error(
        "the log is not text: {invalid} of {len} bytes are not valid UTF-8; pass a UTF-8 text log"
    )]
    InvalidUtf8 { invalid: usize, len: usize },
    #[error(
        "the log is not text: {control} of {chars} characters are control characters; pass a text log"
    )]
    ControlChars { control: usize, chars: usize },
}

impl InputError {
    /// Bad input stays bad: retrying the same bytes never helps.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Decides whether `b` is a text log and returns it as text.
///
/// Keeps the last [`MAX_LOG_BYTES`] (starting at a line boundary when one is near), accepts
/// UTF-8 with a few invalid bytes (replaced by U+FFFD) and UTF-16 with a byte-order mark, and
/// drops stray NULs. Rejects: nothing but whitespace ([`InputError::Empty`]), more than 1% NUL
/// bytes, more than 20% invalid UTF-8, or more than 10% control characters (other than tab,
/// line breaks, form feed, backspace and the ESC of colour codes).
pub fn text_from_bytes(b: &[u8]) -> Result<String, InputError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::Empty);
    }
    let text = match utf16_text(b) {
        Some(text) => text,
        None => utf8_text(tail_bytes(b, MAX_LOG_BYTES))?,
    };
    let chars = text.chars().count();
    let control = text.chars().filter(|&c| is_binary_control(c)).count();
    if control.saturating_mul(10) > chars {
        return Err(InputError::ControlChars { control, chars });
    }
    if text.trim().is_empty() {
        return Err(InputError::Empty);
    }
    Ok(text)
}

fn utf8_text(b: &[u8]) -> Result<String, InputError> {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    let len = b.len();
    let nul = b.iter().filter(|&&c| c == 0).count();
    if nul.saturating_mul(100) > len {
        return Err(InputError::NulBytes { nul, len });
    }
    let invalid: usize = b.utf8_chunks().map(|c| c.invalid().len()).sum();
    if invalid.saturating_mul(5) > len {
        return Err(InputError::InvalidUtf8 { invalid, len });
    }
    let mut text = String::from_utf8_lossy(b).into_owned();
    if nul > 0 {
        text.retain(|c| c != '\0');
    }
    Ok(text)
}

/// UTF-16 with a byte-order mark (what Windows shells write when output is redirected).
fn utf16_text(b: &[u8]) -> Option<String> {
    let big_endian = match b {
        [0xFF, 0xFE, ..] => false,
        [0xFE, 0xFF, ..] => true,
        _ => return None,
    };
    let body = b.get(2..)?;
    // Keep the tail, on a code-unit boundary.
    let start = body.len().saturating_sub(MAX_LOG_BYTES) & !1;
    let units = body.get(start..)?.chunks_exact(2).map(|p| match p {
        [x, y] if big_endian => u16::from_be_bytes([*x, *y]),
        [x, y] => u16::from_le_bytes([*x, *y]),
        _ => 0xFFFD,
    });
    let mut text: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    text.retain(|c| c != '\0');
    Some(text)
}

fn is_binary_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c' | '\x08' | '\x1b')
}

/// The last `max` bytes of `b`, starting after a line break if one is near the cut, else at
/// a UTF-8 character boundary.
fn tail_bytes(b: &[u8], max: usize) -> &[u8] {
    let Some(t) = b.get(b.len().saturating_sub(max)..) else {
        return b;
    };
    if t.len() == b.len() {
        return b;
    }
    let skip = match t.iter().take(RESYNC_WINDOW).position(|&c| c == b'\n') {
        Some(p) => p + 1,
        None => t
            .iter()
            .take(4)
            .position(|&c| c & 0xC0 != 0x80)
            .unwrap_or(0),
    };
    t.get(skip..).unwrap_or(t)
}

/// The last `max` bytes of `s`, cut like [`tail_bytes`] but on a `str`.
fn tail_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let t = s.get(start..).unwrap_or(s);
    match t
        .get(..RESYNC_WINDOW.min(t.len()))
        .and_then(|w| w.find('\n'))
    {
        Some(p) => t.get(p + 1..).unwrap_or(t),
        None => t,
    }
}

/// The text the parsers see: the last [`MAX_LOG_BYTES`], without ANSI escape sequences, with
/// `\r\n` and lone `\r` turned into `\n`, and without other control characters except tab.
pub(crate) fn clean(log: &str) -> String {
    let log = tail_str(log, MAX_LOG_BYTES);
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips what follows an ESC: a CSI sequence (`ESC [ ... final`), a string sequence ending
/// in BEL or `ESC \` (OSC `ESC ]`, and APC `ESC _`, DCS `ESC P`, PM `ESC ^`, SOS `ESC X`:
/// Buildkite's agent writes its `ESC _bk;t=1715677964123 BEL` timestamps as APC), a charset
/// designation (`ESC ( B`) or one character.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | '_' | 'P' | '^' | 'X') => {
            // An unterminated string ends at the line break, so it cannot swallow the log.
            while let Some(c) = chars.next_if(|&c| c != '\n') {
                if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        Some('(' | ')' | '*' | '+') => {
            chars.next();
        }
        _ => {}
    }
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // Parameter and intermediate bytes, then one final byte in '@'..='~'.
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) || !(' '..='?').contains(&c) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_are_removed() {
        let s = "\x1b[1m\x1b[31mE       assert 0.0 == 72.0\x1b[0m\n\x1b]8;;http://x\x07link\x1b]8;;\x1b\\ \x1b(Bok";
        assert_eq!(clean(s), "E       assert 0.0 == 72.0\nlink ok");
    }

    #[test]
    fn buildkite_timestamps_are_removed() {
        let s = "\x1b_bk;t=1715677964017\x07~~~ Running\n\x1b_bk;t=1715677964034\x07Traceback\n";
        assert_eq!(clean(s), "~~~ Running\nTraceback\n");
        assert_eq!(clean("a\x1b_unterminated\nb\n"), "a\nb\n");
    }

    #[test]
    fn line_endings_are_normalised() {
        assert_eq!(clean("a\r\nb\rc\n\r\nd"), "a\nb\nc\n\nd");
    }

    #[test]
    fn truncated_escape_at_end_is_dropped() {
        assert_eq!(clean("text\x1b[31"), "text");
        assert_eq!(clean("text\x1b"), "text");
    }

    #[test]
    fn empty_and_whitespace_are_rejected() {
        assert_eq!(text_from_bytes(b""), Err(InputError::Empty));
        assert_eq!(text_from_bytes(b" \n\t\r\n "), Err(InputError::Empty));
    }

    #[test]
    fn binary_garbage_is_rejected_with_a_reason() {
        let elf: Vec<u8> = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"
            .iter()
            .copied()
            .cycle()
            .take(4096)
            .collect();
        assert!(matches!(
            text_from_bytes(&elf),
            Err(InputError::NulBytes { .. })
        ));

        // Pseudo-random bytes without NULs: mostly invalid UTF-8.
        let mut x: u32 = 12345;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as u8).max(1)
            })
            .collect();
        assert!(matches!(
            text_from_bytes(&noise),
            Err(InputError::InvalidUtf8 { .. })
        ));

        let control = "\x01\x02\x03\x04 ab\x05\x06\x07".repeat(100);
        assert!(matches!(
            text_from_bytes(control.as_bytes()),
            Err(InputError::ControlChars { .. })
        ));
        let e = text_from_bytes(control.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn mostly_valid_utf8_is_accepted_lossily() {
        let mut b = b"Traceback (most recent call last):\n  caf\xe9 \xff\n".to_vec();
        b.extend_from_slice("ZeroDivisionError: division by zero\n".as_bytes());
        let t = text_from_bytes(&b).expect("text");
        assert!(t.contains("caf\u{FFFD}"));
        assert!(t.contains("ZeroDivisionError"));
    }

    #[test]
    fn a_few_nuls_are_dropped() {
        let mut b = "x".repeat(1000).into_bytes();
        b.push(0);
        b.extend_from_slice(b"\nError: boom\n");
        let t = text_from_bytes(&b).expect("text");
        assert!(!t.contains('\0'));
    }

    #[test]
    fn utf16_with_bom_is_decoded() {
        let mut b = vec![0xFF, 0xFE];
        for u in "Error: boom\r\n".encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(text_from_bytes(&b).expect("text"), "Error: boom\r\n");
    }

    #[test]
    fn big_input_keeps_the_last_part_from_a_line_start() {
        let mut s = "é".repeat(1000);
        s.push('\n');
        s.push_str(&"y".repeat(MAX_LOG_BYTES - 1000));
        s.push_str("\nlast line\n");
        for t in [text_from_bytes(s.as_bytes()).expect("text"), clean(&s)] {
            assert!(t.len() <= MAX_LOG_BYTES);
            assert!(t.starts_with('y') && t.ends_with("last line\n"));
        }

        let one_line = "é".repeat(MAX_LOG_BYTES);
        let t = text_from_bytes(one_line.as_bytes()).expect("text");
        assert!(t.len() <= MAX_LOG_BYTES && t.chars().all(|c| c == 'é'));
        assert!(clean(&one_line).len() <= MAX_LOG_BYTES);
    }
}

//! Fuzz the patch parsers and the hunk applier: any text gives edits or a typed error, never
//! a panic; a parsed hunk applied to exactly its own old side yields exactly its new side.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patch::{Line, PatchLimits};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = patch::parse(&text, &PatchLimits::default());
    let _ = patch::parse_search_replace(&text);
    let _ = patch::parse_whole_files(&text);
    let Ok(files) = patch::parse_diff(&text) else {
        return;
    };
    for f in &files {
        let _ = patch::apply_hunks("", &f.hunks);
        let _ = patch::apply_hunks(&text, &f.hunks);
        for h in &f.hunks {
            let old: Vec<&str> = h
                .lines
                .iter()
                .filter_map(|l| match l {
                    Line::Context(s) | Line::Remove(s) => Some(s.as_str()),
                    Line::Add(_) => None,
                })
                .collect();
            // A file whose lines mostly end in CR gets CR on added lines too.
            let crlf = old.iter().filter(|l| l.ends_with('\r')).count() * 2 > old.len();
            let new: Vec<String> = h
                .lines
                .iter()
                .filter_map(|l| match l {
                    Line::Context(s) => Some(s.clone()),
                    Line::Add(s) if crlf && !s.ends_with('\r') => Some(format!("{s}\r")),
                    Line::Add(s) => Some(s.clone()),
                    Line::Remove(_) => None,
                })
                .collect();
            assert_eq!(h.old_len, old.len());
            assert_eq!(h.new_len, new.len());
            if old.is_empty() {
                continue;
            }
            let base = format!("{}\n", old.join("\n"));
            let (got, _) = patch::apply_hunks(&base, std::slice::from_ref(h))
                .expect("a hunk applies to its own old side");
            let want = if new.is_empty() {
                String::new()
            } else if h.new_no_newline {
                new.join("\n")
            } else {
                format!("{}\n", new.join("\n"))
            };
            assert_eq!(got, want, "hunk {h:?}");
        }
    }
});

//! Fuzz target: arbitrary bytes through `text_from_bytes` and `parse` must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match logparse::text_from_bytes(data) {
        Ok(text) => check(&text),
        // `parse` promises not to panic on any text, including text that
        // `text_from_bytes` would reject as binary.
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});

fn check(text: &str) {
    let p = logparse::parse(text);
    let _ = p.innermost_project_frame();
    // Messages and types are single lines by contract.
    assert!(!p.message.contains('\n'), "multi-line message: {:?}", p.message);
    assert!(!p.error_type.contains('\n'), "multi-line type: {:?}", p.error_type);
}

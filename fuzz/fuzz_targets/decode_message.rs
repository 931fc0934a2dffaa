//! Fuzz the wire decoder: any header values and body bytes give a message or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks the kind, second the version, the rest is the body.
    let kinds = proto::Kind::ALL;
    let (Some(&k), Some(&v)) = (data.first(), data.get(1)) else { return };
    let kind = kinds[usize::from(k) % kinds.len()].as_str();
    let body = &data[2.min(data.len())..];
    if let Ok(m) = proto::Message::decode(kind, u16::from(v % 3), body) {
        // What decodes re-encodes, and the re-encoding is stable (bytes, so NaN compares).
        let again = m.encode().expect("a decoded message encodes");
        let back = proto::Message::decode(m.kind().as_str(), m.kind().current_version(), &again).expect("round trip");
        assert_eq!(back.encode().expect("encodes"), again);
    }
});

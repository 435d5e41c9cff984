//! Any bytes as an OTLP/HTTP JSON body: decoded and re-encoded as protobuf (the receiver's JSON path),
//! then the same scan, receive and buffer path as protobuf bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailgate::receiver::{ReceiveError, json_to_protobuf};

fuzz_target!(|data: &[u8]| {
    let body = match json_to_protobuf(data) {
        Ok(body) => body,
        Err(e) => {
            assert!(matches!(e, ReceiveError::MalformedJson(_)), "{e}");
            return;
        }
    };
    // JSON decodes to valid Rust strings, so the scan can only refuse what is nested too deep.
    if let Err(e) = tailgate_fuzz::receive_into_buffer(&body) {
        assert!(
            e.to_string().contains("nested deeper"),
            "JSON-born body refused: {e}"
        );
    }
});

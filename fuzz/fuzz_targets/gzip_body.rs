//! Gzip bodies (HTTP `Content-Encoding: gzip`): the bounded decompression never inflates past its limit,
//! gives back exactly what was compressed when it fits, refuses with "too large" exactly when it does not,
//! and what it inflates goes on through the protobuf receive path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use tailgate::receiver::{ReceiveError, gunzip_bounded};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("write to a Vec");
    enc.finish().expect("finish to a Vec")
}

fuzz_target!(|input: (u16, &[u8])| {
    let (limit, data) = input;
    let limit = usize::from(limit);
    // The input itself as a gzip body (mostly corrupt, sometimes a mutated valid stream).
    match gunzip_bounded(data, limit) {
        Ok(out) => {
            assert!(out.len() <= limit, "inflated past the limit");
            let _ = tailgate_fuzz::receive_into_buffer(&out);
        }
        Err(ReceiveError::TooLarge { limit: l, .. }) => assert_eq!(l, limit),
        Err(ReceiveError::BadGzip(m)) => assert!(!m.is_empty()),
        Err(e) => panic!("unexpected error {e}"),
    }
    // A valid stream of the input, as one member and as two (gzip allows concatenated members).
    let one = gzip(data);
    let two = [one.as_slice(), one.as_slice()].concat();
    for (body, expected_len) in [
        (one.as_slice(), data.len()),
        (two.as_slice(), 2 * data.len()),
    ] {
        match gunzip_bounded(body, limit) {
            Ok(out) => {
                assert!(expected_len <= limit);
                assert_eq!(out.len(), expected_len);
                assert!(out.chunks(data.len().max(1)).all(|c| c == data));
            }
            Err(ReceiveError::TooLarge { .. }) => assert!(expected_len > limit),
            Err(e) => panic!("valid gzip refused: {e}"),
        }
    }
});

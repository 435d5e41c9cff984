//! Any bytes as an OTLP/gRPC or OTLP/HTTP protobuf body: the validating scan, the receiver's counting and
//! submission, and the trace buffer. See `tailgate_fuzz::receive_into_buffer` for what is checked.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tailgate_fuzz::receive_into_buffer(&Bytes::copy_from_slice(data));
});

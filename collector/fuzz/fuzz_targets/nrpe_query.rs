//! Fuzzes the NRPE query decoder with arbitrary bytes, the way the listener uses it: the
//! first 16 bytes give the packet length, then the whole packet is decoded.
//!
//! Run: `cargo fuzz run nrpe_query` from `collector/` (see README, "Fuzzing").
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigie_collector::nrpe::packet::{V3_HEADER, decode_query, encode_response, packet_len};

fuzz_target!(|data: &[u8]| {
    if data.len() >= V3_HEADER {
        let mut header = [0u8; V3_HEADER];
        header.copy_from_slice(&data[..V3_HEADER]);
        if let Ok(len) = packet_len(&header) {
            assert!(len <= V3_HEADER + 65_536 + 3);
        }
    }
    if let Ok(q) = decode_query(data) {
        // Whatever decodes must be answerable in its own version.
        let reply = encode_response(q.version, 0, &q.text);
        assert!(reply.len() >= V3_HEADER);
    }
});

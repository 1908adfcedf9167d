//! The NRPE packet format, versions 2, 3 and 4 (as check_nrpe 4.x speaks them).
//!
//! All integers are big-endian. Common header: version u16, type u16 (1 query, 2 response),
//! crc32 u32, result_code i16. Then:
//! - v2: a 1024-byte NUL-terminated buffer and 2 bytes of struct padding: always 1036 bytes;
//! - v3/v4: alignment u16 (0), buffer_length u32, then the buffer. A v4 packet is exactly
//!   16 + buffer_length bytes. A v3 packet carries 3 more bytes (a bug of NRPE 3 kept for
//!   compatibility) and its CRC covers them.
//!
//! The CRC is zlib's CRC-32 over the whole packet with the crc field (and for v3/v4 the
//! alignment) set to zero. Decoding never trusts a length before checking its bound.

use std::fmt;

/// Packet types.
pub const QUERY: u16 = 1;
pub const RESPONSE: u16 = 2;
/// Size of a v2 packet.
pub const V2_SIZE: usize = 1036;
/// The v2 text buffer (text plus its NUL).
pub const V2_BUFFER: usize = 1024;
/// Header of v3/v4 packets.
pub const V3_HEADER: usize = 16;
/// Largest buffer_length either side accepts.
pub const MAX_BUFFER: usize = 65_536;
/// Longest output in a v3/v4 response (the buffer keeps one byte for the NUL).
pub const MAX_V3_TEXT: usize = MAX_BUFFER - 1;

/// Protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
    V4,
}

impl Version {
    fn number(self) -> u16 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
            Version::V4 => 4,
        }
    }

    /// Longest output a response of this version can carry.
    pub fn max_text(self) -> usize {
        match self {
            Version::V2 => V2_BUFFER - 1,
            Version::V3 | Version::V4 => MAX_V3_TEXT,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number())
    }
}

/// Why a packet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("unsupported packet version {0}")]
    Version(u16),
    #[error("packet type {0} is not a query")]
    Type(u16),
    #[error("buffer length {0} is out of bounds (0..65536)")]
    Length(i64),
    #[error("truncated packet: {got} bytes, {want} expected")]
    Truncated { got: usize, want: usize },
    #[error("bad CRC32: packet says {got:08x}, content gives {want:08x}")]
    Crc { got: u32, want: u32 },
}

/// A decoded query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub version: Version,
    /// The text up to the first NUL (`command` or `command!arg!arg…`).
    pub text: String,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// How many bytes the whole packet has, from its first 16 bytes.
pub fn packet_len(header: &[u8; V3_HEADER]) -> Result<usize, PacketError> {
    match be16(header, 0) {
        2 => Ok(V2_SIZE),
        v @ (3 | 4) => {
            let len = i64::from(be32(header, 12) as i32);
            if !(0..=MAX_BUFFER as i64).contains(&len) {
                return Err(PacketError::Length(len));
            }
            let extra = if v == 3 { 3 } else { 0 };
            Ok(V3_HEADER + len as usize + extra)
        }
        v => Err(PacketError::Version(v)),
    }
}

fn crc_with_zeroed(packet: &[u8], zero_alignment: bool) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&packet[..4]);
    h.update(&[0; 4]);
    if zero_alignment {
        h.update(&packet[8..10]);
        h.update(&[0; 2]);
        h.update(&packet[12..]);
    } else {
        h.update(&packet[8..]);
    }
    h.finalize()
}

/// Decodes a complete query packet (`packet_len` bytes).
pub fn decode_query(packet: &[u8]) -> Result<Query, PacketError> {
    if packet.len() < V3_HEADER {
        return Err(PacketError::Truncated {
            got: packet.len(),
            want: V3_HEADER,
        });
    }
    let mut header = [0u8; V3_HEADER];
    header.copy_from_slice(&packet[..V3_HEADER]);
    let want = packet_len(&header)?;
    if packet.len() != want {
        return Err(PacketError::Truncated {
            got: packet.len(),
            want,
        });
    }
    let version = match be16(packet, 0) {
        2 => Version::V2,
        3 => Version::V3,
        _ => Version::V4,
    };
    let kind = be16(packet, 2);
    let got = be32(packet, 4);
    let computed = crc_with_zeroed(packet, version != Version::V2);
    if got != computed {
        return Err(PacketError::Crc {
            got,
            want: computed,
        });
    }
    if kind != QUERY {
        return Err(PacketError::Type(kind));
    }
    let buffer = match version {
        Version::V2 => &packet[10..10 + V2_BUFFER],
        Version::V3 => &packet[V3_HEADER..packet.len() - 3],
        Version::V4 => &packet[V3_HEADER..],
    };
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    Ok(Query {
        version,
        text: String::from_utf8_lossy(&buffer[..end]).into_owned(),
    })
}

/// Cuts `text` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Encodes a response in `version`; the text is cut to what the version carries and a
/// result code outside 0..3 becomes 3 (UNKNOWN).
pub fn encode_response(version: Version, result_code: i32, text: &str) -> Vec<u8> {
    let code: u16 = if (0..=3).contains(&result_code) {
        result_code as u16
    } else {
        3
    };
    let text = truncate(text, version.max_text()).as_bytes();
    let mut p = match version {
        Version::V2 => {
            let mut p = vec![0u8; V2_SIZE];
            p[10..10 + text.len()].copy_from_slice(text);
            p
        }
        Version::V3 | Version::V4 => {
            // buffer_length counts the NUL, as the stock daemon's does.
            let len = text.len() + 1;
            let mut p = vec![0u8; V3_HEADER + len];
            p[12..16].copy_from_slice(&(len as u32).to_be_bytes());
            p[V3_HEADER..V3_HEADER + text.len()].copy_from_slice(text);
            p
        }
    };
    p[0..2].copy_from_slice(&version.number().to_be_bytes());
    p[2..4].copy_from_slice(&RESPONSE.to_be_bytes());
    p[8..10].copy_from_slice(&code.to_be_bytes());
    let crc = match version {
        // A v3 reader checks the CRC over the packet plus NRPE 3's three zero bytes.
        Version::V3 => {
            let mut h = crc32fast::Hasher::new();
            h.update(&p);
            h.update(&[0; 3]);
            h.finalize()
        }
        _ => crc32fast::hash(&p),
    };
    p[4..8].copy_from_slice(&crc.to_be_bytes());
    p
}

/// Encodes a query (tests, benchmarks, and the byte-level checks of the listener).
pub fn encode_query(version: Version, text: &str) -> Vec<u8> {
    let mut p = match version {
        Version::V2 => {
            let mut p = vec![0u8; V2_SIZE];
            let t = truncate(text, V2_BUFFER - 1).as_bytes();
            p[10..10 + t.len()].copy_from_slice(t);
            p
        }
        Version::V3 | Version::V4 => {
            let extra = if version == Version::V3 { 3 } else { 0 };
            // Padded like check_nrpe's: at least a v2 packet's size.
            let len = (text.len() + 1).max(V2_SIZE - V3_HEADER - extra);
            let mut p = vec![0u8; V3_HEADER + len + extra];
            p[12..16].copy_from_slice(&(len as u32).to_be_bytes());
            p[V3_HEADER..V3_HEADER + text.len()].copy_from_slice(text.as_bytes());
            p
        }
    };
    p[0..2].copy_from_slice(&version.number().to_be_bytes());
    p[2..4].copy_from_slice(&QUERY.to_be_bytes());
    let crc = crc32fast::hash(&p);
    p[4..8].copy_from_slice(&crc.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Queries recorded from Debian's check_nrpe 4.1.0 (`-n`, plain TCP).
    const RECORDED: &[(&[u8], Version, &str)] = &[
        (
            include_bytes!("testdata/v4-check_load.bin"),
            Version::V4,
            "check_load",
        ),
        (
            include_bytes!("testdata/v4-check_load-auray.bin"),
            Version::V4,
            "check_load!auray",
        ),
        (
            include_bytes!("testdata/v3-check_load-auray.bin"),
            Version::V3,
            "check_load!auray",
        ),
        (
            include_bytes!("testdata/v2-check_load-auray.bin"),
            Version::V2,
            "check_load!auray",
        ),
        (
            include_bytes!("testdata/v4-nrpe_check.bin"),
            Version::V4,
            "_NRPE_CHECK",
        ),
    ];

    #[test]
    fn decodes_what_check_nrpe_sends() {
        for (bytes, version, text) in RECORDED {
            let mut header = [0u8; V3_HEADER];
            header.copy_from_slice(&bytes[..V3_HEADER]);
            assert_eq!(packet_len(&header), Ok(bytes.len()), "{text}");
            let q = decode_query(bytes).expect("valid recorded query");
            assert_eq!(q.version, *version);
            assert_eq!(q.text, *text);
        }
    }

    #[test]
    fn our_queries_are_byte_compatible_with_check_nrpe() {
        // Same layout and CRC as check_nrpe's v4 and v3 queries (v2 differs only in the
        // random filler check_nrpe puts in result_code and padding).
        assert_eq!(encode_query(Version::V4, "check_load!auray"), RECORDED[1].0);
        assert_eq!(encode_query(Version::V3, "check_load!auray"), RECORDED[2].0);
        assert_eq!(
            decode_query(&encode_query(Version::V2, "check_load!auray"))
                .expect("v2")
                .text,
            "check_load!auray"
        );
    }

    #[test]
    fn corrupt_packets_are_refused_with_a_reason() {
        let mut bad = RECORDED[0].0.to_vec();
        bad[20] ^= 1;
        assert!(matches!(decode_query(&bad), Err(PacketError::Crc { .. })));
        let mut v9 = RECORDED[0].0.to_vec();
        v9[1] = 9;
        assert_eq!(decode_query(&v9), Err(PacketError::Version(9)));
        let mut huge = [0u8; V3_HEADER];
        huge[1] = 4;
        huge[12..16].copy_from_slice(&70_000u32.to_be_bytes());
        assert_eq!(packet_len(&huge), Err(PacketError::Length(70_000)));
        huge[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(packet_len(&huge), Err(PacketError::Length(-1)));
        assert!(matches!(
            decode_query(&RECORDED[0].0[..100]),
            Err(PacketError::Truncated { .. })
        ));
        // A response is not a query.
        let resp = encode_response(Version::V4, 0, "OK");
        assert_eq!(decode_query(&resp), Err(PacketError::Type(RESPONSE)));
    }

    #[test]
    fn responses_have_the_stock_daemon_layout() {
        let r = encode_response(Version::V4, 0, "LOAD OK");
        assert_eq!(r.len(), 16 + 8);
        assert_eq!(&r[0..4], &[0, 4, 0, 2]);
        assert_eq!(&r[12..16], &8u32.to_be_bytes());
        let mut zeroed = r.clone();
        zeroed[4..8].fill(0);
        assert_eq!(&r[4..8], &crc32fast::hash(&zeroed).to_be_bytes());

        let r = encode_response(Version::V2, 7, "x");
        assert_eq!(r.len(), V2_SIZE);
        assert_eq!(
            &r[8..10],
            &3u16.to_be_bytes(),
            "codes outside 0..3 become UNKNOWN"
        );

        let long = "é".repeat(600); // 1200 bytes of two-byte characters
        let r = encode_response(Version::V2, 0, &long);
        let text_end = 10 + r[10..].iter().position(|b| *b == 0).expect("NUL");
        let text = std::str::from_utf8(&r[10..text_end]).expect("not split mid-character");
        assert_eq!(text.len(), 1022);
        let r = encode_response(Version::V4, 0, &"a".repeat(70_000));
        assert_eq!(r.len(), 16 + MAX_BUFFER);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = decode_query(&bytes);
            if bytes.len() >= V3_HEADER {
                let mut h = [0u8; V3_HEADER];
                h.copy_from_slice(&bytes[..V3_HEADER]);
                let _ = packet_len(&h);
            }
        }

        #[test]
        fn queries_round_trip(text in "[a-z_!0-9 ]{0,200}", v in 0usize..3) {
            let version = [Version::V2, Version::V3, Version::V4][v];
            let q = decode_query(&encode_query(version, &text)).expect("round trip");
            prop_assert_eq!(q.version, version);
            prop_assert_eq!(q.text, text);
        }

        #[test]
        fn flipping_any_byte_is_detected(pos in 0usize..1036, bit in 0u8..8) {
            let mut p = encode_query(Version::V4, "check_load!auray");
            // The alignment field is excluded from the CRC by design.
            prop_assume!(!(10..12).contains(&pos));
            p[pos] ^= 1 << bit;
            prop_assert!(decode_query(&p).is_err());
        }
    }
}

//! Classic pcap files (what `tcpdump -w` writes and Wireshark and `tcpdump -r` read):
//! a 24-byte global header, then a 16-byte record header before each packet. Written
//! little-endian with the standard magic, so readers detect the byte order.

use std::io::{self, Write};

use vigie_proto::CapturedPacket;

const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;

/// Writes a pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header for `link_type` (DLT) and `snaplen`.
    pub fn new(mut w: W, link_type: u32, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend(MAGIC_MICROSECONDS.to_le_bytes());
        h.extend(2u16.to_le_bytes()); // version 2.4
        h.extend(4u16.to_le_bytes());
        h.extend(0i32.to_le_bytes()); // thiszone: timestamps are UTC
        h.extend(0u32.to_le_bytes()); // sigfigs
        h.extend(snaplen.to_le_bytes());
        h.extend(link_type.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Appends one packet record.
    pub fn packet(&mut self, p: &CapturedPacket) -> io::Result<()> {
        let mut h = [0u8; 16];
        // Classic pcap holds 32-bit seconds: fine until 2106.
        h[0..4].copy_from_slice(&(p.ts_sec as u32).to_le_bytes());
        h[4..8].copy_from_slice(&p.ts_usec.to_le_bytes());
        h[8..12].copy_from_slice(&(p.data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&p.orig_len.max(p.data.len() as u32).to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(&p.data)
    }

    /// Appends records that are already in classic pcap form (as agents send them).
    pub fn records(&mut self, records: &[u8]) -> io::Result<()> {
        self.w.write_all(records)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_classic_pcap() {
        let mut w = PcapWriter::new(Vec::new(), 1, 262_144).expect("header");
        w.packet(&CapturedPacket {
            ts_sec: 1_700_000_000,
            ts_usec: 123_456,
            orig_len: 98,
            data: vec![0xab; 60],
        })
        .expect("packet");
        let b = w.into_inner();
        assert_eq!(b.len(), 24 + 16 + 60);
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&b[20..24], &1u32.to_le_bytes());
        assert_eq!(&b[24..28], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&b[32..36], &60u32.to_le_bytes());
        assert_eq!(&b[36..40], &98u32.to_le_bytes());
    }
}

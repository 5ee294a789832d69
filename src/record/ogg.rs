//! Ogg Opus writer (RFC 7845) over the `ogg` crate's page framing.
//!
//! - OpusHead (channel count from the track, pre-skip 3840 = 80 ms: the
//!   recording starts mid-stream, RFC 7845 §4.2) and OpusTags on their own pages.
//! - Granule positions count 48 kHz samples from the first packet; each
//!   packet's duration comes from its TOC byte (RFC 6716 §3.1).
//! - RTP timestamp gaps (DTX, loss) are filled with TOC-only packets (a lost
//!   frame for the decoder), so timing stays right and granules stay consistent.
//! - The newest packet is held back so that [`OggOpusWriter::finish`] can put it
//!   on the end-of-stream page; a page ends every [`PAGE_SAMPLES`] of media or on
//!   [`OggOpusWriter::flush`].

use std::io::{self, Write};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

/// Pre-skip written to OpusHead (48 kHz samples).
pub const PRE_SKIP: u16 = 3840;
/// A page ends at least every this many samples of media (0.5 s).
pub const PAGE_SAMPLES: u64 = 24_000;
/// Longest gap filled with lost-frame packets (60 s); longer gaps are closed up.
const MAX_GAP_SAMPLES: u64 = 60 * 48_000;
/// Opus packets carry at most 120 ms.
const MAX_PACKET_SAMPLES: u32 = 5760;

/// Why a packet was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum OpusDrop {
    /// Empty or malformed TOC, or more than 120 ms.
    Invalid,
    /// Timestamp at or before data already written.
    Late,
}

/// Streams Opus packets into an Ogg Opus file.
pub struct OggOpusWriter<W: Write> {
    pw: PacketWriter<'static, W>,
    serial: u32,
    /// Samples written (the granule position of the last packet written or held).
    granule: u64,
    last_page_granule: u64,
    pending: Option<(Vec<u8>, u64)>,
    /// Extended RTP timestamp of the first packet, and of the last one.
    first_ts: Option<i64>,
    last_ts: (u32, i64),
    /// RTP position (relative to the first packet) where the next packet is expected.
    expected: i64,
    /// TOC of the last packet (for gap filling).
    last_toc: u8,
    packets: u64,
}

impl<W: Write> std::fmt::Debug for OggOpusWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("serial", &self.serial)
            .field("granule", &self.granule)
            .field("packets", &self.packets)
            .finish()
    }
}

impl<W: Write> OggOpusWriter<W> {
    /// Write the OpusHead and OpusTags pages. `channels` is clamped to 1..=2.
    pub fn new(w: W, serial: u32, channels: u8) -> io::Result<Self> {
        let mut pw = PacketWriter::new(w);
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels.clamp(1, 2));
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate (informational)
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        pw.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = concat!("wisp ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        pw.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        pw.inner_mut().flush()?;
        Ok(OggOpusWriter {
            pw,
            serial,
            granule: 0,
            last_page_granule: 0,
            pending: None,
            first_ts: None,
            last_ts: (0, 0),
            expected: 0,
            last_toc: 0xf8, // CELT fullband 20 ms, code 0
            packets: 0,
        })
    }

    /// Append one Opus packet with its RTP timestamp (48 kHz clock). Returns
    /// the reason when the packet is dropped (the writer is unchanged then).
    pub fn write_packet(&mut self, pkt: &[u8], rtp_ts: u32) -> io::Result<Result<(), OpusDrop>> {
        let Some(samples) = packet_samples(pkt) else {
            return Ok(Err(OpusDrop::Invalid));
        };
        let ext = match self.first_ts {
            None => {
                self.first_ts = Some(rtp_ts as i64);
                rtp_ts as i64
            }
            Some(_) => {
                let (last, last_ext) = self.last_ts;
                last_ext + rtp_ts.wrapping_sub(last) as i32 as i64
            }
        };
        let rel = ext - self.first_ts.unwrap_or(ext);
        if rel + (samples as i64) <= self.expected {
            return Ok(Err(OpusDrop::Late));
        }
        self.last_ts = (rtp_ts, ext);
        let gap = rel - self.expected;
        if gap > 0 {
            self.fill_gap(gap as u64)?;
        }
        self.expected = rel.max(self.expected) + samples as i64;
        self.last_toc = pkt[0] & !0x03;
        self.push(pkt.to_vec(), samples as u64)?;
        Ok(Ok(()))
    }

    fn fill_gap(&mut self, gap: u64) -> io::Result<()> {
        let toc = self.last_toc;
        let per = frame_samples(toc) as u64;
        let n = gap.min(MAX_GAP_SAMPLES) / per;
        for _ in 0..n {
            self.push(vec![toc], per)?;
        }
        Ok(())
    }

    fn push(&mut self, pkt: Vec<u8>, samples: u64) -> io::Result<()> {
        self.granule += samples;
        self.packets += 1;
        if let Some((prev, gp)) = self.pending.replace((pkt, self.granule)) {
            let end = if gp - self.last_page_granule >= PAGE_SAMPLES {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.pw.write_packet(prev, self.serial, end, gp)?;
            if end == PacketWriteEndInfo::EndPage {
                self.last_page_granule = gp;
                self.pw.inner_mut().flush()?;
            }
        }
        Ok(())
    }

    /// End the current page (with every packet so far) and flush the inner writer.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some((prev, gp)) = self.pending.take() {
            self.pw
                .write_packet(prev, self.serial, PacketWriteEndInfo::EndPage, gp)?;
            self.last_page_granule = gp;
        }
        self.pw.inner_mut().flush()
    }

    /// Write the end-of-stream page and return the inner writer. With no
    /// packet held back, a lost-frame packet carries the end-of-stream flag.
    pub fn finish(mut self) -> io::Result<W> {
        let (pkt, gp) = match self.pending.take() {
            Some(p) => p,
            None => {
                let toc = self.last_toc;
                self.granule += frame_samples(toc) as u64;
                (vec![toc], self.granule)
            }
        };
        self.pw
            .write_packet(pkt, self.serial, PacketWriteEndInfo::EndStream, gp)?;
        let mut w = self.pw.into_inner();
        w.flush()?;
        Ok(w)
    }

    /// Samples (48 kHz) of media written or held so far.
    pub fn samples(&self) -> u64 {
        self.granule
    }

    /// Packets written or held so far (including gap fillers).
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

/// Samples per frame for a TOC byte's configuration (48 kHz).
fn frame_samples(toc: u8) -> u32 {
    let config = toc >> 3;
    match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    }
}

/// Duration of an Opus packet in 48 kHz samples, `None` if malformed or over 120 ms.
pub fn packet_samples(pkt: &[u8]) -> Option<u32> {
    let toc = *pkt.first()?;
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let n = (*pkt.get(1)? & 0x3f) as u32;
            if n == 0 {
                return None;
            }
            n
        }
    };
    let total = frames * frame_samples(toc);
    (total <= MAX_PACKET_SAMPLES).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogg::reading::PacketReader;
    use std::io::Cursor;

    fn read_all(b: &[u8]) -> Vec<ogg::Packet> {
        let mut r = PacketReader::new(Cursor::new(b.to_vec()));
        let mut v = vec![];
        while let Some(p) = r.read_packet().unwrap() {
            v.push(p);
        }
        v
    }

    #[test]
    fn durations() {
        assert_eq!(packet_samples(&[0xf8, 1, 2]), Some(960)); // CELT 20 ms
        assert_eq!(packet_samples(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(packet_samples(&[0xf9]), Some(1920)); // 2 frames
        assert_eq!(packet_samples(&[0xfb, 6]), Some(5760)); // code 3, 6 × 20 ms = 120 ms
        assert_eq!(packet_samples(&[0xfb, 7]), None); // 140 ms
        assert_eq!(packet_samples(&[0xfb]), None);
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn round_trip_with_gap_wrap_and_eos() {
        let mut w = OggOpusWriter::new(Vec::new(), 7, 2).unwrap();
        let base = u32::MAX - 960 * 10; // wraps after 10 packets
        let mut sent = 0;
        for i in 0..100u32 {
            if i == 50 {
                continue; // lost: filled with one TOC-only packet
            }
            let r = w
                .write_packet(&[0xf8, i as u8, 0xaa], base.wrapping_add(i * 960))
                .unwrap();
            assert_eq!(r, Ok(()));
            sent += 1;
        }
        assert_eq!(
            w.write_packet(&[0xf8, 1], base).unwrap(),
            Err(OpusDrop::Late)
        );
        assert_eq!(w.write_packet(&[], base).unwrap(), Err(OpusDrop::Invalid));
        assert_eq!(w.samples(), 100 * 960);
        let out = w.finish().unwrap();
        let pk = read_all(&out);
        assert_eq!(&pk[0].data[..8], b"OpusHead");
        assert_eq!(pk[0].data[9], 2);
        assert_eq!(
            u16::from_le_bytes([pk[0].data[10], pk[0].data[11]]),
            PRE_SKIP
        );
        assert_eq!(&pk[1].data[..8], b"OpusTags");
        let audio = &pk[2..];
        assert_eq!(audio.len(), sent + 1);
        assert_eq!(audio[50].data, vec![0xf8]);
        assert!(audio.last().unwrap().last_in_stream());
        let mut last = 0;
        for p in audio.iter().filter(|p| p.last_in_page()) {
            assert!(p.absgp_page() > last, "granules increase");
            last = p.absgp_page();
        }
        assert_eq!(last, 100 * 960);
        // Pages end at least every PAGE_SAMPLES.
        let pages = audio.iter().filter(|p| p.last_in_page()).count();
        assert!(pages >= (100 * 960 / PAGE_SAMPLES) as usize);
    }

    #[test]
    fn eos_without_packets() {
        let w = OggOpusWriter::new(Vec::new(), 1, 1).unwrap();
        let out = w.finish().unwrap();
        let pk = read_all(&out);
        assert_eq!(pk.len(), 3);
        assert!(pk[2].last_in_stream());
    }
}

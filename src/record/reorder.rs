//! Per-track jitter window keyed by extended sequence number.
//!
//! Packets are released in sequence order. A hole is waited for while the
//! window holds at most `max_packets` packets spanning at most `max_span` RTP
//! ticks; then it is declared lost ([`Out::Gap`]) and release goes on after it.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One buffered RTP packet.
#[derive(Debug, Clone)]
pub struct Pkt {
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Arc<[u8]>,
}

/// What the window releases.
#[derive(Debug)]
pub enum Out {
    /// The next packet in order.
    Packet(Pkt),
    /// One or more packets before the next released one are lost.
    Gap,
}

/// The jitter window of one track.
#[derive(Debug)]
pub struct Reorder {
    buf: BTreeMap<u64, Pkt>,
    next: Option<u64>,
    max_packets: usize,
    max_span: u32,
    /// Packets dropped as late (before the window) or duplicate.
    pub late: u64,
}

impl Reorder {
    /// A window of `max_packets` packets or `max_span` RTP ticks, whichever is reached first.
    pub fn new(max_packets: usize, max_span: u32) -> Self {
        Reorder {
            buf: BTreeMap::new(),
            next: None,
            max_packets: max_packets.max(1),
            max_span,
            late: 0,
        }
    }

    /// Add a packet; released packets and gaps are appended to `out`.
    pub fn push(&mut self, p: Pkt, out: &mut Vec<Out>) {
        let next = *self.next.get_or_insert(p.seq);
        if p.seq < next || self.buf.contains_key(&p.seq) {
            self.late += 1;
            return;
        }
        self.buf.insert(p.seq, p);
        self.release(out);
        while self.over_limit() {
            self.skip_hole(out);
        }
    }

    /// Release everything buffered, marking holes as gaps (end of track).
    pub fn drain(&mut self, out: &mut Vec<Out>) {
        while !self.buf.is_empty() {
            self.skip_hole(out);
        }
    }

    /// Packets waiting for a hole to fill.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn over_limit(&self) -> bool {
        let (Some((_, first)), Some((_, last))) =
            (self.buf.first_key_value(), self.buf.last_key_value())
        else {
            return false;
        };
        let span = last.ts.wrapping_sub(first.ts) as i32;
        self.buf.len() > self.max_packets || span > self.max_span as i32
    }

    fn skip_hole(&mut self, out: &mut Vec<Out>) {
        if let Some(&first) = self.buf.keys().next() {
            if Some(first) != self.next {
                out.push(Out::Gap);
            }
            self.next = Some(first);
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut Vec<Out>) {
        let Some(mut next) = self.next else { return };
        while let Some(p) = self.buf.remove(&next) {
            out.push(Out::Packet(p));
            next += 1;
        }
        self.next = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u64) -> Pkt {
        Pkt {
            seq,
            ts: (seq * 10) as u32,
            marker: false,
            payload: Arc::from(&[][..]),
        }
    }

    fn run(r: &mut Reorder, seqs: &[u64]) -> Vec<String> {
        let mut out = vec![];
        for &s in seqs {
            r.push(pkt(s), &mut out);
        }
        out.iter()
            .map(|o| match o {
                Out::Packet(p) => p.seq.to_string(),
                Out::Gap => "gap".into(),
            })
            .collect()
    }

    #[test]
    fn reorders_within_window() {
        let mut r = Reorder::new(4, 1000);
        assert_eq!(run(&mut r, &[1, 3, 2, 4, 4, 0]), ["1", "2", "3", "4"]);
        assert_eq!(r.late, 2);
    }

    #[test]
    fn unfillable_hole_is_a_gap() {
        let mut r = Reorder::new(3, 1000);
        assert_eq!(
            run(&mut r, &[1, 3, 4, 5, 6, 7]),
            ["1", "gap", "3", "4", "5", "6", "7"]
        );
        // The lost packet arriving late is dropped.
        assert_eq!(run(&mut r, &[2, 8]), ["8"]);
    }

    #[test]
    fn span_limit_and_drain() {
        let mut r = Reorder::new(100, 15); // 15 ticks = 1.5 packets here
        assert_eq!(run(&mut r, &[1, 3, 4, 5]), ["1", "gap", "3", "4", "5"]);
        let mut out = vec![];
        r.push(pkt(7), &mut out);
        assert_eq!(r.buffered(), 1);
        r.drain(&mut out);
        assert!(matches!(out[..], [Out::Gap, Out::Packet(ref p)] if p.seq == 7));
    }
}

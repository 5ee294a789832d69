//! `datagram`: arbitrary datagrams from arbitrary addresses into a core that
//! has a live, connected publisher and viewer.
//!
//! The world (core + two real str0m clients) is built once per process and
//! reused; every datagram of its setup is captured, so the tape can replay
//! and mutate *valid* STUN, DTLS and SRTP of this very process, which random
//! bytes would never reach. Once an input made the core accept a new source
//! (a valid STUN check from a new address: the tape can forge one because it
//! knows the server's ICE password, or replay a captured one) the world
//! drifts from its baseline; after [`MAX_TRUSTED`] such sources it is rebuilt
//! (a rebuild costs as much as a few hundred inputs).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use str0m::format::Codec;

use super::core_ops::VIEW;
use super::Tape;
use crate::sfu::demux::{classify, Class};
use crate::sfu::Counts;
use crate::testnet::{only_codec, server_addr, Datagram, JoinOpts, TestNet};

struct World {
    net: TestNet,
    /// Captured datagrams by (sent by the server?, class), non-empty buckets only.
    buckets: Vec<Vec<Datagram>>,
    /// Sources that passed (or may have passed) STUN integrity.
    trusted: HashSet<SocketAddr>,
    base: Counts,
    forwarded: u64,
    /// The publisher's SSRCs seen in captured RTP.
    ssrcs: Vec<[u8; 4]>,
    /// Foreign sources trusted so far, or a panic left the world half-updated.
    dirty: bool,
}

/// Foreign sources that may pass STUN integrity before the world is rebuilt.
const MAX_TRUSTED: usize = 16;

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn build() -> World {
    let mut net = super::net(7);
    net.tap = Some(Vec::new());
    // Opus and VP8 only (what is sent either way): the short SDPs make a
    // rebuild cheaper.
    let opts = JoinOpts {
        config: Some(only_codec(Codec::Vp8)),
        ..JoinOpts::default()
    };
    let p = net.publish_with("a", &opts);
    let v = net
        .join_opts("a", false, &VIEW, &opts)
        .expect("fuzz world viewer");
    net.run_for(Duration::from_secs(2));
    assert!(
        net.connected(p) && net.connected(v),
        "fuzz world did not connect"
    );
    assert!(
        net.clients[v].got.len() > 10,
        "fuzz world forwards no media"
    );
    net.media_on = false;
    // Let the last media and RTCP settle; then the clock stands still.
    net.run_for(Duration::from_millis(100));
    net.settle();
    let captured = net.tap.take().unwrap_or_default();
    let mut buckets: Vec<Vec<Datagram>> = vec![Vec::new(); 8];
    let mut ssrcs = Vec::new();
    for d in captured {
        let class = match classify(&d.bytes) {
            Class::Stun => 0,
            Class::Dtls => 1,
            Class::Rtp => 2,
            Class::Other => 3,
        };
        if class == 2
            && d.from == net.clients[p].addr
            && d.bytes.len() > 12
            && d.bytes[1] & 0x7f < 64
        {
            let s = [d.bytes[8], d.bytes[9], d.bytes[10], d.bytes[11]];
            if !ssrcs.contains(&s) {
                ssrcs.push(s);
            }
        }
        let b = class + if d.from == server_addr() { 4 } else { 0 };
        if buckets[b].len() < 256 {
            buckets[b].push(d);
        }
    }
    buckets.retain(|b| !b.is_empty());
    let trusted = net.clients.iter().map(|c| c.addr).collect();
    let base = net.sfu.counts();
    let forwarded = net.sfu.stats().rtp_forwarded;
    World {
        net,
        buckets,
        trusted,
        base,
        forwarded,
        ssrcs,
        dirty: false,
    }
}

/// Does `buf` carry a MESSAGE-INTEGRITY that verifies with `pwd`? Lenient
/// (a superset of what str0m accepts): used only as the test oracle.
pub(crate) fn stun_integrity_ok(buf: &[u8], pwd: &str) -> bool {
    if buf.len() < 20 || buf[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return false;
    }
    let mut i = 20;
    while i + 4 <= buf.len() {
        let t = u16::from_be_bytes([buf[i], buf[i + 1]]);
        let l = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
        if t == 0x0008 {
            let Some(tag) = buf.get(i + 4..i + 24) else {
                return false;
            };
            let mut head = buf[..i].to_vec();
            head[2..4].copy_from_slice(&((i + 24 - 20) as u16).to_be_bytes());
            let key = aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                pwd.as_bytes(),
            );
            return aws_lc_rs::hmac::verify(&key, &head, tag).is_ok();
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    false
}

/// A STUN Binding request with the attributes the tape chooses; valid
/// MESSAGE-INTEGRITY (with `pwd`) when `sign`.
pub(crate) fn binding_request(t: &mut Tape<'_>, username: &str, pwd: &str, sign: bool) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    for _ in 0..12 {
        b.push(t.byte());
    }
    let attr = |b: &mut Vec<u8>, ty: u16, v: &[u8]| {
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
    };
    let flags = t.byte();
    attr(&mut b, 0x0006, username.as_bytes());
    if flags & 1 != 0 {
        attr(&mut b, 0x0024, &[0x6e, 0x7f, 0xff, 0xff]); // PRIORITY
    }
    if flags & 2 != 0 {
        attr(&mut b, 0x0025, &[]); // USE-CANDIDATE
    }
    if flags & 4 != 0 {
        attr(&mut b, 0x802A, &[1, 2, 3, 4, 5, 6, 7, 8]); // ICE-CONTROLLING
    }
    if flags & 8 != 0 {
        // An attribute chosen by the tape (type, value).
        let ty = u16::from_be_bytes([t.byte(), t.byte()]);
        let n = usize::from(t.byte() % 64);
        let v = t.take(n).to_vec();
        attr(&mut b, ty, &v);
    }
    let with_mi = (b.len() + 24 - 20) as u16;
    b[2..4].copy_from_slice(&with_mi.to_be_bytes());
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        if sign {
            pwd.as_bytes()
        } else {
            b"not-the-password"
        },
    );
    let tag = aws_lc_rs::hmac::sign(&key, &b);
    b.extend_from_slice(&0x0008u16.to_be_bytes());
    b.extend_from_slice(&20u16.to_be_bytes());
    b.extend_from_slice(tag.as_ref());
    if flags & 16 != 0 {
        // Truncate inside the attributes: the length field now lies.
        let cut = 20 + usize::from(t.byte()) % (b.len() - 20);
        b.truncate(cut);
    }
    b
}

fn source(t: &mut Tape<'_>, w: &World) -> SocketAddr {
    let peers = &w.net.clients;
    match t.byte() % 8 {
        0 | 1 => peers[0].addr,
        2 | 3 => peers[1].addr,
        4 => SocketAddr::from(([203, 0, 113, 7], 40000)),
        5 => SocketAddr::from((
            [203, 0, 113, t.byte()],
            u16::from_be_bytes([t.byte(), t.byte()]),
        )),
        6 => server_addr(),
        _ => SocketAddr::from((
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(t.byte())],
            u16::from_be_bytes([t.byte(), t.byte()]),
        )),
    }
}

fn mutate(t: &mut Tape<'_>, mut b: Vec<u8>) -> Vec<u8> {
    let kind = t.byte();
    let pos = usize::from(u16::from_be_bytes([t.byte(), t.byte()]));
    let val = t.byte();
    let n = b.len().max(1);
    match kind % 8 {
        0 => {}
        1 => {
            if let Some(x) = b.get_mut(pos % n) {
                *x ^= val | 1;
            }
        }
        2 => b.truncate(pos % n),
        3 => {
            if let Some(x) = b.get_mut(pos % n) {
                *x = val;
            }
        }
        4 => {
            let extra = t.take(usize::from(val)).to_vec();
            b.extend_from_slice(&extra);
        }
        5 => {
            if let Some(x) = b.first_mut() {
                *x = val;
            }
        }
        6 => {
            // Flip a byte in the last 10 (SRTP auth tag, STUN fingerprint).
            let i = b.len().saturating_sub(1 + pos % 10);
            if let Some(x) = b.get_mut(i) {
                *x ^= val | 1;
            }
        }
        _ => {
            let extra = t.take(1500).to_vec();
            let at = pos % n;
            b.truncate(at);
            b.extend_from_slice(&extra);
        }
    }
    b.truncate(65_507);
    b
}

/// Feed the datagrams the input describes to the live world; see the module docs.
///
/// Tape: repeated `op, source, …` until the input ends (at most 64 datagrams).
/// Ops: raw bytes; a captured datagram with a mutation; a Binding request
/// for a live session (signed or not); RTP/RTCP-shaped bytes with the
/// publisher's SSRC; DTLS-record-shaped bytes.
pub fn datagram(data: &[u8]) {
    let mut guard = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if guard
        .as_ref()
        .is_none_or(|w| w.dirty || w.trusted.len() > 2 + MAX_TRUSTED)
    {
        *guard = Some(build());
    }
    let w = guard.as_mut().expect("world");
    // A panic below leaves the world inconsistent: rebuild next time.
    w.dirty = true;
    let mut t = Tape(data);
    let stray_before = w.net.stray.len();
    let connected_before = w.net.sfu.stats().sessions_connected;
    let panics_before = w.net.sfu.stats().caught_panics;
    for _ in 0..64 {
        if t.is_empty() {
            break;
        }
        let op = t.byte();
        let src = source(&mut t, w);
        let bytes = match op % 5 {
            0 => {
                let len = usize::from(u16::from_be_bytes([t.byte(), t.byte()])) % 1501;
                t.take(len).to_vec()
            }
            1 => {
                let bucket = &w.buckets[usize::from(t.byte()) % w.buckets.len()];
                let d = &bucket[usize::from(t.byte()) % bucket.len()];
                mutate(&mut t, d.bytes.clone())
            }
            2 => {
                let peer = &w.net.clients[usize::from(t.byte() & 1)];
                let (ufrag, pwd) = peer.server_ice.clone();
                let user = match t.byte() % 4 {
                    0 => format!("{ufrag}:{}", peer.ufrag),
                    1 => format!("{ufrag}:x"),
                    2 => format!("nosuch:{}", peer.ufrag),
                    _ => String::from_utf8_lossy(t.take(40)).into_owned(),
                };
                let sign = t.byte() & 1 == 1;
                binding_request(&mut t, &user, &pwd, sign)
            }
            3 => {
                let ssrc = w.ssrcs.get(usize::from(t.byte()) % w.ssrcs.len().max(1));
                let mut b = vec![0x80 | (t.byte() & 0x3f), t.byte()];
                b.extend_from_slice(&[t.byte(), t.byte(), 0, 0, 0, t.byte()]);
                b.extend_from_slice(ssrc.unwrap_or(&[1, 2, 3, 4]));
                let len = usize::from(t.byte()) * 4;
                b.extend_from_slice(t.take(len));
                b
            }
            _ => {
                let mut b = vec![20 + t.byte() % 44, 0xfe, 0xfd, 0, t.byte()];
                b.extend_from_slice(&[0, 0, 0, 0, t.byte()]);
                let len = usize::from(t.byte()) * 2;
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(t.take(len));
                b
            }
        };
        // The oracle: a source is trusted once it sent a check that verifies
        // with a live session's password (replayed or forged with the password).
        if classify(&bytes) == Class::Stun
            && w.net
                .clients
                .iter()
                .any(|c| stun_integrity_ok(&bytes, &c.server_ice.1))
        {
            w.trusted.insert(src);
        }
        w.net.deliver_now(src, &bytes);
    }
    for to in &w.net.stray[stray_before..] {
        assert!(
            w.trusted.contains(to),
            "the core sent a datagram to {to}, which never passed STUN integrity"
        );
    }
    w.net.stray.truncate(stray_before.min(1024));
    let c = w.net.sfu.counts();
    let s = w.net.sfu.stats();
    assert_eq!(
        (c.sessions, c.rooms, c.tokens, c.ufrags),
        (w.base.sessions, w.base.rooms, w.base.tokens, w.base.ufrags),
        "foreign input changed the sessions"
    );
    assert_eq!(
        s.sessions_connected, connected_before,
        "foreign input disconnected a session"
    );
    assert_eq!(s.caught_panics, panics_before, "a panic was caught");
    assert_eq!(
        s.rtp_forwarded, w.forwarded,
        "RTP forwarded from unauthenticated input"
    );
    assert!(w.net.clients.iter().all(|c| c.alive), "a client failed");
    w.dirty = false;
}

/// Every datagram of a fresh world's setup (STUN, DTLS, SRTP, SRTCP, both
/// directions), for seeding corpora with real shapes.
pub fn sample_datagrams() -> Vec<Vec<u8>> {
    build()
        .buckets
        .into_iter()
        .flatten()
        .map(|d| d.bytes)
        .collect()
}

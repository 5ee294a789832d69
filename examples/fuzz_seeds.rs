//! Writes the hand-made seeds of the fuzz corpora (`fuzz/corpus/<target>/`):
//! well-formed inputs of each target's format that random mutation would take
//! long to find. Seeds found by fuzzing are added to the same folders.
//!
//! ```text
//! cargo run --example fuzz_seeds -- [recording|http_request|datagram|core_ops|sdp_offer]...
//! ```
//! With no argument it writes every target's seeds. `sdp_offer` writes the
//! `str0m-*` offers only; its other seeds came from fuzzing.

use std::path::Path;

fn main() {
    let all: [(&str, fn()); 5] = [
        ("recording", recording),
        ("http_request", http_request),
        ("datagram", datagram),
        ("core_ops", core_ops),
        ("sdp_offer", sdp_offer),
    ];
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    for w in &wanted {
        assert!(
            all.iter().any(|(n, _)| n == w),
            "unknown target {w}: one of recording, http_request, datagram, core_ops, sdp_offer"
        );
    }
    for (name, write) in all {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            write();
        }
    }
}

/// Regenerates the `recording` seeds: for each codec, a short stream of
/// well-formed payloads (keyframe first), in order, reordered and with a gap.
fn recording() {
    // One packet on the tape: op (0x80 = marker; op % 8 >= 2: next seq), a
    // timestamp step, the payload length / 4, the payload (padded to 4).
    fn pkt(tape: &mut Vec<u8>, marker: bool, payload: &[u8]) {
        let mut p = payload.to_vec();
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        tape.extend([if marker { 0x82 } else { 0x02 }, 10, (p.len() / 4) as u8]);
        tape.extend(p);
    }
    let vp8_key = [
        0x10u8, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x11, 0x22,
    ];
    let vp8_inter = [0x10u8, 0x51, 0x02, 0x00, 0x33, 0x44, 0x55, 0x66];
    let vp9_key = [
        0x0cu8, 0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf0, 0x01, 0x02,
    ];
    let vp9_inter = [0x4cu8, 0x86, 0x00, 0x40, 0x92, 0x88, 0x10];
    let av1_key = [
        0x18u8, 0x08, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x00, 0x68, 0x02,
    ];
    let av1_inter = [0x10u8, 0x32, 0x10, 0x00, 0x21, 0x43];
    let h264_key = [
        0x78u8, 0x00, 0x05, 0x67, 0x42, 0xe0, 0x1f, 0xda, 0x00, 0x03, 0x68, 0xce, 0x3c, 0x00, 0x04,
        0x65, 0x88, 0x84, 0x00,
    ];
    let h264_inter = [0x41u8, 0x9a, 0x02, 0x03];
    let opus = [0xfcu8, 0xff, 0xfe, 0x01, 0x02, 0x03];
    let mut seeds = vec![];
    for (i, (name, key, inter)) in [
        ("vp8", &vp8_key[..], &vp8_inter[..]),
        ("vp9", &vp9_key[..], &vp9_inter[..]),
        ("av1", &av1_key[..], &av1_inter[..]),
        ("h264", &h264_key[..], &h264_inter[..]),
        ("opus", &opus[..], &opus[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = vec![i as u8, 0];
        pkt(&mut t, true, key);
        for _ in 0..6 {
            pkt(&mut t, true, inter);
        }
        seeds.push((format!("{name}-in-order"), t.clone()));
        // A frame in two packets, then a gap (seq jump) and a reordered packet.
        let mut t = vec![i as u8, 1];
        pkt(&mut t, false, key);
        pkt(&mut t, true, inter);
        t.extend([0x01, 5, 10, 2]);
        t.extend(&inter[..8.min(inter.len())]);
        t.resize(t.len() + 8 - 8.min(inter.len()), 0);
        t.extend([0x00, 3, 10, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        pkt(&mut t, true, key);
        seeds.push((format!("{name}-gap-reorder"), t));
    }
    write_seeds("recording", &seeds);
}

fn write_seeds(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// Regenerates the hand-written `http_request` seeds.
fn http_request() {
    // method index, auth mode, core reply, path selector, path tail,
    // headers as (selector, value) (selector >= 8: "name:value"), body.
    fn seed(
        m: u8,
        auth: u8,
        pick: u8,
        path: u8,
        tail: &str,
        h: &[(u8, &str)],
        body: &str,
    ) -> Vec<u8> {
        let mut v = vec![m, auth, pick, path];
        v.extend_from_slice(tail.as_bytes());
        v.push(0);
        for (sel, val) in h {
            v.push(*sel);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v.push(0);
        v.extend_from_slice(body.as_bytes());
        v
    }
    let offer =
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    const SDP: (u8, &str) = (0, "application/sdp");
    const FRAG: (u8, &str) = (0, "application/trickle-ice-sdpfrag");
    let seeds = [
        (
            "whip-post-created",
            seed(1, 0, 10, 0, "room1", &[SDP], offer),
        ),
        (
            "whep-post-created",
            seed(1, 0, 11, 1, "r_2-x?record=1", &[SDP], offer),
        ),
        (
            "whip-post-auth",
            seed(1, 1, 10, 0, "r", &[SDP, (1, "Bearer pubsecret")], offer),
        ),
        (
            "whip-post-room-token",
            seed(1, 2, 10, 0, "r", &[SDP, (1, "Bearer roomsecret")], offer),
        ),
        (
            "whip-post-bad-offer",
            seed(1, 0, 1, 0, "r", &[SDP], "v=0\r\nbroken\r\nX-Injected: yes"),
        ),
        ("whip-post-busy", seed(1, 0, 0, 0, "r", &[SDP], offer)),
        ("whip-post-capacity", seed(1, 0, 5, 0, "r", &[SDP], offer)),
        (
            "whip-post-traversal",
            seed(1, 0, 10, 0, "..%2f..%2fetc", &[SDP], offer),
        ),
        (
            "whip-post-crlf-room",
            seed(1, 0, 10, 0, "a\r\nSet-Cookie: x", &[SDP], offer),
        ),
        (
            "patch-trickle",
            seed(2, 0, 10, 7, "", &[FRAG, (2, "*")], frag),
        ),
        (
            "patch-restart",
            seed(2, 0, 0x8a, 7, "", &[FRAG, (2, "\"0011aabb\"")], frag),
        ),
        (
            "patch-stale",
            seed(2, 0, 8, 7, "", &[FRAG, (3, "\"old\"")], frag),
        ),
        (
            "delete-session",
            seed(3, 1, 10, 7, "", &[(1, "Bearer adminsecret")], ""),
        ),
        ("delete-room", seed(3, 0, 10, 3, "r", &[], "")),
        (
            "options-preflight",
            seed(4, 0, 10, 0, "r", &[(4, "POST"), (7, "https://x")], ""),
        ),
        ("get-rooms", seed(0, 0, 10, 2, "", &[], "")),
        (
            "get-metrics",
            seed(0, 1, 10, 4, "", &[(1, "Bearer adminsecret")], ""),
        ),
        ("get-room", seed(0, 0, 10, 3, "r", &[], "")),
        ("get-page", seed(0, 0, 10, 6, "", &[], "")),
        ("head-health", seed(5, 0, 10, 5, "", &[], "")),
        ("put-whip", seed(6, 0, 10, 0, "r", &[], "")),
        (
            "raw-header",
            seed(
                1,
                0,
                10,
                0,
                "r",
                &[(9, "Content-Type:application/sdp\r\nX: y")],
                offer,
            ),
        ),
        ("wrong-reply", seed(1, 0, 9, 1, "r", &[SDP], offer)),
    ];
    let seeds: Vec<_> = seeds.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
    write_seeds("http_request", &seeds);
}

/// Regenerates the `datagram` seeds: real datagrams of an in-memory session
/// (raw, from a stranger) and tapes that replay and mutate this process's own
/// captures.
fn datagram() {
    let sample = wisp::fuzzing::sample_datagrams();
    let mut seeds = Vec::new();
    // Raw real datagrams from a stranger (op 0, source 4): one of each first byte.
    let mut firsts = std::collections::BTreeSet::new();
    for d in &sample {
        if firsts.insert((d[0], d.len() > 200)) && firsts.len() <= 16 {
            let mut v = vec![0, 4];
            v.extend_from_slice(&(d.len() as u16).to_be_bytes());
            v.extend_from_slice(d);
            seeds.push((format!("raw-{:02x}-{}", d[0], d.len()), v));
        }
    }
    // Captured datagrams replayed from the real addresses and strangers, mutated.
    for bucket in 0..6u8 {
        for (src, mutation) in [(0u8, 0u8), (2, 0), (4, 0), (0, 1), (0, 6), (2, 2)] {
            let v = vec![1, src, bucket, 3 + bucket, mutation, 0, 13, 0x41];
            seeds.push((format!("replay-b{bucket}-s{src}-m{mutation}"), v));
        }
    }
    // Binding requests: right ufrag unsigned (hijack attempt, USE-CANDIDATE),
    // signed from a stranger (rebinding), unknown ufrag, truncated.
    let stun = |src: u8, peer: u8, user: u8, sign: u8, flags: u8| {
        let mut v = vec![2, src, peer, user, sign];
        v.extend_from_slice(&[7; 12]);
        v.push(flags);
        v
    };
    seeds.push(("stun-hijack-unsigned".into(), stun(4, 0, 0, 0, 3)));
    seeds.push(("stun-signed-stranger".into(), stun(4, 1, 0, 1, 7)));
    seeds.push(("stun-unknown-ufrag".into(), stun(5, 0, 2, 1, 1)));
    seeds.push(("stun-truncated".into(), {
        let mut v = stun(0, 0, 0, 1, 16 | 1);
        v.push(9);
        v
    }));
    // SRTP-shaped with the publisher's SSRC from its real address, DTLS-shaped.
    seeds.push(("rtp-forged".into(), vec![3, 0, 0, 0, 96, 1, 2, 3, 20, 0xaa]));
    seeds.push(("rtcp-forged".into(), vec![3, 0, 0, 0, 200, 0, 0, 1, 4]));
    seeds.push(("dtls-forged".into(), vec![4, 4, 2, 1, 0, 30, 1, 2, 3]));
    write_seeds("datagram", &seeds);
}

/// Regenerates the `core_ops` seeds: typical lifecycles as operation tapes.
fn core_ops() {
    // Ops (see `wisp::fuzzing::core_ops`): 0 publish, 1 view, 2 delete,
    // 3 close room, 4 advance (arg, next byte: ms), 6 vanish, 7 datagram,
    // 8 trickle, 9 restart, 10 patch, 11 clock jump, 12 misc command.
    const ADV2S: [u8; 3] = [4, 0x07, 0xd0];
    const ADV8S: [u8; 3] = [4, 0x1f, 0x3f];
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "pub-view-delete",
            [&[1u8, 0, 0, 1, 0][..], &ADV2S, &[2, 1, 2, 0], &ADV2S].concat(),
        ),
        (
            "view-first",
            [
                &[2u8, 1, 0][..],
                &ADV2S,
                &[0, 0],
                &ADV2S,
                &[2, 1],
                &[0, 0],
                &ADV2S,
            ]
            .concat(),
        ),
        (
            "publisher-vanishes",
            [
                &[3u8, 0, 1, 1, 1][..],
                &ADV2S,
                &[6, 0],
                &ADV8S,
                &ADV8S,
                &ADV8S,
            ]
            .concat(),
        ),
        (
            "viewer-vanishes",
            [
                &[4u8, 0, 0, 1, 0][..],
                &ADV2S,
                &[6, 1],
                &ADV8S,
                &ADV8S,
                &ADV8S,
            ]
            .concat(),
        ),
        (
            "close-room",
            [&[5u8, 0, 0, 1, 0, 1, 0][..], &ADV2S, &[3, 0], &ADV2S].concat(),
        ),
        (
            "restart",
            [
                &[6u8, 0, 0, 1, 0][..],
                &ADV2S,
                &[9, 0, 3, 1, 2, 3, 0, 5, 0x13, 0x88],
                &ADV8S,
                &ADV8S,
            ]
            .concat(),
        ),
        (
            "trickle",
            [
                &[7u8, 1, 0][..],
                &[8, 0, 1, 0, 9, 0x13, 0x88],
                &[10, 0, 0, 2],
                &ADV2S,
            ]
            .concat(),
        ),
        (
            "clock-jump",
            [&[8u8, 0, 0, 1, 0][..], &ADV2S, &[11, 0], &ADV2S, &[11, 1]].concat(),
        ),
        (
            "datagrams",
            [
                &[9u8, 0, 0, 1, 0][..],
                &ADV2S,
                &[7, 0, 1, 1, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 3],
                &[7, 0x80, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8],
            ]
            .concat(),
        ),
        (
            "two-rooms",
            [
                &[10u8, 0, 0, 0, 1, 1, 0, 1, 1][..],
                &ADV2S,
                &[12, 0, 12, 1, 12, 2, 2, 0],
                &ADV2S,
                &[3, 1],
            ]
            .concat(),
        ),
        (
            "second-publisher",
            [
                &[11u8, 0, 0, 0, 0][..],
                &ADV2S,
                &[6, 0],
                &ADV8S,
                &ADV8S,
                &[0, 0],
                &ADV2S,
            ]
            .concat(),
        ),
    ];
    let seeds: Vec<_> = seeds.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
    write_seeds("core_ops", &seeds);
}

/// Regenerates the `str0m-*` seeds: offers built by real str0m clients.
fn sdp_offer() {
    use std::net::SocketAddr;
    use std::time::Instant;
    use str0m::media::{Direction, MediaKind, Simulcast, SimulcastLayer};
    use str0m::{Candidate, Rtc};

    use MediaKind::{Audio, Video};

    struct Seed {
        name: &'static str,
        /// First byte of the fuzz input: see `wisp::fuzzing::Plan`.
        ctl: u8,
        lines: &'static [(MediaKind, Direction)],
        candidate: bool,
        simulcast: bool,
        h264_only: bool,
    }
    const PUB: &[(MediaKind, Direction)] =
        &[(Audio, Direction::SendOnly), (Video, Direction::SendOnly)];
    const VIEW: &[(MediaKind, Direction)] =
        &[(Audio, Direction::RecvOnly), (Video, Direction::RecvOnly)];
    let seed = |name, ctl, lines, candidate| Seed {
        name,
        ctl,
        lines,
        candidate,
        simulcast: false,
        h264_only: false,
    };
    let seeds = [
        seed("str0m-publisher", 0x00, PUB, true),
        seed("str0m-publisher-timeout", 0x38, PUB, true),
        seed("str0m-viewer", 0x01, VIEW, true),
        seed("str0m-viewer-delete", 0x81, VIEW, false),
        seed(
            "str0m-sendrecv",
            0x06,
            &[(Audio, Direction::SendRecv), (Video, Direction::SendRecv)],
            true,
        ),
        seed(
            "str0m-video-first",
            0x02,
            &[(Video, Direction::SendOnly), (Audio, Direction::SendOnly)],
            true,
        ),
        seed(
            "str0m-audio-only",
            0x28,
            &[(Audio, Direction::SendOnly)],
            false,
        ),
        seed(
            "str0m-video-only",
            0x10,
            &[(Video, Direction::RecvOnly)],
            true,
        ),
        seed(
            "str0m-two-video",
            0x04,
            &[
                (Audio, Direction::SendOnly),
                (Video, Direction::SendOnly),
                (Video, Direction::SendOnly),
            ],
            true,
        ),
        seed(
            "str0m-inactive",
            0x00,
            &[(Audio, Direction::Inactive), (Video, Direction::Inactive)],
            true,
        ),
        Seed {
            simulcast: true,
            ..seed("str0m-simulcast", 0x46, PUB, true)
        },
        Seed {
            h264_only: true,
            ..seed("str0m-h264-only", 0xa0, PUB, false)
        },
    ];
    let mut out = vec![];
    for s in seeds {
        let now = Instant::now();
        let mut b = Rtc::builder();
        if s.h264_only {
            b = b.clear_codecs().enable_h264(true).enable_opus(true, false);
        }
        let mut rtc = b.build(now);
        if s.candidate {
            let addr = SocketAddr::from(([192, 0, 2, 7], 5007));
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        let mut api = rtc.sdp_api();
        for (kind, d) in s.lines {
            let sim = (s.simulcast && *kind == Video).then(|| {
                let mut sim = Simulcast::new();
                for rid in ["h", "m", "l"] {
                    sim.add_send_layer(SimulcastLayer::new(rid));
                }
                sim
            });
            api.add_media(*kind, *d, Some("wisp-seed".into()), None, sim);
        }
        let (offer, _pending) = api.apply().expect("offer");
        let mut data = vec![s.ctl];
        data.extend_from_slice(offer.to_sdp_string().as_bytes());
        out.push((s.name.to_string(), data));
    }
    write_seeds("sdp_offer", &out);
}

//! Hostile UDP against a core with live sessions (deterministic, TestNet):
//! garbage of every length and first-byte class, forged STUN, a hijack
//! attempt during setup, DTLS from an unvalidated address, a certificate
//! that does not match the offer's fingerprint, replayed SRTP and garbage
//! spoofed from real clients' addresses. Nothing gets a reply that did
//! not pass STUN integrity, no session ends, nothing unauthenticated is
//! forwarded, and the other sessions' counters keep moving.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{server_addr, TestNet};
use str0m::media::MediaKind;
use wisp::sfu::DropReason;

const ATTACKER: ([u8; 4], u16) = ([203, 0, 113, 66], 40000);

fn attacker() -> SocketAddr {
    SocketAddr::from(ATTACKER)
}

/// xorshift64*, seeded: the same garbage every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn attr(ice: &str, name: &str) -> String {
    ice.lines()
        .find_map(|l| l.trim_end().strip_prefix(name))
        .unwrap_or_default()
        .to_string()
}

/// A STUN Binding request: USERNAME, optional PRIORITY / USE-CANDIDATE /
/// ICE-CONTROLLING, MESSAGE-INTEGRITY keyed with `key`, FINGERPRINT-less.
fn binding(username: &str, key: &[u8], use_candidate: bool) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    b.extend_from_slice(&[0x5a; 12]);
    let push = |b: &mut Vec<u8>, t: u16, v: &[u8]| {
        b.extend_from_slice(&t.to_be_bytes());
        b.extend_from_slice(&(v.len() as u16).to_be_bytes());
        b.extend_from_slice(v);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
    };
    push(&mut b, 0x0006, username.as_bytes());
    push(&mut b, 0x0024, &0x6e7f_ffffu32.to_be_bytes());
    push(&mut b, 0x802A, &[9; 8]);
    if use_candidate {
        push(&mut b, 0x0025, &[]);
    }
    let len = (b.len() + 24 - 20) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = aws_lc_rs::hmac::sign(&k, &b);
    b.extend_from_slice(&0x0008u16.to_be_bytes());
    b.extend_from_slice(&20u16.to_be_bytes());
    b.extend_from_slice(tag.as_ref());
    b
}

/// A room with a connected publisher and viewer, plus a second room the
/// same, whose counters must keep moving. Returns (net, [p, v, p2, v2], usernames).
fn live() -> (TestNet, [usize; 4], Vec<String>) {
    let mut net = TestNet::new(66);
    let mut users = vec![];
    let mut join = |net: &mut TestNet, room: &str, publisher: bool| {
        let i = if publisher {
            net.publish(room)
        } else {
            net.view(room)
        };
        users.push(format!(
            "{}:{}",
            attr(&net.last_answer, "a=ice-ufrag:"),
            attr(&net.last_offer, "a=ice-ufrag:")
        ));
        i
    };
    let p = join(&mut net, "h", true);
    let v = join(&mut net, "h", false);
    let p2 = join(&mut net, "other", true);
    let v2 = join(&mut net, "other", false);
    net.run_for(Duration::from_secs(2));
    for i in [p, v, p2, v2] {
        assert!(net.connected(i), "client {i} connected");
    }
    (net, [p, v, p2, v2], users)
}

fn dropped_total(net: &TestNet) -> u64 {
    let s = net.sfu.stats();
    DropReason::ALL
        .iter()
        .filter(|r| !r.is_per_viewer())
        .map(|r| s.dropped(*r))
        .sum()
}

/// Sessions, rooms, tokens, ufrags: what foreign input must never change.
fn sessions(net: &TestNet) -> (usize, usize, usize, usize) {
    let c = net.sfu.counts();
    (c.sessions, c.rooms, c.tokens, c.ufrags)
}

#[test]
fn garbage_of_every_length_and_class_is_dropped_counted_and_unanswered() {
    let (mut net, [_, v, _, v2], _) = live();
    let before = sessions(&net);
    let got = (net.clients[v].got.len(), net.clients[v2].got.len());
    let mut rng = Rng(0x1234_5678);
    // One first byte from every RFC 7983 range, and the gaps between them.
    let firsts = [
        0u8, 1, 2, 3, 4, 19, 20, 22, 23, 63, 64, 79, 80, 127, 128, 144, 200, 191, 192, 255,
    ];
    let (mut sent, mut stun, mut other) = (0u64, 0u64, 0u64);
    let s0 = net.sfu.stats();
    let d0 = dropped_total(&net);
    for len in 0..=1500usize {
        for (k, &first) in firsts.iter().enumerate() {
            // Thin the sweep above 200 bytes: every length, not every class.
            if len > 200 && (len + k) % 5 != 0 {
                continue;
            }
            let mut b = rng.bytes(len);
            if let Some(x) = b.first_mut() {
                *x = first;
            }
            let from = SocketAddr::from(([203, 0, 113, (len % 200) as u8 + 1], 1024 + k as u16));
            let replies = net.inject(from, &b);
            assert!(replies.is_empty(), "{len} bytes starting {first}: a reply");
            sent += 1;
            if len > 0 && first <= 3 {
                stun += 1;
            } else {
                other += 1;
            }
        }
    }
    // 65,507 bytes, the largest UDP payload.
    for first in [0u8, 22, 128] {
        let mut b = rng.bytes(65_507);
        b[0] = first;
        assert!(net.inject(attacker(), &b).is_empty());
        sent += 1;
        if first == 0 {
            stun += 1;
        } else {
            other += 1;
        }
    }
    let s = net.sfu.stats();
    eprintln!("sent {sent} garbage datagrams ({stun} STUN-class)");
    assert_eq!(
        dropped_total(&net) - d0,
        sent,
        "every datagram counted once"
    );
    assert_eq!(
        s.dropped(DropReason::StunRejected) - s0.dropped(DropReason::StunRejected),
        stun
    );
    assert_eq!(
        s.dropped(DropReason::UnknownSource) - s0.dropped(DropReason::UnknownSource),
        other
    );
    assert_eq!(s.rtp_forwarded, s0.rtp_forwarded, "nothing forwarded");
    assert_eq!(sessions(&net), before);
    assert!(net.stray.is_empty(), "sent to {:?}", net.stray);
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[v].got.len() > got.0 + 50, "media keeps flowing");
    assert!(net.clients[v2].got.len() > got.1 + 50, "other room too");
    assert_eq!(net.sfu.stats().caught_panics, 0);
    net.assert_accounting();
}

#[test]
fn forged_stun_gets_no_reply_and_leaves_no_state() {
    let (mut net, [p, v, ..], users) = live();
    let before = sessions(&net);
    let addrs = net.sfu.counts().addrs;
    let good_user = &users[0];
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unknown ufrag",
            binding("nosuchufrag:abcd", b"whatever", true),
        ),
        (
            "right ufrag, wrong key",
            binding(good_user, b"wrong password", true),
        ),
        (
            "right ufrag, other session's key",
            binding(&users[1], b"x", false),
        ),
    ];
    let mut truncated = binding(good_user, b"wrong", true);
    truncated.truncate(truncated.len() - 7);
    cases.push(("truncated MESSAGE-INTEGRITY", truncated));
    let mut lying = binding(good_user, b"wrong", false);
    lying[2..4].copy_from_slice(&400u16.to_be_bytes());
    cases.push(("length field past the end", lying));
    let mut zero_attr = binding(good_user, b"wrong", false);
    zero_attr[22..24].copy_from_slice(&0u16.to_be_bytes());
    cases.push(("zero-length USERNAME", zero_attr));
    let mut header_only = binding(good_user, b"wrong", false);
    header_only.truncate(19);
    cases.push(("19 bytes", header_only));
    let mut no_mi = binding(good_user, b"k", false);
    no_mi.truncate(no_mi.len() - 24);
    let l = (no_mi.len() - 20) as u16;
    no_mi[2..4].copy_from_slice(&l.to_be_bytes());
    cases.push(("no MESSAGE-INTEGRITY", no_mi));
    let mut indication = binding(good_user, b"k", false);
    indication[1] = 0x11;
    cases.push(("binding indication", indication));
    let mut response = binding(good_user, b"k", false);
    response[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
    cases.push(("binding success response", response));
    for (what, b) in &cases {
        let d0 = net.sfu.stats().dropped(DropReason::StunRejected)
            + net.sfu.stats().dropped(DropReason::RtcError);
        for from in [attacker(), SocketAddr::from(([198, 51, 100, 1], 8189))] {
            let replies = net.inject(from, b);
            assert!(replies.is_empty(), "{what}: reply to {from}");
        }
        let d1 = net.sfu.stats().dropped(DropReason::StunRejected)
            + net.sfu.stats().dropped(DropReason::RtcError);
        assert_eq!(d1 - d0, 2, "{what}: dropped and counted");
        assert_eq!(net.sfu.counts().addrs, addrs, "{what}: address learnt");
        assert_eq!(sessions(&net), before, "{what}");
    }
    let got = net.clients[v].got.len();
    net.run_for(Duration::from_secs(1));
    assert!(net.stray.is_empty(), "sent to {:?}", net.stray);
    assert!(net.clients[v].got.len() > got + 50);
    assert!(net.connected(p));
}

#[test]
fn hijack_during_setup_is_ignored() {
    let mut net = TestNet::new(67);
    let p = net.publish("hj");
    let user = format!(
        "{}:{}",
        attr(&net.last_answer, "a=ice-ufrag:"),
        attr(&net.last_offer, "a=ice-ufrag:")
    );
    let v = net.view("hj");
    // Before the real client's first check arrives: the right USERNAME with
    // USE-CANDIDATE, but no valid integrity; repeated while ICE runs.
    let forged = binding(&user, b"guessed password", true);
    assert!(net.inject(attacker(), &forged).is_empty());
    for _ in 0..20 {
        net.run_for(Duration::from_millis(50));
        assert!(net.inject(attacker(), &forged).is_empty());
    }
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p) && net.connected(v));
    assert!(
        net.clients[v].got.len() > 50,
        "media flows to the real viewer"
    );
    assert!(
        net.stray.is_empty(),
        "media or replies went to {:?}",
        net.stray
    );
    assert_eq!(
        net.sfu.counts().addrs,
        2,
        "only the real addresses are known"
    );
}

#[test]
fn dtls_from_an_address_ice_never_validated_is_dropped() {
    let mut net = TestNet::new(68);
    net.tap = Some(vec![]);
    // A ClientHello-shaped record before anyone connects, then every real
    // DTLS datagram of the handshake replayed from a stranger.
    let mut hello = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0, 48];
    hello.resize(17 + 48, 0x33);
    let p = net.publish("d");
    let u0 = net.sfu.stats().dropped(DropReason::UnknownSource);
    assert!(net.inject(attacker(), &hello).is_empty());
    assert_eq!(net.sfu.stats().dropped(DropReason::UnknownSource), u0 + 1);
    let v = net.view("d");
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(p) && net.connected(v));
    let dtls: Vec<Vec<u8>> = net
        .tap
        .take()
        .unwrap()
        .into_iter()
        .filter(|d| d.to == server_addr() && (20..=63).contains(&d.bytes[0]))
        .map(|d| d.bytes)
        .collect();
    assert!(dtls.len() >= 4, "handshake captured: {}", dtls.len());
    let u0 = net.sfu.stats().dropped(DropReason::UnknownSource);
    for b in &dtls {
        assert!(net.inject(attacker(), b).is_empty());
    }
    assert_eq!(
        net.sfu.stats().dropped(DropReason::UnknownSource),
        u0 + dtls.len() as u64
    );
    let got = net.clients[v].got.len();
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[v].got.len() > got + 50);
    assert!(net.stray.is_empty());
}

#[test]
fn replayed_srtp_from_the_real_address_is_not_forwarded_again() {
    let (mut net, [p, v, _, v2], _) = live();
    net.tap = Some(vec![]);
    net.run_for(Duration::from_secs(1));
    net.media_on = false;
    net.run_for(Duration::from_millis(300));
    let paddr = net.clients[p].addr;
    let captured: Vec<Vec<u8>> = net
        .tap
        .take()
        .unwrap()
        .into_iter()
        .filter(|d| d.from == paddr && (128..=191).contains(&d.bytes[0]))
        .map(|d| d.bytes)
        .collect();
    assert!(captured.len() > 100, "captured {}", captured.len());
    let forwarded = net.sfu.stats().rtp_forwarded;
    let got = net.clients[v].got.len();
    for b in &captured {
        net.send_raw(paddr, b.clone());
    }
    net.run_for(Duration::from_millis(500));
    assert_eq!(
        net.sfu.stats().rtp_forwarded,
        forwarded,
        "replayed SRTP was forwarded"
    );
    assert_eq!(net.clients[v].got.len(), got, "the viewer got replays");
    // Each payload exactly once.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let c = net.counters(v, kind);
        let unique: HashSet<u64> = c.iter().copied().collect();
        assert_eq!(unique.len(), c.len(), "{kind:?}: duplicate payloads");
    }
    net.media_on = true;
    let (g, g2) = (net.clients[v].got.len(), net.clients[v2].got.len());
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[v].got.len() > g + 50, "media resumes");
    assert!(net.clients[v2].got.len() > g2 + 50);
    assert_eq!(net.sfu.counts().sessions, 4);
}

#[test]
fn garbage_from_a_real_clients_address_does_not_end_its_session() {
    let (mut net, [p, v, _, v2], _) = live();
    let before = sessions(&net);
    let mut rng = Rng(99);
    let (paddr, vaddr) = (net.clients[p].addr, net.clients[v].addr);
    let mut sent = 0;
    for round in 0..40 {
        for from in [paddr, vaddr] {
            for first in [0u8, 1, 20, 21, 22, 23, 128, 144, 200, 201, 205, 206] {
                let len = 1 + (rng.next() % 1200) as usize;
                let mut b = rng.bytes(len);
                b[0] = first;
                if first == 22 && len > 3 {
                    // A plausible DTLS 1.2 record header at epoch 0 and 1.
                    b[1] = 0xfe;
                    b[2] = 0xfd;
                }
                // Nothing goes back except, possibly, to the real client.
                for r in net.inject(from, &b) {
                    assert!(!r.is_empty());
                }
                sent += 1;
            }
        }
        let g = (net.clients[v].got.len(), net.clients[v2].got.len());
        net.run_for(Duration::from_millis(100));
        assert!(
            net.clients[v].got.len() > g.0 && net.clients[v2].got.len() > g.1,
            "round {round}: media stopped"
        );
    }
    eprintln!("{sent} garbage datagrams from real addresses");
    assert_eq!(sessions(&net), before, "a session ended");
    assert_eq!(net.sfu.stats().caught_panics, 0);
    assert!(net.stray.is_empty());
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let c = net.counters(v, kind);
        let unique: HashSet<u64> = c.iter().copied().collect();
        assert_eq!(unique.len(), c.len(), "{kind:?}: duplicates");
    }
    net.assert_accounting();
}

/// The offer's fingerprint is not the client's certificate's: the server
/// must not complete DTLS, must forward nothing to that peer, and must end
/// the session (measured: 25 ms, at the first DTLS flight).
#[test]
fn a_certificate_that_does_not_match_the_offer_fingerprint_is_refused() {
    fn wrong_fingerprint(offer: String) -> String {
        offer
            .lines()
            .map(|l| match l.strip_prefix("a=fingerprint:sha-256 ") {
                // Same shape, other digest.
                Some(hex) => format!(
                    "a=fingerprint:sha-256 {}",
                    hex.chars()
                        .map(|c| match c {
                            '0'..='8' => ((c as u8) + 1) as char,
                            '9' => '0',
                            c => c,
                        })
                        .collect::<String>()
                ),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    }
    let mut net = TestNet::new(69);
    let p = net.publish("fp");
    net.run_for(Duration::from_secs(1));
    let opts = common::JoinOpts {
        mangle: Some(wrong_fingerprint),
        ..Default::default()
    };
    assert!(net.last_offer.contains("a=fingerprint:sha-256 "));
    let v = net
        .join_opts(
            "fp",
            false,
            &[
                (MediaKind::Audio, str0m::media::Direction::RecvOnly),
                (MediaKind::Video, str0m::media::Direction::RecvOnly),
            ],
            &opts,
        )
        .expect("the offer itself is well-formed");
    let t0 = net.now;
    let ended = net.run_until(Duration::from_secs(20), |n| n.sfu.counts().sessions == 1);
    eprintln!(
        "mismatched fingerprint: session ended {ended} after {:?}; viewer got {}",
        net.now - t0,
        net.clients[v].got.len()
    );
    assert!(ended, "the session with a wrong certificate never ended");
    assert!(
        net.clients[v].got.is_empty(),
        "media reached a peer with a wrong certificate"
    );
    assert!(net.connected(p));
    assert_eq!(net.sfu.stats().sessions_connected, [1, 0]);
    net.run_for(Duration::from_secs(1));
    assert!(net.clients[v].got.is_empty());
}

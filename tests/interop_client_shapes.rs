//! Offers shaped like the real WHIP/WHEP clients (OBS, FFmpeg, GStreamer, browsers; see the README's Interoperability table),
//! driven through the core with real str0m peers. Each case is one test.

mod common;

use std::time::Duration;

use common::{JoinOpts, TestNet};
use str0m::media::{Direction, MediaKind};
use wisp::sfu::{ApiError, Reply};

const AV_SEND: &[(MediaKind, Direction)] = &[
    (MediaKind::Audio, Direction::SendOnly),
    (MediaKind::Video, Direction::SendOnly),
];
const AV_RECV: &[(MediaKind, Direction)] = &[
    (MediaKind::Audio, Direction::RecvOnly),
    (MediaKind::Video, Direction::RecvOnly),
];

/// Publisher `p` and viewer `v` are connected and `v` receives audio and video.
fn assert_media_flows(net: &mut TestNet, p: usize, v: usize) {
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)),
        "connect"
    );
    net.run_for(Duration::from_secs(2));
    let video = net.counters(v, MediaKind::Video).len();
    let audio = net.counters(v, MediaKind::Audio).len();
    assert!(video > 50 && audio > 20, "video {video} audio {audio}");
}

#[test]
fn obs_offer_without_candidates_learns_the_peer_reflexive_address() {
    let mut net = TestNet::new(20);
    let opts = JoinOpts {
        candidate_in_offer: false,
        ..JoinOpts::default()
    };
    let p = net.join_opts("obs", true, AV_SEND, &opts).unwrap();
    assert!(!net.last_offer.contains("a=candidate"));
    let v = net.join_opts("obs", false, AV_RECV, &opts).unwrap();
    assert_media_flows(&mut net, p, v);
}

#[test]
fn video_m_line_first() {
    let mut net = TestNet::new(21);
    let p = net
        .join(
            "vf",
            true,
            &[
                (MediaKind::Video, Direction::SendOnly),
                (MediaKind::Audio, Direction::SendOnly),
            ],
        )
        .unwrap();
    let v = net
        .join(
            "vf",
            false,
            &[
                (MediaKind::Video, Direction::RecvOnly),
                (MediaKind::Audio, Direction::RecvOnly),
            ],
        )
        .unwrap();
    assert_media_flows(&mut net, p, v);
}

fn upper_case_codecs(offer: String) -> String {
    offer
        .lines()
        .map(|l| match l.strip_prefix("a=rtpmap:") {
            Some(rest) => format!("a=rtpmap:{}", rest.to_uppercase()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

#[test]
fn upper_case_codec_names_gstreamer() {
    let mut net = TestNet::new(22);
    let opts = JoinOpts {
        mangle: Some(upper_case_codecs),
        ..JoinOpts::default()
    };
    let p = net.join_opts("gst", true, AV_SEND, &opts).unwrap();
    assert!(net.last_offer.contains("OPUS/48000/2"));
    let v = net.join_opts("gst", false, AV_RECV, &opts).unwrap();
    assert_media_flows(&mut net, p, v);
}

/// GStreamer: the second m-line has port 0 and `a=bundle-only`.
fn bundle_only_second(offer: String) -> String {
    let mut seen = 0;
    let mut out = String::new();
    for l in offer.lines() {
        if l.starts_with("m=") {
            seen += 1;
            if seen == 2 {
                let mut parts: Vec<&str> = l.split(' ').collect();
                parts[1] = "0";
                out.push_str(&parts.join(" "));
                out.push_str("\r\n");
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
        if seen == 2 && l.starts_with("c=") {
            out.push_str("a=bundle-only\r\n");
        }
    }
    out
}

#[test]
fn bundle_only_second_m_line() {
    let mut net = TestNet::new(23);
    let opts = JoinOpts {
        mangle: Some(bundle_only_second),
        ..JoinOpts::default()
    };
    let p = net.join_opts("bo", true, AV_SEND, &opts).unwrap();
    assert!(net.last_offer.contains("a=bundle-only"));
    let v = net.join("bo", false, AV_RECV).unwrap();
    assert_media_flows(&mut net, p, v);
}

fn strip_bundle(offer: String) -> String {
    offer
        .lines()
        .filter(|l| !l.starts_with("a=group:BUNDLE"))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

#[test]
fn non_bundle_offer_is_refused_cleanly() {
    let mut net = TestNet::new(24);
    let opts = JoinOpts {
        mangle: Some(strip_bundle),
        ..JoinOpts::default()
    };
    let r = net.join_opts("nb", true, AV_SEND, &opts);
    assert!(matches!(r, Err(ApiError::Unsupported(_))), "{r:?}");
    assert_eq!(net.sfu.counts().sessions, 0);
    assert_eq!(net.sfu.room_count(), 0);
}

#[test]
fn two_video_tracks_are_refused_with_a_reason() {
    let mut net = TestNet::new(25);
    let r = net.join(
        "two",
        true,
        &[
            (MediaKind::Video, Direction::SendOnly),
            (MediaKind::Video, Direction::SendOnly),
        ],
    );
    match r {
        Err(ApiError::Unsupported(reason)) => assert!(reason.contains("video"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(net.sfu.counts().sessions, 0);
    let r = net.join(
        "two",
        false,
        &[
            (MediaKind::Audio, Direction::RecvOnly),
            (MediaKind::Audio, Direction::RecvOnly),
        ],
    );
    assert!(matches!(r, Err(ApiError::Unsupported(_))));
}

#[test]
fn answers_are_bundled_mux_only_and_end_candidates() {
    let mut net = TestNet::new(26);
    net.publish("ans");
    let a = net.last_answer.clone();
    assert!(a.contains("a=group:BUNDLE"), "{a}");
    let m = a.matches("\r\nm=").count();
    assert_eq!(a.matches("a=rtcp-mux-only").count(), m, "{a}");
    assert!(a.contains("a=end-of-candidates"), "{a}");
    assert!(a.contains("a=ice-lite"), "{a}");
    assert!(net.last_etag.starts_with('"') && net.last_etag.ends_with('"'));
}

fn candidate_line(net: &TestNet, i: usize) -> String {
    let a = net.clients[i].addr;
    format!(
        "a=candidate:1 1 udp 2130706431 {} {} typ host",
        a.ip(),
        a.port()
    )
}

#[test]
fn trickle_patch_rules() {
    let mut net = TestNet::new(27);
    let opts = JoinOpts {
        candidate_in_offer: false,
        ..JoinOpts::default()
    };
    let p = net.join_opts("tr", true, AV_SEND, &opts).unwrap();
    let etag = net.last_etag.clone();
    let ufrag = wisp::sfu::sdp::attr(&net.last_offer, "ice-ufrag")
        .unwrap()
        .to_string();
    let cand = candidate_line(&net, p);
    let one =
        format!("a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n{cand}\r\n");

    assert_eq!(
        net.patch(p, None, &one).err(),
        Some(ApiError::PreconditionRequired)
    );
    assert_eq!(
        net.patch(p, Some("\"stale\""), &one).err(),
        Some(ApiError::PreconditionFailed)
    );
    assert!(matches!(
        net.patch(p, Some("garbage-body"), "hello"),
        Err(ApiError::PreconditionFailed)
    ));
    assert!(matches!(
        net.patch(p, Some(&etag), "hello"),
        Err(ApiError::BadFragment(_))
    ));
    assert!(matches!(
        net.patch(p, Some(&etag), "a=candidate:not a candidate\r\n"),
        Err(ApiError::BadFragment(_))
    ));
    // All candidates in one PATCH, then one per candidate, then end-of-candidates alone.
    for (tag, body) in [
        (etag.as_str(), one.clone()),
        ("*", format!("{cand}\r\n")),
        ("\"*\"", "a=end-of-candidates\r\n".to_string()),
        (
            etag.as_str(),
            "a=candidate:2 1 udp 2130706431 3f1e2d.local 5000 typ host\r\n".to_string(),
        ),
    ] {
        match net.patch(p, Some(tag), &body) {
            Ok(Reply::Patched {
                fragment: None,
                etag: None,
            }) => {}
            other => panic!("{tag} {body:?}: {other:?}"),
        }
    }
    // The session survived every bad PATCH.
    let v = net.view("tr");
    assert_media_flows(&mut net, p, v);
}

#[test]
fn ice_restart_via_patch_restores_media() {
    let mut net = TestNet::new(28);
    let p = net.publish("ir");
    let v = net.view("ir");
    assert_media_flows(&mut net, p, v);
    let etag = net.last_etag.clone();
    let old_answer = net.last_answer.clone();
    let old_ufrag = wisp::sfu::sdp::attr(&old_answer, "ice-ufrag")
        .unwrap()
        .to_string();

    // The viewer restarts ICE (new network): new ufrag/pwd, sent with If-Match: "*".
    let (frag, pending) = net.ice_restart_frag(v);
    let (server_frag, new_etag) = match net.patch(v, Some("*"), &frag) {
        Ok(Reply::Patched {
            fragment: Some(f),
            etag: Some(e),
        }) => (f, e),
        other => panic!("{other:?}"),
    };
    assert_ne!(new_etag, etag);
    let new_ufrag = wisp::sfu::sdp::attr(&server_frag, "ice-ufrag")
        .unwrap()
        .to_string();
    assert_ne!(new_ufrag, old_ufrag);
    assert!(
        server_frag.contains("a=candidate:") && server_frag.contains("a=ice-lite"),
        "{server_frag}"
    );

    // The client applies the server's new credentials as its answer.
    net.accept_ice_restart(v, pending, &old_answer, &server_frag);

    let got = net.video_during(v, Duration::from_secs(3));
    assert!(got > 50, "media after restart: {got} video packets in 3 s");
    // The old ETag is now stale.
    assert_eq!(
        net.patch(v, Some(&etag), "a=end-of-candidates\r\n").err(),
        Some(ApiError::PreconditionFailed)
    );
}

/// FFmpeg 8's WHIP muxer: Binding requests with USERNAME, USE-CANDIDATE,
/// MESSAGE-INTEGRITY and FINGERPRINT only (no PRIORITY, no ICE-CONTROLLING).
fn ffmpeg_binding_request(server_ufrag: &str, client_ufrag: &str, pwd: &str) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&[7u8; 12]);
    let user = format!("{server_ufrag}:{client_ufrag}");
    b.extend_from_slice(&0x0006u16.to_be_bytes());
    b.extend_from_slice(&(user.len() as u16).to_be_bytes());
    b.extend_from_slice(user.as_bytes());
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&0x0025u16.to_be_bytes()); // USE-CANDIDATE
    b.extend_from_slice(&0u16.to_be_bytes());
    let len = (b.len() - 20 + 24) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        pwd.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, &b);
    b.extend_from_slice(&0x0008u16.to_be_bytes());
    b.extend_from_slice(&20u16.to_be_bytes());
    b.extend_from_slice(tag.as_ref());
    let len = (b.len() - 20 + 8) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    let mut crc = 0xffff_ffffu32;
    for &x in &b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    b.extend_from_slice(&0x8028u16.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&((!crc) ^ 0x5354_554e).to_be_bytes());
    b
}

#[test]
fn ffmpeg_binding_request_without_priority_is_answered() {
    let mut net = TestNet::new(29);
    let _p = net.publish("ff");
    let answer = net.last_answer.clone();
    let ufrag = wisp::sfu::sdp::attr(&answer, "ice-ufrag")
        .unwrap()
        .to_string();
    let pwd = wisp::sfu::sdp::attr(&answer, "ice-pwd")
        .unwrap()
        .to_string();
    let client_ufrag = wisp::sfu::sdp::attr(&net.last_offer, "ice-ufrag")
        .unwrap()
        .to_string();
    let from = std::net::SocketAddr::from(([192, 0, 2, 99], 6000));

    // Wrong password: dropped without a reply (no amplification, no laundering).
    let bad = ffmpeg_binding_request(&ufrag, &client_ufrag, "not-the-password");
    assert!(net.inject(from, &bad).is_empty());

    let req = ffmpeg_binding_request(&ufrag, &client_ufrag, &pwd);
    let replies = net.inject(from, &req);
    assert_eq!(replies.len(), 1, "one Binding success response");
    let r = &replies[0];
    assert_eq!(&r[0..2], &[0x01, 0x01], "Binding success");
    assert_eq!(&r[8..20], &[7u8; 12], "same transaction id");
}

#[test]
fn h264_viewer_gets_only_a_profile_it_negotiated() {
    fn h264_only(b: str0m::RtcConfig) -> str0m::RtcConfig {
        b.clear_codecs().enable_h264(true).enable_opus(true, false)
    }
    fn vp8_only(b: str0m::RtcConfig) -> str0m::RtcConfig {
        b.clear_codecs().enable_vp8(true).enable_opus(true, false)
    }
    let mut net = TestNet::new(30);
    let h264 = JoinOpts {
        config: Some(h264_only),
        ..JoinOpts::default()
    };
    let vp8 = JoinOpts {
        config: Some(vp8_only),
        ..JoinOpts::default()
    };
    let p = net.join_opts("h", true, AV_SEND, &h264).unwrap();
    let v_h264 = net.join_opts("h", false, AV_RECV, &h264).unwrap();
    let v_vp8 = net.join_opts("h", false, AV_RECV, &vp8).unwrap();
    assert_media_flows(&mut net, p, v_h264);
    // The VP8-only viewer gets audio but no video, and the drop is counted.
    assert!(net.counters(v_vp8, MediaKind::Audio).len() > 20);
    assert!(net.counters(v_vp8, MediaKind::Video).is_empty());
    let dropped = net
        .sfu
        .stats()
        .dropped(wisp::sfu::DropReason::CodecNotNegotiated);
    assert!(dropped > 50, "counted drops: {dropped}");
    net.assert_accounting();
}

#[test]
fn opus_stereo_is_offered_in_answers() {
    let mut net = TestNet::new(31);
    net.publish("st");
    assert!(net.last_answer.contains("stereo=1"), "{}", net.last_answer);
    net.view("st");
    assert!(net.last_answer.contains("stereo=1"), "{}", net.last_answer);
}

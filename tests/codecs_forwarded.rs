//! Every video codec wisp negotiates is forwarded when publisher and viewer
//! both offer it: VP8, VP9, AV1 and H.264, each with its keyframe gate.

mod common;

use std::time::Duration;

use common::{vp9_profile, JoinOpts, TestNet};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};

fn only(codec: Codec) -> fn(str0m::RtcConfig) -> str0m::RtcConfig {
    match codec {
        Codec::Vp8 => |b| b.clear_codecs().enable_vp8(true).enable_opus(true, false),
        Codec::Vp9 => |b| b.clear_codecs().enable_vp9(true).enable_opus(true, false),
        Codec::Av1 => |b| b.clear_codecs().enable_av1(true).enable_opus(true, false),
        _ => |b| b.clear_codecs().enable_h264(true).enable_opus(true, false),
    }
}

#[test]
fn vp8_vp9_av1_and_h264_are_forwarded() {
    for (seed, codec) in [
        (60, Codec::Vp8),
        (61, Codec::Vp9),
        (62, Codec::Av1),
        (63, Codec::H264),
    ] {
        let mut net = TestNet::new(seed);
        let opts = JoinOpts {
            config: Some(only(codec)),
            ..JoinOpts::default()
        };
        let p = net
            .join_opts(
                "c",
                true,
                &[
                    (MediaKind::Audio, Direction::SendOnly),
                    (MediaKind::Video, Direction::SendOnly),
                ],
                &opts,
            )
            .unwrap();
        let v = net
            .join_opts(
                "c",
                false,
                &[
                    (MediaKind::Audio, Direction::RecvOnly),
                    (MediaKind::Video, Direction::RecvOnly),
                ],
                &opts,
            )
            .unwrap();
        assert!(net.run_until(Duration::from_secs(5), |n| n.connected(p) && n.connected(v)));
        net.run_for(Duration::from_secs(2));
        let video = net.counters(v, MediaKind::Video);
        let rooms = net.sfu.list_rooms(net.now);
        let track = rooms[0].tracks.iter().find(|t| t.kind == "video").unwrap();
        eprintln!(
            "{codec}: viewer got {} video packets (track codec {})",
            video.len(),
            track.codec
        );
        assert_eq!(track.codec, codec.to_string());
        assert!(video.len() > 100, "{codec}: {} packets", video.len());
        assert!(video.windows(2).all(|w| w[1] > w[0]), "{codec}: in order");
        net.assert_accounting();
    }
}

fn h264_profile(b: str0m::RtcConfig, profile_level_id: u32) -> str0m::RtcConfig {
    let mut b = b.clear_codecs().enable_opus(true, false);
    b.codec_config()
        .add_h264(102.into(), Some(103.into()), true, profile_level_id);
    b
}

/// H.264 `profile-level-id` between publisher and viewer: the same profile at
/// another level is forwarded (the level is negotiable, RFC 6184 §8.2.2);
/// another profile is a counted drop, never silent black video.
#[test]
fn h264_profiles_forward_when_the_viewer_can_decode() {
    let mut net = TestNet::new(64);
    let av = |d| [(MediaKind::Audio, d), (MediaKind::Video, d)];
    let publisher = JoinOpts {
        // Constrained baseline, level 3.1 (what OBS announces).
        config: Some(|b| h264_profile(b, 0x42e01f)),
        ..JoinOpts::default()
    };
    let same_profile_other_level = JoinOpts {
        config: Some(|b| h264_profile(b, 0x42e00c)),
        ..JoinOpts::default()
    };
    let high_only = JoinOpts {
        config: Some(|b| h264_profile(b, 0x64001f)),
        ..JoinOpts::default()
    };
    let p = net
        .join_opts("h", true, &av(Direction::SendOnly), &publisher)
        .unwrap();
    let ok = net
        .join_opts(
            "h",
            false,
            &av(Direction::RecvOnly),
            &same_profile_other_level,
        )
        .unwrap();
    let high = net
        .join_opts("h", false, &av(Direction::RecvOnly), &high_only)
        .unwrap();
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.connected(p) && n.connected(ok) && n.connected(high)
    }));
    net.run_for(Duration::from_secs(2));
    let got_ok = net.counters(ok, MediaKind::Video).len();
    let got_high = net.counters(high, MediaKind::Video).len();
    let dropped = net
        .sfu
        .stats()
        .dropped(wisp::sfu::DropReason::CodecNotNegotiated);
    eprintln!(
        "H.264 42e01f publisher: 42e00c viewer got {got_ok} video packets; \
         64001f viewer got {got_high}, {dropped} drops counted"
    );
    assert!(got_ok > 100);
    assert_eq!(got_high, 0);
    assert!(dropped > 100);
    assert!(
        net.counters(high, MediaKind::Audio).len() > 20,
        "audio still flows"
    );
    net.assert_accounting();
}

/// VP9 `profile-id` (RFC 9628 §6): a profile 2 (10-bit) publisher reaches a
/// viewer that accepts profile 2; a viewer that accepts only profile 0 gets a
/// counted drop, never a stream it cannot decode.
#[test]
fn vp9_profile_2_forwards_only_to_viewers_that_accept_it() {
    let mut net = TestNet::new(65);
    let av = |d| [(MediaKind::Audio, d), (MediaKind::Video, d)];
    let profile = |f| JoinOpts {
        config: Some(f),
        ..JoinOpts::default()
    };
    let p = net
        .join_opts(
            "v",
            true,
            &av(Direction::SendOnly),
            &profile(|b| vp9_profile(b, 2)),
        )
        .unwrap();
    let p2 = net
        .join_opts(
            "v",
            false,
            &av(Direction::RecvOnly),
            &profile(|b| vp9_profile(b, 2)),
        )
        .unwrap();
    let p0 = net
        .join_opts(
            "v",
            false,
            &av(Direction::RecvOnly),
            &profile(|b| vp9_profile(b, 0)),
        )
        .unwrap();
    // A browser offering both profiles.
    let both = net.view("v");
    assert!(net.run_until(Duration::from_secs(5), |n| {
        [p, p2, p0, both].iter().all(|c| n.connected(*c))
    }));
    net.run_for(Duration::from_secs(2));
    let got = |i: usize| net.counters(i, MediaKind::Video).len();
    let profile_of = |i: usize| {
        let c = &net.clients[i];
        let g = c.got.iter().find(|g| g.kind == MediaKind::Video)?;
        let params = c.rtc.codec_config().find(|x| x.pt() == g.pt)?;
        Some((params.spec().codec, params.spec().format.profile_id))
    };
    let dropped = net
        .sfu
        .stats()
        .dropped(wisp::sfu::DropReason::CodecNotNegotiated);
    eprintln!(
        "VP9 profile 2 publisher: profile 2 viewer got {} video packets ({:?}), \
         profile 0+2 viewer {} ({:?}), profile 0 viewer {}; {dropped} drops counted",
        got(p2),
        profile_of(p2),
        got(both),
        profile_of(both),
        got(p0)
    );
    assert!(got(p2) > 100);
    assert_eq!(profile_of(p2), Some((Codec::Vp9, Some(2))));
    assert!(got(both) > 100);
    assert_eq!(profile_of(both), Some((Codec::Vp9, Some(2))));
    assert_eq!(got(p0), 0);
    assert!(dropped > 100);
    assert!(
        net.counters(p0, MediaKind::Audio).len() > 20,
        "audio still flows"
    );
    net.assert_accounting();
}

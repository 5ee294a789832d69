//! Every video codec wisp negotiates is forwarded when publisher and viewer
//! both offer it: VP8, VP9, AV1 and H.264, each with its keyframe gate.

mod common;

use std::time::Duration;

use common::{JoinOpts, TestNet};
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

//! Runs the fuzz body over every seed in `fuzz/corpus/sdp_offer/` on stable,
//! so CI exercises what `cargo fuzz run sdp_offer` does without nightly.

use std::path::Path;

#[test]
fn sdp_offer_corpus() {
    // `RUST_LOG=info` shows what the core made of each seed.
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp_offer");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "seed corpus too small: {}", files.len());
    for f in &files {
        let data = std::fs::read(f).expect("read seed");
        eprintln!("seed {}", f.display());
        wisp::fuzzing::sdp_offer(&data);
    }
}

/// Regenerates the `str0m-*` seeds: offers built by real str0m clients.
/// Run with `cargo test --test fuzz_smoke -- --ignored dump_str0m_offers`.
#[test]
#[ignore = "writes the seed corpus"]
fn dump_str0m_offers() {
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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp_offer");
    std::fs::create_dir_all(&dir).unwrap();
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
        std::fs::write(dir.join(s.name), data).unwrap();
    }
}

//! Recording through the real binary: a str0m publisher sends a real VP8 + Opus
//! clip (encoded by ffmpeg) over loopback in real time; the files must decode
//! with ffmpeg, hold every frame after SIGTERM, and all but at most the last
//! second after SIGKILL.

mod media;
mod realnet;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use media::*;
use realnet::*;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};

/// Frames of the clip `encode` makes (30 fps).
const CLIP_FRAMES: usize = 90;

struct Clip {
    video: Vec<Rtp>,
    /// Index in `video` where each frame starts.
    frame_start: Vec<usize>,
    audio: Vec<Vec<u8>>,
}

fn clip(dir: &Path) -> Clip {
    let vp8 = encode(dir, "vp8");
    let frames = ivf_frames(&fs::read(vp8).unwrap());
    assert_eq!(frames.len(), CLIP_FRAMES);
    let (video, frame_start) = packetize(&frames, "vp8", 3000);
    let audio = opus_packets(&encode(dir, "opus"));
    Clip {
        video,
        frame_start,
        audio,
    }
}

/// Connect a publisher and send the clip in real time, `frames` video frames
/// (and the audio packets of the same span). Returns the publisher and server.
fn publish_clip(server: &Server, clip: &Clip, frames: usize) -> (Peer, usize) {
    let mut publisher = Peer::new(server, "/whip/rec", Direction::SendOnly);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publisher.connected {
        assert!(Instant::now() < deadline, "publisher did not connect");
        publisher.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    let start = Instant::now();
    let mut next_audio = 0;
    for f in 0..frames {
        let at = start + Duration::from_millis(f as u64 * 1000 / 30);
        while Instant::now() < at {
            publisher.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        let end = clip
            .frame_start
            .get(f + 1)
            .copied()
            .unwrap_or(clip.video.len());
        for (seq, ts, marker, payload) in &clip.video[clip.frame_start[f]..end] {
            publisher.send_rtp(
                MediaKind::Video,
                Codec::Vp8,
                *seq,
                *ts,
                *marker,
                payload.clone(),
            );
        }
        // Opus: one 20 ms packet per 20 ms of video time.
        while next_audio < clip.audio.len() && next_audio * 20 <= f * 1000 / 30 {
            let p = clip.audio[next_audio].clone();
            publisher.send_rtp(
                MediaKind::Audio,
                Codec::Opus,
                1 + next_audio as u64,
                next_audio as u32 * 960,
                true,
                p,
            );
            next_audio += 1;
        }
    }
    // Let the last datagrams reach the server.
    for _ in 0..50 {
        publisher.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    (publisher, next_audio)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let room = dir.join("rec");
    let mut v: Vec<PathBuf> = fs::read_dir(room)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v
}

fn kill(server: &mut Server, signal: &str) -> Duration {
    let pid = server.child.id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "still running after {signal}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

#[test]
fn sigterm_finalises_files_holding_every_frame() {
    if !have_ffmpeg() {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let dir = tmpdir("e2e-term");
    let clip = clip(&dir);
    let rec = dir.join("out");
    let mut server = start_server_with(&[("WISP_RECORD_DIR", rec.to_str().unwrap())]);
    let (_p, audio_sent) = publish_clip(&server, &clip, CLIP_FRAMES);
    let took = kill(&mut server, "-TERM");

    let ivf = files(&rec, "ivf");
    let ogg = files(&rec, "ogg");
    assert_eq!((ivf.len(), ogg.len()), (1, 1), "{ivf:?} {ogg:?}");
    let v = probe(&ivf[0]);
    let a = probe(&ogg[0]);
    eprintln!(
        "SIGTERM after {} ms: video {} frames {}x{} (sent {CLIP_FRAMES}), audio ends at {:.2} s (sent {audio_sent} packets = {:.2} s)",
        took.as_millis(),
        v.frames,
        v.width,
        v.height,
        a.end,
        audio_sent as f64 * 0.02
    );
    assert_eq!((v.codec.as_str(), v.width, v.height), ("vp8", 320, 240));
    assert_eq!(v.frames, CLIP_FRAMES as u64, "every frame recorded");
    assert_eq!(a.codec, "opus");
    // The Ogg pre-skip (80 ms) hides the start of the first packets.
    let expected = audio_sent as f64 * 0.02 - 0.08;
    assert!(
        (a.end - expected).abs() < 0.05,
        "audio ends at {} s, expected {expected}",
        a.end
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn sigkill_loses_at_most_the_last_second() {
    if !have_ffmpeg() {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let dir = tmpdir("e2e-kill");
    let clip = clip(&dir);
    let rec = dir.join("out");
    let mut server = start_server_with(&[("WISP_RECORD_DIR", rec.to_str().unwrap())]);
    // 2.5 s of media, then SIGKILL: no shutdown code runs.
    let sent = 75;
    let (_p, _) = publish_clip(&server, &clip, sent);
    kill(&mut server, "-KILL");

    let ivf = files(&rec, "ivf");
    assert_eq!(ivf.len(), 1);
    let v = probe(&ivf[0]);
    let sent_s = sent as f64 / 30.0;
    let kept_s = v.frames as f64 / 30.0;
    eprintln!(
        "SIGKILL: sent {sent} frames ({sent_s:.2} s), file decodes {} frames ({kept_s:.2} s): lost {:.2} s",
        v.frames,
        sent_s - kept_s
    );
    assert!(sent_s - kept_s <= 1.0, "lost more than 1 s");
    if let Some(ogg) = files(&rec, "ogg").first() {
        let a = probe(ogg);
        eprintln!("SIGKILL: audio decodes to {:.2} s of {sent_s:.2} s", a.end);
        assert!(sent_s - a.end <= 1.0 + 0.1, "audio lost more than 1 s");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_recording_never_stops_forwarding() {
    str0m::crypto::from_feature_flags().install_process_default();
    let dir = tmpdir("e2e-fail");
    let rec = dir.join("out");
    fs::create_dir_all(&rec).unwrap();
    // The room's directory cannot be created: a regular file has its name.
    fs::write(rec.join("rec"), b"in the way").unwrap();
    let server = start_server_with(&[("WISP_RECORD_DIR", rec.to_str().unwrap())]);
    let mut viewer = Peer::new(&server, "/whep/rec", Direction::RecvOnly);
    let mut publisher = Peer::new(&server, "/whip/rec", Direction::SendOnly);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut frame = 0;
    let mut next = Instant::now();
    while Instant::now() < deadline && viewer.got_video.len() < 60 {
        publisher.pump();
        viewer.pump();
        if publisher.connected && Instant::now() >= next {
            publisher.send_frame(frame);
            frame += 1;
            next += Duration::from_millis(20);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (_, _, metrics) = http(server.http, "GET", "/metrics", None, "");
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wisp_recordings_failed_total "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap_or(0);
    eprintln!(
        "recording failed ({failed} counted); viewer still got {} video packets",
        viewer.got_video.len()
    );
    assert!(failed >= 1, "the failure is counted");
    assert!(viewer.got_video.len() >= 60, "forwarding went on");
    let _ = fs::remove_dir_all(&dir);
}

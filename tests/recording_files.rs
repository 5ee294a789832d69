//! Recording with a real decoder: ffmpeg encodes a known clip, the test
//! packetizes it into RTP payloads (a few packets reordered, one lost), feeds
//! the recorder, and ffprobe/ffmpeg must decode the file without an error and
//! count the frames that were sent, minus those dropped by design after the
//! loss (up to the next keyframe).
//!
//! Needs `ffmpeg` and `ffprobe` (Debian package `ffmpeg`). Without them the
//! tests are skipped with a message, unless `CI` is set: then they fail.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod media;

use crossbeam_channel::{bounded, Sender};
use media::*;
use str0m::format::Codec;
use wisp::record::{spawn, RecorderConfig, RecorderStats};
use wisp::sfu::id::RoomName;
use wisp::sfu::recorder_tap::{RecordEvent, RecordingId};

/// The frame whose first packet is lost: frames 40..59 are dropped.
const LOST_FRAME: usize = 40;

/// Swap a few neighbours and remove the first packet of `lost_frame`.
fn impair(mut pkts: Vec<Rtp>, first_pkt: &[usize], lost_frame: usize) -> Vec<Rtp> {
    for i in [5usize, 23, 71, 150] {
        if i + 1 < pkts.len() {
            pkts.swap(i, i + 1);
        }
    }
    let lost = first_pkt[lost_frame];
    let seq = 1000 + lost as u64;
    pkts.retain(|p| p.0 != seq);
    pkts
}

fn room(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

fn send_start(tx: &Sender<RecordEvent>, id: u64, r: &str, codec: Codec) {
    let (kind, clock_rate) = if codec == Codec::Opus {
        ("audio", 48_000)
    } else {
        ("video", 90_000)
    };
    tx.send(RecordEvent::Start {
        id: RecordingId(id),
        room: room(r),
        kind,
        codec,
        clock_rate,
        channels: 2,
    })
    .unwrap();
}

fn send_packets(tx: &Sender<RecordEvent>, id: u64, pkts: &[Rtp]) {
    for (seq, ts, marker, p) in pkts {
        tx.send(RecordEvent::Packet {
            id: RecordingId(id),
            seq: *seq,
            ts: *ts,
            marker: *marker,
            payload: Arc::from(&p[..]),
        })
        .unwrap();
    }
}

fn wait_for(stats: &RecorderStats, frames: u64) {
    let t0 = Instant::now();
    while stats.frames_written.load(SeqCst) + stats.frames_dropped.load(SeqCst) < frames {
        assert!(t0.elapsed() < Duration::from_secs(20), "recorder stalled");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Record one clip with one lost packet; return the probe and the recorder stats.
fn record_clip(what: &str) -> Option<(Probe, Arc<RecorderStats>, PathBuf)> {
    if !have_ffmpeg() {
        return None;
    }
    let dir = tmpdir(what);
    let input = encode(&dir, what);
    let (frames, codec, ticks) = match what {
        "vp8" => (ivf_frames(&fs::read(&input).unwrap()), Codec::Vp8, 3000),
        "vp9" => (ivf_frames(&fs::read(&input).unwrap()), Codec::Vp9, 3000),
        "av1" => (ivf_frames(&fs::read(&input).unwrap()), Codec::Av1, 3000),
        "h264" => (
            h264_access_units(&fs::read(&input).unwrap()),
            Codec::H264,
            3000,
        ),
        _ => (opus_packets(&input), Codec::Opus, 960),
    };
    let expect = if codec == Codec::Opus {
        OPUS_PACKETS
    } else {
        FRAMES
    };
    // libopus may add a packet for its lookahead: keep exactly 3 s.
    let mut frames = frames;
    assert!(
        (expect..=expect + 1).contains(&frames.len()),
        "clip from ffmpeg"
    );
    frames.truncate(expect);
    let (pkts, first) = packetize(&frames, what, ticks);
    let lost = if codec == Codec::Opus { 75 } else { LOST_FRAME };
    let pkts = impair(pkts, &first, lost);
    let out = dir.join("rec");
    let (tx, rx) = bounded(100_000);
    let (h, stats) = spawn(RecorderConfig::new(&out), rx, |_| {}).unwrap();
    send_start(&tx, 1, "clip", codec);
    send_packets(&tx, 1, &pkts);
    tx.send(RecordEvent::Stop { id: RecordingId(1) }).unwrap();
    drop(tx);
    h.join().unwrap();
    let file = only_file(&out.join("clip"));
    let p = probe(&file);
    eprintln!(
        "{what}: sent {expect}, file {:?}: codec {} frames {} {}x{} duration {:.3}s end {:.3}s; written {} dropped {}",
        file.file_name().unwrap(),
        p.codec,
        p.frames,
        p.width,
        p.height,
        p.duration,
        p.end,
        stats.frames_written.load(SeqCst),
        stats.frames_dropped.load(SeqCst),
    );
    Some((p, stats, dir))
}

/// Video: 90 frames sent, the first packet of frame 40 lost → frames 40..59
/// dropped (next keyframe at 60): exactly 70 frames decode.
fn ivf_clip_decodes_with_expected_frames(what: &str) {
    let Some((p, stats, dir)) = record_clip(what) else {
        return;
    };
    assert_eq!(p.codec, what);
    assert_eq!((p.width, p.height), (320, 240));
    assert_eq!(p.frames, 70);
    assert_eq!(stats.frames_written.load(SeqCst), 70);
    // Frames 41..59 at least (frame 40 may have been one packet, lost whole).
    assert!((19..=20).contains(&stats.frames_dropped.load(SeqCst)));
    // The last frame's timestamp is 89/30 s after the first.
    assert!((p.end - 89.0 / 30.0).abs() <= 0.05, "{}", p.end);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn vp8_file_decodes_with_expected_frames() {
    ivf_clip_decodes_with_expected_frames("vp8");
}

#[test]
fn vp9_file_decodes_with_expected_frames() {
    ivf_clip_decodes_with_expected_frames("vp9");
}

#[test]
fn av1_file_decodes_with_expected_frames() {
    ivf_clip_decodes_with_expected_frames("av1");
}

#[test]
fn h264_file_decodes_with_expected_frames() {
    let Some((p, stats, dir)) = record_clip("h264") else {
        return;
    };
    assert_eq!(p.codec, "h264");
    assert_eq!((p.width, p.height), (320, 240));
    assert_eq!(p.frames, 70);
    assert_eq!(stats.frames_written.load(SeqCst), 70);
    fs::remove_dir_all(dir).unwrap();
}

/// Audio: 150 packets (3 s) sent, one lost and replaced by a lost-frame
/// packet, so 150 packets are in the file; the 80 ms pre-skip hides the first
/// 4, so 146 frames decode and the audio ends at 3 s − 80 ms.
#[test]
fn opus_file_decodes_with_expected_duration() {
    let Some((p, stats, dir)) = record_clip("opus") else {
        return;
    };
    assert_eq!(p.codec, "opus");
    assert_eq!(p.frames, 146);
    assert_eq!(stats.frames_written.load(SeqCst), 149);
    assert!((p.end - 2.92).abs() <= 0.03, "{}", p.end);
    assert!((2.9..=3.01).contains(&p.duration), "{}", p.duration);
    fs::remove_dir_all(dir).unwrap();
}

/// SIGKILL bound: the recorder still holds the files open; a copy of what is
/// on disk right after the recorder consumed 2 s of media must decode and
/// hold all but at most the last second.
#[test]
fn unfinalised_files_hold_all_but_the_last_second() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tmpdir("kill");
    let vp8 = ivf_frames(&fs::read(encode(&dir, "vp8")).unwrap());
    let opus = opus_packets(&encode(&dir, "opus"));
    let (vp, _) = packetize(&vp8[..60], "vp8", 3000); // 2 s
    let (op, _) = packetize(&opus[..100], "opus", 960); // 2 s
    let out = dir.join("rec");
    let (tx, rx) = bounded(100_000);
    let (h, stats) = spawn(RecorderConfig::new(&out), rx, |_| {}).unwrap();
    send_start(&tx, 1, "kill", Codec::Vp8);
    send_start(&tx, 2, "kill", Codec::Opus);
    send_packets(&tx, 1, &vp);
    send_packets(&tx, 2, &op);
    wait_for(&stats, 160);
    // "Kill": copy the files now, before any finalisation or timer flush.
    let snap = dir.join("snap");
    fs::create_dir_all(&snap).unwrap();
    for f in fs::read_dir(out.join("kill")).unwrap() {
        let f = f.unwrap().path();
        fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
    }
    for f in fs::read_dir(&snap).unwrap() {
        let f = f.unwrap().path();
        let p = probe(&f);
        let (sent, got) = if p.codec == "vp8" {
            (2.0, p.frames as f64 / 30.0)
        } else {
            (2.0, p.frames as f64 * 0.02)
        };
        eprintln!(
            "kill: {} on disk {:.2}s of {sent:.2}s sent (loss {:.2}s)",
            p.codec,
            got,
            sent - got
        );
        assert!(got >= sent - 1.0, "{}: {got} s of {sent} s", p.codec);
    }
    drop(tx);
    h.join().unwrap();
    fs::remove_dir_all(dir).unwrap();
}

/// A room whose directory cannot be created fails alone; the others record.
#[test]
fn unwritable_room_does_not_stop_others() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tmpdir("unwritable");
    let vp8 = ivf_frames(&fs::read(encode(&dir, "vp8")).unwrap());
    let (vp, _) = packetize(&vp8[..30], "vp8", 3000);
    let out = dir.join("rec");
    fs::create_dir_all(&out).unwrap();
    // Tests run as root: make the room path a regular file so create_dir fails.
    fs::write(out.join("blocked"), b"not a directory").unwrap();
    let (tx, rx) = bounded(100_000);
    let (h, stats) = spawn(RecorderConfig::new(&out), rx, |_| {}).unwrap();
    send_start(&tx, 1, "blocked", Codec::Vp8);
    send_start(&tx, 2, "open", Codec::Vp8);
    send_packets(&tx, 1, &vp);
    send_packets(&tx, 2, &vp);
    drop(tx);
    h.join().unwrap();
    assert_eq!(stats.recordings_failed.load(SeqCst), 1);
    assert_eq!(stats.room(&room("blocked")).unwrap().files_failed, 1);
    let r = stats.room(&room("open")).unwrap();
    assert_eq!((r.files_open, r.frames_written), (0, 30));
    let p = probe(&only_file(&out.join("open")));
    assert_eq!(p.frames, 30);
    fs::remove_dir_all(dir).unwrap();
}

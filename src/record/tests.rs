use super::*;
use crossbeam_channel::{bounded, Sender};
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::UNIX_EPOCH;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wisp-rec-unit-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn room(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

fn start(tx: &Sender<RecordEvent>, id: u64, r: &str, codec: Codec) {
    let (kind, clock_rate) = match codec {
        Codec::Opus => ("audio", 48_000),
        _ => ("video", 90_000),
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

fn packet(tx: &Sender<RecordEvent>, id: u64, seq: u64, ts: u32, marker: bool, p: &[u8]) {
    tx.send(RecordEvent::Packet {
        id: RecordingId(id),
        seq,
        ts,
        marker,
        payload: Arc::from(p),
    })
    .unwrap();
}

/// A VP8 RTP payload: descriptor (S=1, PID=0) + a tiny frame (keyframe or not).
fn vp8(key: bool, n: u8) -> Vec<u8> {
    if key {
        vec![
            0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, n,
        ]
    } else {
        vec![0x10, 0x51, 0x02, 0x00, n]
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn ivf_frames(b: &[u8]) -> (u32, Vec<u64>) {
    let count = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut pts = vec![];
    let mut i = 32;
    while i + 12 <= b.len() {
        let n = u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        pts.push(u64::from_le_bytes(b[i + 4..i + 12].try_into().unwrap()));
        i += 12 + n;
    }
    (count, pts)
}

#[test]
fn utc_stamps() {
    for (t, want) in [
        (0, "19700101T000000Z"),
        (951_782_400, "20000229T000000Z"),
        (1_795_614_301, "20261125T134501Z"),
        (4_107_542_399, "21000228T235959Z"),
    ] {
        assert_eq!(utc_stamp(UNIX_EPOCH + Duration::from_secs(t)), want);
    }
}

#[test]
fn vp8_track_with_loss_and_stop() {
    let dir = tmpdir("vp8");
    let (tx, rx) = bounded(1024);
    let kf = Arc::new(AtomicU64::new(0));
    let k2 = kf.clone();
    let (h, stats) = spawn(RecorderConfig::new(&dir), rx, move |r| {
        assert_eq!(r.as_str(), "r1");
        k2.fetch_add(1, SeqCst);
    })
    .unwrap();
    start(&tx, 1, "r1", Codec::Vp8);
    let mut seq = 100;
    // Frame 0: a delta frame before any keyframe (dropped), then keyframe, deltas.
    for f in 0..20u32 {
        let key = f == 1 || f == 12;
        let p = vp8(key, f as u8);
        if f == 5 {
            seq += 1; // lost packet: frames 5..11 dropped
            continue;
        }
        packet(&tx, 1, seq, f * 3000, true, &p);
        seq += 1;
    }
    tx.send(RecordEvent::Stop { id: RecordingId(1) }).unwrap();
    drop(tx);
    h.join().unwrap();
    let fs_ = files(&dir.join("r1"));
    assert_eq!(fs_.len(), 1);
    let name = fs_[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with("-video-1.ivf"), "{name}");
    let b = fs::read(&fs_[0]).unwrap();
    assert_eq!(&b[8..12], b"VP80");
    assert_eq!(u16::from_le_bytes([b[12], b[13]]), 320);
    let (count, pts) = ivf_frames(&b);
    // Written: 1,2,3,4 and 12..19 = 12 frames; dropped: 0, 6..11 (5 is lost).
    assert_eq!(count, 12);
    assert_eq!(pts.len(), 12);
    assert_eq!(pts[0], 0);
    assert_eq!(pts[4], 11 * 3000);
    assert_eq!(stats.frames_written.load(SeqCst), 12);
    assert_eq!(stats.frames_dropped.load(SeqCst), 7);
    assert!(kf.load(SeqCst) >= 1 && kf.load(SeqCst) <= 2, "throttled");
    let r = stats.room(&room("r1")).unwrap();
    assert_eq!(r.files_open, 0);
    assert_eq!(r.bytes_written, b.len() as u64);
    assert_eq!(stats.bytes_written.load(SeqCst), b.len() as u64);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idle_track_is_finalised_and_opus_ends_with_eos() {
    let dir = tmpdir("idle");
    let (tx, rx) = bounded(1024);
    let mut cfg = RecorderConfig::new(&dir);
    cfg.idle_timeout = Duration::from_millis(300);
    let (h, stats) = spawn(cfg, rx, |_| {}).unwrap();
    start(&tx, 7, "r2", Codec::Opus);
    for i in 0..10u32 {
        packet(&tx, 7, i as u64, i * 960, false, &[0xf8, 0xff, 0xfe]);
    }
    // No Stop: the idle timeout closes the file.
    let t0 = Instant::now();
    while stats.room(&room("r2")).is_none_or(|r| r.files_open > 0) {
        assert!(t0.elapsed() < Duration::from_secs(5), "not finalised");
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = &files(&dir.join("r2"))[0];
    let b = fs::read(f).unwrap();
    let mut r = ::ogg::reading::PacketReader::new(io::Cursor::new(b));
    let mut n = 0;
    let mut last = None;
    while let Some(p) = r.read_packet().unwrap() {
        n += 1;
        last = Some(p);
    }
    assert_eq!(n, 12);
    let last = last.unwrap();
    assert!(last.last_in_stream());
    assert_eq!(last.absgp_page(), 9600);
    // Packets after the close are ignored (unknown id).
    packet(&tx, 7, 11, 11 * 960, false, &[0xf8]);
    drop(tx);
    h.join().unwrap();
    assert_eq!(stats.frames_written.load(SeqCst), 10);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_room_fails_alone() {
    let dir = tmpdir("fail");
    fs::write(
        dir.join("bad"),
        b"a file where the room directory should be",
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/tmp", dir.join("link")).unwrap();
    let (tx, rx) = bounded(1024);
    let (h, stats) = spawn(RecorderConfig::new(&dir), rx, |_| {}).unwrap();
    start(&tx, 1, "bad", Codec::Vp8);
    start(&tx, 2, "link", Codec::Vp8);
    start(&tx, 3, "good", Codec::Vp8);
    for (i, id) in [1, 2, 3].into_iter().enumerate() {
        packet(&tx, id, i as u64, 0, true, &vp8(true, 0));
    }
    drop(tx);
    h.join().unwrap();
    assert_eq!(stats.recordings_started.load(SeqCst), 3);
    let failed = if cfg!(unix) { 2 } else { 1 };
    assert_eq!(stats.recordings_failed.load(SeqCst), failed);
    assert_eq!(stats.room(&room("bad")).unwrap().files_failed, 1);
    assert_eq!(stats.frames_written.load(SeqCst), 1);
    assert_eq!(files(&dir.join("good")).len(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_events_never_kill_the_thread() {
    let dir = tmpdir("garbage");
    let (tx, rx) = bounded(4096);
    let (h, stats) = spawn(RecorderConfig::new(&dir), rx, |_| {}).unwrap();
    let codecs = [
        Codec::Vp8,
        Codec::Vp9,
        Codec::Av1,
        Codec::H264,
        Codec::Opus,
        Codec::PCMU,
    ];
    let mut x: u32 = 7;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for (id, c) in codecs.iter().enumerate() {
        start(&tx, id as u64, "g", *c);
    }
    for i in 0..3000u64 {
        let id = (rnd() % 7) as u64;
        let len = (rnd() % 30) as usize;
        let p: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        let seq = i.wrapping_add((rnd() % 5) as u64);
        packet(&tx, id, seq, rnd() % 100_000, rnd() % 3 == 0, &p);
    }
    drop(tx);
    h.join().unwrap();
    assert_eq!(stats.panics.load(SeqCst), 0);
    assert_eq!(stats.room(&room("g")).unwrap().files_open, 0);
    fs::remove_dir_all(&dir).unwrap();
}

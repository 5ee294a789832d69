//! Real GStreamer `webrtcbin` clients (Debian 12's GStreamer 1.22, driven by
//! tests/gstreamer/client.py) against the real wisp binary, with decoded video
//! frames as the proof:
//!
//! - a GStreamer WHIP publisher (test pattern and tone; VP8 + Opus, or H.264
//!   constrained baseline + Opus) watched by a str0m viewer, whose complete
//!   frames (a partition head to a marker, no sequence gap, from a keyframe
//!   on) GStreamer then decodes from a file, one picture each;
//! - a str0m publisher (frames GStreamer encoded beforehand, packetized by
//!   str0m) watched by a GStreamer WHEP viewer that decodes and counts;
//! - both DTLS roles: webrtcbin offers `a=setup:actpass`, and the offer text
//!   sent to wisp is also rewritten to `active` (wisp is the DTLS server) and
//!   to `passive` (wisp is the DTLS client); webrtcbin takes its role from the
//!   answer, which the tests check.
//!
//! Each run needs at least 60 decoded frames within 8 s of media.
//!
//! libnice (webrtcbin's ICE) ignores loopback interfaces, so each test runs in
//! a network namespace of its own with a veth pair holding [`ADDR`]; wisp
//! binds and advertises that address (`WISP_PUBLIC_IPS`). Nothing leaves the
//! namespace. Needs root, `ip` and GStreamer (see .ci/run); without them the
//! tests print SKIPPED and pass, unless `CI` is set. Every process is killed
//! (its process group, by id) when its handle drops, and every wait has a
//! deadline. `--nocapture` shows the figures.

mod browser;
mod media;
mod support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use browser::peer::{Packet, Peer};
use browser::Wisp;
use serde_json::Value;
use str0m::format::{Codec, CodecExtra};
use str0m::media::{Direction, MediaKind};
use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

/// Debian's Python, which has the GStreamer bindings (`python3-gst-1.0`).
const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gstreamer/client.py");
/// wisp's and the clients' address, on the veth pair inside the test's own
/// network namespace.
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// Decoded frames each case needs ...
const MIN_FRAMES: u64 = 60;
/// ... within this much media.
const MEDIA: Duration = Duration::from_secs(8);
/// Frames after which a case stops early (3 s at 30 fps).
const ENOUGH: u64 = 90;
/// Signalling, ICE and DTLS.
const SETUP: Duration = Duration::from_secs(15);
const ROOM: &str = "gst";

// ---- Gate ------------------------------------------------------------------------

/// One test at a time, in a fresh namespace with the veth pair; `None` means
/// skip (something missing and `CI` unset).
fn begin(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = browser::one_at_a_time();
    let missing = if unsafe_geteuid() != 0 {
        Some("not root (a network namespace and a veth pair need it)".to_string())
    } else if browser::which("ip").is_none() {
        Some("no `ip` (apt-get install iproute2)".to_string())
    } else {
        missing_gstreamer()
    };
    let missing = missing.or_else(|| {
        (!browser::isolate_network(test)).then(|| "cannot create a network namespace".into())
    });
    if let Some(why) = missing {
        support::skip_unless_ci(test, &why);
        return None;
    }
    browser::add_veth(ADDR).unwrap_or_else(|e| panic!("{test}: veth: {e}"));
    Some(guard)
}

fn unsafe_geteuid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}

/// What is missing for the GStreamer clients, if anything (the script's
/// `check` mode lists absent elements).
fn missing_gstreamer() -> Option<String> {
    let out = Command::new(PYTHON).args([CLIENT, "check"]).output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "GStreamer is incomplete ({}{}); apt-get install python3-gst-1.0 \
             gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-bad gstreamer1.0-plugins-good \
             gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-libav",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Some(format!("{PYTHON}: {e}")),
    }
}

/// wisp on [`ADDR`] (HTTP and UDP), advertising it, without STUN servers.
fn start_wisp() -> Wisp {
    let http = format!("{ADDR}:0");
    let ip = ADDR.to_string();
    Wisp::start_with(&[
        ("WISP_HTTP_ADDR", http.as_str()),
        ("WISP_UDP_ADDR", http.as_str()),
        ("WISP_PUBLIC_IPS", ip.as_str()),
    ])
}

// ---- The GStreamer client process --------------------------------------------------

/// One run of tests/gstreamer/client.py in its own process group: its JSON
/// reports, and its stderr for failure messages. Closing stdin asks a session
/// to end (DELETE, then exit); dropping the handle kills the group.
struct GstClient {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl GstClient {
    fn start(args: &[&str]) -> GstClient {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(CLIENT).args(args);
        if std::env::var_os("WISP_TEST_LOG").is_some() && matches!(args[0], "whip" | "whep") {
            cmd.arg("--show-sdp");
        }
        let mut child = cmd
            .env("GST_DEBUG", "1") // errors only
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start tests/gstreamer/client.py");
        let (tx, events) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr);
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var_os("WISP_TEST_LOG").is_some() {
                    eprintln!("[gst] {line}");
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() < 500 {
                    kept.push(line);
                }
            }
        });
        GstClient {
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Reports so far and the end of stderr, for a failure message.
    fn context(&self) -> String {
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let tail = &err[err.len().saturating_sub(30)..];
        format!(
            "client reports:\n{}\nclient stderr:\n{}",
            self.seen
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            tail.join("\n")
        )
    }

    /// The next report, waiting at most `limit`; `None` on timeout or exit.
    fn next(&mut self, limit: Duration) -> Option<Value> {
        match self.events.recv_timeout(limit) {
            Ok(v) => {
                self.seen.push(v.clone());
                Some(v)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Wait up to `limit` for a report matching `want`; panics on timeout, on
    /// exit and on an `error` report, with `why` (e.g. wisp's log) added.
    fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        why: &dyn Fn() -> String,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(v) = self.next(left) else {
                panic!(
                    "no {what}: the client exited, or {limit:?} passed\n{}\n{}",
                    self.context(),
                    why()
                );
            };
            if v["event"] == "error" {
                panic!(
                    "client error while waiting for {what}\n{}\n{}",
                    self.context(),
                    why()
                );
            }
            if want(&v) {
                return v;
            }
        }
    }

    /// End the session (close stdin: the client sends DELETE and exits) and
    /// return the reports that came after, waiting at most `limit`.
    fn stop(&mut self, limit: Duration) -> Vec<Value> {
        self.stdin = None;
        self.drain(limit)
    }

    /// Reports until the client exits, waiting at most `limit`.
    fn drain(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while let Some(v) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(v);
        }
        out
    }

    /// Run a file mode (`encode`, `decode`) to its end, at most `limit`.
    fn run(args: &[&str], limit: Duration) -> Value {
        let mut c = GstClient::start(args);
        let out = c.drain(limit);
        let last = out.last().cloned().unwrap_or(Value::Null);
        assert!(
            last["error"].is_null() && !last.is_null(),
            "client {args:?}: {}",
            c.context()
        );
        last
    }
}

impl Drop for GstClient {
    fn drop(&mut self) {
        browser::kill_group(&mut self.child);
    }
}

/// The webrtcbin DTLS role in `reports`: whether it was the client, from the
/// last report that shows a connected DTLS transport.
fn dtls_client(reports: &[Value]) -> Option<bool> {
    reports
        .iter()
        .rev()
        .find(|r| r["dtls"]["state"] == "connected")
        .and_then(|r| r["dtls"]["client"].as_bool())
}

/// The role the answer gives webrtcbin, after checking it against what the
/// offer that wisp saw asked for: `active` makes wisp the DTLS server
/// (answers `passive`), `passive` the client (answers `active`), `actpass`
/// leaves the choice to wisp.
fn expected_client(offer_setup: &str, answer: &Value) -> bool {
    let setups: Vec<&str> = answer["setup"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(!setups.is_empty(), "no a=setup in the answer: {answer}");
    let ours = match setups[0] {
        "a=setup:passive" => true, // wisp waits: webrtcbin starts the handshake
        "a=setup:active" => false,
        other => panic!("answer has {other}"),
    };
    assert!(setups.iter().all(|s| *s == setups[0]), "{setups:?}");
    match offer_setup {
        "active" => assert!(ours, "offer active, answer {setups:?}"),
        "passive" => assert!(!ours, "offer passive, answer {setups:?}"),
        _ => {}
    }
    ours
}

/// Wait until webrtcbin is connected, and check the DTLS role it took.
fn connected(client: &mut GstClient, setup: &str, wisp: &Wisp) -> bool {
    let why = || wisp_log(wisp);
    let answer = client.wait("the answer", SETUP, &why, |v| v["event"] == "answer");
    let want = expected_client(setup, &answer);
    let state = client.wait("a connected peer connection", SETUP, &why, |v| {
        v["event"] == "state" && (v["pc"] == "connected" || v["pc"] == "failed")
    });
    assert_eq!(
        state["pc"],
        "connected",
        "webrtcbin's connection failed (ICE {}, DTLS {}) after offer {setup}\n{}\n{}",
        state["ice"],
        state["dtls"],
        client.context(),
        why()
    );
    let got = dtls_client(&client.seen);
    assert_eq!(
        got,
        Some(want),
        "webrtcbin's DTLS role (client?) after offer {setup}\n{}\n{}",
        client.context(),
        why()
    );
    want
}

/// The end of wisp's log, for failure messages.
fn wisp_log(wisp: &Wisp) -> String {
    let lines = wisp.log_lines("");
    let tail = &lines[lines.len().saturating_sub(40)..];
    format!("wisp log:\n{}", tail.join("\n"))
}

// ---- Frames a str0m viewer received --------------------------------------------

/// The complete video frames in `got`, depacketized, from the first keyframe
/// on: a frame is the run of packets with one timestamp, in sequence order,
/// starting at a partition head and ending with the marker, without a gap.
/// After an incomplete frame or a gap, frames count again from the next
/// keyframe (the decoder could not use them). Returns (frames, keyframes).
fn complete_frames(got: &[Packet], codec: &str) -> (Vec<Vec<u8>>, usize) {
    let mut pkts: Vec<&Packet> = got.iter().filter(|p| p.kind == MediaKind::Video).collect();
    pkts.sort_by_key(|p| p.seq);
    pkts.dedup_by_key(|p| p.seq);
    let mut depack: Box<dyn Depacketizer> = match codec {
        "vp8" => Box::new(Vp8Depacketizer::default()),
        _ => Box::new(H264Depacketizer::default()),
    };
    let (mut frames, mut keys) = (Vec::new(), 0);
    let mut usable = false; // a keyframe started the current unbroken run
    let mut prev_end: Option<u64> = None;
    let mut i = 0;
    while i < pkts.len() {
        let mut j = i + 1;
        while j < pkts.len() && pkts[j].ts == pkts[i].ts {
            j += 1;
        }
        let run = &pkts[i..j];
        i = j;
        let gapless = run.windows(2).all(|w| w[1].seq == w[0].seq + 1)
            && prev_end.is_none_or(|e| run[0].seq == e + 1);
        prev_end = Some(run[run.len() - 1].seq);
        let whole = depack.is_partition_head(&run[0].payload)
            && depack.is_partition_tail(run[run.len() - 1].marker, &run[run.len() - 1].payload);
        let mut data = Vec::new();
        let mut extra = CodecExtra::None;
        let ok = gapless
            && whole
            && run.iter().all(|p| {
                depack
                    .depacketize(&p.payload, &mut data, &mut extra)
                    .is_ok()
            });
        let key = match extra {
            CodecExtra::Vp8(e) => e.is_keyframe,
            CodecExtra::H264(e) => e.is_keyframe,
            _ => false,
        };
        if !ok || data.is_empty() {
            usable = false;
            continue;
        }
        if key {
            usable = true;
            keys += 1;
        }
        if usable {
            frames.push(data);
        }
    }
    (frames, keys)
}

/// Write `frames` as GStreamer's decoder input: IVF for VP8, Annex B for H.264.
fn write_stream(path: &Path, frames: &[Vec<u8>], codec: &str) {
    let mut out = Vec::new();
    if codec == "vp8" {
        out.extend_from_slice(b"DKIF");
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(b"VP80");
        out.extend_from_slice(&320u16.to_le_bytes());
        out.extend_from_slice(&240u16.to_le_bytes());
        out.extend_from_slice(&30u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for (n, f) in frames.iter().enumerate() {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(f);
        }
    } else {
        for f in frames {
            out.extend_from_slice(f);
        }
    }
    std::fs::write(path, out).expect("write the received stream");
}

fn tmpdir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wisp-gst-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Removes the test's temporary folder, also when it fails.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- Case: GStreamer publishes, str0m watches ---------------------------------------

fn gstreamer_publishes(test: &str, codec: &str, setup: &str) {
    let Some(_one) = begin(test) else { return };
    let dir = TmpDir(tmpdir(test));
    let wisp = start_wisp();
    let url = format!("{}/whip/{ROOM}", wisp.url());
    let mut publisher = GstClient::start(&[
        "whip",
        &url,
        "--codec",
        codec,
        "--setup",
        setup,
        "--seconds",
        "40",
    ]);
    let t0 = Instant::now();
    let client = connected(&mut publisher, setup, &wisp);
    let setup_time = t0.elapsed();

    let mut viewer = Peer::new_on(
        &wisp,
        &format!("/whep/{ROOM}"),
        Direction::RecvOnly,
        ADDR.into(),
    );
    let deadline = Instant::now() + SETUP;
    while !viewer.connected {
        assert!(
            Instant::now() < deadline,
            "str0m viewer not connected in {SETUP:?}\n{}",
            wisp_log(&wisp)
        );
        viewer.run_for(Duration::from_millis(20));
    }
    let media_start = Instant::now();
    let mut frames = Vec::new();
    let mut keys = 0;
    while media_start.elapsed() < MEDIA {
        viewer.run_for(Duration::from_millis(250));
        (frames, keys) = complete_frames(&viewer.got, codec);
        if frames.len() as u64 >= ENOUGH {
            break;
        }
    }
    let media = media_start.elapsed();
    let packets = viewer
        .got
        .iter()
        .filter(|p| p.kind == MediaKind::Video)
        .count();
    let audio = viewer.got.len() - packets;

    let stream = dir.0.join(if codec == "vp8" {
        "got.ivf"
    } else {
        "got.h264"
    });
    write_stream(&stream, &frames, codec);
    let decoded = GstClient::run(
        &[
            "decode",
            stream.to_str().expect("utf-8 path"),
            "--codec",
            codec,
        ],
        Duration::from_secs(30),
    );
    let decoded = decoded["frames"].as_u64().unwrap_or(0);
    eprintln!(
        "{test}: webrtcbin connected in {} ms as DTLS {}; str0m viewer got {packets} video and \
         {audio} audio packets, {} complete frames ({keys} keyframes) in {} ms; GStreamer \
         decoded {decoded}",
        setup_time.as_millis(),
        if client { "client" } else { "server" },
        frames.len(),
        media.as_millis(),
    );
    assert!(
        decoded >= MIN_FRAMES,
        "{test}: {decoded} frames decoded of {} complete ({packets} video packets) in {media:?}",
        frames.len()
    );
    assert_eq!(
        decoded,
        frames.len() as u64,
        "{test}: every complete frame decodes to one picture"
    );
    assert!(audio > 0, "{test}: no Opus packets reached the viewer");

    publisher.stop(Duration::from_secs(10));
    let deleted = publisher.seen.iter().find(|v| v["event"] == "deleted");
    assert!(
        deleted.is_some_and(|d| d["status"] == 200),
        "{test}: DELETE of the WHIP session\n{}",
        publisher.context()
    );
}

#[test]
fn gstreamer_whip_vp8_opus_actpass() {
    gstreamer_publishes("gstreamer_whip_vp8_opus_actpass", "vp8", "actpass");
}

#[test]
fn gstreamer_whip_vp8_opus_offer_active_wisp_dtls_server() {
    gstreamer_publishes("gstreamer_whip_vp8_offer_active", "vp8", "active");
}

#[test]
fn gstreamer_whip_vp8_opus_offer_passive_wisp_dtls_client() {
    gstreamer_publishes("gstreamer_whip_vp8_offer_passive", "vp8", "passive");
}

#[test]
fn gstreamer_whip_h264_opus_actpass() {
    gstreamer_publishes("gstreamer_whip_h264_opus_actpass", "h264", "actpass");
}

// ---- Case: str0m publishes, GStreamer watches ---------------------------------------

/// Frames in a clip: 5 s at 30 fps.
const CLIP_FRAMES: usize = 150;

/// [`CLIP_FRAMES`] of the test pattern (320x240, a keyframe each second),
/// encoded by GStreamer once per codec and process.
fn clip(test: &str, codec: &str) -> Vec<Vec<u8>> {
    static CLIPS: Mutex<Vec<(String, Vec<Vec<u8>>)>> = Mutex::new(Vec::new());
    let mut clips = CLIPS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, frames)) = clips.iter().find(|(c, _)| c == codec) {
        return frames.clone();
    }
    let dir = TmpDir(tmpdir(test));
    let file = dir.0.join("clip.ivf");
    let n = CLIP_FRAMES.to_string();
    GstClient::run(
        &[
            "encode",
            file.to_str().expect("utf-8 path"),
            "--codec",
            codec,
            "--frames",
            &n,
        ],
        Duration::from_secs(60),
    );
    let frames = media::ivf_frames(&std::fs::read(&file).expect("the clip"));
    assert_eq!(frames.len(), CLIP_FRAMES, "{test}: encoded frames");
    clips.push((codec.to_string(), frames.clone()));
    frames
}

fn gstreamer_views(test: &str, codec: &str, setup: &str) {
    let Some(_one) = begin(test) else { return };
    let frames = clip(test, codec);
    let (rtp, first) = media::packetize(&frames, codec, 3000);
    let str0m_codec = if codec == "vp8" {
        Codec::Vp8
    } else {
        Codec::H264
    };

    let wisp = start_wisp();
    let mut publisher = Peer::new_on(
        &wisp,
        &format!("/whip/{ROOM}"),
        Direction::SendOnly,
        ADDR.into(),
    );
    let deadline = Instant::now() + SETUP;
    while !publisher.connected {
        assert!(
            Instant::now() < deadline,
            "str0m publisher not connected in {SETUP:?}\n{}",
            wisp_log(&wisp)
        );
        publisher.run_for(Duration::from_millis(20));
    }

    let url = format!("{}/whep/{ROOM}", wisp.url());
    let enough = ENOUGH.to_string();
    let mut viewer = GstClient::start(&[
        "whep",
        &url,
        "--codec",
        codec,
        "--setup",
        setup,
        "--frames",
        &enough,
        "--seconds",
        "40",
    ]);
    // The publisher sends at 30 fps, round the clip, while the viewer sets up
    // and decodes; `k` counts frames sent, the RTP clock runs on.
    let t0 = Instant::now();
    let frame_time = Duration::from_micros(33_333);
    let mut k = 0usize;
    let mut setup_time = None;
    let mut media_end = None;
    let mut client = None;
    let mut answer = None;
    let mut decoded = 0;
    let why = || wisp_log(&wisp);
    loop {
        while t0 + frame_time * k as u32 <= Instant::now() {
            let f = k % frames.len();
            let range = first[f]..first.get(f + 1).copied().unwrap_or(rtp.len());
            let ts = (k as u32).wrapping_mul(3000);
            for (_, _, marker, payload) in &rtp[range] {
                publisher.send_codec(MediaKind::Video, str0m_codec, ts, *marker, payload.clone());
            }
            k += 1;
        }
        publisher.pump();
        while let Some(v) = viewer.next(Duration::from_millis(5)) {
            match v["event"].as_str() {
                Some("error") => panic!("{test}: viewer error\n{}\n{}", viewer.context(), why()),
                Some("answer") => answer = Some(v.clone()),
                Some("state") if v["pc"] == "connected" && setup_time.is_none() => {
                    setup_time = Some(t0.elapsed());
                    media_end = Some(Instant::now() + MEDIA);
                    let a = answer.as_ref().expect("an answer before the connection");
                    let want = expected_client(setup, a);
                    let got = dtls_client(&viewer.seen);
                    assert_eq!(
                        got,
                        Some(want),
                        "{test}: webrtcbin's DTLS role (client?)\n{}",
                        viewer.context()
                    );
                    client = got;
                }
                Some("state") if v["pc"] == "failed" => {
                    panic!("{test}: viewer failed\n{}\n{}", viewer.context(), why())
                }
                // Only counts reported within MEDIA of the connection.
                Some("frames") if media_end.is_none_or(|e| Instant::now() <= e) => {
                    decoded = v["decoded"].as_u64().unwrap_or(0);
                }
                _ => {}
            }
        }
        if decoded >= ENOUGH || media_end.is_some_and(|e| Instant::now() > e) {
            break;
        }
        assert!(
            setup_time.is_some() || t0.elapsed() < SETUP,
            "{test}: the GStreamer viewer did not connect in {SETUP:?}\n{}\n{}",
            viewer.context(),
            why()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let setup_time = setup_time.expect("connected");
    let media = (t0.elapsed() - setup_time).min(MEDIA);
    eprintln!(
        "{test}: webrtcbin viewer connected in {} ms as DTLS {}; decoded {decoded} frames in \
         {} ms of media ({k} frames sent)",
        setup_time.as_millis(),
        if client == Some(true) {
            "client"
        } else {
            "server"
        },
        media.as_millis(),
    );
    assert!(
        decoded >= MIN_FRAMES,
        "{test}: the GStreamer viewer decoded {decoded} frames in {media:?}\n{}",
        viewer.context()
    );
    viewer.stop(Duration::from_secs(10));
    let deleted = viewer.seen.iter().find(|v| v["event"] == "deleted");
    assert!(
        deleted.is_some_and(|d| d["status"] == 200),
        "{test}: DELETE of the WHEP session\n{}",
        viewer.context()
    );
}

#[test]
fn gstreamer_whep_vp8_actpass() {
    gstreamer_views("gstreamer_whep_vp8_actpass", "vp8", "actpass");
}

#[test]
fn gstreamer_whep_vp8_offer_active_wisp_dtls_server() {
    gstreamer_views("gstreamer_whep_vp8_offer_active", "vp8", "active");
}

#[test]
fn gstreamer_whep_vp8_offer_passive_wisp_dtls_client() {
    gstreamer_views("gstreamer_whep_vp8_offer_passive", "vp8", "passive");
}

#[test]
fn gstreamer_whep_h264_actpass() {
    gstreamer_views("gstreamer_whep_h264_actpass", "h264", "actpass");
}

//! Real media for tests: clips encoded by ffmpeg, split into frames and RTP
//! payloads, and ffprobe/ffmpeg checks of what wisp recorded.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use str0m::unversioned::{H264Packetizer, Packetizer, Vp8Packetizer};

/// Frames (30 fps, 3 s) and Opus packets (20 ms, 3 s) in each clip.
pub const FRAMES: usize = 90;
pub const OPUS_PACKETS: usize = 150;
/// A keyframe every this many frames.
pub const GOP: usize = 30;
pub fn have_ffmpeg() -> bool {
    let ok = |b: &str| {
        Command::new(b)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("ffmpeg") && ok("ffprobe") {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("ffmpeg/ffprobe missing (apt-get install -y ffmpeg)");
    }
    eprintln!("SKIPPED: ffmpeg/ffprobe not installed (apt-get install -y ffmpeg)");
    false
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wisp-recording-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A clip encoded by ffmpeg.
pub fn encode(dir: &Path, what: &str) -> PathBuf {
    let gop = GOP.to_string();
    let video = [
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-frames:v",
        "90",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
    ];
    match what {
        "vp8" | "vp9" | "av1" => {
            let p = dir.join(format!("in-{what}.ivf"));
            let codec: &[&str] = match what {
                "vp8" => &[
                    "libvpx",
                    "-b:v",
                    "600k",
                    "-auto-alt-ref",
                    "0",
                    "-deadline",
                    "realtime",
                ],
                "vp9" => &[
                    "libvpx-vp9",
                    "-row-mt",
                    "0",
                    "-b:v",
                    "600k",
                    "-auto-alt-ref",
                    "0",
                    "-deadline",
                    "realtime",
                ],
                _ => &[
                    "libaom-av1",
                    "-b:v",
                    "400k",
                    "-cpu-used",
                    "8",
                    "-usage",
                    "realtime",
                ],
            };
            let mut a: Vec<&str> = video.to_vec();
            a.push("-c:v");
            a.extend(codec);
            a.extend(["-lag-in-frames", "0", "-f", "ivf", p.to_str().unwrap()]);
            ffmpeg(&a);
            p
        }
        "h264" => {
            let p = dir.join("in.h264");
            let mut a: Vec<&str> = video.to_vec();
            a.extend([
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-profile:v",
                "baseline",
                "-bf",
                "0",
                "-x264-params",
                "aud=1:scenecut=0",
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
            ]);
            a.push(p.to_str().unwrap());
            ffmpeg(&a);
            p
        }
        _ => {
            let p = dir.join("in.ogg");
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=3",
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
                "-frame_duration",
                "20",
                "-f",
                "ogg",
                p.to_str().unwrap(),
            ]);
            p
        }
    }
}

pub fn ivf_frames(b: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![];
    let mut i = 32;
    while i + 12 <= b.len() {
        let n = u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        v.push(b[i + 12..i + 12 + n].to_vec());
        i += 12 + n;
    }
    v
}

/// Split an Annex-B stream into access units at each AUD (x264 `aud=1`).
pub fn h264_access_units(b: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = vec![];
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus: Vec<Vec<u8>> = vec![];
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(b.len(), |&n| n - 3);
        while e > s && b[e - 1] == 0 {
            e -= 1; // the leading zero of a 4-byte start code
        }
        let nal = &b[s..e];
        if nal[0] & 0x1f == 9 {
            aus.push(vec![]);
        }
        if let Some(au) = aus.last_mut() {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(nal);
        }
    }
    aus
}

pub fn opus_packets(p: &Path) -> Vec<Vec<u8>> {
    let mut r = ogg::reading::PacketReader::new(fs::File::open(p).unwrap());
    let mut v = vec![];
    while let Some(pk) = r.read_packet().unwrap() {
        v.push(pk.data);
    }
    v.split_off(2) // OpusHead, OpusTags
}

/// RTP packets (seq, ts, marker, payload) of a list of frames.
pub type Rtp = (u64, u32, bool, Vec<u8>);

pub fn packetize(frames: &[Vec<u8>], codec: &str, ticks: u32) -> (Vec<Rtp>, Vec<usize>) {
    let mut out = vec![];
    let mut first_pkt = vec![];
    let mut vp8 = Vp8Packetizer::default();
    let mut h264 = H264Packetizer::default();
    for (i, f) in frames.iter().enumerate() {
        let pkts = match codec {
            "vp8" => vp8.packetize(1200, f).unwrap(),
            "h264" => h264.packetize(1200, f).unwrap(),
            "vp9" => vp9_packetize(f, i % GOP == 0),
            "av1" => av1_packetize(f, i % GOP == 0),
            _ => vec![f.clone()],
        };
        first_pkt.push(out.len());
        let n = pkts.len();
        for (k, p) in pkts.into_iter().enumerate() {
            let seq = 1000 + out.len() as u64;
            out.push((seq, (i as u32).wrapping_mul(ticks), k + 1 == n, p));
        }
    }
    (out, first_pkt)
}

/// RFC 9628 non-flexible mode, one layer: a one-byte descriptor
/// `I|P|L|F|B|E|V|Z` with B on a frame's first packet, E on its last and P on
/// inter frames.
pub fn vp9_packetize(frame: &[u8], key: bool) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = frame.chunks(1100).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            let mut d = 0u8;
            if !key {
                d |= 0x40;
            }
            if k == 0 {
                d |= 0x08;
            }
            if k + 1 == n {
                d |= 0x04;
            }
            let mut p = vec![d];
            p.extend_from_slice(c);
            p
        })
        .collect()
}

/// AV1 RTP payloads of one temporal unit (low-overhead OBUs with size fields,
/// as IVF holds them): temporal delimiters dropped, each OBU without its size
/// field, one OBU fragment per packet (W=1), Z/Y marking continuations, N on a
/// keyframe's first packet.
pub fn av1_packetize(tu: &[u8], key: bool) -> Vec<Vec<u8>> {
    let mut obus: Vec<Vec<u8>> = vec![];
    let mut i = 0;
    while i < tu.len() {
        let h = tu[i];
        let ext = (h >> 2) & 1 == 1;
        let has_size = (h >> 1) & 1 == 1;
        let mut j = i + 1 + usize::from(ext);
        let size = if has_size {
            let (mut v, mut shift) = (0usize, 0);
            loop {
                let b = tu[j];
                j += 1;
                v |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            v
        } else {
            tu.len() - j
        };
        let obu_type = (h >> 3) & 0x0f;
        if obu_type != 2 {
            let mut o = vec![h & !0x02];
            if ext {
                o.push(tu[i + 1]);
            }
            o.extend_from_slice(&tu[j..j + size]);
            obus.push(o);
        }
        i = j + size;
    }
    let mut out = vec![];
    for o in &obus {
        let chunks: Vec<&[u8]> = o.chunks(1100).collect();
        let n = chunks.len();
        for (k, c) in chunks.into_iter().enumerate() {
            let z = if k > 0 { 0x80 } else { 0 };
            let y = if k + 1 < n { 0x40 } else { 0 };
            let nbit = if key && out.is_empty() { 0x08 } else { 0 };
            let mut p = vec![z | y | 0x10 | nbit];
            p.extend_from_slice(c);
            out.push(p);
        }
    }
    out
}

pub struct Probe {
    pub codec: String,
    pub frames: u64,
    pub width: u64,
    pub height: u64,
    /// Container duration (ffprobe `format=duration`).
    pub duration: f64,
    /// End of the last packet (pts + duration), seconds.
    pub end: f64,
}

/// ffprobe's frame count and ffmpeg's full decode; both must report no error.
pub fn probe(file: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args(["stream=nb_read_frames,width,height,codec_name:format=duration"])
        .args(["-of", "default=nw=1"])
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffprobe {file:?}: {err}"
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("0")
            .to_string()
    };
    let dec = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let derr = String::from_utf8_lossy(&dec.stderr);
    assert!(
        dec.status.success() && derr.trim().is_empty(),
        "decode {file:?}: {derr}"
    );
    // The end of the media from packet timestamps (an IVF header's length
    // field is a frame count, which ffprobe reads as a duration).
    let pk = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time,duration_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    let end = String::from_utf8_lossy(&pk.stdout)
        .lines()
        .map(|l| {
            let mut it = l.split(',').map(|v| v.trim().parse::<f64>().unwrap_or(0.0));
            it.next().unwrap_or(0.0) + it.next().unwrap_or(0.0)
        })
        .fold(0.0, f64::max);
    Probe {
        end,
        codec: get("codec_name"),
        frames: get("nb_read_frames").parse().unwrap_or(0),
        width: get("width").parse().unwrap_or(0),
        height: get("height").parse().unwrap_or(0),
        duration: get("duration").parse().unwrap_or(0.0),
    }
}

pub fn only_file(dir: &Path) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

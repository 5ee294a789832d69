//! `wisp-load`: a fan-out load generator for a running wisp.
//!
//! One synthetic WHIP publisher (VP8-like video at `--video-pps` packets/s of
//! `--packet-size` payload bytes, Opus-like audio at `--audio-pps`) and N WHEP
//! viewers, all str0m peers (RTP mode) in this one process, driven by one mio
//! loop over real UDP sockets on loopback.
//!
//! What is measured, and how:
//! - **Sent**: RTP packets the publisher wrote (video + audio).
//! - **Received**: every viewer counts the SRTP datagrams it gets by the
//!   *clear* RTP header (the payload type tells video, audio and "other", e.g.
//!   RTX); "light" viewers never decrypt media (their STUN, DTLS and SRTCP go
//!   through str0m as usual). `--full-viewers` viewers (default 1) feed every
//!   datagram through str0m, which decrypts and authenticates it; their
//!   payloads are checked (magic, kind, counter) and give the latency samples.
//! - **Loss**: 1 - received / (sent × viewers), over the whole send period plus
//!   a drain time; retransmissions and other payload types are not counted as
//!   received.
//! - **Latency**: receive time (taken right after `recv_from` of the datagram)
//!   minus the send timestamp in the payload (taken right before `write_rtp`),
//!   both µs since this process started; it includes the tool's own scheduling.
//! - **Server CPU**: utime+stime of `--server-pid` from `/proc/<pid>/stat`
//!   (all threads; clock ticks), and optionally the busy time of the core the
//!   server is pinned to (`--server-core`, from `/proc/stat`, includes softirq).
//!   Per-packet CPU = server CPU µs / media packets received by all viewers.
//! - **RSS**: VmRSS of the server at the end of the send period.
//! - **Setup rate**: WHEP sessions answered (201) per second.

#![recursion_limit = "256"]

use std::collections::HashMap;
use std::io::{self, ErrorKind, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{RecvMeta, UdpSocketState};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const USAGE: &str = "wisp-load: fan-out load generator for wisp (WHIP publisher + N WHEP viewers)

usage: wisp-load [options]
  --url URL              server base URL (default http://127.0.0.1:8080)
  --room NAME            room name (default load); ramp steps append -N
  --viewers N            WHEP viewers (default 10)
  --duration S           seconds of sending per run (default 10)
  --video-pps N          video packets/s of the publisher (default 1000)
  --packet-size B        RTP payload bytes of a video packet (default 1200)
  --audio-pps N          audio packets/s, 160-byte payloads (default 50)
  --fps N                video frames/s; packets of a frame share a timestamp (default 30)
  --full-viewers K       viewers that decrypt everything through str0m (default 1)
  --server-pid PID       read the server's CPU and RSS from /proc/PID
  --server-core C        also read the busy time of core C from /proc/stat
  --json                 print one JSON object per run on stdout
  --label TEXT           copied into the JSON (e.g. the server's git commit)
  --ramp                 viewers 10, 20, 50, 100, 200, 400, ... until loss > --max-loss
  --ramp-steps LIST      comma-separated viewer counts for --ramp
  --ramp-pps LIST        instead: ramp the video pps over LIST at --viewers N
  --max-loss R           loss ratio that ends a ramp (default 0.001)
  --max-viewers N        largest ramp step (default 3200)
  --setup-rate M         create M idle WHEP sessions as fast as possible, connect,
                         measure RSS growth, DELETE them; no media
  --setup-concurrency K  parallel HTTP requests in --setup-rate (default 4)
  --no-gro               viewers read with plain recv_from, default socket buffer
  --rcvbuf BYTES         viewer socket receive buffer (default 1048576)
  --drain-ms MS          time to collect in-flight packets after sending (default 500)
  --quiet                no per-second progress
";

/// Process start: the shared clock of send timestamps and receive times.
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Wall clock in µs since the Unix epoch: the send timestamps in the payloads
/// and the kernel's receive timestamps (SO_TIMESTAMPNS) use this clock.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Marks the tool's payloads: b"WL", kind, version.
const MAGIC_VIDEO: [u8; 4] = *b"WLv1";
const MAGIC_AUDIO: [u8; 4] = *b"WLa1";
/// Offset of the magic in the payload (after the VP8 descriptor and header byte).
const TAG_AT: usize = 2;
const AUDIO_SIZE: usize = 160;

#[derive(Clone, Debug)]
struct Args {
    http: SocketAddr,
    room: String,
    viewers: usize,
    duration: f64,
    video_pps: f64,
    packet_size: usize,
    audio_pps: f64,
    fps: u64,
    full_viewers: usize,
    server_pid: Option<u32>,
    server_core: Option<usize>,
    json: bool,
    label: Option<String>,
    ramp: bool,
    ramp_steps: Vec<usize>,
    ramp_pps: Vec<f64>,
    max_loss: f64,
    max_viewers: usize,
    setup_rate: Option<usize>,
    setup_concurrency: usize,
    drain: Duration,
    quiet: bool,
    gro: bool,
    rcvbuf: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        http: "127.0.0.1:8080".parse().unwrap(),
        room: "load".into(),
        viewers: 10,
        duration: 10.0,
        video_pps: 1000.0,
        packet_size: 1200,
        audio_pps: 50.0,
        fps: 30,
        full_viewers: 1,
        server_pid: None,
        server_core: None,
        json: false,
        label: None,
        ramp: false,
        ramp_steps: vec![],
        ramp_pps: vec![],
        max_loss: 0.001,
        max_viewers: 3200,
        setup_rate: None,
        setup_concurrency: 4,
        drain: Duration::from_millis(500),
        quiet: false,
        gro: true,
        rcvbuf: 1 << 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(f: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{f}: bad value {v:?}"))
        }
        match flag.as_str() {
            "--url" => {
                let v = val()?;
                let host = v.trim_start_matches("http://");
                let host = host.split('/').next().unwrap_or(host);
                a.http = host
                    .to_socket_addrs()
                    .map_err(|e| format!("--url {v}: {e}"))?
                    .next()
                    .ok_or(format!("--url {v}: no address"))?;
            }
            "--room" => a.room = val()?,
            "--viewers" => a.viewers = num(&flag, val()?)?,
            "--duration" => a.duration = num(&flag, val()?)?,
            "--video-pps" => a.video_pps = num(&flag, val()?)?,
            "--packet-size" => a.packet_size = num(&flag, val()?)?,
            "--audio-pps" => a.audio_pps = num(&flag, val()?)?,
            "--fps" => a.fps = num(&flag, val()?)?,
            "--full-viewers" => a.full_viewers = num(&flag, val()?)?,
            "--server-pid" => a.server_pid = Some(num(&flag, val()?)?),
            "--server-core" => a.server_core = Some(num(&flag, val()?)?),
            "--json" => a.json = true,
            "--label" => a.label = Some(val()?),
            "--ramp" => a.ramp = true,
            "--ramp-steps" => {
                a.ramp_steps = val()?
                    .split(',')
                    .map(|s| num(&flag, s.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--ramp-pps" => {
                a.ramp = true;
                a.ramp_pps = val()?
                    .split(',')
                    .map(|s| num(&flag, s.trim().to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--max-loss" => a.max_loss = num(&flag, val()?)?,
            "--max-viewers" => a.max_viewers = num(&flag, val()?)?,
            "--setup-rate" => a.setup_rate = Some(num(&flag, val()?)?),
            "--setup-concurrency" => a.setup_concurrency = num(&flag, val()?)?,
            "--drain-ms" => a.drain = Duration::from_millis(num(&flag, val()?)?),
            "--quiet" => a.quiet = true,
            "--no-gro" => a.gro = false,
            "--rcvbuf" => a.rcvbuf = num(&flag, val()?)?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown option {flag}\n\n{USAGE}")),
        }
    }
    if a.packet_size < TAG_AT + 20 || a.packet_size > 1400 {
        return Err("--packet-size must be within 22..=1400".into());
    }
    if a.fps == 0 || a.video_pps <= 0.0 || a.duration <= 0.0 {
        return Err("--fps, --video-pps and --duration must be positive".into());
    }
    a.setup_concurrency = a.setup_concurrency.max(1);
    Ok(a)
}

// ---------------------------------------------------------------- HTTP client

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &str,
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_nodelay(true)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = ctype {
        req.push_str(&format!("Content-Type: {c}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP response: {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

// ------------------------------------------------------------ /proc readings

#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    /// utime + stime in seconds.
    cpu_s: f64,
    /// Sum of the threads' on-CPU time from schedstat, seconds (0 if unavailable).
    sched_s: f64,
    rss_kib: u64,
}

fn clk_tck() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut sched_ns = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Some(ProcSample {
        cpu_s: ticks / clk_tck(),
        sched_s: sched_ns as f64 / 1e9,
        rss_kib,
    })
}

/// Busy seconds of core `c` (everything but idle and iowait) from /proc/stat.
fn core_busy_s(c: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{c}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&name))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy: f64 = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
    Some(busy / clk_tck())
}

/// UDP counters of /proc/net/snmp (kernel-wide): receive-buffer and send-buffer drops.
fn udp_snmp() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let m: HashMap<&str, u64> = h
        .split_whitespace()
        .zip(v.split_whitespace())
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    (
        m.get("RcvbufErrors").copied().unwrap_or(0),
        m.get("SndbufErrors").copied().unwrap_or(0),
    )
}

/// Sum of the server's `/metrics` samples by metric name and labels (empty if unavailable).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let Ok(r) = http(addr, "GET", "/metrics", None, "") else {
        return HashMap::new();
    };
    if r.status != 200 {
        return HashMap::new();
    }
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn metric_sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.as_str() == prefix || k.starts_with(&format!("{prefix}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[derive(Clone, Debug)]
struct ServerSnap {
    at: Instant,
    proc_: Option<ProcSample>,
    core: Option<f64>,
    udp: (u64, u64),
    metrics: HashMap<String, f64>,
    tool_cpu_s: f64,
}

fn snap(args: &Args, with_metrics: bool) -> ServerSnap {
    ServerSnap {
        at: Instant::now(),
        proc_: args.server_pid.and_then(|p| proc_sample(&p.to_string())),
        core: args.server_core.and_then(core_busy_s),
        udp: udp_snmp(),
        metrics: if with_metrics {
            scrape(args.http)
        } else {
            HashMap::new()
        },
        tool_cpu_s: proc_sample("self").map(|p| p.cpu_s).unwrap_or(0.0),
    }
}

// ----------------------------------------------------------------- the peers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Publisher,
    /// Decrypts everything through str0m; checks payloads; latency samples.
    Full,
    /// Counts media by the clear RTP header; only STUN/DTLS/RTCP reach str0m.
    Light,
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    video: u64,
    audio: u64,
    other: u64,
}

struct Peer {
    kind: Kind,
    rtc: Rtc,
    sock: UdpSocket,
    /// Viewers: GRO + recvmmsg receive state (None: plain recv_from).
    udp: Option<UdpSocketState>,
    addr: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
    location: String,
    connected: bool,
    closed: bool,
    next_timeout: Instant,
    video_pt: u8,
    audio_pt: u8,
    /// Media datagrams by clear header.
    rx: Counts,
    /// Full viewers: media events from str0m whose payload checked out.
    dec: Counts,
    bad_payload: u64,
    /// Full viewers: time of the datagram now being handled.
    last_recv_us: u64,
    /// Full viewers: when the tool read that datagram (user space).
    last_user_us: u64,
    /// Full viewers: latency to the tool's read (includes the tool's own delay).
    lat_user: Vec<u32>,
    /// Full viewers: datagrams that carried a kernel receive timestamp.
    kernel_ts: u64,
    /// Publisher: a keyframe was requested (PLI/FIR).
    want_keyframe: bool,
    keyframe_requests: u64,
    send_errors: u64,
}

/// A peer before its offer is answered.
struct Pending {
    kind: Kind,
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    mids: Vec<(Mid, MediaKind)>,
    pending: SdpPendingOffer,
    offer: String,
}

fn new_offer(kind: Kind) -> io::Result<Pending> {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std_sock.set_nonblocking(true)?;
    let addr = std_sock.local_addr()?;
    let sock = UdpSocket::from_std(std_sock);
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(io::Error::other)?);
    let dir = if kind == Kind::Publisher {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut api = rtc.sdp_api();
    let mids = vec![
        (
            api.add_media(MediaKind::Audio, dir, None, None, None),
            MediaKind::Audio,
        ),
        (
            api.add_media(MediaKind::Video, dir, None, None, None),
            MediaKind::Video,
        ),
    ];
    let (offer, pending) = api.apply().ok_or_else(|| io::Error::other("no offer"))?;
    Ok(Pending {
        kind,
        rtc,
        sock,
        addr,
        mids,
        pending,
        offer: offer.to_sdp_string(),
    })
}

fn pt_of(rtc: &Rtc, codec: Codec) -> u8 {
    rtc.codec_config()
        .find(|p| p.spec().codec == codec)
        .map(|p| *p.pt())
        .unwrap_or(255)
}

impl Pending {
    fn finish(mut self, r: &HttpResponse, path: &str, io: IoOpts) -> Result<Peer, String> {
        if r.status != 201 {
            return Err(format!(
                "POST {path}: status {} {}",
                r.status,
                r.body.trim()
            ));
        }
        let location = r
            .header("location")
            .ok_or(format!("POST {path}: no Location"))?
            .to_string();
        let answer = SdpAnswer::from_sdp_string(&r.body).map_err(|e| format!("answer: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| format!("accept_answer: {e}"))?;
        let mut udp = None;
        if self.kind != Kind::Publisher && io.gro {
            let st = UdpSocketState::new((&self.sock).into()).map_err(|e| e.to_string())?;
            let _ = st.set_recv_buffer_size((&self.sock).into(), io.rcvbuf);
            udp = Some(st);
        }
        let video_pt = pt_of(&self.rtc, Codec::Vp8);
        let audio_pt = pt_of(&self.rtc, Codec::Opus);
        Ok(Peer {
            kind: self.kind,
            rtc: self.rtc,
            sock: self.sock,
            udp,
            addr: self.addr,
            mids: self.mids,
            location,
            connected: false,
            closed: false,
            next_timeout: Instant::now(),
            video_pt,
            audio_pt,
            rx: Counts::default(),
            dec: Counts::default(),
            bad_payload: 0,
            last_recv_us: 0,
            last_user_us: 0,
            lat_user: vec![],
            kernel_ts: 0,
            want_keyframe: true,
            keyframe_requests: 0,
            send_errors: 0,
        })
    }
}

#[derive(Clone, Copy)]
struct IoOpts {
    gro: bool,
    rcvbuf: usize,
}

impl Args {
    fn io(&self) -> IoOpts {
        IoOpts {
            gro: self.gro,
            rcvbuf: self.rcvbuf,
        }
    }
}

/// Receive buffers for GRO batches: BATCH × 64 KiB, shared by all peers.
const BATCH: usize = 8;

/// Whether a datagram is RTP (not RTCP, STUN or DTLS), per RFC 7983 / 5761.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..192).contains(&d[0]) && !(64..96).contains(&(d[1] & 0x7f))
}

impl Peer {
    /// One datagram from the server.
    fn on_datagram(
        &mut self,
        d: &[u8],
        src: SocketAddr,
        (recv_us, user_us): (u64, u64),
        lat: &mut Vec<u32>,
    ) {
        if self.kind != Kind::Publisher && is_rtp(d) {
            let pt = d[1] & 0x7f;
            if pt == self.video_pt {
                self.rx.video += 1;
            } else if pt == self.audio_pt {
                self.rx.audio += 1;
            } else {
                self.rx.other += 1;
            }
            if self.kind == Kind::Light {
                return;
            }
            self.last_recv_us = recv_us;
            self.last_user_us = user_us;
        }
        if let Ok(r) = Receive::new(Protocol::Udp, src, self.addr, d) {
            let _ = self.rtc.handle_input(Input::Receive(Instant::now(), r));
            self.drain(lat);
        }
    }

    /// Read the socket until it would block.
    fn read_all(&mut self, bufs: &mut [Vec<u8>], lat: &mut Vec<u32>) {
        let mut errs = 0;
        if self.udp.is_none() {
            loop {
                match self.sock.recv_from(&mut bufs[0]) {
                    Ok((n, src)) => {
                        let d = std::mem::take(&mut bufs[0]);
                        let t = now_us();
                        self.on_datagram(&d[..n], src, (t, t), lat);
                        bufs[0] = d;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // ICMP-induced errors (e.g. ECONNREFUSED after the server left).
                    Err(_) => {
                        errs += 1;
                        if errs > 16 {
                            return;
                        }
                    }
                }
            }
        }
        let mut meta = [RecvMeta::default(); BATCH];
        loop {
            let r = {
                let mut slices: [IoSliceMut; BATCH] = {
                    let mut it = bufs.iter_mut();
                    std::array::from_fn(|_| IoSliceMut::new(it.next().unwrap()))
                };
                let st = self.udp.as_ref().unwrap();
                st.recv((&self.sock).into(), &mut slices, &mut meta)
            };
            match r {
                Ok(n) => {
                    let user_us = now_us();
                    for (m, b) in meta.iter().zip(bufs.iter()).take(n) {
                        let stride = m.stride.max(1);
                        let recv_us = match m.timestamp {
                            Some(t) => {
                                self.kernel_ts += 1;
                                t.as_micros() as u64
                            }
                            None => user_us,
                        };
                        for seg in b[..m.len].chunks(stride) {
                            self.on_datagram(seg, m.addr, (recv_us, user_us), lat);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    errs += 1;
                    if errs > 16 {
                        return;
                    }
                }
            }
        }
    }

    fn timeout(&mut self, now: Instant, lat: &mut Vec<u32>) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain(lat);
    }

    /// Poll the Rtc until it wants a timeout; send its datagrams.
    fn drain(&mut self, lat: &mut Vec<u32>) {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    self.closed = true;
                    self.next_timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    if self.sock.send_to(&t.contents, t.destination).is_err() {
                        self.send_errors += 1;
                    }
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::Closed) => self.closed = true,
                Output::Event(Event::KeyframeRequest(_)) => {
                    self.want_keyframe = true;
                    self.keyframe_requests += 1;
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let pl = &p.payload;
                    let pt = *p.header.payload_type;
                    let (magic, bucket) = if pt == self.video_pt {
                        (MAGIC_VIDEO, &mut self.dec.video)
                    } else if pt == self.audio_pt {
                        (MAGIC_AUDIO, &mut self.dec.audio)
                    } else {
                        self.dec.other += 1;
                        continue;
                    };
                    if pl.len() >= TAG_AT + 20 && pl[TAG_AT..TAG_AT + 4] == magic {
                        *bucket += 1;
                        let sent =
                            u64::from_be_bytes(pl[TAG_AT + 12..TAG_AT + 20].try_into().unwrap());
                        let d = self.last_recv_us.saturating_sub(sent);
                        lat.push(d.min(u32::MAX as u64) as u32);
                        let u = self.last_user_us.saturating_sub(sent);
                        self.lat_user.push(u.min(u32::MAX as u64) as u32);
                    } else {
                        self.bad_payload += 1;
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn mid(&self, kind: MediaKind) -> Mid {
        self.mids.iter().find(|(_, k)| *k == kind).unwrap().0
    }
}

// --------------------------------------------------------------- the driver

struct Load {
    poll: Poll,
    events: Events,
    peers: Vec<Peer>,
    bufs: Vec<Vec<u8>>,
    /// Latency samples (µs) of the current second and of the whole run.
    lat_sec: Vec<u32>,
    lat_all: Vec<u32>,
    min_timeout: Instant,
    measuring: bool,
}

impl Load {
    fn new() -> io::Result<Load> {
        Ok(Load {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            peers: vec![],
            bufs: (0..BATCH).map(|_| vec![0u8; 65536]).collect(),
            lat_sec: vec![],
            lat_all: vec![],
            min_timeout: Instant::now(),
            measuring: false,
        })
    }

    fn add(&mut self, mut p: Peer) -> io::Result<usize> {
        let i = self.peers.len();
        self.poll
            .registry()
            .register(&mut p.sock, Token(i), Interest::READABLE)?;
        p.drain(&mut self.lat_sec);
        self.min_timeout = self.min_timeout.min(p.next_timeout);
        self.peers.push(p);
        Ok(i)
    }

    /// One turn: wait at most `timeout` for sockets, read them, run due timers.
    fn turn(&mut self, timeout: Duration) {
        let now = Instant::now();
        let timeout = timeout.min(self.min_timeout.saturating_duration_since(now));
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        let lat = &mut self.lat_sec;
        for ev in self.events.iter() {
            if let Some(p) = self.peers.get_mut(ev.token().0) {
                p.read_all(&mut self.bufs, lat);
            }
        }
        let now = Instant::now();
        if now >= self.min_timeout {
            let mut min = now + Duration::from_secs(1);
            for p in self.peers.iter_mut() {
                if !p.closed && now >= p.next_timeout {
                    p.timeout(now, lat);
                }
                if !p.closed {
                    min = min.min(p.next_timeout);
                }
            }
            self.min_timeout = min;
        }
        for p in &self.peers {
            self.min_timeout = self.min_timeout.min(p.next_timeout);
        }
        if !self.measuring {
            self.lat_sec.clear();
        }
    }

    fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.turn(end.saturating_duration_since(Instant::now()));
        }
    }

    /// Pump until every peer from `from` on is connected.
    fn wait_connected(&mut self, from: usize, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        loop {
            let missing = self.peers[from..].iter().filter(|p| !p.connected).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{missing} of {} peers not connected after {deadline:?}",
                    self.peers.len() - from
                ));
            }
            self.turn(Duration::from_millis(5));
        }
    }

    /// DELETE every session, deregister and drop the peers.
    fn teardown(&mut self, http_addr: SocketAddr) -> (usize, f64) {
        let t = Instant::now();
        let mut n = 0;
        for p in self.peers.iter_mut() {
            let _ = self.poll.registry().deregister(&mut p.sock);
            if http(http_addr, "DELETE", &p.location, None, "").is_ok() {
                n += 1;
            }
        }
        let el = t.elapsed().as_secs_f64();
        self.peers.clear();
        (n, el)
    }
}

fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i])
}

struct Publisher {
    video_pt: u8,
    audio_pt: u8,
    video_mid: Mid,
    audio_mid: Mid,
    video_sent: u64,
    audio_sent: u64,
    ppf: u64,
    next_key: Instant,
    keyframes: u64,
}

impl Publisher {
    fn send_video(&mut self, p: &mut Peer, fps: u64, size: usize, lat: &mut Vec<u32>) {
        let i = self.video_sent;
        let frame = i / self.ppf;
        let first = i.is_multiple_of(self.ppf);
        let last = i % self.ppf == self.ppf - 1;
        let now = Instant::now();
        let mut payload = vec![0u8; size];
        if first {
            let key = p.want_keyframe || now >= self.next_key;
            if key {
                p.want_keyframe = false;
                self.next_key = now + Duration::from_secs(1);
                self.keyframes += 1;
            }
            // VP8 descriptor S=1, PID=0; payload header P bit (0 = keyframe).
            payload[0] = 0x10;
            payload[1] = if key { 0x00 } else { 0x01 };
        }
        payload[TAG_AT..TAG_AT + 4].copy_from_slice(&MAGIC_VIDEO);
        payload[TAG_AT + 4..TAG_AT + 12].copy_from_slice(&i.to_be_bytes());
        payload[TAG_AT + 12..TAG_AT + 20].copy_from_slice(&now_us().to_be_bytes());
        let ts = (frame * 90_000 / fps) as u32;
        let mut api = p.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(self.video_mid, None) {
            tx.write_rtp(
                RtpWrite::new(self.video_pt.into(), SeqNo::from(i + 1), ts, now, payload)
                    .marker(last)
                    .nackable(true),
            );
        }
        self.video_sent += 1;
        p.drain(lat);
    }

    fn send_audio(&mut self, p: &mut Peer, lat: &mut Vec<u32>) {
        let i = self.audio_sent;
        let now = Instant::now();
        let mut payload = vec![0u8; AUDIO_SIZE];
        payload[0] = 0xfc;
        payload[1] = 0xff;
        payload[TAG_AT..TAG_AT + 4].copy_from_slice(&MAGIC_AUDIO);
        payload[TAG_AT + 4..TAG_AT + 12].copy_from_slice(&i.to_be_bytes());
        payload[TAG_AT + 12..TAG_AT + 20].copy_from_slice(&now_us().to_be_bytes());
        let mut api = p.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(self.audio_mid, None) {
            tx.write_rtp(
                RtpWrite::new(
                    self.audio_pt.into(),
                    SeqNo::from(i + 1),
                    (i * 960) as u32,
                    now,
                    payload,
                )
                .marker(true)
                .nackable(false),
            );
        }
        self.audio_sent += 1;
        p.drain(lat);
    }
}

fn post_peer(args: &Args, kind: Kind, path: &str) -> Result<Peer, String> {
    let p = new_offer(kind).map_err(|e| e.to_string())?;
    // A server still busy with the previous run answers 503: retry a while.
    let mut tries = 0;
    let r = loop {
        let r = http(args.http, "POST", path, Some("application/sdp"), &p.offer)
            .map_err(|e| format!("POST {path}: {e}"))?;
        tries += 1;
        if r.status != 503 || tries >= 40 {
            break r;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    p.finish(&r, path, args.io())
}

fn totals(peers: &[Peer]) -> (Counts, Counts) {
    let mut rx = Counts::default();
    let mut dec = Counts::default();
    for p in peers.iter().filter(|p| p.kind != Kind::Publisher) {
        rx.video += p.rx.video;
        rx.audio += p.rx.audio;
        rx.other += p.rx.other;
        dec.video += p.dec.video;
        dec.audio += p.dec.audio;
        dec.other += p.dec.other;
    }
    (rx, dec)
}

/// One load run: publisher + `n` viewers for `args.duration` seconds.
fn run_load(args: &Args, n: usize, room: &str) -> Result<Value, String> {
    let mut load = Load::new().map_err(|e| e.to_string())?;
    let s0 = snap(args, false);

    // Publisher first, so viewers get its tracks in their answers.
    let pub_path = format!("/whip/{room}");
    let publisher = post_peer(args, Kind::Publisher, &pub_path)?;
    let pi = load.add(publisher).map_err(|e| e.to_string())?;
    load.wait_connected(pi, Duration::from_secs(10))?;

    // Viewers, one after the other; handshakes progress in between.
    let view_path = format!("/whep/{room}");
    let t_setup = Instant::now();
    let mut post_time = 0.0;
    for i in 0..n {
        let kind = if i < args.full_viewers {
            Kind::Full
        } else {
            Kind::Light
        };
        let p = new_offer(kind).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let r = http(
            args.http,
            "POST",
            &view_path,
            Some("application/sdp"),
            &p.offer,
        )
        .map_err(|e| format!("POST {view_path}: {e}"))?;
        post_time += t.elapsed().as_secs_f64();
        let peer = p.finish(&r, &view_path, args.io())?;
        load.add(peer).map_err(|e| e.to_string())?;
        load.turn(Duration::ZERO);
    }
    load.wait_connected(
        0,
        Duration::from_secs(30) + Duration::from_millis(20 * n as u64),
    )?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    load.pump_for(Duration::from_millis(300));
    let after_setup = snap(args, false);

    let (video_pt, audio_pt) = (load.peers[pi].video_pt, load.peers[pi].audio_pt);
    let fps = args.fps;
    let mut pubr = Publisher {
        video_pt,
        audio_pt,
        video_mid: load.peers[pi].mid(MediaKind::Video),
        audio_mid: load.peers[pi].mid(MediaKind::Audio),
        video_sent: 0,
        audio_sent: 0,
        ppf: ((args.video_pps / fps as f64).round() as u64).max(1),
        next_key: Instant::now(),
        keyframes: 0,
    };

    if !args.quiet {
        eprintln!(
            "wisp-load: {n} viewers connected in {setup_s:.2}s; sending {} video pps x {} B + {} audio pps for {}s",
            args.video_pps, args.packet_size, args.audio_pps, args.duration
        );
    }
    let s1 = snap(args, true);
    load.measuring = true;
    let t0 = Instant::now();
    let send_for = Duration::from_secs_f64(args.duration);
    let mut next_tick = t0 + Duration::from_secs(1);
    let mut last_tick = (t0, 0u64, 0u64, s1.clone());
    let mut max_behind = Duration::ZERO;
    let mut per_sec = vec![];
    let video_iv = 1.0 / args.video_pps;
    let audio_iv = if args.audio_pps > 0.0 {
        1.0 / args.audio_pps
    } else {
        f64::INFINITY
    };
    loop {
        let now = Instant::now();
        let el = now.duration_since(t0);
        let sending = el < send_for;
        if sending {
            let elf = el.as_secs_f64();
            // Video packets due by now, then audio.
            let due_v = (elf / video_iv) as u64 + 1;
            if due_v > pubr.video_sent + 1 {
                let behind =
                    Duration::from_secs_f64((due_v - pubr.video_sent - 1) as f64 * video_iv);
                max_behind = max_behind.max(behind);
            }
            while pubr.video_sent < due_v {
                let (lat, p) = (&mut load.lat_sec, &mut load.peers[pi]);
                pubr.send_video(p, fps, args.packet_size, lat);
            }
            let due_a = if audio_iv.is_finite() {
                (elf / audio_iv) as u64 + 1
            } else {
                0
            };
            while pubr.audio_sent < due_a {
                let (lat, p) = (&mut load.lat_sec, &mut load.peers[pi]);
                pubr.send_audio(p, lat);
            }
        } else if el >= send_for + args.drain {
            break;
        }
        // Spin while packets are due within 2 ms; otherwise sleep in poll.
        let wait = if sending {
            let next_v = Duration::from_secs_f64(pubr.video_sent as f64 * video_iv);
            let gap = next_v.saturating_sub(el);
            if gap > Duration::from_millis(2) {
                gap - Duration::from_millis(1)
            } else {
                Duration::ZERO
            }
        } else {
            Duration::from_millis(5)
        };
        load.turn(wait);

        let now = Instant::now();
        if now >= next_tick {
            next_tick += Duration::from_secs(1);
            let (rx, _) = totals(&load.peers);
            let rx_media = rx.video + rx.audio;
            let sent = pubr.video_sent + pubr.audio_sent;
            let s = snap(args, false);
            let dt = now.duration_since(last_tick.0).as_secs_f64();
            let d_sent = sent - last_tick.1;
            let d_rx = rx_media - last_tick.2;
            let exp = d_sent * n as u64;
            let loss = if exp > 0 {
                1.0 - d_rx as f64 / exp as f64
            } else {
                0.0
            };
            load.lat_sec.sort_unstable();
            let p50 = percentile(&load.lat_sec, 0.5);
            let p99 = percentile(&load.lat_sec, 0.99);
            let cpu = match (s.proc_, last_tick.3.proc_) {
                (Some(a), Some(b)) => Some((a.cpu_s - b.cpu_s) / dt),
                _ => None,
            };
            let rec = json!({
                "t_s": now.duration_since(t0).as_secs_f64(),
                "sent_pps": d_sent as f64 / dt,
                "received_pps": d_rx as f64 / dt,
                "loss_ratio": loss,
                "latency_p50_us": p50,
                "latency_p99_us": p99,
                "server_cpu_util": cpu,
                "server_rss_kib": s.proc_.map(|p| p.rss_kib),
            });
            if !args.quiet {
                eprintln!(
                    "  t={:>5.1}s sent {:>7.0} pps  rx {:>8.0} pps  loss {:>7.3}%  lat p50 {:>6} p99 {:>6} us  server cpu {:>5}  rss {:>8} KiB",
                    now.duration_since(t0).as_secs_f64(),
                    d_sent as f64 / dt,
                    d_rx as f64 / dt,
                    loss * 100.0,
                    p50.map(|v| v.to_string()).unwrap_or("-".into()),
                    p99.map(|v| v.to_string()).unwrap_or("-".into()),
                    cpu.map(|c| format!("{:.0}%", c * 100.0)).unwrap_or("-".into()),
                    s.proc_.map(|p| p.rss_kib.to_string()).unwrap_or("-".into()),
                );
            }
            per_sec.push(rec);
            load.lat_all.extend_from_slice(&load.lat_sec);
            load.lat_sec.clear();
            last_tick = (now, sent, rx_media, s);
        }
    }
    load.lat_all.extend_from_slice(&load.lat_sec);
    load.lat_sec.clear();
    load.measuring = false;
    let s2 = snap(args, true);

    let (rx, dec) = totals(&load.peers);
    let sent = pubr.video_sent + pubr.audio_sent;
    let expected = sent * n as u64;
    let received = rx.video + rx.audio;
    let loss = if expected > 0 {
        1.0 - received as f64 / expected as f64
    } else {
        0.0
    };
    let worst_viewer_loss = load
        .peers
        .iter()
        .filter(|p| p.kind != Kind::Publisher)
        .map(|p| 1.0 - (p.rx.video + p.rx.audio) as f64 / sent.max(1) as f64)
        .fold(0.0f64, f64::max);
    // The full viewers' decrypt check: every media datagram they counted by
    // header must have come out of str0m with a valid payload.
    let full: Vec<&Peer> = load.peers.iter().filter(|p| p.kind == Kind::Full).collect();
    let full_hdr: u64 = full.iter().map(|p| p.rx.video + p.rx.audio).sum();
    let full_dec: u64 = full.iter().map(|p| p.dec.video + p.dec.audio).sum();
    let bad: u64 = full.iter().map(|p| p.bad_payload).sum();
    let mut lat_user: Vec<u32> = full
        .iter()
        .flat_map(|p| p.lat_user.iter().copied())
        .collect();
    lat_user.sort_unstable();
    let kernel_ts: u64 = full.iter().map(|p| p.kernel_ts).sum();
    let dur = args.duration;
    let mut lat = std::mem::take(&mut load.lat_all);
    lat.sort_unstable();
    let cpu_s = match (s2.proc_, s1.proc_) {
        (Some(a), Some(b)) => Some(a.cpu_s - b.cpu_s),
        _ => None,
    };
    let sched_s = match (s2.proc_, s1.proc_) {
        (Some(a), Some(b)) if a.sched_s > 0.0 => Some(a.sched_s - b.sched_s),
        _ => None,
    };
    let core_s = match (s2.core, s1.core) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let per_pkt = |c: Option<f64>| {
        c.filter(|_| received > 0)
            .map(|c| c * 1e6 / received as f64)
    };
    let mdelta = |name: &str| {
        if s1.metrics.is_empty() || s2.metrics.is_empty() {
            None
        } else {
            Some(metric_sum(&s2.metrics, name) - metric_sum(&s1.metrics, name))
        }
    };
    let pub_send_errors = load.peers[pi].send_errors;
    let keyframe_requests = load.peers[pi].keyframe_requests;
    let (deleted, del_s) = load.teardown(args.http);
    let rss_before = s0.proc_.map(|p| p.rss_kib);
    let rss_setup = after_setup.proc_.map(|p| p.rss_kib);
    Ok(json!({
        "mode": "load",
        "label": args.label,
        "room": room,
        "viewers": n,
        "full_viewers": args.full_viewers.min(n),
        "duration_s": dur,
        "wall_s": s2.at.duration_since(s1.at).as_secs_f64(),
        "video_pps": args.video_pps,
        "packet_size": args.packet_size,
        "audio_pps": args.audio_pps,
        "sent_video": pubr.video_sent,
        "sent_audio": pubr.audio_sent,
        "keyframes_sent": pubr.keyframes,
        "keyframe_requests": keyframe_requests,
        "publisher_max_behind_ms": max_behind.as_secs_f64() * 1e3,
        "publisher_send_errors": pub_send_errors,
        "expected": expected,
        "received": received,
        "received_video": rx.video,
        "received_audio": rx.audio,
        "received_other": rx.other,
        "forwarded_pps": received as f64 / dur,
        "loss_ratio": loss,
        "worst_viewer_loss_ratio": worst_viewer_loss,
        "full_viewer_header_counted": full_hdr,
        "full_viewer_decrypted_ok": full_dec,
        "full_viewer_decrypted_other": dec.other,
        "full_viewer_bad_payload": bad,
        "latency_samples": lat.len(),
        "latency_p50_us": percentile(&lat, 0.5),
        "latency_p90_us": percentile(&lat, 0.9),
        "latency_p99_us": percentile(&lat, 0.99),
        "latency_max_us": lat.last(),
        "latency_clock": if kernel_ts > 0 { "kernel receive timestamp (SO_TIMESTAMPNS)" } else { "user-space read" },
        "latency_user_p50_us": percentile(&lat_user, 0.5),
        "latency_user_p99_us": percentile(&lat_user, 0.99),
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_packet": per_pkt(cpu_s),
        "server_sched_cpu_s": sched_s,
        "server_sched_cpu_us_per_packet": per_pkt(sched_s),
        "server_core_busy_s": core_s,
        "server_core_us_per_packet": per_pkt(core_s),
        "server_rss_kib": s2.proc_.map(|p| p.rss_kib),
        "server_rss_before_kib": rss_before,
        "server_rss_after_setup_kib": rss_setup,
        "server_forwarded_total": mdelta("wisp_rtp_packets_forwarded_total"),
        "server_udp_send_errors": mdelta("wisp_udp_errors_total"),
        "server_packets_dropped": mdelta("wisp_packets_dropped_total"),
        "udp_rcvbuf_errors": s2.udp.0 - s1.udp.0,
        "udp_sndbuf_errors": s2.udp.1 - s1.udp.1,
        "tool_cpu_s": s2.tool_cpu_s - s1.tool_cpu_s,
        "setup_s": setup_s,
        "setup_per_s": n as f64 / setup_s,
        "setup_post_per_s": n as f64 / post_time.max(1e-9),
        "deleted": deleted,
        "delete_s": del_s,
        "per_second": per_sec,
    }))
}

/// Create `m` idle WHEP sessions as fast as possible, connect them, measure,
/// delete them. Offers are built beforehand so the tool's own `Rtc::build`
/// is not part of the rate.
fn run_setup(args: &Args, m: usize, room: &str) -> Result<Value, String> {
    let mut load = Load::new().map_err(|e| e.to_string())?;
    let path = format!("/whep/{room}");
    let io_opts = args.io();
    let t_build = Instant::now();
    let mut pend: Vec<Option<Pending>> = (0..m)
        .map(|_| new_offer(Kind::Light).map(Some))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let build_s = t_build.elapsed().as_secs_f64();
    load.pump_for(Duration::from_millis(200));
    let s0 = snap(args, false);

    let (job_tx, job_rx) = crossbeam_channel::unbounded::<(usize, String)>();
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<(usize, io::Result<HttpResponse>, f64)>();
    for (i, p) in pend.iter().enumerate() {
        job_tx.send((i, p.as_ref().unwrap().offer.clone())).unwrap();
    }
    drop(job_tx);
    let t0 = Instant::now();
    let mut workers = vec![];
    for _ in 0..args.setup_concurrency {
        let (rx, tx, addr, path) = (job_rx.clone(), res_tx.clone(), args.http, path.clone());
        workers.push(std::thread::spawn(move || {
            while let Ok((i, offer)) = rx.recv() {
                let t = Instant::now();
                let r = http(addr, "POST", &path, Some("application/sdp"), &offer);
                let _ = tx.send((i, r, t.elapsed().as_secs_f64()));
            }
        }));
    }
    drop(res_tx);
    let mut answered = 0usize;
    let mut failed = 0usize;
    let mut first_err = None;
    let mut req_lat = vec![];
    let mut t_last_answer = t0;
    // Accept answers as they come, and pump the peers meanwhile.
    loop {
        match res_rx.recv_timeout(Duration::from_millis(1)) {
            Ok((i, r, el)) => {
                req_lat.push((el * 1e6) as u32);
                let p = pend[i].take().unwrap();
                match r
                    .map_err(|e| e.to_string())
                    .and_then(|r| p.finish(&r, &path, io_opts))
                {
                    Ok(peer) => {
                        answered += 1;
                        t_last_answer = Instant::now();
                        load.add(peer).map_err(|e| e.to_string())?;
                    }
                    Err(e) => {
                        failed += 1;
                        first_err.get_or_insert(e);
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        load.turn(Duration::ZERO);
    }
    for w in workers {
        let _ = w.join();
    }
    let post_s = t_last_answer.duration_since(t0).as_secs_f64();
    let conn = load.wait_connected(0, Duration::from_secs(30));
    let connected = load.peers.iter().filter(|p| p.connected).count();
    let connect_s = t0.elapsed().as_secs_f64();
    let s_connected = snap(args, false);
    load.pump_for(Duration::from_secs(2));
    let s1 = snap(args, false);
    let (deleted, del_s) = load.teardown(args.http);
    std::thread::sleep(Duration::from_millis(500));
    let s2 = snap(args, false);
    req_lat.sort_unstable();
    let rss = |s: &ServerSnap| s.proc_.map(|p| p.rss_kib);
    let growth = match (rss(&s1), rss(&s0)) {
        (Some(a), Some(b)) => Some(a as f64 - b as f64),
        _ => None,
    };
    let cpu = match (s_connected.proc_, s0.proc_) {
        (Some(a), Some(b)) => Some(a.cpu_s - b.cpu_s),
        _ => None,
    };
    Ok(json!({
        "mode": "setup",
        "label": args.label,
        "room": room,
        "viewers": m,
        "duration_s": post_s,
        "forwarded_pps": 0.0,
        "loss_ratio": null,
        "latency_p50_us": null,
        "latency_p99_us": null,
        "server_cpu_s": cpu,
        "server_cpu_us_per_packet": null,
        "server_cpu_ms_per_session": cpu.map(|c| c * 1e3 / answered.max(1) as f64),
        "server_rss_kib": rss(&s1),
        "server_rss_before_kib": rss(&s0),
        "server_rss_after_delete_kib": rss(&s2),
        "rss_per_idle_session_kib": growth.map(|g| g / connected.max(1) as f64),
        "answered": answered,
        "failed": failed,
        "first_error": first_err,
        "connected": connected,
        "connect_error": conn.err(),
        "concurrency": args.setup_concurrency,
        "setup_per_s": answered as f64 / post_s.max(1e-9),
        "connected_per_s": connected as f64 / connect_s,
        "request_p50_us": percentile(&req_lat, 0.5),
        "request_p99_us": percentile(&req_lat, 0.99),
        "tool_offer_build_s": build_s,
        "deleted": deleted,
        "delete_per_s": deleted as f64 / del_s.max(1e-9),
    }))
}

fn fmt_opt(v: &Value, digits: usize) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) if n.is_f64() => format!("{:.*}", digits, n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

fn print_human(r: &Value) {
    let g = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    if g("mode") == "setup" {
        println!(
            "setup: {} sessions answered in {}s = {} /s (concurrency {}), {} connected ({} /s), request p50 {} us p99 {} us",
            fmt_opt(&g("answered"), 0),
            fmt_opt(&g("duration_s"), 3),
            fmt_opt(&g("setup_per_s"), 1),
            fmt_opt(&g("concurrency"), 0),
            fmt_opt(&g("connected"), 0),
            fmt_opt(&g("connected_per_s"), 1),
            fmt_opt(&g("request_p50_us"), 0),
            fmt_opt(&g("request_p99_us"), 0),
        );
        println!(
            "       server CPU {} ms/session, RSS {} -> {} KiB = {} KiB per idle session; after DELETE {} KiB ({} deletes/s)",
            fmt_opt(&g("server_cpu_ms_per_session"), 2),
            fmt_opt(&g("server_rss_before_kib"), 0),
            fmt_opt(&g("server_rss_kib"), 0),
            fmt_opt(&g("rss_per_idle_session_kib"), 1),
            fmt_opt(&g("server_rss_after_delete_kib"), 0),
            fmt_opt(&g("delete_per_s"), 1),
        );
        return;
    }
    println!(
        "{:>7} {:>10} {:>11} {:>9} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "viewers",
        "sent_pps",
        "fwd_pps",
        "loss_%",
        "p50_us",
        "p99_us",
        "cpu_s",
        "us/pkt",
        "rss_KiB",
        "setup/s",
        "tool_cpu"
    );
    let sent = g("sent_video").as_f64().unwrap_or(0.0) + g("sent_audio").as_f64().unwrap_or(0.0);
    println!(
        "{:>7} {:>10.0} {:>11.0} {:>9.4} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9}",
        fmt_opt(&g("viewers"), 0),
        sent / g("duration_s").as_f64().unwrap_or(1.0),
        g("forwarded_pps").as_f64().unwrap_or(0.0),
        g("loss_ratio").as_f64().unwrap_or(0.0) * 100.0,
        fmt_opt(&g("latency_p50_us"), 0),
        fmt_opt(&g("latency_p99_us"), 0),
        fmt_opt(&g("server_cpu_s"), 2),
        fmt_opt(&g("server_cpu_us_per_packet"), 3),
        fmt_opt(&g("server_rss_kib"), 0),
        fmt_opt(&g("setup_per_s"), 0),
        fmt_opt(&g("tool_cpu_s"), 2),
    );
    println!(
        "  check: full viewers counted {} by header, {} decrypted with valid payload ({} bad); udp rcvbuf drops {}, server send errors {}, server dropped {}",
        fmt_opt(&g("full_viewer_header_counted"), 0),
        fmt_opt(&g("full_viewer_decrypted_ok"), 0),
        fmt_opt(&g("full_viewer_bad_payload"), 0),
        fmt_opt(&g("udp_rcvbuf_errors"), 0),
        fmt_opt(&g("server_udp_send_errors"), 0),
        fmt_opt(&g("server_packets_dropped"), 0),
    );
}

fn emit(args: &Args, r: &Value) {
    if args.json {
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("per_second");
        }
        println!("{r}");
    } else {
        print_human(r);
    }
    if let Ok(path) = std::env::var("WISP_LOAD_LOG") {
        // Full record (with per-second samples) appended as JSON lines.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{r}");
        }
    }
}

fn main() {
    let _ = start();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(m) = args.setup_rate {
        match run_setup(&args, m, &args.room) {
            Ok(r) => emit(&args, &r),
            Err(e) => {
                eprintln!("wisp-load: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if !args.ramp {
        match run_load(&args, args.viewers, &args.room) {
            Ok(r) => emit(&args, &r),
            Err(e) => {
                eprintln!("wisp-load: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let steps: Vec<usize> = if !args.ramp_pps.is_empty() {
        vec![args.viewers; args.ramp_pps.len()]
    } else if args.ramp_steps.is_empty() {
        let mut v = vec![10, 20, 50, 100, 200, 400];
        while *v.last().unwrap() * 2 <= args.max_viewers {
            let x = *v.last().unwrap() * 2;
            v.push(x);
        }
        v.retain(|&x| x <= args.max_viewers);
        v
    } else {
        args.ramp_steps.clone()
    };
    let mut held: Option<Value> = None;
    let mut failed: Option<Value> = None;
    for (k, n) in steps.into_iter().enumerate() {
        let mut a = args.clone();
        if let Some(pps) = args.ramp_pps.get(k) {
            a.video_pps = *pps;
        }
        let room = format!("{}-{n}-{}", args.room, a.video_pps as u64);
        match run_load(&a, n, &room) {
            Ok(r) => {
                emit(&args, &r);
                let loss = r["loss_ratio"].as_f64().unwrap_or(1.0);
                if loss > args.max_loss {
                    failed =
                        Some(json!({"viewers": n, "video_pps": a.video_pps, "loss_ratio": loss}));
                    break;
                }
                held = Some(r);
            }
            Err(e) => {
                eprintln!("wisp-load: {n} viewers: {e}");
                failed = Some(json!({"viewers": n, "video_pps": a.video_pps, "error": e}));
                break;
            }
        }
        // Let the server settle between steps.
        std::thread::sleep(Duration::from_secs(1));
    }
    let summary = json!({
        "mode": "ramp",
        "label": args.label,
        "max_loss": args.max_loss,
        "held_viewers": held.as_ref().map(|h| h["viewers"].clone()),
        "held_video_pps": held.as_ref().map(|h| h["video_pps"].clone()),
        "held_forwarded_pps": held.as_ref().map(|h| h["forwarded_pps"].clone()),
        "held_server_cpu_us_per_packet": held.as_ref().map(|h| h["server_cpu_us_per_packet"].clone()),
        "failed_at": failed,
    });
    if let Ok(path) = std::env::var("WISP_LOAD_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{summary}");
        }
    }
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "ramp: held {} viewers at {} forwarded pps (loss <= {}); stopped at {}",
            fmt_opt(&summary["held_viewers"], 0),
            fmt_opt(&summary["held_forwarded_pps"], 0),
            args.max_loss,
            summary["failed_at"]
        );
    }
}

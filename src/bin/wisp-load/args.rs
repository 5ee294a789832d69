//! The command line: the usage text, the flags and their defaults.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::media::TAG_AT;
use crate::peer::IoOpts;

const USAGE: &str = "wisp-load: fan-out load generator for wisp (WHIP publisher + N WHEP viewers)

usage: wisp-load [options]
  --url URL              server base URL (default http://127.0.0.1:8080)
  --publish-url URL      WHIP to this server instead of --url
  --view-url URL         a WHEP server; repeat it for several: viewer i goes to
                         the (i mod count)-th, full viewers too (default: --url)
  --node-pid URL=PID     read the CPU and RSS of the server at URL from /proc/PID
                         (per-node figures; --server-pid is --url's); repeatable
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

/// Everything the flags set.
#[derive(Clone, Debug)]
pub struct Args {
    /// The server's HTTP address (WHIP, WHEP, DELETE, `/metrics`).
    pub http: SocketAddr,
    /// `--publish-url`: where the publisher goes (None: `http`).
    pub publish_url: Option<SocketAddr>,
    /// `--view-url`, in order (empty: `http` alone).
    pub view_urls: Vec<SocketAddr>,
    /// `--node-pid`: the server process of a node.
    pub node_pids: Vec<(SocketAddr, u32)>,
    pub room: String,
    pub viewers: usize,
    pub duration: f64,
    pub video_pps: f64,
    pub packet_size: usize,
    pub audio_pps: f64,
    pub fps: u64,
    pub full_viewers: usize,
    pub server_pid: Option<u32>,
    pub server_core: Option<usize>,
    pub json: bool,
    pub label: Option<String>,
    pub ramp: bool,
    pub ramp_steps: Vec<usize>,
    pub ramp_pps: Vec<f64>,
    pub max_loss: f64,
    pub max_viewers: usize,
    pub setup_rate: Option<usize>,
    pub setup_concurrency: usize,
    pub drain: Duration,
    pub quiet: bool,
    pub gro: bool,
    pub rcvbuf: usize,
}

impl Args {
    /// The viewers' socket options.
    pub fn io(&self) -> IoOpts {
        IoOpts {
            gro: self.gro,
            rcvbuf: self.rcvbuf,
        }
    }

    /// The server the publisher POSTs to.
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish_url.unwrap_or(self.http)
    }

    /// The servers viewers POST to, in round-robin order.
    pub fn view_addrs(&self) -> Vec<SocketAddr> {
        if self.view_urls.is_empty() {
            vec![self.http]
        } else {
            self.view_urls.clone()
        }
    }

    /// The index in [`Args::view_addrs`] of viewer `i` (round robin).
    pub fn view_index(&self, i: usize) -> usize {
        i % self.view_urls.len().max(1)
    }

    /// Every server the run touches (publish, then views), each once.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.publish_addr()];
        for a in self.view_addrs() {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// The process of the server at `addr`: its `--node-pid`, else
    /// `--server-pid` when it is `--url`.
    pub fn pid_of(&self, addr: SocketAddr) -> Option<u32> {
        self.node_pids
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, p)| *p)
            .or(self.server_pid.filter(|_| addr == self.http))
    }
}

/// Parses the process arguments; `--help` prints the usage and exits 0.
pub fn parse_args() -> Result<Args, String> {
    parse_from(std::env::args().skip(1))
}

/// Parses `args` (the flags without the program name).
pub fn parse_from(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        http: "127.0.0.1:8080".parse().unwrap(),
        publish_url: None,
        view_urls: vec![],
        node_pids: vec![],
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
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(f: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{f}: bad value {v:?}"))
        }
        fn list<T: std::str::FromStr>(f: &str, v: String) -> Result<Vec<T>, String> {
            v.split(',').map(|s| num(f, s.trim().to_string())).collect()
        }
        match flag.as_str() {
            "--url" => a.http = parse_url(&val()?)?,
            "--publish-url" => a.publish_url = Some(parse_url(&val()?)?),
            "--view-url" => a.view_urls.push(parse_url(&val()?)?),
            "--node-pid" => {
                let v = val()?;
                let (u, p) = v
                    .rsplit_once('=')
                    .ok_or(format!("--node-pid {v:?}: want URL=PID"))?;
                a.node_pids
                    .push((parse_url(u)?, num(&flag, p.to_string())?));
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
            "--ramp-steps" => a.ramp_steps = list(&flag, val()?)?,
            "--ramp-pps" => {
                a.ramp = true;
                a.ramp_pps = list(&flag, val()?)?
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

/// The socket address of an `http://host:port[/...]` URL (plain HTTP only).
fn parse_url(v: &str) -> Result<SocketAddr, String> {
    let host = v.trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    host.to_socket_addrs()
        .map_err(|e| format!("--url {v}: {e}"))?
        .next()
        .ok_or(format!("--url {v}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        parse_from(v.iter().map(|s| s.to_string()))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_server_by_default() {
        let a = parse(&["--url", "http://127.0.0.1:9000", "--server-pid", "42"]).unwrap();
        assert_eq!(a.publish_addr(), addr("127.0.0.1:9000"));
        assert_eq!(a.view_addrs(), vec![addr("127.0.0.1:9000")]);
        assert_eq!((a.view_index(0), a.view_index(7)), (0, 0));
        assert_eq!(a.nodes(), vec![addr("127.0.0.1:9000")]);
        assert_eq!(a.pid_of(addr("127.0.0.1:9000")), Some(42));
    }

    #[test]
    fn publish_to_one_view_through_others_round_robin() {
        let a = parse(&[
            "--url",
            "http://127.0.0.1:9000",
            "--publish-url",
            "http://127.0.0.1:9000/",
            "--view-url",
            "http://127.0.0.1:9000",
            "--view-url",
            "http://127.0.0.1:9001/whep",
            "--view-url",
            "127.0.0.1:9002",
            "--server-pid",
            "10",
            "--node-pid",
            "http://127.0.0.1:9001=11",
        ])
        .unwrap();
        let (o, e1, e2) = (
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9001"),
            addr("127.0.0.1:9002"),
        );
        assert_eq!(a.publish_addr(), o);
        assert_eq!(a.view_addrs(), vec![o, e1, e2]);
        let idx: Vec<usize> = (0..7).map(|i| a.view_index(i)).collect();
        assert_eq!(idx, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(a.nodes(), vec![o, e1, e2]);
        // --server-pid stays --url's; --node-pid names the others.
        assert_eq!(a.pid_of(o), Some(10));
        assert_eq!(a.pid_of(e1), Some(11));
        assert_eq!(a.pid_of(e2), None);
    }

    #[test]
    fn nodes_list_the_publish_server_first_and_once() {
        let a = parse(&[
            "--publish-url",
            "http://127.0.0.1:9001",
            "--view-url",
            "http://127.0.0.1:9002",
            "--view-url",
            "http://127.0.0.1:9001",
            "--view-url",
            "http://127.0.0.1:9002",
        ])
        .unwrap();
        assert_eq!(
            a.nodes(),
            vec![addr("127.0.0.1:9001"), addr("127.0.0.1:9002")]
        );
        // --url (the default) is neither: its --server-pid would not apply.
        assert_eq!(a.pid_of(addr("127.0.0.1:9001")), None);
    }

    #[test]
    fn bad_cluster_flags_are_errors() {
        assert!(parse(&["--view-url"]).is_err());
        assert!(parse(&["--node-pid", "http://127.0.0.1:9001"]).is_err());
        assert!(parse(&["--node-pid", "http://127.0.0.1:9001=x"]).is_err());
        assert!(parse(&["--publish-url", "http://no-such-host.invalid:1"]).is_err());
    }

    #[test]
    fn existing_flags_keep_their_meaning() {
        let a = parse(&[
            "--viewers",
            "5",
            "--full-viewers",
            "2",
            "--ramp-pps",
            "100,200",
            "--no-gro",
        ])
        .unwrap();
        assert_eq!(
            (a.viewers, a.full_viewers, a.ramp, a.gro),
            (5, 2, true, false)
        );
        assert_eq!(a.ramp_pps, vec![100.0, 200.0]);
        assert!(a.view_urls.is_empty() && a.publish_url.is_none());
    }
}

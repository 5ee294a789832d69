//! TestNet: the wisp core and real str0m client peers on an in-memory network
//! with a fake clock. No sockets, no sleeps; every loop is bounded; loss is
//! drawn from a seeded generator.
//!
//! Test support behind the `fuzzing` feature: the integration tests
//! (`tests/common`), the benchmark and the fuzz bodies ([`crate::fuzzing`])
//! share this one network, its client peers and its media generator.
//!
//! - this file: the net, delivery and the clock;
//! - `join`: clients' offers, joining, DELETE and PATCH;
//! - `media`: what publishers send (plain and simulcast, every codec) and
//!   how a viewer's packets are read back;
//! - `faults`: loss, jitter, capped links, NAT rebinding, raw datagrams;
//! - `cores`: several cores in one net (cluster nodes, workers).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::config::DtlsCert;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::sfu::dtls::{crypto_provider, new_dtls_cert};
use crate::sfu::{Command, Reply, RoomName, SessionToken, Sfu, SfuConfig};

mod cores;
mod faults;
mod join;
mod media;
mod spread;

pub use faults::Link;
pub use media::{
    only_codec, sim_size, vp9_profile, SimLayer, SimPacket, SIM_DESC_LEN, SIM_TRAILER_LEN, VP9_SS,
};
pub use spread::test_workers;

/// Most iterations of any loop that drains a peer or the core, or settles
/// the net: a peer that keeps producing output forever is a bug.
const MAX_ITER: usize = 100_000;

/// The server's address (RFC 5737 documentation range, never bound).
pub const SERVER: ([u8; 4], u16) = ([198, 51, 100, 1], 8189);

pub fn server_addr() -> SocketAddr {
    SocketAddr::from(SERVER)
}

/// `n` local addresses for upstreams of core `k` (its
/// `SfuConfig::upstream_addrs`): its address with ports 9000.. .
pub fn upstream_addrs(k: usize, n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::new(core_addr(k).ip(), 9000 + i as u16))
        .collect()
}

/// The address of core `k` of a net with several ([`TestNet::add_core`]):
/// core 0 is [`server_addr`], core k the next documentation address.
pub fn core_addr(k: usize) -> SocketAddr {
    let (ip, port) = SERVER;
    SocketAddr::from(([ip[0], ip[1], ip[2], ip[3] + k as u8], port))
}

/// The DTLS certificate of every test core in this process, made once (as
/// the server makes one per process): a key pair costs about a millisecond.
pub fn server_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(new_dtls_cert).clone()
}

/// The DTLS certificate of every client peer in this process, made once.
pub fn client_cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(new_dtls_cert).clone()
}

/// A packet a viewer received.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub kind: MediaKind,
    pub seq: u64,
    pub ts: u32,
    pub pt: Pt,
    pub payload: Vec<u8>,
}

/// A str0m client peer (publisher or viewer).
pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    /// The core it joined (0: `TestNet::sfu`).
    pub core: usize,
    pub token: Option<SessionToken>,
    pub room: String,
    pub publisher: bool,
    pub mids: Vec<(Mid, MediaKind)>,
    pub got: Vec<Got>,
    pub keyframe_requests: usize,
    pub connected_at: Option<Instant>,
    pub alive: bool,
    /// Probability (0..1) that a datagram *to* this client is lost.
    pub inbound_loss: f64,
    /// Drop everything to and from this client (it vanished).
    pub blackholed: bool,
    next: Instant,
    // Publisher media state.
    video_seq: u64,
    audio_seq: u64,
    frame: u64,
    pub counter: u64,
    pub want_keyframe: bool,
    /// Publisher: simulcast layers sent on the video m-line (empty: plain video).
    pub sim: Vec<SimLayer>,
    /// Capped downlink toward this client (server → client), if any.
    pub downlink: Option<Link>,
    /// The address the server sees for this client (NAT rebinding; see
    /// [`TestNet::rebind`]); `None`: its own address.
    pub nat: Option<SocketAddr>,
    /// Probability (0..1) that a datagram *from* this client is lost.
    pub uplink_loss: f64,
    /// Extra random delay (0..this) per datagram from this client: reorders.
    pub uplink_jitter: Duration,
    /// Publisher: count keyframe requests but send keyframes only on its
    /// own schedule (OBS's WHIP output has no PLI handling).
    pub ignore_keyframe_requests: bool,
    /// The session's current ETag (from the answer; PATCH callers update it).
    pub etag: String,
    /// The server's ICE ufrag and password for this session (from the answer).
    pub server_ice: (String, String),
    /// The client's own ICE ufrag (from its offer).
    pub ufrag: String,
}

/// The `a=ice-ufrag` and `a=ice-pwd` values of an SDP (empty when absent).
fn ice_of(sdp: &str) -> (String, String) {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .unwrap_or("")
            .to_string()
    };
    (attr("a=ice-ufrag:"), attr("a=ice-pwd:"))
}

/// A datagram on the wire.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// How a client shapes its offer.
pub struct JoinOpts {
    /// Put the host candidate in the offer (false: OBS, FFmpeg).
    pub candidate_in_offer: bool,
    /// Rewrite the offer text before it is sent.
    pub mangle: Option<fn(String) -> String>,
    /// Adjust the client's Rtc config (codecs).
    pub config: Option<fn(str0m::RtcConfig) -> str0m::RtcConfig>,
    /// Per-publish recording override.
    pub record: Option<bool>,
    /// Publisher: offer simulcast on the video m-line with these layers
    /// (rid, packets per frame, packet size), highest first like browsers.
    pub simulcast: Option<&'static [(&'static str, usize, usize)]>,
}

impl Default for JoinOpts {
    fn default() -> Self {
        JoinOpts {
            candidate_in_offer: true,
            mangle: None,
            config: None,
            record: None,
            simulcast: None,
        }
    }
}

pub struct TestNet {
    /// Everything the core handed to the recorder, in order.
    pub recorded: Vec<crate::sfu::recorder_tap::RecordEvent>,
    pub last_offer: String,
    pub last_answer: String,
    pub last_etag: String,
    pub now: Instant,
    pub start: Instant,
    /// Core 0, at [`server_addr`].
    pub sfu: Sfu,
    /// Cores 1.. ([`TestNet::add_core`]), core k at [`core_addr`]`(k)`: nodes
    /// of one cluster, linked by the same net.
    pub cores: Vec<Sfu>,
    /// The relay between workers of one process ([`TestNet::workers`]):
    /// one bounded queue per (from, to) pair of cores.
    pub relay: BTreeMap<(usize, usize), std::collections::VecDeque<crate::sfu::relay::RelayMsg>>,
    /// Capacity of each relay queue.
    pub relay_capacity: usize,
    /// Cores whose relay queues are not read (a stalled loop).
    pub relay_stalled: Vec<usize>,
    /// Simulcast video packets queued on the relay, per (receiving core,
    /// rid): which layers each worker is relayed.
    pub relayed_layers: BTreeMap<(usize, String), u64>,
    /// The home worker the next join is relayed from ([`TestNet::view_relayed`]).
    join_home: Option<usize>,
    /// With `WISP_TEST_WORKERS=n` (n > 1, see [`TestNet::with_config`]):
    /// `n`, the cores that are one process's workers, viewers spread over
    /// them; 0 otherwise.
    pub spread: usize,
    /// Viewers placed so far in spread mode (round robin).
    spread_next: usize,
    pub clients: Vec<Client>,
    queue: BTreeMap<(Instant, u64), Datagram>,
    seq: u64,
    rng: u64,
    pub latency: Duration,
    pub next_media: Instant,
    pub media_on: bool,
    /// Time between two media ticks of every publisher (33 ms: 30 frames/s).
    pub media_every: Duration,
    /// When `Some`, every datagram delivered (to the server or to a client)
    /// is appended.
    pub tap: Option<Vec<Datagram>>,
    /// Destinations of datagrams the server sent to an address that is no client.
    pub stray: Vec<SocketAddr>,
    /// Every upstream event of every core, with the core's index, in order.
    pub upstream_events: Vec<(usize, crate::sfu::UpstreamEvent)>,
    /// Cores killed ([`TestNet::kill_core`]).
    pub cores_down: Vec<usize>,
    /// Cores whose `handle_timeout` [`TestNet::step`] does not call: they
    /// see only datagrams (and `poll_output`), so whatever they send then
    /// was caused by a datagram at its own `now`, never by a timer.
    pub timers_held: Vec<usize>,
    /// A client error ends that client (`alive` false, like a closed browser
    /// tab) instead of failing: for the fuzz bodies, whose inputs end
    /// sessions and silence clients at any moment (a client whose server
    /// side is gone before DTLS times out). Tests leave it false.
    pub client_errors_end_clients: bool,
}

impl TestNet {
    pub fn new(seed: u64) -> TestNet {
        Self::with_config(seed, SfuConfig::default())
    }

    /// A net whose core has `config` (candidates and seed are set here).
    ///
    /// With the environment variable `WISP_TEST_WORKERS=n` (n > 1), the
    /// net is instead `n` workers' cores of one process
    /// ([`TestNet::workers`]), and joins that name core 0 are placed as the
    /// process's dispatcher would (`src/workers.rs`): a publisher on core 0,
    /// every room's home; viewers round robin over the cores from core 1,
    /// relayed from core 0 when not on it, and served by the home when their
    /// core refuses the copy; the session and room limits apply to the
    /// cores together. So a suite written for one core runs with its
    /// viewers on other workers, through the relay. The aggregate views
    /// ([`TestNet::stats`], [`TestNet::counts`], [`TestNet::list_rooms`])
    /// are the process's, as `/metrics` and `/api/rooms` show them.
    pub fn with_config(seed: u64, config: SfuConfig) -> TestNet {
        match test_workers() {
            n if n > 1 => {
                let mut net = Self::workers(seed, n, config);
                net.spread = n;
                net
            }
            _ => Self::at(seed, config, Instant::now()),
        }
    }

    /// [`TestNet::with_config`] with the clock starting at `now` (fuzz bodies
    /// use one fixed origin, so that runs differ only by their input).
    pub fn at(seed: u64, config: SfuConfig, now: Instant) -> TestNet {
        let config = SfuConfig {
            candidates: vec![server_addr()],
            seed: [seed as u8; 32],
            dtls_cert: config.dtls_cert.or_else(|| Some(server_cert())),
            ..config
        };
        TestNet {
            recorded: Vec::new(),
            last_offer: String::new(),
            last_answer: String::new(),
            last_etag: String::new(),
            now,
            start: now,
            sfu: Sfu::new(config, now),
            cores: Vec::new(),
            relay: BTreeMap::new(),
            relay_capacity: 1024,
            relay_stalled: Vec::new(),
            relayed_layers: BTreeMap::new(),
            join_home: None,
            spread: 0,
            spread_next: 0,
            clients: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            latency: Duration::from_millis(5),
            next_media: now,
            media_on: true,
            media_every: Duration::from_millis(33),
            tap: None,
            stray: Vec::new(),
            upstream_events: Vec::new(),
            cores_down: Vec::new(),
            timers_held: Vec::new(),
            client_errors_end_clients: false,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Deliver a raw datagram to the server now; returns the datagrams the
    /// server sends back to `from` in response (other output stays queued).
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.sfu
            .handle_receive(self.now, from, server_addr(), bytes);
        let mut back = vec![];
        for _ in 0..MAX_ITER {
            match self.sfu.poll_output() {
                crate::sfu::Output::Transmit(t) if t.destination == from => {
                    back.push(t.contents.to_vec())
                }
                crate::sfu::Output::Transmit(t) => {
                    self.push(server_addr(), t.destination, t.contents.to_vec())
                }
                crate::sfu::Output::Record(r) => self.recorded.push(r),
                crate::sfu::Output::Relay { to, msg } => self.relay_push(0, to, msg),
                crate::sfu::Output::Upstream(u) => self.upstream_events.push((0, u)),
                crate::sfu::Output::Timeout(_) => return back,
            }
        }
        panic!("the core never reached a timeout");
    }

    /// Hand a datagram from `from` to the core now and [`TestNet::settle`]:
    /// with zero `latency`, everything it causes happens at once.
    pub fn deliver_now(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.sfu
            .handle_receive(self.now, from, server_addr(), bytes);
        self.settle();
    }

    /// Deliver every datagram due by `now`, and what those cause, until
    /// nothing due is in flight; the clock does not move. Returns the core's
    /// next timeout.
    pub fn settle(&mut self) -> Instant {
        for _ in 0..MAX_ITER {
            let next = self.drain_sfu();
            match self.queue.first_key_value() {
                Some(((t, _), _)) if *t <= self.now => {
                    let (_, d) = self.queue.pop_first().expect("a first entry");
                    self.deliver(d);
                }
                _ => return next,
            }
        }
        panic!("the net never went quiet");
    }

    /// Jump the clock by `d` without running anything in between (a
    /// suspended host), let the core see the new time, and settle.
    pub fn jump(&mut self, d: Duration) {
        self.now += d;
        self.next_media = self.now;
        self.sfu.handle_timeout(self.now);
        for c in self.cores.iter_mut() {
            c.handle_timeout(self.now);
        }
        self.settle();
    }

    fn push(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.push_at(self.now + self.latency, from, to, bytes);
    }

    fn push_at(&mut self, at: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue
            .insert((at, self.seq), Datagram { from, to, bytes });
    }

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        let mut out = vec![];
        let errors_end = self.client_errors_end_clients;
        {
            let c = &mut self.clients[i];
            if !c.alive {
                return;
            }
            let mut quiet = false;
            for _ in 0..MAX_ITER {
                match c.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        c.next = t;
                        quiet = true;
                        break;
                    }
                    Ok(Output::Transmit(t)) => {
                        out.push((t.source, t.destination, t.contents.to_vec()))
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::Connected => c.connected_at = Some(now),
                        Event::KeyframeRequest(r) => {
                            c.keyframe_requests += 1;
                            let honour = !c.ignore_keyframe_requests;
                            c.want_keyframe |= honour;
                            for l in c.sim.iter_mut() {
                                if r.rid.is_none() || r.rid.as_deref() == Some(l.rid) {
                                    l.want_keyframe |= honour;
                                    l.keyframe_requests += 1;
                                }
                            }
                        }
                        Event::RtpPacket(p) => {
                            let mid = c
                                .rtc
                                .direct_api()
                                .stream_rx(&p.header.ssrc)
                                .map(|s| s.mid());
                            let kind = c
                                .mids
                                .iter()
                                .find(|(m, _)| Some(*m) == mid)
                                .map(|(_, k)| *k)
                                .unwrap_or(MediaKind::Audio);
                            c.got.push(Got {
                                at: now,
                                kind,
                                seq: *p.seq_no,
                                ts: p.header.timestamp,
                                pt: p.header.payload_type,
                                payload: p.payload.to_vec(),
                            });
                        }
                        _ => {}
                    },
                    Err(_) if errors_end => {
                        c.alive = false;
                        quiet = true;
                        break;
                    }
                    Err(e) => panic!("client {i} error: {e}"),
                }
            }
            assert!(quiet, "client {i} never reached a timeout");
        }
        let blackholed = self.clients[i].blackholed;
        for (src, dst, b) in out {
            if !blackholed {
                self.push_from_client(i, src, dst, b);
            }
        }
    }

    /// Drain every core (not a killed one), and hand relayed messages between workers over
    /// until none is left to hand (a stalled worker's wait in their queue).
    fn drain_sfu(&mut self) -> Instant {
        for _ in 0..MAX_ITER {
            let mut next = self.now + Duration::from_secs(1);
            for k in 0..=self.cores.len() {
                if !self.cores_down.contains(&k) {
                    next = next.min(self.drain_core(k));
                }
            }
            if !self.deliver_relayed() {
                return next;
            }
        }
        panic!("the workers never went quiet");
    }

    /// Queue a relay message from core `from` to core `to`; a full queue
    /// hands it back to the sender (which counts it).
    fn relay_push(&mut self, from: usize, to: usize, msg: crate::sfu::relay::RelayMsg) {
        let (cap, n) = (self.relay_capacity, self.cores.len() + 1);
        let q = self.relay.entry((from, to)).or_default();
        if q.len() >= cap || to >= n {
            self.core(from).relay_dropped(msg);
        } else {
            if let crate::sfu::relay::RelayBody::Packet(p) = &msg.body {
                if p.simulcast {
                    let rid = p.rid.map(|r| r.to_string()).unwrap_or_default();
                    *self.relayed_layers.entry((to, rid)).or_default() += 1;
                }
            }
            q.push_back(msg);
        }
    }

    /// Simulcast video packets of layer `rid` relayed to core `to` so far.
    pub fn relayed(&self, to: usize, rid: &str) -> u64 {
        self.relayed_layers
            .get(&(to, rid.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Hand every queued relay message to its core (not a stalled one's);
    /// returns whether any was handed.
    fn deliver_relayed(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        let pairs: Vec<(usize, usize)> = self.relay.keys().copied().collect();
        for (from, to) in pairs {
            if self.relay_stalled.contains(&to) || self.cores_down.contains(&to) {
                continue;
            }
            let msgs: Vec<_> = self
                .relay
                .get_mut(&(from, to))
                .map(|q| q.drain(..).collect())
                .unwrap_or_default();
            for m in msgs {
                any = true;
                self.core(to).handle_relay(now, m);
            }
        }
        any
    }

    /// Queue everything core `k` sends: to a client (with its loss and
    /// link), to another core, or stray.
    fn drain_core(&mut self, k: usize) -> Instant {
        for _ in 0..MAX_ITER {
            match self.core(k).poll_output() {
                crate::sfu::Output::Transmit(t) => self.send_from_core(k, t),
                crate::sfu::Output::Record(r) => self.recorded.push(r),
                crate::sfu::Output::Relay { to, msg } => self.relay_push(k, to, msg),
                crate::sfu::Output::Upstream(u) => self.upstream_events.push((k, u)),
                crate::sfu::Output::Timeout(t) => return t,
            }
        }
        panic!("core {k} never reached a timeout");
    }

    /// Put a datagram core `k` made on the net: to a client (with its loss
    /// and link), to another core, or stray. For tests that poll a core
    /// themselves.
    pub fn send_from_core(&mut self, k: usize, t: str0m::net::Transmit) {
        let from = core_addr(k);
        let to = t.destination;
        if self.core_at(to).is_some() {
            // From the socket it names: an upstream may have its own.
            self.push(t.source, to, t.contents.to_vec());
            return;
        }
        let target = self
            .clients
            .iter()
            .position(|c| c.wire_addr() == to)
            .map(|i| (i, self.clients[i].blackholed, self.clients[i].inbound_loss));
        let lost = match target {
            Some((_, blackholed, loss)) => blackholed || (loss > 0.0 && self.random() < loss),
            None => {
                self.stray.push(to);
                true
            }
        };
        if lost {
            return;
        }
        let i = target.map(|t| t.0).unwrap();
        let now = self.now;
        let len = t.contents.len();
        match self.clients[i].downlink.as_mut() {
            None => self.push(from, to, t.contents.to_vec()),
            Some(link) => {
                let start = link.busy_until.max(now);
                if start - now > link.max_queue {
                    link.dropped += 1;
                    return;
                }
                // IP + UDP headers count on the wire.
                let bits = (len as u64 + 28) * 8;
                link.busy_until =
                    start + Duration::from_nanos(bits * 1_000_000_000 / link.rate_bps);
                link.delivered_bytes += len as u64;
                let at = link.busy_until + self.latency;
                self.push_at(at, from, to, t.contents.to_vec());
            }
        }
    }

    /// Hand a datagram that is due to its receiver, the core or a client
    /// (nothing to or from a blackholed client arrives).
    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        if let Some(k) = self.core_at(d.to) {
            if self.cores_down.contains(&k) {
                return;
            }
            if self
                .clients
                .iter()
                .any(|c| c.wire_addr() == d.from && c.blackholed)
            {
                return;
            }
            self.core(k).handle_receive(now, d.from, d.to, &d.bytes);
        } else if let Some(i) = self
            .clients
            .iter()
            .position(|c| c.wire_addr() == d.to && c.alive)
        {
            if self.clients[i].blackholed {
                return;
            }
            // Behind a NAT the client sees its own address as the destination.
            let local = self.clients[i].addr;
            let recv = Receive::new(Protocol::Udp, d.from, local, &d.bytes).unwrap();
            let _ = self.clients[i].rtc.handle_input(Input::Receive(now, recv));
            self.drain_client(i);
        } else {
            return;
        }
        if let Some(tap) = self.tap.as_mut() {
            tap.push(d);
        }
    }

    /// Advance to the next event (delivery, timer or media tick) and handle it.
    pub fn step(&mut self) {
        let sfu_next = self.drain_sfu();
        let mut next = sfu_next;
        for c in self.clients.iter().filter(|c| c.alive) {
            next = next.min(c.next);
        }
        if let Some(((t, _), _)) = self.queue.first_key_value() {
            next = next.min(*t);
        }
        if self.media_on {
            next = next.min(self.next_media);
        }
        // Never go backwards; at least 100 µs forward when nothing is due, so no loop spins.
        self.now = if next > self.now {
            next
        } else {
            self.now + Duration::from_micros(100)
        };
        let now = self.now;

        // Deliveries due.
        while let Some(((t, _), _)) = self.queue.first_key_value() {
            if *t > now {
                break;
            }
            let (_, d) = self.queue.pop_first().unwrap();
            self.deliver(d);
        }
        // Timers.
        for k in 0..=self.cores.len() {
            if !self.cores_down.contains(&k) && !self.timers_held.contains(&k) {
                self.core(k).handle_timeout(now);
            }
        }
        for i in 0..self.clients.len() {
            if self.clients[i].alive && self.clients[i].next <= now {
                let _ = self.clients[i].rtc.handle_input(Input::Timeout(now));
                self.drain_client(i);
            }
        }
        if self.media_on && self.next_media <= now {
            self.next_media = now + self.media_every;
            self.send_media();
        }
        if self.spread > 1 {
            // What one worker's step sends another is handed over within
            // the step (the binary's hand-over takes microseconds), so the
            // process's views between steps are never half-way.
            self.drain_sfu();
        }
    }

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while self.now < end {
            self.step();
            steps += 1;
            assert!(steps < 10_000_000, "run_for did not finish");
        }
    }

    /// Run until `pred` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&TestNet) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if pred(self) {
                return true;
            }
            self.step();
        }
        pred(self)
    }

    /// Every map of the core is empty (the short grace list of ended
    /// sessions aside). With linked workers, the messages already on their
    /// way between them are handed over first (no time passes).
    pub fn assert_maps_empty(&mut self) {
        if !self.cores.is_empty() {
            self.drain_sfu();
        }
        for k in 1..=self.cores.len() {
            let c = self.core_ref(k).counts();
            assert_eq!(
                (
                    c.sessions,
                    c.rooms,
                    c.tokens,
                    c.addrs,
                    c.ufrags,
                    c.keyframe_timers
                ),
                (0, 0, 0, 0, 0, 0),
                "core {k}: {c:?}"
            );
        }
        let c = self.sfu.counts();
        assert_eq!(
            (
                c.sessions,
                c.rooms,
                c.tokens,
                c.addrs,
                c.ufrags,
                c.addr_lists,
                c.keyframe_timers
            ),
            (0, 0, 0, 0, 0, 0, 0),
            "{c:?}"
        );
    }

    /// Exact packet accounting: every (packet, viewer) pair the fan-out saw was
    /// forwarded or dropped with a counted per-viewer reason.
    pub fn assert_accounting(&self) {
        let mut s = self.sfu.stats();
        for k in 1..=self.cores.len() {
            s.absorb(&self.core_ref(k).stats());
        }
        let per_viewer: u64 = crate::sfu::DropReason::ALL
            .iter()
            .filter(|r| r.is_per_viewer())
            .map(|r| s.dropped(*r))
            .sum();
        assert_eq!(
            s.fanout_attempts,
            s.rtp_forwarded + per_viewer,
            "fan-out accounting: {s:?}"
        );
    }

    pub fn connected(&self, i: usize) -> bool {
        self.clients[i].connected_at.is_some()
    }

    /// Extended sequence numbers of what viewer `i` got of `kind`, in arrival order.
    pub fn seqs(&self, i: usize, kind: MediaKind) -> Vec<u64> {
        self.clients[i]
            .got
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.seq)
            .collect()
    }

    /// Payload counters (bytes 2..10) of what viewer `i` got of `kind`, in arrival order.
    pub fn counters(&self, i: usize, kind: MediaKind) -> Vec<u64> {
        self.clients[i]
            .got
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| u64::from_be_bytes(g.payload[2..10].try_into().unwrap()))
            .collect()
    }
}

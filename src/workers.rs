//! DRIVER: N event loops in one process (`WISP_WORKERS`).
//!
//! Worker i owns a mio `Poll`, a waker, a bounded command channel, a sans-IO
//! core ([`Sfu`]) and a UDP socket on `WISP_UDP_ADDR`'s port + i (port 0: an
//! ephemeral port each), whose port its candidates advertise. The loops
//! share no state: only the stop flag, the recorder's queue, the figures
//! each publishes ([`WorkerGauges`]) and, for rooms with viewers on several
//! workers, the relay's bounded queues between them.
//!
//! The HTTP threads reach the workers through one [`Dispatcher`]:
//! - a WHIP/WHEP POST goes to the room's home worker (the one its first
//!   session was placed on), or for a new room to the least loaded worker
//!   (sessions, and forwarded packets per second); a viewer goes to the
//!   least loaded worker instead when the home is busier by more than
//!   `SPREAD`, and gets the room's packets through the relay between
//!   workers (`src/sfu/relay.rs`, [`RELAY_QUEUE`]);
//! - a command on a session URL goes to the worker that made its token
//!   ([`TokenShard::owner`]: a keyed hash, so the token stays opaque);
//! - room-level commands (close a room, list rooms, stats) go to every
//!   worker, and the replies are merged;
//! - the session and room limits apply to the process: a POST is refused
//!   (`AtCapacity`) when the workers' live sessions reach `max_sessions`,
//!   or when it would make a new room and the map of homes (the live
//!   rooms, each once: [`Dispatcher::sweep`]) holds `max_rooms`. A relayed
//!   copy of a room is bounded by its worker's own `max_rooms` instead
//!   (see `src/sfu/relay.rs`); a viewer refused a copy goes home.
//!
//! With one worker (the default) this is the single loop of old: one port,
//! every command to that loop.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::channel::{CoreError, CoreRequest, Link};
use crate::event_loop::{EventLoop, RelayPorts, WAKER};
use crate::record::RecorderStats;
use crate::sfu::overload::LoadSample;
use crate::sfu::recorder_tap::RecordEvent;
use crate::sfu::relay::RelayMsg;
use crate::sfu::sdp;
use crate::sfu::stats::WorkerFigures;
use crate::sfu::{ApiError, Command, Reply, RoomInfo, RoomName, Sfu, SfuConfig, TokenShard};

/// Commands queued per worker; a full queue answers 503 at the HTTP side.
pub const COMMAND_QUEUE: usize = 64;

/// Relay messages queued per pair of workers, at most: about half a
/// second of a 2,000 packet/s room. A full queue drops (and counts) what
/// does not fit: the sending worker never waits.
pub const RELAY_QUEUE: usize = 1024;
/// Relay messages queued toward one worker from all the others together
/// (160 bytes each: 1.3 MB per worker), so that memory grows with the
/// number of workers, not its square; each pair gets its share, within
/// 64..=[`RELAY_QUEUE`].
pub const RELAY_QUEUE_PER_WORKER: usize = 8192;

/// Capacity of each relay queue with `n` workers.
pub fn relay_queue(n: usize) -> usize {
    (RELAY_QUEUE_PER_WORKER / n.saturating_sub(1).max(1)).clamp(64, RELAY_QUEUE)
}

/// How much busier (in sessions) a room's home may be than the least
/// loaded worker before its next viewer is placed there instead (and gets
/// the room through the relay). Small: viewers of a large room spread over
/// every worker, at the cost of one hand-off per packet per worker.
const SPREAD: u64 = 1;

/// How old the viewer counts added to a viewer's event stream may be.
const VIEWER_COUNTS_TTL: Duration = Duration::from_secs(1);

/// A forwarded packet per second weighs this much less than a session in
/// placement: one viewer of a 500 packet/s stream counts twice.
const PPS_PER_SESSION: u64 = 500;

/// What one worker's loop publishes for placement and `/metrics`. Written by
/// that loop only (relaxed atomics: figures, not synchronisation).
#[derive(Debug, Default)]
pub struct WorkerGauges {
    sessions: AtomicU64,
    rooms: AtomicU64,
    /// `room_count()` at the last publish.
    rooms_seen: AtomicU64,
    /// `rooms_removed()` at the last publish: the dispatcher sweeps its
    /// homes when the sum over the workers moves.
    rooms_ended: AtomicU64,
    forwarded: AtomicU64,
    /// Forwarded packets per second over the last load window.
    forwarded_pps: AtomicU64,
    /// `forwarded` at the last load window.
    forwarded_mark: AtomicU64,
    /// The loop's busy ratio (f64 bits).
    busy_ratio: AtomicU64,
}

impl WorkerGauges {
    /// Called by the loop after each turn; `sample` when a load window closed.
    pub fn publish(&self, sfu: &Sfu, _now: Instant, sample: Option<&LoadSample>) {
        self.sessions
            .store(sfu.session_count() as u64, Ordering::Relaxed);
        // Rooms counted once in the process (a relayed copy is not), and
        // counted again only when the number changed or once per window.
        let all = sfu.room_count() as u64;
        if self.rooms_seen.swap(all, Ordering::Relaxed) != all || sample.is_some() {
            self.rooms
                .store(sfu.home_room_count() as u64, Ordering::Relaxed);
        }
        self.rooms_ended
            .store(sfu.rooms_removed(), Ordering::Relaxed);
        let fwd = sfu.forwarded();
        self.forwarded.store(fwd, Ordering::Relaxed);
        if let Some(s) = sample {
            let secs = s.elapsed.as_secs_f64().max(1e-3);
            let mark = self.forwarded_mark.swap(fwd, Ordering::Relaxed);
            let pps = (fwd.saturating_sub(mark) as f64 / secs) as u64;
            self.forwarded_pps.store(pps, Ordering::Relaxed);
            let ratio = s.busy.as_secs_f64() / secs;
            self.busy_ratio.store(ratio.to_bits(), Ordering::Relaxed);
        }
    }

    /// Live sessions (as of the loop's last turn, plus placements since).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// The figures of `/metrics`.
    pub fn figures(&self) -> WorkerFigures {
        WorkerFigures {
            sessions: self.sessions(),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            busy_ratio: f64::from_bits(self.busy_ratio.load(Ordering::Relaxed)),
        }
    }

    /// Placement weight: sessions plus forwarded packets/s in session units.
    fn load(&self) -> u64 {
        self.sessions() + self.forwarded_pps.load(Ordering::Relaxed) / PPS_PER_SESSION
    }
}

/// Routes the HTTP side's commands to the workers (see the module docs).
pub struct Dispatcher {
    links: Vec<Link>,
    gauges: Vec<Arc<WorkerGauges>>,
    shard: TokenShard,
    /// The home worker of each live room: the process's rooms, so its
    /// length is what `max_rooms` bounds (see [`Dispatcher::sweep`] for its
    /// removal path).
    homes: Mutex<HashMap<RoomName, Home>>,
    /// The workers' `rooms_ended` summed at the last sweep.
    ended_seen: AtomicU64,
    /// A placement failed: its entry may name a room no worker has.
    dirty: AtomicBool,
    /// Viewers per room over every worker, and when they were read (see
    /// `room_viewers`). Bounded by the rooms of the process.
    viewer_counts: Mutex<(Option<Instant>, HashMap<String, usize>)>,
    max_sessions: usize,
    max_rooms: usize,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("workers", &self.links.len())
            .finish()
    }
}

/// A room's entry in the dispatcher's map of homes.
#[derive(Debug)]
struct Home {
    /// Its home worker.
    worker: usize,
    /// Placements into it not yet answered (their worker may not have
    /// the room yet: a sweep keeps it).
    pending: u32,
    /// When the last placement was answered.
    settled: Instant,
    /// Whether its publisher's last WHIP offer had simulcast video (`None`:
    /// no publish seen); told to relayed viewers' workers.
    simulcast: Option<bool>,
}

/// What one worker answered.
pub type Answer = Result<Result<Reply, ApiError>, CoreError>;

impl Dispatcher {
    /// A dispatcher over `links` (worker i at index i) and their gauges;
    /// `key` is the process's token key (the cores' [`TokenShard`]s share it).
    pub fn new(
        links: Vec<Link>,
        gauges: Vec<Arc<WorkerGauges>>,
        key: [u8; 32],
        max_sessions: usize,
        max_rooms: usize,
    ) -> Dispatcher {
        assert_eq!(links.len(), gauges.len());
        let n = links.len();
        Dispatcher {
            links,
            gauges,
            shard: TokenShard::new(key, 0, n),
            homes: Mutex::new(HashMap::new()),
            ended_seen: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            viewer_counts: Mutex::new((None, HashMap::new())),
            max_sessions,
            max_rooms,
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.links.len()
    }

    /// The home worker of `room`, if it is live (or being placed).
    pub fn home(&self, room: &RoomName) -> Option<usize> {
        self.sweep();
        self.lock_homes().get(room).map(|h| h.worker)
    }

    /// Number of rooms in the map of homes.
    pub fn homes_len(&self) -> usize {
        self.lock_homes().len()
    }

    /// Route `cmd` and wait for the (merged) reply.
    pub fn call(&self, cmd: Command) -> Answer {
        if self.links.len() == 1 {
            return self.links[0].call(cmd);
        }
        match cmd {
            // A room's source (publisher or an edge's pull) goes home.
            Command::Publish { ref room, .. }
            | Command::Pull { ref room }
            | Command::Subscribe { ref room, .. }
            | Command::SubscribeRelayed { ref room, .. } => {
                let room = room.clone();
                self.place(room, cmd)
            }
            Command::PullAnswer { ref room, .. } | Command::PullFailed { ref room, .. } => {
                match self.home(room) {
                    Some(w) => self.links[w].call(cmd),
                    None => Ok(Err(ApiError::NotFound)),
                }
            }
            Command::ViewerState {
                token, ref room, ..
            } => {
                let room = room.clone();
                let mut r = self.links[self.shard.owner(token)].call(cmd);
                if let Ok(Ok(Reply::ViewerState(v))) = &mut r {
                    // The room's viewers on every worker, not only this one's.
                    if let Some(n) = self.room_viewers(&room) {
                        v.viewers = n.max(v.viewers);
                    }
                }
                r
            }
            Command::DeleteSession { token, .. }
            | Command::Patch { token, .. }
            | Command::PinLayer { token, .. } => self.links[self.shard.owner(token)].call(cmd),
            Command::CloseRoom { room } => {
                let all = self.all(|| Command::CloseRoom { room: room.clone() });
                self.lock_homes().remove(&room);
                merge_closed(all)
            }
            Command::ListRooms => merge_rooms(self.all(|| Command::ListRooms)),
            Command::RequestKeyframe { room } => match self.home(&room) {
                Some(w) => self.links[w].call(Command::RequestKeyframe { room }),
                None => self
                    .all(|| Command::RequestKeyframe { room: room.clone() })
                    .into_iter()
                    .next()
                    .unwrap_or(Err(CoreError::Busy)),
            },
            Command::Stats => self.stats(),
        }
    }

    /// Viewers of `room` on every worker, from a room list at most
    /// [`VIEWER_COUNTS_TTL`] old (viewers' event streams ask once a second
    /// each: one list for all of them, not one per stream).
    fn room_viewers(&self, room: &RoomName) -> Option<usize> {
        let mut cache = self.viewer_counts.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cache.0.is_some_and(|t| t.elapsed() < VIEWER_COUNTS_TTL);
        if !fresh {
            if let Ok(Ok(Reply::Rooms(list))) = merge_rooms(self.all(|| Command::ListRooms)) {
                cache.1 = list.into_iter().map(|r| (r.name, r.viewers)).collect();
                cache.0 = Some(Instant::now());
            }
        }
        cache.1.get(room.as_str()).copied()
    }

    /// Ask the home worker of `room` for a keyframe, without waiting (the
    /// recorder after a gap).
    pub fn request_keyframe(&self, room: RoomName) {
        let targets: Vec<usize> = match self.home(&room) {
            Some(w) => vec![w],
            None => (0..self.links.len()).collect(),
        };
        for w in targets {
            let _ = self.links[w].send(Command::RequestKeyframe { room: room.clone() });
        }
    }

    /// Wake every worker (after setting the stop flag).
    pub fn wake_all(&self) {
        for l in &self.links {
            l.wake();
        }
    }

    /// A new session: to its room's home worker, or a new room's least
    /// loaded one, unless the process is at a limit.
    fn place(&self, room: RoomName, cmd: Command) -> Answer {
        let live: u64 = self.gauges.iter().map(|g| g.sessions()).sum();
        if live >= self.max_sessions as u64 {
            return Ok(Err(ApiError::AtCapacity));
        }
        self.sweep();
        let offered_simulcast = match &cmd {
            Command::Publish { offer, .. } => Some(sdp::offers_simulcast(offer)),
            _ => None,
        };
        let w = {
            let mut homes = self.lock_homes();
            match homes.get_mut(&room) {
                Some(h) => {
                    let home = h.worker;
                    let w = self.least_loaded();
                    // A viewer goes to the home unless the home is busier
                    // than the least loaded worker by more than `SPREAD`;
                    // then it is relayed there. A publisher always goes home.
                    let relay = home != w
                        && matches!(cmd, Command::Subscribe { .. })
                        && self.gauges[home].load() > self.gauges[w].load() + SPREAD;
                    if relay {
                        let Command::Subscribe { room, offer, edge } = cmd else {
                            unreachable!("matched above");
                        };
                        h.pending += 1;
                        let simulcast = h.simulcast;
                        drop(homes);
                        self.gauges[w].sessions.fetch_add(1, Ordering::Relaxed);
                        let cmd = Command::SubscribeRelayed {
                            room: room.clone(),
                            offer: offer.clone(),
                            home,
                            edge,
                            simulcast,
                        };
                        let mut r = self.links[w].call(cmd);
                        if matches!(r, Ok(Err(ApiError::AtCapacity))) {
                            // That worker is at its own room or session
                            // limit (its copies count there): the home
                            // serves the viewer instead.
                            self.gauges[home].sessions.fetch_add(1, Ordering::Relaxed);
                            let room = room.clone();
                            r = self.links[home].call(Command::Subscribe { room, offer, edge });
                        }
                        self.settle(&room, &r, None);
                        return r;
                    }
                    h.pending += 1;
                    home
                }
                None => {
                    let rooms: u64 = self
                        .gauges
                        .iter()
                        .map(|g| g.rooms.load(Ordering::Relaxed))
                        .sum();
                    // The map counts the rooms being placed too: exact
                    // under concurrent POSTs, where the gauges lag.
                    if rooms >= self.max_rooms as u64 || homes.len() >= self.max_rooms {
                        return Ok(Err(ApiError::AtCapacity));
                    }
                    // Decided under the lock: two first POSTs of one room
                    // (its publisher and a viewer) land on the same worker.
                    let w = self.least_loaded();
                    homes.insert(
                        room.clone(),
                        Home {
                            worker: w,
                            pending: 1,
                            settled: Instant::now(),
                            simulcast: None,
                        },
                    );
                    w
                }
            }
        };
        // Counted at once, so a burst of POSTs spreads before the loops
        // publish their next figures.
        self.gauges[w].sessions.fetch_add(1, Ordering::Relaxed);
        let r = self.links[w].call(cmd);
        self.settle(&room, &r, offered_simulcast);
        r
    }

    /// A placement into `room` answered `r`: its entry may be swept from
    /// now on (and soon, if the placement failed).
    /// `published`: the placement was a publish whose offer had simulcast
    /// video (`Some(true)`) or not; recorded only if it was accepted (a
    /// refused second publisher does not describe the room).
    fn settle(&self, room: &RoomName, r: &Answer, published: Option<bool>) {
        if let Some(h) = self.lock_homes().get_mut(room) {
            h.pending = h.pending.saturating_sub(1);
            h.settled = Instant::now();
            if let (Some(s), Ok(Ok(Reply::Created { .. }))) = (published, r) {
                h.simulcast = Some(s);
            }
        }
        if !matches!(r, Ok(Ok(Reply::Created { .. }))) {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The worker with the lowest load (the first among equals).
    fn least_loaded(&self) -> usize {
        (0..self.gauges.len())
            .min_by_key(|&i| (self.gauges[i].load(), i))
            .unwrap_or(0)
    }

    /// The removal path of the map of homes: keep only the rooms some
    /// worker still lists (a home keeps its room while another worker
    /// relays it), and those a placement is creating. Runs before each
    /// placement and lookup, but does work only when a worker removed a
    /// room since the last sweep (its `rooms_ended` moved) or a placement
    /// failed: one room list from every worker (a worker that does not
    /// answer keeps every entry, until the next sweep); otherwise it costs
    /// one load per worker. So an ended room's name is free, and counts no
    /// more against `max_rooms`, from the next POST on.
    fn sweep(&self) {
        let ended: u64 = self
            .gauges
            .iter()
            .map(|g| g.rooms_ended.load(Ordering::Relaxed))
            .sum();
        let dirty = self.dirty.swap(false, Ordering::Relaxed);
        if !dirty && self.ended_seen.load(Ordering::Relaxed) == ended {
            return;
        }
        // A placement answered before this instant was handled by its
        // worker before the room list was asked for: the list shows it.
        let start = Instant::now();
        let mut live = std::collections::HashSet::new();
        for a in self.all(|| Command::ListRooms) {
            match a {
                Ok(Ok(Reply::Rooms(list))) => live.extend(list.into_iter().map(|r| r.name)),
                _ => {
                    self.dirty.store(dirty, Ordering::Relaxed);
                    return;
                }
            }
        }
        // Rooms that end from now on move `rooms_ended` again.
        self.ended_seen.store(ended, Ordering::Relaxed);
        self.lock_homes()
            .retain(|r, h| h.pending > 0 || h.settled >= start || live.contains(r.as_str()));
    }

    fn lock_homes(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Home>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send `make()` to every worker, then wait for every reply (one deadline).
    fn all(&self, make: impl Fn() -> Command) -> Vec<Answer> {
        let sent: Vec<_> = self.links.iter().map(|l| l.send(make())).collect();
        let deadline = Instant::now()
            + self
                .links
                .first()
                .map_or(Duration::from_secs(2), |l| l.reply_timeout());
        sent.into_iter()
            .map(|s| s.and_then(|rx| Link::wait(&rx, deadline)))
            .collect()
    }

    /// Every worker's counters, summed, with each worker's own figures.
    fn stats(&self) -> Answer {
        let mut total: Option<crate::sfu::Stats> = None;
        let mut figures = Vec::with_capacity(self.links.len());
        for (i, a) in self.all(|| Command::Stats).into_iter().enumerate() {
            let s = match a {
                Ok(Ok(Reply::Stats(s))) => s,
                other => return other,
            };
            figures.push(WorkerFigures {
                sessions: s.sessions_live.iter().sum(),
                forwarded: s.rtp_forwarded,
                busy_ratio: self.gauges[i].figures().busy_ratio,
            });
            match &mut total {
                Some(t) => t.absorb(&s),
                None => total = Some(*s),
            }
        }
        let mut total = total.unwrap_or_default();
        total.workers = figures;
        Ok(Ok(Reply::Stats(Box::new(total))))
    }
}

/// Sessions closed over every worker; "not found" only if no worker had the room.
pub fn merge_closed(all: Vec<Answer>) -> Answer {
    let mut closed = None;
    let mut busy = false;
    for a in all {
        match a {
            Ok(Ok(Reply::RoomClosed { sessions })) => {
                *closed.get_or_insert(0) += sessions;
            }
            Ok(Err(ApiError::NotFound)) => {}
            Ok(other) => return Ok(other),
            Err(_) => busy = true,
        }
    }
    match closed {
        Some(sessions) => Ok(Ok(Reply::RoomClosed { sessions })),
        None if busy => Err(CoreError::Busy),
        None => Ok(Err(ApiError::NotFound)),
    }
}

/// One list of rooms: a room with sessions on several workers is one entry
/// (its home worker's tracks, the viewers of all).
pub fn merge_rooms(all: Vec<Answer>) -> Answer {
    let mut by_name: HashMap<String, RoomInfo> = HashMap::new();
    for a in all {
        let rooms = match a {
            Ok(Ok(Reply::Rooms(r))) => r,
            other => return other,
        };
        for r in rooms {
            match by_name.get_mut(&r.name) {
                None => {
                    by_name.insert(r.name.clone(), r);
                }
                Some(m) => {
                    m.viewers += r.viewers;
                    // The home's tracks (it has the publisher), not a copy's.
                    if r.publisher_live || m.tracks.is_empty() {
                        m.tracks = r.tracks;
                    }
                    m.publisher_live |= r.publisher_live;
                    m.recording |= r.recording;
                    m.relayed |= r.relayed;
                    m.uptime_s = m.uptime_s.max(r.uptime_s);
                }
            }
        }
    }
    let mut list: Vec<RoomInfo> = by_name.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Ok(Reply::Rooms(list)))
}

/// A hook run on each worker's thread before its loop starts: (worker, loop).
pub type Configure = Arc<dyn Fn(usize, &mut EventLoop) -> std::io::Result<()> + Send + Sync>;

/// The workers' sockets and channels, bound but not yet running.
pub struct Plan {
    sockets: Vec<UdpSocket>,
    polls: Vec<mio::Poll>,
    links: Vec<Link>,
    receivers: Vec<Receiver<CoreRequest>>,
    gauges: Vec<Arc<WorkerGauges>>,
    candidates: Vec<Vec<SocketAddr>>,
    wakers: Vec<Arc<mio::Waker>>,
    /// Each worker's upstream addresses (empty: none).
    upstream_addrs: Vec<Vec<SocketAddr>>,
}

impl Plan {
    /// Bind `n` sockets (worker i on `udp_addr`'s port + i; port 0: an
    /// ephemeral port each) and make each worker's poll, waker and command
    /// channel. `advertised` are the host candidates; each worker's carry
    /// its own port.
    pub fn bind(
        n: usize,
        udp_addr: SocketAddr,
        advertised: &[SocketAddr],
        reply_timeout: Duration,
    ) -> Result<Plan, String> {
        let mut plan = Plan {
            sockets: Vec::new(),
            polls: Vec::new(),
            links: Vec::new(),
            receivers: Vec::new(),
            gauges: Vec::new(),
            candidates: Vec::new(),
            wakers: Vec::new(),
            upstream_addrs: Vec::new(),
        };
        for i in 0..n.max(1) {
            let mut addr = udp_addr;
            if udp_addr.port() != 0 {
                let port = u16::try_from(usize::from(udp_addr.port()) + i).map_err(|_| {
                    format!(
                        "worker {i}: UDP port {} + {i} is over 65535",
                        udp_addr.port()
                    )
                })?;
                addr.set_port(port);
            }
            let socket =
                UdpSocket::bind(addr).map_err(|e| format!("cannot bind UDP {addr}: {e}"))?;
            let port = socket.local_addr().map_err(|e| e.to_string())?.port();
            let poll = mio::Poll::new().map_err(|e| e.to_string())?;
            let waker =
                Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
            let (tx, rx): (Sender<CoreRequest>, _) = bounded(COMMAND_QUEUE);
            plan.wakers.push(waker.clone());
            plan.links.push(Link::new(tx, waker, reply_timeout));
            plan.receivers.push(rx);
            plan.polls.push(poll);
            plan.sockets.push(socket);
            plan.gauges.push(Arc::default());
            plan.candidates.push(
                advertised
                    .iter()
                    .map(|c| SocketAddr::new(c.ip(), port))
                    .collect(),
            );
        }
        Ok(plan)
    }

    /// The dispatcher for these workers.
    pub fn dispatcher(&self, key: [u8; 32], max_sessions: usize, max_rooms: usize) -> Dispatcher {
        Dispatcher::new(
            self.links.clone(),
            self.gauges.clone(),
            key,
            max_sessions,
            max_rooms,
        )
    }

    /// Each worker's bound UDP address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Each worker's host candidates.
    pub fn candidates(&self) -> &[Vec<SocketAddr>] {
        &self.candidates
    }

    /// Worker `i`'s `SfuConfig::upstream_addrs` (cluster mode: its
    /// upstreams' own sockets, which `configure` hands to its loop).
    pub fn set_upstream_addrs(&mut self, i: usize, addrs: Vec<SocketAddr>) {
        if self.upstream_addrs.len() <= i {
            self.upstream_addrs.resize(i + 1, Vec::new());
        }
        self.upstream_addrs[i] = addrs;
    }

    /// Start one thread per worker, each running its loop until `stop` is
    /// set (ring the wakers: [`Dispatcher::wake_all`]). Worker i's core is
    /// `base` with its candidates, its [`TokenShard`] under `key` and its
    /// own seed (`seeds[i]`). Every worker sends recording events to
    /// `recorder`'s queue. `configure(i, loop)`, if given, runs on worker
    /// i's thread before its loop starts (other drivers' handlers: an
    /// error ends that worker).
    pub fn start(
        self,
        base: SfuConfig,
        key: [u8; 32],
        seeds: Vec<[u8; 32]>,
        stop: Arc<AtomicBool>,
        recorder: Option<(Sender<RecordEvent>, Arc<RecorderStats>)>,
        configure: Option<Configure>,
    ) -> std::io::Result<Vec<JoinHandle<std::io::Result<()>>>> {
        let n = self.sockets.len();
        let mut handles = Vec::with_capacity(n);
        // The relay: one bounded queue per ordered pair of workers.
        let mut txs: Vec<Vec<Option<Sender<RelayMsg>>>> = vec![vec![None; n]; n];
        let mut rxs: Vec<Vec<Receiver<RelayMsg>>> = (0..n).map(|_| Vec::new()).collect();
        if n > 1 {
            for (from, row) in txs.iter_mut().enumerate() {
                for (to, slot) in row.iter_mut().enumerate() {
                    if from != to {
                        let (tx, rx) = bounded(relay_queue(n));
                        *slot = Some(tx);
                        rxs[to].push(rx);
                    }
                }
            }
        }
        let mut ports: Vec<Option<RelayPorts>> = txs
            .into_iter()
            .zip(rxs)
            .map(|(tx, rx)| {
                (n > 1).then(|| RelayPorts {
                    tx,
                    wakers: self.wakers.clone(),
                    rx,
                    wake: vec![false; n],
                })
            })
            .collect();
        let upstream_addrs = self.upstream_addrs;
        let parts = self
            .sockets
            .into_iter()
            .zip(self.polls)
            .zip(self.receivers)
            .zip(self.gauges)
            .zip(self.candidates)
            .zip(seeds);
        for (i, (((((socket, poll), rx), gauges), candidates), seed)) in parts.enumerate() {
            let config = SfuConfig {
                candidates,
                seed,
                shard: TokenShard::new(key, i, n),
                upstream_addrs: upstream_addrs.get(i).cloned().unwrap_or_default(),
                ..base.clone()
            };
            let stop = stop.clone();
            let recorder = recorder.clone();
            let relay = ports[i].take();
            let configure = configure.clone();
            let h = std::thread::Builder::new()
                .name(format!("wisp-worker-{i}"))
                .spawn(move || {
                    let sfu = Sfu::new(config, Instant::now());
                    let mut lp = EventLoop::new(poll, socket, rx, sfu, stop)?;
                    if let Some((tx, stats)) = recorder {
                        lp.set_recorder(tx, stats);
                    }
                    lp.set_gauges(gauges);
                    if let Some(p) = relay {
                        lp.set_relay(p);
                    }
                    if let Some(f) = configure {
                        f(i, &mut lp)?;
                    }
                    lp.run()
                })?;
            handles.push(h);
        }
        Ok(handles)
    }
}

#[cfg(test)]
mod tests;

//! DRIVER: cluster mode in a running node. [`ClusterNode::start`] starts the
//! [`Directory`] and the reporter thread; the HTTP side asks it where a POST
//! goes ([`ClusterNode::place`]) and whether a room can be published here
//! ([`ClusterNode::claim`]).
//!
//! The reporter (thread `wisp-cluster`) reads the core through the command
//! channel once a second (`Stats`, `ListRooms`), never on the media loop's
//! own time beyond those two commands:
//! - `set_load(sessions, forwarded packets/s)` for this node's record;
//! - `publisher_live` / `publisher_left` from the rooms whose publisher is
//!   connected (rooms this node relays are not its own);
//! - rooms with viewers and no source ("waiting") whose owner is another
//!   node: a pull is asked of the relay manager ([`super::relay`]), so an
//!   edge pulls within a second of a `Resync` or of the origin's return
//!   after a failure.
//!
//! A `RoomLive` notification for a waiting room (one the last report, or
//! a WHEP `201` since, says has viewers) starts its pull at once, on this
//! thread between reports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::channel::CoreLink;
use crate::sfu::command::{Command, Reply, RoomInfo};

use super::directory::{Claim, DirError, DirEvent, Directory, DirectoryConfig};
use super::placement::{self, Decision, Local, Want};
use super::relay::{RelayHandle, RelayRequest};
use super::ClusterConfig;

/// How often the reporter reads the core.
pub const REPORT_PERIOD: Duration = Duration::from_secs(1);
/// How long a WHIP 201 makes its room known here without the reporter.
const RECENT_PUBLISH: Duration = Duration::from_secs(10);
/// Most rooms remembered as recently published.
const MAX_RECENT_PUBLISH: usize = 4096;

/// A room as the reporter last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    publisher_live: bool,
    viewers: usize,
}

/// Cluster mode of this node: the directory, this node's counters, and the
/// relay manager's handle. Shared (`Arc`) by the HTTP workers and the reporter.
pub struct ClusterNode {
    /// The directory (Redis).
    pub dir: Directory,
    /// The configuration (node id and URL, cluster token).
    pub config: ClusterConfig,
    max_sessions: usize,
    /// Sessions in the core at the last report.
    sessions: AtomicU64,
    redirects: AtomicU64,
    /// Rooms by what the reporter last saw.
    rooms: Mutex<HashMap<String, Seen>>,
    /// Rooms published here (WHIP 201) within [`RECENT_PUBLISH`]: known
    /// before the reporter sees their publisher connected.
    published: Mutex<HashMap<String, Instant>>,
    relay: Option<Arc<RelayHandle>>,
    stop: AtomicBool,
    reporter: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.config.node_id)
            .field("dir", &self.dir)
            .finish()
    }
}

impl ClusterNode {
    /// Start the directory (it returns at once even with Redis down, and logs
    /// so) and the reporter thread, which reads the core through `core`.
    /// `relay`: the relay manager, when this build can pull.
    pub fn start(
        config: &ClusterConfig,
        max_sessions: usize,
        core: CoreLink,
        relay: Option<Arc<RelayHandle>>,
    ) -> Result<Arc<ClusterNode>, String> {
        let dir = Directory::start(DirectoryConfig::new(config, max_sessions))?;
        ClusterNode::with_directory(dir, config, max_sessions, core, relay)
    }

    /// [`ClusterNode::start`] with a directory started by the caller (tests
    /// shorten its timings).
    pub fn with_directory(
        dir: Directory,
        config: &ClusterConfig,
        max_sessions: usize,
        core: CoreLink,
        relay: Option<Arc<RelayHandle>>,
    ) -> Result<Arc<ClusterNode>, String> {
        let node = Arc::new(ClusterNode {
            dir,
            config: config.clone(),
            max_sessions,
            sessions: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            rooms: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            relay,
            stop: AtomicBool::new(false),
            reporter: Mutex::new(None),
        });
        let weak = Arc::downgrade(&node);
        let events = node.dir.events();
        let handle = std::thread::Builder::new()
            .name("wisp-cluster".into())
            .spawn(move || {
                let mut r = Reporter {
                    core,
                    last_forwarded: None,
                    relays: HashSet::new(),
                };
                let mut next = Instant::now();
                loop {
                    let Some(node) = weak.upgrade() else { return };
                    if node.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if Instant::now() >= next {
                        r.report(&node);
                        next = Instant::now() + REPORT_PERIOD;
                    }
                    let wait = next.saturating_duration_since(Instant::now());
                    drop(node);
                    match events.recv_timeout(wait.min(Duration::from_millis(200))) {
                        Ok(ev) => {
                            if let Some(node) = weak.upgrade() {
                                node.on_event(ev);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the cluster reporter: {e}"))?;
        *node.reporter.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        log::info!(
            "cluster mode: node {} at {}",
            node.config.node_id,
            node.config.node_url
        );
        Ok(node)
    }

    /// Stop the reporter and the relay manager (their upstreams are closed
    /// by the core's shutdown), then release this node's claims and record.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .reporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        if let Some(r) = &self.relay {
            r.shutdown();
        }
        self.dir.close();
    }

    /// This node's own load for placement. `full`: the core just refused a
    /// session for capacity or overload, whatever the last report said.
    pub fn local(&self, full: bool) -> Local {
        let sessions = self.sessions.load(Ordering::Relaxed) as usize;
        Local {
            sessions: if full {
                sessions.max(self.max_sessions)
            } else {
                sessions
            },
            max_sessions: self.max_sessions,
            draining: self.dir.draining(),
        }
    }

    /// Where a WHIP/WHEP POST to `path` (`query` without `?`) goes; counts
    /// redirects. `full` as in [`ClusterNode::local`].
    pub fn place(&self, want: Want<'_>, path: &str, query: Option<&str>, full: bool) -> Decision {
        let local = self.local(full);
        if !local.must_redirect() {
            return Decision::Serve;
        }
        let snapshot = self.dir.snapshot();
        let d = placement::decide(
            &local,
            &self.config.node_id,
            want,
            path,
            query,
            &snapshot.nodes,
            Instant::now(),
            random_u64(),
        );
        if matches!(d, Decision::Redirect { .. }) {
            self.redirects.fetch_add(1, Ordering::Relaxed);
        }
        d
    }

    /// Claim `room` for a WHIP POST. `Err(owner)`: another node owns it (409).
    /// Redis down: accepted locally (the claim is written when it returns).
    pub fn claim(&self, room: &str) -> Result<bool, String> {
        match self.dir.claim(room) {
            Ok(Claim::Owned) => Ok(true),
            Ok(Claim::Taken { owner }) if owner == self.config.node_id => Ok(true),
            Ok(Claim::Taken { owner }) => Err(owner),
            Err(e) => {
                log::debug!("directory: claim of {room:?} failed ({e}); publishing locally");
                Ok(false)
            }
        }
    }

    /// The node id and URL of `room`'s owner when it is another node. `Err`:
    /// the directory cannot tell (Redis down).
    pub fn remote_owner(&self, room: &str) -> Result<Option<(String, String)>, DirError> {
        Ok(self.dir.room_owner(room)?.and_then(|o| {
            let url = o.url?;
            (o.node != self.config.node_id).then_some((o.node, url))
        }))
    }

    /// A WHIP POST for `room` was answered `201` here.
    pub fn published(&self, room: &str) {
        let now = Instant::now();
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, at| now.duration_since(*at) < RECENT_PUBLISH);
        if p.len() < MAX_RECENT_PUBLISH {
            p.insert(room.to_string(), now);
        }
    }

    /// A WHEP POST for `room`, which has no source here, was answered
    /// `201`: its viewer waits. Known before the reporter's next round, so
    /// that a room-live notification in between starts the pull.
    pub fn viewer_waits(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if rooms.len() < MAX_RECENT_PUBLISH || rooms.contains_key(room) {
            let seen = rooms.entry(room.to_string()).or_default();
            seen.viewers = seen.viewers.max(1);
        }
    }

    /// Whether `room` has a source here: a connected local publisher (as of
    /// the last report, or published in the last seconds) or an upstream.
    pub fn has_source(&self, room: &str) -> bool {
        self.relaying(room).is_some()
            || self
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(room)
                .is_some_and(|at| at.elapsed() < RECENT_PUBLISH)
            || self
                .rooms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(room)
                .is_some_and(|s| s.publisher_live)
    }

    /// The origin node of the upstream this node pulls `room` from.
    pub fn relaying(&self, room: &str) -> Option<String> {
        self.relay.as_ref().and_then(|r| r.origin_of(room))
    }

    /// The relay manager, if this node pulls.
    pub fn relay(&self) -> Option<Arc<RelayHandle>> {
        self.relay.clone()
    }

    /// Ask the relay manager to pull `room` from `url` (node `node`).
    pub fn want_pull(&self, room: &str, node: &str, url: &str) {
        if let Some(r) = &self.relay {
            r.want(RelayRequest {
                room: room.to_string(),
                node: node.to_string(),
                url: url.to_string(),
            });
        }
    }

    fn moved(&self, room: &str, node: &str, url: &str) {
        if let Some(r) = &self.relay {
            r.moved(RelayRequest {
                room: room.to_string(),
                node: node.to_string(),
                url: url.to_string(),
            });
        }
    }

    /// `307`s answered so far (`wisp_redirects_total`).
    pub fn redirects(&self) -> u64 {
        self.redirects.load(Ordering::Relaxed)
    }

    /// Upstreams open now (`wisp_relay_upstreams`).
    pub fn upstreams(&self) -> usize {
        self.relay.as_ref().map_or(0, |r| r.count())
    }

    /// Pulls that failed since start (`wisp_relay_pull_failures_total`).
    pub fn pull_failures(&self) -> u64 {
        self.relay.as_ref().map_or(0, |r| r.failures())
    }

    /// The `GET /api/cluster` body: the directory's snapshot, plus this node.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.dir.snapshot().to_json(Instant::now());
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("self".into(), self.config.node_id.clone().into());
            m.insert("draining".into(), self.dir.draining().into());
            m.insert("upstreams".into(), self.upstreams().into());
        }
        v
    }

    fn on_event(&self, ev: DirEvent) {
        match ev {
            DirEvent::RoomLive { room, node, url } => {
                if node == self.config.node_id {
                    return;
                }
                let (relaying, waiting) = (self.relaying(&room), self.waiting(&room));
                log::debug!(
                    "cluster: room {room} live on node {node}: relaying from {relaying:?}, \
                     viewers waiting: {waiting}"
                );
                // `moved`: pulled at once, whatever pause earlier failures
                // (of the room before it went live there) left.
                match relaying {
                    Some(from) if from != node => self.moved(&room, &node, &url),
                    Some(_) => {}
                    None if waiting => self.moved(&room, &node, &url),
                    None => {}
                }
            }
            DirEvent::Resync => {
                for room in self.waiting_rooms() {
                    if let Ok(Some((node, url))) = self.remote_owner(&room) {
                        self.want_pull(&room, &node, &url);
                    }
                }
                let relayed = self.relay.as_ref().map(|r| r.rooms()).unwrap_or_default();
                for (room, from) in relayed {
                    if let Ok(Some((node, url))) = self.remote_owner(&room) {
                        if node != from {
                            self.moved(&room, &node, &url);
                        }
                    }
                }
            }
            DirEvent::ClaimLost { room, owner } => {
                log::warn!("cluster: room {room:?} is published here and on node {owner:?}");
            }
        }
    }

    /// Viewers wait in `room` and it has no source here.
    fn waiting(&self, room: &str) -> bool {
        let seen = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .copied();
        seen.is_some_and(|s| s.viewers > 0 && !s.publisher_live) && self.relaying(room).is_none()
    }

    fn waiting_rooms(&self) -> Vec<String> {
        let rooms: Vec<String> = self
            .rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.viewers > 0 && !s.publisher_live)
            .map(|(r, _)| r.clone())
            .collect();
        rooms
            .into_iter()
            .filter(|r| self.relaying(r).is_none())
            .collect()
    }
}

/// The reporter's own state.
struct Reporter {
    core: CoreLink,
    last_forwarded: Option<(u64, Instant)>,
    /// Rooms reported to the directory as relayed.
    relays: HashSet<String>,
}

impl Reporter {
    fn report(&mut self, node: &ClusterNode) {
        let now = Instant::now();
        let relays: HashSet<String> = node
            .relay
            .as_ref()
            .map(|r| r.rooms().into_keys().collect())
            .unwrap_or_default();
        for r in relays.difference(&self.relays) {
            node.dir.relay_started(r);
        }
        for r in self.relays.difference(&relays) {
            node.dir.relay_stopped(r);
        }
        self.relays = relays;
        if let Ok(Ok(Reply::Stats(s))) = self.core.call(Command::Stats) {
            let sessions: u64 = s.sessions_live.iter().sum();
            node.sessions.store(sessions, Ordering::Relaxed);
            let pps = match self.last_forwarded {
                Some((n, at)) if now > at => {
                    let dt = now.duration_since(at).as_secs_f64();
                    (s.rtp_forwarded.saturating_sub(n) as f64 / dt) as u64
                }
                _ => 0,
            };
            self.last_forwarded = Some((s.rtp_forwarded, now));
            node.dir.set_load(sessions, pps);
        }
        let Ok(Ok(Reply::Rooms(rooms))) = self.core.call(Command::ListRooms) else {
            return;
        };
        self.rooms(node, &rooms);
    }

    /// Report publishers that came and went, and ask for pulls of waiting rooms.
    fn rooms(&mut self, node: &ClusterNode, rooms: &[RoomInfo]) {
        let now: HashMap<String, Seen> = rooms
            .iter()
            .map(|r| {
                let relayed = r.relayed || node.relaying(&r.name).is_some();
                let seen = Seen {
                    publisher_live: r.publisher_live && !relayed,
                    viewers: r.viewers,
                };
                (r.name.clone(), seen)
            })
            .collect();
        let before = std::mem::replace(
            &mut *node.rooms.lock().unwrap_or_else(|e| e.into_inner()),
            now.clone(),
        );
        let live = |m: &HashMap<String, Seen>| -> HashSet<String> {
            m.iter()
                .filter(|(_, s)| s.publisher_live)
                .map(|(r, _)| r.clone())
                .collect()
        };
        let (was, is) = (live(&before), live(&now));
        for r in is.difference(&was) {
            node.dir.publisher_live(r);
        }
        for r in was.difference(&is) {
            node.dir.publisher_left(r);
        }
        if node.relay.is_some() && node.dir.connected() {
            for room in node.waiting_rooms() {
                if let Ok(Some((owner, url))) = node.remote_owner(&room) {
                    node.want_pull(&room, &owner, &url);
                }
            }
        }
    }
}

/// A random `u64` from the OS (placement spreads redirects with it).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

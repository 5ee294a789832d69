//! The cluster directory in Redis, driven by its own threads (never the media
//! loop): node records, room claims and room-live notifications.
//!
//! Keys (`P` is [`DirectoryConfig::prefix`], `wisp` by default):
//! - `P:node:<id>`: this node's [`NodeRecord`] as JSON, `SET .. PX ttl`,
//!   rewritten every `refresh` (so it expires within `ttl` of the last one);
//! - `P:nodes`: a sorted set of node ids scored by their last write (ms since
//!   the epoch), the index read on every refresh instead of a keyspace SCAN;
//!   entries older than [`INDEX_WINDOW_MS`] are trimmed;
//! - `P:room:<room>`: the node id owning the room. Claimed and refreshed by
//!   one Lua script: set if absent (then PUBLISH on `P:rooms`), re-expire if
//!   ours, report the other owner otherwise. It runs for every owned room on
//!   every refresh, so a Redis restart loses nothing and no claim is stolen;
//!   only the owner deletes it (compare-and-delete script).
//!
//! Threads: the driver owns the command connection, takes commands from a
//! bounded channel and refreshes on a timer; the subscriber owns a pub/sub
//! connection and turns notifications into [`DirEvent`]s. With Redis down,
//! every call fails fast ([`DirError::Unavailable`], counted in
//! [`Directory::errors`]); the driver retries with a bounded backoff, logs
//! once per outage and once on recovery, and on recovery rewrites the record
//! and every claim at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use redis::Value;

use super::config::{redact, ClusterConfig};
use super::record::{NodeInfo, NodeRecord, Snapshot, MAX_RELAYS_IN_RECORD};

/// A record expires this long after its last write (issue 15: within 10 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Records and claims are rewritten this often (issue 15: at least every 2 s).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);
/// Connect, read and write timeout of one Redis operation.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnect backoff: doubles from the first to the last. The cap keeps the
/// rewrite after Redis comes back within 2 s (cap plus one connect).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Commands queued for the driver; beyond it calls fail with [`DirError::Busy`].
pub const COMMAND_QUEUE: usize = 64;
/// Events queued for the consumer; beyond it they are dropped and counted.
pub const EVENT_QUEUE: usize = 256;
/// Most rooms this node claims at once (the core's room cap is far lower).
pub const MAX_CLAIMS: usize = 65_536;
/// Most node records read per refresh, newest first.
pub const MAX_NODES: usize = 1024;
/// Node ids stay in the index this long after their last write (any clock
/// skew between hosts below this is harmless: liveness is the key's TTL).
pub const INDEX_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Room-owner lookups are cached this long, for at most this many rooms.
pub const OWNER_CACHE_TTL: Duration = Duration::from_secs(1);
pub const OWNER_CACHE_CAP: usize = 1024;
/// The subscriber's read timeout: how often it checks for shutdown.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(200);

/// Claim-or-refresh. KEYS[1] room key; ARGV: node id, ttl ms, channel, message.
/// 1: created (and published), 2: ours, re-expired; a string: the other owner.
const CLAIM_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return v
";

/// Compare-and-delete. KEYS[1] room key; ARGV[1] node id. 1: deleted.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How the directory reaches Redis and what it says about this node.
#[derive(Clone)]
pub struct DirectoryConfig {
    pub redis_url: String,
    pub node_id: String,
    pub node_url: String,
    pub max_sessions: u64,
    /// Key and claim expiry; [`DEFAULT_TTL`].
    pub ttl: Duration,
    /// Rewrite period; [`DEFAULT_REFRESH`]; must be below `ttl`.
    pub refresh: Duration,
    /// [`DEFAULT_OP_TIMEOUT`].
    pub op_timeout: Duration,
    /// Key namespace; `wisp`.
    pub prefix: String,
}

impl fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("redis_url", &redact(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("node_url", &self.node_url)
            .field("max_sessions", &self.max_sessions)
            .field("ttl", &self.ttl)
            .field("refresh", &self.refresh)
            .field("op_timeout", &self.op_timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl DirectoryConfig {
    /// The production timings for `cluster` and this node's session cap.
    pub fn new(cluster: &ClusterConfig, max_sessions: usize) -> DirectoryConfig {
        DirectoryConfig {
            redis_url: cluster.redis_url.clone(),
            node_id: cluster.node_id.clone(),
            node_url: cluster.node_url.clone(),
            max_sessions: max_sessions as u64,
            ttl: DEFAULT_TTL,
            refresh: DEFAULT_REFRESH,
            op_timeout: DEFAULT_OP_TIMEOUT,
            prefix: "wisp".to_string(),
        }
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }
    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }
    fn index_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// The pub/sub channel of room-live notifications.
    pub fn channel(&self) -> String {
        format!("{}:rooms", self.prefix)
    }
}

/// Why a directory call failed. Every failure is counted in [`Directory::errors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirError {
    /// Redis is unreachable (or answered with an error); the driver is retrying.
    Unavailable,
    /// The driver's queue is full.
    Busy,
    /// No answer within the operation timeout.
    Timeout,
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirError::Unavailable => "directory unavailable (redis unreachable)",
            DirError::Busy => "directory busy",
            DirError::Timeout => "directory timed out",
        })
    }
}

impl std::error::Error for DirError {}

/// The result of [`Directory::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the room now (newly, or already did).
    Owned,
    /// Another node owns it: the caller answers `409`.
    Taken { owner: String },
}

/// A room's owner, from [`Directory::room_owner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOwner {
    pub node: String,
    /// The owner's base URL, `None` if its record is gone (it is dying).
    pub url: Option<String>,
}

/// What the directory tells its consumer (see [`Directory::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirEvent {
    /// `room` went live on `node` (any node, this one included).
    RoomLive {
        room: String,
        node: String,
        url: String,
    },
    /// This node holds a live publisher of `room`, but `owner` holds the
    /// claim (two nodes took the room while Redis was split or down).
    /// Reported once per loss; the directory keeps trying to re-claim.
    ClaimLost { room: String, owner: String },
    /// The notification stream started or restarted (after an outage):
    /// notifications may have been missed, so look up the rooms still
    /// waited for with `room_owner`.
    Resync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomState {
    /// Claimed by a WHIP POST; dropped unless the publisher goes live by then.
    Pending { until: Instant },
    /// The core reported the publisher live.
    Live,
}

/// What this node wants in Redis; written by any thread, read by the driver.
#[derive(Default)]
struct Desired {
    rooms: HashMap<String, RoomState>,
    relays: BTreeSet<String>,
}

struct Shared {
    connected: AtomicBool,
    errors: AtomicU64,
    events_dropped: AtomicU64,
    sessions: AtomicU64,
    forwarded_pps: AtomicU64,
    draining: AtomicBool,
    stop: AtomicBool,
    desired: Mutex<Desired>,
    snapshot: Mutex<Arc<Snapshot>>,
    owners: Mutex<HashMap<String, (RoomOwner, Instant)>>,
}

impl Shared {
    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    fn desired(&self) -> MutexGuard<'_, Desired> {
        // A panic while holding it is a bug elsewhere; the data stays usable.
        self.desired.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn cache_owner(&self, room: &str, owner: RoomOwner, now: Instant) {
        let mut c = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= OWNER_CACHE_CAP && !c.contains_key(room) {
            c.clear();
        }
        c.insert(room.to_string(), (owner, now));
    }
    fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

enum Cmd {
    Claim {
        room: String,
        reply: Sender<Result<Claim, DirError>>,
    },
    Owner {
        room: String,
        reply: Sender<Result<Option<RoomOwner>, DirError>>,
    },
    /// The desired state changed: write the difference now.
    Sync,
    /// Refresh everything now (the subscriber saw the connection drop or return).
    RefreshNow,
    Stop {
        cleanup: bool,
    },
}

/// The handle: cheap, non-blocking calls for the event loop (`publisher_live`,
/// `set_load`, ...) and bounded blocking calls for the HTTP thread (`claim`,
/// `room_owner`). Dropping it releases this node's claims and record.
pub struct Directory {
    shared: Arc<Shared>,
    tx: Sender<Cmd>,
    events: Receiver<DirEvent>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    wait: Duration,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("connected", &self.connected())
            .field("errors", &self.errors())
            .finish()
    }
}

impl Directory {
    /// Start the driver and subscriber threads. Never waits for Redis: with
    /// Redis down, this returns at once and the driver keeps retrying (and
    /// logs so). Errors: a URL the client rejects, or no thread.
    pub fn start(cfg: DirectoryConfig) -> Result<Directory, String> {
        assert!(cfg.refresh < cfg.ttl, "refresh must be shorter than ttl");
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(|e| {
            format!(
                "invalid redis URL {} ({:?})",
                redact(&cfg.redis_url),
                e.kind()
            )
        })?;
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            forwarded_pps: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            desired: Mutex::new(Desired::default()),
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            owners: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = bounded(COMMAND_QUEUE);
        let (ev_tx, events) = bounded(EVENT_QUEUE);
        let now = Instant::now();
        let driver = Driver {
            shown: redact(&cfg.redis_url),
            client: client.clone(),
            cfg: cfg.clone(),
            shared: shared.clone(),
            events: ev_tx.clone(),
            conn: None,
            written: HashSet::new(),
            lost: HashSet::new(),
            next_refresh: now,
            retry_at: now,
            backoff: BACKOFF_FIRST,
            outage_logged: false,
            written_draining: false,
        };
        let mut threads = vec![std::thread::Builder::new()
            .name("wisp-directory".into())
            .spawn(move || driver.run(rx))
            .map_err(|e| format!("cannot start the directory thread: {e}"))?];
        let sub = Subscriber {
            client,
            channel: cfg.channel(),
            op_timeout: cfg.op_timeout,
            shared: shared.clone(),
            events: ev_tx,
            driver: tx.clone(),
        };
        match std::thread::Builder::new()
            .name("wisp-directory-sub".into())
            .spawn(move || sub.run())
        {
            Ok(h) => threads.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                let _ = tx.send(Cmd::Stop { cleanup: false });
                for t in threads {
                    let _ = t.join();
                }
                return Err(format!("cannot start the directory subscriber: {e}"));
            }
        }
        Ok(Directory {
            shared,
            tx,
            events,
            threads: Mutex::new(threads),
            wait: cfg.op_timeout * 2 + Duration::from_millis(100),
        })
    }

    /// Claim `room` for a publisher about to go live here (WHIP POST), in
    /// one atomic Redis operation. `Owned`: go on, then report
    /// [`Directory::publisher_live`] (without it the claim is released after
    /// one TTL); `Taken`: answer `409`. Blocks at most about twice the
    /// operation timeout; fails fast when Redis is known to be down.
    pub fn claim(&self, room: &str) -> Result<Claim, DirError> {
        self.request(|reply| Cmd::Claim {
            room: room.to_string(),
            reply,
        })
    }

    /// The node that owns `room`, `None` if it is live nowhere. Served from
    /// a short cache (fed by notifications too) or one Redis round trip.
    pub fn room_owner(&self, room: &str) -> Result<Option<RoomOwner>, DirError> {
        let now = Instant::now();
        if let Some((o, at)) = self
            .shared
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
        {
            if now.duration_since(*at) < OWNER_CACHE_TTL {
                return Ok(Some(o.clone()));
            }
        }
        self.request(|reply| Cmd::Owner {
            room: room.to_string(),
            reply,
        })
    }

    fn request<T>(
        &self,
        make: impl FnOnce(Sender<Result<T, DirError>>) -> Cmd,
    ) -> Result<T, DirError> {
        if !self.connected() {
            self.shared.error();
            return Err(DirError::Unavailable);
        }
        let (reply, rx) = bounded(1);
        if self.tx.try_send(make(reply)).is_err() {
            self.shared.error();
            return Err(DirError::Busy);
        }
        match rx.recv_timeout(self.wait) {
            Ok(r) => r, // the driver counted its own failures
            Err(_) => {
                self.shared.error();
                Err(DirError::Timeout)
            }
        }
    }

    /// The core has a live publisher in `room`: keep it claimed (claiming it
    /// now if [`Directory::claim`] was not called or failed). Non-blocking.
    /// False when [`MAX_CLAIMS`] rooms are claimed already (counted).
    pub fn publisher_live(&self, room: &str) -> bool {
        {
            let mut d = self.shared.desired();
            if d.rooms.len() >= MAX_CLAIMS && !d.rooms.contains_key(room) {
                drop(d);
                self.shared.error();
                return false;
            }
            d.rooms.insert(room.to_string(), RoomState::Live);
        }
        self.nudge();
        true
    }

    /// The publisher of `room` left, or the room closed: release the claim
    /// (only if this node holds it). Non-blocking.
    pub fn publisher_left(&self, room: &str) {
        if self.shared.desired().rooms.remove(room).is_some() {
            self.nudge();
        }
    }

    /// The publish that [`Directory::claim`] was made for did not happen (the
    /// core refused it): release the claim now instead of after one TTL.
    /// A room whose publisher is live here keeps its claim. Non-blocking.
    pub fn claim_abandoned(&self, room: &str) {
        let removed = {
            let mut d = self.shared.desired();
            match d.rooms.get(room) {
                Some(RoomState::Pending { .. }) => d.rooms.remove(room).is_some(),
                _ => false,
            }
        };
        if removed {
            self.nudge();
        }
    }

    /// This node started pulling `room` from another node (it is an edge
    /// for it); listed in the record so placement prefers it for viewers.
    pub fn relay_started(&self, room: &str) {
        let mut d = self.shared.desired();
        if d.relays.len() < MAX_RELAYS_IN_RECORD {
            d.relays.insert(room.to_string());
        }
    }

    /// This node stopped pulling `room`.
    pub fn relay_stopped(&self, room: &str) {
        self.shared.desired().relays.remove(room);
    }

    /// This node's load, written with the next refresh. Non-blocking.
    pub fn set_load(&self, sessions: u64, forwarded_pps: u64) {
        self.shared.sessions.store(sessions, Ordering::Relaxed);
        self.shared
            .forwarded_pps
            .store(forwarded_pps, Ordering::Relaxed);
    }

    /// Start or stop draining (`POST /api/drain`); the record says so at once.
    pub fn set_draining(&self, on: bool) {
        if self.shared.draining.swap(on, Ordering::Relaxed) != on {
            self.nudge();
        }
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// The cluster as read at the last refresh (no Redis round trip).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    /// Room-live notifications and the rest (bounded; a slow consumer loses
    /// events, counted in [`Directory::events_dropped`]).
    pub fn events(&self) -> Receiver<DirEvent> {
        self.events.clone()
    }

    /// Failed directory operations so far (`wisp_directory_errors_total`).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Events dropped because the consumer lagged.
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped.load(Ordering::Relaxed)
    }

    /// Whether the driver's Redis connection is up.
    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Stop: release every claim this node holds and delete its record
    /// (best effort, bounded by the operation timeout), then join the threads.
    pub fn shutdown(self) {
        self.stop(true);
    }

    /// [`Directory::shutdown`] through a shared handle (the HTTP threads
    /// keep theirs for the life of the process): later calls fail fast.
    pub fn close(&self) {
        self.stop(true);
    }

    /// Stop as if the process were killed: records and claims stay in Redis
    /// until they expire (for tests of a node's death).
    #[doc(hidden)]
    pub fn abandon(self) {
        self.stop(false);
    }

    /// Stop the threads once (later calls do nothing).
    fn stop(&self, cleanup: bool) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if threads.is_empty() {
            return;
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.connected.store(false, Ordering::Relaxed);
        // `send` may wait for room in a full queue; the driver drains it.
        let _ = self.tx.send(Cmd::Stop { cleanup });
        for t in threads {
            let _ = t.join();
        }
    }

    fn nudge(&self) {
        // A full queue already wakes the driver, which diffs everything.
        let _ = self.tx.try_send(Cmd::Sync);
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop(true);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn send_event(shared: &Shared, tx: &Sender<DirEvent>, ev: DirEvent) {
    if let Err(TrySendError::Full(_)) = tx.try_send(ev) {
        shared.events_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

mod driver;
mod subscriber;

use driver::Driver;
#[cfg(test)]
use subscriber::parse_live;
use subscriber::Subscriber;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_notification_parse() {
        assert_eq!(
            parse_live(br#"{"room":"r","node":"n","url":"http://n:1"}"#),
            Some(("r".into(), "n".into(), "http://n:1".into()))
        );
        assert_eq!(parse_live(b"{}"), None);
        assert_eq!(parse_live(b"garbage"), None);
    }

    #[test]
    fn a_server_that_never_answers_costs_bounded_time() {
        // Accepts connections (the backlog does) and never says a word.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let cfg = DirectoryConfig {
            redis_url: format!("redis://127.0.0.1:{port}"),
            node_id: "a".into(),
            node_url: "http://a:1".into(),
            max_sessions: 10,
            ttl: Duration::from_secs(1),
            refresh: Duration::from_millis(200),
            op_timeout: Duration::from_millis(100),
            prefix: "t".into(),
        };
        let t = Instant::now();
        let d = Directory::start(cfg).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(d.claim("r").is_err());
        assert!(!d.connected());
        d.shutdown();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn starts_and_fails_fast_without_redis() {
        // Port 1 on loopback: nothing listens, connecting is refused at once.
        let cfg = DirectoryConfig {
            redis_url: "redis://127.0.0.1:1".into(),
            node_id: "a".into(),
            node_url: "http://a:1".into(),
            max_sessions: 10,
            ttl: Duration::from_secs(1),
            refresh: Duration::from_millis(200),
            op_timeout: Duration::from_millis(200),
            prefix: "t".into(),
        };
        let d = Directory::start(cfg).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(d.claim("r"), Err(DirError::Unavailable));
        assert_eq!(d.room_owner("r"), Err(DirError::Unavailable));
        assert!(t.elapsed() < Duration::from_millis(50));
        assert!(d.errors() >= 2);
        assert!(!d.connected() && !d.snapshot().connected);
        d.shutdown();
    }
}

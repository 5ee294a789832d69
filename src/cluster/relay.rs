//! DRIVER: the relay manager (thread `wisp-relay`). An edge pulls a room
//! from the node that has it over standard WHEP: the core makes the
//! upstream's offer ([`PullCore::pull`]), a thread of the pull's own
//! (`wisp-relay-pull`) POSTs it to `{origin}/whep/{room}` with
//! `Authorization: Bearer <cluster token>`, and this thread hands the
//! answer back ([`PullCore::answer`]). When the core reports the
//! upstream ended ([`RelayHandle::ended`]), the session is DELETEd at the
//! origin and the room is free to be pulled again (the reporter in
//! [`super::node`] asks again while viewers wait).
//!
//! Contracts: at most one upstream per room; every HTTP request has a
//! timeout ([`HTTP_TIMEOUT`]) and runs on a thread of its own (at most
//! [`MAX_EXCHANGES`] POSTs at once, DELETEs are fire-and-forget), so an
//! origin that does not answer never delays a pull from another; the
//! request queue is bounded ([`QUEUE`], excess wants are dropped: the
//! reporter repeats them every second); a room whose pull from a node
//! failed is not tried again from that node before [`RETRY_AFTER_FAILURE`],
//! unless a room-live notification says it went live there since.
//! Never on the media loop: the core is reached through the command channel.
//!
//! Origins at `https://` URLs are reached over rustls on aws-lc-rs (the
//! crypto str0m already uses), trusting the system's root certificates as
//! OpenSSL finds them: `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system
//! store ([`tls_config`]). A certificate that does not verify fails the
//! pull like any other failure: logged, counted
//! ([`RelayHandle::failures`]) and retried after the pause.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::channel::{CoreError, CoreLink};
use crate::sfu::command::{ApiError, Command, Reply};
use crate::sfu::id::{RoomName, SessionToken};
use crate::sfu::UpstreamEvent;

/// Timeout of every HTTP request to another node (connect to last byte).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests waiting for the manager; more are dropped.
pub const QUEUE: usize = 256;
/// Pause before a room whose pull failed is pulled again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Most HTTP exchanges with origins under way at once (each on a thread of
/// its own); a pull beyond waits for the reporter's next round.
pub const MAX_EXCHANGES: usize = 16;
/// Longest the manager spends DELETEing upstreams at shutdown.
const SHUTDOWN_DELETES: Duration = Duration::from_secs(2);
/// Largest SDP answer read from an origin.
const MAX_ANSWER: u64 = 64 * 1024;

/// What the relay manager needs of the core (through the command channel).
pub trait PullCore: Send + 'static {
    /// The core's handle of one upstream session.
    type Token: Copy + Eq + Debug + Send + ToString;
    /// Create an upstream session for `room`; its SDP offer.
    fn pull(&self, room: &RoomName) -> Result<(Self::Token, String), String>;
    /// The origin's SDP answer for the upstream `token`.
    fn answer(&self, room: &RoomName, token: Self::Token, answer: String) -> Result<(), String>;
    /// The origin refused the offer or could not be reached: drop the upstream.
    fn failed(&self, room: &RoomName, token: Self::Token);
}

/// The core through the command channel: `Pull`, `PullAnswer`, `PullFailed`.
impl PullCore for CoreLink {
    type Token = SessionToken;

    fn pull(&self, room: &RoomName) -> Result<(SessionToken, String), String> {
        match self.call(Command::Pull { room: room.clone() }) {
            Ok(Ok(Reply::PullOffer { token, offer })) => Ok((token, offer)),
            other => Err(refusal(other)),
        }
    }

    fn answer(&self, room: &RoomName, token: SessionToken, answer: String) -> Result<(), String> {
        let cmd = Command::PullAnswer {
            room: room.clone(),
            token,
            answer,
        };
        match self.call(cmd) {
            Ok(Ok(_)) => Ok(()),
            other => Err(refusal(other)),
        }
    }

    fn failed(&self, room: &RoomName, token: SessionToken) {
        let _ = self.call(Command::PullFailed {
            room: room.clone(),
            token,
        });
    }
}

fn refusal(r: Result<Result<Reply, ApiError>, CoreError>) -> String {
    match r {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(reply)) => format!("unexpected reply {reply:?}"),
        Err(CoreError::Busy) => "the core is busy".to_string(),
    }
}

/// A pull wanted: `room` from node `node` at base URL `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRequest {
    pub room: String,
    pub node: String,
    pub url: String,
}

enum Msg {
    Want(RelayRequest),
    /// The room went live on `node`: an upstream from another node is stale.
    Moved(RelayRequest),
    Ended {
        room: String,
        token: String,
    },
}

#[derive(Default)]
struct Shared {
    /// Rooms with an upstream (or a pull under way), by origin node id.
    active: Mutex<HashMap<String, String>>,
    /// Pulls that failed (`wisp_relay_pull_failures_total`).
    failures: AtomicU64,
    stop: AtomicBool,
}

/// The handle the reporter, the HTTP side and the event loop use.
pub struct RelayHandle {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RelayHandle {
    /// Start the manager thread: pulls through `core`, presenting
    /// `cluster_token` (if any) to origins. `self_url` is this node's base
    /// URL: a redirect there is refused (this node cannot feed itself). The
    /// directory learns of the upstreams from the reporter
    /// ([`RelayHandle::rooms`]).
    pub fn start<C: PullCore>(
        core: C,
        cluster_token: Option<String>,
        self_url: &str,
    ) -> Result<RelayHandle, String> {
        let (tx, rx) = bounded(QUEUE);
        let shared = Arc::new(Shared::default());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls_config())
            .build()
            .into();
        let (done_tx, done_rx) = bounded(MAX_EXCHANGES);
        let mut m = Manager {
            core,
            http: Http {
                agent,
                token: cluster_token,
                self_url: self_url.trim_end_matches('/').to_string(),
            },
            shared: shared.clone(),
            ups: HashMap::new(),
            retry: HashMap::new(),
            failing: HashSet::new(),
            done_tx,
            done_rx,
            exchanging: 0,
        };
        let thread = std::thread::Builder::new()
            .name("wisp-relay".into())
            .spawn(move || m.run(rx))
            .map_err(|e| format!("cannot start the relay manager: {e}"))?;
        Ok(RelayHandle {
            tx,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Pull `req.room` from `req.node` unless it has an upstream (or a pull
    /// under way) from that node already; one from another node is
    /// replaced. Non-blocking.
    pub fn want(&self, req: RelayRequest) {
        if self.origin_of(&req.room).as_deref() != Some(req.node.as_str()) {
            let _ = self.tx.try_send(Msg::Want(req));
        }
    }

    /// `req.room` went live on `req.node` (a room-live notification): pulled
    /// from there at once. An upstream of it from another node (an origin
    /// that died, its claim expired) is ended first, and the pause after
    /// failed pulls is lifted: they were of the room before it went live.
    /// Non-blocking.
    pub fn moved(&self, req: RelayRequest) {
        let _ = self.tx.try_send(Msg::Moved(req));
    }

    /// The core's upstream event (from the event loop; non-blocking).
    pub fn upstream_event(&self, ev: UpstreamEvent) {
        match ev {
            UpstreamEvent::Ended {
                room, token, why, ..
            } => {
                log::debug!("relay: upstream of room {room} ended ({})", why.label());
                self.ended(room.as_str(), &token.to_string());
            }
        }
    }

    /// The core ended the upstream `token` of `room` (from the event loop).
    /// Non-blocking; a full queue loses it only until the origin's own
    /// session times out.
    pub fn ended(&self, room: &str, token: &str) {
        let _ = self.tx.try_send(Msg::Ended {
            room: room.to_string(),
            token: token.to_string(),
        });
    }

    /// The origin node of `room`'s upstream, if it has one (or one is being made).
    pub fn origin_of(&self, room: &str) -> Option<String> {
        self.shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room)
            .cloned()
    }

    /// The rooms with an upstream (or a pull under way), with their origins.
    pub fn rooms(&self) -> HashMap<String, String> {
        self.shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Pulls that failed since start: the origin refused or could not be
    /// reached (its certificate not trusted included), or the core refused.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Upstreams now.
    pub fn count(&self) -> usize {
        self.shared
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Stop the thread (bounded by one HTTP timeout).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// What one POST to a node gave.
enum Posted {
    /// `201`: the session's URL (as sent) and the SDP answer.
    Created {
        location: Option<String>,
        answer: String,
    },
    /// `307` to this absolute URL.
    Redirect(String),
}

/// One upstream.
struct Up<T> {
    token: T,
    /// The node pulled from.
    node: String,
    /// The session URL at the origin, for the DELETE (once answered).
    location: Option<String>,
    /// Its HTTP exchange is under way on a thread of its own.
    exchanging: bool,
}

/// What an exchange thread hands back: the origin's answer and the
/// session's absolute URL there, or why there is none.
struct Exchanged<T> {
    room: String,
    token: T,
    result: Result<(Option<String>, String), String>,
}

/// What an exchange thread needs: an HTTP client and this node's identity.
#[derive(Clone)]
struct Http {
    agent: ureq::Agent,
    /// The cluster token presented to origins.
    token: Option<String>,
    /// This node's base URL (a redirect there is refused).
    self_url: String,
}

struct Manager<C: PullCore> {
    core: C,
    http: Http,
    shared: Arc<Shared>,
    ups: HashMap<String, Up<C::Token>>,
    /// Rooms whose pull from a node failed, paused until then.
    retry: HashMap<String, (Instant, String)>,
    /// Rooms whose last pull failed (warned once until one succeeds).
    failing: HashSet<String>,
    /// Exchange threads report here; at most [`MAX_EXCHANGES`] run, so a
    /// report never waits for room.
    done_tx: Sender<Exchanged<C::Token>>,
    done_rx: Receiver<Exchanged<C::Token>>,
    exchanging: usize,
}

impl<C: PullCore> Manager<C> {
    fn run(&mut self, rx: Receiver<Msg>) {
        let done = self.done_rx.clone();
        while !self.shared.stop.load(Ordering::Relaxed) {
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(Msg::Want(req)) => self.pull(req),
                    Ok(Msg::Moved(req)) => self.moved(req),
                    Ok(Msg::Ended { room, token }) => self.end(&room, &token),
                    Err(_) => break,
                },
                recv(done) -> ex => {
                    if let Ok(ex) = ex {
                        self.exchanged(ex);
                    }
                }
                default(Duration::from_millis(200)) => {}
            }
        }
        // The core closes the upstreams at shutdown; close them at the
        // origins too, for at most SHUTDOWN_DELETES (the origins' sessions
        // time out by themselves anyway).
        let until = Instant::now() + SHUTDOWN_DELETES;
        for (_, up) in self.ups.drain() {
            if Instant::now() >= until {
                break;
            }
            if let Some(url) = &up.location {
                self.http.delete(url);
            }
        }
    }

    fn set_active(&self, room: &str, origin: Option<&str>) {
        let mut a = self.shared.active.lock().unwrap_or_else(|e| e.into_inner());
        match origin {
            Some(o) => a.insert(room.to_string(), o.to_string()),
            None => a.remove(room),
        };
    }

    /// Start pulling `req.room` from `req.node`: the core's offer now, the
    /// POST on a thread of its own (so that an origin that does not answer
    /// never delays a pull from another), the answer in [`Manager::exchanged`].
    fn pull(&mut self, req: RelayRequest) {
        let now = Instant::now();
        // The pause after a failure is for the node that failed: a room
        // that went live elsewhere meanwhile is pulled at once.
        let paused = self
            .retry
            .get(&req.room)
            .is_some_and(|(t, node)| *t > now && *node == req.node);
        if paused {
            return;
        }
        if let Some(up) = self.ups.get(&req.room) {
            if up.node != req.node {
                self.moved(req);
            }
            return;
        }
        if self.exchanging >= MAX_EXCHANGES {
            // Asked again by the reporter's next round.
            return;
        }
        self.retry.retain(|_, (t, _)| *t > now);
        if self.failing.len() > QUEUE {
            self.failing.clear();
        }
        let Some(room) = RoomName::new(&req.room) else {
            return;
        };
        log::debug!("relay: pull of room {room} from node {} starts", req.node);
        let (token, offer) = match self.core.pull(&room) {
            Ok(x) => x,
            Err(why) => return self.failed(&req, &format!("the core: {why}")),
        };
        let (http, tx) = (self.http.clone(), self.done_tx.clone());
        let (name, url) = (req.room.clone(), req.url.clone());
        let spawned = std::thread::Builder::new()
            .name("wisp-relay-pull".into())
            .spawn(move || {
                let result = http.exchange(&name, &url, &offer);
                let _ = tx.send(Exchanged {
                    room: name,
                    token,
                    result,
                });
            });
        if let Err(e) = spawned {
            self.core.failed(&room, token);
            return self.failed(&req, &format!("no thread for the exchange: {e}"));
        }
        self.exchanging += 1;
        self.set_active(&req.room, Some(&req.node));
        self.ups.insert(
            req.room.clone(),
            Up {
                token,
                node: req.node,
                location: None,
                exchanging: true,
            },
        );
    }

    /// A pull of `req` failed: pause it (retried every second while
    /// viewers wait: warned once a run).
    fn failed(&mut self, req: &RelayRequest, why: &str) {
        let (room, node) = (&req.room, &req.node);
        self.shared.failures.fetch_add(1, Ordering::Relaxed);
        if self.failing.insert(room.clone()) {
            log::warn!("relay: pull of room {room} from node {node} failed: {why}");
        } else {
            log::debug!("relay: pull of room {room} from node {node} failed: {why}");
        }
        self.set_active(room, None);
        let until = Instant::now() + RETRY_AFTER_FAILURE;
        self.retry.insert(room.clone(), (until, node.clone()));
    }

    /// An exchange thread is done: hand the answer to the core, or end the
    /// upstream. One that was ended or replaced meanwhile is DELETEd at
    /// its origin if it was created there.
    fn exchanged(&mut self, ex: Exchanged<C::Token>) {
        self.exchanging = self.exchanging.saturating_sub(1);
        let current = self
            .ups
            .get(&ex.room)
            .is_some_and(|u| u.token == ex.token && u.exchanging);
        if !current {
            if let Ok((Some(url), _)) = &ex.result {
                self.http.delete_later(url.clone());
            }
            return;
        }
        let Some(room) = RoomName::new(&ex.room) else {
            return;
        };
        let Some(mut up) = self.ups.remove(&ex.room) else {
            return;
        };
        let req = RelayRequest {
            room: ex.room.clone(),
            node: up.node.clone(),
            url: String::new(),
        };
        match ex.result {
            Ok((location, answer)) => match self.core.answer(&room, ex.token, answer) {
                Ok(()) => {
                    self.failing.remove(&ex.room);
                    log::info!("relay: pulling room {room} from node {}", up.node);
                    up.location = location;
                    up.exchanging = false;
                    self.ups.insert(ex.room, up);
                }
                Err(e) => {
                    if let Some(url) = location {
                        self.http.delete_later(url);
                    }
                    self.failed(&req, &format!("the core refused the answer: {e}"));
                }
            },
            Err(why) => {
                self.core.failed(&room, ex.token);
                self.failed(&req, &why);
            }
        }
    }

    fn moved(&mut self, req: RelayRequest) {
        let stale = match self.ups.get(&req.room) {
            Some(u) => u.node != req.node,
            // No upstream (an earlier one ended, or a pull from the old
            // origin failed): pull now, not at the reporter's next round.
            None => {
                self.retry.remove(&req.room);
                self.pull(req);
                return;
            }
        };
        if !stale {
            return;
        }
        let Some(old) = self.ups.remove(&req.room) else {
            return;
        };
        log::info!(
            "relay: room {} moved from node {} to node {}",
            req.room,
            old.node,
            req.node
        );
        if let Some(room) = RoomName::new(&req.room) {
            // Frees the room's source for the new upstream; its Ended is
            // then ignored (no longer in `ups`), and so is its exchange's
            // report if it is under way.
            self.core.failed(&room, old.token);
        }
        self.set_active(&req.room, None);
        self.retry.remove(&req.room);
        self.pull(req);
        if let Some(url) = old.location {
            self.http.delete_later(url);
        }
    }

    fn end(&mut self, room: &str, token: &str) {
        let Some(up) = self.ups.get(room) else {
            return;
        };
        if up.token.to_string() != token {
            return;
        }
        if let Some(up) = self.ups.remove(room) {
            log::info!("relay: upstream of room {room} ended");
            if let Some(url) = up.location {
                self.http.delete_later(url);
            }
        }
        self.set_active(room, None);
    }
}

impl Http {
    /// Offer → POST to `{base}/whep/{room}` → the answer and the session's
    /// absolute URL. An origin that is full answers `307` to a node that
    /// has the room (a tree); that one redirect is followed (the target
    /// never bounces it), unless it points here.
    fn exchange(
        &self,
        room: &str,
        base: &str,
        offer: &str,
    ) -> Result<(Option<String>, String), String> {
        let started = Instant::now();
        let mut url = format!("{}/whep/{room}", base.trim_end_matches('/'));
        let mut result = self.post(&url, offer);
        if let Ok(Posted::Redirect(to)) = &result {
            if base_of(to) == self.self_url {
                return Err(format!("POST {url}: redirected to this node"));
            }
            url = to.clone();
            result = self.post(&url, offer);
        }
        match result? {
            Posted::Created { location, answer } => {
                log::debug!(
                    "relay: POST {url} answered in {} ms",
                    started.elapsed().as_millis()
                );
                Ok((location.map(|l| resolve(base_of(&url), &l)), answer))
            }
            Posted::Redirect(_) => Err(format!("POST {url}: redirected twice")),
        }
    }

    /// One POST of `offer` to `url`.
    fn post(&self, url: &str, offer: &str) -> Result<Posted, String> {
        let mut post = self.agent.post(url).content_type("application/sdp");
        if let Some(t) = &self.token {
            post = post.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = post
            .send(offer.as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status, location) {
            (201, location) => {
                let answer = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER)
                    .read_to_string()
                    .map_err(|e| format!("reading the answer: {e}"))?;
                Ok(Posted::Created { location, answer })
            }
            (307, Some(to)) if to.starts_with("http://") || to.starts_with("https://") => {
                Ok(Posted::Redirect(to))
            }
            (status, _) => Err(format!("POST {url}: status {status}")),
        }
    }

    /// DELETE the session at `url` (best effort, bounded by the timeout).
    fn delete(&self, url: &str) {
        let mut del = self.agent.delete(url);
        if let Some(t) = &self.token {
            del = del.header("Authorization", format!("Bearer {t}"));
        }
        if let Err(e) = del.call() {
            log::debug!("relay: DELETE {url}: {e}");
        }
    }

    /// [`Http::delete`] on a thread of its own: an origin that does not
    /// answer never holds the manager (done at once if no thread starts).
    fn delete_later(&self, url: String) {
        let http = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wisp-relay-delete".into())
            .spawn(move || http.delete(&url));
        if spawned.is_err() {
            log::debug!("relay: no thread for a DELETE; the origin's session times out");
        }
    }
}

/// TLS for `https://` nodes: rustls with the aws-lc-rs provider (ureq's
/// default would be ring, a second crypto library) and the system's root
/// certificates, read once at start by `rustls-native-certs` as OpenSSL
/// finds them (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system store,
/// so a private CA is trusted the standard way). A store that cannot be
/// read is logged, not fatal: plain `http://` pulls need none.
fn tls_config() -> TlsConfig {
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        log::warn!(
            "relay: reading trusted root certificates: {e} ({} error(s))",
            found.errors.len()
        );
    }
    if found.certs.is_empty() {
        log::warn!(
            "relay: no trusted root certificates found (system store, SSL_CERT_FILE, \
             SSL_CERT_DIR): pulls from https:// nodes will fail"
        );
    } else {
        log::debug!("relay: {} trusted root certificates", found.certs.len());
    }
    let roots = found
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::from(roots))
        .unversioned_rustls_crypto_provider(provider)
        .build()
}

/// The node's base URL (its `WISP_NODE_URL`, path prefix included) in the
/// URL of one of its WHEP endpoints: what its session `Location`s are
/// relative to.
fn base_of(url: &str) -> &str {
    url.rfind("/whep/").map_or(url, |i| &url[..i])
}

/// A `Location` from an origin at `base`: absolute as given, or `base` + path.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        let sep = if location.starts_with('/') { "" } else { "/" };
        format!("{base}{sep}{location}")
    }
}

#[cfg(test)]
mod tests;

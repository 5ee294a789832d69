//! Cluster mode (issue 15): the directory in Redis and the redirect policy.
//! Off unless `WISP_REDIS_URL` is set; then nothing here touches the media
//! loop: Redis is reached only from the directory's own threads.
//!
//! ```text
//!   HTTP thread                       Directory (src/cluster/directory.rs)
//!   ───────────                       ─────────────────────────────────────
//!   WHIP POST ── claim(room) ───────▶ driver thread ── EVAL claim ──▶ Redis
//!             ◀─ Owned | Taken(409) ─   (bounded queue, op timeout,       │
//!   WHEP POST ── room_owner(room) ──▶    fail fast when Redis is down)    │
//!   any POST  ── snapshot() ── placement::decide ─▶ Serve | 307 | 503     │
//!   /api/drain ─ set_draining(true)                                       │
//!   /api/cluster ─ snapshot().to_json(now)   every refresh: record, every │
//!                                            claim, node list ◀───────────┘
//!   event loop / core                  subscriber thread ◀── PUBLISH P:rooms
//!   ─────────────────                        │
//!   publisher_live(room) / publisher_left    ▼
//!   relay_started / relay_stopped      events(): RoomLive | ClaimLost | Resync
//!   set_load(sessions, forwarded_pps)        └─▶ relay manager (edges pull)
//! ```
//!
//! # Wiring (for the integrator)
//!
//! Startup (`src/main.rs`): when `Config::cluster` is `Some(c)`, build
//! [`DirectoryConfig::new`]`(&c, cfg.max_sessions)` and [`Directory::start`]
//! it. It returns at once even with Redis down (it logs
//! `directory: redis unreachable at ...; retrying`). Share it as
//! `Arc<Directory>`; dropping the last one releases this node's claims and
//! record (a graceful shutdown should drop it after the sessions are closed).
//!
//! HTTP thread, on every WHIP/WHEP POST, before anything else:
//! - [`placement::decide`] with the core's own [`placement::Local`] load
//!   (sessions, `max_sessions`, [`Directory::draining`]), the node id, the
//!   request path and query, `snapshot().nodes`, `Instant::now()` and a
//!   random `u64`. `Serve`: go on. `Redirect { location, .. }`: `307` with
//!   that `Location` (count `wisp_redirects_total`). `Unavailable`: `503` with
//!   `Retry-After`. The query parser must ignore
//!   [`placement::REDIRECT_MARKER`].
//!
//! WHIP POST, when serving: [`Directory::claim`]`(room)`. `Ok(Owned)`: hand
//! the publish to the core (if the core refuses it:
//! [`Directory::claim_abandoned`]). `Ok(Taken { .. })`: `409`, as for a room already
//! published on one node. `Err(_)` (Redis down): the issue asks local rooms to
//! keep working, so either accept locally (the claim is written when Redis
//! returns, or reported as [`DirEvent::ClaimLost`] if another node took it
//! meanwhile) or answer `503`; accepting is the gentler choice.
//!
//! WHEP POST for a room with no local publisher and no local relay:
//! [`Directory::room_owner`]`(room)`. `Ok(Some(owner))` with another node:
//! become an edge (pull from `owner.url` with the cluster token) and pass
//! `Want::Whep { origin: Some(&owner.node), .. }` to placement next time.
//! `Ok(None)`: live nowhere, the viewer waits as on one node; a later
//! [`DirEvent::RoomLive`] starts the pull. `Err(_)`: `503` + `Retry-After`
//! (issue 15: "a new pull for a room this node does not know").
//!
//! `POST /api/drain`: [`Directory::set_draining`]`(true)`; placement then
//! redirects every new session. `GET /api/cluster`:
//! [`Snapshot::to_json`]. Metrics: `wisp_cluster_nodes` =
//! `snapshot().live(now).count()`, `wisp_directory_errors_total` =
//! [`Directory::errors`].
//!
//! Event loop (reporting what the core did; all calls are non-blocking):
//! - a room's publisher goes live: [`Directory::publisher_live`]; it leaves
//!   or the room closes: [`Directory::publisher_left`] (the claim is deleted
//!   only if this node holds it);
//! - an upstream pull starts/stops: [`Directory::relay_started`] /
//!   [`Directory::relay_stopped`];
//! - about once a second: [`Directory::set_load`]`(sessions, forwarded_pps)`.
//!
//! Relay manager (a thread reading [`Directory::events`]): `RoomLive` for a
//! room with waiting local viewers → start the pull within the second;
//! `Resync` → call `room_owner` again for every waited-for room;
//! `ClaimLost` → log, and end the local publisher if the policy says so.

pub mod config;
pub mod directory;
pub mod node;
pub mod placement;
pub mod record;
pub mod relay;

pub use config::ClusterConfig;
pub use directory::{Claim, DirError, DirEvent, Directory, DirectoryConfig, RoomOwner};
pub use node::ClusterNode;
pub use record::{NodeInfo, NodeRecord, Snapshot};
pub use relay::{PullCore, RelayHandle, RelayRequest};

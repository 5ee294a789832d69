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
//! # Wiring
//!
//! - `src/main.rs` starts a [`ClusterNode`] when `Config::cluster` is set
//!   (the directory starts even with Redis down, and logs so) and hands it
//!   to the HTTP side (`HttpConfig::with_cluster`); it shuts it down after
//!   the event loops closed every session (claims and record released).
//!   Each worker's loop gets the relay manager as its upstream handler
//!   (`Output::Upstream`) and sockets of its own for its upstreams
//!   (`src/upstream_udp.rs`, `SfuConfig::upstream_addrs`).
//! - `src/http/cluster.rs`, on every WHIP/WHEP POST: [`placement::decide`]
//!   (through [`ClusterNode::place`]) → serve, `307`, or `503` +
//!   `Retry-After`; WHIP claims the room (`409` when another node owns it;
//!   Redis down: published locally); a core refusal for capacity or
//!   overload is placed again as "full" (the `307`); WHEP for a room with no
//!   source here asks the directory for its owner and the relay manager to
//!   pull it (Redis down: `503`). `POST|DELETE /api/drain`, `GET
//!   /api/cluster`, the metrics and the rooms' `origin`/`relayed` too.
//! - The reporter ([`node`]) reads the core once a second through the
//!   command channel: [`Directory::set_load`], `publisher_live` /
//!   `publisher_left`, `relay_started` / `relay_stopped`, and pulls for
//!   rooms whose viewers wait; directory events (`RoomLive`, `Resync`) start
//!   pulls at once.
//! - The relay manager ([`relay`]) does the pulls (the core's `Pull`, an
//!   HTTP POST to the owner with the cluster token, `PullAnswer`), DELETEs
//!   an upstream's session at its origin when the core reports it ended,
//!   and moves an upstream to the room's new owner after its origin died.

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

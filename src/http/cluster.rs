//! Cluster mode on the HTTP side (issue 15): where a WHIP/WHEP POST goes,
//! the room claim, `POST|DELETE /api/drain` and `GET /api/cluster`. Without
//! `WISP_REDIS_URL` (`HttpConfig::cluster` is `None`) none of this runs.
//!
//! A POST, after its auth check:
//! 1. placement ([`ClusterNode::place`]): serve here, `307` to another node
//!    (`Location` = its URL, same path and query plus the redirect marker),
//!    or `503` + `Retry-After` when no node has room;
//! 2. WHIP: the room is claimed in the directory; another node's claim is a
//!    `409`. Redis down: published locally (claimed when Redis returns);
//! 3. WHEP for a room with no source here: the directory names its owner;
//!    the viewer is served (it waits, as on one node) and the relay manager
//!    pulls the room from the owner. Redis down and the room unknown here:
//!    `503` + `Retry-After`;
//! 4. the core's answer; when it refuses for capacity or overload, placement
//!    runs again as if this node were full: the `307` goes to another node.

use crate::auth::Need;
use crate::cluster::placement::{Decision, Want};
use crate::cluster::ClusterNode;
use crate::metrics::ClusterFigures;
use crate::sfu::command::{ApiError, Role, RoomInfo};
use crate::sfu::id::RoomName;

use super::routes::{deny, not_allowed, options, post_offer};
use super::types::{CoreFn, HttpConfig, HttpRequest, HttpResponse, TEXT};

/// A WHIP/WHEP POST in cluster mode (auth already checked).
pub(super) fn post(
    req: &HttpRequest,
    cfg: &HttpConfig,
    core: &mut CoreFn<'_>,
    role: Role,
    room: RoomName,
    node: &ClusterNode,
) -> HttpResponse {
    let (path, query) = match req.url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.url.as_str(), None),
    };
    let origin = match role {
        // Looked up only when it matters: this node must send the viewer away.
        Role::Subscriber if node.local(false).must_redirect() => node
            .dir
            .room_owner(room.as_str())
            .ok()
            .flatten()
            .map(|o| o.node),
        _ => None,
    };
    let want = match role {
        Role::Publisher => Want::Whip,
        Role::Subscriber => Want::Whep {
            room: room.as_str(),
            origin: origin.as_deref(),
        },
    };
    if let Some(resp) = answer(node.place(want, path, query, false)) {
        return resp;
    }
    let mut claimed = false;
    let mut pull = None;
    let mut waits = false;
    match role {
        // A request the core will not see (wrong type, no offer) claims
        // nothing: a claim tells the edges that the room went live.
        Role::Publisher if !looks_like_an_offer(req) => {}
        Role::Publisher => match node.claim(room.as_str()) {
            Ok(c) => claimed = c,
            Err(_) => {
                return HttpResponse::error(
                    409,
                    "room already has a live publisher on another node",
                )
            }
        },
        Role::Subscriber if !node.has_source(room.as_str()) => {
            waits = true;
            match node.remote_owner(room.as_str()) {
                Ok(owner) => pull = owner,
                Err(e) => {
                    log::debug!("WHEP for room {room} unknown here: {e}");
                    return HttpResponse::error(503, "cluster directory unavailable, retry later")
                        .with(
                            "Retry-After",
                            crate::cluster::placement::RETRY_AFTER_SECS.to_string(),
                        );
                }
            }
        }
        Role::Subscriber => {}
    }
    let mut refused = false;
    let mut watch = |cmd| {
        let r = core(cmd);
        refused = matches!(r, Ok(Err(ApiError::AtCapacity | ApiError::Overloaded)));
        r
    };
    let resp = post_offer(req, cfg, &mut watch, role, room.clone());
    if resp.status != 201 && claimed {
        node.dir.claim_abandoned(room.as_str());
    }
    if refused {
        if let Some(r) = answer(node.place(want, path, query, true)) {
            return r;
        }
    }
    if resp.status == 201 && role == Role::Publisher {
        node.published(room.as_str());
    }
    if resp.status == 201 && waits {
        node.viewer_waits(room.as_str());
        if let Some((owner, url)) = pull {
            node.want_pull(room.as_str(), &owner, &url);
        }
    }
    resp
}

/// An `application/sdp` body that is not blank (`post_offer` checks the rest).
fn looks_like_an_offer(req: &HttpRequest) -> bool {
    let sdp = req.header("Content-Type").is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/sdp"))
    });
    sdp && req.body.iter().any(|b| !b.is_ascii_whitespace())
}

/// The response for a decision other than [`Decision::Serve`].
fn answer(d: Decision) -> Option<HttpResponse> {
    match d {
        Decision::Serve => None,
        Decision::Redirect { location, node } => {
            log::debug!("redirecting a POST to node {node}");
            Some(
                HttpResponse::new(307)
                    .with("Location", location)
                    .body(TEXT, "this node is full or draining: try the Location\n"),
            )
        }
        Decision::Unavailable { retry_after_secs } => Some(
            HttpResponse::error(503, "no node in the cluster has room, retry later")
                .with("Retry-After", retry_after_secs.to_string()),
        ),
    }
}

/// `/api/drain` (`drain`) or `/api/cluster`; `404` on a single node.
/// `POST /api/drain` starts draining (new sessions go elsewhere with `307`,
/// the ones here stay), `DELETE /api/drain` ends it; `GET /api/cluster`
/// lists the live nodes with their load. Admin auth, as the room API.
pub(super) fn admin(req: &HttpRequest, cfg: &HttpConfig, drain: bool) -> HttpResponse {
    let Some(node) = &cfg.cluster else {
        return HttpResponse::error(404, "not found (single node: no WISP_REDIS_URL)");
    };
    let allow = if drain {
        "POST, DELETE, OPTIONS"
    } else {
        "GET, HEAD, OPTIONS"
    };
    let m = req.method.as_str();
    if m == "OPTIONS" {
        return options(req, cfg, allow, allow, false);
    }
    if !allow.split(", ").any(|a| a == m) {
        return not_allowed(allow);
    }
    if let Some(r) = deny(req, cfg, Need::Admin, None) {
        return r;
    }
    if drain {
        let on = m == "POST";
        node.dir.set_draining(on);
        log::info!(
            "cluster: {} (admin request)",
            if on {
                "draining: new sessions go to other nodes"
            } else {
                "draining ended"
            }
        );
        return json(&serde_json::json!({ "draining": on }));
    }
    json(&node.to_json())
}

fn json(v: &serde_json::Value) -> HttpResponse {
    HttpResponse::new(200).body("application/json", v.to_string().into_bytes())
}

/// The cluster's figures for `/metrics`.
pub(super) fn figures(node: &ClusterNode) -> ClusterFigures {
    ClusterFigures {
        nodes: node.dir.snapshot().live(std::time::Instant::now()).count() as u64,
        upstreams: node.upstreams() as u64,
        redirects: node.redirects(),
        pull_failures: node.pull_failures(),
        directory_errors: node.dir.errors(),
    }
}

/// `/api/rooms`: the room's origin node (this one for a local publisher,
/// the pulled node for a relayed room, else unknown) and whether this node
/// relays it.
pub(super) fn room_origin(node: &ClusterNode, r: &RoomInfo) -> (Option<String>, bool) {
    match node.relaying(&r.name) {
        Some(origin) => (Some(origin), true),
        None if r.relayed => (None, true),
        None if r.publisher_live => (Some(node.config.node_id.clone()), false),
        None => (None, false),
    }
}

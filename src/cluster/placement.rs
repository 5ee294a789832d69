//! Where a WHIP/WHEP POST goes when this node cannot take it: pure functions
//! over the directory's [`NodeInfo`]s, no I/O.
//!
//! - A node at `WISP_MAX_SESSIONS`, or draining, answers `307` with the
//!   `Location` of another live node: the same path and query plus the
//!   [`REDIRECT_MARKER`], so the target cannot bounce it again.
//! - The target is chosen by free capacity (`max_sessions - sessions`, then
//!   forwarded packets per second); for WHEP a node that already has the room
//!   (its origin, or an edge pulling it) comes first.
//! - Never this node, never an expired record, never a draining or full node.
//! - No such node, or a request that was already redirected: `503` with
//!   `Retry-After` ([`RETRY_AFTER_SECS`]).

use std::time::Instant;

use super::record::NodeInfo;

/// Query parameter added to a redirected request's URL (`wisp_redirect=1`).
pub const REDIRECT_MARKER: &str = "wisp_redirect";

/// `Retry-After` of the `503` when no node has room: one directory refresh,
/// after which the nodes' loads are read again.
pub const RETRY_AFTER_SECS: u32 = 2;

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<'a> {
    /// A WHIP publish.
    Whip,
    /// A WHEP view of `room`, live on node `origin` if known.
    Whep {
        room: &'a str,
        origin: Option<&'a str>,
    },
}

/// This node's own state, from the core (not from the directory, which may lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub sessions: usize,
    pub max_sessions: usize,
    pub draining: bool,
}

impl Local {
    /// Whether new sessions must go elsewhere.
    pub fn must_redirect(&self) -> bool {
        self.draining || self.sessions >= self.max_sessions
    }
}

/// The answer to a WHIP/WHEP POST, as far as placement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve it here.
    Serve,
    /// `307 Temporary Redirect` with this `Location`, to node `node`.
    Redirect { location: String, node: String },
    /// `503 Service Unavailable` with `Retry-After: retry_after_secs`.
    Unavailable { retry_after_secs: u32 },
}

/// The whole decision for one POST to `path` with `query` (without `?`).
///
/// `pick` spreads concurrent redirects: candidates are chosen at random
/// weighted by free sessions, `pick` being the random number (any `u64`; the
/// same `pick` gives the same answer). Without it every full node would send
/// its whole overflow to the same "best" node until the next refresh.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    local: &Local,
    self_id: &str,
    want: Want<'_>,
    path: &str,
    query: Option<&str>,
    nodes: &[NodeInfo],
    now: Instant,
    pick: u64,
) -> Decision {
    if !local.must_redirect() {
        return Decision::Serve;
    }
    let unavailable = Decision::Unavailable {
        retry_after_secs: RETRY_AFTER_SECS,
    };
    if is_redirected(query) {
        return unavailable;
    }
    match choose(nodes, self_id, want, now, pick) {
        Some(n) => Decision::Redirect {
            location: location(&n.record.url, path, query),
            node: n.record.id.clone(),
        },
        None => unavailable,
    }
}

/// The target node for `want`, or `None` when no other live node has room.
pub fn choose<'a>(
    nodes: &'a [NodeInfo],
    self_id: &str,
    want: Want<'_>,
    now: Instant,
    pick: u64,
) -> Option<&'a NodeInfo> {
    let eligible =
        |n: &&NodeInfo| n.record.id != self_id && n.alive(now) && n.record.free_sessions() > 0;
    let has_room = |n: &NodeInfo| match want {
        Want::Whip => false,
        Want::Whep { room, origin } => {
            origin == Some(n.record.id.as_str()) || n.record.relays.iter().any(|r| r == room)
        }
    };
    let preferred: Vec<&NodeInfo> = nodes
        .iter()
        .filter(eligible)
        .filter(|n| has_room(n))
        .collect();
    let group = if preferred.is_empty() {
        nodes.iter().filter(eligible).collect()
    } else {
        preferred
    };
    weighted(group, pick)
}

/// One of `group`, chosen with probability proportional to its free sessions
/// (`pick` is the random number). Ties in a deterministic order: most free
/// sessions first, then fewest forwarded packets, then id.
fn weighted(mut group: Vec<&NodeInfo>, pick: u64) -> Option<&NodeInfo> {
    group.sort_by(|a, b| {
        let (a, b) = (&a.record, &b.record);
        b.free_sessions()
            .cmp(&a.free_sessions())
            .then(a.forwarded_pps.cmp(&b.forwarded_pps))
            .then(a.id.cmp(&b.id))
    });
    let total: u64 = group
        .iter()
        .map(|n| n.record.free_sessions())
        .fold(0, u64::saturating_add);
    if total == 0 {
        return None;
    }
    let mut r = pick % total;
    for n in &group {
        let w = n.record.free_sessions();
        if r < w {
            return Some(n);
        }
        r -= w;
    }
    group.first().copied()
}

/// `base` + `path` + the query with the [`REDIRECT_MARKER`] appended.
pub fn location(base: &str, path: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{base}{path}?{q}&{REDIRECT_MARKER}=1"),
        None => format!("{base}{path}?{REDIRECT_MARKER}=1"),
    }
}

/// Whether `query` (without `?`) carries the [`REDIRECT_MARKER`].
pub fn is_redirected(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some(REDIRECT_MARKER))
    })
}

/// A node id from its base URL: host and port (the scheme's default when
/// absent), then the path prefix, joined with `-`; anything outside
/// `A-Z a-z 0-9 . _ :` becomes `-`. `http://10.0.0.2:8080` → `10.0.0.2-8080`.
pub fn derive_node_id(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let (default_port, rest) = if let Some(r) = lower.strip_prefix("https://") {
        ("443", r)
    } else if let Some(r) = lower.strip_prefix("http://") {
        ("80", r)
    } else {
        ("80", lower.as_str())
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or(default_port)),
            None => (v6, default_port),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, default_port),
        },
    };
    let mut id = format!("{host}-{port}");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('-');
        id.push_str(seg);
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::NodeRecord;
    use std::time::Duration;

    fn node(id: &str, sessions: u64, max: u64, pps: u64, now: Instant) -> NodeInfo {
        NodeInfo {
            record: NodeRecord {
                id: id.into(),
                url: format!("http://{id}:8080"),
                sessions,
                max_sessions: max,
                forwarded_pps: pps,
                draining: false,
                updated_ms: 0,
                relays: Vec::new(),
            },
            expires_at: now + Duration::from_secs(10),
        }
    }

    const FULL: Local = Local {
        sessions: 10,
        max_sessions: 10,
        draining: false,
    };

    #[test]
    fn serves_when_not_full() {
        let now = Instant::now();
        let local = Local {
            sessions: 9,
            ..FULL
        };
        let nodes = [node("b", 0, 10, 0, now)];
        assert_eq!(
            decide(&local, "a", Want::Whip, "/whip/r", None, &nodes, now, 0),
            Decision::Serve
        );
    }

    #[test]
    fn redirects_full_or_draining_keeping_path_and_query() {
        let now = Instant::now();
        let nodes = [node("a", 0, 10, 0, now), node("b", 5, 10, 0, now)];
        let expect = Decision::Redirect {
            location: "http://b:8080/whep/r?token=x&wisp_redirect=1".into(),
            node: "b".into(),
        };
        let want = Want::Whep {
            room: "r",
            origin: None,
        };
        assert_eq!(
            decide(&FULL, "a", want, "/whep/r", Some("token=x"), &nodes, now, 7),
            expect
        );
        let drain = Local {
            sessions: 0,
            max_sessions: 10,
            draining: true,
        };
        assert_eq!(
            decide(
                &drain,
                "a",
                want,
                "/whep/r",
                Some("token=x"),
                &nodes,
                now,
                7
            ),
            expect
        );
        assert_eq!(
            location("http://b:1/", "/whip/r", None),
            "http://b:1/whip/r?wisp_redirect=1"
        );
    }

    #[test]
    fn never_self_expired_draining_or_full_and_no_bounce() {
        let now = Instant::now();
        let mut expired = node("old", 0, 100, 0, now);
        expired.expires_at = now;
        let mut draining = node("drain", 0, 100, 0, now);
        draining.record.draining = true;
        let nodes = [
            node("a", 0, 100, 0, now),
            expired,
            draining,
            node("full", 10, 10, 0, now),
        ];
        for pick in 0..50 {
            assert_eq!(
                decide(&FULL, "a", Want::Whip, "/whip/r", None, &nodes, now, pick),
                Decision::Unavailable {
                    retry_after_secs: RETRY_AFTER_SECS
                }
            );
        }
        // A redirected request is never redirected again.
        let ok = [node("b", 0, 10, 0, now)];
        for q in ["wisp_redirect=1", "a=1&wisp_redirect", "wisp_redirect=0&x"] {
            assert!(is_redirected(Some(q)), "{q}");
            assert_eq!(
                decide(&FULL, "a", Want::Whip, "/whip/r", Some(q), &ok, now, 0),
                Decision::Unavailable {
                    retry_after_secs: RETRY_AFTER_SECS
                }
            );
        }
        assert!(!is_redirected(Some("wisp_redirected=1")) && !is_redirected(None));
    }

    #[test]
    fn weighted_by_free_capacity() {
        let now = Instant::now();
        // b has 30 free, c has 10 free: b gets 3/4 of the picks.
        let nodes = [node("b", 70, 100, 0, now), node("c", 0, 10, 0, now)];
        let mut to_b = 0;
        for pick in 0..400 {
            let n = choose(&nodes, "a", Want::Whip, now, pick).unwrap();
            if n.record.id == "b" {
                to_b += 1;
            }
        }
        assert_eq!(to_b, 300);
        // Equal free sessions: the one forwarding less comes first (pick 0).
        let nodes = [node("b", 0, 10, 900, now), node("c", 0, 10, 100, now)];
        assert_eq!(
            choose(&nodes, "a", Want::Whip, now, 0).unwrap().record.id,
            "c"
        );
    }

    #[test]
    fn whep_prefers_nodes_that_have_the_room() {
        let now = Instant::now();
        let mut edge = node("edge", 90, 100, 0, now);
        edge.record.relays = vec!["r".into()];
        let nodes = [
            node("big", 0, 1000, 0, now),
            edge,
            node("origin", 99, 100, 0, now),
        ];
        for pick in 0..20 {
            let want = Want::Whep {
                room: "r",
                origin: Some("origin"),
            };
            let id = &choose(&nodes, "a", want, now, pick).unwrap().record.id;
            assert!(id == "edge" || id == "origin", "{id}");
            let other = Want::Whep {
                room: "x",
                origin: None,
            };
            assert_eq!(
                choose(&nodes, "a", other, now, pick).unwrap().record.id,
                "big"
            );
        }
        // The preferred ones full: any other node.
        let mut edge = node("edge", 100, 100, 0, now);
        edge.record.relays = vec!["r".into()];
        let nodes = [node("big", 0, 1000, 0, now), edge];
        let want = Want::Whep {
            room: "r",
            origin: None,
        };
        assert_eq!(choose(&nodes, "a", want, now, 3).unwrap().record.id, "big");
    }

    #[test]
    fn node_ids() {
        assert_eq!(derive_node_id("http://10.0.0.2:8080"), "10.0.0.2-8080");
        assert_eq!(derive_node_id("https://Edge.Example"), "edge.example-443");
        assert_eq!(derive_node_id("http://h"), "h-80");
        assert_eq!(derive_node_id("http://[::1]:9000/a/b"), "::1-9000-a-b");
        assert_eq!(derive_node_id("http://h:1/x y"), "h-1-x-y");
    }
}

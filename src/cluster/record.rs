//! What a node publishes about itself (its record) and what a node reads
//! about the others (the [`Snapshot`]). Pure: JSON in and out, no I/O.

use std::time::Instant;

use serde_json::{json, Value};

/// Most rooms listed in one record's `relays` (beyond it, placement simply
/// does not know that the node pulls the room).
pub const MAX_RELAYS_IN_RECORD: usize = 1024;

/// One node's record, stored as JSON at `wisp:node:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node id (`WISP_NODE_ID`).
    pub id: String,
    /// HTTP base URL (`WISP_NODE_URL`), without a trailing `/`.
    pub url: String,
    /// Sessions now (publishers plus viewers, relays included).
    pub sessions: u64,
    /// `WISP_MAX_SESSIONS`.
    pub max_sessions: u64,
    /// Packets forwarded per second, over the last second or so.
    pub forwarded_pps: u64,
    /// Draining: takes no new sessions.
    pub draining: bool,
    /// Wall-clock time of the write, in ms since the Unix epoch (informative:
    /// liveness comes from the key's expiry, never from clocks across hosts).
    pub updated_ms: u64,
    /// Rooms this node pulls from another node (it is an edge for them).
    pub relays: Vec<String>,
}

impl NodeRecord {
    /// The JSON stored in Redis.
    pub fn to_json(&self) -> String {
        json!({
            "id": self.id,
            "url": self.url,
            "sessions": self.sessions,
            "max_sessions": self.max_sessions,
            "forwarded_pps": self.forwarded_pps,
            "draining": self.draining,
            "updated_ms": self.updated_ms,
            "relays": self.relays,
        })
        .to_string()
    }

    /// Parse a stored record; `None` for anything malformed (a foreign or
    /// older writer), which is then ignored like an absent node.
    pub fn from_json(text: &[u8]) -> Option<NodeRecord> {
        let v: Value = serde_json::from_slice(text).ok()?;
        let s = |k: &str| v.get(k)?.as_str().map(str::to_string);
        let n = |k: &str| v.get(k)?.as_u64();
        let relays = match v.get("relays") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .take(MAX_RELAYS_IN_RECORD)
                .collect(),
            _ => Vec::new(),
        };
        Some(NodeRecord {
            id: s("id")?,
            url: s("url")?,
            sessions: n("sessions")?,
            max_sessions: n("max_sessions")?,
            forwarded_pps: n("forwarded_pps").unwrap_or(0),
            draining: v.get("draining").and_then(Value::as_bool).unwrap_or(false),
            updated_ms: n("updated_ms").unwrap_or(0),
            relays,
        })
    }

    /// Sessions this node can still take (0 when draining or full).
    pub fn free_sessions(&self) -> u64 {
        if self.draining {
            0
        } else {
            self.max_sessions.saturating_sub(self.sessions)
        }
    }
}

/// A record as read, with the instant its key expires (read time plus the
/// key's remaining TTL as Redis reported it: no clock comparison across hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub record: NodeRecord,
    pub expires_at: Instant,
}

impl NodeInfo {
    /// Whether the record is still alive at `now`.
    pub fn alive(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

/// The directory's view of the cluster, rebuilt on every refresh; cheap to
/// read (an `Arc` clone) from any thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every node record read at the last refresh, this node's included, by id.
    pub nodes: Vec<NodeInfo>,
    /// Whether the directory's Redis connection was up at the last step.
    pub connected: bool,
    /// When the nodes were read; `None` before the first successful read.
    pub taken_at: Option<Instant>,
}

impl Snapshot {
    /// The nodes alive at `now`.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(move |n| n.alive(now))
    }

    /// The record of `id`, if alive at `now`.
    pub fn node(&self, id: &str, now: Instant) -> Option<&NodeInfo> {
        self.live(now).find(|n| n.record.id == id)
    }

    /// The `GET /api/cluster` body: `{"connected": .., "nodes": [{..record..,
    /// "expires_in_ms": ..}, ..]}` with the nodes alive at `now`.
    pub fn to_json(&self, now: Instant) -> Value {
        let nodes: Vec<Value> = self
            .live(now)
            .map(|n| {
                let mut v: Value = serde_json::from_str(&n.record.to_json()).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    let left = n.expires_at.saturating_duration_since(now).as_millis() as u64;
                    m.insert("expires_in_ms".into(), left.into());
                }
                v
            })
            .collect();
        json!({ "connected": self.connected, "nodes": nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec() -> NodeRecord {
        NodeRecord {
            id: "a".into(),
            url: "http://a:1".into(),
            sessions: 3,
            max_sessions: 10,
            forwarded_pps: 1234,
            draining: false,
            updated_ms: 42,
            relays: vec!["r1".into()],
        }
    }

    #[test]
    fn json_round_trip_and_garbage() {
        let r = rec();
        assert_eq!(
            NodeRecord::from_json(r.to_json().as_bytes()),
            Some(r.clone())
        );
        assert_eq!(NodeRecord::from_json(b"nope"), None);
        assert_eq!(NodeRecord::from_json(br#"{"id":"a"}"#), None);
        assert_eq!(r.free_sessions(), 7);
        let full = NodeRecord {
            sessions: 11,
            ..r.clone()
        };
        assert_eq!(full.free_sessions(), 0);
        let drain = NodeRecord {
            draining: true,
            ..r
        };
        assert_eq!(drain.free_sessions(), 0);
    }

    #[test]
    fn snapshot_filters_expired() {
        let now = Instant::now();
        let mut b = rec();
        b.id = "b".into();
        let s = Snapshot {
            nodes: vec![
                NodeInfo {
                    record: rec(),
                    expires_at: now + Duration::from_secs(5),
                },
                NodeInfo {
                    record: b,
                    expires_at: now,
                },
            ],
            connected: true,
            taken_at: Some(now),
        };
        assert_eq!(s.live(now).count(), 1);
        assert!(s.node("b", now).is_none() && s.node("a", now).is_some());
        let j = s.to_json(now);
        assert_eq!(j["nodes"].as_array().unwrap().len(), 1);
        assert_eq!(j["nodes"][0]["expires_in_ms"], 5000);
        assert_eq!(j["connected"], true);
    }
}

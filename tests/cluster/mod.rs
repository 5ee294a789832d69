//! Cluster tests' helpers: a wisp node in cluster mode (the binary on a
//! fixed free port, so that its `WISP_NODE_URL` is known before it starts),
//! its directory view, offers and pumping.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

use crate::realnet;
use crate::support::redis::free_port;
use crate::support::{Resp, Wisp};

/// A wisp node in cluster mode on a fixed, free HTTP port (its URL must be
/// known before it starts).
pub struct Node {
    pub wisp: Wisp,
    pub url: String,
}

impl Node {
    pub fn start(redis: &str, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("http://{addr}");
        let mut all = vec![
            ("WISP_HTTP_ADDR", addr.as_str()),
            ("WISP_REDIS_URL", redis),
            ("WISP_NODE_URL", url.as_str()),
        ];
        all.extend_from_slice(env);
        let wisp = Wisp::start(&all);
        Node { wisp, url }
    }

    pub fn id(&self) -> String {
        self.url.trim_start_matches("http://").replace(':', "-")
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.wisp.request("GET", path, headers, b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut h = vec![("Content-Type", "application/sdp")];
        h.extend_from_slice(headers);
        self.wisp.request("POST", path, &h, body.as_bytes())
    }

    pub fn cluster(&self, headers: &[(&str, &str)]) -> serde_json::Value {
        let r = self.get("/api/cluster", headers);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Wait (bounded) until this node's directory view satisfies `f`.
    pub fn until(&self, what: &str, limit: Duration, f: impl Fn(&serde_json::Value) -> bool) {
        let t = Instant::now();
        loop {
            let v = self.cluster(&[]);
            if f(&v) {
                return;
            }
            assert!(t.elapsed() < limit, "{what}: not within {limit:?}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics", &[]).text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

/// The nodes in a `/api/cluster` body.
pub fn nodes(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["nodes"].as_array().cloned().unwrap_or_default()
}

pub fn node_field<'a>(v: &'a serde_json::Value, id: &str, field: &str) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .map_or(&serde_json::Value::Null, |n| &n[field])
}

/// A str0m offer with audio and video in `dir` (never connected).
pub fn offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// Pump `peers` (sending a frame every 20 ms from `publisher` once it is
/// connected) for `d`; returns the frame counter.
pub fn pump_for(
    publisher: &mut realnet::Peer,
    viewer: &mut realnet::Peer,
    frame: &mut u64,
    d: Duration,
) {
    let end = Instant::now() + d;
    let mut next = Instant::now();
    while Instant::now() < end {
        publisher.pump();
        viewer.pump();
        if publisher.connected && Instant::now() >= next {
            publisher.send_frame(*frame);
            *frame += 1;
            next += Duration::from_millis(20);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

//! Cluster tests' helpers: a wisp node in cluster mode (the binary on a
//! fixed free port, so that its `WISP_NODE_URL` is known before it starts),
//! its directory view, offers and pumping.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

use crate::realnet;
use crate::support::redis::free_port;
use crate::support::{Resp, TlsFiles, Wisp};

/// A wisp node in cluster mode on a fixed, free HTTP port (its URL must be
/// known before it starts).
pub struct Node {
    pub wisp: Wisp,
    pub url: String,
    /// The certificate (DER) of a node serving HTTPS, which its requests trust.
    pub tls: Option<Vec<u8>>,
}

impl Node {
    pub fn start(redis: &str, env: &[(&str, &str)]) -> Node {
        Node::launch(redis, None, env)
    }

    /// A node serving HTTPS with `tls` (`WISP_TLS_CERT` / `WISP_TLS_KEY`),
    /// its `WISP_NODE_URL` `https://127.0.0.1:PORT`.
    pub fn start_tls(redis: &str, tls: &TlsFiles, env: &[(&str, &str)]) -> Node {
        Node::launch(redis, Some(tls), env)
    }

    fn launch(redis: &str, tls: Option<&TlsFiles>, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let mut all = vec![
            ("WISP_HTTP_ADDR", addr.as_str()),
            ("WISP_REDIS_URL", redis),
            ("WISP_NODE_URL", url.as_str()),
        ];
        let files = tls.map(|t| (t.cert.to_str().unwrap(), t.key.to_str().unwrap()));
        if let Some((cert, key)) = files {
            all.extend_from_slice(&[("WISP_TLS_CERT", cert), ("WISP_TLS_KEY", key)]);
        }
        all.extend_from_slice(env);
        let wisp = Wisp::start(&all);
        let tls = tls.map(|t| t.der.clone());
        Node { wisp, url, tls }
    }

    /// Its id as derived from its URL (`127.0.0.1-PORT`).
    pub fn id(&self) -> String {
        let host = self.url.split_once("://").map_or(&*self.url, |(_, h)| h);
        host.replace(':', "-")
    }

    /// One request (10 s bound), over TLS for a node serving HTTPS.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let Some(der) = &self.tls else {
            return self.wisp.request(method, path, headers, body);
        };
        let timeout = Duration::from_secs(10);
        crate::support::https_with(self.wisp.http, der, method, path, headers, body, timeout)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, b"")
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut h = vec![("Content-Type", "application/sdp")];
        h.extend_from_slice(headers);
        self.request("POST", path, &h, body.as_bytes())
    }

    /// A str0m peer of this node (WHIP or WHEP at `path`).
    pub fn peer(&self, path: &str, dir: Direction) -> realnet::Peer {
        realnet::Peer::with_post(path, dir, |offer| {
            let r = self.post(path, &[], offer);
            let text = r.text();
            (r.status, r.headers, text)
        })
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

/// What [`paced`] drives as the publisher.
pub trait Publisher {
    fn pump(&mut self);
    fn connected(&self) -> bool;
    /// Send the next frame.
    fn send_frame(&mut self);
}

/// A [`realnet::Peer`] publishing numbered frames, the next one `frame`
/// (see [`realnet::Peer::send_frame`]).
struct Numbered<'a> {
    peer: &'a mut realnet::Peer,
    frame: &'a mut u64,
}

impl Publisher for Numbered<'_> {
    fn pump(&mut self) {
        self.peer.pump();
    }
    fn connected(&self) -> bool {
        self.peer.connected
    }
    fn send_frame(&mut self) {
        self.peer.send_frame(*self.frame);
        *self.frame += 1;
    }
}

/// Pump the publisher and the viewers every 2 ms, sending a frame every
/// `period` once the publisher is connected, until `done` holds or `limit`
/// passes; false on timeout.
pub fn paced(
    publisher: &mut impl Publisher,
    viewers: &mut [&mut realnet::Peer],
    period: Duration,
    limit: Duration,
    mut done: impl FnMut(&[&mut realnet::Peer]) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    let mut next = Instant::now();
    while Instant::now() < end {
        publisher.pump();
        for v in viewers.iter_mut() {
            v.pump();
        }
        if publisher.connected() && Instant::now() >= next {
            publisher.send_frame();
            next += period;
        }
        if done(viewers) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// [`paced`] with a [`realnet::Peer`] publisher: a frame every 20 ms,
/// numbered on from `frame`.
pub fn run(
    publisher: &mut realnet::Peer,
    viewers: &mut [&mut realnet::Peer],
    frame: &mut u64,
    limit: Duration,
    done: impl FnMut(&[&mut realnet::Peer]) -> bool,
) -> bool {
    let mut publisher = Numbered {
        peer: publisher,
        frame,
    };
    paced(
        &mut publisher,
        viewers,
        Duration::from_millis(20),
        limit,
        done,
    )
}

/// [`run`] with one viewer, until it has `n` video packets; false if it
/// has fewer after 20 s (ample for a first stream through a relay).
pub fn run_until_video(
    publisher: &mut realnet::Peer,
    viewer: &mut realnet::Peer,
    frame: &mut u64,
    n: usize,
) -> bool {
    let limit = Duration::from_secs(20);
    run(publisher, &mut [viewer], frame, limit, |v| {
        v[0].got_video.len() >= n
    })
}

/// [`run`] for `d`, with one viewer.
pub fn pump_for(
    publisher: &mut realnet::Peer,
    viewer: &mut realnet::Peer,
    frame: &mut u64,
    d: Duration,
) {
    run(publisher, &mut [viewer], frame, d, |_| false);
}

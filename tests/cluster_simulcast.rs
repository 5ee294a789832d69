//! Simulcast through an edge, over real processes (issue 15): an origin and
//! an edge `wisp` binary on one real `redis-server`, a str0m publisher
//! sending three VP8 simulcast layers (rids `h`, `m`, `l`) to the origin and
//! one str0m viewer on the edge. The edge's upstream receives every layer
//! (the edge measures each: the `layers` event of its viewer's WHEP event
//! stream), the viewer gets video, and a WHEP layer request on the edge
//! switches what it receives, on a keyframe of the new layer, numbering
//! continuous. The deterministic version is
//! `tests/edge_relays_simulcast_layers.rs`. Without `redis-server` the test
//! prints SKIPPED (unless `CI` is set).

mod cluster;
mod realnet;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Simulcast, SimulcastLayer};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use cluster::{nodes, Node};
use realnet::Peer;
use support::redis::{have_redis, Redis};
use support::sse::Events;

/// The publisher's layers: rid, packets per frame, packet size, picture size.
const LAYERS: [(&str, usize, usize, (u16, u16)); 3] = [
    ("h", 4, 1000, (1280, 720)),
    ("m", 2, 800, (640, 360)),
    ("l", 1, 400, (320, 180)),
];
/// Frames every 33 ms; a keyframe on request, or every 60 frames.
const FRAME: Duration = Duration::from_millis(33);
const KEY_EVERY: u64 = 60;
/// Where the test's fields sit in a payload: after the 6-byte VP8
/// descriptor (X, I with a 15-bit picture id, L, T) and 10 bytes of frame
/// header (frame tag, start code, size on a keyframe), the layer index and
/// the frame number.
const LAYER_AT: usize = 16;
const FRAME_AT: usize = 17;

struct Layer {
    rid: &'static str,
    packets: usize,
    size: usize,
    dims: (u16, u16),
    seq: u64,
    picture_id: u16,
    tl0: u8,
    frames: u64,
    want_keyframe: bool,
}

/// A str0m publisher of three simulcast layers (video only) over real UDP.
struct SimPublisher {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    mid: Mid,
    layers: Vec<Layer>,
    frame: u64,
    connected: bool,
}

impl SimPublisher {
    /// WHIP-publish `room` on `node`.
    fn new(node: &Node, room: &str) -> SimPublisher {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut sim = Simulcast::new();
        for (rid, ..) in LAYERS {
            sim.add_send_layer(SimulcastLayer::new(rid));
        }
        let mut api = rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("sim".into()),
            None,
            Some(sim),
        );
        let (offer, pending) = api.apply().unwrap();
        let r = node.post(&format!("/whip/{room}"), &[], &offer.to_sdp_string());
        assert_eq!(r.status, 201, "{}", r.text());
        let answer = SdpAnswer::from_sdp_string(&r.text()).unwrap();
        assert!(r.text().contains("a=simulcast:recv"), "{}", r.text());
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let layers = LAYERS
            .iter()
            .map(|&(rid, packets, size, dims)| Layer {
                rid,
                packets,
                size,
                dims,
                seq: 1,
                picture_id: 0,
                tl0: 0,
                frames: 0,
                want_keyframe: false,
            })
            .collect();
        SimPublisher {
            rtc,
            sock,
            addr,
            mid,
            layers,
            frame: 0,
            connected: false,
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::KeyframeRequest(r)) => {
                    for l in &mut self.layers {
                        if r.rid.is_none() || r.rid.as_deref() == Some(l.rid) {
                            l.want_keyframe = true;
                        }
                    }
                }
                Output::Event(_) => {}
            }
        }
    }
}

impl cluster::Publisher for SimPublisher {
    fn pump(&mut self) {
        while support::udp::recv_one(&mut self.rtc, &self.sock, self.addr) {
            self.drain();
        }
        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
        self.drain();
    }

    fn connected(&self) -> bool {
        self.connected
    }

    /// One frame of every layer: VP8 with picture id and TL0PICIDX (which
    /// wisp rewrites across a switch), a keyframe's size in its header.
    fn send_frame(&mut self) {
        let now = Instant::now();
        let pt = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        let frame = self.frame;
        self.frame += 1;
        for (n, l) in self.layers.iter_mut().enumerate() {
            let key = std::mem::take(&mut l.want_keyframe) || l.frames.is_multiple_of(KEY_EVERY);
            l.frames += 1;
            l.picture_id = (l.picture_id + 1) & 0x7fff;
            l.tl0 = l.tl0.wrapping_add(1);
            for j in 0..l.packets {
                let start = j == 0;
                let mut p = vec![
                    if start { 0x90 } else { 0x80 },
                    0xe0,
                    0x80 | (l.picture_id >> 8) as u8,
                    l.picture_id as u8,
                    l.tl0,
                    0x00,
                ];
                if start && key {
                    let (w, h) = l.dims;
                    p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
                    p.extend_from_slice(&w.to_le_bytes());
                    p.extend_from_slice(&h.to_le_bytes());
                } else {
                    p.extend_from_slice(&[0x01; 10]);
                }
                p.push(n as u8);
                p.extend_from_slice(&frame.to_be_bytes());
                p.resize(l.size, 0x5a);
                let seq = l.seq;
                l.seq += 1;
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(self.mid, Some(l.rid.into())) else {
                    continue;
                };
                tx.write_rtp(
                    RtpWrite::new(pt, SeqNo::from(seq), (frame * 3000) as u32, now, p)
                        .marker(j + 1 == l.packets)
                        .nackable(true),
                );
            }
        }
        self.drain();
    }
}

/// One video packet as the viewer got it.
#[derive(Debug, Clone, Copy)]
struct Got {
    layer: u8,
    frame: u64,
    /// The picture size, on the first packet of a keyframe.
    keyframe: Option<(u16, u16)>,
}

/// The viewer's video packets with the test's fields (padding-only packets,
/// if any, left out).
fn got(v: &Peer) -> Vec<Got> {
    v.got_video
        .iter()
        .filter(|p| p.len() >= FRAME_AT + 8)
        .map(|p| {
            let start = p[0] & 0x10 != 0 && p[6] & 0x01 == 0 && p[9..12] == [0x9d, 0x01, 0x2a];
            let size = |at: usize| u16::from_le_bytes([p[at], p[at + 1]]) & 0x3fff;
            Got {
                layer: p[LAYER_AT],
                frame: u64::from_be_bytes(p[FRAME_AT..FRAME_AT + 8].try_into().unwrap()),
                keyframe: start.then(|| (size(12), size(14))),
            }
        })
        .collect()
}

/// Pump both peers (a frame every 33 ms once the publisher is connected)
/// and hand each event of `events` to `seen`, until `done` holds or `limit`
/// passes; false on timeout.
fn run(
    publisher: &mut SimPublisher,
    viewer: &mut Peer,
    events: &mpsc::Receiver<(String, Value)>,
    seen: &mut Vec<(String, Value)>,
    limit: Duration,
    mut done: impl FnMut(&Peer, &[(String, Value)]) -> bool,
) -> bool {
    cluster::paced(publisher, &mut [viewer], FRAME, limit, |v| {
        seen.extend(events.try_iter());
        done(v[0], seen)
    })
}

/// The layers of the last `layers` event in `seen`, by rid.
fn last_layers(seen: &[(String, Value)]) -> Vec<Value> {
    seen.iter()
        .rev()
        .find(|(n, _)| n == "layers")
        .and_then(|(_, v)| v["1"].as_array().cloned())
        .unwrap_or_default()
}

fn layer<'a>(layers: &'a [Value], rid: &str) -> &'a Value {
    layers
        .iter()
        .find(|l| l["rid"] == rid)
        .unwrap_or(&Value::Null)
}

/// Pin `rid` for the viewer at `session` on `edge`; then the viewer's video
/// after the request must switch to that layer on a keyframe of it with its
/// picture size, and stay on it (`packets` per frame) for 20 frames.
/// Returns the time from the request to the layer's first packet (within
/// a pump, ~2 ms).
fn switch_to(
    edge: &Node,
    session: &str,
    publisher: &mut SimPublisher,
    viewer: &mut Peer,
    events: &mpsc::Receiver<(String, Value)>,
    seen: &mut Vec<(String, Value)>,
    rid: &str,
) -> Duration {
    let (index, (_, packets, _, dims)) =
        LAYERS.iter().enumerate().find(|(_, l)| l.0 == rid).unwrap();
    let before = got(viewer).len();
    let asked = Instant::now();
    let body = format!(r#"{{"mediaId":"1","rid":"{rid}"}}"#);
    let r = edge.request(
        "POST",
        &format!("{session}/layer"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut first_at = None;
    let ok = run(
        publisher,
        viewer,
        events,
        seen,
        Duration::from_secs(6),
        |v, _| {
            let g = got(v);
            let first = g[before..].iter().position(|p| p.layer == index as u8);
            if first.is_some() {
                first_at.get_or_insert_with(Instant::now);
            }
            first.is_some_and(|i| g.len() - (before + i) >= 20 * packets)
        },
    );
    let g = got(viewer);
    let tail: Vec<(u8, u64)> = g[before..].iter().map(|p| (p.layer, p.frame)).collect();
    assert!(ok, "not switched to {rid}: after the request {tail:?}");
    let i = before
        + g[before..]
            .iter()
            .position(|p| p.layer == index as u8)
            .unwrap();
    assert_eq!(
        g[i].keyframe,
        Some(*dims),
        "the switch to {rid} starts on its keyframe: {:?}",
        g[i]
    );
    // From there on only that layer, every packet of every frame.
    let new = &g[i..];
    assert!(new.iter().all(|p| p.layer == index as u8), "{tail:?}");
    let frames = new.last().unwrap().frame - new[0].frame + 1;
    assert_eq!(new.len() as u64, frames * *packets as u64, "{tail:?}");
    first_at.unwrap() - asked
}

#[test]
fn an_edge_relays_every_layer_and_its_viewer_switches_on_request() {
    if !have_redis("an_edge_relays_every_layer_and_its_viewer_switches_on_request") {
        return;
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let started = Instant::now();
    let redis = Redis::new();
    let origin = Node::start(&redis.url(), &[]);
    let edge = Node::start(&redis.url(), &[]);
    edge.until("two nodes", Duration::from_secs(6), |v| nodes(v).len() == 2);

    let mut publisher = SimPublisher::new(&origin, "sim");
    let mut viewer = edge.peer("/whep/sim", Direction::RecvOnly);
    // The viewer's event stream on the edge, read on a thread of its own
    // (its reads block) and polled between pumps.
    let r = edge.request(
        "POST",
        &format!("{}/sse", viewer.location),
        &[("Content-Type", "application/json")],
        br#"["layers"]"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut stream = Events::open(edge.wisp.http, r.header("location").unwrap());
    let (tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let go_on = match stream.next() {
                Some(e) => tx.send(e).is_ok(),
                None => !stream.ends_within(Duration::ZERO),
            };
            if !go_on {
                return;
            }
        }
    });
    let mut seen = Vec::new();

    // The viewer gets video; the edge measures all three layers, each
    // with the picture size of its keyframes: the upstream gets them all.
    let ok = run(
        &mut publisher,
        &mut viewer,
        &events,
        &mut seen,
        Duration::from_secs(15),
        |v, seen| {
            let layers = last_layers(seen);
            got(v).len() >= 30
                && LAYERS.iter().all(|(rid, _, _, (w, _))| {
                    let l = layer(&layers, rid);
                    l["active"] == true && l["bitrate"].as_u64() > Some(0) && l["width"] == *w
                })
        },
    );
    assert!(
        ok,
        "viewer got {} video packets; the edge's last layers: {:?}; edge log: {:?}",
        got(&viewer).len(),
        last_layers(&seen),
        edge.wisp.log_lines("relay")
    );
    let g = got(&viewer);
    assert!(g[0].keyframe.is_some(), "starts on a keyframe: {:?}", g[0]);
    let rooms = edge.get("/api/rooms", &[]).json();
    assert_eq!(rooms[0]["relayed"], true, "{rooms}");
    assert_eq!(rooms[0]["origin"], origin.id().as_str(), "{rooms}");
    assert_eq!(edge.metric("wisp_relay_upstreams"), 1);
    assert_eq!(origin.metric("wisp_relay_downstreams"), 1);

    // Pinned low, then high, then middle: each a switch on the new layer's
    // keyframe (the pin of `l` may find the viewer there already).
    let session = viewer.location.clone();
    let mut took = vec![];
    for rid in ["l", "h", "m"] {
        let t = switch_to(
            &edge,
            &session,
            &mut publisher,
            &mut viewer,
            &events,
            &mut seen,
            rid,
        );
        took.push((rid, t));
    }
    eprintln!("layer switches through the edge (request to the layer's first packet): {took:?}");
    // The edge's event stream says the viewer is on the pinned layer.
    let ok = run(
        &mut publisher,
        &mut viewer,
        &events,
        &mut seen,
        Duration::from_secs(3),
        |_, seen| {
            let l = last_layers(seen);
            layer(&l, "m")["current"] == true && layer(&l, "m")["pinned"] == true
        },
    );
    assert!(ok, "{:?}", last_layers(&seen));
    // One stream for the decoder: numbering continuous across the switches.
    let seq: Vec<u16> = viewer.got_video_seq.clone();
    assert!(
        seq.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "sequence numbers jump"
    );
    assert!(!viewer.closed);
    let mut order: Vec<&str> = vec![];
    for p in got(&viewer) {
        let rid = LAYERS[p.layer as usize].0;
        if order.last() != Some(&rid) {
            order.push(rid);
        }
    }
    eprintln!(
        "the viewer's layers in order: {order:?}; whole test: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

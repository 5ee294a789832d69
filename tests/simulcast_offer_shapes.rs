//! Simulcast offered in the shapes OBS Studio and GStreamer send (issue #8,
//! item 1): wisp accepts each, answers `a=simulcast:recv` with the offered
//! rids, tracks every layer, forwards each one, and moves viewers to the
//! layer their link carries.
//!
//! The shapes, from reading the senders' sources:
//!
//! **OBS Studio** (obsproject/obs-studio `plugins/obs-webrtc/whip-output.cpp`,
//! simulcast from PR #10885 "obs-webrtc: Add Simulcast Support"; layers made
//! by `frontend/utility/WHIPSimulcastEncoders.hpp`). The SDP text is written
//! by libdatachannel (paullouisageneau/libdatachannel `src/description.cpp`:
//! `Description::generateSdp`, `Entry::generateSdpLines`,
//! `Media::generateSdpLines`; H.264 fmtp from `DEFAULT_H264_VIDEO_PROFILE`
//! in `include/rtc/description.hpp`):
//! - session: `o=rtc …`, `a=group:BUNDLE 0 1`, `a=group:LS 0 1`,
//!   `a=msid-semantic:WMS *`, `a=ice-options:trickle`, the fingerprint at
//!   session level; per m-line `a=setup:actpass`, ufrag and pwd come last.
//!   No candidates (auto gathering is off; OBS gathers after the answer).
//! - audio, mid `0`: Opus PT 111 (`minptime=10;maxaveragebitrate=96000;
//!   stereo=1;sprop-stereo=1;useinbandfec=1`), `a=ssrc` cname and msid,
//!   `a=msid`, no `a=extmap` at all.
//! - video, mid `1`: `a=extmap:1 …sdes:mid`, `a=extmap:2 …sdes:rtp-stream-id`
//!   (no repaired-rtp-stream-id), `a=sendonly`, `a=msid`, then
//!   `a=rid:0 send`, `a=rid:1 send`, `a=rid:2 send`, `a=simulcast:send 0;1;2`,
//!   then `a=rtcp-mux` and H.264 PT 96 (`nack`, `nack pli`, `ccm fir`,
//!   `goog-remb`; `profile-level-id=42e01f;packetization-mode=1;
//!   level-asymmetry-allowed=1`). No RTX. No `a=ssrc` on the video line:
//!   libdatachannel leaves out an entry's `ssrc:` attributes once it has rids.
//! - rids are the encoder indices as strings, sorted numerically: `0` is the
//!   main encoder (full size and bitrate), `1`.. the scaled-down extra
//!   encoders, so the highest layer comes first. Every RTP packet carries mid
//!   (ext 1) and rid (ext 2); the layer SSRCs (base + 1 + index) are never
//!   signalled.
//! - OBS checks the answer: it counts the `;`-separated entries of the first
//!   `a=simulcast` line (`simulcast_layers_in_answer` in
//!   `plugins/obs-webrtc/whip-utils.h`) and stops with
//!   "SimulcastLayersRejected" unless that count equals its layer count.
//! - whip-output.cpp installs no PLI handler: keyframes come only on the
//!   encoder's own interval, so the OBS test's publisher ignores requests.
//!
//! **GStreamer** (GStreamer/gstreamer
//! `subprojects/gst-plugins-bad/ext/webrtc/gstwebrtcbin.c`,
//! `_create_media_section` and `_media_add_ssrcs`; the caps-to-SDP step is
//! `gst_sdp_media_set_media_from_caps` in
//! `subprojects/gst-plugins-base/gst-libs/gst/sdp/gstsdpmessage.c`).
//! Neither `whipsink` (GStreamer/gst-plugins-rs
//! `net/webrtchttp/src/whipsink/imp.rs`: max-bundle, every transceiver
//! sendonly) nor `whipclientsink` (webrtcsink) sets up simulcast on its own.
//! An application asks webrtcbin for it through caps fields, as webrtcbin's
//! own `test_simulcast` does (`tests/check/elements/webrtcbin.c`,
//! `create_simulcast_audio_caps`): `rid-<id>=send`,
//! `a-simulcast="send <ids>"`, `extmap-<n>=<uri>` (there: mid, rid and
//! repaired rid at ids 1, 2, 3; rid names and order are the application's).
//! - session: `o=- …`, `a=ice-options:trickle`, `a=group:BUNDLE`.
//! - each m-line: `a=setup:actpass`, ufrag, pwd; with max-bundle every line
//!   after the first has port 0 and `a=bundle-only`; `a=rtcp-mux`,
//!   `a=rtcp-rsize`, `a=sendonly`; `a=rtpmap` with the upper-case caps
//!   encoding name (`OPUS/48000/2`, `VP8/90000`), `a=rtcp-fb`, then the caps
//!   fields (`a=rid`, `a=simulcast`, `a=extmap`), `a=fmtp`; RTX
//!   (`rtx/90000`, `apt=`) when the transceiver does NACK; `a=ssrc-group:FID`
//!   and `a=ssrc … msid:` / `a=ssrc … cname:` only for SSRCs the caps carry;
//!   `a=mid`; `a=fingerprint` on every m-line.
//! - `a=ssrc-group:SIM`: webrtcbin writes no SIM group itself (its only
//!   `ssrc-group` is FID), but every `a-*` caps field becomes an attribute
//!   verbatim, so an application can add one; the second GStreamer test has
//!   it next to declared SSRCs, RTX and rids, the most cluttered form.
//!
//! How the tests build these offers: the TestNet publisher is a real str0m
//! peer set up like the sender (codecs, PTs, RTX or none, header extension
//! ids, rid names and order), so what it puts on the wire matches the text.
//! Its offer is then rewritten line by line into the sender's layout
//! ([`obs_offer`], [`gst_offer`]), keeping its ICE credentials, fingerprint,
//! candidates and SSRCs. Not reproduced: the mids. str0m picks them
//! (three random characters) and stamps them into every packet, so they
//! cannot be renamed to OBS's `0`/`1` or GStreamer's `video0`/`audio1`.
//!
//! The layer rates are this suite's (h ≈ 1.6 Mbit/s, m ≈ 480 kbit/s,
//! l ≈ 120 kbit/s), not OBS's even split (top, 2/3, 1/3), which at usual
//! settings puts the lowest layer above what a 300 kbit/s link carries.

mod common;

use std::time::Duration;

use common::{JoinOpts, TestNet};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind};
use str0m::rtp::Extension;
use str0m::RtcConfig;
use wisp::sfu::{Role, RoomName};

/// OBS layers in offer order (rid, packets per frame, packet size):
/// `0` the main encoder, then the scaled-down ones.
const OBS_LAYERS: &[(&str, usize, usize)] = &[("0", 6, 1100), ("1", 2, 1000), ("2", 1, 500)];

/// GStreamer layers, listed low first as an application may order its caps.
const GST_LAYERS: &[(&str, usize, usize)] = &[("l", 1, 500), ("m", 2, 1000), ("h", 6, 1100)];

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const RRID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

// ---- The senders' offers ----------------------------------------------------

/// What the rewrites keep from the str0m client's offer.
#[derive(Debug, Default)]
struct Parts {
    ufrag: String,
    pwd: String,
    fingerprint: String,
    candidates: Vec<String>,
    audio_mid: String,
    video_mid: String,
    audio_ssrc: String,
    /// Video (main, RTX) SSRC pairs from `a=ssrc-group:FID`, in layer order.
    video_ssrcs: Vec<(String, String)>,
    /// Rids of `a=rid:<rid> send`, in offer order.
    rids: Vec<String>,
}

fn parts(offer: &str) -> Parts {
    let mut p = Parts::default();
    let mut kind = "";
    for l in offer.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            kind = m.split(' ').next().unwrap_or("");
            continue;
        }
        let Some(a) = l.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = a.split_once(':').unwrap_or((a, ""));
        match (name, kind) {
            ("ice-ufrag", _) if p.ufrag.is_empty() => p.ufrag = value.into(),
            ("ice-pwd", _) if p.pwd.is_empty() => p.pwd = value.into(),
            ("fingerprint", _) if p.fingerprint.is_empty() => p.fingerprint = value.into(),
            ("candidate", _) => p.candidates.push(l.into()),
            ("mid", "audio") => p.audio_mid = value.into(),
            ("mid", "video") => p.video_mid = value.into(),
            ("ssrc", "audio") if p.audio_ssrc.is_empty() => {
                p.audio_ssrc = value.split(' ').next().unwrap().into()
            }
            ("ssrc-group", "video") => {
                let v: Vec<&str> = value.split(' ').collect();
                if v.len() == 3 && v[0] == "FID" {
                    p.video_ssrcs.push((v[1].into(), v[2].into()));
                }
            }
            ("rid", "video") => {
                if let Some(rid) = value.strip_suffix(" send") {
                    p.rids.push(rid.into());
                }
            }
            _ => {}
        }
    }
    assert!(
        !p.ufrag.is_empty() && !p.fingerprint.is_empty() && !p.audio_ssrc.is_empty(),
        "{offer}"
    );
    p
}

fn sdp(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

/// The offer OBS (libdatachannel) sends, from the client's offer.
fn obs_offer(offer: String) -> String {
    let p = parts(&offer);
    let (a, v) = (&p.audio_mid, &p.video_mid);
    let msid = "c3RyZWFtLWlkLW9icw";
    let cname = "b2JzLWNuYW1lLTAx";
    let mut s: Vec<String> = vec![
        "v=0".into(),
        "o=rtc 3126479204 0 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "t=0 0".into(),
        format!("a=group:BUNDLE {a} {v}"),
        format!("a=group:LS {a} {v}"),
        "a=msid-semantic:WMS *".into(),
        "a=ice-options:trickle".into(),
        format!("a=fingerprint:{}", p.fingerprint),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".into(),
        "c=IN IP4 0.0.0.0".into(),
        format!("a=mid:{a}"),
        "a=sendonly".into(),
        format!("a=ssrc:{} cname:{cname}", p.audio_ssrc),
        format!("a=ssrc:{} msid:{msid} {msid}-audio", p.audio_ssrc),
        format!("a=msid:{msid} {msid}-audio"),
        "a=rtcp-mux".into(),
        "a=rtpmap:111 opus/48000/2".into(),
        "a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1"
            .into(),
        "a=setup:actpass".into(),
        format!("a=ice-ufrag:{}", p.ufrag),
        format!("a=ice-pwd:{}", p.pwd),
        "m=video 9 UDP/TLS/RTP/SAVPF 96".into(),
        "c=IN IP4 0.0.0.0".into(),
        format!("a=mid:{v}"),
        format!("a=extmap:1 {MID_URI}"),
        format!("a=extmap:2 {RID_URI}"),
        "a=sendonly".into(),
        format!("a=msid:{msid} {msid}-video"),
    ];
    for r in &p.rids {
        s.push(format!("a=rid:{r} send"));
    }
    s.push(format!("a=simulcast:send {}", p.rids.join(";")));
    s.extend(
        [
            "a=rtcp-mux",
            "a=rtpmap:96 H264/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
            "a=rtcp-fb:96 goog-remb",
            "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
            "a=setup:actpass",
        ]
        .map(String::from),
    );
    s.push(format!("a=ice-ufrag:{}", p.ufrag));
    s.push(format!("a=ice-pwd:{}", p.pwd));
    sdp(&s)
}

/// The offer webrtcbin (whipsink, max-bundle) sends for simulcast caps: no
/// RTX, no SSRCs on the video line.
fn gst_offer(offer: String) -> String {
    gst_shaped(offer, false)
}

/// [`gst_offer`] with RTX (do-nack), every layer's SSRC and its RTX declared
/// (`a=ssrc-group:FID`, `a=ssrc … msid:/cname:`) and an `a=ssrc-group:SIM`.
fn gst_offer_rtx_ssrcs(offer: String) -> String {
    gst_shaped(offer, true)
}

fn gst_shaped(offer: String, rtx_ssrcs: bool) -> String {
    let p = parts(&offer);
    let (a, v) = (&p.audio_mid, &p.video_mid);
    let cname = "user1804289383@host-2a6f";
    let media_head = |s: &mut Vec<String>, bundle_only: bool| {
        s.push("c=IN IP4 0.0.0.0".into());
        s.push("a=setup:actpass".into());
        s.push(format!("a=ice-ufrag:{}", p.ufrag));
        s.push(format!("a=ice-pwd:{}", p.pwd));
        if bundle_only {
            s.push("a=bundle-only".into());
        }
        s.extend(["a=rtcp-mux", "a=rtcp-rsize", "a=sendonly"].map(String::from));
    };
    let mut s: Vec<String> = vec![
        "v=0".into(),
        "o=- 4611731400430051336 0 IN IP4 0.0.0.0".into(),
        "s=-".into(),
        "t=0 0".into(),
        "a=ice-options:trickle".into(),
        format!("a=group:BUNDLE {a} {v}"),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".into(),
    ];
    media_head(&mut s, false);
    s.push("a=rtpmap:111 OPUS/48000/2".into());
    s.push(format!(
        "a=ssrc:{} msid:{cname} webrtctransceiver0",
        p.audio_ssrc
    ));
    s.push(format!("a=ssrc:{} cname:{cname}", p.audio_ssrc));
    s.push(format!("a=mid:{a}"));
    s.extend(p.candidates.iter().cloned());
    s.push(format!("a=fingerprint:{}", p.fingerprint));
    s.push(format!(
        "m=video 0 UDP/TLS/RTP/SAVPF 96{}",
        if rtx_ssrcs { " 97" } else { "" }
    ));
    media_head(&mut s, true);
    s.extend(
        [
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
        ]
        .map(String::from),
    );
    for r in &p.rids {
        s.push(format!("a=rid:{r} send"));
    }
    s.push(format!("a=simulcast:send {}", p.rids.join(";")));
    s.push(format!("a=extmap:1 {MID_URI}"));
    s.push(format!("a=extmap:2 {RID_URI}"));
    s.push(format!("a=extmap:3 {RRID_URI}"));
    if rtx_ssrcs {
        s.push("a=rtpmap:97 rtx/90000".into());
        s.push("a=fmtp:97 apt=96".into());
        assert_eq!(p.video_ssrcs.len(), p.rids.len(), "{offer}");
        for (main, rtx) in &p.video_ssrcs {
            s.push(format!("a=ssrc-group:FID {main} {rtx}"));
        }
        // Main SSRCs first, then the RTX ones (_media_add_ssrcs).
        let mains = p.video_ssrcs.iter().map(|(m, _)| m);
        for x in mains.chain(p.video_ssrcs.iter().map(|(_, r)| r)) {
            s.push(format!("a=ssrc:{x} msid:{cname} webrtctransceiver1"));
            s.push(format!("a=ssrc:{x} cname:{cname}"));
        }
        let mains: Vec<&str> = p.video_ssrcs.iter().map(|(m, _)| m.as_str()).collect();
        s.push(format!("a=ssrc-group:SIM {}", mains.join(" ")));
    }
    s.push(format!("a=mid:{v}"));
    s.push(format!("a=fingerprint:{}", p.fingerprint));
    sdp(&s)
}

// ---- The senders' RTP setup --------------------------------------------------

/// OBS: Opus 111, H.264 96 constrained baseline 3.1 without RTX; mid on
/// header extension 1, rid on 2.
fn obs_config(b: RtcConfig) -> RtcConfig {
    let mut b = b
        .clear_codecs()
        .enable_opus(true, false)
        .clear_extension_map()
        .set_extension(1, Extension::RtpMid)
        .set_extension(2, Extension::RtpStreamId);
    b.codec_config().add_config(
        96.into(),
        None,
        Codec::H264,
        Frequency::NINETY_KHZ,
        None,
        FormatParams {
            level_asymmetry_allowed: Some(true),
            packetization_mode: Some(1),
            profile_level_id: Some(0x42e01f),
            ..Default::default()
        },
    );
    b
}

/// GStreamer: Opus 111, VP8 96 (RTX 97 when `rtx`); mid, rid and repaired
/// rid on header extensions 1, 2, 3.
fn gst_config(b: RtcConfig, rtx: bool) -> RtcConfig {
    let mut b = b
        .clear_codecs()
        .enable_opus(true, false)
        .clear_extension_map()
        .set_extension(1, Extension::RtpMid)
        .set_extension(2, Extension::RtpStreamId)
        .set_extension(3, Extension::RepairedRtpStreamId);
    b.codec_config().add_config(
        96.into(),
        rtx.then(|| 97.into()),
        Codec::Vp8,
        Frequency::NINETY_KHZ,
        None,
        FormatParams::default(),
    );
    b
}

fn gst_config_plain(b: RtcConfig) -> RtcConfig {
    gst_config(b, false)
}

fn gst_config_rtx(b: RtcConfig) -> RtcConfig {
    gst_config(b, true)
}

// ---- Checks -------------------------------------------------------------------

/// The lines of the video m-section of `sdp`.
fn video_section(sdp: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut on = false;
    for l in sdp.lines().map(str::trim_end) {
        if l.starts_with("m=") {
            on = l.starts_with("m=video");
        }
        if on {
            out.push(l);
        }
    }
    out
}

/// The answer receives exactly the offered rids, in offer order; returns
/// its `a=simulcast` line.
fn assert_answer_receives(answer: &str, rids: &[&str]) -> String {
    let video = video_section(answer);
    let sim: Vec<&&str> = video
        .iter()
        .filter(|l| l.starts_with("a=simulcast"))
        .collect();
    assert_eq!(sim.len(), 1, "{answer}");
    assert_eq!(
        *sim[0],
        format!("a=simulcast:recv {}", rids.join(";")),
        "{answer}"
    );
    for r in rids {
        assert!(
            video.contains(&format!("a=rid:{r} recv").as_str()),
            "{answer}"
        );
    }
    // OBS's acceptance test (whip-utils.h): entries of the first
    // a=simulcast line, counted by ';'.
    let first = answer
        .lines()
        .find(|l| l.starts_with("a=simulcast"))
        .unwrap();
    assert_eq!(first.matches(';').count() + 1, rids.len(), "{answer}");
    sim[0].to_string()
}

/// Viewer `i`'s simulcast video packets (layer index per the publisher's
/// list) with their arrival time since the start.
fn arrived(net: &TestNet, i: usize) -> Vec<(Duration, u8)> {
    net.sim_arrivals(i)
        .into_iter()
        .map(|(at, p)| (at, p.layer))
        .collect()
}

/// One sender's shape and behaviour.
struct Shape {
    name: &'static str,
    seed: u64,
    opts: JoinOpts,
    /// Layers in offer order.
    layers: &'static [(&'static str, usize, usize)],
    highest: &'static str,
    lowest: &'static str,
    /// Loss on the publisher's uplink.
    uplink_loss: f64,
    /// The publisher sends keyframes only on its own schedule (every 3 s).
    ignores_keyframe_requests: bool,
}

/// What a run leaves for the shape-specific checks.
struct Run {
    net: TestNet,
    /// The publisher's offer as POSTed.
    offer: String,
    publisher: usize,
    slow: usize,
    fast: usize,
}

/// One shape's run: offer, answer, viewers on 300 kbit/s and 10 Mbit/s
/// links settle on the lowest and the highest layer, every layer tracked,
/// and each forwarded to a viewer pinned to it.
fn run_shape(shape: &Shape) -> Run {
    let name = shape.name;
    let (highest, lowest) = (shape.highest, shape.lowest);
    let room = "shape";
    let rids: Vec<&str> = shape.layers.iter().map(|l| l.0).collect();
    let mut net = TestNet::new(shape.seed);
    // join_opts panics unless the core answers and the client (str0m)
    // accepts the answer.
    let p = net.publish_with(room, &shape.opts);
    let offer = net.last_offer.clone();
    net.clients[p].uplink_loss = shape.uplink_loss;
    net.clients[p].ignore_keyframe_requests = shape.ignores_keyframe_requests;
    let sim = assert_answer_receives(&net.last_answer, &rids);
    eprintln!("{name}: answer has {sim:?}");
    let slow = net.view(room);
    let fast = net.view(room);
    let pinned = net.view(room);
    net.set_downlink(slow, Some(300_000));
    net.set_downlink(fast, Some(10_000_000));
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.connected(p)
            && n.connected(slow)
            && n.connected(fast)
            && n.connected(pinned)),
        "{name}: connect"
    );
    let connected = net.elapsed();

    // Bandwidth: the 10 Mbit/s viewer climbs to the highest layer, the
    // 300 kbit/s one stays on the lowest.
    let fast_settle = net
        .settle_on_layer(fast, highest, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{name}: 10 Mbit/s viewer never settled on {highest}"));
    assert_eq!(net.current_layer(fast).as_deref(), Some(highest), "{name}");
    assert_eq!(net.current_layer(slow).as_deref(), Some(lowest), "{name}");
    let first_video = |net: &TestNet, i: usize| {
        arrived(net, i)
            .first()
            .map(|(t, _)| (*t - connected).as_secs_f64())
    };
    let slow_first = first_video(&net, slow);

    // Every layer tracked: the SSE layers data lists each offered rid, in
    // offer order, measured and active.
    let room_name = RoomName::new(room).unwrap();
    let state = net
        .core_ref_of(fast)
        .viewer_state(
            Role::Subscriber,
            &room_name,
            net.clients[fast].token.unwrap(),
        )
        .unwrap();
    eprintln!("{name}: layers {:?}", state.layers);
    let listed: Vec<&str> = state.layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(listed, rids, "{name}: layers tracked");
    assert!(
        state.layers.iter().all(|l| l.active && l.bitrate > 0),
        "{name}: {:?}",
        state.layers
    );
    let rate = |rid: &str| state.layers.iter().find(|l| l.rid == rid).unwrap().bitrate;
    assert!(
        state.layers.iter().all(|l| rate(highest) >= l.bitrate),
        "{name}: {highest} is the highest"
    );
    assert!(
        state.layers.iter().all(|l| rate(lowest) <= l.bitrate),
        "{name}: {lowest} is the lowest"
    );

    // Every layer forwarded: pinned to each in turn, the viewer gets that
    // layer's packets and no other once the switch is done (on the layer's
    // next keyframe: at once on request, else the sender's next one).
    let hold = if shape.ignores_keyframe_requests {
        Duration::from_millis(4000)
    } else {
        Duration::from_millis(1500)
    };
    let mut pins = vec![];
    for (index, rid) in rids.iter().enumerate() {
        let at = net.elapsed();
        let now = net.now;
        let token = net.clients[pinned].token.unwrap();
        net.core_of(pinned)
            .pin_layer(now, Role::Subscriber, &room_name, token, Some(rid), None)
            .expect("pin");
        net.run_for(hold);
        assert_eq!(net.current_layer(pinned).as_deref(), Some(*rid), "{name}");
        let since: Vec<(Duration, u8)> = arrived(&net, pinned)
            .into_iter()
            .filter(|(t, _)| *t >= at)
            .collect();
        let first = since
            .iter()
            .position(|(_, l)| usize::from(*l) == index)
            .unwrap_or_else(|| panic!("{name}: layer {rid} never reached the viewer"));
        assert!(
            since[first..].iter().all(|(_, l)| usize::from(*l) == index),
            "{name}: other layers after {rid}"
        );
        let packets = since.len() - first;
        assert!(packets > 20, "{name}: {packets} packets of {rid}");
        pins.push(format!(
            "{rid} after {:.0} ms",
            (since[first].0 - at).as_secs_f64() * 1000.0
        ));
    }
    eprintln!(
        "{name}: pinned viewer got each layer's first packet: {}",
        pins.join(", ")
    );

    // Still where the links put them; the slow viewer never left the lowest.
    assert_eq!(net.current_layer(fast).as_deref(), Some(highest), "{name}");
    assert_eq!(net.current_layer(slow).as_deref(), Some(lowest), "{name}");
    let slow_layers: Vec<u8> = arrived(&net, slow).iter().map(|(_, l)| *l).collect();
    let low_index = rids.iter().position(|r| *r == lowest).unwrap() as u8;
    assert!(slow_layers.len() > 100, "{name}: slow viewer got video");
    assert!(
        slow_layers.iter().all(|l| *l == low_index),
        "{name}: the 300 kbit/s viewer only ever got {lowest}"
    );
    let audio = |i: usize| {
        net.clients[i]
            .got
            .iter()
            .filter(|g| g.kind == MediaKind::Audio)
            .count()
    };
    assert!(audio(slow) > 100 && audio(fast) > 100, "{name}: audio");
    let fl = net
        .core_ref_of(fast)
        .viewer_layers(net.clients[fast].token.unwrap())
        .unwrap();
    eprintln!(
        "{name}: 10 Mbit/s viewer on {highest} {:.2} s after connecting (first video at {:.2?} s, \
         {} switches, estimate {:?}); 300 kbit/s viewer: first video at {slow_first:.2?} s, \
         only {lowest} ({} packets); audio {} / {} packets; {} keyframe requests reached the publisher",
        fast_settle.as_secs_f64(),
        first_video(&net, fast),
        fl.switches,
        fl.estimate,
        slow_layers.len(),
        audio(slow),
        audio(fast),
        net.clients[p].keyframe_requests,
    );
    assert!(
        fast_settle <= Duration::from_secs(10),
        "{name}: {fast_settle:?}"
    );
    net.assert_accounting();
    Run {
        net,
        offer,
        publisher: p,
        slow,
        fast,
    }
}

// ---- Tests ----------------------------------------------------------------------

#[test]
fn obs_studio_simulcast_h264_rid_only() {
    let r = run_shape(&Shape {
        name: "OBS",
        seed: 81,
        opts: JoinOpts {
            candidate_in_offer: false,
            mangle: Some(obs_offer),
            config: Some(obs_config),
            simulcast: Some(OBS_LAYERS),
            ..JoinOpts::default()
        },
        layers: OBS_LAYERS,
        highest: "0",
        lowest: "2",
        uplink_loss: 0.0,
        // whip-output.cpp installs no PLI handler: layer switches wait for
        // the encoder's own keyframes.
        ignores_keyframe_requests: true,
    });
    // The shape under test, as POSTed.
    let offer = &r.offer;
    let video = video_section(offer);
    assert!(video.contains(&"a=simulcast:send 0;1;2"), "{offer}");
    assert!(video.contains(&"a=rtpmap:96 H264/90000"), "{offer}");
    assert!(!video.iter().any(|l| l.starts_with("a=ssrc")), "{offer}");
    assert!(
        !offer.contains("rtx/") && !offer.contains(RRID_URI),
        "{offer}"
    );
    assert!(!offer.contains("a=candidate"), "{offer}");
    // mid and rid on the video line only.
    assert_eq!(offer.matches("a=extmap:").count(), 2, "{offer}");
    assert!(r.net.clients[r.publisher].keyframe_requests > 0);
}

#[test]
fn gstreamer_webrtcbin_simulcast_bundle_only() {
    let r = run_shape(&Shape {
        name: "GStreamer",
        seed: 82,
        opts: JoinOpts {
            mangle: Some(gst_offer),
            config: Some(gst_config_plain),
            simulcast: Some(GST_LAYERS),
            ..JoinOpts::default()
        },
        layers: GST_LAYERS,
        highest: "h",
        lowest: "l",
        uplink_loss: 0.0,
        ignores_keyframe_requests: false,
    });
    let offer = &r.offer;
    let video = video_section(offer);
    assert!(video[0].starts_with("m=video 0 "), "{offer}");
    assert!(video.contains(&"a=bundle-only"), "{offer}");
    assert!(video.contains(&"a=simulcast:send l;m;h"), "{offer}");
    assert!(offer.contains("a=rtpmap:111 OPUS/48000/2"), "{offer}");
    assert!(!video.iter().any(|l| l.starts_with("a=ssrc")), "{offer}");
}

#[test]
fn gstreamer_simulcast_with_rtx_declared_ssrcs_and_sim_group() {
    // 1 % loss on the way in: wisp NACKs and the publisher repairs over RTX
    // (repaired-rtp-stream-id), next to SSRCs declared for every layer.
    let r = run_shape(&Shape {
        name: "GStreamer+RTX+SSRCs",
        seed: 83,
        opts: JoinOpts {
            mangle: Some(gst_offer_rtx_ssrcs),
            config: Some(gst_config_rtx),
            simulcast: Some(GST_LAYERS),
            ..JoinOpts::default()
        },
        layers: GST_LAYERS,
        highest: "h",
        lowest: "l",
        uplink_loss: 0.01,
        ignores_keyframe_requests: false,
    });
    let offer = &r.offer;
    let video = video_section(offer);
    assert!(
        video.iter().any(|l| l.starts_with("a=ssrc-group:SIM ")),
        "{offer}"
    );
    assert_eq!(
        video
            .iter()
            .filter(|l| l.starts_with("a=ssrc-group:FID "))
            .count(),
        3,
        "{offer}"
    );
    assert!(video.contains(&"a=rtpmap:97 rtx/90000"), "{offer}");
    let s = r.net.stats();
    // Holes left in what the viewers got: packets lost on the way in and
    // not repaired (a retransmission can be lost too).
    let holes = |i: usize| {
        let mut seqs: Vec<u64> = r.net.sim_packets(i).iter().map(|p| p.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let span = seqs.last().unwrap() - seqs[0] + 1;
        (span - seqs.len() as u64, seqs.len())
    };
    eprintln!(
        "GStreamer+RTX+SSRCs: {} NACKs to the publisher; holes (missing, received): \
         slow {:?}, fast {:?}; downlink drops slow {} fast {}",
        s.nacks_sent,
        holes(r.slow),
        holes(r.fast),
        r.net.clients[r.slow].downlink.as_ref().unwrap().dropped,
        r.net.clients[r.fast].downlink.as_ref().unwrap().dropped
    );
    assert!(s.nacks_sent > 0, "uplink loss was repaired through NACK");
}

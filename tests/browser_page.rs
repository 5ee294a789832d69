//! The publish-and-watch page in real headless Chromium against the real wisp
//! binary, driven through the page's own buttons.
//!
//! Every test runs in its own loopback-only network namespace (see
//! `browser::begin`), one at a time, with bounded waits, and kills the
//! processes it started. Without Chromium the tests are skipped, unless `CI`
//! is set. Run with `--nocapture` to see the measured numbers.

mod browser;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::peer::{Packet, Peer};
use browser::vp8::{vp8_keyframe_size, vp8_picture_id, vp8_shift_picture_id};
use browser::{begin, wait_for, Browser, Wisp};
use serde_json::{json, Value};
use str0m::media::{Direction, MediaKind};

const MEDIA_LIMIT: Duration = Duration::from_secs(20);
/// The fake camera runs at about 20 fps on a 2-core machine; ask for 10 fps.
const MIN_FRAMES_IN_3S: u64 = 30;

// ---- Driving the page -------------------------------------------------------------

fn open_page(wisp: &Wisp) -> Browser {
    Browser::open(&format!("{}/", wisp.url()))
}

fn click_publish(page: &Browser, room: &str, codec: &str) {
    page.set("room", room);
    page.set("quality", "360");
    page.set("codec", codec);
    page.click("#pub-start");
}

fn click_watch(page: &Browser, room: &str) -> Instant {
    page.set("room", room);
    let clicked = Instant::now();
    page.click("#watch-start");
    clicked
}

/// A fresh `getStats()` sample of the page's `publisher` or `viewer`, taken by
/// the page's own `sample()`, plus its status line. `null` before a connection exists.
fn stats(page: &Browser, who: &str) -> Value {
    let s = page.exec(
        "const c = window.wisp[arguments[0]]; \
         const status = document.getElementById(c.id + '-status').textContent; \
         if (!c.pc) return { status, frames: 0 }; \
         const s = await sample(c.pc, c.role, null); \
         return Object.assign(s, { status, firstFrameMs: c.firstFrameMs });",
        json!([who]),
    );
    assert!(s["error"].is_null(), "stats: {s}");
    s
}

fn frames(s: &Value) -> u64 {
    s["frames"].as_u64().unwrap_or(0)
}

fn size(s: &Value) -> (u64, u64) {
    (
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

fn wait_publishing(page: &Browser) -> Value {
    wait_for("the page to publish", MEDIA_LIMIT, || {
        let s = stats(page, "publisher");
        (s["state"] == "connected" && frames(&s) > 0).then_some(s)
    })
}

fn wait_first_frame(page: &Browser) -> Value {
    wait_for("the first decoded frame", MEDIA_LIMIT, || {
        let s = stats(page, "viewer");
        (frames(&s) > 0).then_some(s)
    })
}

/// Frames decoded over 3 s; asserts they grew enough.
fn frames_over_3s(page: &Browser) -> (u64, u64) {
    let a = frames(&stats(page, "viewer"));
    std::thread::sleep(Duration::from_secs(3));
    let b = frames(&stats(page, "viewer"));
    assert!(
        b >= a + MIN_FRAMES_IN_3S,
        "framesDecoded went from {a} to {b} in 3 s"
    );
    (a, b)
}

/// Both ends of the selected ICE pair are on 127.0.0.1.
fn assert_loopback(s: &Value) {
    let path = s["path"].as_str().unwrap_or("");
    assert!(
        path.starts_with("127.0.0.1:") && path.contains("→ 127.0.0.1:"),
        "ICE pair not on loopback: {path:?}"
    );
}

/// The viewer decodes at the publisher's encoded size (checked for a few
/// seconds: the encoder may be adapting to the CPU for a moment).
fn assert_same_size(publisher: &Browser, viewer: &Browser) -> (u64, u64) {
    wait_for(
        "the viewer's resolution to match the publisher's",
        Duration::from_secs(6),
        || {
            let (p, v) = (
                size(&stats(publisher, "publisher")),
                size(&stats(viewer, "viewer")),
            );
            (p == v && p.0 > 0).then_some(p)
        },
    )
}

fn stop_and_check_cleanup(wisp: &Wisp, room: &str, pages: &[(&Browser, &str)]) {
    for (page, button) in pages {
        page.click(button);
    }
    wait_for("wisp to drop the room", Duration::from_secs(10), || {
        wisp.room(room).is_none().then_some(())
    });
}

// ---- Tests ------------------------------------------------------------------------

fn publish_and_watch(test: &str, codec: &str, encoder: &str) {
    let Some(_one_at_a_time) = begin(test) else {
        return;
    };
    let wisp = Wisp::start();
    // The viewer's page comes from another origin (a second wisp): CORS must work.
    let other_origin = Wisp::start();
    let publisher = open_page(&wisp);
    let viewer = open_page(&other_origin);
    viewer.set("server", &wisp.url());

    click_publish(&publisher, "cam", codec);
    let p = wait_publishing(&publisher);
    assert!(
        p["impl"].as_str().unwrap_or("").contains(encoder),
        "encoder {}",
        p["impl"]
    );

    let clicked = click_watch(&viewer, "cam");
    wait_first_frame(&viewer);
    let ttff_test = clicked.elapsed().as_millis();
    let (a, b) = frames_over_3s(&viewer);
    let (w, h) = assert_same_size(&publisher, &viewer);
    let v = stats(&viewer, "viewer");
    let want_codec = codec.trim_start_matches("video/");
    assert_eq!(v["codec"].as_str(), Some(want_codec), "{v}");
    assert_loopback(&v);
    assert_loopback(&stats(&publisher, "publisher"));
    assert!(
        v["status"].as_str().unwrap_or("").contains("Playing"),
        "{v}"
    );

    // wisp's own counters agree, and the room list on the page shows the room.
    let before = wisp.video_packets("cam");
    std::thread::sleep(Duration::from_secs(1));
    let room = wisp.room("cam").expect("room listed");
    assert_eq!(room["publisher_live"], true);
    assert_eq!(room["viewers"], 1);
    assert!(wisp.video_packets("cam") > before, "wisp forwards video");
    wait_for("the room list on the page", Duration::from_secs(8), || {
        viewer.text("room-list").contains("cam").then_some(())
    });

    eprintln!(
        "RESULT {test}: framesDecoded {a} -> {b} in 3 s, {w}x{h} {want_codec} ({}), \
         time to first frame {} ms (page) / {ttff_test} ms (test, incl. polling)",
        p["impl"], v["firstFrameMs"]
    );
    assert!(
        v["firstFrameMs"].as_u64().is_some(),
        "the page measured the first frame"
    );
    stop_and_check_cleanup(
        &wisp,
        "cam",
        &[(&viewer, "#watch-stop"), (&publisher, "#pub-stop")],
    );
}

#[test]
fn chromium_publishes_vp8_and_another_chromium_watches() {
    publish_and_watch("vp8", "video/VP8", "libvpx");
}

#[test]
fn chromium_publishes_h264_and_another_chromium_watches() {
    publish_and_watch("h264", "video/H264", "OpenH264");
}

/// Chromium publishes through the page; a str0m viewer records what wisp
/// forwards, starting at the first VP8 keyframe. Returns the recording and the
/// keyframe's size.
fn record_from_chromium(wisp: &Wisp, page: &Browser, room: &str) -> (Vec<Packet>, (u16, u16)) {
    click_publish(page, room, "video/VP8");
    let p = wait_publishing(page);
    let mut viewer = Peer::new(wisp, &format!("/whep/{room}"), Direction::RecvOnly);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !viewer.connected && Instant::now() < deadline {
        viewer.run_for(Duration::from_millis(20));
    }
    assert!(viewer.connected, "str0m viewer connected");
    viewer.run_for(Duration::from_secs(3));
    let got = std::mem::take(&mut viewer.got);
    let r = browser::http(
        wisp.http,
        "DELETE",
        &viewer.location,
        &[],
        b"",
        Duration::from_secs(5),
    )
    .expect("DELETE");
    assert_eq!(r.status, 200);

    let video: Vec<&Packet> = got.iter().filter(|p| p.kind == MediaKind::Video).collect();
    let audio = got.len() - video.len();
    let first = video.first().expect("video from Chromium");
    let key = vp8_keyframe_size(&first.payload).expect("wisp starts a new viewer on a keyframe");
    let frames = video.iter().filter(|p| p.marker).count();
    assert!(frames >= 30, "{frames} VP8 frames in 3 s");
    assert!(audio >= 50, "{audio} Opus packets in 3 s");
    let publisher_size = size(&stats(page, "publisher"));
    assert_eq!(
        (u64::from(key.0), u64::from(key.1)),
        publisher_size,
        "keyframe size"
    );
    eprintln!(
        "RESULT str0m viewer: {frames} VP8 frames ({} packets) and {audio} Opus packets in 3 s, \
         keyframe {}x{}, publisher encoded {:?} ({})",
        video.len(),
        key.0,
        key.1,
        publisher_size,
        p["impl"]
    );
    let start = first.at;
    (got.into_iter().filter(|p| p.at >= start).collect(), key)
}

#[test]
fn chromium_publisher_and_str0m_viewer() {
    let Some(_one_at_a_time) = begin("chromium_publisher_and_str0m_viewer") else {
        return;
    };
    let wisp = Wisp::start();
    let page = open_page(&wisp);
    record_from_chromium(&wisp, &page, "to-str0m");
    stop_and_check_cleanup(&wisp, "to-str0m", &[(&page, "#pub-stop")]);
}

/// Send a recording in a loop at its original pace, shifting timestamps and
/// VP8 picture IDs by one recording length per loop, until `stop`.
fn replay(mut publisher: Peer, rec: Vec<Packet>, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publisher.connected && Instant::now() < deadline {
        publisher.run_for(Duration::from_millis(20));
    }
    let t0 = rec[0].at;
    let span = rec.last().map_or(Duration::ZERO, |p| p.at - t0) + Duration::from_millis(50);
    let base = |kind| rec.iter().find(|p| p.kind == kind).map_or(0, |p| p.ts);
    let (video_base, audio_base) = (base(MediaKind::Video), base(MediaKind::Audio));
    let ids: Vec<u16> = rec
        .iter()
        .filter_map(|p| vp8_picture_id(&p.payload))
        .collect();
    let id_span = match (ids.first(), ids.last()) {
        (Some(a), Some(b)) => b.wrapping_sub(*a).wrapping_add(1) & 0x7fff,
        _ => 0,
    };
    let start = Instant::now();
    for round in 0u32.. {
        let offset = span * round;
        for p in &rec {
            let due = start + offset + (p.at - t0);
            while Instant::now() < due {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                publisher.pump();
                std::thread::sleep(Duration::from_millis(1));
            }
            let (base, clock) = match p.kind {
                MediaKind::Video => (video_base, 90_000.0),
                MediaKind::Audio => (audio_base, 48_000.0),
            };
            let ts =
                p.ts.wrapping_sub(base)
                    .wrapping_add((offset.as_secs_f64() * clock) as u32);
            let mut payload = p.payload.clone();
            if p.kind == MediaKind::Video {
                vp8_shift_picture_id(&mut payload, id_span.wrapping_mul(round as u16));
            }
            publisher.send(p.kind, ts, p.marker, payload);
        }
    }
}

#[test]
fn str0m_publisher_and_chromium_viewer() {
    let Some(_one_at_a_time) = begin("str0m_publisher_and_chromium_viewer") else {
        return;
    };
    let wisp = Wisp::start();
    // str0m cannot encode: replay real VP8 and Opus that Chromium sent through wisp.
    let (rec, (w, h)) = {
        let source = open_page(&wisp);
        let rec = record_from_chromium(&wisp, &source, "source");
        source.click("#pub-stop");
        rec
    };

    let publisher = Peer::new(&wisp, "/whip/replay", Direction::SendOnly);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || replay(publisher, rec, stop))
    };
    let viewer = open_page(&wisp);
    let clicked = click_watch(&viewer, "replay");
    wait_first_frame(&viewer);
    let ttff_test = clicked.elapsed().as_millis();
    let (a, b) = frames_over_3s(&viewer);
    let v = stats(&viewer, "viewer");
    assert_eq!(size(&v), (u64::from(w), u64::from(h)), "{v}");
    assert_eq!(v["codec"], "VP8");
    assert_loopback(&v);
    eprintln!(
        "RESULT str0m publisher -> chromium: framesDecoded {a} -> {b} in 3 s, {w}x{h}, \
         time to first frame {} ms (page) / {ttff_test} ms (test)",
        v["firstFrameMs"]
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("replay thread");
    viewer.click("#watch-stop");
}

#[test]
fn viewer_opened_before_the_publisher() {
    let Some(_one_at_a_time) = begin("viewer_opened_before_the_publisher") else {
        return;
    };
    let wisp = Wisp::start();
    let viewer = open_page(&wisp);
    click_watch(&viewer, "early");
    let waiting = wait_for("the viewer to wait for the publisher", MEDIA_LIMIT, || {
        let s = stats(&viewer, "viewer");
        let status = s["status"].as_str().unwrap_or("").to_string();
        (s["state"] == "connected" && status.contains("waiting for the publisher"))
            .then_some(status)
    });
    assert_eq!(frames(&stats(&viewer, "viewer")), 0);

    let publisher = open_page(&wisp);
    let clicked = Instant::now();
    click_publish(&publisher, "early", "video/VP8");
    wait_first_frame(&viewer);
    let publish_to_frame = clicked.elapsed().as_millis();
    let (a, b) = frames_over_3s(&viewer);
    let (w, h) = assert_same_size(&publisher, &viewer);
    eprintln!(
        "RESULT viewer first: status {waiting:?}, then {publish_to_frame} ms from Publish click \
         to the viewer's first frame (incl. camera start), framesDecoded {a} -> {b} in 3 s, {w}x{h}"
    );
    stop_and_check_cleanup(
        &wisp,
        "early",
        &[(&publisher, "#pub-stop"), (&viewer, "#watch-stop")],
    );
}

#[test]
fn publisher_restarts_and_the_viewer_resumes() {
    let Some(_one_at_a_time) = begin("publisher_restarts_and_the_viewer_resumes") else {
        return;
    };
    let wisp = Wisp::start();
    let publisher = open_page(&wisp);
    let viewer = open_page(&wisp);
    click_publish(&publisher, "again", "video/VP8");
    wait_publishing(&publisher);
    click_watch(&viewer, "again");
    wait_first_frame(&viewer);

    publisher.click("#pub-stop");
    let gone = wait_for("the viewer to notice", Duration::from_secs(10), || {
        let status = stats(&viewer, "viewer")["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        status.contains("publisher is gone").then_some(status)
    });
    let paused = frames(&stats(&viewer, "viewer"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        frames(&stats(&viewer, "viewer")),
        paused,
        "no frames while unpublished"
    );

    let clicked = Instant::now();
    publisher.click("#pub-start");
    wait_for("frames again", MEDIA_LIMIT, || {
        (frames(&stats(&viewer, "viewer")) > paused).then_some(())
    });
    let resume = clicked.elapsed().as_millis();
    let (a, b) = frames_over_3s(&viewer);
    let status = stats(&viewer, "viewer")["status"].clone();
    assert_eq!(status, "Playing.");
    eprintln!(
        "RESULT restart: viewer said {gone:?}; {resume} ms from the second Publish click to new \
         frames; framesDecoded {a} -> {b} in 3 s"
    );
    stop_and_check_cleanup(
        &wisp,
        "again",
        &[(&publisher, "#pub-stop"), (&viewer, "#watch-stop")],
    );
}

#[test]
fn screenshot_of_a_live_page() {
    let Some(_one_at_a_time) = begin("screenshot_of_a_live_page") else {
        return;
    };
    let wisp = Wisp::start();
    let page = open_page(&wisp);
    click_publish(&page, "screenshot", "video/VP8");
    wait_publishing(&page);
    click_watch(&page, "screenshot");
    wait_first_frame(&page);
    // Let the panels show a few seconds of numbers and the room list refresh.
    std::thread::sleep(Duration::from_secs(4));
    let panel = page.text("watch-stats");
    assert!(
        panel.contains("Frames decoded") && panel.contains("Bitrate"),
        "{panel}"
    );
    assert!(page.text("room-list").contains("screenshot"));
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wisp-screenshot.png");
    page.screenshot(&path);
    let png = std::fs::read(&path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!(
        "RESULT screenshot: {} ({} bytes)",
        path.display(),
        png.len()
    );
}

fn wait_status(page: &Browser, id: &str, needle: &str) -> String {
    wait_for(
        &format!("#{id} to say {needle:?}"),
        Duration::from_secs(15),
        || {
            let text = page.text(id);
            text.contains(needle).then_some(text)
        },
    )
}

#[test]
fn tokens_and_clear_error_messages() {
    let Some(_one_at_a_time) = begin("tokens_and_clear_error_messages") else {
        return;
    };
    let wisp = Wisp::start_with(&[
        ("WISP_PUBLISH_TOKEN", "pub-secret"),
        ("WISP_VIEW_TOKEN", "view-secret"),
        ("WISP_ADMIN_TOKEN", "admin-secret"),
    ]);
    let page = open_page(&wisp);
    let mut seen = vec![wait_status(&page, "rooms-status", "needs the admin token")];

    // An unreachable server: the viewer keeps retrying with backoff.
    page.set("server", "http://127.0.0.1:9");
    click_watch(&page, "locked");
    seen.push(wait_status(&page, "watch-status", "Retrying in"));
    page.click("#watch-stop");
    page.set("server", &wisp.url());

    // No token, then another role's token, then the right one.
    click_publish(&page, "locked", "video/VP8");
    seen.push(wait_status(
        &page,
        "pub-status",
        "401: this server needs a valid publish token",
    ));
    page.set("pub-token", "view-secret");
    page.click("#pub-start");
    seen.push(wait_status(&page, "pub-status", "403:"));
    page.set("pub-token", "pub-secret");
    page.click("#pub-start");
    wait_publishing(&page);

    click_watch(&page, "locked");
    seen.push(wait_status(&page, "watch-status", "401:"));
    page.set("watch-token", "view-secret");
    page.click("#watch-start");
    wait_first_frame(&page);

    page.set("admin-token", "admin-secret");
    wait_for(
        "the room list with the admin token",
        Duration::from_secs(8),
        || page.text("room-list").contains("locked").then_some(()),
    );
    eprintln!("RESULT messages: {seen:#?}");
    stop_and_check_cleanup(
        &wisp,
        "locked",
        &[(&page, "#watch-stop"), (&page, "#pub-stop")],
    );
}

#[test]
fn ice_servers_from_link_headers_and_trickle_patch() {
    let Some(_one_at_a_time) = begin("ice_servers_from_link_headers_and_trickle_patch") else {
        return;
    };
    // Loopback STUN/TURN addresses: nothing answers there, and nothing leaves the namespace.
    let wisp = Wisp::start_with(&[
        ("WISP_STUN_URLS", "stun:127.0.0.1:3479"),
        ("WISP_TURN_URLS", "turn:127.0.0.1:3478?transport=udp"),
        ("WISP_TURN_USERNAME", "u1"),
        ("WISP_TURN_CREDENTIAL", "p1"),
    ]);
    let page = open_page(&wisp);
    page.exec(
        "const plain = window.fetch; window.fetchLog = []; \
         window.fetch = async (url, opts = {}) => { const r = await plain(url, opts); \
           if (opts.method) fetchLog.push(opts.method + ' ' + r.status); return r; };",
        json!([]),
    );
    click_watch(&page, "ice");
    wait_status(&page, "watch-status", "waiting for the publisher");
    let r = page.exec(
        "const c = wisp.viewer, offer = c.pc.localDescription.sdp; \
         const frag = wisp.sdpFragment(offer, \
           [{ candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host' }], true); \
         const patch = etag => fetch(c.session, { method: 'PATCH', body: frag, \
           headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': etag } }); \
         return { servers: c.pc.getConfiguration().iceServers, frag, \
           good: (await patch(c.etag)).status, stale: (await patch('\"nope\"')).status, \
           parsed: wisp.parseIceServers('<stun:a:1>; rel=\"ice-server\", ' + \
             '<turn:b:2?transport=tcp>; rel=\"ice-server\"; username=\"u, 1\"; ' + \
             'credential=\"p;1\"; credential-type=\"password\", <https://x/>; rel=\"next\"') };",
        json!([]),
    );
    assert!(r["error"].is_null(), "{r}");
    let servers = r["servers"].to_string();
    assert!(servers.contains("stun:127.0.0.1:3479"), "{servers}");
    assert!(
        servers.contains("turn:127.0.0.1:3478?transport=udp")
            && servers.contains("\"username\":\"u1\"")
            && servers.contains("\"credential\":\"p1\""),
        "{servers}"
    );
    assert_eq!(
        r["parsed"],
        json!([{"urls": "stun:a:1"},
               {"urls": "turn:b:2?transport=tcp", "username": "u, 1", "credential": "p;1"}])
    );
    assert_eq!(r["good"], 204, "trickle PATCH with the ETag: {}", r["frag"]);
    assert_eq!(r["stale"], 412, "PATCH with a stale If-Match");
    page.click("#watch-stop");
    std::thread::sleep(Duration::from_secs(1));
    let log = page.exec("return fetchLog", json!([])).to_string();
    assert!(log.contains("DELETE 200"), "{log}");
    assert!(
        log.contains("OPTIONS 204") && log.contains("POST 201"),
        "{log}"
    );
    eprintln!("RESULT ice/trickle: {servers}; requests {log}");
}

/// Issue 15 with real browsers: Chromium publishes to one node of a
/// cluster (Redis) and another Chromium watches the room on a second node,
/// which pulls it from the first over WHEP as an edge.
#[test]
fn chromium_publishes_on_one_node_and_chromium_watches_on_an_edge() {
    let test = "chromium_publishes_on_one_node_and_chromium_watches_on_an_edge";
    let Some(_one_at_a_time) = begin(test) else {
        return;
    };
    if !support::redis::have_redis(test) {
        return;
    }
    let redis = support::redis::Redis::new();
    let directory = redis.url();
    let node = || {
        let addr = format!("127.0.0.1:{}", support::redis::free_port());
        let url = format!("http://{addr}");
        let id = addr.replace(':', "-");
        let env = [
            ("WISP_HTTP_ADDR", addr.as_str()),
            ("WISP_REDIS_URL", directory.as_str()),
            ("WISP_NODE_URL", url.as_str()),
        ];
        (Wisp::start_with(&env), id)
    };
    let (origin, origin_id) = node();
    let (edge, _) = node();
    wait_for(
        "both nodes in the directory",
        Duration::from_secs(10),
        || {
            let n = edge.get("/api/cluster").json()["nodes"].as_array()?.len();
            (n == 2).then_some(())
        },
    );

    let publisher = open_page(&origin);
    click_publish(&publisher, "spread", "video/VP8");
    wait_publishing(&publisher);
    let viewer = open_page(&edge);
    let clicked = click_watch(&viewer, "spread");
    wait_first_frame(&viewer);
    let ttff = clicked.elapsed().as_millis();
    let (a, b) = frames_over_3s(&viewer);
    let (w, h) = assert_same_size(&publisher, &viewer);
    assert_loopback(&stats(&viewer, "viewer"));
    let room = edge.room("spread").expect("the edge lists the room");
    assert_eq!(room["relayed"], true, "{room}");
    assert_eq!(room["origin"], origin_id.as_str(), "{room}");
    let at_origin = origin.room("spread").expect("the origin lists the room");
    assert_eq!(at_origin["viewers"], 1, "the edge's one pull: {at_origin}");
    eprintln!(
        "RESULT {test}: framesDecoded {a} -> {b} in 3 s, {w}x{h}, \
         first frame {ttff} ms after the click (test, incl. polling)"
    );
    viewer.click("#watch-stop");
    publisher.click("#pub-stop");
}

//! Simulcast in real headless Chromium against the real wisp binary, through
//! the page: one page publishes three VP8 layers (h, m = 1/2, l = 1/4), two
//! pages watch.
//!
//! The first test pins: each viewer uses the page's layer picker (the WHEP
//! layer extension), one on `l`, one on `h`, and shows its layer from the
//! server-sent `layers` event. Both viewers must keep decoding, at frame
//! widths a factor of four apart.
//!
//! The second lets wisp choose from each viewer's TWCC bandwidth estimate
//! while Linux traffic control throttles one viewer's downlink (Chrome's
//! network emulation does not throttle WebRTC's UDP): HTB on `lo`, filtered on
//! the viewer's UDP port, inside the test's own network namespace. The
//! throttled viewer settles on `l`, the other climbs above it; both keep
//! decoding. Then the other's link narrows too, and it comes down to `l`.
//! Deterministic switching is tested in `simulcast_switching.rs`.
//!
//! Runs in a loopback-only network namespace (see `browser::begin`); skipped
//! without Chromium (or, for the second, `tc` and root) unless `CI` is set.
//! `--nocapture` shows the figures.

mod browser;
mod support;

use std::time::{Duration, Instant};

use browser::watch::{assert_decoding, fared, timeline, view, watch, View};
use browser::watch::{MIN_WINDOW_FRAMES, SAMPLE_EVERY};
use browser::{begin, wait_for, Browser, ShapedStats, Shaper, Wisp};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

/// A fresh `getStats()` sample of the page's `publisher` or `viewer` (the
/// page's own `sample()`), with its status and layer lines.
fn stats(page: &Browser, who: &str) -> Value {
    let s = page.exec(
        "const c = window.wisp[arguments[0]]; \
         const status = document.getElementById(c.id + '-status').textContent; \
         const layer = (document.getElementById('watch-layer') || {}).textContent || ''; \
         if (!c.pc) return { status, layer, frames: 0 }; \
         const s = await sample(c.pc, c.role, null); \
         return Object.assign(s, { status, layer, sse: c.layers || null, \
           active: c.publisherActive ?? null });",
        json!([who]),
    );
    assert!(s["error"].is_null(), "stats: {s}");
    s
}

fn frames(s: &Value) -> u64 {
    s["frames"].as_u64().unwrap_or(0)
}

fn width(s: &Value) -> u64 {
    s["width"].as_u64().unwrap_or(0)
}

/// The publisher's encodings: rid → frame width (0 while off).
fn encodings(s: &Value) -> Vec<(String, u64)> {
    s["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["rid"].as_str().unwrap_or("").to_string(),
                        l["width"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Open a page that publishes 720p simulcast (h, m, l) to `room`, and wait
/// until all three encodings run.
fn publish(page: &str, room: &str) -> (Browser, Vec<(String, u64)>) {
    let publisher = Browser::open(page);
    publisher.set("room", room);
    publisher.set("quality", "720");
    let on = publisher.exec(
        "const c = document.getElementById('simulcast'); c.checked = true; c.onchange(); \
         return [c.checked, document.getElementById('codec').value];",
        json!([]),
    );
    assert_eq!(on, json!([true, "video/VP8"]), "simulcast checkbox");
    publisher.click("#pub-start");
    let p = wait_for("three simulcast encodings", LIMIT, || {
        let s = stats(&publisher, "publisher");
        let e = encodings(&s);
        (s["state"] == "connected" && e.len() == 3 && e.iter().all(|(_, w)| *w > 0)).then_some(s)
    });
    eprintln!(
        "publisher encodings {:?} ({})",
        encodings(&p),
        p["impl"].as_str().unwrap_or("")
    );
    (publisher, encodings(&p))
}

/// Pick `rid` in the page's layer picker, as a user would (a change event).
fn pick(page: &Browser, rid: &str) {
    wait_for("the layer picker", LIMIT, || {
        let r = page.exec(
            "const s = document.getElementById('layer'); \
             if (s.disabled || ![...s.options].some(o => o.value === arguments[0])) return false; \
             s.value = arguments[0]; s.dispatchEvent(new Event('change')); return true;",
            json!([rid]),
        );
        (r == json!(true)).then_some(())
    });
}

/// Frames decoded by the page's viewer over `d`.
fn decoded_over(page: &Browser, d: Duration) -> (u64, u64) {
    let a = frames(&stats(page, "viewer"));
    std::thread::sleep(d);
    (a, frames(&stats(page, "viewer")))
}

#[test]
fn chromium_simulcast_publisher_and_two_viewers_on_different_layers() {
    let Some(_one_at_a_time) = begin("browser_simulcast") else {
        return;
    };
    let t_start = Instant::now();
    let wisp = Wisp::start();
    let page = format!("{}/", wisp.url());
    let (publisher, _) = publish(&page, "sc");

    let low = Browser::open(&page);
    let high = Browser::open(&page);
    for v in [&low, &high] {
        v.set("room", "sc");
        v.click("#watch-start");
    }
    for v in [&low, &high] {
        wait_for("the first decoded frame", LIMIT, || {
            (frames(&stats(v, "viewer")) > 0).then_some(())
        });
    }
    // The page shows the layer from the server-sent events, and the count.
    let auto = wait_for("the layer line", LIMIT, || {
        let s = stats(&low, "viewer");
        let line = s["layer"].as_str().unwrap_or("").to_string();
        (line.contains("Layer ") && line.contains("2 watching")).then_some(line)
    });
    eprintln!("automatic: {auto:?}");
    assert_eq!(stats(&high, "viewer")["active"], true, "the `active` event");

    // Pin one viewer low and the other high, through the page's picker.
    let t_pin = Instant::now();
    pick(&low, "l");
    pick(&high, "h");
    let (wl, wh) = wait_for("widths a factor of four apart", LIMIT, || {
        let (l, h) = (stats(&low, "viewer"), stats(&high, "viewer"));
        let (wl, wh) = (width(&l), width(&h));
        (wl > 0 && wh >= 4 * wl - 4 && wh <= 4 * wl + 4).then_some((wl, wh))
    });
    let switch_ms = t_pin.elapsed().as_millis();
    // Both keep decoding.
    let (la, ha) = (
        frames(&stats(&low, "viewer")),
        frames(&stats(&high, "viewer")),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (lb, hb) = (
        frames(&stats(&low, "viewer")),
        frames(&stats(&high, "viewer")),
    );
    assert!(
        lb >= la + 15,
        "low viewer: framesDecoded {la} -> {lb} in 3 s"
    );
    assert!(
        hb >= ha + 15,
        "high viewer: framesDecoded {ha} -> {hb} in 3 s"
    );
    // The server-sent `layers` event agrees, and the line says "pinned".
    for (v, rid) in [(&low, "l"), (&high, "h")] {
        let s = wait_for("the layers event to show the pinned layer", LIMIT, || {
            let s = stats(v, "viewer");
            let cur = s["sse"]
                .as_array()?
                .iter()
                .find(|l| l["current"] == true)?
                .clone();
            (cur["rid"] == rid && cur["pinned"] == true).then_some(s)
        });
        let line = s["layer"].as_str().unwrap_or("");
        assert!(
            line.contains(&format!("Layer {rid}")) && line.contains("pinned"),
            "{line}"
        );
    }
    let shot = std::env::temp_dir().join("wisp-simulcast-viewer.png");
    low.screenshot(&shot);
    eprintln!("screenshot of the pinned-low viewer: {}", shot.display());
    let s_low = stats(&low, "viewer");
    let s_high = stats(&high, "viewer");
    // wisp reads each layer's picture size from its VP8 keyframes (the
    // `layers` event): three sizes, in the order of the layers' rates.
    let sizes = wait_for("layer sizes in the layers event", LIMIT, || {
        let s = stats(&high, "viewer");
        let size = |rid: &str| {
            s["sse"]
                .as_array()
                .and_then(|a| a.iter().find(|l| l["rid"] == rid))
                .and_then(|l| Some((l["width"].as_u64()?, l["height"].as_u64()?)))
        };
        Some([size("h")?, size("m")?, size("l")?])
    });
    eprintln!(
        "wisp's layer sizes h {:?} m {:?} l {:?}; the publisher's encodings {:?}",
        sizes[0],
        sizes[1],
        sizes[2],
        encodings(&stats(&publisher, "publisher"))
    );
    assert!(
        sizes[0].0 > sizes[1].0 && sizes[1].0 > sizes[2].0 && sizes[2].0 > 0,
        "layer sizes {sizes:?}"
    );
    let rate = |s: &Value, rid: &str| {
        s["sse"]
            .as_array()
            .and_then(|a| a.iter().find(|l| l["rid"] == rid))
            .and_then(|l| l["bitrate"].as_u64())
            .unwrap_or(0)
    };
    eprintln!(
        "RESULT browser_simulcast: publisher {:?}; viewer l {}x{} decoded {la}->{lb} in 3 s, \
         viewer h {}x{} decoded {ha}->{hb} in 3 s; widths {wl}/{wh} reached {switch_ms} ms \
         after pinning; wisp layer rates h {} m {} l {} bit/s; total {} ms",
        encodings(&stats(&publisher, "publisher")),
        width(&s_low),
        s_low["height"],
        width(&s_high),
        s_high["height"],
        rate(&s_high, "h"),
        rate(&s_high, "m"),
        rate(&s_high, "l"),
        t_start.elapsed().as_millis()
    );

    // Back to automatic: accepted, and the viewer keeps decoding. On
    // loopback its estimate can climb; report where it got (not asserted:
    // the climb depends on the machine's load).
    let t_auto = Instant::now();
    pick(&low, "");
    let (a, b) = decoded_over(&low, Duration::from_secs(2));
    assert!(b > a, "after going back to automatic: {a} -> {b}");
    let mut climbed = None;
    while t_auto.elapsed() < Duration::from_secs(8) {
        let s = stats(&low, "viewer");
        if width(&s) == wh {
            climbed = Some((t_auto.elapsed().as_millis(), s["layer"].clone()));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "RESULT browser_simulcast automatic after unpinning l: {}",
        climbed.map_or(
            format!(
                "stayed below h for 8 s ({})",
                stats(&low, "viewer")["layer"]
            ),
            |(ms, line)| format!("decoding h after {ms} ms (page: {line})")
        ),
    );
    // The publisher leaves: the viewers get `inactive`.
    publisher.click("#pub-stop");
    wait_for("the `inactive` event", LIMIT, || {
        (stats(&high, "viewer")["active"] == false).then_some(())
    });
    assert!(stats(&high, "viewer")["layer"]
        .as_str()
        .unwrap_or("")
        .contains("publisher gone"));
    for v in [&low, &high] {
        v.click("#watch-stop");
    }
    wait_for("wisp to drop the room", Duration::from_secs(10), || {
        wisp.room("sc").is_none().then_some(())
    });
}

// ---- Automatic layers under real bandwidth limits -------------------------------

/// The throttled downlink, kbit/s on the wire: room for `l` (about 150 kbit/s
/// with headers) plus audio (about 50 kbit/s), but not for `m` (about
/// 350-400 kbit/s, chosen only when it fits 85 % of the estimate).
const THROTTLE_KBIT: u64 = 320;
/// How long the unthrottled viewer may take to climb from `l` (the estimate
/// starts at 300 kbit/s and each step up waits for it to hold).
const CLIMB_LIMIT: Duration = Duration::from_secs(35);
/// How long a viewer whose link narrows may take to come down to `l`...
const DROP_LIMIT: Duration = Duration::from_secs(20);
/// ...and settle there: no packet dropped at the bottleneck, and frames
/// flowing, for this long.
const SETTLE: Duration = Duration::from_secs(2);
/// Both viewers are watched this long once settled (in windows of
/// `browser::watch::WINDOW`).
const OBSERVE: Duration = Duration::from_secs(10);
/// The longest a viewer may go without a newly decoded frame while settled.
const MAX_STALL: Duration = Duration::from_secs(1);
/// The same for the viewer whose link narrowed, once it settled on `l`.
/// Looser: its bottleneck can go on dropping for a while (its estimate
/// comes down from well above the link, and wisp pads toward `m` on top of
/// `l`), where the viewer throttled from the start never loses a packet.
const MAX_STALL_NARROWED: Duration = Duration::from_secs(2);

/// A started viewer page's port, once its ICE pair is up (on 127.0.0.1:
/// the shaper's filter is IPv4).
fn viewer_port(page: &Browser) -> u16 {
    let v = wait_for("the viewer's ICE pair", LIMIT, || {
        let v = view(page);
        (v.state == "connected" && v.port.is_some()).then_some(v)
    });
    assert!(v.local.starts_with("127.0.0.1:"), "viewer on {}", v.local);
    v.port.expect("port")
}

/// wisp's measured rate of each layer (the `layers` event), bit/s.
fn layer_rates(page: &Browser) -> Value {
    page.exec(
        "return Object.fromEntries((window.wisp.viewer.layers || []).map(l => [l.rid, l.bitrate]));",
        json!([]),
    )
}

/// When dropped (at the end, or when the test fails), prints wisp's layer
/// decisions for each viewer of the room from its debug log: when, from, to,
/// and the estimate that made them. Viewers are named in order of arrival.
struct Choices<'a> {
    wisp: &'a Wisp,
    room: &'a str,
    viewers: [&'a str; 2],
}

impl Drop for Choices<'_> {
    fn drop(&mut self) {
        let created = self.wisp.log_lines(&format!("room {}: viewer ", self.room));
        let sessions = created
            .iter()
            .filter_map(|l| l.split(": viewer ").nth(1)?.strip_suffix(" created"));
        for (who, id) in self.viewers.iter().zip(sessions) {
            let lines = self
                .wisp
                .log_lines(&format!("room {}: viewer {id} layer", self.room));
            let choices: Vec<String> = lines
                .iter()
                .map(|l| {
                    let at = l.split_whitespace().next().unwrap_or("");
                    let what = l.split(" layer ").nth(1).unwrap_or("");
                    format!("{} {what}", at.trim_start_matches('['))
                })
                .collect();
            eprintln!("wisp's choices for the {who} viewer {id}: {choices:?}");
        }
    }
}

/// What crossed the bottleneck between two readings `d` apart.
fn wire(a: ShapedStats, b: ShapedStats, d: Duration) -> String {
    format!(
        "{} kbit/s on the wire, {} packets dropped",
        (b.bytes - a.bytes) * 8 / d.as_millis().max(1) as u64,
        b.dropped - a.dropped
    )
}

/// wisp's repair and switching counters (`/metrics`): name{labels} -> value.
fn repair_counters(wisp: &Wisp) -> Vec<(String, u64)> {
    let text = wisp.get("/metrics").text();
    text.lines()
        .filter(|l| {
            [
                "wisp_keyframe_requests_total",
                "wisp_nacks_total",
                "wisp_layer_switches_total",
                "wisp_packets_dropped_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// What changed between two `repair_counters` readings.
fn counted(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let was = before.iter().find(|(b, _)| b == k).map_or(0, |b| b.1);
            (*v > was).then(|| format!("{k} +{}", v - was))
        })
        .collect()
}

#[test]
fn chromium_simulcast_layers_follow_each_viewers_bandwidth() {
    const TEST: &str = "browser_simulcast_bandwidth";
    let Some(_one_at_a_time) = begin(TEST) else {
        return;
    };
    let mut shaper = match Shaper::install() {
        Ok(s) => s,
        Err(e) => {
            support::skip_unless_ci(TEST, &format!("cannot shape lo ({e})"));
            return;
        }
    };
    let t_start = Instant::now();
    let room = "bw";
    let wisp = Wisp::start_with(&[("RUST_LOG", "info,wisp::sfu=debug")]);
    let _choices = Choices {
        wisp: &wisp,
        room,
        viewers: ["throttled", "unthrottled, then narrowed"],
    };
    let page = format!("{}/", wisp.url());
    let (publisher, enc) = publish(&page, room);
    let encoded = || frames(&stats(&publisher, "publisher"));
    let w = |rid: &str| {
        enc.iter()
            .find(|(r, _)| r == rid)
            .map(|(_, w)| *w)
            .unwrap_or_else(|| panic!("no encoding {rid} in {enc:?}"))
    };
    let wl = w("l");
    let slow = Browser::open(&page);
    let fast = Browser::open(&page);

    // The slow viewer first: its downlink narrows as soon as its ICE pair is
    // up (a viewer starts low, on `l`, anyway). Then the fast one, unshaped.
    slow.set("room", room);
    slow.click("#watch-start");
    let t_slow = Instant::now();
    let slow_port = viewer_port(&slow);
    shaper.limit(slow_port, THROTTLE_KBIT);
    let throttled_after = t_slow.elapsed();
    fast.set("room", room);
    fast.click("#watch-start");
    let t_fast = Instant::now();
    let fast_port = viewer_port(&fast);
    assert_ne!(slow_port, fast_port);
    eprintln!(
        "viewers on ports {slow_port} (throttled to {THROTTLE_KBIT} kbit/s {} ms after its \
         click) and {fast_port} (unthrottled)",
        throttled_after.as_millis()
    );

    eprintln!("wisp's layer rates (bit/s): {}", layer_rates(&slow));

    // Automatic choice: the slow viewer on `l`, the fast one climbs.
    let on = |v: &View, rid: &str| v.current.as_deref() == Some(rid) && v.width == w(rid);
    let above_l =
        |v: &View| v.current.is_some() && v.current.as_deref() != Some("l") && v.width > wl;
    let (mut slow_on_l, mut fast_above_l, mut fast_on_h) = (None, None, None);
    let mut climb: [Vec<View>; 2] = Default::default();
    while t_fast.elapsed() < CLIMB_LIMIT {
        let (s, f) = (view(&slow), view(&fast));
        if slow_on_l.is_none() && on(&s, "l") {
            slow_on_l = Some(s.at - t_slow);
        }
        if fast_above_l.is_none() && above_l(&f) {
            fast_above_l = Some(f.at - t_fast);
        }
        if fast_on_h.is_none() && on(&f, "h") {
            fast_on_h = Some(f.at - t_fast);
        }
        let done = on(&s, "l") && fast_on_h.is_some();
        climb[0].push(s);
        climb[1].push(f);
        if done {
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let ms = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{} ms", d.as_millis()));
    eprintln!(
        "RESULT {TEST} settling (ms after each viewer's click): throttled viewer on l after {}, \
         unthrottled viewer above l after {}, on h after {}\n  throttled  {:?}\n  unthrottled {:?}",
        ms(slow_on_l),
        ms(fast_above_l),
        ms(fast_on_h),
        timeline(&climb[0], t_slow),
        timeline(&climb[1], t_fast),
    );
    assert!(
        slow_on_l.is_some(),
        "the throttled viewer never decoded l: {:?}",
        timeline(&climb[0], t_slow)
    );
    assert!(
        fast_above_l.is_some(),
        "the unthrottled viewer stayed on l for {CLIMB_LIMIT:?}: {:?}",
        timeline(&climb[1], t_fast)
    );

    // Both keep decoding, each on its own layer.
    let (tc0, t0, e0) = (shaper.stats(slow_port), Instant::now(), encoded());
    let seen = watch(&[&slow, &fast], OBSERVE);
    let (tc1, t1, e1) = (shaper.stats(slow_port), Instant::now(), encoded());
    let (fs, ff) = (fared(&seen[0]), fared(&seen[1]));
    eprintln!(
        "RESULT {TEST} both settled, {} s:\n  throttled   {fs}\n  unthrottled {ff}\n  \
         bottleneck of the throttled viewer: {}; since it began: {tc1:?}\n  publisher: {} \
         frames encoded (all layers); wisp's layer rates (bit/s): {}",
        OBSERVE.as_secs(),
        wire(tc0, tc1, t1 - t0),
        e1 - e0,
        layer_rates(&slow)
    );
    assert_decoding("throttled viewer", &fs, MAX_STALL, true);
    assert_decoding("unthrottled viewer", &ff, MAX_STALL, true);
    assert!(
        seen[0].iter().all(|v| on(v, "l")),
        "the throttled viewer left l: {:?}",
        timeline(&seen[0], seen[0][0].at)
    );
    assert!(
        seen[1].iter().all(above_l),
        "the unthrottled viewer fell to l: {:?}",
        timeline(&seen[1], seen[1][0].at)
    );
    assert!(fs.kbps <= THROTTLE_KBIT, "throttled viewer: {fs}");

    // Now the fast viewer's link narrows too: it comes down to `l`, settles
    // (the bottleneck stops dropping, frames flow again), and keeps decoding.
    // What the switch itself costs is printed, not asserted.
    let counters = repair_counters(&wisp);
    let t_narrow = Instant::now();
    let mut during = vec![view(&fast)];
    shaper.limit(fast_port, THROTTLE_KBIT);
    let (mut down, mut drops, mut quiet) = (None, 0, t_narrow);
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        let v = view(&fast);
        let now = shaper.stats(fast_port).dropped;
        if now > drops {
            (drops, quiet) = (now, Instant::now());
        }
        if down.is_none() && on(&v, "l") {
            down = Some(t_narrow.elapsed());
        }
        let on_l = on(&v, "l");
        during.push(v);
        // Settled: on `l`, nothing dropped and frames flowing for `SETTLE`.
        let last = &during[during.len() - 1];
        let recent = during
            .iter()
            .position(|s| last.at - s.at <= SETTLE)
            .unwrap_or(0);
        let flowing = fared(&during[recent..]);
        let settled = on_l
            && quiet.elapsed() >= SETTLE
            && last.frames - during[recent].frames >= MIN_WINDOW_FRAMES
            && flowing.stall < MAX_STALL / 2;
        if settled {
            break;
        }
        assert!(
            t_narrow.elapsed() < DROP_LIMIT,
            "the viewer whose link narrowed to {THROTTLE_KBIT} kbit/s has not settled on l \
             after {DROP_LIMIT:?} (on l after {down:?}, {drops} dropped at the bottleneck, the \
             last {} ms ago): {:?}; {}",
            quiet.elapsed().as_millis(),
            timeline(&during, t_narrow),
            fared(&during)
        );
    }
    let down = down.expect("on l");
    let quiet = quiet - t_narrow;
    let switch = fared(&during);
    let repairs = counted(&counters, &repair_counters(&wisp));
    let ports = [slow_port, fast_port];
    let (tc0, t0, e0) = (ports.map(|p| shaper.stats(p)), Instant::now(), encoded());
    let seen = watch(&[&slow, &fast], OBSERVE / 2);
    let (tc1, t1, e1) = (ports.map(|p| shaper.stats(p)), Instant::now(), encoded());
    let (fs2, ff2) = (fared(&seen[0]), fared(&seen[1]));
    eprintln!(
        "RESULT {TEST} narrowed: the unthrottled viewer decoded l {} ms after its link \
         narrowed to {THROTTLE_KBIT} kbit/s, the last drop at the bottleneck was at {} ms; \
         until {} s after that: {switch}\n  {:?}\n  wisp: {repairs:?}\nthen, {} s:\n  \
         narrowed  {ff2}; bottleneck {}\n  throttled {fs2}; bottleneck {}\n  publisher: {} \
         frames encoded\n  tc since each began: throttled port {:?}, narrowed port {:?}\n\
         total {} ms",
        down.as_millis(),
        quiet.as_millis(),
        SETTLE.as_secs(),
        timeline(&during, t_narrow),
        (OBSERVE / 2).as_secs(),
        wire(tc0[1], tc1[1], t1 - t0),
        wire(tc0[0], tc1[0], t1 - t0),
        e1 - e0,
        tc1[0],
        tc1[1],
        t_start.elapsed().as_millis()
    );
    if ff2.stall >= MAX_STALL || tc1[1].dropped > tc0[1].dropped {
        eprintln!(
            "NOTE {TEST}: the narrowed viewer's bottleneck still dropped packets after it had \
             settled on l ({}), longest gap {} ms",
            wire(tc0[1], tc1[1], t1 - t0),
            ff2.stall.as_millis()
        );
    }
    // The narrowed viewer: frames in every window and no long stall, but
    // with more slack than a viewer throttled from the start (`MAX_STALL_NARROWED`).
    assert_decoding("narrowed viewer", &ff2, MAX_STALL_NARROWED, false);
    assert_decoding("throttled viewer", &fs2, MAX_STALL, true);
    assert!(
        seen[1].iter().all(|v| on(v, "l")),
        "the narrowed viewer left l: {:?}",
        timeline(&seen[1], seen[1][0].at)
    );
    assert!(
        seen[0].iter().all(|v| on(v, "l")),
        "the throttled viewer left l: {:?}",
        timeline(&seen[0], seen[0][0].at)
    );
}

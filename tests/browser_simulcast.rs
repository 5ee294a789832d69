//! Simulcast in real headless Chromium against the real wisp binary, through
//! the page: one page publishes three VP8 layers (h, m = 1/2, l = 1/4), two
//! pages watch. Each viewer uses the page's layer picker (the WHEP layer
//! extension) and shows its layer from the server-sent `layers` event.
//!
//! Chrome's network emulation does not throttle WebRTC's UDP, so the two
//! "links" are made by pinning: one viewer on `l`, one on `h`. Automatic
//! selection under real bandwidth limits is tested deterministically in
//! `simulcast_switching.rs`. Both viewers must keep decoding, at frame widths
//! a factor of four apart.
//!
//! Runs in a loopback-only network namespace (see `browser::begin`); skipped
//! without Chromium unless `CI` is set. `--nocapture` shows the figures.

mod browser;

use std::time::{Duration, Instant};

use browser::{begin, wait_for, Browser, Wisp};
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
    let publisher = Browser::open(&page);
    publisher.set("room", "sc");
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

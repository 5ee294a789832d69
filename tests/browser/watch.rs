//! A page's viewer watched over time: samples of wisp's word on its layer
//! (the `layers` event) and the browser's (`getStats()`), and how it fared
//! over a run of them: frames per window, the longest stall, the layers and
//! widths it went through.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Browser;

/// Frames are counted in windows this long ([`Fared::windows`])...
pub const WINDOW: Duration = Duration::from_secs(2);
/// ...and [`assert_decoding`] wants at least this many in each.
pub const MIN_WINDOW_FRAMES: u64 = 10;
/// How often [`watch`] samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One sample of a page's viewer: wisp's word on its layer (the `layers`
/// event) and the browser's (`getStats()`).
#[derive(Debug, Clone)]
pub struct View {
    pub at: Instant,
    pub state: String,
    pub current: Option<String>,
    pub target: Option<String>,
    pub frames: u64,
    pub dropped: u64,
    pub freezes: u64,
    pub freeze_ms: u64,
    pub bytes: u64,
    pub lost: i64,
    pub width: u64,
    pub height: u64,
    /// Video: keyframes decoded, PLIs and NACKs sent, retransmissions received.
    pub keyframes: u64,
    pub plis: u64,
    pub nacks: u64,
    pub rtx: u64,
    /// The viewer's own end of the selected ICE pair.
    pub local: String,
    pub port: Option<u16>,
}

/// One sample of `page`'s viewer.
pub fn view(page: &Browser) -> View {
    let v = page.exec(
        "const c = window.wisp.viewer, ls = c.layers || []; \
         const rid = f => (ls.find(l => l[f]) || {}).rid || null; \
         const o = { state: c.pc ? c.pc.connectionState : 'none', current: rid('current'), \
           target: rid('target'), frames: 0, dropped: 0, freezes: 0, freezeMs: 0, bytes: 0, \
           lost: 0, width: 0, height: 0, keyframes: 0, plis: 0, nacks: 0, rtx: 0, local: '', \
           port: null }; \
         if (!c.pc) return o; \
         const r = await c.pc.getStats(); let pair = null; \
         r.forEach(s => { \
           if (s.type === 'inbound-rtp') { \
             o.bytes += s.bytesReceived || 0; o.lost += s.packetsLost || 0; \
             if (s.kind === 'video') { \
               o.frames += s.framesDecoded || 0; o.dropped += s.framesDropped || 0; \
               o.freezes += s.freezeCount || 0; \
               o.freezeMs += Math.round((s.totalFreezesDuration || 0) * 1000); \
               o.keyframes += s.keyFramesDecoded || 0; o.plis += s.pliCount || 0; \
               o.nacks += s.nackCount || 0; o.rtx += s.retransmittedPacketsReceived || 0; \
               if (s.frameWidth) { o.width = s.frameWidth; o.height = s.frameHeight; } } } \
           if (s.type === 'transport' && s.selectedCandidatePairId) pair = r.get(s.selectedCandidatePairId); \
         }); \
         const local = pair && r.get(pair.localCandidateId); \
         if (local) { o.local = local.address + ':' + local.port; o.port = local.port; } \
         return o;",
        json!([]),
    );
    assert!(v["error"].is_null(), "viewer stats: {v}");
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let s = |k: &str| v[k].as_str().map(str::to_string);
    View {
        at: Instant::now(),
        state: s("state").unwrap_or_default(),
        current: s("current"),
        target: s("target"),
        frames: n("frames"),
        dropped: n("dropped"),
        freezes: n("freezes"),
        freeze_ms: n("freezeMs"),
        bytes: n("bytes"),
        lost: v["lost"].as_i64().unwrap_or(0),
        width: n("width"),
        height: n("height"),
        keyframes: n("keyframes"),
        plis: n("plis"),
        nacks: n("nacks"),
        rtx: n("rtx"),
        local: s("local").unwrap_or_default(),
        port: v["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
    }
}

/// How a viewer fared over a run of samples.
#[derive(Debug)]
pub struct Fared {
    /// Frames decoded in each full `WINDOW`.
    pub windows: Vec<u64>,
    /// Longest time between two samples that saw new frames (an upper bound
    /// on the longest gap between frames, to within `SAMPLE_EVERY`).
    pub stall: Duration,
    /// RTP payload received, audio and video (`bytesReceived`: no headers,
    /// no padding), kbit/s.
    pub kbps: u64,
    /// Layers wisp reported, in order of appearance; decoded widths likewise.
    pub layers: Vec<String>,
    pub widths: Vec<u64>,
    /// Longest time between two samples: far above `SAMPLE_EVERY`, the
    /// machine itself was starved (the page answered late).
    pub lag: Duration,
    /// getStats() counters over the run.
    pub freezes: u64,
    pub freeze_ms: u64,
    pub dropped: u64,
    pub lost: i64,
}

impl std::fmt::Display for Fared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frames per {}s {:?}, longest gap {} ms, {} kbit/s received, layers {:?}, widths {:?}, \
             freezes {} ({} ms), frames dropped {}, packets lost {}, sampled at most {} ms \
             apart",
            WINDOW.as_secs(),
            self.windows,
            self.stall.as_millis(),
            self.kbps,
            self.layers,
            self.widths,
            self.freezes,
            self.freeze_ms,
            self.dropped,
            self.lost,
            self.lag.as_millis()
        )
    }
}

pub fn fared(v: &[View]) -> Fared {
    let (first, last) = (&v[0], &v[v.len() - 1]);
    let mut windows = Vec::new();
    let mut edge = first.at + WINDOW;
    let mut at_start = first.frames;
    for s in v {
        if s.at >= edge {
            windows.push(s.frames - at_start);
            at_start = s.frames;
            edge += WINDOW;
        }
    }
    let (mut stall, mut since, mut frames) = (Duration::ZERO, first.at, first.frames);
    for s in v {
        if s.frames > frames {
            stall = stall.max(s.at - since);
            (since, frames) = (s.at, s.frames);
        }
    }
    stall = stall.max(last.at - since);
    let mut layers: Vec<String> = Vec::new();
    let mut widths: Vec<u64> = Vec::new();
    for s in v {
        let l = s.current.clone().unwrap_or_else(|| "-".into());
        if layers.last() != Some(&l) {
            layers.push(l);
        }
        if widths.last() != Some(&s.width) {
            widths.push(s.width);
        }
    }
    let lag = v.windows(2).map(|p| p[1].at - p[0].at).max();
    let secs = (last.at - first.at).as_secs_f64().max(0.001);
    Fared {
        windows,
        stall,
        kbps: ((last.bytes - first.bytes) as f64 * 8.0 / 1000.0 / secs) as u64,
        layers,
        widths,
        lag: lag.unwrap_or_default(),
        freezes: last.freezes - first.freezes,
        freeze_ms: last.freeze_ms - first.freeze_ms,
        dropped: last.dropped - first.dropped,
        lost: last.lost - first.lost,
    }
}

/// The samples where wisp's layer (current, target) or the decoded width
/// changed, in ms after `t0`: "ms current>target WxH f<frames decoded>
/// k<keyframes decoded> pli<PLIs sent> nack<NACKs sent> rtx<resent packets received>".
pub fn timeline(v: &[View], t0: Instant) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = None;
    for s in v {
        let key = (s.current.clone(), s.target.clone(), s.width);
        if last.as_ref() != Some(&key) {
            out.push(format!(
                "{} {}>{} {}x{} f{} k{} pli{} nack{} rtx{}",
                s.at.saturating_duration_since(t0).as_millis(),
                key.0.as_deref().unwrap_or("-"),
                key.1.as_deref().unwrap_or("-"),
                s.width,
                s.height,
                s.frames,
                s.keyframes,
                s.plis,
                s.nacks,
                s.rtx
            ));
            last = Some(key);
        }
    }
    out
}

/// Sample every page's viewer for `d`.
pub fn watch(pages: &[&Browser], d: Duration) -> Vec<Vec<View>> {
    let mut out = vec![Vec::new(); pages.len()];
    let end = Instant::now() + d;
    loop {
        for (p, o) in pages.iter().zip(&mut out) {
            o.push(view(p));
        }
        if Instant::now() >= end {
            return out;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// The viewer kept decoding: every window had frames, no gap of `stall` or
/// more between samples, and (with `freezes`) less than `stall` of freezes
/// counted by the browser. The browser adds a freeze when it ends, so that
/// is only meaningful when none was running as the samples began.
pub fn assert_decoding(who: &str, f: &Fared, stall: Duration, freezes: bool) {
    assert!(
        f.windows.len() >= 2 && f.windows.iter().all(|n| *n >= MIN_WINDOW_FRAMES),
        "{who}: frames decoded per {WINDOW:?} window {:?} (want >= {MIN_WINDOW_FRAMES} each): {f}",
        f.windows
    );
    assert!(
        f.stall < stall,
        "{who}: {} ms without a new frame: {f}",
        f.stall.as_millis()
    );
    assert!(
        !freezes || f.freeze_ms < stall.as_millis() as u64,
        "{who}: the browser counted {} freezes, {} ms: {f}",
        f.freezes,
        f.freeze_ms
    );
}

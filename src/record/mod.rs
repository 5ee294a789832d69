//! The recorder thread: [`RecordEvent`]s in, one file per recorded track out.
//!
//! - VP8, VP9, AV1 → IVF ([`ivf`]); Opus → Ogg Opus ([`ogg`]); H.264 → Annex-B ([`annexb`]).
//! - Files go to `{dir}/{room}/{UTC start}-{kind}-{id}.{ext}`, opened with
//!   `create_new` inside the canonicalised `dir` ([`file`]).
//! - Packets pass a jitter window ([`reorder`]); video files start on a
//!   keyframe, and after a loss frames are dropped until the next keyframe,
//!   which is requested from the publisher (at most once a second per track).
//! - Whole frames / pages reach the file at least every `flush_interval` of
//!   wall-clock or media time, so a SIGKILL loses less than a second.
//! - `Stop`, an idle timeout (a lost `Stop`) or the channel disconnecting
//!   finalises a file. An I/O error stops that one recording; a panic while
//!   handling an event drops that one track; the thread goes on.

pub mod annexb;
pub mod depack;
mod file;
pub mod ivf;
pub mod ogg;
pub mod reorder;

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufWriter};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use str0m::format::Codec;

use crate::sfu::id::RoomName;
use crate::sfu::recorder_tap::{RecordEvent, RecordingId};

use annexb::AnnexBWriter;
use depack::VideoCodec;
pub use file::utc_stamp;
use file::{open_file, Counted, Sink};
use ivf::{Fourcc, IvfWriter};
use ogg::OggOpusWriter;
use reorder::{Out, Pkt, Reorder};

/// Recorder settings.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Root directory; created if missing and canonicalised at start.
    pub dir: PathBuf,
    /// A track with no packet for this long is finalised (a lost `Stop`).
    pub idle_timeout: Duration,
    /// Written data reaches the file at least this often (wall clock or media time).
    pub flush_interval: Duration,
    /// Frames with more payload than this are dropped.
    pub max_frame_bytes: usize,
    /// Jitter window: packets held while waiting for a hole.
    pub reorder_packets: usize,
    /// Jitter window: RTP time held while waiting for a hole.
    pub reorder_time: Duration,
}

impl RecorderConfig {
    /// Defaults: 10 s idle timeout, 500 ms flush, 4 MiB frames, 64 packets / 200 ms window.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecorderConfig {
            dir: dir.into(),
            idle_timeout: Duration::from_secs(10),
            flush_interval: Duration::from_millis(500),
            max_frame_bytes: 4 << 20,
            reorder_packets: 64,
            reorder_time: Duration::from_millis(200),
        }
    }
}

/// Recording figures of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomRecording {
    /// Files being written now.
    pub files_open: u32,
    /// Recordings of this room stopped by an error.
    pub files_failed: u64,
    /// Bytes in this room's files.
    pub bytes_written: u64,
    /// Frames (audio packets) written.
    pub frames_written: u64,
    /// Frames dropped (loss, waiting for a keyframe, malformed).
    pub frames_dropped: u64,
}

impl RoomRecording {
    /// Whether the room is being recorded now.
    pub fn recording(&self) -> bool {
        self.files_open > 0
    }
}

/// Recorder counters, shared with metrics and the room API.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Files opened.
    pub recordings_started: AtomicU64,
    /// Recordings stopped by an I/O error (or a caught panic).
    pub recordings_failed: AtomicU64,
    /// Frames (audio packets) written.
    pub frames_written: AtomicU64,
    /// Frames dropped.
    pub frames_dropped: AtomicU64,
    /// Bytes written to files.
    pub bytes_written: AtomicU64,
    /// Events the event loop could not queue (bumped by the sender on a full channel).
    pub events_dropped: AtomicU64,
    /// Panics caught while handling an event.
    pub panics: AtomicU64,
    rooms: Mutex<HashMap<RoomName, RoomRecording>>,
}

/// Rooms kept in [`RecorderStats`] after their last file closed.
const MAX_IDLE_ROOMS: usize = 1024;

impl RecorderStats {
    /// Figures of one room, if it has been recorded.
    pub fn room(&self, room: &RoomName) -> Option<RoomRecording> {
        self.lock().get(room).cloned()
    }

    /// Figures of every room with a recording (open now or recently).
    pub fn rooms(&self) -> Vec<(RoomName, RoomRecording)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomRecording>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_room(&self, room: &RoomName, f: impl FnOnce(&mut RoomRecording)) {
        let mut m = self.lock();
        f(m.entry(room.clone()).or_default());
        if m.len() > MAX_IDLE_ROOMS {
            m.retain(|_, r| r.files_open > 0);
        }
    }
}

/// Start the recorder thread. It ends after finalising every file once all
/// senders of `rx` are dropped. `keyframe` asks the core for a keyframe.
pub fn spawn(
    cfg: RecorderConfig,
    rx: Receiver<RecordEvent>,
    keyframe: impl Fn(RoomName) + Send + 'static,
) -> io::Result<(JoinHandle<()>, Arc<RecorderStats>)> {
    fs::create_dir_all(&cfg.dir)?;
    let root = cfg.dir.canonicalize()?;
    let stats = Arc::new(RecorderStats::default());
    let st = stats.clone();
    let handle = std::thread::Builder::new()
        .name("wisp-recorder".into())
        .spawn(move || {
            let mut rec = Recorder {
                cfg,
                root,
                stats: st,
                keyframe: Box::new(keyframe),
                tracks: HashMap::new(),
                warn_last: None,
                warn_suppressed: 0,
            };
            rec.run(rx);
        })?;
    Ok((handle, stats))
}

/// Check between ticks (flush, idle timeout).
const TICK: Duration = Duration::from_millis(100);
/// Keyframe requests per track at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Warnings (I/O errors, panics) at most this often.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

struct Recorder {
    cfg: RecorderConfig,
    root: PathBuf,
    stats: Arc<RecorderStats>,
    keyframe: Box<dyn Fn(RoomName) + Send>,
    tracks: HashMap<RecordingId, Track>,
    warn_last: Option<Instant>,
    warn_suppressed: u64,
}

impl Recorder {
    fn run(&mut self, rx: Receiver<RecordEvent>) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(ev) => {
                    let id = event_id(&ev);
                    if catch_unwind(AssertUnwindSafe(|| self.handle(ev))).is_err() {
                        self.stats.panics.fetch_add(1, Relaxed);
                        self.warn(format_args!(
                            "recorder: panic on track {}, track dropped",
                            id.0
                        ));
                        if let Some(t) = self.tracks.remove(&id) {
                            self.fail(t);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                if catch_unwind(AssertUnwindSafe(|| self.tick(now))).is_err() {
                    self.stats.panics.fetch_add(1, Relaxed);
                    self.warn(format_args!("recorder: panic in tick"));
                }
            }
        }
        let ids: Vec<_> = self.tracks.keys().copied().collect();
        for id in ids {
            let _ = catch_unwind(AssertUnwindSafe(|| self.stop(id)));
        }
    }

    fn handle(&mut self, ev: RecordEvent) {
        match ev {
            RecordEvent::Start {
                id,
                room,
                kind,
                codec,
                clock_rate,
                channels,
            } => {
                self.stop(id);
                self.start(id, room, kind, codec, clock_rate, channels);
            }
            RecordEvent::Packet {
                id,
                seq,
                ts,
                marker,
                payload,
            } => {
                let Some(t) = self.tracks.get_mut(&id) else {
                    return; // Start lost or unsupported codec: ignore.
                };
                let now = Instant::now();
                t.last_packet = now;
                let mut out = Vec::new();
                t.reorder.push(
                    Pkt {
                        seq,
                        ts,
                        marker,
                        payload,
                    },
                    &mut out,
                );
                let res = t.process(out, &self.cfg, now, &self.stats, &*self.keyframe);
                self.after_io(id, res);
            }
            RecordEvent::Stop { id } => self.stop(id),
        }
    }

    fn start(
        &mut self,
        id: RecordingId,
        room: RoomName,
        kind: &'static str,
        codec: Codec,
        clock_rate: u32,
        channels: u8,
    ) {
        let (ext, media) = match codec {
            Codec::Opus => ("ogg", None),
            Codec::Vp8 => ("ivf", Some(VideoCodec::Vp8)),
            Codec::Vp9 => ("ivf", Some(VideoCodec::Vp9)),
            Codec::Av1 => ("ivf", Some(VideoCodec::Av1)),
            Codec::H264 => ("h264", Some(VideoCodec::H264)),
            other => {
                log::info!(
                    "recorder: room {room} track {}: codec {other:?} not recorded",
                    id.0
                );
                return;
            }
        };
        let opened = open_file(&self.root, &room, kind, id, ext, SystemTime::now()).and_then(
            |(path, file)| {
                let hwm = Rc::new(Cell::new(0));
                let w = Counted {
                    w: BufWriter::with_capacity(64 << 10, file),
                    pos: 0,
                    hwm: hwm.clone(),
                };
                let sink = match media {
                    None => Sink::Ogg(OggOpusWriter::new(w, id.0 as u32, channels)?),
                    Some(VideoCodec::H264) => Sink::AnnexB(AnnexBWriter::new(w)),
                    Some(v) => {
                        let fcc = match v {
                            VideoCodec::Vp8 => Fourcc::Vp8,
                            VideoCodec::Vp9 => Fourcc::Vp9,
                            _ => Fourcc::Av1,
                        };
                        Sink::Ivf(IvfWriter::new(w, fcc, clock_rate)?)
                    }
                };
                Ok((path, sink, hwm))
            },
        );
        self.stats.recordings_started.fetch_add(1, Relaxed);
        let (path, sink, hwm) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.stats.recordings_failed.fetch_add(1, Relaxed);
                self.stats.with_room(&room, |r| r.files_failed += 1);
                self.warn(format_args!(
                    "recorder: room {room} track {}: cannot open a file: {e}",
                    id.0
                ));
                return;
            }
        };
        log::info!(
            "recorder: room {room}: recording {kind} to {}",
            path.display()
        );
        self.stats.with_room(&room, |r| r.files_open += 1);
        let clock = clock_rate.max(1) as u64;
        let span = (clock * self.cfg.reorder_time.as_millis() as u64 / 1000) as u32;
        let now = Instant::now();
        self.tracks.insert(
            id,
            Track {
                room,
                media,
                clock,
                path,
                sink: Some(sink),
                hwm,
                reported: 0,
                reorder: Reorder::new(self.cfg.reorder_packets, span),
                asm: Vec::new(),
                asm_ts: None,
                asm_bytes: 0,
                waiting_keyframe: true,
                last_keyframe_request: None,
                ts: None,
                last_packet: now,
                last_flush: now,
                flushed_media: 0,
                media_pos: 0,
                dirty: false,
            },
        );
    }

    /// Finalise and remove a track (no-op for an unknown id).
    fn stop(&mut self, id: RecordingId) {
        let Some(mut t) = self.tracks.remove(&id) else {
            return;
        };
        let mut out = Vec::new();
        t.reorder.drain(&mut out);
        let now = Instant::now();
        let res = t
            .process(out, &self.cfg, now, &self.stats, &*self.keyframe)
            .and_then(|()| t.complete_frame(&self.cfg, now, &self.stats, &*self.keyframe))
            .and_then(|()| match t.sink.take() {
                Some(s) => s.finish(),
                None => Ok(()),
            });
        t.report(&self.stats);
        match res {
            Ok(()) => {
                self.stats
                    .with_room(&t.room, |r| r.files_open = r.files_open.saturating_sub(1));
                log::info!("recorder: room {}: closed {}", t.room, t.path.display());
            }
            Err(e) => {
                self.warn(format_args!(
                    "recorder: room {}: {}: {e}",
                    t.room,
                    t.path.display()
                ));
                self.fail(t);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut idle = Vec::new();
        let mut failed = Vec::new();
        for (id, t) in self.tracks.iter_mut() {
            if now.duration_since(t.last_packet) >= self.cfg.idle_timeout {
                idle.push(*id);
            } else if t.dirty && now.duration_since(t.last_flush) >= self.cfg.flush_interval {
                if let Err(e) = t.flush(now) {
                    failed.push((*id, e));
                }
                t.report(&self.stats);
            }
        }
        for (id, e) in failed {
            self.after_io(id, Err(e));
        }
        for id in idle {
            self.stop(id);
        }
    }

    fn after_io(&mut self, id: RecordingId, res: io::Result<()>) {
        if let Some(t) = self.tracks.get_mut(&id) {
            t.report(&self.stats);
        }
        if let Err(e) = res {
            if let Some(t) = self.tracks.remove(&id) {
                self.warn(format_args!(
                    "recorder: room {}: {}: {e}; recording stopped",
                    t.room,
                    t.path.display()
                ));
                self.fail(t);
            }
        }
    }

    /// Count a recording as failed and drop its writer (the file keeps what
    /// was flushed). Later packets of its id are ignored as unknown.
    fn fail(&mut self, mut t: Track) {
        drop(t.sink.take());
        self.stats.recordings_failed.fetch_add(1, Relaxed);
        self.stats.with_room(&t.room, |r| {
            r.files_failed += 1;
            r.files_open = r.files_open.saturating_sub(1);
        });
    }

    fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .warn_last
            .is_some_and(|l| now.duration_since(l) < WARN_INTERVAL)
        {
            self.warn_suppressed += 1;
            return;
        }
        self.warn_last = Some(now);
        let n = std::mem::take(&mut self.warn_suppressed);
        if n > 0 {
            log::warn!("{msg} ({n} similar messages suppressed)");
        } else {
            log::warn!("{msg}");
        }
    }
}

fn event_id(ev: &RecordEvent) -> RecordingId {
    match ev {
        RecordEvent::Start { id, .. }
        | RecordEvent::Packet { id, .. }
        | RecordEvent::Stop { id } => *id,
    }
}

struct Track {
    room: RoomName,
    /// `None` for Opus.
    media: Option<VideoCodec>,
    clock: u64,
    path: PathBuf,
    /// `None` once finished or failed.
    sink: Option<Sink>,
    hwm: Rc<Cell<u64>>,
    /// Bytes already added to the stats.
    reported: u64,
    reorder: Reorder,
    /// Payloads of the video frame being assembled.
    asm: Vec<Arc<[u8]>>,
    asm_ts: Option<u32>,
    asm_bytes: usize,
    waiting_keyframe: bool,
    last_keyframe_request: Option<Instant>,
    /// (last RTP ts, its extended value, first extended value).
    ts: Option<(u32, i64, i64)>,
    last_packet: Instant,
    last_flush: Instant,
    /// Media position (RTP ticks from the first frame) at the last flush, and now.
    flushed_media: u64,
    media_pos: u64,
    dirty: bool,
}

impl Track {
    /// Add the bytes written since the last report to the stats.
    fn report(&mut self, stats: &RecorderStats) {
        let now = self.hwm.get();
        let delta = now.saturating_sub(self.reported);
        if delta > 0 {
            self.reported = now;
            stats.bytes_written.fetch_add(delta, Relaxed);
            stats.with_room(&self.room, |r| r.bytes_written += delta);
        }
    }

    fn count(&self, stats: &RecorderStats, written: bool) {
        if written {
            stats.frames_written.fetch_add(1, Relaxed);
            stats.with_room(&self.room, |r| r.frames_written += 1);
        } else {
            stats.frames_dropped.fetch_add(1, Relaxed);
            stats.with_room(&self.room, |r| r.frames_dropped += 1);
        }
    }

    /// Media position of an RTP timestamp in ticks from the first one (u32 wrap handled).
    fn media_time(&mut self, ts: u32) -> u64 {
        let (ext, first) = match self.ts {
            None => (ts as i64, ts as i64),
            Some((last, last_ext, first)) => {
                (last_ext + ts.wrapping_sub(last) as i32 as i64, first)
            }
        };
        self.ts = Some((ts, ext, first));
        (ext - first).max(0) as u64
    }

    fn process(
        &mut self,
        out: Vec<Out>,
        cfg: &RecorderConfig,
        now: Instant,
        stats: &RecorderStats,
        kf: &dyn Fn(RoomName),
    ) -> io::Result<()> {
        if self.sink.is_none() {
            return Ok(());
        }
        for o in out {
            match (o, self.media) {
                (Out::Gap, None) => {} // the Ogg writer fills timestamp gaps
                (Out::Gap, Some(_)) => {
                    if !self.asm.is_empty() {
                        self.count(stats, false);
                    }
                    self.asm.clear();
                    self.asm_ts = None;
                    self.asm_bytes = 0;
                    self.lost(now, kf);
                }
                (Out::Packet(p), None) => {
                    let pos = self.media_time(p.ts);
                    if let Some(Sink::Ogg(w)) = &mut self.sink {
                        let ok = w.write_packet(&p.payload, p.ts)?.is_ok();
                        self.count(stats, ok);
                        if ok {
                            self.media_pos = self.media_pos.max(pos);
                            self.dirty = true;
                        }
                    }
                    self.maybe_flush(cfg, now)?;
                }
                (Out::Packet(p), Some(_)) => {
                    if self.asm_ts.is_some_and(|ts| ts != p.ts) {
                        // A new timestamp without a marker: the previous frame ended.
                        self.complete_frame(cfg, now, stats, kf)?;
                    }
                    self.asm_ts = Some(p.ts);
                    self.asm_bytes += p.payload.len();
                    if self.asm_bytes <= cfg.max_frame_bytes {
                        self.asm.push(p.payload);
                    }
                    if p.marker {
                        self.complete_frame(cfg, now, stats, kf)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Depacketize and write the assembled frame.
    fn complete_frame(
        &mut self,
        cfg: &RecorderConfig,
        now: Instant,
        stats: &RecorderStats,
        kf: &dyn Fn(RoomName),
    ) -> io::Result<()> {
        let Some(ts) = self.asm_ts.take() else {
            return Ok(());
        };
        let pkts = std::mem::take(&mut self.asm);
        let bytes = std::mem::take(&mut self.asm_bytes);
        let (Some(codec), true) = (self.media, self.sink.is_some()) else {
            return Ok(());
        };
        let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
        if bytes > cfg.max_frame_bytes
            || (self.waiting_keyframe && !depack::is_keyframe(codec, &refs))
        {
            self.count(stats, false);
            self.lost(now, kf);
            return Ok(());
        }
        let frame = match depack::depacketize(codec, &refs, cfg.max_frame_bytes) {
            Ok(f) => f,
            Err(_) => {
                self.count(stats, false);
                self.lost(now, kf);
                return Ok(());
            }
        };
        let pts = self.media_time(ts);
        let written = match &mut self.sink {
            Some(Sink::Ivf(w)) => {
                w.write_frame(&frame.data, pts)?;
                true
            }
            Some(Sink::AnnexB(w)) => w.write_access_unit(&frame.data)?,
            _ => false,
        };
        if written {
            self.media_pos = self.media_pos.max(pts);
        }
        self.count(stats, written);
        if written {
            self.waiting_keyframe = false;
            self.dirty = true;
            self.maybe_flush(cfg, now)?;
        } else {
            self.lost(now, kf);
        }
        Ok(())
    }

    /// Drop frames until the next keyframe and ask for one (throttled).
    fn lost(&mut self, now: Instant, kf: &dyn Fn(RoomName)) {
        self.waiting_keyframe = true;
        if self
            .last_keyframe_request
            .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL)
        {
            self.last_keyframe_request = Some(now);
            kf(self.room.clone());
        }
    }

    fn maybe_flush(&mut self, cfg: &RecorderConfig, now: Instant) -> io::Result<()> {
        let media_due = self.media_pos.saturating_sub(self.flushed_media) * 1000 / self.clock
            >= cfg.flush_interval.as_millis() as u64;
        if self.dirty && (media_due || now.duration_since(self.last_flush) >= cfg.flush_interval) {
            self.flush(now)?;
        }
        Ok(())
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if let Some(s) = &mut self.sink {
            s.flush()?;
        }
        self.last_flush = now;
        self.flushed_media = self.media_pos;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

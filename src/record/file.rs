//! A recording's file: created inside the recording directory
//! ([`open_file`]: never an existing file, never outside the directory),
//! written through a writer that counts the bytes on disk ([`Counted`])
//! by one container writer ([`Sink`]).

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sfu::id::RoomName;
use crate::sfu::recorder_tap::RecordingId;

use super::annexb::AnnexBWriter;
use super::ivf::IvfWriter;
use super::ogg::OggOpusWriter;

/// A file writer that tracks the furthest position written (bytes on disk).
pub(super) struct Counted {
    pub(super) w: BufWriter<File>,
    pub(super) pos: u64,
    pub(super) hwm: Rc<Cell<u64>>,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.pos += n as u64;
        if self.pos > self.hwm.get() {
            self.hwm.set(self.pos);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Seek for Counted {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.w.seek(pos)?;
        Ok(self.pos)
    }
}

/// A recording's container writer.
pub(super) enum Sink {
    Ivf(IvfWriter<Counted>),
    Ogg(OggOpusWriter<Counted>),
    AnnexB(AnnexBWriter<Counted>),
}

impl Sink {
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Ivf(w) => w.flush(),
            Sink::Ogg(w) => w.flush(),
            Sink::AnnexB(w) => w.flush(),
        }
    }

    pub(super) fn finish(self) -> io::Result<()> {
        match self {
            Sink::Ivf(w) => w.finish().map(drop),
            Sink::Ogg(w) => w.finish().map(drop),
            Sink::AnnexB(w) => w.finish().map(drop),
        }
    }
}

/// Create `{root}/{room}/` and a new file in it. Refuses a room directory
/// that is a symlink or resolves outside `root`; never opens an existing file.
pub(super) fn open_file(
    root: &Path,
    room: &RoomName,
    kind: &str,
    id: RecordingId,
    ext: &str,
    now: SystemTime,
) -> io::Result<(PathBuf, File)> {
    let mut comps = Path::new(room.as_str()).components();
    if !matches!(
        (comps.next(), comps.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad room name"));
    }
    let room_dir = root.join(room.as_str());
    match fs::create_dir(&room_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if !fs::symlink_metadata(&room_dir)?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            room_dir.display()
        )));
    }
    let canon = room_dir.canonicalize()?;
    if canon.parent() != Some(root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "room directory resolves outside the recording directory",
        ));
    }
    let kind: String = kind.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let stamp = utc_stamp(now);
    for n in 0..100 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let path = canon.join(format!("{stamp}-{kind}-{}{suffix}.{ext}", id.0));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free file name",
    ))
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

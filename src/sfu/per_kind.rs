//! [`PerKind`]: one value for audio and one for video, indexed by
//! [`MediaKind`], where an array indexed by 0 and 1 would leave the reader to
//! remember which is which.

use std::ops::{Index, IndexMut};

use str0m::media::MediaKind;

/// One `T` per media kind (wisp takes one audio and one video track per session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerKind<T> {
    /// The audio value.
    pub audio: T,
    /// The video value.
    pub video: T,
}

impl<T> PerKind<T> {
    /// Both values, audio first, each with its kind.
    pub fn iter(&self) -> impl Iterator<Item = (MediaKind, &T)> {
        [
            (MediaKind::Audio, &self.audio),
            (MediaKind::Video, &self.video),
        ]
        .into_iter()
    }

    /// Both values, mutably, audio first.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        [&mut self.audio, &mut self.video].into_iter()
    }

    /// Both values, audio first.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        [&self.audio, &self.video].into_iter()
    }
}

impl<T> Index<MediaKind> for PerKind<T> {
    type Output = T;

    #[inline]
    fn index(&self, kind: MediaKind) -> &T {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }
}

impl<T> IndexMut<MediaKind> for PerKind<T> {
    #[inline]
    fn index_mut(&mut self, kind: MediaKind) -> &mut T {
        match kind {
            MediaKind::Audio => &mut self.audio,
            MediaKind::Video => &mut self.video,
        }
    }
}

/// `"audio"` or `"video"`, as the status listing and the recorder name kinds.
pub fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_by_kind() {
        let mut p = PerKind::<u8>::default();
        p[MediaKind::Video] = 7;
        p[MediaKind::Audio] += 1;
        assert_eq!((p.audio, p.video), (1, 7));
        let kinds: Vec<_> = p.iter().map(|(k, v)| (kind_name(k), *v)).collect();
        assert_eq!(kinds, [("audio", 1), ("video", 7)]);
    }
}

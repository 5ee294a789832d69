//! A deadline heap over sessions with lazy deletion, so a loop turn touches
//! only the sessions whose time has come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::id::SessionId;

/// An upstream (an edge's pull of a room) is closed when its room has had
/// no viewers this long: a viewer that reloads keeps the stream warm, an
/// abandoned room stops costing the origin. Fired by the upstream
/// session's own entry in [`Timers`].
pub const UPSTREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pending deadlines. A session has at most one *live* entry (its generation
/// matches); older entries are skipped when popped and purged when the heap
/// grows past a bound.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, SessionId, u64)>>,
}

/// A session's view of its own entry in [`Timers`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerSlot {
    /// Generation of the live entry.
    pub gen: u64,
    /// When the live entry fires, if any.
    pub at: Option<Instant>,
}

impl Timers {
    /// Make `slot` fire no later than `at`. Keeps an earlier entry if there is
    /// one: firing early costs one spurious timeout, never a missed one.
    pub fn schedule(&mut self, id: SessionId, slot: &mut TimerSlot, at: Instant) {
        if slot.at.is_some_and(|cur| cur <= at) {
            return;
        }
        slot.gen += 1;
        slot.at = Some(at);
        self.heap.push(Reverse((at, id, slot.gen)));
    }

    /// Pop the next entry due at `now`, live or stale; the caller checks the
    /// generation against the session's slot.
    pub fn pop_due(&mut self, now: Instant) -> Option<(SessionId, u64)> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, id, gen)) = self.heap.pop()?;
        Some((id, gen))
    }

    /// The earliest entry (possibly stale, which only means an early wake-up).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Drop stale entries when the heap holds far more than one per session.
    pub fn compact(&mut self, live: usize, is_live: impl Fn(SessionId, u64) -> bool) {
        if self.heap.len() > 4 * live + 64 {
            self.heap.retain(|Reverse((_, id, gen))| is_live(*id, *gen));
        }
    }

    /// Number of entries, live or stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

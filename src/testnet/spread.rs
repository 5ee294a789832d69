//! `WISP_TEST_WORKERS`: a suite written for one core, run with its viewers
//! on other workers of one process (see [`TestNet::with_config`]), and the
//! process's views over all of them.

use super::*;
use crate::sfu::{ApiError, Counts, RoomInfo, Stats};

/// The number of workers `WISP_TEST_WORKERS` asks the deterministic suites
/// to spread their viewers over (1 when unset or not a number).
pub fn test_workers() -> usize {
    std::env::var("WISP_TEST_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

impl TestNet {
    /// Where a join that names `core` goes: `(core, home)`, `home` being the
    /// worker it is relayed from. Only a join naming core 0 in spread mode
    /// is placed (as `Dispatcher::place` in `src/workers.rs` does, with
    /// core 0 every room's home and viewers round robin); the process's
    /// session and room limits are checked here, over every core.
    pub(super) fn place(
        &mut self,
        core: usize,
        room: &str,
        publisher: bool,
    ) -> Result<(usize, Option<usize>), ApiError> {
        if self.spread < 2 || core != 0 || self.join_home.is_some() {
            return Ok((core, self.join_home));
        }
        let cfg = self.sfu.config();
        let (max_sessions, max_rooms) = (cfg.max_sessions, cfg.max_rooms);
        if self.counts().sessions >= max_sessions {
            return Err(ApiError::AtCapacity);
        }
        let rooms = self.list_rooms();
        if !rooms.iter().any(|r| r.name == room) && rooms.len() >= max_rooms {
            return Err(ApiError::AtCapacity);
        }
        if publisher {
            return Ok((0, None));
        }
        let k = (self.spread_next + 1) % self.spread;
        self.spread_next += 1;
        Ok((k, (k != 0).then_some(0)))
    }

    /// The cores' statistics summed (what `/metrics` shows).
    pub fn stats(&self) -> Stats {
        let mut s = self.sfu.stats();
        for c in &self.cores {
            s.absorb(&c.stats());
        }
        s
    }

    /// The cores' map sizes summed.
    pub fn counts(&self) -> Counts {
        let mut n = self.sfu.counts();
        for c in self.cores.iter().map(Sfu::counts) {
            n.sessions += c.sessions;
            n.rooms += c.rooms;
            n.tokens += c.tokens;
            n.addrs += c.addrs;
            n.ufrags += c.ufrags;
            n.addr_lists += c.addr_lists;
            n.keyframe_timers += c.keyframe_timers;
            n.recently_ended += c.recently_ended;
            n.upstream_addrs_used += c.upstream_addrs_used;
        }
        n
    }

    /// The process's rooms: each once, merged over the cores as
    /// `/api/rooms` merges its workers' (`src/workers.rs`).
    pub fn list_rooms(&self) -> Vec<RoomInfo> {
        let now = self.now;
        let all = std::iter::once(&self.sfu)
            .chain(&self.cores)
            .map(|c| Ok(Ok(Reply::Rooms(c.list_rooms(now)))))
            .collect();
        match crate::workers::merge_rooms(all) {
            Ok(Ok(Reply::Rooms(list))) => list,
            other => panic!("{other:?}"),
        }
    }

    /// Number of the process's rooms ([`TestNet::list_rooms`]).
    pub fn room_count(&self) -> usize {
        self.list_rooms().len()
    }

    /// Close `room` on every core, as the dispatcher does.
    pub fn close_room(&mut self, room: &str) -> Result<Reply, ApiError> {
        let now = self.now;
        let room = RoomName::new(room).unwrap();
        let all = (0..=self.cores.len())
            .map(|k| {
                let cmd = Command::CloseRoom { room: room.clone() };
                Ok(self.core(k).handle_command(now, cmd))
            })
            .collect();
        crate::workers::merge_closed(all).expect("no worker is busy here")
    }
}

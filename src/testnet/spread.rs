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

impl TestNet {
    /// The core that serves client `i` (where its placement put it).
    pub fn core_of(&mut self, i: usize) -> &mut Sfu {
        let k = self.clients[i].core;
        self.core(k)
    }

    /// Every core's output now, its datagrams lost (a loop that could not
    /// send): what goes between workers and to the recorder still goes.
    pub fn lose_datagrams_now(&mut self) {
        for k in 0..=self.cores.len() {
            for _ in 0..MAX_ITER {
                match self.core(k).poll_output() {
                    crate::sfu::Output::Transmit(_) => {}
                    crate::sfu::Output::Record(r) => self.recorded.push(r),
                    crate::sfu::Output::Relay { to, msg } => self.relay_push(k, to, msg),
                    crate::sfu::Output::Upstream(u) => self.upstream_events.push((k, u)),
                    crate::sfu::Output::Timeout(_) => break,
                }
            }
        }
    }
}

impl TestNet {
    /// [`TestNet::core_of`], read only.
    pub fn core_ref_of(&self, i: usize) -> &Sfu {
        self.core_ref(self.clients[i].core)
    }
}

impl TestNet {
    /// `cmd` routed as the process's dispatcher routes it
    /// (`Dispatcher::call` in `src/workers.rs`): a session's command to the
    /// core that serves it (found by token among the clients), closing a
    /// room to every core, anything else to core 0. A viewer's state counts
    /// the room's viewers on every core.
    pub fn command(&mut self, cmd: Command) -> Result<Reply, ApiError> {
        let now = self.now;
        let token = match &cmd {
            Command::DeleteSession { token, .. }
            | Command::Patch { token, .. }
            | Command::PinLayer { token, .. }
            | Command::ViewerState { token, .. } => Some(*token),
            Command::CloseRoom { room } => return self.close_room(room.as_str()),
            _ => None,
        };
        let core = token
            .and_then(|t| self.clients.iter().find(|c| c.token == Some(t)))
            .map_or(0, |c| c.core);
        let room = match &cmd {
            Command::ViewerState { room, .. } => Some(room.to_string()),
            _ => None,
        };
        let mut r = self.core(core).handle_command(now, cmd);
        if let (Ok(Reply::ViewerState(v)), Some(room)) = (&mut r, room) {
            if let Some(all) = self.list_rooms().iter().find(|x| x.name == room) {
                v.viewers = v.viewers.max(all.viewers);
            }
        }
        r
    }
}

//! The event loop: one mio poll over every peer's socket, the peers' timers,
//! and the latency samples the full viewers collect.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::http::http;
use crate::peer::{Peer, BATCH};

/// All peers of a run, driven by one thread.
pub struct Load {
    poll: Poll,
    events: Events,
    /// Indexed by their mio token.
    pub peers: Vec<Peer>,
    bufs: Vec<Vec<u8>>,
    /// Latency samples (µs) of the current second and of the whole run.
    pub lat_sec: Vec<u32>,
    pub lat_all: Vec<u32>,
    min_timeout: Instant,
    /// Whether samples are kept (else each turn drops them).
    pub measuring: bool,
}

impl Load {
    pub fn new() -> io::Result<Load> {
        Ok(Load {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            peers: vec![],
            bufs: (0..BATCH).map(|_| vec![0u8; 65536]).collect(),
            lat_sec: vec![],
            lat_all: vec![],
            min_timeout: Instant::now(),
            measuring: false,
        })
    }

    /// Registers `p` and sends what it has to send; returns its index.
    pub fn add(&mut self, mut p: Peer) -> io::Result<usize> {
        let i = self.peers.len();
        self.poll
            .registry()
            .register(&mut p.sock, Token(i), Interest::READABLE)?;
        p.drain(&mut self.lat_sec);
        self.min_timeout = self.min_timeout.min(p.next_timeout);
        self.peers.push(p);
        Ok(i)
    }

    /// One turn: wait at most `timeout` for sockets, read them, run due timers.
    pub fn turn(&mut self, timeout: Duration) {
        let now = Instant::now();
        let timeout = timeout.min(self.min_timeout.saturating_duration_since(now));
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        let lat = &mut self.lat_sec;
        for ev in self.events.iter() {
            if let Some(p) = self.peers.get_mut(ev.token().0) {
                p.read_all(&mut self.bufs, lat);
            }
        }
        let now = Instant::now();
        if now >= self.min_timeout {
            let mut min = now + Duration::from_secs(1);
            for p in self.peers.iter_mut() {
                if !p.closed && now >= p.next_timeout {
                    p.timeout(now, lat);
                }
                if !p.closed {
                    min = min.min(p.next_timeout);
                }
            }
            self.min_timeout = min;
        }
        for p in &self.peers {
            self.min_timeout = self.min_timeout.min(p.next_timeout);
        }
        if !self.measuring {
            self.lat_sec.clear();
        }
    }

    /// Takes peer `i`'s deadline into account after work outside [`Load::turn`]
    /// moved it (the publisher's writes: str0m's pacer may hold a packet
    /// until then, and the next turn must not sleep past it).
    pub fn rearm(&mut self, i: usize) {
        self.min_timeout = self.min_timeout.min(self.peers[i].next_timeout);
    }

    /// Turns for `d`.
    pub fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.turn(end.saturating_duration_since(Instant::now()));
        }
    }

    /// Pump until every peer from `from` on is connected.
    pub fn wait_connected(&mut self, from: usize, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        loop {
            let missing = self.peers[from..].iter().filter(|p| !p.connected).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{missing} of {} peers not connected after {deadline:?}",
                    self.peers.len() - from
                ));
            }
            self.turn(Duration::from_millis(5));
        }
    }

    /// DELETE every session at its server, deregister and drop the peers:
    /// (deleted, seconds).
    pub fn teardown(&mut self) -> (usize, f64) {
        let t = Instant::now();
        let mut n = 0;
        for p in self.peers.iter_mut() {
            let _ = self.poll.registry().deregister(&mut p.sock);
            if http(p.server, "DELETE", &p.location, None, "").is_ok() {
                n += 1;
            }
        }
        let el = t.elapsed().as_secs_f64();
        self.peers.clear();
        (n, el)
    }
}

//! DRIVER: the single-threaded mio loop. Owns the UDP socket, the `mio::Waker`
//! doorbell and the receiving end of the command channel, and is the only
//! place that reads the clock.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::http_thread::CoreRequest;
use crate::sfu::record::RecordEvent;
use crate::sfu::{Output, Reply, Sfu};

/// Token of the UDP socket.
pub const SOCKET: Token = Token(0);
/// Token of the waker the HTTP thread rings after queueing a command.
pub const WAKER: Token = Token(1);

/// Most datagrams read per loop turn, so timers and commands are served under
/// a flood. Value: large enough to amortise a `poll` call, small enough to keep
/// a turn well under a millisecond.
const RECV_BUDGET: usize = 256;
/// Most commands handled per loop turn (each may build an `Rtc`, ~2 ms).
const COMMAND_BUDGET: usize = 16;
/// Largest datagram accepted; bigger ones are truncated by the kernel and then
/// rejected by str0m.
const MAX_DATAGRAM: usize = 2048;

/// Socket-level counters the core cannot see.
#[derive(Debug, Default, Clone, Copy)]
pub struct IoStats {
    /// `send_to` failures (WouldBlock, ENOBUFS, EMSGSIZE, ECONNREFUSED...): datagram dropped.
    pub send_errors: u64,
    /// `recv_from` errors other than WouldBlock (ICMP-induced and the like).
    pub recv_errors: u64,
}

/// The loop: the sans-IO core plus a socket, a channel and a stop flag.
pub struct EventLoop {
    poll: Poll,
    socket: UdpSocket,
    local: SocketAddr,
    commands: Receiver<CoreRequest>,
    sfu: Sfu,
    stop: Arc<AtomicBool>,
    recorder: Option<(Sender<RecordEvent>, Arc<crate::record::RecorderStats>)>,
    /// Socket counters.
    pub io: IoStats,
}

impl EventLoop {
    /// Register `socket` with `poll` (whose registry also holds the waker).
    pub fn new(
        poll: Poll,
        socket: std::net::UdpSocket,
        commands: Receiver<CoreRequest>,
        sfu: Sfu,
        stop: Arc<AtomicBool>,
    ) -> io::Result<EventLoop> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let mut socket = UdpSocket::from_std(socket);
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            socket,
            local,
            commands,
            sfu,
            stop,
            recorder: None,
            io: IoStats::default(),
        })
    }

    /// Send recording events to this bounded channel (the recorder thread).
    /// When it is full, events are dropped and counted in `stats`: forwarding never waits.
    pub fn set_recorder(
        &mut self,
        tx: Sender<RecordEvent>,
        stats: Arc<crate::record::RecorderStats>,
    ) {
        self.recorder = Some((tx, stats));
    }

    /// Run until the stop flag is set (ring the waker after setting it); then
    /// end every session, send their closes and return.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut busy = false;
        while !self.stop.load(Ordering::Relaxed) {
            let deadline = self.flush();
            let wait = if busy {
                Duration::ZERO
            } else {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            // Edge-triggered: read until WouldBlock, or come back at once if the budget ran out.
            busy = self.read_socket(now, &mut buf);
            busy |= self.read_commands(now);
            self.sfu.handle_timeout(now);
        }
        self.sfu.shutdown(Instant::now());
        self.flush();
        Ok(())
    }

    /// Send every queued datagram; return when the core next wants a timeout.
    fn flush(&mut self) -> Instant {
        loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination) {
                        self.io.send_errors += 1;
                        log::debug!("send to {} failed: {e}", t.destination);
                    }
                }
                Output::Record(ev) => {
                    if let Some((tx, stats)) = &self.recorder {
                        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                            tx.try_send(ev)
                        {
                            stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Output::Timeout(t) => return t,
            }
        }
    }

    /// Returns true if the budget ran out before WouldBlock.
    fn read_socket(&mut self, now: Instant, buf: &mut [u8]) -> bool {
        for _ in 0..RECV_BUDGET {
            match self.socket.recv_from(buf) {
                Ok((n, source)) => {
                    self.sfu.handle_receive(now, source, self.local, &buf[..n]);
                    // Send as we go: keeps the core's queue short under fan-out.
                    self.flush();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP port unreachable and friends: never fatal.
                    self.io.recv_errors += 1;
                    log::debug!("recv error: {e}");
                }
            }
        }
        true
    }

    /// Returns true if the budget ran out with commands still queued.
    fn read_commands(&mut self, now: Instant) -> bool {
        for _ in 0..COMMAND_BUDGET {
            match self.commands.try_recv() {
                Ok(req) => {
                    let mut reply = self.sfu.handle_command(now, req.command);
                    if let Ok(Reply::Stats(s)) = &mut reply {
                        s.io_send_errors = self.io.send_errors;
                        s.io_recv_errors = self.io.recv_errors;
                    }
                    // The HTTP side may have timed out and gone. A session it
                    // will never hear about must not linger until its timeout.
                    if let Err(e) = req.reply.try_send(reply) {
                        if let Ok(Reply::Created { token, .. }) = e.into_inner() {
                            self.sfu.abandon_session(now, token);
                        }
                    }
                    self.flush();
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
}

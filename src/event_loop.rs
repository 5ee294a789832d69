//! DRIVER: the single-threaded mio loop. Owns the UDP socket, the `mio::Waker`
//! doorbell and the receiving end of the command channel, and is the only
//! place that reads the clock.

use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::{Events, Interest, Poll, Token};

use crate::channel::CoreRequest;
use crate::sfu::recorder_tap::RecordEvent;
use crate::sfu::{Output, Reply, Sfu};
use crate::udp::BatchSocket;

/// Token of the UDP socket.
pub const SOCKET: Token = Token(0);
/// Token of the waker the HTTP thread rings after queueing a command.
pub const WAKER: Token = Token(1);

/// Most datagrams read per loop turn, so commands are served under a flood.
/// Value: large enough to amortise a `poll` call.
const RECV_BUDGET: usize = 256;
/// Longest a loop turn reads for: one publisher datagram fans out to every
/// viewer, so 256 of them can be 70 ms of work at 100 viewers (measured at
/// 355k forwarded packets/s), and commands (WHIP/WHEP requests) would wait
/// that long.
const RECV_TIME_BUDGET: Duration = Duration::from_millis(2);
/// Most commands handled per loop turn (each may build an `Rtc`, ~2 ms).
const COMMAND_BUDGET: usize = 16;

/// The loop: the sans-IO core plus a socket, a channel and a stop flag.
pub struct EventLoop {
    poll: Poll,
    socket: BatchSocket,
    commands: Receiver<CoreRequest>,
    sfu: Sfu,
    stop: Arc<AtomicBool>,
    recorder: Option<(Sender<RecordEvent>, Arc<crate::record::RecorderStats>)>,
    /// The socket is registered for WRITABLE too (while sends wait for room).
    write_interest: bool,
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
        let mut socket = BatchSocket::new(mio::net::UdpSocket::from_std(socket))?;
        poll.registry()
            .register(socket.socket_mut(), SOCKET, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            socket,
            commands,
            sfu,
            stop,
            recorder: None,
            write_interest: false,
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
            if events
                .iter()
                .any(|e| e.token() == SOCKET && e.is_writable())
            {
                self.socket.writable();
            }
            // Edge-triggered: read until WouldBlock, or come back at once if the budget ran out.
            busy = self.read_socket();
            let now = Instant::now();
            busy |= self.read_commands(now);
            self.sfu.handle_timeout(now);
        }
        self.sfu.shutdown(Instant::now());
        self.flush();
        Ok(())
    }

    /// Send every datagram the core has queued (batched: GSO per destination);
    /// return when the core next wants a timeout.
    fn flush(&mut self) -> Instant {
        let next = loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => self.socket.queue(t),
                Output::Record(ev) => {
                    if let Some((tx, stats)) = &self.recorder {
                        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                            tx.try_send(ev)
                        {
                            stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Output::Timeout(t) => break t,
            }
        };
        self.socket.send_queued();
        self.watch_writable();
        next
    }

    /// Register for writability while datagrams wait for room in the send
    /// buffer, and only then (a UDP socket is writable nearly always).
    fn watch_writable(&mut self) {
        let want = self.socket.blocked();
        if want == self.write_interest {
            return;
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .poll
            .registry()
            .reregister(self.socket.socket_mut(), SOCKET, interest)
        {
            Ok(()) => self.write_interest = want,
            Err(e) => {
                log::warn!("cannot change the UDP socket's poll interest: {e}");
                // Never wait for an event that cannot come: retry on the next turn.
                self.socket.writable();
            }
        }
    }

    /// Read batches until WouldBlock; after each batch, run the timers that
    /// fell due and send what both caused (so one batch's fan-out goes out in
    /// GSO runs). Each batch gets a fresh `now`: a turn under load is long,
    /// and str0m's send times and timers must not lag it. Returns true if a
    /// budget ran out before WouldBlock.
    fn read_socket(&mut self) -> bool {
        let start = Instant::now();
        let mut now = start;
        let mut read = 0;
        while read < RECV_BUDGET && now.saturating_duration_since(start) < RECV_TIME_BUDGET {
            let sfu = &mut self.sfu;
            let n = self
                .socket
                .recv_batch(|src, dst, bytes| sfu.handle_receive(now, src, dst, bytes));
            if n == 0 {
                return false;
            }
            read += n;
            self.sfu.handle_timeout(now);
            self.flush();
            now = Instant::now();
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
                        s.io_send_errors = self.socket.stats.send_errors;
                        s.io_recv_errors = self.socket.stats.recv_errors;
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

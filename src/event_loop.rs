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
use crate::sfu::overload::LoadSample;
use crate::sfu::recorder_tap::RecordEvent;
use crate::sfu::relay::RelayMsg;
use crate::sfu::{Output, Reply, Sfu, UpstreamEvent};
use crate::udp::{BatchSocket, UdpStats};
use crate::upstream_udp::UpstreamSockets;

/// Token of the UDP socket.
pub const SOCKET: Token = Token(0);
/// Token of the waker the HTTP thread rings after queueing a command.
pub const WAKER: Token = Token(1);
/// Tokens of the upstream sockets (cluster mode) start here.
pub const FIRST_UPSTREAM: usize = 2;

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
/// Most relayed messages (packets from other workers) handled per loop
/// turn, and per flush within it.
const RELAY_BUDGET: usize = 512;
const RELAY_BATCH: usize = 32;
/// Destinations whose datagrams a flush sends first, as soon as the core
/// has made them: the core hands a fan-out out in fan-out order, downstream
/// edges first, so an edge's copy leaves after a few encryptions instead of
/// after the whole fan-out (which is then the edge's audience's extra delay).
/// One more send call per flush.
const FIRST_SEND: usize = 8;
/// Destinations per later send within a flush: one `sendmmsg` call's worth.
const SEND_CHUNK: usize = 64;

/// This loop's ends of the relay between workers (`src/sfu/relay.rs`): a
/// bounded queue to and from each other worker, and their wakers. Only
/// `try_send` and `try_recv` are used, so no side ever blocks and the
/// channel's own lock (taken only to wake a blocked side) is never taken:
/// the packet path is lock-free. A worker is woken once per flush.
pub struct RelayPorts {
    /// To worker i (`None`: this worker).
    pub tx: Vec<Option<Sender<RelayMsg>>>,
    /// Worker i's waker.
    pub wakers: Vec<Arc<mio::Waker>>,
    /// From each other worker.
    pub rx: Vec<Receiver<RelayMsg>>,
    /// Scratch: workers sent to since the last wake.
    pub wake: Vec<bool>,
}

/// Length of one load window (see [`LoadMeter`]).
const LOAD_WINDOW: Duration = Duration::from_secs(1);

/// Measures how busy the loop is, per [`LOAD_WINDOW`]: wall time minus time
/// spent waiting in `poll`, but never more than the CPU time the loop's
/// thread got (`/proc/thread-self/stat`), so time the host gave to other
/// processes does not count as work. The core's overload control reads it.
/// The socket's send counters at the window's start tell how much of the
/// busy time went to send calls and how many messages they carried.
#[derive(Debug)]
struct LoadMeter {
    start: Instant,
    idle: Duration,
    cpu: Option<Duration>,
    sent: UdpStats,
}

impl LoadMeter {
    fn new(now: Instant, sent: UdpStats) -> LoadMeter {
        LoadMeter {
            start: now,
            idle: Duration::ZERO,
            cpu: thread_cpu_time(),
            sent,
        }
    }

    /// The window's sample once it is [`LOAD_WINDOW`] long; a new one starts.
    fn take(&mut self, now: Instant, sent: UdpStats) -> Option<LoadSample> {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < LOAD_WINDOW {
            return None;
        }
        let wall = elapsed.saturating_sub(self.idle);
        let mut busy = wall;
        let next = LoadMeter::new(now, sent);
        if let (Some(a), Some(b)) = (self.cpu, next.cpu) {
            busy = busy.min(b.saturating_sub(a));
        }
        let was = std::mem::replace(self, next).sent;
        // Send calls are timed by the wall clock too: scaled like the busy
        // time, so the host's other processes count in neither.
        let send = sent.send_time.saturating_sub(was.send_time).min(wall);
        let send = if wall.is_zero() {
            Duration::ZERO
        } else {
            send.mul_f64(busy.as_secs_f64() / wall.as_secs_f64())
        };
        let sample = LoadSample {
            busy,
            elapsed,
            send,
            messages: sent.messages_sent - was.messages_sent,
            datagrams: sent.datagrams_sent - was.datagrams_sent,
        };
        log::debug!("load window: {sample:?}");
        Some(sample)
    }
}

/// CPU time (user + system) of the calling thread, from
/// `/proc/thread-self/stat` (fields 14 and 15, in USER_HZ = 100 ticks a
/// second on Linux); `None` where it cannot be read. Once a second: cheap.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // field 3 is the first here
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

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
    /// Where the core's upstream events go (cluster mode's relay manager).
    upstream: Option<Box<dyn FnMut(UpstreamEvent) + Send>>,
    /// The upstreams' own sockets, the media socket's port (a `Transmit`
    /// from another port is an upstream's), and the sockets to read again
    /// (their read budget ran out).
    upstream_sockets: Option<(UpstreamSockets, u16, Vec<Token>)>,
    /// Scratch for [`EventLoop::read_upstreams`].
    upstream_todo: Vec<Token>,
    /// Figures published for placement and `/metrics` (several workers).
    gauges: Option<Arc<crate::workers::WorkerGauges>>,
    /// The relay to and from the other workers (several workers).
    relay: Option<RelayPorts>,
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
        log::info!(
            "UDP receive buffer: {} bytes",
            socket.recv_buffer_size().unwrap_or(0)
        );
        Ok(EventLoop {
            poll,
            socket,
            commands,
            sfu,
            stop,
            recorder: None,
            write_interest: false,
            upstream: None,
            upstream_sockets: None,
            upstream_todo: Vec::new(),
            gauges: None,
            relay: None,
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

    /// Hand the core's upstream events to `f` (it must not block: the relay
    /// manager queues them). Without it they are only logged.
    pub fn set_upstream_handler(&mut self, f: impl FnMut(UpstreamEvent) + Send + 'static) {
        self.upstream = Some(Box::new(f));
    }

    /// Serve the core's upstream addresses (`SfuConfig::upstream_addrs`,
    /// from [`UpstreamSockets::addrs`]) with these sockets.
    pub fn set_upstream_sockets(&mut self, mut sockets: UpstreamSockets) -> io::Result<()> {
        sockets.register(self.poll.registry(), FIRST_UPSTREAM)?;
        let port = self.socket.socket_mut().local_addr()?.port();
        self.upstream_sockets = Some((sockets, port, Vec::new()));
        Ok(())
    }

    /// Publish this loop's figures to `gauges` (sessions and rooms after
    /// every turn, rates once per load window).
    pub fn set_gauges(&mut self, gauges: Arc<crate::workers::WorkerGauges>) {
        self.gauges = Some(gauges);
    }

    /// Exchange relayed packets and feedback with the other workers.
    pub fn set_relay(&mut self, ports: RelayPorts) {
        self.relay = Some(ports);
    }

    /// Run until the stop flag is set (ring the waker after setting it); then
    /// end every session, send their closes and return.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut busy = false;
        let mut meter = LoadMeter::new(Instant::now(), self.socket.stats);
        while !self.stop.load(Ordering::Relaxed) {
            let deadline = self.flush();
            let wait = if busy {
                Duration::ZERO
            } else {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            };
            let waiting = Instant::now();
            let polled = self.poll.poll(&mut events, Some(wait));
            meter.idle += waiting.elapsed();
            if let Err(e) = polled {
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
            // An edge's upstreams first: they carry its rooms' media, which
            // is then sent on before anything else in this turn.
            busy = self.read_upstreams(&events);
            // Edge-triggered: read until WouldBlock, or come back at once if the budget ran out.
            busy |= self.read_socket();
            let now = Instant::now();
            busy |= self.read_commands(now);
            busy |= self.read_relays();
            self.sfu.handle_timeout(now);
            let sample = meter.take(now, self.socket.stats);
            if let Some(g) = &self.gauges {
                g.publish(&self.sfu, now, sample.as_ref());
            }
            if let Some(sample) = sample {
                self.sfu.handle_load(now, sample);
            }
        }
        self.sfu.shutdown(Instant::now());
        self.flush();
        Ok(())
    }

    /// Send every datagram the core has queued (batched: GSO per destination);
    /// return when the core next wants a timeout.
    fn flush(&mut self) -> Instant {
        // Destinations queued since the last send, the last one, and the
        // size of the next send (see FIRST_SEND).
        let (mut dests, mut last, mut chunk) = (0, None, FIRST_SEND);
        let next = loop {
            match self.sfu.poll_output() {
                Output::Transmit(t) => {
                    let t = match &mut self.upstream_sockets {
                        Some((up, port, _)) if t.source.port() != *port => match up.send(t) {
                            Some(t) => t,
                            None => continue,
                        },
                        _ => t,
                    };
                    // Whole destinations only: a viewer's datagrams stay
                    // one GSO run.
                    if last != Some(t.destination) {
                        if dests >= chunk {
                            self.socket.send_queued();
                            (dests, chunk) = (0, SEND_CHUNK);
                        }
                        dests += 1;
                        last = Some(t.destination);
                    }
                    self.socket.queue(t);
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
                Output::Relay { to, msg } => {
                    let Some(ports) = self.relay.as_mut() else {
                        self.sfu.relay_dropped(msg);
                        continue;
                    };
                    match ports.tx.get(to) {
                        Some(Some(tx)) => match tx.try_send(msg) {
                            Ok(()) => ports.wake[to] = true,
                            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                                self.sfu.relay_dropped(m)
                            }
                        },
                        _ => self.sfu.relay_dropped(msg),
                    }
                }
                Output::Upstream(ev) => match &mut self.upstream {
                    Some(f) => f(ev),
                    None => log::debug!("upstream event: {ev:?}"),
                },
                Output::Timeout(t) => break t,
            }
        };
        if let Some(ports) = self.relay.as_mut() {
            // One wake per worker per flush, however many packets it got.
            for (w, waker) in ports.wake.iter_mut().zip(&ports.wakers) {
                if std::mem::take(w) {
                    let _ = waker.wake();
                }
            }
        }
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
            // How far behind its ingress the loop reads: the fan-out serves
            // fewer viewers while it falls behind (`overload::Catchup`).
            if let Some(delay) = self.socket.ingress_delay() {
                self.sfu.handle_ingress_delay(now, delay);
            }
            read += n;
            self.sfu.handle_timeout(now);
            self.flush();
            now = Instant::now();
        }
        true
    }

    /// Read the upstream sockets that `events` named (and those whose read
    /// budget ran out last turn: edge-triggered, they get no new event),
    /// and after each one run the timers that fell due and send what it
    /// caused, as [`EventLoop::read_socket`] does for a batch: an upstream's
    /// packets reach the edge's viewers in the same turn, not after the
    /// commands and relays. Returns true if a socket's budget ran out.
    fn read_upstreams(&mut self, events: &Events) -> bool {
        let Some((up, _, again)) = &mut self.upstream_sockets else {
            return false;
        };
        // Scratch kept between turns: no allocation once warm.
        let mut todo = std::mem::take(&mut self.upstream_todo);
        todo.clear();
        todo.append(again);
        todo.extend(events.iter().map(|e| e.token()).filter(|t| up.owns(*t)));
        todo.sort_unstable();
        todo.dedup();
        let mut busy = false;
        for &token in &todo {
            let now = Instant::now();
            let Some((up, _, again)) = &mut self.upstream_sockets else {
                break;
            };
            let sfu = &mut self.sfu;
            if up.read(token, |src, dst, bytes| {
                sfu.handle_receive(now, src, dst, bytes)
            }) {
                again.push(token);
                busy = true;
            }
            self.sfu.handle_timeout(now);
            self.flush();
        }
        self.upstream_todo = todo;
        busy
    }

    /// Hand the other workers' relayed messages to the core, in batches
    /// (each batch's fan-out is sent before the next). Returns true if the
    /// budget ran out with messages still queued.
    fn read_relays(&mut self) -> bool {
        let Some(n) = self.relay.as_ref().map(|p| p.rx.len()) else {
            return false;
        };
        let start = Instant::now();
        let mut now = start;
        let mut handled = 0;
        while handled < RELAY_BUDGET && now.saturating_duration_since(start) < RECV_TIME_BUDGET {
            let mut batch = 0;
            for i in 0..n {
                while batch < RELAY_BATCH {
                    let Some(msg) = self.relay.as_ref().and_then(|p| p.rx[i].try_recv().ok())
                    else {
                        break;
                    };
                    self.sfu.handle_relay(now, msg);
                    batch += 1;
                }
            }
            if batch == 0 {
                return false;
            }
            handled += batch;
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
                        s.io_recv_drops = self.socket.recv_drops().unwrap_or(0);
                        s.io_recv_buffer_bytes = self.socket.recv_buffer_size().unwrap_or(0) as u64;
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

#[cfg(test)]
mod tests {
    #[test]
    fn thread_cpu_time_grows_with_work() {
        // Spin until the thread has used 30 ms of CPU (bounded: 10 s of wall
        // time on however loaded a machine); the reading must follow.
        let a = super::thread_cpu_time().expect("/proc/thread-self/stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let mut b = a;
        while b < a + std::time::Duration::from_millis(30)
            && t.elapsed() < std::time::Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            b = super::thread_cpu_time().unwrap();
        }
        std::hint::black_box(x);
        assert!(
            b >= a + std::time::Duration::from_millis(30),
            "{a:?} -> {b:?}"
        );
    }
}

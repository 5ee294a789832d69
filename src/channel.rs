//! The channel between the drivers and the core: the HTTP side (and the
//! recorder) send a [`CoreRequest`] on a bounded channel and wake the event
//! loop with its `mio::Waker`; the event loop hands the command to the core
//! and sends exactly one reply back.
//!
//! Contracts:
//! - The command channel is bounded; a full or closed channel is
//!   [`CoreError::Busy`] at once, never a wait.
//! - A caller waits at most its reply timeout; the core must not assume the
//!   reply is read (a failed `send` means the caller gave up).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use log::{debug, warn};

use crate::sfu::command::{ApiError, Command, Reply};

/// A command for the core and where to send its reply.
#[derive(Debug)]
pub struct CoreRequest {
    /// The command.
    pub command: Command,
    /// Send exactly one reply here; a failed send means the caller gave up.
    pub reply: Sender<Result<Reply, ApiError>>,
}

/// Why the core could not answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// The command channel is full or closed, or the reply came too late (→ 503, Retry-After: 1).
    Busy,
}

/// The way to the core: one event loop's command channel, its waker and
/// how long to wait for a reply; or, with several workers, the
/// [`crate::workers::Dispatcher`] that routes each command.
#[derive(Debug, Clone)]
pub struct CoreLink {
    route: Route,
}

#[derive(Debug, Clone)]
enum Route {
    One(Link),
    Workers(Arc<crate::workers::Dispatcher>),
}

/// One event loop's command channel and waker.
#[derive(Debug, Clone)]
pub struct Link {
    tx: Sender<CoreRequest>,
    waker: Arc<mio::Waker>,
    reply_timeout: Duration,
}

impl Link {
    /// Commands go to `tx`, then `waker` is woken; replies are awaited for
    /// at most `reply_timeout`.
    pub fn new(tx: Sender<CoreRequest>, waker: Arc<mio::Waker>, reply_timeout: Duration) -> Link {
        Link {
            tx,
            waker,
            reply_timeout,
        }
    }

    /// Queue `command` and ring the waker; the reply comes on the returned
    /// receiver. Never waits.
    pub fn send(
        &self,
        command: Command,
    ) -> Result<crossbeam_channel::Receiver<Result<Reply, ApiError>>, CoreError> {
        let (reply, rx) = bounded(1);
        match self.tx.try_send(CoreRequest { command, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                debug!("core channel full");
                return Err(CoreError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                warn!("core channel closed");
                return Err(CoreError::Busy);
            }
        }
        self.wake();
        Ok(rx)
    }

    /// Ring the loop's waker.
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            warn!("waking the event loop failed: {e}");
        }
    }

    /// Wait for the reply of [`Link::send`] until `deadline`.
    pub fn wait(
        rx: &crossbeam_channel::Receiver<Result<Reply, ApiError>>,
        deadline: std::time::Instant,
    ) -> Result<Result<Reply, ApiError>, CoreError> {
        rx.recv_deadline(deadline).map_err(|e| {
            warn!("no reply from the core: {e}");
            CoreError::Busy
        })
    }

    /// Send `command` and wait for the reply (at most the reply timeout).
    pub fn call(&self, command: Command) -> Result<Result<Reply, ApiError>, CoreError> {
        let rx = self.send(command)?;
        Link::wait(&rx, std::time::Instant::now() + self.reply_timeout)
    }

    /// How long a caller waits for a reply.
    pub fn reply_timeout(&self) -> Duration {
        self.reply_timeout
    }
}

impl CoreLink {
    /// One event loop: commands go to `tx`, then `waker` is woken; replies
    /// are awaited for at most `reply_timeout`.
    pub fn new(tx: Sender<CoreRequest>, waker: Arc<mio::Waker>, reply_timeout: Duration) -> Self {
        CoreLink {
            route: Route::One(Link::new(tx, waker, reply_timeout)),
        }
    }

    /// Several workers: `dispatcher` routes every command.
    pub fn workers(dispatcher: Arc<crate::workers::Dispatcher>) -> Self {
        CoreLink {
            route: Route::Workers(dispatcher),
        }
    }

    /// Send `command` to the core and wait for the reply (at most the reply timeout).
    pub fn call(&self, command: Command) -> Result<Result<Reply, ApiError>, CoreError> {
        match &self.route {
            Route::One(l) => l.call(command),
            Route::Workers(d) => d.call(command),
        }
    }
}

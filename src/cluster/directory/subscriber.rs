//! The room-live subscription: its own Redis connection in pub/sub mode.

use super::*;

/// The pub/sub side: one connection subscribed to the rooms channel.
pub(super) struct Subscriber {
    pub(super) client: redis::Client,
    pub(super) channel: String,
    pub(super) op_timeout: Duration,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Sender<DirEvent>,
    pub(super) driver: Sender<Cmd>,
}

impl Subscriber {
    pub(super) fn run(self) {
        let mut backoff = BACKOFF_FIRST;
        while !self.shared.stop.load(Ordering::Relaxed) {
            match self.listen(&mut backoff) {
                Ok(()) => return, // stopped
                Err(e) => log::debug!("directory: subscriber: {e}"),
            }
            // Tell the driver at once: its connection is probably gone too.
            let _ = self.driver.try_send(Cmd::RefreshNow);
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(backoff));
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Subscribe and deliver until stopped (`Ok`) or the connection fails.
    fn listen(&self, backoff: &mut Duration) -> redis::RedisResult<()> {
        let mut conn = self.client.get_connection_with_timeout(self.op_timeout)?;
        // Bounded until subscribed too: a server that accepts and hangs
        // must not hold this thread (or the shutdown) forever.
        conn.set_read_timeout(Some(self.op_timeout))?;
        conn.set_write_timeout(Some(self.op_timeout))?;
        let mut ps = conn.as_pubsub();
        ps.subscribe(&self.channel)?;
        ps.set_read_timeout(Some(SUBSCRIBER_POLL))?;
        *backoff = BACKOFF_FIRST;
        // Notifications sent before now were missed: the consumer looks its
        // waited-for rooms up again, and after an outage the driver rewrites
        // everything at once instead of at its next refresh.
        let _ = self.driver.try_send(Cmd::RefreshNow);
        send_event(&self.shared, &self.events, DirEvent::Resync);
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let msg = match ps.get_message() {
                Ok(m) => m,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            };
            let Some((room, node, url)) = parse_live(msg.get_payload_bytes()) else {
                continue;
            };
            log::debug!("directory: room {room} live on node {node}");
            self.shared.cache_owner(
                &room,
                RoomOwner {
                    node: node.clone(),
                    url: Some(url.clone()),
                },
                Instant::now(),
            );
            send_event(
                &self.shared,
                &self.events,
                DirEvent::RoomLive { room, node, url },
            );
        }
    }
}

/// A room-live notification: `{"room": .., "node": .., "url": ..}`.
pub(super) fn parse_live(payload: &[u8]) -> Option<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let s = |k: &str| v.get(k)?.as_str().map(str::to_string);
    Some((s("room")?, s("node")?, s("url")?))
}

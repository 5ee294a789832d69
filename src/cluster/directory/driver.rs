//! The directory's thread: one Redis connection, the refresh timer, the
//! commands from the handle, and recovery after an outage.

use super::*;

pub(super) struct Driver {
    pub(super) cfg: DirectoryConfig,
    /// The Redis URL without password, for logs.
    pub(super) shown: String,
    pub(super) client: redis::Client,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Sender<DirEvent>,
    pub(super) conn: Option<redis::Connection>,
    /// Rooms whose claim this node holds in Redis, as far as it knows.
    pub(super) written: HashSet<String>,
    /// Rooms reported lost to another owner (reported once each).
    pub(super) lost: HashSet<String>,
    pub(super) next_refresh: Instant,
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    pub(super) outage_logged: bool,
    pub(super) written_draining: bool,
}

impl Driver {
    pub(super) fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let deadline = if self.conn.is_some() {
                self.next_refresh
            } else {
                self.retry_at
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Cmd::Stop { cleanup }) => {
                    if cleanup {
                        self.cleanup();
                    }
                    return;
                }
                Ok(Cmd::Claim { room, reply }) => {
                    let r = self.claim(&room);
                    let _ = reply.try_send(r);
                }
                Ok(Cmd::Owner { room, reply }) => {
                    let r = self.owner(&room);
                    let _ = reply.try_send(r);
                }
                Ok(Cmd::Sync) => {
                    if self.conn.is_some() {
                        self.sync(false);
                    }
                }
                Ok(Cmd::RefreshNow) => {
                    let now = Instant::now();
                    self.next_refresh = now;
                    self.retry_at = self.retry_at.min(now);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if self.conn.is_none() && now >= self.retry_at {
                self.connect();
            }
            if self.conn.is_some() && Instant::now() >= self.next_refresh {
                self.sync(true);
            }
        }
    }

    fn connect(&mut self) {
        let c = self
            .client
            .get_connection_with_timeout(self.cfg.op_timeout)
            .and_then(|c| {
                c.set_read_timeout(Some(self.cfg.op_timeout))?;
                c.set_write_timeout(Some(self.cfg.op_timeout))?;
                Ok(c)
            });
        match c {
            Ok(c) => {
                self.conn = Some(c);
                self.shared.connected.store(true, Ordering::Relaxed);
                self.backoff = BACKOFF_FIRST;
                let claims = self.shared.desired().rooms.len();
                if self.outage_logged {
                    log::info!(
                        "directory: redis reachable again at {}; rewriting this node's record and {claims} claim(s)",
                        self.shown
                    );
                } else {
                    log::info!("directory: connected to redis at {}", self.shown);
                }
                self.outage_logged = false;
                // What Redis holds is unknown after an outage: rewrite it all now.
                self.written.clear();
                self.next_refresh = Instant::now();
            }
            Err(e) => self.down(&e),
        }
    }

    /// The connection failed: count, log once per outage, back off.
    fn down(&mut self, e: &redis::RedisError) {
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
        self.shared.error();
        if !self.outage_logged {
            log::warn!(
                "directory: redis unreachable at {}; retrying ({e})",
                self.shown
            );
            self.outage_logged = true;
            let mut s = (*self.shared.snapshot()).clone();
            s.connected = false;
            self.shared.set_snapshot(s);
        }
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn claim_cmd(&self, pipe: &mut redis::Pipeline, room: &str) {
        let msg =
            serde_json::json!({"room": room, "node": self.cfg.node_id, "url": self.cfg.node_url})
                .to_string();
        pipe.cmd("EVAL")
            .arg(CLAIM_LUA)
            .arg(1)
            .arg(self.cfg.room_key(room))
            .arg(&self.cfg.node_id)
            .arg(self.cfg.ttl.as_millis() as u64)
            .arg(self.cfg.channel())
            .arg(msg);
    }

    fn release_cmd(&self, pipe: &mut redis::Pipeline, room: &str) {
        pipe.cmd("EVAL")
            .arg(RELEASE_LUA)
            .arg(1)
            .arg(self.cfg.room_key(room))
            .arg(&self.cfg.node_id);
    }

    /// Run `pipe`; on failure the connection is dropped and the error counted.
    fn query(&mut self, pipe: &redis::Pipeline) -> Option<Vec<Value>> {
        let conn = self.conn.as_mut()?;
        match pipe.query::<Vec<Value>>(conn) {
            Ok(v) => Some(v),
            Err(e) => {
                self.down(&e);
                None
            }
        }
    }

    /// The result of the claim script: `Ok(true)` created or ours, `Err(owner)`.
    fn claim_result(v: &Value) -> Result<(), String> {
        match v {
            Value::Int(_) => Ok(()),
            Value::BulkString(b) => Err(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Err(s.clone()),
            other => Err(format!("{other:?}")),
        }
    }

    fn claim(&mut self, room: &str) -> Result<Claim, DirError> {
        if self.conn.is_none() {
            self.shared.error();
            return Err(DirError::Unavailable);
        }
        let mut p = redis::pipe();
        self.claim_cmd(&mut p, room);
        let Some(v) = self.query(&p) else {
            return Err(DirError::Unavailable);
        };
        match v.first().map(Self::claim_result) {
            Some(Ok(())) => {
                let now = Instant::now();
                {
                    let mut d = self.shared.desired();
                    if d.rooms.len() >= MAX_CLAIMS && !d.rooms.contains_key(room) {
                        // Claimed in Redis but untracked: release at once.
                        drop(d);
                        let mut p = redis::pipe();
                        self.release_cmd(&mut p, room);
                        let _ = self.query(&p);
                        self.shared.error();
                        return Err(DirError::Busy);
                    }
                    d.rooms
                        .entry(room.to_string())
                        .or_insert(RoomState::Pending {
                            until: now + self.cfg.ttl,
                        });
                }
                self.written.insert(room.to_string());
                Ok(Claim::Owned)
            }
            Some(Err(owner)) => Ok(Claim::Taken { owner }),
            None => {
                self.shared.error();
                Err(DirError::Unavailable)
            }
        }
    }

    fn owner(&mut self, room: &str) -> Result<Option<RoomOwner>, DirError> {
        if self.conn.is_none() {
            self.shared.error();
            return Err(DirError::Unavailable);
        }
        let mut p = redis::pipe();
        p.cmd("GET").arg(self.cfg.room_key(room));
        let Some(v) = self.query(&p) else {
            return Err(DirError::Unavailable);
        };
        let node = match v.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return Ok(None),
        };
        let now = Instant::now();
        let mut url = self
            .shared
            .snapshot()
            .node(&node, now)
            .map(|n| n.record.url.clone());
        if url.is_none() {
            let mut p = redis::pipe();
            p.cmd("GET").arg(self.cfg.node_key(&node));
            let Some(v) = self.query(&p) else {
                return Err(DirError::Unavailable);
            };
            if let Some(Value::BulkString(b)) = v.first() {
                url = NodeRecord::from_json(b).map(|r| r.url);
            }
        }
        let owner = RoomOwner { node, url };
        if owner.url.is_some() {
            self.shared.cache_owner(room, owner.clone(), now);
        }
        Ok(Some(owner))
    }

    /// Write the difference between the desired rooms and Redis; with `full`,
    /// also rewrite this node's record and every claim, and read the nodes.
    fn sync(&mut self, full: bool) {
        let now = Instant::now();
        let (claims, releases, relays) = {
            let mut d = self.shared.desired();
            d.rooms.retain(|_, s| match s {
                RoomState::Pending { until } => *until > now,
                RoomState::Live => true,
            });
            let claims: Vec<String> = d
                .rooms
                .keys()
                .filter(|r| full || !self.written.contains(*r))
                .cloned()
                .collect();
            let releases: Vec<String> = self
                .written
                .iter()
                .filter(|r| !d.rooms.contains_key(*r))
                .cloned()
                .collect();
            self.lost.retain(|r| d.rooms.contains_key(r));
            let relays: Vec<String> = d.relays.iter().cloned().collect();
            (claims, releases, relays)
        };
        let draining = self.shared.draining.load(Ordering::Relaxed);
        let write_record = full || draining != self.written_draining;
        if claims.is_empty() && releases.is_empty() && !write_record {
            return;
        }
        let ms = unix_ms();
        let mut p = redis::pipe();
        if write_record {
            let record = NodeRecord {
                id: self.cfg.node_id.clone(),
                url: self.cfg.node_url.clone(),
                sessions: self.shared.sessions.load(Ordering::Relaxed),
                max_sessions: self.cfg.max_sessions,
                forwarded_pps: self.shared.forwarded_pps.load(Ordering::Relaxed),
                draining,
                updated_ms: ms,
                relays,
            };
            p.cmd("SET")
                .arg(self.cfg.node_key(&self.cfg.node_id))
                .arg(record.to_json())
                .arg("PX")
                .arg(self.cfg.ttl.as_millis() as u64)
                .ignore();
            p.cmd("ZADD")
                .arg(self.cfg.index_key())
                .arg(ms)
                .arg(&self.cfg.node_id)
                .ignore();
        }
        for r in &claims {
            self.claim_cmd(&mut p, r);
        }
        for r in &releases {
            self.release_cmd(&mut p, r);
            p.ignore();
        }
        let oldest = ms.saturating_sub(INDEX_WINDOW_MS);
        if full {
            p.cmd("ZREMRANGEBYSCORE")
                .arg(self.cfg.index_key())
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore();
            p.cmd("ZREVRANGEBYSCORE")
                .arg(self.cfg.index_key())
                .arg("+inf")
                .arg(oldest)
                .arg("LIMIT")
                .arg(0)
                .arg(MAX_NODES);
        }
        let Some(values) = self.query(&p) else {
            return;
        };
        if write_record {
            self.written_draining = draining;
        }
        for r in &releases {
            self.written.remove(r);
        }
        for (room, v) in claims.iter().zip(&values) {
            match Self::claim_result(v) {
                Ok(()) => {
                    self.written.insert(room.clone());
                    self.lost.remove(room);
                }
                Err(owner) => {
                    self.written.remove(room);
                    if self.lost.insert(room.clone()) {
                        log::warn!(
                            "directory: room {room:?} is live here but claimed by node {owner:?}"
                        );
                        send_event(
                            &self.shared,
                            &self.events,
                            DirEvent::ClaimLost {
                                room: room.clone(),
                                owner,
                            },
                        );
                    }
                }
            }
        }
        if full {
            self.next_refresh = now + self.cfg.refresh;
            let ids: Vec<String> = match values.get(claims.len()) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| match v {
                        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            self.read_nodes(&ids);
        }
    }

    /// Read the records of `ids` with their remaining TTLs into the snapshot.
    fn read_nodes(&mut self, ids: &[String]) {
        let mut p = redis::pipe();
        for id in ids {
            p.cmd("GET").arg(self.cfg.node_key(id));
            p.cmd("PTTL").arg(self.cfg.node_key(id));
        }
        let sent = Instant::now();
        let values = if ids.is_empty() {
            Vec::new()
        } else {
            match self.query(&p) {
                Some(v) => v,
                None => return,
            }
        };
        let mut nodes: Vec<NodeInfo> = values
            .chunks(2)
            .filter_map(|pair| {
                let (Value::BulkString(json), Value::Int(ttl)) = (&pair[0], &pair[1]) else {
                    return None;
                };
                let record = NodeRecord::from_json(json)?;
                // PTTL -1 (no expiry) is not ours to trust: treat as one TTL.
                let left = if *ttl >= 0 {
                    Duration::from_millis(*ttl as u64)
                } else {
                    self.cfg.ttl
                };
                // Measured from before the request: never later than the real expiry.
                Some(NodeInfo {
                    record,
                    expires_at: sent + left,
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        nodes.dedup_by(|a, b| a.record.id == b.record.id);
        self.shared.set_snapshot(Snapshot {
            nodes,
            connected: true,
            taken_at: Some(sent),
        });
    }

    /// Release every claim this node holds and delete its record.
    fn cleanup(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let mut p = redis::pipe();
        let rooms: Vec<String> = self.written.iter().cloned().collect();
        for r in &rooms {
            self.release_cmd(&mut p, r);
            p.ignore();
        }
        p.cmd("DEL")
            .arg(self.cfg.node_key(&self.cfg.node_id))
            .ignore();
        p.cmd("ZREM")
            .arg(self.cfg.index_key())
            .arg(&self.cfg.node_id)
            .ignore();
        if self.query(&p).is_some() {
            self.written.clear();
        }
    }
}

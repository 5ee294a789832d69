//! Several cores in one net: cluster nodes (an edge pulling from its
//! origin, trees of them) and the workers of one process (relayed rooms).

use std::net::SocketAddr;

use super::*;

impl TestNet {
    /// Add a core (a node of a cluster) with `config`, at [`core_addr`] of
    /// its index, which is returned.
    pub fn add_core(&mut self, config: SfuConfig) -> usize {
        let k = self.cores.len() + 1;
        let config = SfuConfig {
            candidates: vec![core_addr(k)],
            seed: [(self.rng as u8).wrapping_add(k as u8); 32],
            dtls_cert: config.dtls_cert.or_else(|| Some(server_cert())),
            ..config
        };
        self.cores.push(Sfu::new(config, self.now));
        k
    }

    /// Kill core `k` (SIGKILL of its node): from now on it runs nothing,
    /// sends nothing, and what is sent to it is lost.
    pub fn kill_core(&mut self, k: usize) {
        self.cores_down.push(k);
    }

    /// Core `k` (0: [`TestNet::sfu`]).
    pub fn core(&mut self, k: usize) -> &mut Sfu {
        match k {
            0 => &mut self.sfu,
            k => &mut self.cores[k - 1],
        }
    }

    /// Core `k`, read only.
    pub fn core_ref(&self, k: usize) -> &Sfu {
        match k {
            0 => &self.sfu,
            k => &self.cores[k - 1],
        }
    }

    /// `cmd` to core `k` now (as its node's HTTP side or relay driver
    /// would hand it).
    pub fn command_on(&mut self, k: usize, cmd: Command) -> Result<Reply, crate::sfu::ApiError> {
        let now = self.now;
        self.core(k).handle_command(now, cmd)
    }

    /// A net of `n` workers' cores of one process, linked by the relay
    /// between workers (`src/sfu/relay.rs`) as the binary's `--workers n`
    /// links its loops: core k is worker k, with its share of the tokens.
    pub fn workers(seed: u64, n: usize, config: SfuConfig) -> TestNet {
        let key = [seed as u8 ^ 0x5a; 32];
        let shard = |i| crate::sfu::TokenShard::new(key, i, n);
        let mut net = Self::at(
            seed,
            SfuConfig {
                shard: shard(0),
                ..config.clone()
            },
            Instant::now(),
        );
        for w in 1..n {
            net.add_core(SfuConfig {
                shard: shard(w),
                ..config.clone()
            });
        }
        net
    }

    /// A viewer of audio and video on worker `core`, relayed from worker
    /// `home` (the room's publisher's).
    pub fn view_relayed(&mut self, core: usize, home: usize, room: &str) -> usize {
        self.try_view_relayed(core, home, room)
            .expect("relayed subscribe")
    }

    /// [`TestNet::view_relayed`], with the core's refusal.
    pub fn try_view_relayed(
        &mut self,
        core: usize,
        home: usize,
        room: &str,
    ) -> Result<usize, crate::sfu::ApiError> {
        self.join_home = Some(home);
        let v = self.try_view_on(core, room);
        self.join_home = None;
        v
    }

    /// The relay driver's exchange, played in memory: core `edge` pulls
    /// `room` from core `origin` (its `Pull` offer becomes a WHEP
    /// `Subscribe` on the origin, whose answer goes back as `PullAnswer`;
    /// a refused subscribe becomes `PullFailed`). Returns the upstream's
    /// token and the origin's session token.
    pub fn pull(
        &mut self,
        edge: usize,
        origin: usize,
        room: &str,
    ) -> Result<(SessionToken, SessionToken), crate::sfu::ApiError> {
        self.pull_with(edge, origin, room, false)
    }

    /// [`TestNet::pull`]; `plain`: the offer reaches the origin without its
    /// `a=simulcast:recv`, so only the cluster token (`edge` in the
    /// `Subscribe`) tells the origin it is an edge's pull.
    pub fn pull_with(
        &mut self,
        edge: usize,
        origin: usize,
        room: &str,
        plain: bool,
    ) -> Result<(SessionToken, SessionToken), crate::sfu::ApiError> {
        let now = self.now;
        let room = RoomName::new(room).unwrap();
        let (token, offer) = match self
            .core(edge)
            .handle_command(now, Command::Pull { room: room.clone() })?
        {
            Reply::PullOffer { token, offer } => (token, offer),
            other => panic!("unexpected reply {other:?}"),
        };
        let offer = if plain {
            crate::sfu::sdp::without_simulcast(&offer)
        } else {
            offer
        };
        // What the HTTP side sets for a POST with the cluster token.
        let sub = Command::Subscribe {
            room: room.clone(),
            offer,
            edge: true,
        };
        match self.core(origin).handle_command(now, sub) {
            Ok(Reply::Created {
                token: origin_token,
                answer,
                ..
            }) => {
                self.last_answer = answer.clone();
                let cmd = Command::PullAnswer {
                    room,
                    token,
                    answer,
                };
                self.core(edge).handle_command(now, cmd)?;
                Ok((token, origin_token))
            }
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(e) => {
                let cmd = Command::PullFailed { room, token };
                self.core(edge).handle_command(now, cmd)?;
                Err(e)
            }
        }
    }

    /// Which core listens on `addr` (its candidate or an upstream address).
    pub(super) fn core_at(&self, addr: SocketAddr) -> Option<usize> {
        std::iter::once(&self.sfu).chain(&self.cores).position(|c| {
            let cfg = c.config();
            cfg.candidates.contains(&addr) || cfg.upstream_addrs.contains(&addr)
        })
    }
}

//! Clients joining: offers shaped like real clients, WHIP/WHEP through the
//! core, DELETE and PATCH of a client's session.

use super::*;

impl TestNet {
    /// Create a client Rtc and an offer with the given media.
    pub(super) fn offer(
        &mut self,
        kinds: &[(MediaKind, Direction)],
        opts: &JoinOpts,
    ) -> (
        Rtc,
        SocketAddr,
        String,
        SdpPendingOffer,
        Vec<(Mid, MediaKind)>,
    ) {
        // Unique for any number of clients: the port carries the index.
        let n = self.clients.len() + 1;
        let addr = SocketAddr::from(([192, 0, 2, (n % 250) as u8 + 1], 5000 + n as u16));
        let mut b = Rtc::builder()
            .set_rtp_mode(true)
            .set_dtls_cert(client_cert())
            .set_crypto_provider(crypto_provider());
        if let Some(f) = opts.config {
            b = f(b);
        }
        let mut rtc = b.build(self.now);
        if opts.candidate_in_offer {
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        let mut api = rtc.sdp_api();
        let mut mids = vec![];
        for (k, d) in kinds {
            let sim = match (opts.simulcast, *k) {
                (Some(layers), MediaKind::Video) => {
                    let mut s = str0m::media::Simulcast::new();
                    for (rid, _, _) in layers {
                        s.add_send_layer(str0m::media::SimulcastLayer::new(rid));
                    }
                    Some(s)
                }
                _ => None,
            };
            mids.push((
                api.add_media(*k, *d, Some("wisp-test".into()), None, sim),
                *k,
            ));
        }
        let (offer, pending) = api.apply().expect("offer");
        (rtc, addr, offer.to_sdp_string(), pending, mids)
    }

    /// POST an offer through the core; returns the client's index or the error.
    pub fn join(
        &mut self,
        room: &str,
        publisher: bool,
        kinds: &[(MediaKind, Direction)],
    ) -> Result<usize, crate::sfu::ApiError> {
        self.join_opts(room, publisher, kinds, &JoinOpts::default())
    }

    /// [`TestNet::join`] with the offer shaped like a particular client.
    pub fn join_opts(
        &mut self,
        room: &str,
        publisher: bool,
        kinds: &[(MediaKind, Direction)],
        opts: &JoinOpts,
    ) -> Result<usize, crate::sfu::ApiError> {
        self.join_on(0, room, publisher, kinds, opts)
    }

    /// [`TestNet::join_opts`] on core `core`.
    pub fn join_on(
        &mut self,
        core: usize,
        room: &str,
        publisher: bool,
        kinds: &[(MediaKind, Direction)],
        opts: &JoinOpts,
    ) -> Result<usize, crate::sfu::ApiError> {
        let (mut rtc, addr, offer, pending, mids) = self.offer(kinds, opts);
        let offer = match opts.mangle {
            Some(f) => f(offer),
            None => offer,
        };
        self.last_offer = offer.clone();
        let (mut core, home) = self.place(core, room, publisher)?;
        let room_name = RoomName::new(room).unwrap();
        // What the dispatcher knows from the publisher's offer: the home
        // core's view of its room (`None` before it has video).
        let simulcast = home.and_then(|h| {
            let c = self.core(h);
            c.has_video(&room_name).then(|| c.is_simulcast(&room_name))
        });
        let cmd = |home: Option<usize>| {
            let (room, offer) = (room_name.clone(), offer.clone());
            if publisher {
                Command::Publish {
                    room,
                    offer,
                    record: opts.record,
                }
            } else if let Some(home) = home {
                Command::SubscribeRelayed {
                    room,
                    offer,
                    home,
                    edge: false,
                    simulcast,
                }
            } else {
                Command::Subscribe {
                    room,
                    offer,
                    edge: false,
                }
            }
        };
        let now = self.now;
        let mut reply = self.core(core).handle_command(now, cmd(home));
        if let (Err(crate::sfu::ApiError::AtCapacity), Some(h)) = (&reply, home) {
            if self.spread > 1 {
                // Placed: a worker that refuses a copy leaves the viewer
                // to the room's home (as the dispatcher does).
                core = h;
                reply = self.core(core).handle_command(now, cmd(None));
            }
        }
        let (token, answer, etag) = match reply? {
            Reply::Created {
                token,
                answer,
                etag,
            } => (token, answer, etag),
            other => panic!("unexpected reply {other:?}"),
        };
        let server_ice = ice_of(&answer);
        let ufrag = ice_of(&self.last_offer).0;
        self.last_answer = answer.clone();
        self.last_etag = etag.clone();
        // Fuzz builds remember parses by text (`fuzzing::sdp_memo`).
        #[cfg(all(fuzzing, feature = "fuzzing"))]
        let answer = crate::fuzzing::sdp_memo::answer(&answer).expect("answer parses");
        #[cfg(not(all(fuzzing, feature = "fuzzing")))]
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        if !opts.candidate_in_offer {
            // The client still has an address; it just did not announce it (OBS).
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        }
        self.clients.push(Client {
            rtc,
            addr,
            core,
            token: Some(token),
            room: room.into(),
            publisher,
            mids,
            got: vec![],
            keyframe_requests: 0,
            connected_at: None,
            alive: true,
            inbound_loss: 0.0,
            blackholed: false,
            next: self.now,
            video_seq: 1,
            audio_seq: 1,
            frame: 0,
            counter: 0,
            want_keyframe: true,
            sim: opts
                .simulcast
                .unwrap_or(&[])
                .iter()
                .enumerate()
                .map(|(n, (rid, packets, size))| SimLayer {
                    rid,
                    packets: *packets,
                    size: *size,
                    short_picture_id: false,
                    paused: false,
                    want_keyframe: true,
                    keyframe_requests: 0,
                    seq: 1 + 10_000 * n as u64,
                    picture_id: 1000 + 7919 * n as u16,
                    tl0: 50 * n as u8,
                    ts_offset: 0x1234_5678u32.wrapping_mul(n as u32 + 1),
                    frames_sent: 0,
                })
                .collect(),
            downlink: None,
            nat: None,
            uplink_loss: 0.0,
            uplink_jitter: Duration::ZERO,
            ignore_keyframe_requests: false,
            etag,
            server_ice,
            ufrag,
        });
        let i = self.clients.len() - 1;
        self.drain_client(i);
        Ok(i)
    }

    pub fn publish(&mut self, room: &str) -> usize {
        self.publish_with(room, &JoinOpts::default())
    }

    /// Publish audio + video with the offer shaped by `opts`.
    pub fn publish_with(&mut self, room: &str, opts: &JoinOpts) -> usize {
        self.join_opts(
            room,
            true,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            opts,
        )
        .expect("publish")
    }

    pub fn publish_opts_record(&mut self, room: &str, record: Option<bool>) -> usize {
        let opts = JoinOpts {
            record,
            ..JoinOpts::default()
        };
        self.publish_with(room, &opts)
    }

    pub fn view(&mut self, room: &str) -> usize {
        self.view_on(0, room)
    }

    /// A viewer of audio and video on core `core`.
    pub fn view_on(&mut self, core: usize, room: &str) -> usize {
        self.try_view_on(core, room).expect("subscribe")
    }

    /// [`TestNet::view_on`], with the core's refusal as an error.
    pub fn try_view_on(&mut self, core: usize, room: &str) -> Result<usize, crate::sfu::ApiError> {
        self.join_on(
            core,
            room,
            false,
            &[
                (MediaKind::Audio, Direction::RecvOnly),
                (MediaKind::Video, Direction::RecvOnly),
            ],
            &JoinOpts::default(),
        )
    }

    /// A publisher of audio and video on core `core`.
    pub fn publish_on(&mut self, core: usize, room: &str) -> usize {
        self.join_on(
            core,
            room,
            true,
            &[
                (MediaKind::Audio, Direction::SendOnly),
                (MediaKind::Video, Direction::SendOnly),
            ],
            &JoinOpts::default(),
        )
        .expect("publish")
    }

    /// DELETE the client's session through the core and drop the client peer.
    pub fn delete(&mut self, i: usize) -> Result<Reply, crate::sfu::ApiError> {
        let c = &mut self.clients[i];
        c.alive = false;
        let role = if c.publisher {
            crate::sfu::Role::Publisher
        } else {
            crate::sfu::Role::Subscriber
        };
        let cmd = Command::DeleteSession {
            role,
            room: RoomName::new(&c.room).unwrap(),
            token: c.token.unwrap(),
        };
        c.rtc.disconnect();
        let (core, now) = (c.core, self.now);
        self.core(core).handle_command(now, cmd)
    }

    /// Client `i` restarts ICE (new credentials, e.g. a new network): the
    /// trickle-ice-sdpfrag body that sends its new ICE lines and candidates
    /// (RFC 8840), and the offer that [`TestNet::accept_ice_restart`]
    /// completes.
    pub fn ice_restart_frag(&mut self, i: usize) -> (String, SdpPendingOffer) {
        let mut api = self.clients[i].rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("restart offer");
        let frag = offer
            .to_sdp_string()
            .lines()
            .filter(|l| {
                l.starts_with("a=ice-ufrag:")
                    || l.starts_with("a=ice-pwd:")
                    || l.starts_with("a=candidate:")
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        (frag, pending)
    }

    /// Client `i` completes its ICE restart: the answer to `pending` is
    /// `answer` (the session's answer) with the server's new ICE
    /// credentials from `server_frag` (its PATCH reply).
    pub fn accept_ice_restart(
        &mut self,
        i: usize,
        pending: SdpPendingOffer,
        answer: &str,
        server_frag: &str,
    ) {
        let (old_ufrag, old_pwd) = ice_of(answer);
        let (ufrag, pwd) = ice_of(server_frag);
        assert!(
            !ufrag.is_empty() && !pwd.is_empty(),
            "no ICE credentials in {server_frag}"
        );
        let answer = answer
            .replace(
                &format!("a=ice-ufrag:{old_ufrag}"),
                &format!("a=ice-ufrag:{ufrag}"),
            )
            .replace(&format!("a=ice-pwd:{old_pwd}"), &format!("a=ice-pwd:{pwd}"));
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        self.clients[i]
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("restart answer accepted");
    }

    /// PATCH the client's session with an sdpfrag.
    pub fn patch(
        &mut self,
        i: usize,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<Reply, crate::sfu::ApiError> {
        let c = &self.clients[i];
        let role = if c.publisher {
            crate::sfu::Role::Publisher
        } else {
            crate::sfu::Role::Subscriber
        };
        let cmd = Command::Patch {
            role,
            room: RoomName::new(&c.room).unwrap(),
            token: c.token.unwrap(),
            if_match: if_match.map(str::to_string),
            fragment: fragment.to_string(),
        };
        let (core, now) = (c.core, self.now);
        self.core(core).handle_command(now, cmd)
    }
}

//! `core_ops`: a tape of operations on a fresh core with real str0m clients
//! (publish, subscribe, datagrams, time, DELETE, close room, PATCH, peers that
//! vanish, clock jumps), with the core's invariants checked after every step
//! and every map empty once everything is closed.

use std::time::Duration;

use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};

use super::datagram::binding_request;
use super::Tape;
use crate::sfu::{ApiError, Command, Reply, RoomName, ENDED_GRACE};
use crate::testnet::{only_codec, JoinOpts, TestNet};

/// Most sessions created per input: a publisher and viewers of it, or a
/// second room. A join costs about 4 M instructions (most of it str0m's SDP
/// parser, on both sides), so more would make every input slow.
const MAX_JOINS: usize = 3;
/// Most simulated time per input, summed over the time operations; clock
/// jumps (which run nothing in between) reach the long timeouts, such as
/// the 15 s connect timeout and consent expiry, at no cost. Simulated media
/// and timers were most of an input's cost.
const MAX_SIM: Duration = Duration::from_secs(4);
/// Most simulated time one operation runs.
const MAX_RUN_MS: u64 = 2000;

fn room_name(b: u8) -> &'static str {
    ["r0", "r1", "r2"][usize::from(b % 3)]
}

fn room(b: u8) -> RoomName {
    RoomName::new(room_name(b)).expect("room")
}

/// What a joining client offers (`arg / 3`, beside the room `arg % 3`):
/// Opus and one video codec, mostly; every codec one time in five. The
/// offer and the answer of one video codec are a fraction of the full ones,
/// and parsing them was most of the cost of a join; a viewer whose codec is
/// not the publisher's is a case of its own.
fn offered_codecs(arg: u8) -> Option<fn(str0m::RtcConfig) -> str0m::RtcConfig> {
    let codec = match (arg / 3) % 5 {
        0 => Codec::Vp8,
        1 => Codec::H264,
        2 => Codec::Vp9,
        3 => Codec::Av1,
        _ => return None,
    };
    Some(only_codec(codec))
}

const PUBLISH: [(MediaKind, Direction); 2] = [
    (MediaKind::Audio, Direction::SendOnly),
    (MediaKind::Video, Direction::SendOnly),
];
pub(super) const VIEW: [(MediaKind, Direction); 2] = [
    (MediaKind::Audio, Direction::RecvOnly),
    (MediaKind::Video, Direction::RecvOnly),
];

/// Every invariant that must hold between any two operations.
fn check(net: &TestNet) {
    let c = net.sfu.counts();
    let s = net.sfu.stats();
    assert_eq!(c.tokens, c.sessions, "one token per session: {c:?}");
    assert_eq!(c.ufrags, c.sessions, "one ufrag per session: {c:?}");
    assert!(
        c.addr_lists <= c.sessions,
        "address lists of dead sessions: {c:?}"
    );
    assert!(
        c.addrs <= 8 * c.sessions,
        "address map larger than its bound: {c:?}"
    );
    assert!(
        c.keyframe_timers <= c.rooms,
        "keyframe timers of dead rooms: {c:?}"
    );
    assert!(c.recently_ended <= 4096);
    let live = s.sessions_live[0] + s.sessions_live[1];
    let created = s.sessions_created[0] + s.sessions_created[1];
    let closed = s.sessions_closed[0] + s.sessions_closed[1];
    assert_eq!(created - closed, live, "created - closed != live: {s:?}");
    assert_eq!(live as usize, c.sessions);
    for r in 0..2 {
        assert!(s.sessions_connected[r] <= s.sessions_live[r]);
        assert_eq!(
            s.sessions_created[r] - s.sessions_closed[r],
            s.sessions_live[r]
        );
    }
    // Every room has a member: publishers = sessions − viewers, one per room
    // at most, and a room without viewers must have one.
    let rooms = net.sfu.list_rooms(net.now);
    assert_eq!(rooms.len(), c.rooms);
    let viewers: usize = rooms.iter().map(|r| r.viewers).sum();
    assert!(viewers <= c.sessions, "{viewers} viewers, {c:?}");
    let publishers = c.sessions - viewers;
    let empty = rooms.iter().filter(|r| r.viewers == 0).count();
    assert!(
        empty <= publishers && publishers <= c.rooms,
        "rooms {c:?}, viewers {viewers}, rooms without viewers {empty}"
    );
    assert_eq!(s.caught_panics, 0, "a panic was caught in the core");
}

fn frag(t: &mut Tape<'_>, restart: bool) -> String {
    let mut f = String::new();
    if restart {
        f.push_str(&format!(
            "a=ice-ufrag:r{:02x}{:02x}\r\na=ice-pwd:restartpasswordrestartpassword{:02x}\r\n",
            t.byte(),
            t.byte(),
            t.byte()
        ));
    }
    f.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n");
    match t.byte() % 4 {
        0 => f.push_str(&format!(
            "a=candidate:1 1 udp 2130706431 192.0.2.{} {} typ host\r\n",
            t.byte(),
            u16::from_be_bytes([t.byte(), t.byte()])
        )),
        1 => f.push_str("a=end-of-candidates\r\n"),
        2 => f.push_str(&String::from_utf8_lossy(t.chunk(1))),
        _ => {}
    }
    f
}

/// Run the operations the input describes; see the module docs.
pub fn core_ops(data: &[u8]) {
    let mut t = Tape(data);
    let mut net = super::net(t.byte());
    let mut sim = Duration::ZERO;
    let mut joins = 0;
    // Clients this body has DELETEd. A client whose own `Rtc` ended is not
    // alive either, but its session may still be live on the server (or
    // within `ENDED_GRACE`), so a DELETE of it may rightly succeed.
    let mut deleted = [false; MAX_JOINS];
    for _ in 0..48 {
        if t.is_empty() {
            break;
        }
        let op = t.byte();
        let arg = t.byte();
        let n = net.clients.len();
        let pick = |a: u8| (n > 0).then(|| usize::from(a) % n);
        match op % 13 {
            0 | 1 if joins < MAX_JOINS => {
                joins += 1;
                let before = net.sfu.counts().sessions;
                let opts = JoinOpts {
                    config: offered_codecs(arg),
                    ..JoinOpts::default()
                };
                let res = if op % 13 == 0 {
                    net.join_opts(room_name(arg), true, &PUBLISH, &opts)
                } else {
                    net.join_opts(room_name(arg), false, &VIEW, &opts)
                };
                net.settle();
                match res {
                    Ok(_) => assert_eq!(net.sfu.counts().sessions, before + 1),
                    Err(ApiError::AlreadyPublished | ApiError::AtCapacity) => {
                        assert_eq!(net.sfu.counts().sessions, before);
                    }
                    Err(e) => panic!("a valid offer was refused: {e:?}"),
                }
            }
            2 => {
                if let Some(i) = pick(arg) {
                    let first = !std::mem::replace(&mut deleted[i], true);
                    match net.delete(i) {
                        Ok(Reply::Deleted) => assert!(first, "a second DELETE succeeded"),
                        Err(ApiError::NotFound) => {}
                        other => panic!("unexpected reply to DELETE: {other:?}"),
                    }
                    net.settle();
                }
            }
            3 => {
                let cmd = Command::CloseRoom { room: room(arg) };
                match net.sfu.handle_command(net.now, cmd) {
                    Ok(Reply::RoomClosed { .. }) | Err(ApiError::NotFound) => {}
                    other => panic!("unexpected reply to CloseRoom: {other:?}"),
                }
                net.settle();
            }
            4 | 5 => {
                let ms = u64::from(u16::from_be_bytes([arg, t.byte()])) % MAX_RUN_MS + 1;
                let d = Duration::from_millis(ms);
                if sim + d <= MAX_SIM {
                    sim += d;
                    net.run_for(d);
                }
            }
            6 => {
                if let Some(i) = pick(arg) {
                    net.clients[i].blackholed = true;
                }
            }
            7 => {
                // A datagram from a client's address or a stranger.
                let from = match pick(arg) {
                    Some(i) if arg & 0x80 == 0 => net.clients[i].addr,
                    _ => std::net::SocketAddr::from(([203, 0, 113, 9], 9999)),
                };
                let bytes = match t.byte() % 3 {
                    0 => t.chunk(4).to_vec(),
                    _ => match pick(arg) {
                        Some(i) => {
                            let (u, p) = net.clients[i].server_ice.clone();
                            let user = format!("{u}:{}", net.clients[i].ufrag);
                            binding_request(&mut t, &user, &p, false)
                        }
                        None => vec![0; 20],
                    },
                };
                net.deliver_now(from, &bytes);
            }
            8..=10 => {
                if let Some(i) = pick(arg) {
                    let if_match = match t.byte() % 4 {
                        0 => None,
                        1 => Some("*".to_string()),
                        2 => Some("\"stale\"".to_string()),
                        _ => Some(net.clients[i].etag.clone()),
                    };
                    let fragment = frag(&mut t, op % 13 == 9);
                    let before = net.sfu.counts().sessions;
                    match net.patch(i, if_match.as_deref(), &fragment) {
                        Ok(Reply::Patched { etag, .. }) => {
                            if let Some(e) = etag {
                                net.clients[i].etag = e;
                            }
                        }
                        Err(
                            ApiError::NotFound
                            | ApiError::BadFragment(_)
                            | ApiError::PreconditionFailed
                            | ApiError::PreconditionRequired,
                        ) => {
                            assert_eq!(
                                net.sfu.counts().sessions,
                                before,
                                "a refused PATCH ended a session"
                            );
                        }
                        other => panic!("unexpected reply to PATCH: {other:?}"),
                    }
                    net.settle();
                }
            }
            11 => {
                // The clock jumps (suspend, NTP step seen through a monotonic clock).
                let d = if arg & 1 == 0 {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_secs(u64::from(arg))
                };
                net.jump(d);
            }
            _ => {
                let cmd = match arg % 3 {
                    0 => Command::RequestKeyframe { room: room(arg) },
                    1 => Command::ListRooms,
                    _ => Command::Stats,
                };
                assert!(net.sfu.handle_command(net.now, cmd).is_ok());
                net.settle();
            }
        }
        check(&net);
    }
    // Close everything: every map must end empty.
    for r in 0..3 {
        let _ = net
            .sfu
            .handle_command(net.now, Command::CloseRoom { room: room(r) });
        check(&net);
    }
    net.run_for(Duration::from_secs(1));
    check(&net);
    net.assert_maps_empty();
    net.jump(ENDED_GRACE);
    assert_eq!(
        net.sfu.counts().recently_ended,
        0,
        "ended tokens never expire"
    );
}

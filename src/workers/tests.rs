//! Unit tests of the dispatcher, the token shard and the placement.

use super::*;
use crate::sfu::IdGen;

/// `n` fake cores: each answers a POST with a token it owns and counts
/// the sessions it made in its gauges, answers a session command with
/// `Deleted` only for its own tokens, and lists one room per POST.
fn fake(n: usize, max_sessions: usize) -> Dispatcher {
    fake_rooms(n, max_sessions, 100, usize::MAX)
}

/// [`fake`] with a room limit, whose cores refuse a relayed copy
/// (`AtCapacity`) when they have `copy_cap` rooms.
fn fake_rooms(n: usize, max_sessions: usize, max_rooms: usize, copy_cap: usize) -> Dispatcher {
    let key = [9; 32];
    let mut links = Vec::new();
    let mut gauges = Vec::new();
    for i in 0..n {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let (tx, rx) = bounded::<CoreRequest>(8);
        let g = Arc::new(WorkerGauges::default());
        let (gg, shard) = (g.clone(), TokenShard::new(key, i, n));
        std::thread::spawn(move || {
            let _poll = poll;
            let mut ids = IdGen::new([i as u8; 32]);
            let mut mine = Vec::new();
            let mut rooms: Vec<RoomName> = Vec::new();
            for r in rx {
                let distinct = |rooms: &[RoomName]| {
                    let set: std::collections::HashSet<_> = rooms.iter().collect();
                    set.len()
                };
                // A relayed viewer's answer tells the room's shape it was given.
                let shape = match &r.command {
                    Command::SubscribeRelayed {
                        simulcast: Some(s), ..
                    } => format!(" simulcast={s}"),
                    _ => String::new(),
                };
                let reply = match r.command {
                    // A second publisher of a live room.
                    Command::Publish { ref offer, .. } if offer.contains("a=second") => {
                        Err(ApiError::AlreadyPublished)
                    }
                    Command::SubscribeRelayed { .. } if distinct(&rooms) >= copy_cap => {
                        Err(ApiError::AtCapacity)
                    }
                    Command::Publish { room, .. }
                    | Command::Subscribe { room, .. }
                    | Command::SubscribeRelayed { room, .. } => {
                        let token = ids.token_for(&shard);
                        mine.push(token);
                        rooms.push(room);
                        gg.sessions.store(mine.len() as u64, Ordering::Relaxed);
                        Ok(Reply::Created {
                            token,
                            answer: format!("worker {i}{shape}"),
                            etag: String::new(),
                        })
                    }
                    Command::DeleteSession { token, .. } if mine.contains(&token) => {
                        // The session goes, and its room with its last one.
                        let i = mine.iter().position(|t| *t == token).unwrap();
                        mine.remove(i);
                        let room = rooms.remove(i);
                        gg.sessions.store(mine.len() as u64, Ordering::Relaxed);
                        if !rooms.contains(&room) {
                            gg.rooms_ended.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Reply::Deleted)
                    }
                    Command::ViewerState { token, .. } if mine.contains(&token) => Ok(
                        Reply::ViewerState(Box::new(crate::sfu::command::ViewerState {
                            viewers: 1,
                            ..Default::default()
                        })),
                    ),
                    Command::ListRooms => Ok(Reply::Rooms(
                        rooms
                            .iter()
                            .map(|r| RoomInfo {
                                name: r.to_string(),
                                publisher_live: false,
                                tracks: vec![],
                                viewers: 1,
                                uptime_s: 0.0,
                                recording: false,
                                relayed: false,
                            })
                            .collect(),
                    )),
                    _ => Err(ApiError::NotFound),
                };
                let _ = r.reply.send(reply);
            }
        });
        links.push(Link::new(tx, waker, Duration::from_secs(5)));
        gauges.push(g);
    }
    Dispatcher::new(links, gauges, key, max_sessions, max_rooms)
}

fn post(d: &Dispatcher, room: &str) -> Result<(crate::sfu::SessionToken, String), ApiError> {
    let cmd = Command::Subscribe {
        room: RoomName::new(room).unwrap(),
        offer: String::new(),
        edge: false,
    };
    match d.call(cmd) {
        Ok(Ok(Reply::Created { token, answer, .. })) => Ok((token, answer)),
        Ok(Err(e)) => Err(e),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rooms_spread_sessions_follow_their_room_and_token() {
    let d = fake(3, 100);
    let (_, a) = post(&d, "a").unwrap();
    let (_, b) = post(&d, "b").unwrap();
    let (_, c) = post(&d, "c").unwrap();
    assert_eq!([a.as_str(), &b, &c], ["worker 0", "worker 1", "worker 2"]);
    // A room's next sessions go to its home.
    let (t, a2) = post(&d, "a").unwrap();
    assert_eq!(a2, "worker 0");
    assert_eq!(d.home(&RoomName::new("b").unwrap()), Some(1));
    // Its URL reaches the worker that made the token, and only that one.
    let del = |token| Command::DeleteSession {
        role: crate::sfu::Role::Subscriber,
        room: RoomName::new("a").unwrap(),
        token,
    };
    assert!(matches!(d.call(del(t)), Ok(Ok(Reply::Deleted))));
    let mut other = IdGen::new([42; 32]);
    assert!(matches!(
        d.call(del(other.token())),
        Ok(Err(ApiError::NotFound))
    ));
    // The room list covers every worker.
    match d.call(Command::ListRooms) {
        Ok(Ok(Reply::Rooms(r))) => {
            let names: Vec<_> = r.iter().map(|r| (r.name.as_str(), r.viewers)).collect();
            assert_eq!(names, [("a", 1), ("b", 1), ("c", 1)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_busy_home_s_viewers_are_relayed_and_counted_everywhere() {
    let d = fake(2, 100);
    let placed: Vec<String> = (0..4).map(|_| post(&d, "a").unwrap().1).collect();
    // The home takes viewers until it is two sessions busier.
    assert_eq!(placed, ["worker 0", "worker 0", "worker 1", "worker 0"]);
    let (t, _) = post(&d, "a").unwrap();
    let state = d.call(Command::ViewerState {
        role: crate::sfu::Role::Subscriber,
        room: RoomName::new("a").unwrap(),
        token: t,
    });
    match state {
        Ok(Ok(Reply::ViewerState(v))) => assert_eq!(v.viewers, 5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn relayed_viewers_are_told_whether_the_publisher_offered_simulcast() {
    // The answers to a publish (if any) and then three viewers, on a fresh
    // pair of workers: the third viewer is relayed.
    let placed = |offer: Option<&str>| -> Vec<String> {
        let d = fake(2, 100);
        if let Some(offer) = offer {
            let cmd = Command::Publish {
                room: RoomName::new("a").unwrap(),
                offer: offer.into(),
                record: None,
            };
            assert!(matches!(d.call(cmd), Ok(Ok(Reply::Created { .. }))));
        }
        (0..3).map(|_| post(&d, "a").unwrap().1).collect()
    };
    let plain = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    assert_eq!(
        placed(Some(plain)),
        ["worker 0", "worker 1 simulcast=false", "worker 0"]
    );
    let layers = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=simulcast:send h;l\r\n";
    assert_eq!(
        placed(Some(layers)),
        ["worker 0", "worker 1 simulcast=true", "worker 0"]
    );
    // No publisher yet: not known.
    assert_eq!(placed(None), ["worker 0", "worker 0", "worker 1"]);
    // A refused second publisher does not change what the room is.
    let d = fake(2, 100);
    let publish = |offer: String| {
        d.call(Command::Publish {
            room: RoomName::new("a").unwrap(),
            offer,
            record: None,
        })
    };
    assert!(matches!(
        publish(plain.into()),
        Ok(Ok(Reply::Created { .. }))
    ));
    let second = format!("{layers}a=second\r\n");
    assert!(matches!(
        publish(second),
        Ok(Err(ApiError::AlreadyPublished))
    ));
    let answers: Vec<String> = (0..3).map(|_| post(&d, "a").unwrap().1).collect();
    // (Which viewer is relayed depends on the refused POST's count in the
    // gauges; what it is told does not.)
    assert!(
        answers.iter().any(|a| a == "worker 1 simulcast=false")
            && !answers.iter().any(|a| a.contains("simulcast=true")),
        "{answers:?}"
    );
}

#[test]
fn relay_memory_grows_with_the_workers_not_their_square() {
    assert_eq!(relay_queue(2), RELAY_QUEUE);
    assert_eq!(relay_queue(17), 512);
    assert_eq!(relay_queue(256), 64);
}

#[test]
fn the_session_limit_is_the_process_s() {
    let d = fake(2, 3);
    for r in ["a", "b", "c"] {
        post(&d, r).unwrap();
    }
    assert_eq!(post(&d, "d"), Err(ApiError::AtCapacity));
    assert_eq!(post(&d, "a"), Err(ApiError::AtCapacity));
}

fn delete(d: &Dispatcher, room: &str, token: crate::sfu::SessionToken) {
    let cmd = Command::DeleteSession {
        role: crate::sfu::Role::Subscriber,
        room: RoomName::new(room).unwrap(),
        token,
    };
    assert!(matches!(d.call(cmd), Ok(Ok(Reply::Deleted))));
}

#[test]
fn a_room_that_came_and_went_leaves_no_entry_and_is_placed_anew() {
    let d = fake(2, 100);
    let (ta, a) = post(&d, "a").unwrap();
    let placed: Vec<String> = ["b", "c", "c"].map(|r| post(&d, r).unwrap().1).into();
    assert_eq!(a, "worker 0");
    assert_eq!(placed, ["worker 1", "worker 0", "worker 0"]);
    assert_eq!(d.homes_len(), 3);
    // Room "a" ends on its home: its entry goes.
    delete(&d, "a", ta);
    assert_eq!(d.home(&RoomName::new("a").unwrap()), None);
    assert_eq!(d.homes_len(), 2);
    // A new room of that name goes to the least loaded worker, not the
    // old home (two sessions there, one on worker 1).
    assert_eq!(post(&d, "a").unwrap().1, "worker 1");
    assert_eq!(d.home(&RoomName::new("a").unwrap()), Some(1));
}

#[test]
fn the_room_limit_is_the_process_s_and_relayed_copies_do_not_count() {
    let d = fake_rooms(2, 100, 2, usize::MAX);
    let (_, a) = post(&d, "a").unwrap();
    let (tb, b) = post(&d, "b").unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("worker 0", "worker 1"));
    // The fake's gauges publish no room count: the map's length is the limit.
    assert_eq!(post(&d, "c"), Err(ApiError::AtCapacity));
    // Viewers of "a" until one is relayed to worker 1 (a copy of "a" there).
    let placed: Vec<String> = (0..3).map(|_| post(&d, "a").unwrap().1).collect();
    assert_eq!(placed, ["worker 0", "worker 0", "worker 1"]);
    // The copy is not a room of the process, and takes no room's place.
    assert_eq!(d.homes_len(), 2);
    assert_eq!(post(&d, "c"), Err(ApiError::AtCapacity));
    // Room "b" ends (worker 1 keeps its copy of "a"): "c" fits now.
    delete(&d, "b", tb);
    assert_eq!(post(&d, "c").unwrap().1, "worker 1");
    assert_eq!(d.homes_len(), 2);
    assert_eq!(d.home(&RoomName::new("a").unwrap()), Some(0));
}

#[test]
fn a_viewer_refused_a_copy_is_served_from_the_home() {
    let d = fake_rooms(2, 100, 2, 1);
    post(&d, "a").unwrap();
    post(&d, "b").unwrap();
    // The third viewer of "a" would be relayed to worker 1, which has
    // a room already and refuses a copy: the home takes it.
    let placed: Vec<String> = (0..3).map(|_| post(&d, "a").unwrap().1).collect();
    assert_eq!(placed, ["worker 0", "worker 0", "worker 0"]);
    assert_eq!(d.homes_len(), 2);
}

//! The overload policy under a fake clock: admission, shedding order, resumption.

use super::*;

fn sid(n: u64) -> SessionId {
    SessionId(n)
}

fn sample(busy_ms: u64) -> LoadSample {
    LoadSample {
        busy: Duration::from_millis(busy_ms),
        elapsed: Duration::from_secs(1),
        ..LoadSample::default()
    }
}

fn viewer(n: u64, room: usize, pps: f64) -> ViewerLoad {
    ViewerLoad {
        id: sid(n),
        room,
        joined: n,
        pps,
        down_pps: None,
        uncapped_pps: None,
        resume_pps: None,
        paused_since: None,
        edge: false,
    }
}

#[test]
fn cost_is_measured_and_admission_predicts_from_it() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.message_cost_s = 0.0; // no send calls in this loop
                            // 100k packets in a 1 s window at 50 % busy: 5 µs a packet.
    l.on_sample(t0, sample(500), 100_000, 0);
    assert!((l.busy_ratio - 0.5).abs() < 1e-9);
    assert!((l.cost_s - 5e-6).abs() < 1e-9);
    // One more 550 pps viewer costs 0.275 % of the core.
    assert!((l.share(550.0) - 0.00275).abs() < 1e-9);
    // Room for (0.85 - 0.5) / 0.00275 = 127 viewers, then refusals.
    let admitted = (0..200)
        .take_while(|_| l.admit(t0, 550.0, Refusal::ViewerLoad).is_ok())
        .count();
    assert_eq!(admitted, 127);
    assert_eq!(l.refusals, [1, 0]);
    assert!(l.headroom(t0) < 0.00275 && l.headroom(t0) >= 0.0);
    // Pending load is forgotten once samples include it.
    l.on_sample(t0 + PENDING_FOR, sample(500), 100_000, 0);
    assert!((l.headroom(t0 + PENDING_FOR) - 0.35).abs() < 1e-9);
}

#[test]
fn send_calls_are_measured_apart_and_counted_at_the_batching_under_load() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    // 100k packets in 1 s, 900 ms busy of which 400 ms in send calls that
    // carried 50k messages (two datagrams each).
    let s = LoadSample {
        busy: Duration::from_millis(900),
        elapsed: Duration::from_secs(1),
        send: Duration::from_millis(400),
        messages: 50_000,
        datagrams: 100_000,
    };
    l.on_sample(t0, s, 100_000, 0);
    assert!((l.busy_ratio - 0.9).abs() < 1e-9);
    assert!((l.batch - 2.0).abs() < 1e-9);
    // At four datagrams a message the sends would take half as long.
    assert!((l.load - 0.7).abs() < 1e-9, "{}", l.load);
    assert!((l.cost_s - 5e-6).abs() < 1e-12, "{}", l.cost_s);
    assert!((l.message_cost_s - 8e-6).abs() < 1e-12);
    // One more packet: 5 µs + a quarter of an 8 µs message.
    assert!((l.packet_cost() - 7e-6).abs() < 1e-12);
    assert!((l.headroom(t0) - 0.15).abs() < 1e-9);
    assert!((l.headroom_pps(t0) - 0.15 / 7e-6).abs() < 1e-6);
    // 0.15 / (550 × 7 µs) = 38.96 viewers.
    let admitted = (0..200)
        .take_while(|_| l.admit(t0, 550.0, Refusal::ViewerLoad).is_ok())
        .count();
    assert_eq!(admitted, 38);
    assert!(l.headroom_pps(t0) < 550.0);
    // A loop that batches more than BATCH_UNDER_LOAD counts as it is.
    let s = LoadSample {
        messages: 10_000,
        ..s
    };
    l.on_sample(t0, s, 100_000, 0);
    assert!((l.load - 0.9).abs() < 1e-9);
}

#[test]
fn a_light_load_predicts_a_heavier_one_whose_sends_batch() {
    // A loop whose work is 3 µs per packet plus 3 µs per send message.
    // At 50k packets/s it sends one message per packet (busy 0.30, 6 µs a
    // packet); at 150k it batches three a message (busy 0.60, 4 µs).
    let window = |pps: u64, batch: u64| {
        let messages = pps / batch;
        LoadSample {
            busy: Duration::from_nanos(3_000 * pps + 3_000 * messages),
            elapsed: Duration::from_secs(1),
            send: Duration::from_nanos(3_000 * messages),
            messages,
            datagrams: pps,
        }
    };
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.on_sample(t0, window(50_000, 1), 50_000, 0);
    assert!((l.busy_ratio - 0.30).abs() < 1e-9);
    // Counted at four datagrams a message: 0.15 + 0.15 / 4.
    assert!((l.load - 0.1875).abs() < 1e-9);
    assert!((l.packet_cost() - 3.75e-6).abs() < 1e-12);
    // 100k packets/s more are predicted at 0.1875 + 0.375 = 0.5625 (a
    // busy ratio per packet would say 0.90)...
    for _ in 0..100 {
        l.admit(t0, 1000.0, Refusal::ViewerLoad).unwrap();
    }
    assert!((l.predicted(t0) - 0.5625).abs() < 1e-9);
    // ...and that is what the heavier load measures: 0.45 + 0.15 × 3 / 4.
    let t1 = t0 + PENDING_FOR;
    l.on_sample(t1, window(150_000, 3), 150_000, 0);
    assert!((l.busy_ratio - 0.60).abs() < 1e-9);
    assert!((l.predicted(t1) - 0.5625).abs() < 1e-9, "{}", l.load);
    assert!((l.cost_s - 3e-6).abs() < 1e-12);
    assert!((l.message_cost_s - 3e-6).abs() < 1e-12);
    assert!((l.batch - 3.0).abs() < 1e-9);
}

#[test]
fn a_quiet_window_moves_the_cost_back_toward_the_prior() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 40e-6; // left over from a setup burst
    l.message_cost_s = 40e-6;
    // Setup windows: sends, but no media.
    let setup = LoadSample {
        send: Duration::from_millis(100),
        messages: 5000,
        datagrams: 5000,
        ..sample(300)
    };
    for _ in 0..10 {
        l.on_sample(t0, setup, 10, 0);
    }
    assert!((l.cost_s - PRIOR_COST_S).abs() < 5e-6, "{}", l.cost_s);
    assert!((l.message_cost_s - PRIOR_MESSAGE_COST_S).abs() < 5e-6);
    let zero = LoadSample::default();
    l.on_sample(t0, zero, 1, 0);
    assert_eq!(l.samples, 10, "an empty window is no sample");
}

#[test]
fn setups_are_not_charged_to_packets() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    // 100 joins (100 ms of setup) and 80k packets in 500 ms of work:
    // the packets cost 400 ms / 80k = 5 µs, not 6.25 µs.
    l.on_sample(t0, sample(500), 80_000, 100);
    assert!((l.cost_s - 5e-6).abs() < 1e-9, "{}", l.cost_s);
    // Nor to the load: a join burst passes, the media stays.
    assert!((l.load - 0.4).abs() < 1e-9 && (l.busy_ratio - 0.5).abs() < 1e-9);
    // More setups than busy time (a join storm): still a positive cost.
    l.on_sample(t0, sample(100), 10_000, 1000);
    assert!(l.cost_s > 0.0);
    assert!((l.load - 0.01).abs() < 1e-9);
}

#[test]
fn sheds_down_then_pause_heaviest_room_newest_first_then_close() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 1e-4;
    // Room 0: simulcast viewers 1..=3 at 500 pps (200 pps one layer down).
    // Room 1: plain viewers 4..=5 at 300 pps.
    let mut vs: Vec<ViewerLoad> = (1..=3)
        .map(|n| ViewerLoad {
            down_pps: Some(200.0),
            ..viewer(n, 0, 500.0)
        })
        .collect();
    vs.push(viewer(4, 1, 300.0));
    vs.push(viewer(5, 1, 300.0));
    let mut g = Governor::default();

    // Over the ceiling but keeping up with ingress: nothing, ever.
    l.load = 0.99;
    for _ in 0..5 {
        assert!(g.plan(t0, &l, &vs).is_empty());
    }
    // Behind, over by 0.055 = 550 pps: two down-switches (newest first)
    // cover it.
    l.behind = true;
    l.load = 0.905;
    assert!(
        g.plan(t0, &l, &vs).is_empty(),
        "one sample over is not enough"
    );
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![Action::Down(sid(3)), Action::Down(sid(2))]
    );
    // The next sample is skipped while the switches take effect.
    assert!(g.plan(t0, &l, &vs).is_empty());

    // Over by 0.15 = 1,500 pps: all three down (900), then the heaviest
    // room's newest viewers are paused: 3 (its remaining 200), 2, 1.
    l.load = 1.0;
    let plan = g.plan(t0, &l, &vs);
    assert_eq!(
        plan,
        vec![
            Action::Down(sid(3)),
            Action::Down(sid(2)),
            Action::Down(sid(1)),
            Action::Pause(sid(3)),
            Action::Pause(sid(2)),
            Action::Pause(sid(1)),
        ]
    );
    assert!(g.plan(t0, &l, &vs).is_empty());

    // Everyone paused and still over: the newest paused are closed.
    for v in &mut vs {
        v.paused_since = Some(t0);
        v.resume_pps = Some(v.pps);
        v.pps = 0.0;
    }
    let plan = g.plan(t0, &l, &vs);
    assert_eq!(plan.first(), Some(&Action::Close(sid(5))));
    assert_eq!(plan.len(), 5);
    assert_eq!(g.counts, [5, 3, 5, 0, 0]);
}

#[test]
fn an_edge_pull_is_never_moved_down_and_is_shed_after_every_ordinary_viewer() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 1e-4;
    // The newest viewer, of the heaviest room, is an edge's pull that
    // could go down a layer; two ordinary viewers in another room.
    let pull = ViewerLoad {
        down_pps: Some(100.0),
        edge: true,
        ..viewer(3, 0, 2000.0)
    };
    let mut vs = vec![viewer(1, 1, 300.0), viewer(2, 1, 300.0), pull];
    let mut g = Governor::default();
    // Behind, 500 pps over: the ordinary viewers are paused, not the pull.
    l.behind = true;
    l.load = 0.90;
    assert!(g.plan(t0, &l, &vs).is_empty());
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![Action::Pause(sid(2)), Action::Pause(sid(1))]
    );
    assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
    // Still over with every ordinary viewer paused: now the pull.
    for v in &mut vs[..2] {
        v.paused_since = Some(t0);
        v.resume_pps = Some(v.pps);
        v.pps = 0.0;
    }
    assert_eq!(g.plan(t0, &l, &vs), vec![Action::Pause(sid(3))]);
    assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
    // A paused pull is closed only once no ordinary viewer is left.
    vs[2].paused_since = Some(t0);
    vs[2].resume_pps = Some(2000.0);
    vs[2].pps = 0.0;
    vs.push(viewer(4, 1, 0.0)); // joined, no media yet
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![Action::Close(sid(2)), Action::Close(sid(1))]
    );
    vs.pop();
    assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
    let plan = g.plan(t0, &l, &vs);
    assert_eq!(plan.last(), Some(&Action::Close(sid(3))), "{plan:?}");
    // When load falls, the pull resumes first.
    let mut g = calm();
    l.load = 0.0;
    l.behind = false;
    assert_eq!(g.plan(t0, &l, &vs)[0], Action::Resume(sid(3)));
}

#[test]
fn no_shedding_while_admitted_sessions_start() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 1e-4;
    l.admit(t0, 100.0, Refusal::ViewerLoad).unwrap();
    l.load = 0.95; // their first seconds cost more: 1,000 pps over
    l.behind = true;
    let vs = vec![viewer(1, 0, 1200.0), viewer(2, 0, 1200.0)];
    let mut g = Governor::default();
    let t1 = t0 + Duration::from_secs(1);
    let t2 = t0 + Duration::from_secs(2);
    assert!(g.plan(t1, &l, &vs).is_empty());
    assert!(g.plan(t2, &l, &vs).is_empty());
    // Started: two samples over, then the newest is paused.
    assert!(g.plan(t0 + PENDING_FOR, &l, &vs).is_empty());
    let t4 = t0 + PENDING_FOR + Duration::from_secs(1);
    assert_eq!(g.plan(t4, &l, &vs), vec![Action::Pause(sid(2))]);
}

#[test]
fn a_saturated_loop_that_keeps_up_sheds_nothing_one_behind_sheds_what_it_skipped() {
    let t0 = Instant::now();
    let mut l = Load::new(DEFAULT_MAX_LOAD);
    l.cost_s = 1e-4;
    let vs = vec![
        viewer(1, 0, 300.0),
        viewer(2, 0, 300.0),
        viewer(3, 0, 300.0),
    ];
    let mut g = Governor::default();
    // 0.99 of a core, reading every datagram in time: nothing.
    l.load = 0.99;
    let keeping_up = LagWindow {
        max_delay: Duration::from_millis(30),
        min_delay: Some(Duration::ZERO),
    };
    l.on_lag(keeping_up, 0.0);
    assert!(!l.behind);
    for _ in 0..10 {
        assert!(g.plan(t0, &l, &vs).is_empty());
    }
    // Under the ceiling by the model, but the fan-out skipped 1,000
    // copies/s to catch up (a host taking time from the loop): two windows
    // in a row, then the newest viewers worth half of that are paused.
    l.load = 0.8;
    l.on_lag(keeping_up, 1000.0);
    assert!(l.behind);
    assert!(g.plan(t0, &l, &vs).is_empty());
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![Action::Pause(sid(3)), Action::Pause(sid(2))]
    );
    // Every read found a datagram over BEHIND_DELAY old: behind too.
    let never_caught_up = LagWindow {
        max_delay: Duration::from_millis(900),
        min_delay: Some(BEHIND_DELAY + Duration::from_millis(1)),
    };
    l.on_lag(never_caught_up, 0.0);
    assert!(l.behind);
    // With overload control off, nothing even then.
    let mut off = Load::new(f64::INFINITY);
    off.on_lag(never_caught_up, 500.0);
    let mut g = Governor::default();
    for _ in 0..5 {
        assert!(g.plan(t0, &off, &vs).is_empty());
    }
}

#[test]
fn pauses_the_heaviest_room_first() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 3.5e-4;
    l.behind = true;
    l.load = 0.92; // 200 pps over
                   // Room 0: one 550 pps viewer (the newest); room 1: two 300 pps viewers.
    let vs = vec![
        viewer(1, 1, 300.0),
        viewer(2, 1, 300.0),
        viewer(3, 0, 550.0),
    ];
    let mut g = Governor::default();
    assert!(g.plan(t0, &l, &vs).is_empty());
    assert_eq!(g.plan(t0, &l, &vs), vec![Action::Pause(sid(2))]);
}

#[test]
fn resumes_oldest_first_within_budget_then_lifts_caps() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.cost_s = 1e-5;
    let paused = |n: u64| ViewerLoad {
        paused_since: Some(t0),
        resume_pps: Some(500.0),
        ..viewer(n, 0, 0.0)
    };
    let vs = vec![
        paused(3),
        paused(1),
        paused(2),
        ViewerLoad {
            uncapped_pps: Some(800.0),
            ..viewer(4, 0, 300.0)
        },
    ];
    let mut g = Governor::default();
    // At 0.85 - 0.10 - 0.012 there is room for 1,200 pps: two resumes,
    // once the loop has kept up for RESUME_AFTER samples.
    l.load = 0.738;
    for _ in 1..RESUME_AFTER {
        assert!(g.plan(t0, &l, &vs).is_empty());
    }
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![Action::Resume(sid(1)), Action::Resume(sid(2))]
    );
    assert!(g.plan(t0, &l, &vs).is_empty(), "settling");
    // Plenty of room: every paused viewer, then the cap.
    l.load = 0.2;
    assert_eq!(
        g.plan(t0, &l, &vs),
        vec![
            Action::Resume(sid(1)),
            Action::Resume(sid(2)),
            Action::Resume(sid(3)),
            Action::Lift(sid(4))
        ]
    );
    // Between the resume level and the ceiling nothing happens.
    let mut g = Governor::default();
    l.load = 0.8;
    assert!(g.plan(t0, &l, &vs).is_empty());
    // Nor while the loop is behind, however low the model reads, nor in
    // the samples after it was.
    l.load = 0.2;
    l.behind = true;
    let mut g = calm();
    assert!(g.plan(t0, &l, &vs).is_empty());
    l.behind = false;
    for _ in 1..RESUME_AFTER {
        assert!(g.plan(t0, &l, &vs).is_empty());
    }
    assert!(!g.plan(t0, &l, &vs).is_empty());
}

/// A governor whose loop has kept up long enough to resume viewers.
fn calm() -> Governor {
    Governor {
        calm: RESUME_AFTER,
        ..Governor::default()
    }
}

#[test]
fn paused_too_long_under_load_is_closed() {
    let t0 = Instant::now();
    let mut l = Load::new(0.85);
    l.load = 0.8; // loaded but not over: no shedding, no resume
    let v = ViewerLoad {
        paused_since: Some(t0),
        resume_pps: Some(500.0),
        ..viewer(1, 0, 0.0)
    };
    let mut g = Governor::default();
    assert!(g
        .plan(t0 + Duration::from_secs(29), &l, std::slice::from_ref(&v))
        .is_empty());
    assert_eq!(
        g.plan(t0 + PAUSE_LIMIT, &l, &[v]),
        vec![Action::Close(sid(1))]
    );
}

/// A loop with `capacity` viewers' worth of fan-out per second and `n`
/// viewers, run in 5 ms steps from `t` for `secs`: the socket's backlog (in
/// seconds of ingress) grows while the fan-out serves more than the loop
/// carries and drains otherwise; each step reports it as the delay.
/// Returns (largest delay, mean viewers served over the last half).
fn run_loop(
    c: &mut Catchup,
    t: &mut Instant,
    backlog: &mut f64,
    n: usize,
    capacity: f64,
    secs: u32,
) -> (f64, f64) {
    let dt = 0.005;
    let steps = secs * 200;
    let (mut worst, mut served_sum) = (0.0f64, 0.0);
    for i in 0..steps {
        let serving = served(n, c.keep_fixed());
        *backlog = (*backlog + (serving as f64 / capacity - 1.0) * dt).max(0.0);
        *t += Duration::from_millis(5);
        c.on_delay(*t, Duration::from_secs_f64(*backlog));
        worst = worst.max(*backlog);
        if i >= steps / 2 {
            served_sum += serving as f64;
        }
    }
    (worst, served_sum / f64::from(steps - steps / 2))
}

#[test]
fn a_loop_that_keeps_up_serves_everyone() {
    let mut c = Catchup::default();
    let t0 = Instant::now();
    // Saturated: reads find datagrams 0-15 ms old, and a burst of joins
    // once a second holds ingress for 60 ms.
    for i in 0..2000u64 {
        let d = if i % 200 < 12 { 60 } else { i % 16 };
        c.on_delay(t0 + Duration::from_millis(5 * i), Duration::from_millis(d));
        assert_eq!(c.keep_fixed(), KEEP_ALL, "step {i}");
    }
    assert_eq!(c.cuts, 0);
    let w = c.take_window();
    assert_eq!(w.max_delay, Duration::from_millis(60));
    assert_eq!(w.min_delay, Some(Duration::ZERO));
    assert_eq!(c.take_window(), LagWindow::default());
    assert_eq!(served(800, KEEP_ALL), 800);
}

#[test]
fn a_loop_that_falls_behind_serves_the_oldest_it_can_carry_then_everyone_again() {
    let mut c = Catchup::default();
    let mut t = Instant::now();
    let mut backlog = 0.0;
    // 800 viewers on a loop that carries 400: the backlog stays bounded (a
    // fraction of a second, far from filling a socket buffer) and the
    // fan-out serves about what the loop carries (the delay swings between
    // CAUGHT_UP_DELAY and BEHIND_DELAY around it).
    let (worst, mean) = run_loop(&mut c, &mut t, &mut backlog, 800, 400.0, 10);
    assert!(worst < 0.25, "largest delay {worst} s");
    assert!((360.0..=420.0).contains(&mean), "mean served {mean}");
    assert!(c.keep() < 0.6 && c.cuts > 0, "{c:?}");
    let w = c.take_window();
    assert!(w.max_delay > BEHIND_DELAY, "{w:?}");
    // The newest are paused (500 left, of which 350 active, at the front):
    // the loop catches up and the fan-out serves everyone again.
    let (worst, _) = run_loop(&mut c, &mut t, &mut backlog, 350, 400.0, 3);
    assert!(worst < 0.25, "{worst}");
    assert_eq!(c.keep_fixed(), KEEP_ALL);
    assert!(backlog < CAUGHT_UP_DELAY.as_secs_f64());
}

#[test]
fn served_counts_the_oldest_share() {
    assert_eq!(served(800, KEEP_ALL / 2), 400);
    assert_eq!(served(3, KEEP_ALL / 2), 1);
    assert_eq!(served(10, 0), 0);
    assert_eq!(served(0, 12_345), 0);
    let mut c = Catchup::default();
    let t0 = Instant::now();
    // Behind and not draining: one cut per step, none between steps.
    let step = |n: u32| t0 + n * CATCHUP_STEP;
    let ms = Duration::from_millis;
    c.on_delay(t0, ms(150));
    assert!(!c.on_delay(t0 + ms(10), ms(160)));
    assert!(c.on_delay(step(1), ms(170)));
    assert!((c.keep() - CATCHUP_CUT).abs() < 1e-12);
    // The step after a cut still sees the work before it: no cut.
    assert!(!c.on_delay(step(2), ms(180)));
    // Draining fast (20 ms less in 20 ms): held.
    assert!(!c.on_delay(step(3), ms(160)));
    // Draining slowly (2 ms in 20 ms): cut again.
    assert!(c.on_delay(step(4), ms(158)));
    // Between caught-up and behind: held; caught up: raised.
    assert!(!c.on_delay(step(5), ms(50)));
    assert!(c.on_delay(step(6), ms(5)));
    let k = CATCHUP_CUT * CATCHUP_CUT + CATCHUP_RAISE;
    assert!((c.keep() - k).abs() < 1e-12, "{}", c.keep());
    assert_eq!(c.keep_fixed(), (k * f64::from(KEEP_ALL)) as u32);
    // Far behind (over twice BEHIND_DELAY): cut harder.
    assert!(c.on_delay(step(7), ms(250)));
    let k = k * CATCHUP_CUT * CATCHUP_CUT;
    assert!((c.keep() - k).abs() < 1e-12, "{}", c.keep());
    assert_eq!(c.cuts, 3);
    // Nothing read for 4 s, then a fresh datagram: all back.
    assert!(c.on_delay(step(7) + Duration::from_secs(4), Duration::ZERO));
    assert_eq!(c.keep_fixed(), KEEP_ALL);
}

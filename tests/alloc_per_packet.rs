//! Heap allocations on the forwarding path, counted by a global allocator.
//!
//! str0m itself allocates about 2 per received packet (the decrypted payload
//! `Arc` and a buffer) and 1 per sent packet (the encrypted datagram); wisp's
//! own fan-out must add nothing per packet on top of that.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::TestNet;
use str0m::media::MediaKind;
use str0m::rtp::{RtpWrite, SeqNo};
use wisp::sfu::Output;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated.
static HEAP: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        HEAP.fetch_add(l.size() as u64, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HEAP.fetch_sub(l.size() as u64, Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        HEAP.fetch_add(n as u64, Relaxed);
        HEAP.fetch_sub(l.size() as u64, Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The counters are process-wide: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn forwarding_allocates_only_what_str0m_does() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const VIEWERS: usize = 10;
    const PACKETS: u64 = 2000;
    let mut net = TestNet::new(77);
    net.media_on = false; // this test writes the publisher's packets itself
    let p = net.publish("alloc");
    let vs: Vec<usize> = (0..VIEWERS).map(|_| net.view("alloc")).collect();
    net.run_until(Duration::from_secs(5), |n| {
        n.connected(p) && vs.iter().all(|v| n.connected(*v))
    });

    // The publisher's datagrams, made before counting.
    let server = common::server_addr();
    let from = net.clients[p].addr;
    let datagrams = publisher_datagrams(&mut net, p, PACKETS);
    // Warm up the queues' capacity with the first quarter, then count.
    let warm = datagrams.len() / 4;
    let feed = |sfu: &mut wisp::sfu::Sfu, ds: &[(std::time::Instant, Vec<u8>)]| {
        for (at, d) in ds {
            sfu.handle_receive(*at, from, server, d);
            sfu.handle_timeout(*at);
            while let Output::Transmit(_) | Output::Record(_) = sfu.poll_output() {}
        }
    };
    feed(&mut net.sfu, &datagrams[..warm]);
    let before_stats = net.sfu.stats();
    let before = ALLOCS.load(Relaxed);
    feed(&mut net.sfu, &datagrams[warm..]);
    let allocs = ALLOCS.load(Relaxed) - before;
    let s = net.sfu.stats();
    let ingress = s.rtp_in - before_stats.rtp_in;
    let forwarded = s.rtp_forwarded - before_stats.rtp_forwarded;
    let out = s.datagrams_out - before_stats.datagrams_out;
    let per_ingress = allocs as f64 / ingress as f64;
    // str0m's own: ~2 per received packet + 1 per datagram it sends.
    let str0m_floor = 2.0 + out as f64 / ingress as f64;
    eprintln!(
        "{ingress} packets in, {forwarded} forwarded, {out} datagrams out: {allocs} allocations, \
         {per_ingress:.2} per packet in (str0m alone: ~{str0m_floor:.2})"
    );
    assert_eq!(forwarded, ingress * VIEWERS as u64);
    // A plain (non-simulcast) room is not paced by a bandwidth estimate: a
    // 16 Mbit/s stream goes out as fast as it comes in.
    assert!(out >= forwarded, "{out} datagrams for {forwarded} packets");
    assert!(
        per_ingress <= str0m_floor + 0.5,
        "wisp adds allocations per packet: {per_ingress:.2} > {str0m_floor:.2}"
    );
}

#[test]
fn relaying_between_workers_allocates_nothing_more() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const VIEWERS: usize = 10;
    const PACKETS: u64 = 2000;
    let mut net = TestNet::workers(79, 2, wisp::sfu::SfuConfig::default());
    net.media_on = false;
    let p = net.publish_on(0, "alloc");
    // One viewer at the home, the rest on worker 1 through the relay.
    let mut vs = vec![net.view_on(0, "alloc")];
    vs.extend((1..VIEWERS).map(|_| net.view_relayed(1, 0, "alloc")));
    net.run_until(Duration::from_secs(5), |n| {
        n.connected(p) && vs.iter().all(|v| n.connected(*v))
    });
    let server = common::server_addr();
    let from = net.clients[p].addr;
    let datagrams = publisher_datagrams(&mut net, p, PACKETS);
    // The home's relayed copies go straight to worker 1, as the loops'
    // queues would hand them over.
    let feed = |net: &mut TestNet, ds: &[(std::time::Instant, Vec<u8>)]| {
        for (at, d) in ds {
            net.sfu.handle_receive(*at, from, server, d);
            net.sfu.handle_timeout(*at);
            loop {
                match net.sfu.poll_output() {
                    Output::Relay { msg, .. } => net.core(1).handle_relay(*at, msg),
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
            net.core(1).handle_timeout(*at);
            while let Output::Transmit(_) | Output::Record(_) | Output::Relay { .. } =
                net.core(1).poll_output()
            {}
        }
    };
    let warm = datagrams.len() / 4;
    feed(&mut net, &datagrams[..warm]);
    let stats = |net: &TestNet| {
        let mut s = net.core_ref(0).stats();
        s.absorb(&net.core_ref(1).stats());
        s
    };
    let b = stats(&net);
    let before = ALLOCS.load(Relaxed);
    feed(&mut net, &datagrams[warm..]);
    let allocs = ALLOCS.load(Relaxed) - before;
    let s = stats(&net);
    let ingress = s.rtp_in - b.rtp_in;
    let forwarded = s.rtp_forwarded - b.rtp_forwarded;
    let out = s.datagrams_out - b.datagrams_out;
    let per_ingress = allocs as f64 / ingress as f64;
    let str0m_floor = 2.0 + out as f64 / ingress as f64;
    eprintln!(
        "relayed: {ingress} packets in, {forwarded} forwarded, {out} datagrams out: {allocs} \
         allocations, {per_ingress:.2} per packet in (str0m alone: ~{str0m_floor:.2})"
    );
    assert_eq!(forwarded, ingress * VIEWERS as u64);
    assert!(
        per_ingress <= str0m_floor + 0.5,
        "the relay adds allocations per packet: {per_ingress:.2} > {str0m_floor:.2}"
    );
}

/// Heap bytes held per idle, connected viewer session in the core, as the Rust
/// allocator sees them: 66 KiB, of which str0m's connected `Rtc` holds ~62 KiB
/// (RTX history slots 12.7, the `Rtc` struct 9.8, DTLS state 9.1, send streams
/// 7.2, RTCP queues 6.2, SDP state 4.7, SRTP scratch 4.1, fixed 2000-byte
/// buffers 3.9) and wisp ~4 KiB (the compressed offer 2). aws-lc's C
/// allocations (AEAD contexts, the DTLS key: ~6.3 KiB) bypass this allocator.
/// The target of issue 7 is 64 KiB: below it needs str0m to allocate its RTX
/// slots and scratch buffers on first use; until then this bound catches
/// regressions.
#[test]
fn idle_viewer_session_memory() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 50;
    let mut net = TestNet::new(78);
    net.media_on = false;
    let start_bytes = HEAP.load(Relaxed);
    let vs: Vec<usize> = (0..N).map(|_| net.view("idle")).collect();
    net.run_until(Duration::from_secs(5), |n| {
        vs.iter().all(|v| n.connected(*v))
    });
    net.run_for(Duration::from_secs(2));
    // The client peers live in the test: drop them, then what is left is the core's.
    drop(std::mem::take(&mut net.clients));
    let per_session = (HEAP.load(Relaxed) as i64 - start_bytes as i64) / N as i64;
    eprintln!(
        "{N} idle viewers: the core holds {} KiB of heap per session",
        per_session / 1024
    );
    assert_eq!(net.sfu.counts().sessions, N);
    assert!(
        per_session < 68 * 1024,
        "{per_session} bytes per idle session"
    );
}

/// `n` of publisher `p`'s video datagrams to the server (one 1,000 B VP8
/// frame each, 0.5 ms apart; the first a keyframe), made before counting,
/// each with the instant it is due.
fn publisher_datagrams(net: &mut TestNet, p: usize, n: u64) -> Vec<(std::time::Instant, Vec<u8>)> {
    let server = common::server_addr();
    let mut datagrams = vec![];
    let mut now = net.now;
    let c = &mut net.clients[p];
    let (mid, _) = *c.mids.iter().find(|(_, k)| *k == MediaKind::Video).unwrap();
    let pt = c.rtc.media(mid).unwrap().remote_pts()[0];
    for i in 0..n {
        now += Duration::from_micros(500);
        let mut payload = vec![0u8; 1000];
        payload[0] = 0x10;
        payload[1] = if i == 0 { 0 } else { 1 };
        let mut api = c.rtc.direct_api();
        api.stream_tx_by_mid(mid, None).unwrap().write_rtp(
            RtpWrite::new(pt, SeqNo::from(50_000 + i), (i * 100) as u32, now, payload).marker(true),
        );
        let _ = c.rtc.handle_input(str0m::Input::Timeout(now));
        while let Ok(o) = c.rtc.poll_output() {
            match o {
                str0m::Output::Transmit(t) if t.destination == server => {
                    datagrams.push((now, t.contents.to_vec()))
                }
                str0m::Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    datagrams
}

//! The `wisp` binary: read the configuration, bind the sockets, start the HTTP
//! thread and run the event loop.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp::auth::Auth;
use wisp::channel::{CoreLink, CoreRequest};
use wisp::cluster::{ClusterNode, RelayHandle};
use wisp::config::{Config, ConfigOutcome};
use wisp::event_loop::{EventLoop, WAKER};
use wisp::http::HttpConfig;
use wisp::record::RecorderConfig;
use wisp::sfu::Command;
use wisp::sfu::{Sfu, SfuConfig};
use wisp::upstream_udp::UpstreamSockets;

fn main() -> ExitCode {
    let cfg = match Config::from_args_and_env(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(ConfigOutcome::Run(c)) => c,
        Ok(ConfigOutcome::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wisp: {e}\nTry `wisp --help`.");
            return ExitCode::from(2);
        }
    };
    // A bad tokens file is a configuration error, like a bad flag.
    let auth = match cfg.auth() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wisp: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(cfg, auth) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Recording events queued between the loop and the recorder thread: about
/// 2 s of a 2,000 packet/s publisher; beyond it packets are dropped and counted.
const RECORD_QUEUE: usize = 4096;

fn run(cfg: Config, auth: Auth) -> Result<(), Box<dyn std::error::Error>> {
    str0m::crypto::from_feature_flags().install_process_default();

    let udp = std::net::UdpSocket::bind(cfg.udp_addr)
        .map_err(|e| format!("cannot bind UDP {}: {e}", cfg.udp_addr))?;
    let udp_port = udp.local_addr()?.port();
    let mut candidates = cfg.advertised_addrs();
    for c in &mut candidates {
        if c.port() == 0 {
            c.set_port(udp_port);
        }
    }

    // Cluster mode: each upstream (an edge's pull) on a socket of its own.
    let upstream_sockets = match &cfg.cluster {
        Some(_) => Some(UpstreamSockets::bind(
            cfg.udp_addr.ip(),
            candidates.first().map_or(cfg.udp_addr.ip(), |c| c.ip()),
            wisp::cluster::relay::UPSTREAM_SOCKETS,
        )?),
        None => None,
    };

    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| "no OS randomness")?;
    let now = Instant::now();
    let sfu = Sfu::new(
        SfuConfig {
            candidates: candidates.clone(),
            max_rooms: cfg.max_rooms,
            max_sessions: cfg.max_sessions,
            max_load: cfg.max_load.0,
            seed,
            record_default: cfg.record_dir.is_some(),
            recording_available: cfg.record_dir.is_some(),
            upstream_addrs: upstream_sockets
                .as_ref()
                .map(UpstreamSockets::addrs)
                .unwrap_or_default(),
            ..SfuConfig::default()
        },
        now,
    );

    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
    // Bounded: a full queue answers 503 at the HTTP side instead of piling up.
    let (tx, rx) = crossbeam_channel::bounded(64);
    // The front owns the public socket (timeouts, connection cap); tiny_http
    // serves it through a private Unix socket.
    let (server, front) = wisp::http::bind_fronted(cfg.http_addr, cfg.tls())?;
    let http_addr = front.local_addr()?;
    if auth.is_open() {
        log::warn!("no tokens configured: anyone who reaches the HTTP port can publish and view");
    }
    let mut http_cfg = HttpConfig::new(cfg.ice_server_links()).with_auth(auth);
    // Cluster mode (issue 15): the directory and its reporter, on their own threads.
    let cluster = match &cfg.cluster {
        Some(c) => {
            let link = || CoreLink::new(tx.clone(), waker.clone(), Duration::from_secs(2));
            let token = c.cluster_token.as_ref().map(|t| t.expose().to_string());
            let relay = Arc::new(RelayHandle::start(link(), token, &c.node_url)?);
            let node = ClusterNode::start(c, cfg.max_sessions, link(), Some(relay))?;
            http_cfg = http_cfg.with_cluster(node.clone());
            Some(node)
        }
        None => None,
    };

    // The recorder thread, fed by a bounded queue; it asks for keyframes
    // through the same command channel as the HTTP thread.
    let recorder = match &cfg.record_dir {
        Some(dir) => {
            let (rec_tx, rec_rx) = crossbeam_channel::bounded(RECORD_QUEUE);
            let (cmd, wake) = (tx.clone(), waker.clone());
            let keyframe = move |room| {
                let (reply, _) = crossbeam_channel::bounded(1);
                let req = CoreRequest {
                    command: Command::RequestKeyframe { room },
                    reply,
                };
                if cmd.try_send(req).is_ok() {
                    let _ = wake.wake();
                }
            };
            let (handle, stats) =
                wisp::record::spawn(RecorderConfig::new(dir), rec_rx, keyframe)
                    .map_err(|e| format!("cannot record into {}: {e}", dir.display()))?;
            http_cfg = http_cfg.with_recorder(stats.clone());
            log::info!("recording every published track into {}", dir.display());
            Some((rec_tx, stats, handle))
        }
        None => None,
    };
    let waker_for_signals = waker.clone();
    front.spawn(http_cfg.counters.clone())?;
    wisp::http::spawn(server, http_cfg, tx, waker)?;

    let list: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
    log::info!(
        "wisp listening: {}={http_addr} udp={} candidates={}",
        if cfg.tls().is_some() { "https" } else { "http" },
        udp.local_addr()?,
        list.join(",")
    );
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(stop.clone(), waker_for_signals)?;
    let mut event_loop = EventLoop::new(poll, udp, rx, sfu, stop)?;
    if let Some(relay) = cluster.as_ref().and_then(|n| n.relay()) {
        event_loop.set_upstream_handler(move |ev| relay.upstream_event(ev));
    }
    if let Some(sockets) = upstream_sockets {
        event_loop.set_upstream_sockets(sockets)?;
    }
    let recorder_thread = recorder.map(|(tx, stats, handle)| {
        event_loop.set_recorder(tx, stats);
        handle
    });
    event_loop.run()?;
    // Dropping the loop drops the recorder's sender: it finalises every file and ends.
    drop(event_loop);
    if let Some(node) = cluster {
        // Every session is closed: release this node's claims and record.
        node.shutdown();
    }
    if let Some(handle) = recorder_thread {
        let deadline = Instant::now() + std::time::Duration::from_millis(1500);
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            log::warn!("recorder did not finish in time; files are valid up to their last flush");
        }
    }
    log::info!("wisp stopped: every session closed");
    Ok(())
}

/// SIGTERM or SIGINT: stop the loop (which closes every session and finalises
/// recordings). A second signal exits at once.
fn spawn_signal_thread(stop: Arc<AtomicBool>, waker: Arc<mio::Waker>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    log::warn!("second signal {sig}: exiting now");
                    std::process::exit(130);
                }
                log::info!("signal {sig}: shutting down");
                let _ = waker.wake();
            }
        })?;
    Ok(())
}

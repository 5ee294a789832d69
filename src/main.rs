//! The `wisp` binary: read the configuration, bind the sockets, start the HTTP
//! thread and run the event loops (`src/workers.rs`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wisp::auth::Auth;
use wisp::channel::CoreLink;
use wisp::cluster::{ClusterNode, RelayHandle};
use wisp::config::{Config, ConfigOutcome};
use wisp::http::HttpConfig;
use wisp::record::RecorderConfig;
use wisp::sfu::SfuConfig;
use wisp::upstream_udp::UpstreamSockets;
use wisp::workers::{Configure, Dispatcher, Plan};

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
    // Milliseconds: the cluster's hand-offs (directory, relay, handshake)
    // are told apart in the log by their times.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
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

    let n = cfg.workers.resolve();
    let mut plan = Plan::bind(
        n,
        cfg.udp_addr,
        &cfg.advertised_addrs(),
        wisp::http::PoolConfig::default().reply_timeout,
    )?;
    let random = || -> Result<[u8; 32], &'static str> {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| "no OS randomness")?;
        Ok(b)
    };
    let key = random()?;
    let seeds = (0..n).map(|_| random()).collect::<Result<Vec<_>, _>>()?;
    let base = SfuConfig {
        max_rooms: cfg.max_rooms,
        max_sessions: cfg.max_sessions,
        max_load: cfg.max_load.0,
        record_default: cfg.record_dir.is_some(),
        recording_available: cfg.record_dir.is_some(),
        // One certificate for every worker's sessions, as for one worker's.
        dtls_cert: Some(wisp::sfu::dtls::new_dtls_cert()),
        ..SfuConfig::default()
    };
    let dispatcher = Arc::new(plan.dispatcher(key, cfg.max_sessions, cfg.max_rooms));

    // The front owns the public socket (timeouts, connection cap); tiny_http
    // serves it through a private Unix socket.
    let (server, front) = wisp::http::bind_fronted(cfg.http_addr, cfg.tls())?;
    let http_addr = front.local_addr()?;
    if auth.is_open() {
        log::warn!("no tokens configured: anyone who reaches the HTTP port can publish and view");
    }
    let mut http_cfg = HttpConfig::new(cfg.ice_server_links()).with_auth(auth);
    // Cluster mode (issue 15): the directory, its reporter and the relay
    // manager on their own threads; each worker's upstreams on sockets of
    // their own.
    let cluster = match &cfg.cluster {
        Some(c) => {
            let link = CoreLink::workers(dispatcher.clone());
            let token = c.cluster_token.as_ref().map(|t| t.expose().to_string());
            let relay = Arc::new(RelayHandle::start(link.clone(), token, &c.node_url)?);
            let node = ClusterNode::start(c, cfg.max_sessions, link, Some(relay.clone()))?;
            http_cfg = http_cfg.with_cluster(node.clone());
            let mut sockets = Vec::with_capacity(n);
            for i in 0..n {
                let ip = cfg.udp_addr.ip();
                let advertised = plan.candidates()[i].first().map_or(ip, |c| c.ip());
                let s = UpstreamSockets::bind(ip, advertised, c.upstream_sockets)?;
                plan.set_upstream_addrs(i, s.addrs());
                sockets.push(Some(s));
            }
            let sockets = Mutex::new(sockets);
            let configure: Configure = Arc::new(move |i, lp| {
                let mine = sockets.lock().unwrap_or_else(|e| e.into_inner())[i].take();
                if let Some(s) = mine {
                    lp.set_upstream_sockets(s)?;
                }
                let relay = relay.clone();
                lp.set_upstream_handler(move |ev| relay.upstream_event(ev));
                Ok(())
            });
            Some((node, configure))
        }
        None => None,
    };

    // The recorder thread, fed by a bounded queue from every worker; it asks
    // the room's home worker for keyframes.
    let recorder = match &cfg.record_dir {
        Some(dir) => {
            let (rec_tx, rec_rx) = crossbeam_channel::bounded(RECORD_QUEUE);
            let d = dispatcher.clone();
            let keyframe = move |room| d.request_keyframe(room);
            let (handle, stats) =
                wisp::record::spawn(RecorderConfig::new(dir), rec_rx, keyframe)
                    .map_err(|e| format!("cannot record into {}: {e}", dir.display()))?;
            http_cfg = http_cfg.with_recorder(stats.clone());
            log::info!("recording every published track into {}", dir.display());
            Some((rec_tx, stats, handle))
        }
        None => None,
    };
    front.spawn(http_cfg.counters.clone())?;
    wisp::http::spawn_link(
        server,
        http_cfg,
        CoreLink::workers(dispatcher.clone()),
        wisp::http::PoolConfig::default(),
    )?;

    let udp: Vec<String> = plan.local_addrs().iter().map(|a| a.to_string()).collect();
    let list: Vec<String> = plan
        .candidates()
        .iter()
        .flatten()
        .map(|c| c.to_string())
        .collect();
    log::info!(
        "wisp listening: {}={http_addr} udp={} candidates={} workers={n}",
        if cfg.tls().is_some() { "https" } else { "http" },
        udp.join(","),
        list.join(",")
    );
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(stop.clone(), dispatcher.clone())?;
    let (rec_tx, recorder_thread) = match recorder {
        Some((tx, stats, handle)) => (Some((tx, stats)), Some(handle)),
        None => (None, None),
    };
    let configure = cluster.as_ref().map(|(_, c)| c.clone());
    let loops = plan.start(base, key, seeds, stop.clone(), rec_tx, configure)?;
    let mut result = Ok(());
    for h in loops {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One loop failed: stop the others too.
                stop.store(true, Ordering::SeqCst);
                dispatcher.wake_all();
                result = Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                dispatcher.wake_all();
                result = Err(std::io::Error::other("a worker panicked"));
            }
        }
    }
    if let Some((node, _)) = cluster {
        // Every session is closed: release this node's claims and record.
        node.shutdown();
    }
    // Every loop is gone, and with it every sender of the recorder's queue:
    // the recorder finalises every file and ends.
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
    result?;
    log::info!("wisp stopped: every session closed");
    Ok(())
}

/// SIGTERM or SIGINT: stop the loop (which closes every session and finalises
/// recordings). A second signal exits at once.
fn spawn_signal_thread(stop: Arc<AtomicBool>, workers: Arc<Dispatcher>) -> std::io::Result<()> {
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
                workers.wake_all();
            }
        })?;
    Ok(())
}

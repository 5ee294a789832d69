//! Runtime configuration: command-line flags over environment variables over defaults.
//!
//! Parsing is pure ([`Config::from_args_and_env`] takes the arguments and an
//! environment lookup), so it is unit-tested without touching the process
//! environment. Interface discovery for [`Config::advertised_addrs`] reads
//! `/proc` and falls back to loopback.
//!
//! This file holds the [`Config`] struct and the parse; `opts.rs` the table of
//! settings (flag, variable, default, help, parser) and the `--help` text;
//! `net.rs` the advertised addresses and the ICE-server `Link` values.

mod net;
mod opts;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::auth::{self, Auth, Token};
use crate::cluster::config::{ClusterConfig, ClusterSettings};
pub use opts::help_text;
use opts::OPTS;

/// Default STUN server handed to clients in `Link` headers.
pub const DEFAULT_STUN_URL: &str = "stun:stun.l.google.com:19302";
/// Default cap on the number of rooms.
pub const DEFAULT_MAX_ROOMS: usize = 1000;
/// Default cap on the number of sessions (publishers plus viewers).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// Everything wisp reads from its flags and environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Address of the HTTP (WHIP/WHEP/API) listener.
    pub http_addr: SocketAddr,
    /// Address of the UDP media socket (worker i: this port + i; port 0:
    /// each worker an ephemeral port).
    pub udp_addr: SocketAddr,
    /// How many event loops (workers) to run.
    pub workers: Workers,
    /// IPs to advertise as host candidates instead of the discovered ones (NAT, containers).
    pub public_ips: Vec<IpAddr>,
    /// `stun:`/`stuns:` URLs handed to clients; empty means none.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs handed to clients with the credentials below.
    pub turn_urls: Vec<String>,
    /// TURN username; required when `turn_urls` is not empty.
    pub turn_username: Option<String>,
    /// TURN password; required when `turn_urls` is not empty. Redacted in `Debug`.
    pub turn_credential: Option<String>,
    /// Maximum number of rooms.
    pub max_rooms: usize,
    /// Maximum number of sessions (publishers plus viewers).
    pub max_sessions: usize,
    /// Ceiling on the event loop's predicted busy ratio (overload control).
    pub max_load: MaxLoad,
    /// Where recordings go; `None`: recording off unless a publish asks (then it has nowhere to go).
    pub record_dir: Option<std::path::PathBuf>,
    /// Server-wide WHIP token; `None` leaves publishing open. Redacted in `Debug`.
    pub publish_token: Option<Token>,
    /// Server-wide WHEP token; `None` leaves viewing open. Redacted in `Debug`.
    pub view_token: Option<Token>,
    /// Admin token (room API, `/metrics`; also satisfies publish and view). Redacted in `Debug`.
    pub admin_token: Option<Token>,
    /// JSON file of per-room tokens, read by [`Config::auth`].
    pub tokens_file: Option<PathBuf>,
    /// PEM certificate chain; with `tls_key`, HTTP is served over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8 or RSA) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The cluster settings as given (src/cluster/config.rs checks them).
    pub cluster_settings: ClusterSettings,
    /// Cluster mode, resolved from `cluster_settings`; `None`: single node.
    pub cluster: Option<ClusterConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("udp_addr", &self.udp_addr)
            .field("workers", &self.workers)
            .field("public_ips", &self.public_ips)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_username", &self.turn_username)
            .field(
                "turn_credential",
                &self.turn_credential.as_ref().map(|_| "<redacted>"),
            )
            .field("max_rooms", &self.max_rooms)
            .field("max_sessions", &self.max_sessions)
            .field("max_load", &self.max_load.0)
            .field("record_dir", &self.record_dir)
            .field("publish_token", &self.publish_token)
            .field("view_token", &self.view_token)
            .field("admin_token", &self.admin_token)
            .field("tokens_file", &self.tokens_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 8189)),
            workers: Workers::Count(1),
            public_ips: Vec::new(),
            stun_urls: vec![DEFAULT_STUN_URL.to_string()],
            turn_urls: Vec::new(),
            turn_username: None,
            turn_credential: None,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_load: MaxLoad(crate::sfu::overload::DEFAULT_MAX_LOAD),
            record_dir: None,
            publish_token: None,
            view_token: None,
            admin_token: None,
            tokens_file: None,
            tls_cert: None,
            tls_key: None,
            cluster_settings: ClusterSettings::default(),
            cluster: None,
        }
    }
}

/// What the command line asked for.
// Built once at startup: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// Start the server with this configuration.
    Run(Config),
    /// `-h`/`--help`: print this text to stdout and exit 0.
    Help(String),
}

impl Config {
    /// Parse `args` (the arguments WITHOUT the program name, e.g.
    /// `std::env::args().skip(1)`) over the environment looked up by `env`.
    ///
    /// Flags override environment variables, which override the defaults.
    /// Both `--flag value` and `--flag=value` are accepted. `-h`/`--help`
    /// anywhere yields [`ConfigOutcome::Help`]. Unknown flags, stray
    /// positional arguments, missing values and invalid values are an `Err`
    /// with a one-line message naming the flag or variable.
    pub fn from_args_and_env(
        args: impl Iterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConfigOutcome, String> {
        // Raw values, indexed like OPTS: (source description, text).
        let mut raw: Vec<Option<(String, String)>> = OPTS
            .iter()
            .map(|o| env(o.env).map(|v| (o.env.to_string(), v)))
            .collect();

        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(ConfigOutcome::Help(help_text()));
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let Some(idx) = OPTS.iter().position(|o| o.flag == name) else {
                if name.starts_with('-') {
                    return Err(format!("unknown flag {name:?} (see --help)"));
                }
                return Err(format!("unexpected argument {name:?} (see --help)"));
            };
            let value = match inline {
                Some(v) => v,
                None => match args.next() {
                    Some(v) => v,
                    None => return Err(format!("flag {name} needs a value")),
                },
            };
            raw[idx] = Some((name, value));
        }

        let mut cfg = Config::default();
        for (o, r) in OPTS.iter().zip(raw) {
            let Some((src, v)) = r else { continue };
            (o.set)(&mut cfg, &v).map_err(|why| {
                if o.secret {
                    // Never echo a token or a password in an error message.
                    format!("invalid {src} value: {why}")
                } else {
                    format!("invalid {src} value {v:?}: {why}")
                }
            })?;
        }

        if !cfg.turn_urls.is_empty()
            && (cfg.turn_username.is_none() || cfg.turn_credential.is_none())
        {
            return Err(
                "TURN URLs need WISP_TURN_USERNAME and WISP_TURN_CREDENTIAL (or their flags)"
                    .to_string(),
            );
        }
        if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
            return Err(
                "HTTPS needs both WISP_TLS_CERT and WISP_TLS_KEY (or their flags)".to_string(),
            );
        }
        let any_token = cfg.publish_token.is_some()
            || cfg.view_token.is_some()
            || cfg.admin_token.is_some()
            || cfg.tokens_file.is_some();
        cfg.cluster = cfg.cluster_settings.resolve(any_token)?;
        Ok(ConfigOutcome::Run(cfg))
    }

    /// The tokens: the server-wide ones plus the tokens file, read now.
    /// A missing or malformed file is an error naming the file (never a token).
    pub fn auth(&self) -> Result<Auth, String> {
        let auth = Auth::new(
            self.publish_token.clone(),
            self.view_token.clone(),
            self.admin_token.clone(),
        );
        match &self.tokens_file {
            Some(p) => Ok(auth.with_rooms(auth::load_tokens_file(p)?)),
            None => Ok(auth),
        }
    }

    /// The TLS certificate and key paths, when HTTPS is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

/// `WISP_MAX_LOAD`: a share of one core in (0, 1], or `off` (infinite).
#[derive(Debug, Clone, Copy)]
pub struct MaxLoad(pub f64);

impl PartialEq for MaxLoad {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for MaxLoad {}

impl MaxLoad {
    /// Parse `off` or a number in (0, 1].
    pub fn parse(v: &str) -> Result<MaxLoad, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(MaxLoad(f64::INFINITY));
        }
        match v.parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 1.0 => Ok(MaxLoad(x)),
            Ok(_) => Err("must be in (0, 1] (a share of one core) or \"off\"".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Most workers `WISP_WORKERS` accepts (UDP ports and threads per process).
pub const MAX_WORKERS: usize = 256;

/// `WISP_WORKERS`: a number of event loops, or one per CPU this process
/// may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Exactly this many (1..=[`MAX_WORKERS`]).
    Count(usize),
    /// One per CPU in the process's affinity mask.
    Auto,
}

impl Workers {
    /// Parse `auto` or a number in 1..=[`MAX_WORKERS`].
    pub fn parse(v: &str) -> Result<Workers, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("auto") {
            return Ok(Workers::Auto);
        }
        match v.parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
            Ok(_) => Err(format!("must be 1 to {MAX_WORKERS}, or \"auto\"")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The number of workers. `Auto` counts the CPUs of the process's
    /// affinity mask: `std::thread::available_parallelism` reads
    /// `sched_getaffinity` (and cgroup CPU quotas) on Linux; 1 if unknown.
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS),
        }
    }
}

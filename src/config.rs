//! Runtime configuration: command-line flags over environment variables over defaults.
//!
//! Parsing is pure ([`Config::from_args_and_env`] takes the arguments and an
//! environment lookup), so it is unit-tested without touching the process
//! environment. Interface discovery for [`Config::advertised_addrs`] reads
//! `/proc` and falls back to loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::auth::{self, Auth, Token};

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
    /// Address of the single UDP media socket.
    pub udp_addr: SocketAddr,
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
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("udp_addr", &self.udp_addr)
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
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 8189)),
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
        }
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

fn parse_max_load(v: &str) -> Result<MaxLoad, String> {
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

/// One setting: its flag, its environment variable and how it is stored.
struct Opt {
    flag: &'static str,
    env: &'static str,
    default: &'static str,
    help: &'static str,
}

const OPTS: [Opt; 17] = [
    Opt {
        flag: "--http-addr",
        env: "WISP_HTTP_ADDR",
        default: "0.0.0.0:8080",
        help: "HTTP listen address (WHIP, WHEP, room API)",
    },
    Opt {
        flag: "--udp-addr",
        env: "WISP_UDP_ADDR",
        default: "0.0.0.0:8189",
        help: "UDP media socket address (one port for all sessions)",
    },
    Opt {
        flag: "--public-ips",
        env: "WISP_PUBLIC_IPS",
        default: "",
        help: "comma-separated IPs advertised as host candidates (default: discovered)",
    },
    Opt {
        flag: "--stun-urls",
        env: "WISP_STUN_URLS",
        default: DEFAULT_STUN_URL,
        help: "comma-separated STUN URLs sent to clients; empty for none",
    },
    Opt {
        flag: "--turn-urls",
        env: "WISP_TURN_URLS",
        default: "",
        help: "comma-separated TURN URLs sent to clients (needs username and credential)",
    },
    Opt {
        flag: "--turn-username",
        env: "WISP_TURN_USERNAME",
        default: "",
        help: "TURN username",
    },
    Opt {
        flag: "--turn-credential",
        env: "WISP_TURN_CREDENTIAL",
        default: "",
        help: "TURN password (prefer the environment variable: flags show up in ps)",
    },
    Opt {
        flag: "--max-rooms",
        env: "WISP_MAX_ROOMS",
        default: "1000",
        help: "maximum number of rooms",
    },
    Opt {
        flag: "--max-sessions",
        env: "WISP_MAX_SESSIONS",
        default: "10000",
        help: "maximum number of sessions (publishers plus viewers)",
    },
    Opt {
        flag: "--max-load",
        env: "WISP_MAX_LOAD",
        default: "0.85",
        help: "refuse sessions (503) and shed viewers above this predicted share of one core; \"off\" to disable",
    },
    Opt {
        flag: "--publish-token",
        env: "WISP_PUBLISH_TOKEN",
        default: "",
        help: "Bearer token for WHIP (publishing); unset = open (prefer the variable)",
    },
    Opt {
        flag: "--view-token",
        env: "WISP_VIEW_TOKEN",
        default: "",
        help: "Bearer token for WHEP (viewing); unset = open (prefer the variable)",
    },
    Opt {
        flag: "--admin-token",
        env: "WISP_ADMIN_TOKEN",
        default: "",
        help: "Bearer token for /api/rooms and /metrics, also valid for publish and view",
    },
    Opt {
        flag: "--tokens-file",
        env: "WISP_TOKENS_FILE",
        default: "",
        help: "JSON per-room tokens {\"room\": {\"publish\": \"..\", \"view\": \"..\"}}",
    },
    Opt {
        flag: "--tls-cert",
        env: "WISP_TLS_CERT",
        default: "",
        help: "PEM certificate chain: serve HTTPS (needs --tls-key)",
    },
    Opt {
        flag: "--tls-key",
        env: "WISP_TLS_KEY",
        default: "",
        help: "PEM private key (PKCS#8 or RSA) for --tls-cert",
    },
    Opt {
        flag: "--record-dir",
        env: "WISP_RECORD_DIR",
        default: "",
        help:
            "record every published track into this directory (?record=0 on a WHIP POST opts out)",
    },
];

/// The `--help` text: every flag, its environment variable and its default.
pub fn help_text() -> String {
    let mut s = String::from(
        "wisp: a WebRTC SFU (WHIP in, WHEP out, one UDP port)\n\n\
         Usage: wisp [OPTIONS]\n\n\
         Options (a flag overrides its environment variable; `--flag value` or `--flag=value`):\n",
    );
    for o in &OPTS {
        let default = if o.default.is_empty() {
            "(none)".to_string()
        } else {
            o.default.to_string()
        };
        s.push_str(&format!(
            "  {:<18} {:<21} {}\n  {:<40} default: {}\n",
            o.flag, o.env, o.help, "", default
        ));
    }
    s.push_str(
        "  -h, --help                               print this help and exit\n\n\
         Auth: a role with no token is open. Clients send `Authorization: Bearer TOKEN`.\n\
         A room in the tokens file overrides the server-wide token of that role there.\n\
         Logging: set RUST_LOG (e.g. RUST_LOG=info, RUST_LOG=wisp=debug).\n",
    );
    s
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
            let err = |why: String| format!("invalid {src} value {v:?}: {why}");
            match o.flag {
                "--http-addr" => {
                    cfg.http_addr = v.trim().parse().map_err(|e| err(format!("{e}")))?
                }
                "--udp-addr" => cfg.udp_addr = v.trim().parse().map_err(|e| err(format!("{e}")))?,
                "--public-ips" => {
                    cfg.public_ips = split_list(&v)
                        .map(|s| s.parse::<IpAddr>().map_err(|e| err(format!("{s:?}: {e}"))))
                        .collect::<Result<_, _>>()?
                }
                "--stun-urls" => {
                    cfg.stun_urls = parse_urls(&v, &["stun:", "stuns:"]).map_err(err)?
                }
                "--turn-urls" => {
                    cfg.turn_urls = parse_urls(&v, &["turn:", "turns:"]).map_err(err)?
                }
                "--turn-username" => cfg.turn_username = parse_secret(&v).map_err(err)?,
                "--turn-credential" => {
                    // Never echo the credential in an error message.
                    cfg.turn_credential =
                        parse_secret(&v).map_err(|why| format!("invalid {src} value: {why}"))?
                }
                "--max-rooms" => cfg.max_rooms = parse_count(&v).map_err(err)?,
                "--max-sessions" => cfg.max_sessions = parse_count(&v).map_err(err)?,
                "--max-load" => cfg.max_load = parse_max_load(&v).map_err(err)?,
                "--publish-token" | "--view-token" | "--admin-token" => {
                    // Never echo a token in an error message.
                    let t = parse_token(&v).map_err(|why| format!("invalid {src} value: {why}"))?;
                    match o.flag {
                        "--publish-token" => cfg.publish_token = t,
                        "--view-token" => cfg.view_token = t,
                        _ => cfg.admin_token = t,
                    }
                }
                "--tokens-file" => cfg.tokens_file = parse_path(&v),
                "--tls-cert" => cfg.tls_cert = parse_path(&v),
                "--tls-key" => cfg.tls_key = parse_path(&v),
                "--record-dir" => cfg.record_dir = parse_path(&v),
                _ => unreachable!("every OPTS entry is handled"),
            }
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

    /// The host-candidate addresses to advertise, all with the UDP port.
    ///
    /// `public_ips` if set; else `udp_addr`'s IP if it is not unspecified;
    /// else the machine's interface addresses of the same family as
    /// `udp_addr` (IPv4 from `/proc/net/fib_trie`, IPv6 from
    /// `/proc/net/if_inet6` without link-local), non-loopback first, loopback
    /// last, without duplicates; `127.0.0.1` if nothing is found.
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        let fib = std::fs::read_to_string("/proc/net/fib_trie").ok();
        let inet6 = std::fs::read_to_string("/proc/net/if_inet6").ok();
        advertised_from(
            &self.public_ips,
            self.udp_addr,
            fib.as_deref(),
            inet6.as_deref(),
        )
    }

    /// One `Link` header value per ICE server, STUN first, then TURN with
    /// quoted, escaped credentials (`credential-type="password"`).
    pub fn ice_server_links(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stun_urls
            .iter()
            .map(|u| format!("<{u}>; rel=\"ice-server\""))
            .collect();
        if let (Some(user), Some(cred)) = (&self.turn_username, &self.turn_credential) {
            for u in &self.turn_urls {
                out.push(format!(
                    "<{u}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; \
                     credential-type=\"password\"",
                    quote_escape(user),
                    quote_escape(cred)
                ));
            }
        }
        out
    }
}

/// Items of a comma-separated list, trimmed, empty items skipped.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A list of ICE server URLs with one of `schemes`; safe to put inside `<...>`
/// in a header (printable ASCII, no spaces, `<`, `>`, `"` or `,`).
fn parse_urls(v: &str, schemes: &[&str]) -> Result<Vec<String>, String> {
    split_list(v)
        .map(|u| {
            if !schemes
                .iter()
                .any(|s| u.len() > s.len() && u[..s.len()].eq_ignore_ascii_case(s))
            {
                return Err(format!("{u:?} must start with {}", schemes.join(" or ")));
            }
            if !u
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b','))
            {
                return Err(format!(
                    "{u:?} has a character not allowed in a Link header"
                ));
            }
            Ok(u.to_string())
        })
        .collect()
}

/// A username or password: empty means unset; must be printable ASCII (it goes into a header).
fn parse_secret(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if !v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err("only printable ASCII is allowed".to_string());
    }
    Ok(Some(v.to_string()))
}

/// A token: empty means unset.
fn parse_token(v: &str) -> Result<Option<Token>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    Token::new(v).map(Some)
}

/// A file path: empty means unset.
fn parse_path(v: &str) -> Option<PathBuf> {
    (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()))
}

fn parse_count(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Escape `\` and `"` for a quoted-string header parameter.
fn quote_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// [`Config::advertised_addrs`] with the `/proc` files passed in (for tests).
fn advertised_from(
    public_ips: &[IpAddr],
    udp_addr: SocketAddr,
    fib_trie: Option<&str>,
    if_inet6: Option<&str>,
) -> Vec<SocketAddr> {
    let port = udp_addr.port();
    let ips: Vec<IpAddr> = if !public_ips.is_empty() {
        dedup(public_ips.iter().copied())
    } else if !udp_addr.ip().is_unspecified() {
        vec![udp_addr.ip()]
    } else {
        let found: Vec<IpAddr> = match udp_addr.ip() {
            IpAddr::V4(_) => fib_trie
                .map(parse_fib_trie)
                .unwrap_or_default()
                .into_iter()
                .map(IpAddr::V4)
                .collect(),
            IpAddr::V6(_) => if_inet6
                .map(parse_if_inet6)
                .unwrap_or_default()
                .into_iter()
                .map(IpAddr::V6)
                .collect(),
        };
        let (lo, mut rest): (Vec<IpAddr>, Vec<IpAddr>) =
            found.into_iter().partition(|ip| ip.is_loopback());
        rest.extend(lo);
        let all = dedup(rest.into_iter());
        if all.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else {
            all
        }
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

fn dedup(ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Local IPv4 addresses: the `|-- a.b.c.d` entries followed by `/32 host LOCAL`.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|--") {
            last = rest.trim().parse().ok();
        } else if t == "/32 host LOCAL" {
            if let Some(ip) = last {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// IPv6 addresses from `/proc/net/if_inet6`, without link-local (`fe80::/10`).
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        if hex.len() != 32 || !hex.is_ascii() {
            continue;
        }
        let Ok(n) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let ip = Ipv6Addr::from(n);
        let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
        if !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<ConfigOutcome, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args_and_env(args.iter().map(|s| s.to_string()), move |k| {
            env.get(k).cloned()
        })
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env) {
            Ok(ConfigOutcome::Run(c)) => c,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[], &[]);
        assert_eq!(c, Config::default());
        assert_eq!(c.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.udp_addr, "0.0.0.0:8189".parse().unwrap());
        assert!(c.public_ips.is_empty());
        assert_eq!(c.stun_urls, vec![DEFAULT_STUN_URL.to_string()]);
        assert!(c.turn_urls.is_empty());
        assert_eq!((c.max_rooms, c.max_sessions), (1000, 10_000));
    }

    #[test]
    fn env_then_flags_override() {
        let env = [
            ("WISP_HTTP_ADDR", "127.0.0.1:9000"),
            ("WISP_UDP_ADDR", "[::]:5000"),
            ("WISP_PUBLIC_IPS", "1.2.3.4, 2001:db8::1"),
            ("WISP_MAX_ROOMS", "5"),
        ];
        let c = run(&[], &env);
        assert_eq!(c.http_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.udp_addr, "[::]:5000".parse().unwrap());
        assert_eq!(
            c.public_ips,
            vec![
                "1.2.3.4".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(c.max_rooms, 5);

        let c = run(
            &[
                "--http-addr",
                "127.0.0.1:1",
                "--max-rooms=7",
                "--max-sessions",
                "9",
            ],
            &env,
        );
        assert_eq!(c.http_addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.max_rooms, 7);
        assert_eq!(c.max_sessions, 9);
        // Untouched by flags: still from env.
        assert_eq!(c.udp_addr, "[::]:5000".parse().unwrap());
    }

    #[test]
    fn stun_empty_means_none() {
        assert!(run(&[], &[("WISP_STUN_URLS", "")]).stun_urls.is_empty());
        assert!(run(&["--stun-urls="], &[]).stun_urls.is_empty());
        let c = run(&["--stun-urls", "stun:a:1, stun:b:2"], &[]);
        assert_eq!(c.stun_urls, vec!["stun:a:1", "stun:b:2"]);
    }

    #[test]
    fn errors() {
        for (args, env, needle) in [
            (vec!["--nope"], vec![], "unknown flag"),
            (vec!["--nope=1"], vec![], "unknown flag"),
            (vec!["stray"], vec![], "unexpected argument"),
            (vec!["--http-addr"], vec![], "needs a value"),
            (vec!["--http-addr", "nonsense"], vec![], "--http-addr"),
            (vec![], vec![("WISP_UDP_ADDR", "x")], "WISP_UDP_ADDR"),
            (vec!["--public-ips", "1.2.3"], vec![], "--public-ips"),
            (vec!["--max-rooms", "0"], vec![], "at least 1"),
            (vec!["--max-sessions", "-1"], vec![], "--max-sessions"),
            (vec!["--stun-urls", "http://x"], vec![], "must start with"),
            (vec!["--stun-urls", "stun:a\r\nX: y"], vec![], "not allowed"),
            (vec!["--turn-urls", "turn:t:3478"], vec![], "TURN URLs need"),
            (
                vec!["--turn-urls", "turn:t", "--turn-username", "u"],
                vec![],
                "TURN URLs need",
            ),
        ] {
            let err = parse(&args, &env).expect_err(&format!("{args:?} {env:?}"));
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn credential_never_in_errors_or_debug() {
        let err = parse(&["--turn-credential", "sec\nret"], &[]).unwrap_err();
        assert!(!err.contains("sec"), "{err}");
        let c = run(
            &[
                "--turn-urls=turn:t:3478",
                "--turn-username=u",
                "--turn-credential=hunter2",
            ],
            &[],
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn tokens_and_tls() {
        let c = run(
            &[
                "--admin-token=adm1n",
                "--tls-cert",
                "/c.pem",
                "--tls-key=/k.pem",
            ],
            &[
                ("WISP_PUBLISH_TOKEN", "pub-s3cret"),
                ("WISP_VIEW_TOKEN", ""),
            ],
        );
        assert_eq!(c.publish_token, Some(Token::new("pub-s3cret").unwrap()));
        assert_eq!(c.view_token, None);
        assert_eq!(c.tls(), Some((Path::new("/c.pem"), Path::new("/k.pem"))));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("adm1n"), "{dbg}");
        let auth = c.auth().unwrap();
        assert!(!auth.is_open());
        assert_eq!(
            auth.check(auth::Need::Publish, Some("r"), Some("Bearer adm1n")),
            auth::Decision::Allow
        );
        // Errors never show the token; TLS needs both files.
        let e = parse(&["--view-token", "bad s3cret"], &[]).unwrap_err();
        assert!(e.contains("--view-token") && !e.contains("s3cret"), "{e}");
        let e = parse(&["--tls-cert=/c.pem"], &[]).unwrap_err();
        assert!(e.contains("WISP_TLS_KEY"), "{e}");
        // A bad tokens file is an error naming the file.
        let dir = std::env::temp_dir().join(format!("wisp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens.json");
        std::fs::write(&f, r#"{"r": {"publish": 1}}"#).unwrap();
        let e = run(&["--tokens-file", f.to_str().unwrap()], &[])
            .auth()
            .unwrap_err();
        assert!(
            e.contains("tokens.json") && e.contains("must be a string"),
            "{e}"
        );
        std::fs::write(&f, r#"{"r": {"publish": "room-pub"}}"#).unwrap();
        let a = run(&[], &[("WISP_TOKENS_FILE", f.to_str().unwrap())])
            .auth()
            .unwrap();
        assert_eq!(
            a.check(auth::Need::Publish, Some("r"), Some("Bearer room-pub")),
            auth::Decision::Allow
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn help() {
        let Ok(ConfigOutcome::Help(h)) = parse(&["--max-rooms", "3", "-h"], &[]) else {
            panic!("no help");
        };
        for o in &OPTS {
            assert!(h.contains(o.flag) && h.contains(o.env), "{}", o.flag);
        }
        assert!(h.contains("RUST_LOG"));
        assert!(h.contains("0.0.0.0:8080") && h.contains(DEFAULT_STUN_URL));
        assert!(matches!(
            parse(&["--help"], &[]),
            Ok(ConfigOutcome::Help(_))
        ));
    }

    #[test]
    fn links() {
        let c = run(
            &[
                "--stun-urls=stun:s1:3478,stun:s2:19302",
                "--turn-urls=turn:t:3478?transport=udp,turns:t:5349",
                "--turn-username=u\"1",
                "--turn-credential=p\\1",
            ],
            &[],
        );
        assert_eq!(
            c.ice_server_links(),
            vec![
                "<stun:s1:3478>; rel=\"ice-server\"".to_string(),
                "<stun:s2:19302>; rel=\"ice-server\"".to_string(),
                "<turn:t:3478?transport=udp>; rel=\"ice-server\"; username=\"u\\\"1\"; \
                 credential=\"p\\\\1\"; credential-type=\"password\""
                    .to_string(),
                "<turns:t:5349>; rel=\"ice-server\"; username=\"u\\\"1\"; \
                 credential=\"p\\\\1\"; credential-type=\"password\""
                    .to_string(),
            ]
        );
        assert!(run(&["--stun-urls="], &[]).ice_server_links().is_empty());
    }

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.2
           /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 127.0.0.1
        /32 host LOCAL
     |-- 172.17.0.2
        /32 host LOCAL
     |-- 10.0.0.5
        /32 host LOCAL
";

    const INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000242acfffe110002 02 40 20 80     eth0
20010db8000000000000000000000001 02 40 00 00     eth0
garbage
";

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn advertised_v4_discovery() {
        let udp: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), Some(INET6)),
            addrs(&["172.17.0.2:8189", "10.0.0.5:8189", "127.0.0.1:8189"])
        );
        assert_eq!(
            advertised_from(&[], udp, None, None),
            addrs(&["127.0.0.1:8189"])
        );
    }

    #[test]
    fn advertised_v6_discovery() {
        let udp: SocketAddr = "[::]:9".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), Some(INET6)),
            addrs(&["[2001:db8::1]:9", "[::1]:9"])
        );
    }

    #[test]
    fn advertised_explicit() {
        let udp: SocketAddr = "192.168.1.2:7000".parse().unwrap();
        assert_eq!(
            advertised_from(&[], udp, Some(FIB), None),
            addrs(&["192.168.1.2:7000"])
        );
        let public: Vec<IpAddr> = vec![
            "203.0.113.9".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        assert_eq!(
            advertised_from(&public, udp, Some(FIB), None),
            addrs(&["203.0.113.9:7000", "[2001:db8::2]:7000"])
        );
    }

    #[test]
    fn advertised_real_machine_is_not_empty() {
        let c = Config::default();
        let a = c.advertised_addrs();
        assert!(!a.is_empty());
        assert!(a.iter().all(|s| s.port() == 8189 && s.is_ipv4()));
    }
}

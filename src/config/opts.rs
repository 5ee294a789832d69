//! The settings table: every flag with its environment variable, default,
//! help line and parser, the `--help` text made from it, and the value
//! parsers the entries share.

use std::net::IpAddr;
use std::path::PathBuf;

use super::{Config, DEFAULT_STUN_URL};
use crate::auth::Token;

/// One setting: its flag, its environment variable, its help line and how
/// its value is stored. A new setting is one more entry here (and its field).
pub(super) struct Opt {
    pub flag: &'static str,
    pub env: &'static str,
    /// The default as the help shows it; `""` shows as `(none)`.
    pub default: &'static str,
    help: &'static str,
    /// Whether the value must never appear in an error message (tokens, passwords).
    pub secret: bool,
    /// Parses the value into the configuration; the error says why it is invalid.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
}

/// Every setting, in the order `--help` lists them.
pub(super) const OPTS: [Opt; 23] = [
    Opt {
        flag: "--http-addr",
        env: "WISP_HTTP_ADDR",
        default: "0.0.0.0:8080",
        help: "HTTP listen address (WHIP, WHEP, room API)",
        secret: false,
        set: |c, v| {
            c.http_addr = v.trim().parse().map_err(|e| format!("{e}"))?;
            Ok(())
        },
    },
    Opt {
        flag: "--udp-addr",
        env: "WISP_UDP_ADDR",
        default: "0.0.0.0:8189",
        help: "UDP media socket address (one port for all sessions)",
        secret: false,
        set: |c, v| {
            c.udp_addr = v.trim().parse().map_err(|e| format!("{e}"))?;
            Ok(())
        },
    },
    Opt {
        flag: "--workers",
        env: "WISP_WORKERS",
        default: "1",
        help: "event loops (each with its own UDP port: WISP_UDP_ADDR's port + i); auto: one per CPU this process may run on",
        secret: false,
        set: |c, v| {
            c.workers = super::Workers::parse(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--public-ips",
        env: "WISP_PUBLIC_IPS",
        default: "",
        help: "comma-separated IPs advertised as host candidates (default: discovered)",
        secret: false,
        set: |c, v| {
            c.public_ips = split_list(v)
                .map(|s| s.parse::<IpAddr>().map_err(|e| format!("{s:?}: {e}")))
                .collect::<Result<_, _>>()?;
            Ok(())
        },
    },
    Opt {
        flag: "--stun-urls",
        env: "WISP_STUN_URLS",
        default: DEFAULT_STUN_URL,
        help: "comma-separated STUN URLs sent to clients; empty for none",
        secret: false,
        set: |c, v| {
            c.stun_urls = parse_urls(v, &["stun:", "stuns:"])?;
            Ok(())
        },
    },
    Opt {
        flag: "--turn-urls",
        env: "WISP_TURN_URLS",
        default: "",
        help: "comma-separated TURN URLs sent to clients (needs username and credential)",
        secret: false,
        set: |c, v| {
            c.turn_urls = parse_urls(v, &["turn:", "turns:"])?;
            Ok(())
        },
    },
    Opt {
        flag: "--turn-username",
        env: "WISP_TURN_USERNAME",
        default: "",
        help: "TURN username",
        secret: false,
        set: |c, v| {
            c.turn_username = parse_secret(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--turn-credential",
        env: "WISP_TURN_CREDENTIAL",
        default: "",
        help: "TURN password (prefer the environment variable: flags show up in ps)",
        secret: true,
        set: |c, v| {
            c.turn_credential = parse_secret(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--max-rooms",
        env: "WISP_MAX_ROOMS",
        default: "1000",
        help: "maximum number of rooms",
        secret: false,
        set: |c, v| {
            c.max_rooms = parse_count(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--max-sessions",
        env: "WISP_MAX_SESSIONS",
        default: "10000",
        help: "maximum number of sessions (publishers plus viewers)",
        secret: false,
        set: |c, v| {
            c.max_sessions = parse_count(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--max-load",
        env: "WISP_MAX_LOAD",
        default: "0.85",
        help: "refuse sessions (503) and shed viewers above this predicted share of one core; off: never",
        secret: false,
        set: |c, v| {
            c.max_load = super::MaxLoad::parse(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--publish-token",
        env: "WISP_PUBLISH_TOKEN",
        default: "",
        help: "Bearer token for WHIP (publishing); unset = open (prefer the variable)",
        secret: true,
        set: |c, v| {
            c.publish_token = parse_token(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--view-token",
        env: "WISP_VIEW_TOKEN",
        default: "",
        help: "Bearer token for WHEP (viewing); unset = open (prefer the variable)",
        secret: true,
        set: |c, v| {
            c.view_token = parse_token(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--admin-token",
        env: "WISP_ADMIN_TOKEN",
        default: "",
        help: "Bearer token for /api/rooms and /metrics, also valid for publish and view",
        secret: true,
        set: |c, v| {
            c.admin_token = parse_token(v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--tokens-file",
        env: "WISP_TOKENS_FILE",
        default: "",
        help: "JSON per-room tokens {\"room\": {\"publish\": \"..\", \"view\": \"..\"}}",
        secret: false,
        set: |c, v| {
            c.tokens_file = parse_path(v);
            Ok(())
        },
    },
    Opt {
        flag: "--tls-cert",
        env: "WISP_TLS_CERT",
        default: "",
        help: "PEM certificate chain: serve HTTPS (needs --tls-key)",
        secret: false,
        set: |c, v| {
            c.tls_cert = parse_path(v);
            Ok(())
        },
    },
    Opt {
        flag: "--tls-key",
        env: "WISP_TLS_KEY",
        default: "",
        help: "PEM private key (PKCS#8 or RSA) for --tls-cert",
        secret: false,
        set: |c, v| {
            c.tls_key = parse_path(v);
            Ok(())
        },
    },
    Opt {
        flag: "--record-dir",
        env: "WISP_RECORD_DIR",
        default: "",
        help:
            "record every published track into this directory (?record=0 on a WHIP POST opts out)",
        secret: false,
        set: |c, v| {
            c.record_dir = parse_path(v);
            Ok(())
        },
    },
    // Cluster mode (issue 15): each value checked in src/cluster/config.rs.
    Opt {
        flag: "--redis-url",
        env: "WISP_REDIS_URL",
        default: "",
        help: "redis://[:password@]host:port[/db]: cluster mode (unset: single node)",
        secret: true,
        set: |c, v| c.cluster_settings.set_redis_url(v),
    },
    Opt {
        flag: "--node-url",
        env: "WISP_NODE_URL",
        default: "",
        help: "this node's HTTP base URL as others reach it (required in cluster mode)",
        secret: false,
        set: |c, v| c.cluster_settings.set_node_url(v),
    },
    Opt {
        flag: "--node-id",
        env: "WISP_NODE_ID",
        default: "",
        help: "this node's id in the cluster (default: derived from --node-url)",
        secret: false,
        set: |c, v| c.cluster_settings.set_node_id(v),
    },
    Opt {
        flag: "--cluster-token",
        env: "WISP_CLUSTER_TOKEN",
        default: "",
        help: "Bearer token between nodes (required in cluster mode with any token)",
        secret: true,
        set: |c, v| c.cluster_settings.set_cluster_token(v),
    },
    Opt {
        flag: "--upstream-sockets",
        env: "WISP_UPSTREAM_SOCKETS",
        default: "64",
        help: "UDP sockets per worker for pulls from other nodes: the most rooms a worker pulls at once (1-1024)",
        secret: false,
        set: |c, v| c.cluster_settings.set_upstream_sockets(v),
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

/// Items of a comma-separated list, trimmed, empty items skipped.
fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
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

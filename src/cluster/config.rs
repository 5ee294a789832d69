//! Cluster settings: `WISP_REDIS_URL`, `WISP_NODE_URL`, `WISP_NODE_ID`,
//! `WISP_CLUSTER_TOKEN`, `WISP_UPSTREAM_SOCKETS` (and their flags), parsed
//! and checked here so that `crate::config` only lists them and calls
//! [`ClusterSettings::resolve`].
//!
//! Without a Redis URL the others are ignored: single node stays the
//! default and needs no Redis. Errors are one line and never show a password
//! or a token.

use std::fmt;

use crate::auth::Token;

use super::placement::derive_node_id;

/// Longest accepted node id (it goes into Redis keys and JSON).
pub const MAX_NODE_ID_LEN: usize = 128;
/// `WISP_UPSTREAM_SOCKETS` by default: the most rooms a worker pulls at once.
pub const DEFAULT_UPSTREAM_SOCKETS: usize = 64;
/// Most `WISP_UPSTREAM_SOCKETS` accepts: each is a UDP socket (a file
/// descriptor) per worker, bound at start whether used or not.
pub const MAX_UPSTREAM_SOCKETS: usize = 1024;

/// Cluster mode's settings; present only when a Redis URL is configured.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[[user]:password@]host[:port][/db]`. Redacted in `Debug`.
    pub redis_url: String,
    /// This node's HTTP base URL as other nodes and clients reach it, without
    /// a trailing `/` (a path prefix is kept: `Location` = base + path).
    pub node_url: String,
    /// This node's id in the directory: `WISP_NODE_ID`, or derived from the URL.
    pub node_id: String,
    /// Bearer token nodes present to each other when one pulls from another.
    pub cluster_token: Option<Token>,
    /// UDP sockets each worker binds for its upstreams (a peer connection is
    /// one 5-tuple): the most rooms it pulls at once; a pull beyond is
    /// refused by the core and retried. 1 to [`MAX_UPSTREAM_SOCKETS`].
    pub upstream_sockets: usize,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redact(&self.redis_url))
            .field("node_url", &self.node_url)
            .field("node_id", &self.node_id)
            .field("cluster_token", &self.cluster_token)
            .field("upstream_sockets", &self.upstream_sockets)
            .finish()
    }
}

/// The settings as given, each checked on its own by its setter (called
/// from `crate::config`'s settings table); [`ClusterSettings::resolve`] adds
/// the rules between them. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    redis_url: Option<String>,
    node_url: Option<String>,
    node_id: Option<String>,
    cluster_token: Option<Token>,
    upstream_sockets: usize,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            redis_url: None,
            node_url: None,
            node_id: None,
            cluster_token: None,
            upstream_sockets: DEFAULT_UPSTREAM_SOCKETS,
        }
    }
}

impl fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field("node_url", &self.node_url)
            .field("node_id", &self.node_id)
            .field("cluster_token", &self.cluster_token)
            .field("upstream_sockets", &self.upstream_sockets)
            .finish()
    }
}

/// `None` for an empty (or blank) value: unset.
fn nonempty(v: &str) -> Option<&str> {
    Some(v.trim()).filter(|v| !v.is_empty())
}

/// A non-empty value that passes `check`, owned; `None` when unset.
fn checked(v: &str, check: fn(&str) -> Result<(), String>) -> Result<Option<String>, String> {
    nonempty(v)
        .map(|u| check(u).map(|()| u.to_string()))
        .transpose()
}

impl ClusterSettings {
    /// `WISP_REDIS_URL`; empty: single node. The error never shows the password.
    pub fn set_redis_url(&mut self, v: &str) -> Result<(), String> {
        self.redis_url = checked(v, check_redis_url)?;
        Ok(())
    }

    /// `WISP_NODE_URL`: `http(s)://host[:port][/prefix]`.
    pub fn set_node_url(&mut self, v: &str) -> Result<(), String> {
        self.node_url = nonempty(v).map(check_node_url).transpose()?;
        Ok(())
    }

    /// `WISP_NODE_ID`; empty: derived from the node URL.
    pub fn set_node_id(&mut self, v: &str) -> Result<(), String> {
        self.node_id = checked(v, check_node_id)?;
        Ok(())
    }

    /// `WISP_CLUSTER_TOKEN`. The error never shows the token.
    pub fn set_cluster_token(&mut self, v: &str) -> Result<(), String> {
        self.cluster_token = if v.is_empty() {
            None
        } else {
            Some(Token::new(v)?)
        };
        Ok(())
    }

    /// `WISP_UPSTREAM_SOCKETS`: 1 to [`MAX_UPSTREAM_SOCKETS`]; empty: the default.
    pub fn set_upstream_sockets(&mut self, v: &str) -> Result<(), String> {
        self.upstream_sockets = match nonempty(v) {
            None => DEFAULT_UPSTREAM_SOCKETS,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_UPSTREAM_SOCKETS).contains(n))
                .ok_or_else(|| format!("{n:?} is not 1 to {MAX_UPSTREAM_SOCKETS}"))?,
        };
        Ok(())
    }

    /// The rules between the settings. `any_token` says whether any publish,
    /// view or admin token (or a tokens file) is configured: then a cluster
    /// token is required. `Ok(None)`: no Redis URL, single node (the other
    /// three are then ignored).
    pub fn resolve(&self, any_token: bool) -> Result<Option<ClusterConfig>, String> {
        let Some(redis_url) = &self.redis_url else {
            return Ok(None);
        };
        let Some(node_url) = &self.node_url else {
            return Err(
                "cluster mode (WISP_REDIS_URL) needs WISP_NODE_URL (or --node-url): this node's \
                 HTTP base URL as other nodes and clients reach it, e.g. http://10.0.0.2:8080"
                    .to_string(),
            );
        };
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => {
                let id = derive_node_id(node_url);
                check_node_id(&id).map_err(|why| {
                    format!(
                        "the node id derived from WISP_NODE_URL ({id:?}) {why}; set WISP_NODE_ID"
                    )
                })?;
                id
            }
        };
        if any_token && self.cluster_token.is_none() {
            return Err(
                "cluster mode with tokens configured needs WISP_CLUSTER_TOKEN (or \
                 --cluster-token): the Bearer token nodes present to each other"
                    .to_string(),
            );
        }
        Ok(Some(ClusterConfig {
            redis_url: redis_url.clone(),
            node_url: node_url.clone(),
            node_id,
            cluster_token: self.cluster_token.clone(),
            upstream_sockets: self.upstream_sockets,
        }))
    }
}

/// `redis://[[user]:password@]host[:port][/db]`; the error never shows the password.
fn check_redis_url(url: &str) -> Result<(), String> {
    let Some(rest) = strip_prefix_ci(url, "redis://") else {
        return Err("must start with redis:// (redis://[:password@]host:port[/db])".to_string());
    };
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII is allowed".to_string());
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let hostport = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    check_host_port(hostport)?;
    match path {
        "" | "/" => {}
        p if p.starts_with('/') && p[1..].parse::<u32>().is_ok() => {}
        p => return Err(format!("{p:?} is not a database number (/0, /1, ...)")),
    }
    // The client's own parser must agree (it sees no network here).
    redis::Client::open(url)
        .map_err(|e| format!("rejected by the Redis client ({:?})", e.kind()))?;
    Ok(())
}

/// `host[:port]` with a host and, if given, a port in 1-65535.
fn check_host_port(hostport: &str) -> Result<(), String> {
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?} is not 1-65535"))?;
    }
    Ok(())
}

/// `http(s)://host[:port][/prefix]`, returned without a trailing `/`.
fn check_node_url(url: &str) -> Result<String, String> {
    let rest = strip_prefix_ci(url, "http://")
        .or_else(|| strip_prefix_ci(url, "https://"))
        .ok_or("must start with http:// or https://")?;
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII is allowed (it goes into Location headers)".to_string());
    }
    if url.contains(['?', '#', '"', '<', '>', '\\']) {
        return Err("a base URL has no query, fragment, quotes or brackets".to_string());
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err("no user information in a base URL".to_string());
    }
    check_host_port(authority)?;
    Ok(url.trim_end_matches('/').to_string())
}

/// 1 to [`MAX_NODE_ID_LEN`] characters from `A-Z a-z 0-9 . _ : -`.
fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(format!("must be 1 to {MAX_NODE_ID_LEN} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err("may only hold A-Z a-z 0-9 . _ : -".to_string());
    }
    Ok(())
}

/// `host[:port]` or `[v6][:port]` into host and optional port text.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        return match after {
            "" => Ok((host, None)),
            a => match a.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err("junk after ]".to_string()),
            },
        };
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
    .then(|| &s[prefix.len()..])
}

/// A Redis URL without its user information (password), for logs.
pub fn redact(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return "<redis url>".to_string();
    };
    let (scheme, rest) = (&url[..i + 3], &url[i + 3..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<ClusterSettings, String> {
        let mut c = ClusterSettings::default();
        for (flag, v) in pairs {
            match *flag {
                "--redis-url" => c.set_redis_url(v),
                "--node-url" => c.set_node_url(v),
                "--node-id" => c.set_node_id(v),
                "--cluster-token" => c.set_cluster_token(v),
                "--upstream-sockets" => c.set_upstream_sockets(v),
                f => panic!("{f}"),
            }
            .map_err(|why| format!("{flag}: {why}"))?;
        }
        Ok(c)
    }

    fn resolve(pairs: &[(&str, &str)], any_token: bool) -> Result<Option<ClusterConfig>, String> {
        settings(pairs)?.resolve(any_token)
    }

    #[test]
    fn off_without_redis_url() {
        assert_eq!(ClusterSettings::default().resolve(true), Ok(None));
        // The others alone change nothing.
        let r = [("--node-url", "http://a:1"), ("--redis-url", "")];
        assert_eq!(resolve(&r, true), Ok(None));
    }

    #[test]
    fn full_and_derived_id() {
        let r = [
            ("--redis-url", "redis://:pw@10.0.0.9:6379/2"),
            ("--node-url", "http://10.0.0.2:8080/"),
        ];
        let dbg = format!("{:?}", settings(&r).unwrap());
        assert!(
            !dbg.contains("pw") && dbg.contains("10.0.0.9:6379"),
            "{dbg}"
        );
        let c = resolve(&r, false).unwrap().unwrap();
        assert_eq!(c.node_url, "http://10.0.0.2:8080");
        assert_eq!(c.node_id, "10.0.0.2-8080");
        assert_eq!(c.cluster_token, None);
        assert_eq!(c.upstream_sockets, DEFAULT_UPSTREAM_SOCKETS);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("pw") && dbg.contains("10.0.0.9:6379"),
            "{dbg}"
        );

        let r = [
            ("--redis-url", "redis://localhost"),
            ("--node-url", "https://edge.example:8443/wisp"),
            ("--node-id", "edge-1"),
            ("--cluster-token", "c1uster"),
        ];
        let c = resolve(&r, true).unwrap().unwrap();
        assert_eq!(c.node_id, "edge-1");
        assert_eq!(c.node_url, "https://edge.example:8443/wisp");
        assert_eq!(c.cluster_token, Some(Token::new("c1uster").unwrap()));
        assert!(!format!("{c:?}").contains("c1uster"));
    }

    #[test]
    fn errors() {
        let base = [("--redis-url", "redis://127.0.0.1:6379")];
        for (extra, any_token, needle) in [
            (vec![], false, "needs WISP_NODE_URL"),
            (
                vec![("--node-url", "ftp://x")],
                false,
                "http:// or https://",
            ),
            (vec![("--node-url", "http://x/?a=1")], false, "no query"),
            (vec![("--node-url", "http://:80")], false, "no host"),
            (vec![("--node-url", "http://x:99999")], false, "1-65535"),
            (
                vec![("--node-url", "http://x"), ("--node-id", "a b")],
                false,
                "may only hold",
            ),
            (
                vec![("--node-url", "http://x")],
                true,
                "needs WISP_CLUSTER_TOKEN",
            ),
            (
                vec![("--node-url", "http://x"), ("--cluster-token", "s3c ret")],
                true,
                "--cluster-token",
            ),
        ] {
            let mut pairs = base.to_vec();
            pairs.extend(extra.iter().copied());
            let e = resolve(&pairs, any_token).unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(!e.contains("s3c") && !e.contains('\n'), "{e}");
        }
        for (url, needle) in [
            ("http://x", "redis://"),
            ("redis://", "no host"),
            ("redis://:hunter2@h:0", "1-65535"),
            ("redis://:hunter2@h:1/x", "database"),
        ] {
            let e =
                resolve(&[("--redis-url", url), ("--node-url", "http://x")], false).unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn upstream_sockets_are_bounded() {
        let base = [("--redis-url", "redis://h"), ("--node-url", "http://x")];
        let with = |n: &str| {
            let mut p = base.to_vec();
            p.push(("--upstream-sockets", n));
            resolve(&p, false)
        };
        assert_eq!(with("8").unwrap().unwrap().upstream_sockets, 8);
        assert_eq!(with(" ").unwrap().unwrap().upstream_sockets, 64);
        assert_eq!(with("1024").unwrap().unwrap().upstream_sockets, 1024);
        for bad in ["0", "1025", "-1", "many"] {
            let e = with(bad).unwrap_err();
            assert!(e.contains("1 to 1024"), "{bad}: {e}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://u:p@w@h"), "redis://h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}

//! Cluster settings: `WISP_REDIS_URL`, `WISP_NODE_URL`, `WISP_NODE_ID`,
//! `WISP_CLUSTER_TOKEN` (and their flags), parsed and checked here so that
//! `crate::config` only collects the raw values and calls [`resolve`].
//!
//! Without a Redis URL the other three are ignored: single node stays the
//! default and needs no Redis. Errors are one line and never show a password
//! or a token.

use std::fmt;

use crate::auth::Token;

use super::placement::derive_node_id;

/// Longest accepted node id (it goes into Redis keys and JSON).
pub const MAX_NODE_ID_LEN: usize = 128;

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
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redact(&self.redis_url))
            .field("node_url", &self.node_url)
            .field("node_id", &self.node_id)
            .field("cluster_token", &self.cluster_token)
            .finish()
    }
}

/// The raw values as given, each with where it came from (a flag or a
/// variable name), for error messages.
#[derive(Debug, Default, Clone)]
pub struct RawCluster {
    redis_url: Option<(String, String)>,
    node_url: Option<(String, String)>,
    node_id: Option<(String, String)>,
    cluster_token: Option<(String, String)>,
}

impl RawCluster {
    /// Store the value `v` of `flag` (one of the four cluster flags), given
    /// through `src`. Returns false for any other flag.
    pub fn set(&mut self, flag: &str, src: String, v: String) -> bool {
        let slot = match flag {
            "--redis-url" => &mut self.redis_url,
            "--node-url" => &mut self.node_url,
            "--node-id" => &mut self.node_id,
            "--cluster-token" => &mut self.cluster_token,
            _ => return false,
        };
        *slot = Some((src, v));
        true
    }
}

/// Non-empty value of a raw slot.
fn value(slot: &Option<(String, String)>) -> Option<(&str, &str)> {
    slot.as_ref()
        .map(|(s, v)| (s.as_str(), v.trim()))
        .filter(|(_, v)| !v.is_empty())
}

/// Check the raw values. `any_token` says whether any publish, view or admin
/// token (or a tokens file) is configured: then a cluster token is required.
/// `Ok(None)`: no Redis URL, single node.
pub fn resolve(raw: &RawCluster, any_token: bool) -> Result<Option<ClusterConfig>, String> {
    let Some((rsrc, redis_url)) = value(&raw.redis_url) else {
        return Ok(None);
    };
    check_redis_url(redis_url).map_err(|why| format!("invalid {rsrc} value: {why}"))?;
    let Some((nsrc, node_url)) = value(&raw.node_url) else {
        return Err(
            "cluster mode (WISP_REDIS_URL) needs WISP_NODE_URL (or --node-url): this node's \
             HTTP base URL as other nodes and clients reach it, e.g. http://10.0.0.2:8080"
                .to_string(),
        );
    };
    let node_url = check_node_url(node_url)
        .map_err(|why| format!("invalid {nsrc} value {node_url:?}: {why}"))?;
    let node_id = match value(&raw.node_id) {
        Some((isrc, id)) => {
            check_node_id(id).map_err(|why| format!("invalid {isrc} value {id:?}: {why}"))?;
            id.to_string()
        }
        None => {
            let id = derive_node_id(&node_url);
            check_node_id(&id).map_err(|why| {
                format!("the node id derived from {nsrc} ({id:?}) {why}; set WISP_NODE_ID")
            })?;
            id
        }
    };
    let cluster_token = match &raw.cluster_token {
        Some((tsrc, v)) if !v.is_empty() => Some(
            // Never echo a token in an error message.
            Token::new(v).map_err(|why| format!("invalid {tsrc} value: {why}"))?,
        ),
        _ => None,
    };
    if any_token && cluster_token.is_none() {
        return Err(
            "cluster mode with tokens configured needs WISP_CLUSTER_TOKEN (or --cluster-token): \
             the Bearer token nodes present to each other"
                .to_string(),
        );
    }
    Ok(Some(ClusterConfig {
        redis_url: redis_url.to_string(),
        node_url,
        node_id,
        cluster_token,
    }))
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
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?} is not 1-65535"))?;
    }
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

    fn raw(pairs: &[(&str, &str)]) -> RawCluster {
        let mut r = RawCluster::default();
        for (flag, v) in pairs {
            assert!(r.set(flag, flag.to_string(), v.to_string()));
        }
        r
    }

    #[test]
    fn off_without_redis_url() {
        assert_eq!(resolve(&RawCluster::default(), true), Ok(None));
        // The others alone change nothing.
        let r = raw(&[("--node-url", "http://a:1"), ("--redis-url", "")]);
        assert_eq!(resolve(&r, true), Ok(None));
        assert!(!RawCluster::default().set("--http-addr", "x".into(), "y".into()));
    }

    #[test]
    fn full_and_derived_id() {
        let r = raw(&[
            ("--redis-url", "redis://:pw@10.0.0.9:6379/2"),
            ("--node-url", "http://10.0.0.2:8080/"),
        ]);
        let c = resolve(&r, false).unwrap().unwrap();
        assert_eq!(c.node_url, "http://10.0.0.2:8080");
        assert_eq!(c.node_id, "10.0.0.2-8080");
        assert_eq!(c.cluster_token, None);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("pw") && dbg.contains("10.0.0.9:6379"),
            "{dbg}"
        );

        let r = raw(&[
            ("--redis-url", "redis://localhost"),
            ("--node-url", "https://edge.example:8443/wisp"),
            ("--node-id", "edge-1"),
            ("--cluster-token", "c1uster"),
        ]);
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
            let e = resolve(&raw(&pairs), any_token).unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(!e.contains("s3c") && !e.contains('\n'), "{e}");
        }
        for (url, needle) in [
            ("http://x", "redis://"),
            ("redis://", "no host"),
            ("redis://:hunter2@h:0", "1-65535"),
            ("redis://:hunter2@h:1/x", "database"),
        ] {
            let e = resolve(
                &raw(&[("--redis-url", url), ("--node-url", "http://x")]),
                false,
            )
            .unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://u:p@w@h"), "redis://h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}

//! The request, the response and the configuration the routes work with.

use std::sync::Arc;

use crate::auth::Auth;
use crate::channel::CoreError;
use crate::metrics::HttpCounters;
use crate::sfu::command::{ApiError, Command, Reply};

use super::sse::{SseStreams, DEFAULT_MAX_SSE_STREAMS};

/// Largest accepted request body (an SDP offer or an sdpfrag): 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Seconds a client should wait after a 503 because a capacity limit was reached.
pub const RETRY_AFTER_CAPACITY: &str = "5";
/// Seconds a client should wait after a 503 because the core was busy.
pub const RETRY_AFTER_BUSY: &str = "1";
pub(super) const CORS_EXPOSE: &str = "Location, ETag, Link, Accept-Patch, Accept-Post";
pub(super) const TEXT: &str = "text/plain; charset=utf-8";
/// Longest error body, in bytes.
pub(super) const MAX_ERROR_BODY: usize = 200;

/// A request as read from the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method, e.g. `"POST"` (compared case-sensitively, as HTTP requires).
    pub method: String,
    /// Path plus optional `?query`; the query is ignored.
    pub url: String,
    /// Header names and values in arrival order; names compare case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The body; the driver already capped it at a little over the body limit.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request with no headers and no body (build on with
    /// [`with_header`](Self::with_header) and [`with_body`](Self::with_body)).
    pub fn new(method: &str, url: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            url: url.to_string(),
            ..HttpRequest::default()
        }
    }

    /// The same request with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same request with this body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers; a name may repeat (one `Link` per ICE server).
    pub headers: Vec<(String, String)>,
    /// The body (empty for 204).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// All values of headers named `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A response with this status and the CORS headers every response carries.
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![
                ("Access-Control-Allow-Origin".into(), "*".into()),
                ("Access-Control-Expose-Headers".into(), CORS_EXPOSE.into()),
            ],
            body: Vec::new(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> HttpResponse {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Set the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        self.headers
            .push(("Content-Type".into(), content_type.to_string()));
        self.body = body.into();
        self
    }

    /// A one-line `text/plain` error response.
    pub fn error(status: u16, msg: &str) -> HttpResponse {
        HttpResponse::new(status).body(TEXT, one_line(msg))
    }

    /// 503 with `Retry-After: 1`: the core (or the driver's queue) is busy.
    pub fn busy() -> HttpResponse {
        HttpResponse::error(503, "server busy, retry later").with("Retry-After", RETRY_AFTER_BUSY)
    }

    /// 413: body over the limit.
    pub fn too_large() -> HttpResponse {
        HttpResponse::error(413, "request body too large")
    }

    /// 500: something inside wisp went wrong (never the client's fault).
    pub fn internal() -> HttpResponse {
        HttpResponse::error(500, "internal error")
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// One `Link` header value per ICE server (see `Config::ice_server_links`).
    pub ice_server_links: Vec<String>,
    /// Largest accepted body in bytes; larger → 413.
    pub body_limit: usize,
    /// Bearer tokens; [`Auth::default`] is fully open.
    pub auth: Auth,
    /// Responses by status, filled in by the driver, shown by `/metrics`.
    pub counters: Arc<HttpCounters>,
    /// The recorder's figures, when recording is configured (room API, metrics).
    pub recorder: Option<Arc<crate::record::RecorderStats>>,
    /// The WHEP event streams (server-sent events extension).
    pub sse: Arc<SseStreams>,
    /// Cluster mode (`WISP_REDIS_URL`); `None`: a single node.
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
}

impl HttpConfig {
    /// These ICE server links, the default 64 KiB body limit, no auth, fresh counters.
    pub fn new(ice_server_links: Vec<String>) -> HttpConfig {
        HttpConfig {
            ice_server_links,
            body_limit: DEFAULT_BODY_LIMIT,
            auth: Auth::default(),
            counters: Arc::new(HttpCounters::new()),
            recorder: None,
            sse: Arc::new(SseStreams::new(DEFAULT_MAX_SSE_STREAMS)),
            cluster: None,
        }
    }

    /// The same configuration in cluster mode.
    pub fn with_cluster(mut self, node: Arc<crate::cluster::ClusterNode>) -> HttpConfig {
        self.cluster = Some(node);
        self
    }

    /// The same configuration with these tokens.
    pub fn with_auth(mut self, auth: Auth) -> HttpConfig {
        self.auth = auth;
        self
    }

    /// The same configuration showing this recorder's figures.
    pub fn with_recorder(mut self, stats: Arc<crate::record::RecorderStats>) -> HttpConfig {
        self.recorder = Some(stats);
        self
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig::new(Vec::new())
    }
}

/// The function the driver passes to [`handle`](super::handle): send one command, wait for its reply.
pub type CoreFn<'a> = dyn FnMut(Command) -> Result<Result<Reply, ApiError>, CoreError> + 'a;

/// `msg` as one short line: control characters become spaces, at most
/// [`MAX_ERROR_BODY`] bytes (cut on a char boundary), ending in `\n`.
pub(super) fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_ERROR_BODY) + 1);
    for c in msg.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_ERROR_BODY {
            break;
        }
        out.push(c);
    }
    let mut out = out.trim_end().to_string();
    out.push('\n');
    out
}

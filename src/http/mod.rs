//! HTTP: WHIP, WHEP and its extensions, the room API, the page.
//!
//! ```text
//!  TCP ─▶ front ─(Unix socket)─▶ tiny_http ─▶ server (workers) ─▶ routes ─▶ channel ─▶ core
//!          │ timeouts, cap,                       │                │
//!          │ 413/400/431 on heads                 │ event stream   ├ extensions (sse, layer)
//!                                                 └─▶ sse::write_stream   └ page
//! ```
//!
//! - Pure, no sockets or threads: [`types`] (request, response, config),
//!   [`routes`] (request → command → response), [`extensions`] and [`sse`]
//!   (the WHEP extensions; an event stream is written over any `Write`),
//!   [`page`] (the browser page), and the front's head parser.
//! - `cluster`: placement, claims and the cluster admin routes, used
//!   only in cluster mode (it reaches the directory's threads).
//! - Drivers: [`server`] (tiny_http, the bounded worker pool), [`listen`]
//!   (plain or TLS listener, direct or behind the front), [`front`] (the TCP
//!   front: request deadline, connection cap).
//!
//! The core is reached through [`crate::channel`], shared with the event loop.

mod cluster;
pub mod extensions;
pub mod front;
pub mod listen;
pub mod page;
pub mod routes;
pub mod server;
pub mod sse;
pub mod types;

pub use crate::channel::CoreError;
pub use extensions::{parse_layer_request, LAYER_REL, SSE_REL};
pub use listen::{bind, bind_fronted};
pub use routes::{api_error, handle, handle_streaming, Handled};
pub use server::{spawn, spawn_link, spawn_with, PoolConfig, MAX_DRAIN};
pub use sse::{
    layers_json, sse_events, write_stream, AttachError, EventSet, Pace, SseLease, SseStart,
    SseState, SseStreams, DEFAULT_MAX_SSE_STREAMS, MAX_SSE_ENTRIES, MAX_SSE_PER_SESSION,
    SSE_EVENTS, SSE_KEEPALIVE, SSE_POLL,
};
pub use types::{
    CoreFn, HttpConfig, HttpRequest, HttpResponse, DEFAULT_BODY_LIMIT, RETRY_AFTER_BUSY,
    RETRY_AFTER_CAPACITY,
};

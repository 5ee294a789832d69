//! wisp: a sans-IO WebRTC SFU on str0m. WHIP in, WHEP out, one UDP port.
//!
//! ```text
//!  HTTP (WHIP/WHEP) ─▶ http::server ─Command▶ channel + Waker ─▶ event_loop
//!                         ▲                                        │
//!                         └──────── Reply (SDP answer) ◀───────────┤
//!                                                                  ▼
//!  UDP in ─▶ Sfu::handle_receive ─▶ demux (ufrag / address, O(1)) ─▶ publisher Rtc
//!                                                                  │ RtpPacket
//!                                     fan-out per track, per viewer ▼
//!                        PT map · own SSRC · seq/ts rebase · keyframe gate
//!                                                                  │ write_rtp
//!  UDP out ◀─ Sfu::poll_output ◀──────────────────────────── viewer Rtcs
//! ```
//!
//! - [`sfu`] is the core. It owns every room, session and `Rtc`, takes `now`
//!   as an argument and never touches a socket, a thread or the clock: push in
//!   with `handle_command` / `handle_receive` / `handle_timeout`, pull out with
//!   `poll_output` until it returns a timeout.
//! - [`codec`] knows what each codec's payload looks like; the core parses
//!   every video packet through it once, the recorder reads frames with it.
//! - [`event_loop`] and [`http::server`] are the drivers; they meet at
//!   [`channel`] (commands in, one reply each, a waker for the loop).
//!   [`http::routes`] is the pure request → command → response mapping; the
//!   rest of [`http`] is listed there. [`config`] reads flags and environment.
//! - [`workers`] runs N event loops (`WISP_WORKERS`), one UDP port each: it
//!   places sessions, routes commands and merges replies; a room with viewers
//!   on several workers reaches them through the core's relay (`sfu::relay`).
//! - [`cluster`] is the optional Redis directory and redirect policy (issue 15).
// Denied, not forbidden: `udp::sys` alone allows it, for one `sendmmsg` call.
#![deny(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod event_loop;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod record;
pub mod sfu;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod testnet;
pub mod udp;
pub mod upstream_udp;
pub mod workers;

//! wisp: a sans-IO WebRTC SFU on str0m. WHIP in, WHEP out, one UDP port.
#![forbid(unsafe_code)]

pub mod sfu;

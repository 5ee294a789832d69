//! Handshake failures: a session that ends before ICE and DTLS are both up
//! says why, once, at info level, and is counted by stage
//! (`wisp_handshake_failures_total{stage}`).
//!
//! The stage is ICE until a connectivity check succeeded, DTLS after. The
//! reason is str0m's error in words where there is one (dimpl's refusals name
//! the algorithm or key, e.g. "peer signed with RSA_PSS_RSAE_SHA512, which was
//! not offered"), else what was seen: no check at all, or no finished DTLS
//! handshake within the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use super::session::Session;
use super::stats::Stats;

/// Where a handshake stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No ICE connectivity check succeeded.
    Ice,
    /// ICE was up; DTLS did not finish.
    Dtls,
}

impl Stage {
    /// Every stage, for the metrics.
    pub const ALL: [Stage; 2] = [Stage::Ice, Stage::Dtls];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Ice => "ice",
            Stage::Dtls => "dtls",
        }
    }
}

/// What the core knows of a session's handshake while it is not connected.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// An ICE connectivity check succeeded (str0m reported Connected).
    pub ice_up: bool,
    /// The address the peer's last datagram came from.
    pub remote: Option<SocketAddr>,
    /// The first error str0m returned for this session, in words.
    pub error: Option<String>,
    /// Already reported (a session fails once).
    pub reported: bool,
}

/// How a not-connected session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The connect timeout ran out.
    Timeout(Duration),
    /// str0m gave up (an error, a DTLS close, or ICE disconnected).
    Failed,
}

/// Report session `s`'s failed handshake once: log it at info with room,
/// session, remote address and reason, and count it. Does nothing for a
/// connected session.
pub fn report(stats: &mut Stats, s: &mut Session, ending: Ending) {
    if s.connected || std::mem::replace(&mut s.handshake.reported, true) {
        return;
    }
    let h = &s.handshake;
    let stage = if h.ice_up { Stage::Dtls } else { Stage::Ice };
    let reason = match (&h.error, stage, ending) {
        (Some(e), _, _) => e.clone(),
        (None, Stage::Ice, Ending::Timeout(t)) if h.remote.is_none() => {
            format!("ICE: no check from the peer within {} s", t.as_secs())
        }
        (None, Stage::Ice, Ending::Timeout(t)) => {
            format!(
                "ICE: no check from the peer succeeded within {} s",
                t.as_secs()
            )
        }
        (None, Stage::Ice, Ending::Failed) => "ICE: connectivity lost before it was up".into(),
        (None, Stage::Dtls, Ending::Timeout(t)) => {
            format!("DTLS: handshake did not finish within {} s", t.as_secs())
        }
        (None, Stage::Dtls, Ending::Failed) => "DTLS: the peer closed the handshake".into(),
    };
    stats.handshake_failures[stage as usize] += 1;
    let remote = h
        .remote
        .map_or_else(|| "no address".to_string(), |a| a.to_string());
    log::info!(
        "room {}: {} {:?} handshake failed ({}) from {remote}: {reason}",
        s.room,
        s.role.path_prefix(),
        s.id,
        stage.label()
    );
}

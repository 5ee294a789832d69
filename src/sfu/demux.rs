//! O(1) routing of datagrams to sessions: by source address once ICE has
//! validated it, and by the local ufrag in a STUN USERNAME before that.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::id::SessionId;

/// What a datagram looks like by its first byte (RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 0..=3: STUN.
    Stun,
    /// 20..=63: DTLS.
    Dtls,
    /// 128..=191: RTP or RTCP.
    Rtp,
    /// Anything else, or empty.
    Other,
}

/// Classify a datagram by its first byte.
pub fn classify(buf: &[u8]) -> Class {
    match buf.first() {
        Some(0..=3) => Class::Stun,
        Some(20..=63) => Class::Dtls,
        Some(128..=191) => Class::Rtp,
        _ => Class::Other,
    }
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const BINDING_REQUEST: u16 = 0x0001;

/// The local (server) ufrag of a STUN Binding request: the part of USERNAME
/// before the colon. `None` for anything that is not a well-formed binding
/// request with a USERNAME. Never panics, for any input.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < 20 || buf[4..8] != MAGIC_COOKIE {
        return None;
    }
    let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
    if msg_type != BINDING_REQUEST {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let end = 20usize.checked_add(len)?;
    let body = buf.get(20..end)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let t = u16::from_be_bytes([body[i], body[i + 1]]);
        let l = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + l)?;
        if t == ATTR_USERNAME {
            let s = std::str::from_utf8(v).ok()?;
            let (local, _remote) = s.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    None
}

/// The most remote addresses remembered per session (NAT rebinding, several
/// candidates). The oldest is forgotten first.
pub const MAX_ADDRS_PER_SESSION: usize = 8;

/// Address and ufrag maps. Every insertion has a removal path in [`Demux::remove_session`].
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    addrs_of: HashMap<SessionId, Vec<SocketAddr>>,
}

impl Demux {
    /// Route STUN for `ufrag` to `id`.
    pub fn add_ufrag(&mut self, ufrag: String, id: SessionId) {
        self.by_ufrag.insert(ufrag, id);
    }

    /// The session owning local ufrag `ufrag`.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<SessionId> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// The session a validated address belongs to.
    pub fn by_addr(&self, addr: &SocketAddr) -> Option<SessionId> {
        self.by_addr.get(addr).copied()
    }

    /// Route datagrams from `addr` to `id` (after a STUN check passed integrity).
    /// Takes the address away from any other session.
    pub fn add_addr(&mut self, addr: SocketAddr, id: SessionId) {
        if let Some(prev) = self.by_addr.insert(addr, id) {
            if prev == id {
                return;
            }
            if let Some(list) = self.addrs_of.get_mut(&prev) {
                list.retain(|a| *a != addr);
            }
        }
        let list = self.addrs_of.entry(id).or_default();
        list.push(addr);
        if list.len() > MAX_ADDRS_PER_SESSION {
            let old = list.remove(0);
            self.by_addr.remove(&old);
        }
    }

    /// Forget everything about `id`.
    pub fn remove_session(&mut self, id: SessionId, ufrag: &str) {
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
        for a in self.addrs_of.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&a) == Some(&id) {
                self.by_addr.remove(&a);
            }
        }
    }

    /// Sizes of (address map, ufrag map, per-session lists), for leak tests.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.by_addr.len(), self.by_ufrag.len(), self.addrs_of.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 1, 0, 0];
        b.extend_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(&[9; 12]);
        b.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        b.extend_from_slice(&(username.len() as u16).to_be_bytes());
        b.extend_from_slice(username);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        let len = (b.len() - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn parses_username() {
        assert_eq!(stun_local_ufrag(&binding(b"srv1:cli")), Some("srv1"));
        assert_eq!(stun_local_ufrag(&binding(b"nocolon")), None);
        assert_eq!(stun_local_ufrag(&binding(b":cli")), None);
        let mut b = binding(b"abc:def");
        b.truncate(25);
        assert_eq!(stun_local_ufrag(&b), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0; 19]), None);
    }

    #[test]
    fn maps_shrink() {
        let mut d = Demux::default();
        let a = SessionId(1);
        d.add_ufrag("u".into(), a);
        for p in 0..20 {
            d.add_addr(SocketAddr::from(([192, 0, 2, 1], 1000 + p)), a);
        }
        assert_eq!(d.sizes(), (MAX_ADDRS_PER_SESSION, 1, 1));
        d.remove_session(a, "u");
        assert_eq!(d.sizes(), (0, 0, 0));
    }

    #[test]
    fn classify_ranges() {
        assert_eq!(classify(&[0]), Class::Stun);
        assert_eq!(classify(&[22]), Class::Dtls);
        assert_eq!(classify(&[0x80]), Class::Rtp);
        assert_eq!(classify(&[]), Class::Other);
        assert_eq!(classify(&[200]), Class::Other);
    }
}

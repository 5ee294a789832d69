//! O(1) routing of datagrams to sessions: by source address once ICE has
//! validated it, and by the local ufrag in a STUN USERNAME before that.
//! Also the STUN shim ([`shim`]): the Binding requests str0m would refuse
//! or mishandle, re-signed before it sees them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::id::SessionId;
use super::stats::DropReason;

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

const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Priority given to a check that carried none: the RFC 8445 peer-reflexive
/// priority for component 1 (type preference 110, local preference 65535).
const PRFLX_PRIORITY: u32 = (110 << 24) | (65535 << 8) | 255;

/// Attributes of a STUN message as (type, offset of the attribute header, total length incl. padding).
fn stun_attrs(buf: &[u8]) -> Option<Vec<(u16, usize, usize)>> {
    if buf.len() < 20 || buf[4..8] != MAGIC_COOKIE {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if 20 + len != buf.len() {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 20;
    while i + 4 <= buf.len() {
        let t = u16::from_be_bytes([buf[i], buf[i + 1]]);
        let l = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
        let total = 4 + l.div_ceil(4) * 4;
        if i + total > buf.len() {
            return None;
        }
        out.push((t, i, total));
        i += total;
    }
    Some(out)
}

/// Compatibility shim for clients whose Binding requests carry no PRIORITY
/// (FFmpeg 8's WHIP muxer); str0m rejects those.
///
/// If `buf` is a Binding request with USERNAME and MESSAGE-INTEGRITY but no
/// PRIORITY, and its integrity verifies with the session's local password
/// `pwd`, return a copy with PRIORITY added and MESSAGE-INTEGRITY and
/// FINGERPRINT recomputed. Anything else (including a bad integrity) is `None`:
/// an unauthenticated request is never turned into an authenticated one.
pub fn add_missing_priority(buf: &[u8], pwd: &str) -> Option<Vec<u8>> {
    resign_with_priority(buf, pwd, PRFLX_PRIORITY, false)
}

/// NAT rebinding: a verified Binding request from a new address of a
/// connected session gets PRIORITY `prio` (re-signed with `pwd`), so that
/// str0m's ICE-lite agent prefers the new nominated pair at once instead of
/// sending to the dead address until its 15 s liveness runs out. `None` if
/// the integrity does not verify or it is no Binding request with USE-CANDIDATE.
pub fn with_priority(buf: &[u8], pwd: &str, prio: u32) -> Option<Vec<u8>> {
    let attrs = stun_attrs(buf)?;
    if !attrs.iter().any(|a| a.0 == ATTR_USE_CANDIDATE) {
        return None;
    }
    resign_with_priority(buf, pwd, prio, true)
}

const ATTR_USE_CANDIDATE: u16 = 0x0025;

fn resign_with_priority(buf: &[u8], pwd: &str, prio: u32, replace: bool) -> Option<Vec<u8>> {
    if u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) != BINDING_REQUEST {
        return None;
    }
    let attrs = stun_attrs(buf)?;
    if (!replace && attrs.iter().any(|a| a.0 == ATTR_PRIORITY))
        || !attrs.iter().any(|a| a.0 == ATTR_USERNAME)
    {
        return None;
    }
    let &(_, mi_at, mi_len) = attrs.iter().find(|a| a.0 == ATTR_MESSAGE_INTEGRITY)?;
    if mi_len != 24 {
        return None;
    }
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        pwd.as_bytes(),
    );
    // Verify the original: HMAC over everything before MI, with the length
    // field covering up to the end of MI.
    let mut head = buf[..mi_at].to_vec();
    head[2..4].copy_from_slice(&((mi_at + 24 - 20) as u16).to_be_bytes());
    if aws_lc_rs::hmac::verify(&key, &head, &buf[mi_at + 4..mi_at + 24]).is_err() {
        return None;
    }
    // Rebuild: attributes before MI (less any PRIORITY), PRIORITY, MI, FINGERPRINT.
    let mut out = head[..20].to_vec();
    for &(t, at, len) in attrs.iter().take_while(|a| a.1 < mi_at) {
        if t != ATTR_PRIORITY {
            out.extend_from_slice(&buf[at..at + len]);
        }
    }
    out.extend_from_slice(&ATTR_PRIORITY.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&prio.to_be_bytes());
    let with_mi = out.len() + 24 - 20;
    out[2..4].copy_from_slice(&(with_mi as u16).to_be_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, &out);
    out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
    out.extend_from_slice(&20u16.to_be_bytes());
    out.extend_from_slice(tag.as_ref());
    let with_fp = out.len() + 8 - 20;
    out[2..4].copy_from_slice(&(with_fp as u16).to_be_bytes());
    let crc = crc32(&out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// PRIORITY given to a verified USE-CANDIDATE check from a new address of a
/// connected session (NAT rebinding), plus the session's rebinding count:
/// above any host candidate's priority, so the newest validated address wins.
const REBIND_PRIORITY_BASE: u32 = 0x7f00_0000;

/// The PRIORITY for a session's `rebinds`-th rebinding (see [`with_priority`]).
pub fn rebind_priority(rebinds: u32) -> u32 {
    REBIND_PRIORITY_BASE
        .saturating_add(rebinds)
        .min(0x7fff_ffff)
}

/// The STUN shim: the Binding request str0m should see instead of `buf`,
/// or `None` to pass `buf` on unchanged. `rebind`: the check is a NAT
/// rebinding, re-signed with this PRIORITY ([`with_priority`]); otherwise a
/// missing PRIORITY is added ([`add_missing_priority`]). `pwd` gives the
/// session's local ICE password, asked for only when a copy is made.
pub fn shim(buf: &[u8], rebind: Option<u32>, pwd: impl FnOnce() -> String) -> Option<Vec<u8>> {
    match rebind {
        Some(prio) => with_priority(buf, &pwd(), prio),
        None if lacks_priority(buf) => add_missing_priority(buf, &pwd()),
        None => None,
    }
}

/// The transaction id of a STUN message (`None` if too short for a header).
pub fn stun_txid(buf: &[u8]) -> Option<[u8; 12]> {
    buf.get(8..20)?.try_into().ok()
}

/// Binding transaction ids remembered per session, to refuse promoting a
/// replayed check: a few seconds of a client's checks.
pub const RECENT_TXIDS: usize = 16;

/// The transaction ids of one session's latest Binding requests (any
/// address), at most [`RECENT_TXIDS`].
#[derive(Debug, Clone)]
pub struct RecentTxids(VecDeque<[u8; 12]>);

impl Default for RecentTxids {
    fn default() -> Self {
        RecentTxids(VecDeque::with_capacity(RECENT_TXIDS))
    }
}

impl RecentTxids {
    /// Whether `txid` was seen before; remembers it if not (forgetting the oldest).
    pub fn seen(&mut self, txid: [u8; 12]) -> bool {
        if self.0.contains(&txid) {
            return true;
        }
        if self.0.len() >= RECENT_TXIDS {
            self.0.pop_front();
        }
        self.0.push_back(txid);
        false
    }
}

/// Cheap pre-check for [`add_missing_priority`]: a Binding request without PRIORITY.
pub fn lacks_priority(buf: &[u8]) -> bool {
    buf.len() >= 2
        && u16::from_be_bytes([buf[0], buf[1]]) == BINDING_REQUEST
        && stun_attrs(buf).is_some_and(|a| !a.iter().any(|a| a.0 == ATTR_PRIORITY))
}

/// CRC-32 (IEEE 802.3), as STUN FINGERPRINT uses. Bitwise: this runs only on
/// the rare shimmed Binding request.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The most remote addresses remembered per session (NAT rebinding, several
/// candidates). The oldest is forgotten first.
pub const MAX_ADDRS_PER_SESSION: usize = 8;

/// Address and ufrag maps. Every insertion has a removal path in [`Demux::remove_session`].
#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    addrs_of: super::id::IdMap<Vec<SocketAddr>>,
}

impl Demux {
    /// Route STUN for `ufrag` to `id`.
    pub fn add_ufrag(&mut self, ufrag: String, id: SessionId) {
        self.by_ufrag.insert(ufrag, id);
    }

    /// Stop routing `ufrag` (if it still routes to `id`).
    pub fn remove_ufrag(&mut self, ufrag: &str, id: SessionId) {
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
    }

    /// The session owning local ufrag `ufrag`.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<SessionId> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// The session a datagram of class `class` from `source` is for: STUN by
    /// the local ufrag of its USERNAME (a response or indication, which has
    /// none, by address), DTLS and RTP by the validated address only.
    pub fn route(
        &self,
        class: Class,
        buf: &[u8],
        source: &SocketAddr,
    ) -> Result<SessionId, DropReason> {
        match class {
            Class::Stun => match stun_local_ufrag(buf) {
                Some(u) => self.by_ufrag(u).ok_or(DropReason::StunRejected),
                // Not for us, or a binding response/indication from a known peer.
                None => self.by_addr(source).ok_or(DropReason::StunRejected),
            },
            Class::Dtls | Class::Rtp => self.by_addr(source).ok_or(DropReason::UnknownSource),
            Class::Other => Err(DropReason::UnknownSource),
        }
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
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn priority_shim_needs_valid_integrity() {
        // A request with USERNAME + MI (key "pw"), no PRIORITY.
        let mut b = binding(b"srv:cli");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"pw");
        let len = (b.len() + 24 - 20) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, &b);
        b.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        b.extend_from_slice(&20u16.to_be_bytes());
        b.extend_from_slice(tag.as_ref());
        let fixed = add_missing_priority(&b, "pw").expect("shimmed");
        let attrs = stun_attrs(&fixed).unwrap();
        let types: Vec<u16> = attrs.iter().map(|a| a.0).collect();
        assert_eq!(
            types,
            vec![
                ATTR_USERNAME,
                ATTR_PRIORITY,
                ATTR_MESSAGE_INTEGRITY,
                ATTR_FINGERPRINT
            ]
        );
        assert_eq!(stun_local_ufrag(&fixed), Some("srv"));
        // Wrong password: untouched.
        assert!(add_missing_priority(&b, "other").is_none());
        // Already has PRIORITY: untouched.
        assert!(add_missing_priority(&fixed, "pw").is_none());
        // Garbage never panics.
        for n in 0..b.len() {
            let _ = add_missing_priority(&b[..n], "pw");
        }
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

    #[test]
    fn recent_txids_are_bounded_and_remembered() {
        let mut r = RecentTxids::default();
        assert!(!r.seen([1; 12]));
        assert!(r.seen([1; 12]));
        for i in 2..=RECENT_TXIDS as u8 + 1 {
            assert!(!r.seen([i; 12]));
        }
        assert_eq!(r.0.len(), RECENT_TXIDS);
        assert!(!r.seen([1; 12]), "the oldest was forgotten");
    }

    #[test]
    fn routing_by_class() {
        let mut d = Demux::default();
        let (a, b) = (SessionId(1), SessionId(2));
        let from = SocketAddr::from(([192, 0, 2, 1], 5000));
        d.add_ufrag("srv".into(), a);
        d.add_addr(from, b);
        assert_eq!(d.route(Class::Stun, &binding(b"srv:cli"), &from), Ok(a));
        assert_eq!(
            d.route(Class::Stun, &binding(b"nope:cli"), &from),
            Err(DropReason::StunRejected)
        );
        assert_eq!(d.route(Class::Stun, &[1, 1, 0, 0], &from), Ok(b));
        assert_eq!(d.route(Class::Rtp, &[0x80], &from), Ok(b));
        let other = SocketAddr::from(([192, 0, 2, 2], 5000));
        assert_eq!(
            d.route(Class::Dtls, &[22], &other),
            Err(DropReason::UnknownSource)
        );
        assert_eq!(
            d.route(Class::Other, &[200], &from),
            Err(DropReason::UnknownSource)
        );
    }
}

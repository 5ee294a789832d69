//! Ids: room names, session ids and the unguessable session tokens.

use std::fmt;

/// A validated room name: `[A-Za-z0-9_-]{1,64}`.
///
/// Validation makes it safe in URLs, log lines and file paths (no separators,
/// no dots, no control characters).
///
/// Shared (`Arc<str>`), so the packet path can copy it without allocating.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(std::sync::Arc<str>);

/// The longest accepted room name.
pub const MAX_ROOM_NAME: usize = 64;

impl RoomName {
    /// Validate `s`; `None` if it is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    pub fn new(s: &str) -> Option<RoomName> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ROOM_NAME
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| RoomName(s.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Internal handle of a session: small, `Copy`, never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Hasher for maps keyed by [`SessionId`]: the ids are sequential and chosen
/// by wisp, never by a peer, so a multiplicative hash is safe (no flooding
/// risk) and much cheaper than SipHash on the per-viewer lookup.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map keyed by [`SessionId`] with [`IdHasher`].
pub type IdMap<V> =
    std::collections::HashMap<SessionId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The public, unguessable part of a session URL: 128 random bits as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionToken([u8; 16]);

impl SessionToken {
    /// Parse 32 hex digits (either case); `None` for anything else.
    pub fn parse(s: &str) -> Option<SessionToken> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            let hi = (b[2 * i] as char).to_digit(16)?;
            let lo = (b[2 * i + 1] as char).to_digit(16)?;
            *o = (hi * 16 + lo) as u8;
        }
        Some(SessionToken(out))
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Which worker of the process owns a session token: a keyed hash of the
/// token (HMAC-SHA256 under a per-process key) modulo the worker count.
///
/// Each core makes only tokens it owns (it draws again otherwise, `count`
/// draws on average), so the HTTP side routes a session URL to its worker
/// without a map, while the token stays 128 random bits that say nothing
/// of the worker to anyone without the key.
#[derive(Clone)]
pub struct TokenShard {
    key: aws_lc_rs::hmac::Key,
    /// This core's index (the owner of the tokens it makes).
    pub index: usize,
    /// Workers in the process (1: every token is this core's).
    pub count: usize,
}

impl fmt::Debug for TokenShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenShard")
            .field("index", &self.index)
            .field("count", &self.count)
            .finish()
    }
}

impl Default for TokenShard {
    /// One worker: every token is its own.
    fn default() -> Self {
        TokenShard::new([0; 32], 0, 1)
    }
}

impl TokenShard {
    /// Worker `index` of `count`, under the process's `key`.
    pub fn new(key: [u8; 32], index: usize, count: usize) -> TokenShard {
        assert!(index < count.max(1), "worker {index} of {count}");
        TokenShard {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
            index,
            count: count.max(1),
        }
    }

    /// The worker that owns `t`.
    pub fn owner(&self, t: SessionToken) -> usize {
        if self.count == 1 {
            return 0;
        }
        let tag = aws_lc_rs::hmac::sign(&self.key, &t.0);
        let mut b = [0u8; 8];
        b.copy_from_slice(&tag.as_ref()[..8]);
        (u64::from_be_bytes(b) % self.count as u64) as usize
    }
}

/// Deterministic generator of unguessable bytes: HMAC-SHA256(seed, counter).
///
/// With a random 32-byte seed (the binary reads one from the OS) the output is
/// unpredictable; with a fixed seed (tests) it is reproducible.
pub struct IdGen {
    key: aws_lc_rs::hmac::Key,
    counter: u64,
}

impl fmt::Debug for IdGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdGen")
            .field("counter", &self.counter)
            .finish()
    }
}

impl IdGen {
    /// A generator keyed by `seed`.
    pub fn new(seed: [u8; 32]) -> IdGen {
        IdGen {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &seed),
            counter: 0,
        }
    }

    fn next_block(&mut self) -> [u8; 32] {
        self.counter += 1;
        let tag = aws_lc_rs::hmac::sign(&self.key, &self.counter.to_be_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// A fresh session token.
    pub fn token(&mut self) -> SessionToken {
        let b = self.next_block();
        let mut t = [0u8; 16];
        t.copy_from_slice(&b[..16]);
        SessionToken(t)
    }

    /// A fresh session token owned by `shard`'s worker.
    pub fn token_for(&mut self, shard: &TokenShard) -> SessionToken {
        loop {
            let t = self.token();
            if shard.owner(t) == shard.index {
                return t;
            }
        }
    }

    /// A random u32 (initial RTP timestamps).
    pub fn u32(&mut self) -> u32 {
        let b = self.next_block();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::new("abc-DEF_123").is_some());
        assert!(RoomName::new(&"a".repeat(64)).is_some());
        for bad in [
            "",
            "../x",
            "a/b",
            "a b",
            "a.b",
            "a\0b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(RoomName::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn shards_own_their_tokens() {
        let shards: Vec<TokenShard> = (0..3).map(|i| TokenShard::new([7; 32], i, 3)).collect();
        let mut g = IdGen::new([1; 32]);
        let mut seen = [0; 3];
        for s in &shards {
            for _ in 0..20 {
                let t = g.token_for(s);
                // Every worker's routing agrees with the maker.
                assert!(shards.iter().all(|o| o.owner(t) == s.index));
                seen[s.index] += 1;
            }
        }
        assert_eq!(seen, [20, 20, 20]);
        assert_eq!(TokenShard::default().owner(g.token()), 0);
    }

    #[test]
    fn tokens_round_trip_and_differ() {
        let mut g = IdGen::new([7; 32]);
        let a = g.token();
        let b = g.token();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(SessionToken::parse(&s), Some(a));
        assert_eq!(SessionToken::parse(&s.to_uppercase()), Some(a));
        assert_eq!(SessionToken::parse("zz"), None);
        assert_eq!(SessionToken::parse(&"g".repeat(32)), None);
    }
}

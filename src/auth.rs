//! Bearer-token authorisation (RFC 6750) for WHIP, WHEP and the admin routes.
//!
//! Rules:
//! - Three roles: publish (WHIP), view (WHEP) and admin (room API, `/metrics`).
//!   The admin token also satisfies publish and view.
//! - A role is open when no token is configured for it (for that room): a
//!   laptop needs no setup.
//! - A room entry in the tokens file overrides the global token of that role
//!   in that room.
//! - Missing credentials → [`Decision::Missing`] (401), a token that matches
//!   nothing → [`Decision::Invalid`] (401 `error="invalid_token"`), a token
//!   valid for another role or room → [`Decision::Forbidden`] (403).
//! - Tokens are compared in constant time and never appear in `Debug` output,
//!   logs or error messages.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::sfu::id::RoomName;

/// Longest accepted token, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// WHIP: POST, PATCH, DELETE on `/whip/...`.
    Publish,
    /// WHEP: POST, PATCH, DELETE on `/whep/...`.
    View,
    /// Room API and `/metrics`.
    Admin,
}

/// The result of [`Auth::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// No Bearer credentials (401 without an error code).
    Missing,
    /// A token that is valid nowhere (401, `error="invalid_token"`).
    Invalid,
    /// A token valid for another role or room (403).
    Forbidden,
}

/// A secret: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Validate a token: 1 to [`MAX_TOKEN_LEN`] visible ASCII characters (no
    /// spaces). The error never contains the token.
    pub fn new(s: &str) -> Result<Token, String> {
        if s.is_empty() {
            return Err("a token must not be empty".into());
        }
        if s.len() > MAX_TOKEN_LEN {
            return Err(format!("a token must be at most {MAX_TOKEN_LEN} bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token may only hold visible ASCII characters (no spaces)".into());
        }
        Ok(Token(s.to_string()))
    }

    /// The secret itself, to present to another server (a cluster pull's
    /// `Authorization` header). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(presented.as_bytes(), self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Compare every byte of `presented` with `secret` (cycled), fold in the
/// length difference, and only then branch. The running time depends on the
/// presented length only. `secret` must not be empty.
fn ct_eq(presented: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut diff = presented.len() ^ secret.len();
    for (i, &p) in presented.iter().enumerate() {
        diff |= usize::from(p ^ secret[i % secret.len()]);
    }
    std::hint::black_box(diff) == 0
}

/// Per-room overrides from the tokens file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RoomTokens {
    /// Replaces the global publish token in this room.
    pub publish: Option<Token>,
    /// Replaces the global view token in this room.
    pub view: Option<Token>,
    /// Recording override for this room (`"record": true|false`); a
    /// `?record=` on the WHIP POST wins over it.
    pub record: Option<bool>,
}

impl fmt::Debug for RoomTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomTokens")
            .field("publish", &self.publish.is_some())
            .field("view", &self.view.is_some())
            .field("record", &self.record)
            .finish()
    }
}

/// Every configured token. `Default` is fully open.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    publish: Option<Token>,
    view: Option<Token>,
    admin: Option<Token>,
    rooms: HashMap<String, RoomTokens>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("publish", &self.publish.is_some())
            .field("view", &self.view.is_some())
            .field("admin", &self.admin.is_some())
            .field("rooms", &self.rooms.len())
            .finish()
    }
}

impl Auth {
    /// Server-wide tokens; `None` leaves that role open.
    pub fn new(publish: Option<Token>, view: Option<Token>, admin: Option<Token>) -> Auth {
        Auth {
            publish,
            view,
            admin,
            rooms: HashMap::new(),
        }
    }

    /// Add per-room overrides (see [`parse_tokens_file`]).
    pub fn with_rooms(mut self, rooms: HashMap<String, RoomTokens>) -> Auth {
        self.rooms = rooms;
        self
    }

    /// The tokens file's recording override for `room`, if any.
    pub fn room_record(&self, room: &str) -> Option<bool> {
        self.rooms.get(room).and_then(|r| r.record)
    }

    /// True if no token is configured at all.
    pub fn is_open(&self) -> bool {
        self.publish.is_none()
            && self.view.is_none()
            && self.admin.is_none()
            && self
                .rooms
                .values()
                .all(|r| r.publish.is_none() && r.view.is_none())
    }

    /// The token a role needs in `room`, or `None` if that role is open there.
    fn required(&self, need: Need, room: Option<&str>) -> Option<&Token> {
        let over = room.and_then(|r| self.rooms.get(r));
        match need {
            Need::Publish => over
                .and_then(|o| o.publish.as_ref())
                .or(self.publish.as_ref()),
            Need::View => over.and_then(|o| o.view.as_ref()).or(self.view.as_ref()),
            Need::Admin => self.admin.as_ref(),
        }
    }

    /// May a request with this `Authorization` header value do `need` in `room`?
    pub fn check(&self, need: Need, room: Option<&str>, authorization: Option<&str>) -> Decision {
        let Some(required) = self.required(need, room) else {
            return Decision::Allow;
        };
        let Some(presented) = authorization.and_then(bearer) else {
            return Decision::Missing;
        };
        // Non-short-circuit `|`: both comparisons always run.
        let admin_ok =
            need != Need::Admin && self.admin.as_ref().is_some_and(|a| a.matches(presented));
        if required.matches(presented) | admin_ok {
            return Decision::Allow;
        }
        // Valid somewhere else? Compare with every token, without stopping early.
        let mut known = false;
        for t in [&self.publish, &self.view, &self.admin]
            .into_iter()
            .flatten()
        {
            known |= t.matches(presented);
        }
        for r in self.rooms.values() {
            for t in [&r.publish, &r.view].into_iter().flatten() {
                known |= t.matches(presented);
            }
        }
        if known {
            Decision::Forbidden
        } else {
            Decision::Invalid
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive). `None` for another scheme; `Some("")` for an empty one.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| rest.trim_start())
}

/// Parse a tokens file: `{"room": {"publish": "...", "view": "..."}, ...}`.
///
/// Room names must be valid (`[A-Za-z0-9_-]{1,64}`), only `publish` and
/// `view` keys are allowed, and each value is a valid [`Token`]. Errors name
/// the room and key, never the token.
pub fn parse_tokens_file(text: &str) -> Result<HashMap<String, RoomTokens>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("the top level must be an object of room names")?;
    let mut out = HashMap::new();
    for (room, entry) in obj {
        if RoomName::new(room).is_none() {
            let shown: String = room.chars().take(64).collect();
            return Err(format!(
                "invalid room name {shown:?}: use 1-64 of A-Z a-z 0-9 _ -"
            ));
        }
        let entry = entry.as_object().ok_or_else(|| {
            format!("room {room:?}: expected an object with \"publish\" and/or \"view\"")
        })?;
        let mut tokens = RoomTokens::default();
        for (key, value) in entry {
            if key == "record" {
                tokens.record =
                    Some(value.as_bool().ok_or_else(|| {
                        format!("room {room:?}: \"record\" must be true or false")
                    })?);
                continue;
            }
            let slot = match key.as_str() {
                "publish" => &mut tokens.publish,
                "view" => &mut tokens.view,
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(format!(
                        "room {room:?}: unknown key {shown:?} (only \"publish\", \"view\" and \"record\")"
                    ));
                }
            };
            let s = value
                .as_str()
                .ok_or_else(|| format!("room {room:?}: \"{key}\" must be a string"))?;
            *slot = Some(Token::new(s).map_err(|e| format!("room {room:?}: \"{key}\": {e}"))?);
        }
        out.insert(room.clone(), tokens);
    }
    Ok(out)
}

/// Read and parse a tokens file; the error names the file.
pub fn load_tokens_file(path: &Path) -> Result<HashMap<String, RoomTokens>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
    parse_tokens_file(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<Token> {
        Some(Token::new(s).unwrap())
    }

    fn auth() -> Auth {
        let rooms = parse_tokens_file(
            r#"{"vip": {"publish": "vip-pub", "view": "vip-view"}, "half": {"view": "half-view"}}"#,
        )
        .unwrap();
        Auth::new(t("pub"), t("view"), t("admin")).with_rooms(rooms)
    }

    #[test]
    fn tokens_file_record_switch() {
        let rooms = parse_tokens_file(
            r#"{"on": {"record": true}, "off": {"publish": "p", "record": false}, "plain": {"view": "v"}}"#,
        )
        .unwrap();
        let a = Auth::new(None, None, None).with_rooms(rooms);
        assert_eq!(a.room_record("on"), Some(true));
        assert_eq!(a.room_record("off"), Some(false));
        assert_eq!(a.room_record("plain"), None);
        assert_eq!(a.room_record("absent"), None);
        assert!(parse_tokens_file(r#"{"r": {"record": "yes"}}"#).is_err());
    }

    #[test]
    fn ct_eq_cases() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abd", b"abc"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(!ct_eq(b"abcabc", b"abc"));
        assert!(!ct_eq(b"", b"abc"));
        assert!(!ct_eq(b"", b""));
    }

    #[test]
    fn open_by_default() {
        let a = Auth::default();
        assert!(a.is_open());
        for need in [Need::Publish, Need::View, Need::Admin] {
            assert_eq!(a.check(need, Some("r"), None), Decision::Allow);
            assert_eq!(a.check(need, None, Some("Bearer junk")), Decision::Allow);
        }
        // Only publish locked: view and admin stay open.
        let a = Auth::new(t("p"), None, None);
        assert_eq!(a.check(Need::View, Some("r"), None), Decision::Allow);
        assert_eq!(a.check(Need::Publish, Some("r"), None), Decision::Missing);
    }

    #[test]
    fn decisions() {
        let a = auth();
        let c = |need, room, h: &str| a.check(need, room, Some(h));
        assert_eq!(a.check(Need::Publish, Some("r"), None), Decision::Missing);
        assert_eq!(c(Need::Publish, Some("r"), "Basic abc"), Decision::Missing);
        assert_eq!(c(Need::Publish, Some("r"), "Bearer pub"), Decision::Allow);
        assert_eq!(
            c(Need::Publish, Some("r"), "bearer   pub "),
            Decision::Allow
        );
        assert_eq!(c(Need::Publish, Some("r"), "Bearer admin"), Decision::Allow);
        assert_eq!(
            c(Need::Publish, Some("r"), "Bearer nope"),
            Decision::Invalid
        );
        assert_eq!(c(Need::Publish, Some("r"), "Bearer "), Decision::Invalid);
        assert_eq!(
            c(Need::Publish, Some("r"), "Bearer view"),
            Decision::Forbidden
        );
        assert_eq!(c(Need::View, Some("r"), "Bearer view"), Decision::Allow);
        // Room overrides replace the global token there.
        assert_eq!(
            c(Need::Publish, Some("vip"), "Bearer vip-pub"),
            Decision::Allow
        );
        assert_eq!(
            c(Need::Publish, Some("vip"), "Bearer pub"),
            Decision::Forbidden
        );
        assert_eq!(
            c(Need::Publish, Some("r"), "Bearer vip-pub"),
            Decision::Forbidden
        );
        assert_eq!(c(Need::View, Some("vip"), "Bearer admin"), Decision::Allow);
        // A room entry with only `view` keeps the global publish token.
        assert_eq!(
            c(Need::Publish, Some("half"), "Bearer pub"),
            Decision::Allow
        );
        assert_eq!(
            c(Need::View, Some("half"), "Bearer view"),
            Decision::Forbidden
        );
        // Admin needs the admin token.
        assert_eq!(c(Need::Admin, None, "Bearer admin"), Decision::Allow);
        assert_eq!(c(Need::Admin, None, "Bearer pub"), Decision::Forbidden);
        assert_eq!(a.check(Need::Admin, None, None), Decision::Missing);
    }

    #[test]
    fn tokens_file_errors_never_show_tokens() {
        for (text, needle) in [
            ("[]", "top level"),
            ("{", "JSON"),
            (r#"{"a.b": {}}"#, "invalid room name"),
            (r#"{"r": "x"}"#, "expected an object"),
            (r#"{"r": {"admin": "s3cret"}}"#, "unknown key"),
            (r#"{"r": {"view": 5}}"#, "must be a string"),
            (r#"{"r": {"view": "s3 cret"}}"#, "visible ASCII"),
            (r#"{"r": {"view": ""}}"#, "empty"),
        ] {
            let e = parse_tokens_file(text).unwrap_err();
            assert!(e.contains(needle), "{e} lacks {needle}");
            assert!(!e.contains("s3"), "{e}");
        }
        let e = load_tokens_file(Path::new("/nonexistent/wisp-tokens.json")).unwrap_err();
        assert!(e.contains("/nonexistent/wisp-tokens.json"), "{e}");
    }

    #[test]
    fn debug_hides_tokens() {
        let s = format!("{:?}", auth());
        assert!(
            !s.contains("pub\"") && !s.contains("vip-") && !s.contains("admin\""),
            "{s}"
        );
        assert_eq!(
            format!("{:?}", Token::new("hunter2").unwrap()),
            "Token(<redacted>)"
        );
    }
}

//! Small text operations on SDP and sdpfrag bodies that str0m does not offer:
//! reading ICE lines, completing the answer for WHIP/WHEP, and building the
//! ICE-restart fragment; the checks an offer must pass before str0m sees
//! it. Pure functions over strings.

use super::command::ApiError;

/// The ICE-related content of a `application/trickle-ice-sdpfrag` body (RFC 8840).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frag {
    /// `a=ice-ufrag`, if present.
    pub ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub pwd: Option<String>,
    /// `a=ice-options`, if present (echoed on restart).
    pub ice_options: Option<String>,
    /// Candidate attribute values without the `a=` prefix (`candidate:…`).
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` seen.
    pub end_of_candidates: bool,
}

/// Most candidate lines accepted in one fragment.
pub const MAX_FRAG_CANDIDATES: usize = 64;

/// Parse an sdpfrag. Lines other than ICE lines (`m=`, `a=mid`, ...) are
/// ignored; a body with nothing ICE-related is an error.
pub fn parse_frag(body: &str) -> Result<Frag, String> {
    let mut f = Frag::default();
    let mut seen = false;
    for line in body.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            f.ufrag.get_or_insert_with(|| v.trim().to_string());
            seen = true;
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            f.pwd.get_or_insert_with(|| v.trim().to_string());
            seen = true;
        } else if let Some(v) = line.strip_prefix("a=ice-options:") {
            f.ice_options = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                if f.candidates.len() >= MAX_FRAG_CANDIDATES {
                    return Err("too many candidates".into());
                }
                f.candidates.push(v.to_string());
                seen = true;
            } else if v == "end-of-candidates" {
                f.end_of_candidates = true;
                seen = true;
            }
        }
    }
    if !seen {
        return Err("no ICE attributes".into());
    }
    if let Some(u) = &f.ufrag {
        if u.is_empty() || u.len() > 256 {
            return Err("bad ice-ufrag".into());
        }
    }
    Ok(f)
}

/// The first value of attribute `a=<name>:` in `sdp`.
pub fn attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(name)?
            .strip_prefix(':')
    })
}

/// Make str0m's answer what WHIP/WHEP ask for: `a=rtcp-mux-only` beside every
/// `a=rtcp-mux`, and `a=end-of-candidates` after the last candidate of each section.
///
/// Opus lines get `stereo=1;sprop-stereo=1`: browsers send and play stereo only
/// when the answer says so, and a mono stream still plays under it.
pub fn complete_answer(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len() + 128);
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    let has_eoc = lines.contains(&"a=end-of-candidates");
    let opus_pts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|r| r.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/48000/2"))
        .map(|(pt, _)| pt)
        .collect();
    for (i, l) in lines.iter().enumerate() {
        out.push_str(l);
        let is_opus_fmtp = l
            .strip_prefix("a=fmtp:")
            .and_then(|r| r.split_once(' '))
            .is_some_and(|(pt, _)| opus_pts.contains(&pt));
        if is_opus_fmtp && !l.contains("stereo=") {
            out.push_str(";stereo=1;sprop-stereo=1");
        }
        out.push_str("\r\n");
        let opus_rtpmap = l
            .strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_once(' '))
            .filter(|(pt, _)| opus_pts.contains(pt));
        if let Some((pt, _)) = opus_rtpmap {
            let has_fmtp = lines
                .iter()
                .any(|x| x.starts_with(&format!("a=fmtp:{pt} ")));
            if !has_fmtp {
                out.push_str(&format!("a=fmtp:{pt} stereo=1;sprop-stereo=1\r\n"));
            }
        }
        if *l == "a=rtcp-mux" && !lines.contains(&"a=rtcp-mux-only") {
            out.push_str("a=rtcp-mux-only\r\n");
        }
        let next_is_candidate = lines
            .get(i + 1)
            .is_some_and(|n| n.starts_with("a=candidate:"));
        if !has_eoc && l.starts_with("a=candidate:") && !next_is_candidate {
            out.push_str("a=end-of-candidates\r\n");
        }
    }
    out
}

/// The offer with every two-way media section made one-way in the
/// direction the session can serve, so the answer says what wisp does: a
/// WHIP publisher (`publisher`) gets `recvonly` lines, a WHEP viewer
/// `sendonly` ones (RFC 9725 §4.2 and the WHEP draft require those answers).
/// `a=sendrecv` lines, at session or media level, become `a=sendonly`
/// (publisher) or `a=recvonly` (viewer), and a media section that states no
/// direction while the session level does not either (so is `sendrecv` by
/// RFC 4566) gets one. aiortc's `addTrack` and a browser's
/// `addTransceiver` without `direction` offer `sendrecv`. Other lines are
/// kept byte for byte; `inactive`, `sendonly` and `recvonly` stay as they are.
pub fn one_way_offer(offer: &str, publisher: bool) -> String {
    let target = if publisher {
        "a=sendonly"
    } else {
        "a=recvonly"
    };
    let is_dir = |l: &str| {
        matches!(
            l.trim_end(),
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        )
    };
    let session_end = offer.find("\nm=").map_or(offer.len(), |i| i + 1);
    let session_dir = offer[..session_end].lines().any(is_dir);
    let mut out = String::with_capacity(offer.len() + 64);
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let needs = !section.is_empty()
            && section[0].starts_with("m=")
            && !session_dir
            && !section.iter().any(|l| is_dir(l));
        for l in section.drain(..) {
            if l.trim_end() == "a=sendrecv" {
                out.push_str(target);
            } else {
                out.push_str(l.trim_end_matches('\r'));
            }
            out.push_str("\r\n");
        }
        if needs {
            out.push_str(target);
            out.push_str("\r\n");
        }
    };
    for line in offer.lines() {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

/// Whether a WHEP offer asks for every simulcast layer (`a=simulcast:recv`):
/// what an edge's pull of a simulcast room sends.
pub fn asks_every_layer(offer: &str) -> bool {
    offer.contains("a=simulcast:recv")
}

/// Whether a WHIP offer sends simulcast video (`a=simulcast:send`).
pub fn offers_simulcast(offer: &str) -> bool {
    offer.contains("a=simulcast:send")
}

/// The offer without its simulcast (`a=simulcast:` and `a=rid:` lines), so
/// the answer offers one plain stream: what a viewer that asked for every
/// layer gets of a room whose video has none. Other lines are kept.
pub fn without_simulcast(offer: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for l in offer.lines() {
        if l.starts_with("a=simulcast:") || l.starts_with("a=rid:") {
            continue;
        }
        out.push_str(l.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out
}

/// Rewrite a previously accepted offer for a remote ICE restart: new
/// ufrag/pwd everywhere, old candidates gone, the new ones in the first media section.
pub fn restart_offer(offer: &str, frag: &Frag) -> Option<String> {
    let (ufrag, pwd) = (frag.ufrag.as_deref()?, frag.pwd.as_deref()?);
    let mut out = String::with_capacity(offer.len() + 256);
    let mut first_media = true;
    let mut in_media = false;
    for l in offer.lines().map(str::trim_end) {
        if l.starts_with("a=candidate:") || l == "a=end-of-candidates" {
            continue;
        }
        if l.starts_with("m=") {
            in_media = true;
        }
        if l.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
            if in_media && first_media {
                first_media = false;
                for c in &frag.candidates {
                    out.push_str("\r\na=");
                    out.push_str(c);
                }
            }
        } else {
            out.push_str(l);
        }
        out.push_str("\r\n");
    }
    Some(out)
}

/// The server's sdpfrag after an ICE restart, cut from the new answer:
/// `a=ice-lite`, `a=ice-options` (echoed), the BUNDLE group, and the first
/// media section's `m=`, `a=mid`, credentials and candidates.
pub fn restart_frag(answer: &str, ice_options: Option<&str>) -> String {
    let mut out = String::from("a=ice-lite\r\n");
    if let Some(o) = ice_options {
        out.push_str(&format!("a=ice-options:{o}\r\n"));
    }
    let lines: Vec<&str> = answer.lines().map(str::trim_end).collect();
    if let Some(g) = lines.iter().find(|l| l.starts_with("a=group:BUNDLE")) {
        out.push_str(g);
        out.push_str("\r\n");
    }
    let mut in_first = false;
    for l in &lines {
        if l.starts_with("m=") {
            if in_first {
                break;
            }
            in_first = true;
            out.push_str(l);
            out.push_str("\r\n");
            continue;
        }
        if in_first
            && (l.starts_with("a=mid:")
                || l.starts_with("a=ice-ufrag:")
                || l.starts_with("a=ice-pwd:")
                || l.starts_with("a=candidate:"))
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    if !out.contains("a=ice-ufrag:") {
        if let Some(u) = attr(answer, "ice-ufrag") {
            out.push_str(&format!("a=ice-ufrag:{u}\r\n"));
        }
        if let Some(p) = attr(answer, "ice-pwd") {
            out.push_str(&format!("a=ice-pwd:{p}\r\n"));
        }
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

/// Number of m-lines and whether the offer has a BUNDLE group.
pub fn media_shape(offer: &str) -> (usize, bool) {
    let m = offer.lines().filter(|l| l.starts_with("m=")).count();
    let bundle = offer
        .lines()
        .any(|l| l.trim_end().starts_with("a=group:BUNDLE"));
    (m, bundle)
}

/// What str0m would accept but wisp cannot serve, or would misread: media
/// without BUNDLE, `a=setup:holdconn`, and candidate lines with a bad
/// component or port.
pub fn check_offer(offer: &str) -> Result<(), ApiError> {
    let (mlines, bundle) = media_shape(offer);
    if mlines > 1 && !bundle {
        return Err(ApiError::Unsupported(
            "offer without BUNDLE: all media must share one transport".into(),
        ));
    }
    if offer
        .lines()
        .any(|l| l.trim_end().eq_ignore_ascii_case("a=setup:holdconn"))
    {
        return Err(ApiError::Unsupported(
            "a=setup:holdconn: the offer asks for no DTLS connection".into(),
        ));
    }
    for c in offer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
    {
        let f: Vec<&str> = c.split_whitespace().collect();
        let component_ok = matches!(f.get(1).copied(), Some("1" | "2"));
        let port_ok = f
            .get(5)
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0);
        if !component_ok || !port_ok {
            return Err(ApiError::BadOffer(
                "bad a=candidate: component must be 1 or 2 and the port non-zero".into(),
            ));
        }
    }
    Ok(())
}

/// The `a=mid:` values of `sdp`, in order.
pub fn mids(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
}

/// The index of the m-line with `a=mid:<mid>` in `sdp`.
pub fn mline_of(sdp: &str, mid: &str) -> Option<usize> {
    let mut index = None::<usize>;
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            index = Some(index.map_or(0, |i| i + 1));
        } else if line.strip_prefix("a=mid:") == Some(mid) {
            return index;
        }
    }
    None
}

/// str0m's parse of an offer. Fuzz builds remember earlier parses of the
/// same text (`fuzzing::sdp_memo`, a third of `core_ops`'s time otherwise).
pub fn parse_offer(text: &str) -> Result<str0m::change::SdpOffer, str0m::error::SdpError> {
    #[cfg(all(fuzzing, feature = "fuzzing"))]
    return crate::fuzzing::sdp_memo::offer(text);
    #[cfg(not(all(fuzzing, feature = "fuzzing")))]
    str0m::change::SdpOffer::from_sdp_string(text)
}

/// The first line of `s`, trimmed to 200 characters, for error bodies.
pub fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulcast_lines_go() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
                     a=rid:h recv\r\na=rid:l recv\r\na=simulcast:recv h;l\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(
            without_simulcast(offer),
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n"
        );
    }

    #[test]
    fn frag_parse() {
        let f = parse_frag(
            "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
        assert!(parse_frag("hello").is_err());
        assert!(parse_frag("").is_err());
    }

    #[test]
    fn two_way_offers_become_one_way() {
        let offer = "v=0\r\ns=-\r\nm=audio 9 X 0\r\na=mid:0\r\na=sendrecv\r\nm=video 9 X 96\r\na=mid:1\r\nm=video 9 X 97\r\na=mid:2\r\na=inactive\r\n";
        let p = one_way_offer(offer, true);
        assert_eq!(p, "v=0\r\ns=-\r\nm=audio 9 X 0\r\na=mid:0\r\na=sendonly\r\nm=video 9 X 96\r\na=mid:1\r\na=sendonly\r\nm=video 9 X 97\r\na=mid:2\r\na=inactive\r\n");
        let v = one_way_offer(offer, false);
        assert_eq!(v.matches("a=recvonly").count(), 2, "{v}");
        assert!(!v.contains("a=sendrecv") && v.contains("a=inactive"), "{v}");
        // A session-level direction covers sections that state none.
        let session = "v=0\r\na=sendrecv\r\nm=audio 9 X 0\r\na=mid:0\r\n";
        assert_eq!(
            one_way_offer(session, true),
            "v=0\r\na=sendonly\r\nm=audio 9 X 0\r\na=mid:0\r\n"
        );
        // One-way offers are unchanged (line endings normalised to CRLF).
        let already = "v=0\r\nm=audio 9 X 0\r\na=recvonly\r\n";
        assert_eq!(one_way_offer(already, true), already);
        assert_eq!(
            one_way_offer("v=0\nm=audio 9 X 0\na=recvonly\n", false),
            already
        );
    }

    #[test]
    fn answer_completed() {
        let a = complete_answer("v=0\r\nm=audio 9 X 0\r\na=rtcp-mux\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\nm=video 9 X 0\r\na=rtcp-mux\r\n");
        assert_eq!(a.matches("a=rtcp-mux-only").count(), 2);
        assert_eq!(a.matches("a=end-of-candidates").count(), 1);
        let again = complete_answer(&a);
        assert_eq!(again, a, "idempotent");
        let o = complete_answer(
            "m=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n",
        );
        assert!(
            o.contains("a=fmtp:111 minptime=10;stereo=1;sprop-stereo=1\r\n"),
            "{o}"
        );
        let o = complete_answer("m=audio 9 X 111\r\na=rtpmap:111 OPUS/48000/2\r\n");
        assert!(o.contains("a=fmtp:111 stereo=1;sprop-stereo=1\r\n"), "{o}");
        assert_eq!(complete_answer(&o), o);
    }

    #[test]
    fn mline_index_by_mid() {
        let sdp = "v=0\r\nm=audio 9 X 0\r\na=mid:a0\r\nm=video 9 X 96\r\na=mid:v1\r\n";
        assert_eq!(mline_of(sdp, "a0"), Some(0));
        assert_eq!(mline_of(sdp, "v1"), Some(1));
        assert_eq!(mline_of(sdp, "x"), None);
        assert_eq!(mids(sdp).collect::<Vec<_>>(), ["a0", "v1"]);
    }

    #[test]
    fn offers_refused_before_str0m() {
        let two = "m=audio 9 X 0\r\nm=video 9 X 96\r\n";
        assert!(matches!(check_offer(two), Err(ApiError::Unsupported(_))));
        let hold = "m=audio 9 X 0\r\na=setup:HOLDCONN\r\n";
        assert!(matches!(check_offer(hold), Err(ApiError::Unsupported(_))));
        let port0 = "m=audio 9 X 0\r\na=candidate:1 1 udp 1 192.0.2.1 0 typ host\r\n";
        assert!(matches!(check_offer(port0), Err(ApiError::BadOffer(_))));
        let ok = "m=audio 9 X 0\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n";
        assert!(check_offer(ok).is_ok());
        assert_eq!(one_line("first\nsecond"), "first");
    }
}

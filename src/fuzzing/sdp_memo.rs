//! Parsed SDP, remembered by text, for fuzz builds only (`cfg(fuzzing)`,
//! set by cargo-fuzz; never in a product build or a test).
//!
//! Why: in `core_ops` every join parses the client's offer on the server
//! and the server's answer on the client, and every ICE restart parses a
//! full offer again: str0m's SDP parser (combine) takes about 1 M
//! instructions per parse, a third of the target's time. The bodies seed
//! every id generator from the input (`fuzzing::same_ids`) and certificates
//! are made once per process, so inputs that share their first operations
//! produce the same SDP text again and again.
//!
//! Parsing is a pure function of the text, so handing out a copy of an
//! earlier parse of the same text changes no behaviour of the code under
//! test. The parser itself stays fuzzed: the `sdp_offer` target and the
//! failing parses here go through it every time (only successes are kept).

use std::cell::RefCell;
use std::collections::HashMap;

use str0m::change::{SdpAnswer, SdpOffer};

/// Texts remembered per thread (a few MB at most); the map is emptied when
/// it is full, so it stays bounded whatever the inputs.
const MAX_TEXTS: usize = 512;

thread_local! {
    static OFFERS: RefCell<HashMap<String, SdpOffer>> = RefCell::new(HashMap::new());
    static ANSWERS: RefCell<HashMap<String, SdpAnswer>> = RefCell::new(HashMap::new());
}

/// [`SdpOffer::from_sdp_string`], remembered.
pub(crate) fn offer(text: &str) -> Result<SdpOffer, str0m::error::SdpError> {
    OFFERS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(o) = m.get(text) {
            return Ok(SdpOffer::from((**o).clone()));
        }
        let o = SdpOffer::from_sdp_string(text)?;
        if m.len() >= MAX_TEXTS {
            m.clear();
        }
        m.insert(text.to_owned(), SdpOffer::from((*o).clone()));
        Ok(o)
    })
}

/// [`SdpAnswer::from_sdp_string`], remembered.
pub(crate) fn answer(text: &str) -> Result<SdpAnswer, str0m::error::SdpError> {
    ANSWERS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(a) = m.get(text) {
            return Ok(SdpAnswer::from((**a).clone()));
        }
        let a = SdpAnswer::from_sdp_string(text)?;
        if m.len() >= MAX_TEXTS {
            m.clear();
        }
        m.insert(text.to_owned(), SdpAnswer::from((*a).clone()));
        Ok(a)
    })
}

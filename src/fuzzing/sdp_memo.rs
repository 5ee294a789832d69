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
use std::ops::Deref;
use std::thread::LocalKey;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::error::SdpError;

/// Texts remembered per thread and kind (a few MB at most); a map is
/// emptied when it is full, so it stays bounded whatever the inputs.
const MAX_TEXTS: usize = 512;

type Memo<T> = RefCell<HashMap<String, T>>;

thread_local! {
    static OFFERS: Memo<SdpOffer> = RefCell::new(HashMap::new());
    static ANSWERS: Memo<SdpAnswer> = RefCell::new(HashMap::new());
}

/// [`SdpOffer::from_sdp_string`], remembered.
pub(crate) fn offer(text: &str) -> Result<SdpOffer, SdpError> {
    remembered(&OFFERS, text, SdpOffer::from_sdp_string)
}

/// [`SdpAnswer::from_sdp_string`], remembered.
pub(crate) fn answer(text: &str) -> Result<SdpAnswer, SdpError> {
    remembered(&ANSWERS, text, SdpAnswer::from_sdp_string)
}

/// `parse(text)`, or a copy of its earlier success. Offer and answer wrap
/// the same parsed SDP (`Deref` to it, `From` it), which is `Clone`.
fn remembered<T, S>(
    memo: &'static LocalKey<Memo<T>>,
    text: &str,
    parse: fn(&str) -> Result<T, SdpError>,
) -> Result<T, SdpError>
where
    T: Deref<Target = S> + From<S>,
    S: Clone,
{
    memo.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(p) = m.get(text) {
            return Ok(T::from((**p).clone()));
        }
        let p = parse(text)?;
        if m.len() >= MAX_TEXTS {
            m.clear();
        }
        m.insert(text.to_owned(), T::from((*p).clone()));
        Ok(p)
    })
}

//! One DTLS certificate per process: every session presents the core's one
//! certificate, every answer's `a=fingerprint` is that certificate's hash, and
//! str0m clients (which check the fingerprint) complete DTLS against it.

mod common;

use std::time::Duration;

use common::{server_addr, TestNet};
use str0m::config::DtlsCert;
use wisp::sfu::{Sfu, SfuConfig};

/// `sha-256 AB:CD:…` of the certificate, as an SDP `a=fingerprint` writes it.
fn fingerprint(cert: &DtlsCert) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert.certificate);
    let hex: Vec<String> = d.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!("sha-256 {}", hex.join(":"))
}

/// Every `a=fingerprint` value of an SDP.
fn fingerprints(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .map(str::to_string)
        .collect()
}

/// A publisher and two viewers: three answers, one fingerprint, `want`; all
/// three connect (DTLS done) and the viewers get media.
fn three_sessions_share(net: &mut TestNet, want: &str) {
    let mut seen = vec![];
    let p = net.publish("fp");
    seen.extend(fingerprints(&net.last_answer));
    let v1 = net.view("fp");
    seen.extend(fingerprints(&net.last_answer));
    let v2 = net.view("fp");
    seen.extend(fingerprints(&net.last_answer));
    assert!(seen.len() >= 3, "an answer without a fingerprint: {seen:?}");
    assert!(
        seen.iter().all(|f| f.eq_ignore_ascii_case(want)),
        "answers carry {seen:?}, the certificate is {want}"
    );
    net.run_for(Duration::from_secs(2));
    for i in [p, v1, v2] {
        assert!(net.connected(i), "client {i} did not complete DTLS");
    }
    for v in [v1, v2] {
        assert!(net.clients[v].got.len() > 20, "viewer {v} got no media");
    }
}

#[test]
fn a_certificate_given_to_the_core_is_in_every_answer() {
    let cert = wisp::sfu::dtls::new_dtls_cert();
    let want = fingerprint(&cert);
    let config = SfuConfig {
        dtls_cert: Some(cert),
        ..SfuConfig::default()
    };
    let mut net = TestNet::with_config(31, config);
    three_sessions_share(&mut net, &want);
}

/// As the binary does: no certificate in the configuration, so `Sfu::new`
/// makes the process's one.
#[test]
fn the_core_makes_one_certificate_for_all_sessions() {
    let mut net = TestNet::new(32);
    let config = SfuConfig {
        candidates: vec![server_addr()],
        ..SfuConfig::default()
    };
    net.sfu = Sfu::new(config, net.now);
    let cert = net
        .sfu
        .config()
        .dtls_cert
        .clone()
        .expect("Sfu::new made one");
    let want = fingerprint(&cert);
    assert_ne!(
        want,
        fingerprint(&common::server_cert()),
        "a fresh certificate, not the test net's"
    );
    three_sessions_share(&mut net, &want);
}

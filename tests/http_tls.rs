//! HTTPS: `http::bind` with a generated self-signed certificate serves a
//! request over TLS to a rustls client that trusts only that certificate,
//! and a plain-HTTP request to the TLS port gets no HTTP answer.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::TlsFiles;
use wisp::http::{self, HttpConfig, PoolConfig};

#[test]
fn https_serves_with_a_generated_certificate() {
    let tls = TlsFiles::generate("tls");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = http::bind(addr, Some((tls.cert.as_path(), tls.key.as_path()))).unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (tx, _core_rx) = crossbeam_channel::bounded(8);
    let pool = PoolConfig {
        reply_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    http::spawn_with(server, HttpConfig::default(), tx, waker, pool).unwrap();

    let resp = support::https(addr, &tls.der, "GET", "/healthz", Duration::from_secs(10))
        .expect("HTTPS request");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.text(), "ok");

    // A client that trusts another certificate fails the handshake.
    let other = TlsFiles::generate("tls-other");
    let e = support::https(addr, &other.der, "GET", "/healthz", Duration::from_secs(10));
    assert!(e.is_err(), "{e:?}");

    // Plain HTTP to the TLS port: the server's bytes (if any) are no HTTP
    // response, so there is no status line to read.
    let plain = support::http(addr, "GET", "/healthz", &[], b"", Duration::from_secs(3));
    assert!(plain.is_err(), "{plain:?}");
}

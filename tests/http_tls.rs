//! HTTPS: `http_thread::bind` with a generated self-signed certificate serves
//! a request over TLS. The client is `curl -k` (no TLS client crate in the
//! tree); without curl the request part is skipped with a printed reason.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use wisp::http::HttpConfig;
use wisp::http_thread::{self, PoolConfig};

#[test]
fn https_serves_with_a_generated_certificate() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wisp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = http_thread::bind(addr, Some((cert.as_path(), key.as_path()))).unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (tx, _core_rx) = crossbeam_channel::bounded(8);
    let pool = PoolConfig {
        reply_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    http_thread::spawn_with(server, HttpConfig::default(), tx, waker, pool).unwrap();

    if !Path::new("/usr/bin/curl").exists()
        && Process::new("curl").arg("--version").output().is_err()
    {
        println!("SKIPPED the HTTPS request: no curl on this machine");
        return;
    }
    let out = Process::new("curl")
        .args(["-k", "-sS", "-i", "--max-time", "10"])
        .arg(format!("https://localhost:{}/healthz", addr.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Access-Control-Allow-Origin: *"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
    // Plain HTTP to the TLS port does not get an answer.
    let out = Process::new("curl")
        .args(["-sS", "--max-time", "3"])
        .arg(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok"));
    std::fs::remove_dir_all(&dir).unwrap();
}

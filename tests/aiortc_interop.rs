//! A real aiortc client (Python, PyPI `aiortc`) against the real wisp binary:
//! an aiortc publisher over WHIP (VP8 + Opus) and an aiortc viewer over WHEP,
//! both in `tests/aiortc/whip_whep.py`. The viewer must decode at least 60
//! video frames within 8 s. Three cases: the offers as aiortc writes them
//! (`a=setup:actpass`, wisp the DTLS server), rewritten to `passive` with
//! SRTP AES128_CM_SHA1_80 only (wisp the DTLS client of aiortc's OpenSSL
//! server: the role and profile FFmpeg's WHIP muxer gives it) and to
//! `active`.
//!
//! aiortc's own defaults are kept: its DTLS client offers only ECDHE-ECDSA
//! suites and SRTP AEAD-AES-256/128-GCM and AES128-CM-SHA1-80, its offer
//! carries every candidate and `a=end-of-candidates` with `a=setup:actpass`,
//! three fingerprints (SHA-256/384/512), and with the default "balanced"
//! bundle policy a port and candidate per m-line while the offer still
//! groups them in BUNDLE. The publisher offers `sendrecv` (aiortc's
//! `addTrack`). The script lets aioice use 127.0.0.1, so no network
//! namespace is needed. Without Python's aiortc the test prints SKIPPED,
//! unless `CI` is set (.ci/run installs it), in which case it fails.

mod realnet;
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use realnet::{http, start_server};
use serde_json::{json, Value};

/// The Python interpreter; `WISP_TEST_PYTHON` overrides `python3`.
fn python() -> String {
    std::env::var("WISP_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether aiortc imports; otherwise SKIPPED (or a failure under `CI`).
fn have_aiortc(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", "import aiortc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip_unless_ci(
            test,
            "Python's aiortc is not installed (pip install aiortc)",
        );
    }
    ok
}

/// Runs the script against wisp, killing it after `limit`; returns its exit
/// status (None when killed), stdout and stderr.
fn run_script(
    base: &str,
    room: &str,
    setup: &str,
    srtp: &str,
    limit: Duration,
) -> (Option<i32>, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/whip_whep.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(["--url", base, "--room", room, "--setup", setup])
        .args(["--srtp", srtp])
        .args(["--seconds", "8", "--frames", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

/// One publisher and one viewer whose offers carry `a=setup:{setup}` and
/// whose DTLS offers the SRTP profiles `srtp` (`all` or `sha1_80`); wisp must
/// answer `a=setup:{answer}` to both and the viewer must decode. Returns the
/// script's report.
fn publish_and_view(test: &str, setup: &str, srtp: &str, answer: &str) -> Value {
    // One case at a time: each runs two aiortc peers (VP8 in Python) and
    // wisp on a shared 2-core machine.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !have_aiortc(test) {
        return Value::Null;
    }
    let server = start_server();
    let base = format!("http://{}", server.http);
    let started = Instant::now();
    let (code, stdout, stderr) = run_script(&base, setup, setup, srtp, Duration::from_secs(40));
    let took = started.elapsed();
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report (exit {code:?}) in {took:?}\n{stdout}\n{stderr}"));
    eprintln!("aiortc, offers with a=setup:{setup}: {report} in {took:.1?}");
    assert_eq!(code, Some(0), "script failed: {report}\n{stderr}");
    assert!(report.get("exception").is_none(), "{report}\n{stderr}");
    let frames = report["frames"].as_u64().unwrap();
    assert!(
        frames >= 60,
        "viewer decoded {frames} video frames: {report}"
    );
    assert_eq!(report["sizes"], json!([[320, 240]]), "{report}");
    assert!(report["audio_frames"].as_u64().unwrap() > 0, "{report}");
    let answer = json!([format!("a=setup:{answer}")]);
    assert_eq!(report["publisher"]["answer_setup"], answer, "{report}");
    assert_eq!(report["viewer"]["answer_setup"], answer, "{report}");
    assert_eq!(
        report["viewer"]["answer_directions"],
        json!(["sendonly", "sendonly"]),
        "{report}"
    );
    // aiortc's addTrack offers sendrecv; a WHIP answer is recvonly (RFC 9725).
    assert_eq!(
        report["publisher"]["answer_directions"],
        json!(["recvonly", "recvonly"]),
        "{report}"
    );
    // What the handshakes settled on (aiortc's side): DTLS 1.2 (wisp speaks
    // no 1.3), an ECDHE-ECDSA suite (all aiortc offers) and an SRTP profile
    // both sides know.
    for who in ["publisher_dtls", "viewer_dtls"] {
        let d = &report[who];
        assert_eq!(d["version"], "DTLSv1.2", "{report}");
        let cipher = d["cipher"].as_str().unwrap_or("");
        assert!(cipher.starts_with("ECDHE-ECDSA-"), "{report}");
        let srtp = d["srtp"].as_str().unwrap_or("");
        assert!(
            [
                "SRTP_AEAD_AES_256_GCM",
                "SRTP_AEAD_AES_128_GCM",
                "SRTP_AES128_CM_SHA1_80"
            ]
            .contains(&srtp),
            "{report}"
        );
    }
    assert_eq!(report["delete"], json!([200, 200]), "{report}");
    assert_eq!(http(server.http, "GET", "/healthz", None, "").0, 200);
    report
}

/// aiortc as it comes: `actpass` offers, wisp the DTLS server.
#[test]
fn aiortc_publishes_vp8_and_opus_and_an_aiortc_viewer_decodes_it() {
    publish_and_view(
        "aiortc_publishes_vp8_and_opus_and_an_aiortc_viewer_decodes_it",
        "actpass",
        "all",
        "passive",
    );
}

/// Offers with `a=setup:passive` and SRTP AES128_CM_SHA1_80 only, as FFmpeg's
/// WHIP muxer sends: wisp is the DTLS client of an OpenSSL DTLS server with
/// an ECDSA P-256 certificate.
#[test]
fn wisp_as_dtls_client_of_aiortc_openssl_server() {
    let report = publish_and_view(
        "wisp_as_dtls_client_of_aiortc_openssl_server",
        "passive",
        "sha1_80",
        "active",
    );
    if !report.is_null() {
        for who in ["publisher_dtls", "viewer_dtls"] {
            assert_eq!(report[who]["srtp"], "SRTP_AES128_CM_SHA1_80", "{report}");
        }
    }
}

/// Offers with `a=setup:active`: the client insists on being the DTLS client.
#[test]
fn aiortc_offering_setup_active_gets_a_passive_answer() {
    publish_and_view(
        "aiortc_offering_setup_active_gets_a_passive_answer",
        "active",
        "all",
        "passive",
    );
}

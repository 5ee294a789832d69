//! Runs every fuzz body over every seed in `fuzz/corpus/<target>/` on stable,
//! so CI exercises what `cargo fuzz run <target>` does without nightly. The
//! hand-made seeds are written by `cargo run --example fuzz_seeds`.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, min: usize, body: fn(&[u8])) {
    // `RUST_LOG=info` shows what the core made of each seed.
    let _ = env_logger::builder().is_test(true).try_init();
    let files = corpus(target);
    assert!(
        files.len() >= min,
        "{target} corpus too small: {}",
        files.len()
    );
    assert!(files.len() <= 80, "{target} corpus too large: run cmin");
    for f in &files {
        let data = std::fs::read(f).expect("read seed");
        eprintln!("seed {}", f.display());
        body(&data);
    }
}

#[test]
fn sdp_offer_corpus() {
    replay("sdp_offer", 10, wisp::fuzzing::sdp_offer);
}

#[test]
fn http_request_corpus() {
    replay("http_request", 10, wisp::fuzzing::http_request);
}

#[test]
fn datagram_corpus() {
    replay("datagram", 10, wisp::fuzzing::datagram);
}

#[test]
fn core_ops_corpus() {
    replay("core_ops", 8, wisp::fuzzing::core_ops);
}

#[test]
fn recording_corpus() {
    replay("recording", 8, wisp::fuzzing::recording);
}

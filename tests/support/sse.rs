//! A WHEP server-sent event stream read over plain HTTP: `event:` /
//! `data:` pairs in chunked framing. Every read is bounded (4 s).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An open event stream: reads `event:`/`data:` pairs (chunked framing).
pub struct Events {
    r: BufReader<TcpStream>,
    pending: Vec<(String, Value)>,
    ended: bool,
}

impl Events {
    /// `GET path` at `addr` (plain HTTP); the head must be a `200` event stream.
    pub fn open(addr: SocketAddr, path: &str) -> Events {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Content-Type: text/event-stream"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert!(head.contains("Access-Control-Allow-Origin: *"), "{head}");
        Events {
            r,
            pending: vec![],
            ended: false,
        }
    }

    /// The next event (name, data), skipping comments; `None` at the end of
    /// the stream or after the read timeout.
    pub fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if !self.pending.is_empty() {
                return Some(self.pending.remove(0));
            }
            let mut size = String::new();
            if self.r.read_line(&mut size).ok()? == 0 {
                self.ended = true;
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                self.ended = true;
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.r.read_exact(&mut chunk).ok()?;
            let text = String::from_utf8(chunk[..n].to_vec()).unwrap();
            // A chunk holds whole events.
            let mut name = None;
            for line in text.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    name = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(!d.contains('\n'));
                    let v: Value = serde_json::from_str(d).expect("one line of JSON");
                    if let Some(name) = name.take() {
                        self.pending.push((name, v));
                    }
                }
            }
        }
    }

    /// The next event named `name` within `limit`, skipping others.
    pub fn wait(&mut self, name: &str, limit: Duration) -> Option<Value> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            match self.next() {
                Some((n, v)) if n == name => return Some(v),
                Some(_) => {}
                None if self.ended => return None,
                None => {}
            }
        }
        None
    }

    /// Read until the server ends the stream; false if it did not within `limit`.
    pub fn ends_within(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end && !self.ended {
            let _ = self.next();
        }
        self.ended
    }
}

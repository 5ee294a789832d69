//! Shared driver for the browser and GStreamer tests: the real wisp binary,
//! headless Chromium through chromedriver (W3C WebDriver, JSON over a tiny
//! HTTP/1.1 client), a network namespace of the test's own (loopback only, or
//! with a veth pair for libnice-based peers), a str0m peer over real UDP
//! (`peer.rs`; VP8 payload helpers in `vp8.rs`), and a page's viewer watched
//! over time (`watch.rs`).
//!
//! Every wait has a deadline; every process started here is killed (by its own
//! process group, by id) when its handle drops.
#![allow(dead_code)]

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support;

use serde_json::{json, Value};

pub mod peer;
pub mod vp8;
pub mod watch;

/// Debian's real Chromium binary (`/usr/bin/chromium` is a shell wrapper).
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// Flags for headless Chromium as root on a closed, loopback-only machine.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,1400",
];

// ---- Test gate ----------------------------------------------------------------

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Serialise the browser tests (two cores: media tests must not compete) and
/// decide whether they can run. `None` means "skip": only when Chromium is
/// missing *and* `CI` is unset. In CI a missing browser fails the test.
pub fn begin(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = one_at_a_time();
    let have = Path::new(CHROMIUM).exists() && which("chromedriver").is_some();
    if !have {
        crate::support::skip_unless_ci(
            test,
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    }
    isolate_network(test);
    Some(guard)
}

/// Hold this while a media test runs: the tests of one binary run one at a
/// time (two cores: real-time media must not compete).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

// ---- Loopback-only network namespace ------------------------------------------

extern "C" {
    fn unshare(flags: i32) -> i32;
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;
const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCSIFFLAGS: u64 = 0x8914;
const IFF_UP: i16 = 0x1;
const SIGKILL: i32 = 9;

thread_local! {
    /// This thread moved into its own network namespace (see [`isolated`]).
    static ISOLATED: Cell<bool> = const { Cell::new(false) };
}

/// Whether `begin` moved this thread into a fresh loopback-only network
/// namespace: only then may a test change `lo` (e.g. traffic control), as
/// nothing outside the test shares it.
pub fn isolated() -> bool {
    ISOLATED.with(Cell::get)
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Move *this thread* into a fresh network namespace that has only `lo`
/// (network namespaces are per thread on Linux). Everything the test starts
/// afterwards (wisp, chromedriver, Chromium, str0m sockets) inherits it, so no
/// packet can leave loopback, whatever interfaces the machine has. Needs root;
/// without it the test still asserts that every selected ICE pair is 127.0.0.1.
/// Returns whether the thread is now in a namespace of its own.
pub fn isolate_network(test: &str) -> bool {
    // SAFETY: unshare only changes the calling thread's namespace membership.
    if unsafe { unshare(CLONE_NEWNET) } != 0 {
        eprintln!(
            "{test}: cannot create a network namespace ({}); staying in the host's \
             (the tests still assert loopback ICE pairs)",
            std::io::Error::last_os_error()
        );
        return false;
    }
    let sock = UdpSocket::bind("0.0.0.0:0").expect("socket in the new namespace");
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    use std::os::fd::AsRawFd;
    // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS on a live socket.
    let ok = unsafe {
        ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &mut req as *mut IfReq) == 0 && {
            req.flags |= IFF_UP;
            ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &mut req as *mut IfReq) == 0
        }
    };
    assert!(ok, "bring up lo: {}", std::io::Error::last_os_error());
    ISOLATED.with(|i| i.set(true));
    true
}

/// Give the thread's own namespace (see [`isolate_network`]) a veth pair,
/// `wisp0` holding `ip`/24 and its peer `wisp1` up without an address, for
/// WebRTC stacks that ignore loopback interfaces (libnice: GStreamer). Only
/// the namespace's own addresses: packets to `ip` still go through the
/// namespace's `lo`, and nothing leaves it. No IPv6 link-local addresses, so
/// such peers gather just `ip`. Needs `ip` (iproute2).
pub fn add_veth(ip: std::net::Ipv4Addr) -> Result<(), String> {
    if !isolated() {
        return Err("this thread is not in a network namespace of its own".into());
    }
    let addr = format!("{ip}/24");
    let steps: [&[&str]; 6] = [
        &[
            "link", "add", "wisp0", "type", "veth", "peer", "name", "wisp1",
        ],
        &["link", "set", "wisp0", "addrgenmode", "none"],
        &["link", "set", "wisp1", "addrgenmode", "none"],
        &["addr", "add", &addr, "dev", "wisp0"],
        &["link", "set", "wisp0", "up"],
        &["link", "set", "wisp1", "up"],
    ];
    for args in steps {
        // A child of this thread: it acts on the thread's namespace.
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Kill a whole process group we created (by its id, never by name).
pub fn kill_group(child: &mut Child) {
    // SAFETY: plain kill(2) on the negative id of a group this test spawned.
    unsafe { kill(-(child.id() as i32), SIGKILL) };
    let _ = child.wait();
}

// ---- HTTP/1.1 client ----------------------------------------------------------

pub use crate::support::{http, Resp};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

// ---- wisp ------------------------------------------------------------------------

/// The real wisp binary on 127.0.0.1 (HTTP and UDP), no STUN servers, in a
/// process group of its own.
pub struct Wisp {
    inner: support::Wisp,
    pub http: SocketAddr,
    /// Sent as Bearer on `get` (the room API needs it when set).
    admin: Option<String>,
}

impl Wisp {
    pub fn start() -> Wisp {
        Wisp::start_with(&[])
    }

    /// Start with extra environment variables (e.g. tokens).
    pub fn start_with(env: &[(&str, &str)]) -> Wisp {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
        cmd.process_group(0);
        let mut all = vec![("WISP_STUN_URLS", "")];
        all.extend_from_slice(env);
        let inner = support::Wisp::launch(cmd, &all);
        Wisp {
            http: inner.http,
            inner,
            admin: env
                .iter()
                .find(|(k, _)| *k == "WISP_ADMIN_TOKEN")
                .map(|(_, v)| v.to_string()),
        }
    }

    /// The lines of wisp's log so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.inner.log_lines(needle)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn get(&self, path: &str) -> Resp {
        let auth = self.admin.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(
            self.http,
            "GET",
            path,
            &headers,
            b"",
            Duration::from_secs(10),
        )
        .expect("GET from wisp")
    }

    /// The room's entry in `GET /api/rooms`, if any.
    pub fn room(&self, name: &str) -> Option<Value> {
        let rooms = self.get("/api/rooms").json();
        rooms
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    }

    /// Packets wisp received on the room's video track.
    pub fn video_packets(&self, room: &str) -> u64 {
        self.room(room)
            .and_then(|r| {
                r["tracks"]
                    .as_array()?
                    .iter()
                    .find(|t| t["kind"] == "video")
                    .and_then(|t| t["packets"].as_u64())
            })
            .unwrap_or(0)
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        kill_group(&mut self.inner.child);
    }
}

// ---- Chromium through chromedriver --------------------------------------------

/// One headless Chromium (its own chromedriver, profile and process group)
/// with one page open.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    sid: String,
    profile: PathBuf,
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Start chromedriver and Chromium, and open `url`.
    pub fn open(url: &str) -> Browser {
        let port = free_port();
        let profile = std::env::temp_dir().join(format!(
            "wisp-chromium-{}-{port}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0) // one kill reaches chromium and all its children
            .spawn()
            .expect("start chromedriver");
        let mut b = Browser {
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            sid: String::new(),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while b
            .call("GET", "/status", None)
            .map(|v| v["ready"] != true)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "chromedriver not ready in 15 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b.profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let started = Instant::now();
        let v = b.call("POST", "/session", Some(caps)).expect("new session");
        b.sid = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        eprintln!("chromium started in {} ms", started.elapsed().as_millis());
        b.session_call(
            "POST",
            "/timeouts",
            json!({"script": 20000, "pageLoad": 20000}),
        );
        b.session_call("POST", "/url", json!({ "url": url }));
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        let r = http(
            self.addr,
            method,
            path,
            headers,
            body.as_bytes(),
            Duration::from_secs(40),
        )
        .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut v = r.json();
        if r.status != 200 {
            return Err(format!("{method} {path}: {} {}", r.status, v["value"]));
        }
        Ok(v["value"].take())
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" { None } else { Some(body) };
        self.call(method, &format!("/session/{}{path}", self.sid), body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    /// Run `script` (an async function body; `arguments[0..]` are `args`) in the page.
    /// A rejected promise comes back as `{"error": "..."}`.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; \
             (async () => {{ {script} }}).apply(null, Array.from(arguments).slice(0, -1))\
             .then(v => done(v === undefined ? null : v), e => done({{ error: String(e) }}));"
        );
        self.session_call(
            "POST",
            "/execute/async",
            json!({ "script": wrapped, "args": args }),
        )
    }

    /// Click the element matching a CSS selector, as a user would.
    pub fn click(&self, css: &str) {
        let el = self.session_call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = el[ELEMENT_KEY].as_str().expect("element id").to_string();
        self.session_call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Set an input's or select's value.
    pub fn set(&self, id: &str, value: &str) {
        let r = self.exec(
            "const el = document.getElementById(arguments[0]); \
             if (el.tagName === 'SELECT' && ![...el.options].some(o => o.value === arguments[1])) \
               return { error: 'no option ' + arguments[1] + ' in ' + [...el.options].map(o => o.value) }; \
             el.value = arguments[1]; return el.value;",
            json!([id, value]),
        );
        assert!(r["error"].is_null(), "set #{id}: {r}");
    }

    pub fn text(&self, id: &str) -> String {
        self.exec(
            "return document.getElementById(arguments[0]).textContent",
            json!([id]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.session_call("GET", "/screenshot", Value::Null);
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.sid.is_empty() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.sid),
                &[],
                b"",
                Duration::from_secs(5),
            );
        }
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63, // '/'
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

/// Poll `f` every 200 ms until it returns `Some`, or panic after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- Traffic control on lo (inside the test's own namespace only) -----------------

/// A bottleneck in front of chosen ports on `lo`: Linux traffic control (HTB,
/// one class per port with a rate and a short drop-tail queue), like a slow
/// downlink. Packets to other ports pass unshaped (HTB's direct queue).
///
/// Only inside the namespace `begin` made ([`isolated`]): `tc` runs as a child
/// of this thread, so it acts on the thread's namespace, never the host's.
/// Everything goes away with the namespace; `Drop` removes it earlier.
pub struct Shaper {
    /// (destination port, HTB class minor)
    classes: Vec<(u16, u16)>,
}

/// Queueing delay a shaped class buffers before it drops (a short
/// bottleneck queue, as on a real link).
pub const SHAPER_QUEUE: Duration = Duration::from_millis(200);

/// What `tc -s class show` counts for one class.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapedStats {
    pub bytes: u64,
    pub packets: u64,
    pub dropped: u64,
    pub overlimits: u64,
}

fn tc(args: &[&str]) -> Result<String, String> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .map_err(|e| format!("tc {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "tc {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Shaper {
    /// Put an HTB root qdisc on `lo`. `Err` says why it cannot (not in a
    /// namespace of its own, no `tc`, no HTB in the kernel).
    pub fn install() -> Result<Shaper, String> {
        if !isolated() {
            return Err("this thread is not in a network namespace of its own".into());
        }
        if which("tc").is_none() {
            return Err("tc is not installed (apt-get install iproute2)".into());
        }
        // `default 0`: unclassified traffic takes HTB's direct queue, unshaped.
        tc(&[
            "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0",
        ])?;
        Ok(Shaper {
            classes: Vec::new(),
        })
    }

    /// Limit what goes *to* `port` on 127.0.0.1 (any protocol) to `kbit`
    /// kbit/s, with [`SHAPER_QUEUE`] of queue at that rate; again for a
    /// port already limited changes its rate.
    pub fn limit(&mut self, port: u16, kbit: u64) {
        let queue = (kbit * 1000 / 8 * SHAPER_QUEUE.as_millis() as u64 / 1000).max(3000);
        let (rate, limit) = (format!("{kbit}kbit"), queue.to_string());
        let existing = self.classes.iter().find(|(p, _)| *p == port).map(|c| c.1);
        let minor = existing.unwrap_or(0x10 + self.classes.len() as u16);
        let (class, handle) = (format!("1:{minor:x}"), format!("{minor:x}:"));
        let verb = if existing.is_some() { "change" } else { "add" };
        let run = |args: &[&str]| tc(args).unwrap_or_else(|e| panic!("{e}"));
        run(&[
            "class", verb, "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate", &rate,
            "ceil", &rate,
        ]);
        run(&[
            "qdisc", verb, "dev", "lo", "parent", &class, "handle", &handle, "bfifo", "limit",
            &limit,
        ]);
        if existing.is_none() {
            let dport = port.to_string();
            run(&[
                "filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:", "prio", "1", "u32",
                "match", "ip", "dport", &dport, "0xffff", "flowid", &class,
            ]);
            self.classes.push((port, minor));
        }
    }

    /// The counters of the class shaping `port` (zeros if none).
    pub fn stats(&self, port: u16) -> ShapedStats {
        let Some(&(_, minor)) = self.classes.iter().find(|(p, _)| *p == port) else {
            return ShapedStats::default();
        };
        let class = format!("1:{minor:x}");
        let out = tc(&["-s", "class", "show", "dev", "lo", "classid", &class]).unwrap_or_default();
        // " Sent 1234 bytes 56 pkt (dropped 7, overlimits 89 requeues 0)"
        let words: Vec<&str> = out
            .lines()
            .find(|l| l.trim_start().starts_with("Sent "))
            .unwrap_or("")
            .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
            .filter(|w| !w.is_empty())
            .collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1)?.parse().ok())
                .unwrap_or(0)
        };
        let before = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i.checked_sub(1)?)?.parse().ok())
                .unwrap_or(0)
        };
        ShapedStats {
            bytes: before("bytes"),
            packets: before("pkt"),
            dropped: after("dropped"),
            overlimits: after("overlimits"),
        }
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
    }
}

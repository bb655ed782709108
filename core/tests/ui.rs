//! The dashboard, `GET /_lb/ui`, in a real browser: headless Chromium against a running `lb`.
//!
//! Two ways of driving it:
//! - `chromium --headless --dump-dom --virtual-time-budget=…`: the page as rendered after a few
//!   polls, checked slot by slot against `/_lb/ring`;
//! - `chromium --headless --remote-debugging-pipe`: one page kept open while the test changes
//!   `lb` (`/add`, `/rm`, a killed replica, a rejected save of `lb.toml`, traffic), reading the
//!   DOM over the DevTools protocol to see each change arrive without a reload, and typing the
//!   admin token with key events.
//!
//! Without Chromium (`/usr/bin/chromium` or `chromium` on `PATH`) the browser tests print why
//! and pass, unless `LB_REQUIRE_BROWSER` is set (`scripts/test.sh` installs Debian's `chromium`
//! and sets it, so CI never skips). `cargo test -p lb --test ui -- --ignored` writes
//! `docs/ui.png`, the README's screenshot.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use common::{eventually, Lb};

/// How long a change may take to show on the page: it polls once a second, but Chromium shares
/// two cores with `lb`, its replicas and (in CI) the rest of the suite, so the deadline is wide;
/// how often it polls is asserted separately.
const LIVE: Duration = Duration::from_secs(10);
/// How long a browser may take to start, load the page or answer one protocol call.
const BROWSER: Duration = Duration::from_secs(30);

/// Browser tests share two cores with `lb` and its replicas: one at a time.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Chromium binary, or `None` (with a notice) when there is none and none is required.
fn chromium() -> Option<PathBuf> {
    let found = std::iter::once(PathBuf::from("/usr/bin/chromium"))
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|dir| dir.join("chromium")),
        )
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("LB_REQUIRE_BROWSER").is_none(),
            "LB_REQUIRE_BROWSER is set but there is no chromium (apt-get install chromium)"
        );
        eprintln!("skipping: no chromium (apt-get install chromium; scripts/test.sh does)");
    }
    found
}

/// Flags for every run: headless, no sandbox (root in a container), a fresh profile.
fn command(bin: &Path, profile: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Its own process group, so that the renderer and GPU processes go with it.
        .process_group(0);
    command
}

/// Kill the process group `pgid` (the browser and every process it started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Collect everything `stream` says into `log`, on a thread of its own.
fn drain(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// The DOM of `url` after `budget_ms` of virtual time (timers run without waiting; each fetch
/// is real), from `chromium --dump-dom`. Bounded by [`BROWSER`].
fn dump_dom(bin: &Path, url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = command(bin, profile.path())
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chromium");
    let log = Arc::new(Mutex::new(String::new()));
    drain(child.stderr.take().unwrap(), Arc::clone(&log));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + BROWSER;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            panic!(
                "chromium --dump-dom did not finish in {BROWSER:?}; its log:\n{}",
                log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_group(child.id()); // helpers it may have left behind
    let dom = reader.join().unwrap();
    assert!(
        status.success() && dom.contains("</html>"),
        "chromium --dump-dom: {status}; log:\n{}",
        log.lock().unwrap()
    );
    dom
}

/// A headless Chromium showing one page, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands on its fd 3, answers on its fd 4, each JSON message
/// ended by a NUL byte).
struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: Receiver<Value>,
    next_id: u64,
    session: String,
    log: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium on `url` and attach to its page.
    fn open(bin: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let browser = command(bin, profile.path());
        // fd 3 ← our stdin pipe, fd 4 → our stdout pipe; its own output goes to stderr. `sh`
        // execs Chromium (and /usr/bin/chromium execs the real binary), so the pid is its.
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg(browser.get_program())
            .args(browser.get_args())
            .arg("--remote-debugging-pipe")
            .arg(url)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = sh.spawn().expect("run chromium");
        let log = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), Arc::clone(&log));
        let (tx, answers) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            while matches!(reader.read_until(0, &mut message), Ok(n) if n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
                message.clear();
            }
        });
        let commands = child.stdin.take().unwrap();
        let mut browser = Browser {
            child,
            commands,
            answers,
            next_id: 0,
            session: String::new(),
            log,
            _profile: profile,
        };
        let deadline = Instant::now() + BROWSER;
        let target = loop {
            let targets = browser.call("Target.getTargets", json!({}));
            let page = targets["targetInfos"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .map(|t| t["targetId"].clone());
            if let Some(page) = page {
                break page;
            }
            browser.check(Instant::now() < deadline, "no page target");
            std::thread::sleep(Duration::from_millis(50));
        };
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        // The window's size includes room for a toolbar; the page gets all of it.
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Panic with `what` and the browser's log unless `ok`.
    fn check(&self, ok: bool, what: &str) {
        assert!(ok, "{what}; chromium's log:\n{}", self.log.lock().unwrap());
    }

    /// Send one protocol command (to the page once attached) and wait for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let sent = self.commands.write_all(&bytes).and(self.commands.flush());
        self.check(sent.is_ok(), &format!("{method}: chromium closed its pipe"));
        let deadline = Instant::now() + BROWSER;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    self.check(
                        answer.get("error").is_none(),
                        &format!("{method} failed: {}", answer["error"]),
                    );
                    return answer["result"].clone();
                }
                Ok(_event) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.check(false, &format!("{method}: no answer in {BROWSER:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.check(false, &format!("{method}: chromium exited"))
                }
            }
        }
    }

    /// The value of the JavaScript expression `expr` in the page, or what it threw.
    fn try_eval(&mut self, expr: &str) -> Result<Value, Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        match result.get("exceptionDetails") {
            Some(thrown) => Err(thrown["exception"]["description"].clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// The value of the JavaScript expression `expr` in the page.
    fn eval(&mut self, expr: &str) -> Value {
        let result = self.try_eval(expr);
        self.check(result.is_ok(), &format!("{expr} threw {result:?}"));
        result.unwrap()
    }

    /// Evaluate `expr` every 50 ms until it is truthy (as in JavaScript; throwing is not, as
    /// while the page is still loading); its value. Panics after `limit`, showing the page's
    /// text.
    fn wait_for(&mut self, limit: Duration, what: &str, expr: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.try_eval(expr).unwrap_or(Value::Null);
            let falsy = match &value {
                Value::Null | Value::Bool(false) => true,
                Value::Number(n) => n.as_f64() == Some(0.0),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if !falsy {
                return value;
            }
            if start.elapsed() > limit {
                let text = self.try_eval("document.body.innerText");
                let last = self.try_eval(expr);
                self.check(
                    false,
                    &format!("not within {limit:?}: {what} ({expr} is {last:?}); the page says:\n{text:?}"),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Press `key` ("Enter", "Tab", …) with key events, as a keyboard does.
    fn press(&mut self, key: &str, code: u32, text: &str) {
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({
                "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
            });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", event);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the pipe ends Chromium; the group kill makes sure, and takes its helpers.
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(pid);
        let _ = self.child.wait();
    }
}

/// JavaScript: the hostnames in the replica table, in order.
const TABLE: &str =
    "[...document.querySelectorAll('#replicas button.name')].map(b => b.textContent)";

/// JavaScript: per hostname, how many slots the ring drawing colours as theirs.
const DRAWN: &str = "(() => { const c = {}; \
     for (const p of document.querySelectorAll('#slots path[data-slot]')) { \
       const o = p.getAttribute('data-owner'); c[o] = (c[o] || 0) + 1; } return c; })()";

/// Per hostname, how many slots `/_lb/ring` gives it.
async fn slot_counts(lb: &Lb) -> Value {
    let ring = lb.get("/_lb/ring").await.json();
    let mut counts = serde_json::Map::new();
    for owner in ring["owners"].as_array().unwrap() {
        let n = counts.entry(owner.as_str().unwrap()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap() + 1);
    }
    Value::Object(counts)
}

/// Each attribute `name="…"` of the elements `<tag …>` in `dom`, in order (`None` when absent).
fn attributes<'a>(dom: &'a str, tag: &str, name: &str) -> Vec<Option<&'a str>> {
    let needle = format!("{name}=\"");
    dom.split(&format!("<{tag} "))
        .skip(1)
        .map(|element| {
            let head = &element[..element.find('>').unwrap_or(element.len())];
            let (at, _) = head
                .match_indices(&needle)
                .find(|&(at, _)| at == 0 || head.as_bytes()[at - 1] == b' ')?;
            let start = at + needle.len();
            Some(&head[start..start + head[start..].find('"')?])
        })
        .collect()
}

/// Three replicas whose heartbeats tolerate a loaded machine (1 s to answer, 5 misses): the
/// tests that compare the page with `/_lb/ring` need the ring not to change under them because
/// a replica was slow to answer (a killed one is still seen at once, by its exit).
fn steady() -> String {
    common::THREE
        .replace("timeout_ms = 200", "timeout_ms = 1000")
        .replace("fall = 2", "fall = 5")
}

/// `GET /_lb/ui` is open (like `/_lb/ring`), HTML, and locked down by its headers.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_open_html_under_a_strict_policy() {
    let lb = Lb::start(&format!("[admin]\ntoken = \"s3cret\"\n{}", steady()));
    let page = lb.get("/_lb/ui").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(policy.contains(part), "{part} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(page.body.starts_with("<!doctype html>"));
    // The views it polls: the ring is open, the status needs the token.
    assert_eq!(lb.get("/_lb/ring").await.status, 200);
    assert_eq!(lb.get("/_lb/status").await.status, 401);
    let head = lb.send("HEAD", "/_lb/ui", b"", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = lb.send("POST", "/_lb/ui", b"", &[]).await;
    assert_eq!(post.status, 405, "{}", post.body);
    assert_eq!(post.headers["allow"], "GET");
}

/// `chromium --dump-dom`: after a few polls the page lists every replica (a backend by address
/// that is down too), draws all 512 slots in the colours `/_lb/ring` gives them and 27 virtual
/// nodes; after `/add` a new load shows the new replica.
#[tokio::test(flavor = "multi_thread")]
async fn the_rendered_page_shows_every_replica_and_the_whole_ring() {
    let Some(bin) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    // Nothing listens there: the backend stays down, out of the ring.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Spoken to over TLS without verification, and a TLS listener with a certificate.
    let certs = tempfile::tempdir().unwrap();
    lb::self_signed(&["localhost".to_owned()], certs.path()).unwrap();
    let lb = Lb::start(&format!(
        "{}[[replicas]]\nhostname = \"Backend 9\"\nid = 9\naddress = \"{closed}\"\n\
         tls = true\nserver_name = \"backend.test\"\ntls_verify = false\n\
         [tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
        steady(),
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display(),
    ));
    let url = format!("http://{}/_lb/ui", lb.addr);
    let started = Instant::now();
    let dom = tokio::task::block_in_place(|| dump_dom(&bin, &url, 3_500));
    eprintln!("dump-dom took {:?}", started.elapsed());

    let body = dom.find("<body").map(|i| &dom[i..]).unwrap();
    assert_eq!(attributes(body, "body", "data-status"), [Some("ok")]);
    // It rendered more than once: it polls (3.5 s of virtual time at one poll a second).
    let updates: u32 = attributes(body, "body", "data-updates")[0]
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=5).contains(&updates), "{updates} updates");

    let ring = lb.get("/_lb/ring").await.json();
    let owners: Vec<&str> = ring["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(owners.len(), 512);
    let slots = attributes(&dom, "path", "data-slot");
    let drawn = attributes(&dom, "path", "data-owner");
    assert_eq!(slots.len(), 512, "one path per slot");
    for (i, (slot, owner)) in slots.iter().zip(&drawn).enumerate() {
        assert_eq!(*slot, Some(i.to_string().as_str()));
        assert_eq!(*owner, Some(owners[i]), "owner of slot {i}");
    }
    let vnodes = attributes(&dom, "circle", "data-vnode");
    assert_eq!(vnodes.len(), 27, "9 virtual nodes for each of 3 replicas");
    for member in ring["replicas"].as_array().unwrap() {
        let name = member["hostname"].as_str().unwrap();
        let marks: Vec<&str> = attributes(&dom, "circle", "data-owner")
            .into_iter()
            .zip(&vnodes)
            .filter(|(owner, _)| *owner == Some(name))
            .filter_map(|(_, slot)| *slot)
            .collect();
        let mut expected: Vec<String> = member["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut marks: Vec<String> = marks.into_iter().map(str::to_owned).collect();
        expected.sort();
        marks.sort();
        assert_eq!(marks, expected, "virtual nodes of {name}");
        assert!(
            dom.contains(&format!(">{name}</button>")),
            "{name} listed in the table"
        );
    }
    assert!(dom.contains("<svg id=\"ring\""));
    let row = dom
        .split("<tr data-hostname=\"Backend 9\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("Backend 9 listed");
    assert!(
        row.contains(">by address, TLS (not verified)<") && row.contains(">down<"),
        "{row}"
    );
    assert!(
        row.contains("TLS to backend.test, certificate NOT verified"),
        "{row}"
    );
    // The certificates the TLS listener serves, with the days they have left.
    let certificates = dom
        .split("<tbody id=\"certificates\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .expect("the certificates table");
    let days = lb.status().await["tls"]["certificates"][0]["days_left"]
        .as_i64()
        .unwrap();
    assert!((88..=90).contains(&days), "{days}");
    // Whole days left are counted from whole seconds: a certificate made 90 days long has 90
    // left in its first second and 89 after, so the page (drawn a moment before) may say one
    // more than this later look.
    let shown = |d: i64| certificates.contains(&format!(">{d}<"));
    assert!(
        certificates.contains(">localhost (default)<")
            && (shown(days) || shown(days + 1))
            && certificates.contains("cert.pem"),
        "days_left {days}; certificates table: {certificates}\nstatus: {}",
        lb.status().await["tls"]
    );
    let waiting = dom.split("<ul id=\"vacancies\"").nth(1).unwrap();
    assert!(
        waiting
            .split("</ul>")
            .next()
            .unwrap()
            .contains("Backend 9 (id 9) at 127.0.0.1:"),
        "Backend 9 waiting to join"
    );

    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S5"]}"#)
        .await;
    let dom = tokio::task::block_in_place(|| dump_dom(&bin, &url, 1_500));
    assert!(dom.contains(">S5</button>"), "S5 listed after /add");
    assert_eq!(attributes(&dom, "circle", "data-vnode").len(), 36);
    assert!(attributes(&dom, "path", "data-owner").contains(&Some("S5")));
}

/// One page open in Chromium while `lb` changes under it: `/add`, `/rm`, a killed replica,
/// traffic and a rejected save of `lb.toml` each show within [`LIVE`], in the same document (no
/// reload), and the page polls at most once a second. Health checks are lenient ([`steady`]):
/// a replica that misses two 200 ms checks on a loaded machine would change the ring under the
/// slot counts compared here.
#[tokio::test(flavor = "multi_thread")]
async fn the_open_page_follows_every_change_live() {
    let Some(bin) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let lb = Lb::start(&steady());
    let url = format!("http://{}/_lb/ui", lb.addr);
    let started = Instant::now();
    let mut page = tokio::task::block_in_place(|| Browser::open(&bin, &url));
    let table = |page: &mut Browser| page.eval(TABLE);
    tokio::task::block_in_place(|| {
        page.wait_for(
            BROWSER,
            "the first render",
            "document.body.dataset.status === 'ok'",
        )
    });
    eprintln!("browser up and page drawn in {:?}", started.elapsed());
    assert_eq!(
        table(&mut page),
        json!(["Server 1", "Server 2", "Server 3"])
    );
    let counts_before = slot_counts(&lb).await;
    assert_eq!(page.eval(DRAWN), counts_before);
    // Without a mouse: Enter on a replica's name picks out its slots, the choice and the focus
    // survive the next poll, Escape lets go.
    tokio::task::block_in_place(|| {
        page.eval("document.querySelector('#replicas button.name').focus()");
        page.press("Enter", 13, "\r");
        let picked = page.eval(
            "document.getElementById('ring').classList.contains('highlight') && \
             document.querySelectorAll('#slots path.chosen').length",
        );
        assert_eq!(picked, json!(counts_before["Server 1"]));
        let seen = page
            .eval("+document.body.dataset.updates")
            .as_u64()
            .unwrap();
        page.wait_for(
            LIVE,
            "a poll after choosing",
            &format!("+document.body.dataset.updates > {seen}"),
        );
        assert_eq!(
            page.eval(
                "document.activeElement.textContent + ' ' + \
                 document.activeElement.getAttribute('aria-pressed') + ' ' + \
                 document.querySelectorAll('#slots path.chosen').length"
            ),
            json!(format!("Server 1 true {}", counts_before["Server 1"]))
        );
        page.press("Escape", 27, "");
        assert_eq!(
            page.eval("document.querySelectorAll('#ring.highlight, #slots path.chosen').length"),
            0
        );
    });
    // A mark that a reload would wipe out.
    page.eval("window.sameDocument = 'yes'");
    let polls_from = Instant::now();
    let updates_before = page
        .eval("+document.body.dataset.updates")
        .as_u64()
        .unwrap();

    // /add: the new replica is listed and drawn, with the ring's slot counts.
    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S5"]}"#)
        .await;
    let expr = format!("(d => 'S5' in d && d)({DRAWN})");
    let drawn = tokio::task::block_in_place(|| page.wait_for(LIVE, "S5 drawn after /add", &expr));
    assert_eq!(drawn, slot_counts(&lb).await);
    assert_eq!(
        table(&mut page),
        json!(["Server 1", "Server 2", "Server 3", "S5"])
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#vnodes circle').length"),
        36
    );

    // /rm: gone from the table and the ring.
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    tokio::task::block_in_place(|| {
        page.wait_for(
            LIVE,
            "Server 2 gone after /rm",
            &format!("!{TABLE}.includes('Server 2') && !('Server 2' in {DRAWN})"),
        )
    });

    // Traffic: requests/s from the deltas between two polls.
    for id in 0..200u32 {
        lb.home(&[("X-Request-Id", &id.to_string())]).await;
    }
    let busiest = tokio::task::block_in_place(|| {
        page.wait_for(
            LIVE,
            "requests/s above zero",
            "Math.max(...[...document.querySelectorAll('#replicas tr')]\
               .map(tr => parseFloat(tr.children[5].textContent) || 0))",
        )
    });
    assert!(busiest.as_f64().unwrap() > 0.0, "{busiest}");

    // A killed replica leaves the ring (and a replacement with a new name takes its id).
    let pid = lb.pid_of("Server 3").await;
    common::signal(pid, libc::SIGKILL);
    let listed = eventually(Duration::from_secs(10), "Server 3 replaced", || async {
        let status = lb.status().await;
        let names: Vec<Value> = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["hostname"].clone())
            .collect();
        (!names.contains(&json!("Server 3")) && status["vacancies"] == json!([])).then_some(names)
    })
    .await;
    let expr = format!(
        "JSON.stringify({TABLE}) === JSON.stringify({})",
        json!(listed)
    );
    tokio::task::block_in_place(|| page.wait_for(LIVE, "the replacement listed", &expr));

    // A save of lb.toml that is refused: shown, as text, while the ring keeps running.
    let good = std::fs::read_to_string(&lb.config).unwrap();
    let bad = format!("{good}\n[ring]\nkey = \"<img src=x onerror=alert(1)>\"\n");
    std::fs::write(&lb.config, bad).unwrap();
    let error = eventually(Duration::from_secs(10), "the refused save", || async {
        let error = lb.status().await["config"]["last_error"]["message"].clone();
        error.as_str().map(str::to_owned)
    })
    .await;
    let shown = tokio::task::block_in_place(|| {
        page.wait_for(
            LIVE,
            "the configuration error shown",
            "!document.getElementById('config-error').hidden && \
             document.getElementById('config-error-message').textContent",
        )
    });
    assert_eq!(shown, json!(error));
    assert!(error.contains("<img src=x"), "{error}");
    assert_eq!(
        page.eval("document.querySelectorAll('img').length"),
        0,
        "markup in the message stays text"
    );
    std::fs::write(&lb.config, &good).unwrap();
    tokio::task::block_in_place(|| {
        page.wait_for(
            Duration::from_secs(10),
            "the error cleared by a good save",
            "document.getElementById('config-error').hidden",
        )
    });

    // Still the first document, and never more than one poll a second.
    assert_eq!(page.eval("window.sameDocument"), "yes");
    let polls = page
        .eval("+document.body.dataset.updates")
        .as_u64()
        .unwrap()
        - updates_before;
    let seconds = polls_from.elapsed().as_secs_f64();
    assert!(
        polls as f64 <= seconds + 1.0,
        "{polls} polls in {seconds:.1} s"
    );
    assert!(polls >= 3, "{polls} polls in {seconds:.1} s");
    eprintln!("live test: {polls} polls in {seconds:.1} s");
}

/// With `[admin] token`, the page says `/_lb/status` needs it, still draws the ring, and takes
/// the token typed into its form (refusing a wrong one), keeping it for the tab.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_the_page_asks_for_it_and_still_draws_the_ring() {
    let Some(bin) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let lb = Lb::start(&format!("[admin]\ntoken = \"s3cret\"\n{}", steady()));
    let url = format!("http://{}/_lb/ui", lb.addr);
    let counts = slot_counts(&lb).await;
    tokio::task::block_in_place(|| {
        let mut page = Browser::open(&bin, &url);
        page.wait_for(
            BROWSER,
            "the page asking for the token",
            "document.body.dataset.status === 'unauthorized' && \
             !document.getElementById('auth').hidden",
        );
        assert_eq!(
            page.eval(TABLE),
            json!(["Server 1", "Server 2", "Server 3"])
        );
        assert_eq!(
            page.eval(DRAWN),
            counts,
            "the ring, from the open /_lb/ring"
        );
        assert_eq!(
            page.eval("[...document.querySelectorAll('#replicas td.unknown')].length"),
            15,
            "kind, health, requests/s, in flight and open tunnels unknown for 3 replicas"
        );

        // A wrong token, typed and sent with Enter, is refused.
        page.eval("document.getElementById('token').focus()");
        page.call("Input.insertText", json!({"text": "wrong"}));
        page.press("Enter", 13, "\r");
        page.wait_for(
            LIVE,
            "the wrong token refused",
            "document.getElementById('auth-why').textContent.includes('refused')",
        );
        assert_eq!(page.eval("document.body.dataset.status"), "unauthorized");

        // The right one unlocks the status.
        page.eval("document.getElementById('token').focus()");
        page.call("Input.insertText", json!({"text": "s3cret"}));
        page.press("Enter", 13, "\r");
        page.wait_for(
            LIVE,
            "the status with the token",
            "document.body.dataset.status === 'ok' && document.getElementById('auth').hidden",
        );
        assert_eq!(
            page.eval(
                "[...document.querySelectorAll('#replicas tr')].map(tr => tr.children[4].textContent)"
            ),
            json!(["up", "up", "up"])
        );
        // The last column: each replica's weight (1 by default).
        assert_eq!(
            page.eval(
                "[...document.querySelectorAll('#replicas tr')].map(tr => tr.lastElementChild.textContent)"
            ),
            json!(["1", "1", "1"])
        );
        assert_eq!(
            page.eval("sessionStorage.getItem('lb.adminToken')"),
            "s3cret"
        );
    });
}

/// The slots whose owner `/_lb/plan` says would change with `body`, against `/_lb/ring` now;
/// and the ring's owners now.
async fn planned_moves(lb: &Lb, body: &str) -> (Vec<u64>, Value) {
    let before = lb.get("/_lb/ring").await.json()["owners"].clone();
    let plan = lb.ok("POST", "/_lb/plan", body.as_bytes()).await.json();
    let after = plan["owners"].as_array().unwrap();
    let moves = before
        .as_array()
        .unwrap()
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(i, _)| i as u64)
        .collect();
    (moves, before)
}

/// JavaScript: the slots lit as moving on the ring.
const LIT: &str = "[...document.querySelectorAll('#slots path.moves')].map(p => +p.dataset.slot)";

/// The "what if" panel: each of its three changes lights exactly the slots `POST /_lb/plan`
/// says would move, changes nothing, shows the shares table, and lets go of a preview the ring
/// has since left behind; a bad entry is said, not sent.
#[tokio::test(flavor = "multi_thread")]
async fn the_what_if_panel_lights_the_slots_a_change_would_move_and_changes_nothing() {
    let Some(bin) = chromium() else { return };
    let _one = ONE_BROWSER.lock().await;
    let lb = Lb::start(&steady());
    let url = format!("http://{}/_lb/ui", lb.addr);
    let mut page = tokio::task::block_in_place(|| Browser::open(&bin, &url));
    tokio::task::block_in_place(|| {
        page.wait_for(
            BROWSER,
            "the first render",
            "document.body.dataset.status === 'ok' && \
             document.getElementById('whatif-replica').options.length === 3",
        )
    });
    // Fill the form as a user would (the kind first: it shows the fields), then Preview.
    let preview = |page: &mut Browser, kind: &str, fill: &str| {
        tokio::task::block_in_place(|| {
            page.eval(&format!(
                "(() => {{ const k = document.getElementById('whatif-kind'); k.value = '{kind}'; \
                 k.dispatchEvent(new Event('change')); {fill}; \
                 document.getElementById('whatif-result').textContent = ''; \
                 document.getElementById('whatif-go').click(); }})()"
            ));
            page.wait_for(
                LIVE,
                "the preview",
                "document.getElementById('whatif-result').textContent",
            );
            page.eval(LIT)
        })
    };

    // A weight: Server 1 at 3.
    let (want, ring) = planned_moves(&lb, r#"{"weights": {"Server 1": 3}}"#).await;
    let lit = preview(
        &mut page,
        "weight",
        "document.getElementById('whatif-replica').value = 'Server 1'; \
         document.getElementById('whatif-weight').value = '3'",
    );
    assert!(!want.is_empty());
    assert_eq!(lit, json!(want));
    tokio::task::block_in_place(|| {
        let shown = page.eval(
            "[document.getElementById('whatif-result').textContent, \
              document.getElementById('ring').classList.contains('preview'), \
              document.querySelectorAll('#whatif-rows tr').length, \
              document.querySelector('#whatif-rows tr[data-hostname=\"Server 1\"]').children[1].textContent]",
        );
        let text = shown[0].as_str().unwrap();
        assert!(
            text.contains(&format!("{} of 512 slots", want.len()))
                && text.contains("Nothing was changed"),
            "{text}"
        );
        assert_eq!(shown[1], json!(true));
        assert_eq!(shown[2], json!(3));
        assert_eq!(shown[3], json!("1 → 3"));
    });
    // Nothing changed.
    assert_eq!(lb.get("/_lb/ring").await.json()["owners"], ring);
    let status = lb.status().await;
    assert!(status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["weight"] == 1));

    // Remove Server 2: every slot of its moves (and, with linear probing, a virtual node it
    // had pushed along may go back home).
    let (want, ring) = planned_moves(&lb, r#"{"rm": {"n": 1, "hostnames": ["Server 2"]}}"#).await;
    let its: Vec<u64> = ring
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, o)| *o == "Server 2")
        .map(|(i, _)| i as u64)
        .collect();
    assert!(
        its.iter().all(|slot| want.contains(slot)),
        "{its:?} {want:?}"
    );
    let lit = preview(
        &mut page,
        "rm",
        "document.getElementById('whatif-replica').value = 'Server 2'",
    );
    assert_eq!(lit, json!(want));
    assert_eq!(lb.rep().await.0, 3, "still three replicas");

    // A bad number is said, nothing sent, the last preview let go of.
    tokio::task::block_in_place(|| {
        page.eval("document.getElementById('whatif-clear').click()");
        assert_eq!(page.eval(LIT), json!([]));
        let said = preview_error(&mut page);
        assert!(said.contains("whole number"), "{said}");
    });

    // Add 2, preview, then really add 2: the preview was exact, and the page lets go of it
    // once the ring it was made on is gone.
    let (want, _) = planned_moves(&lb, r#"{"add": {"n": 2}}"#).await;
    let lit = preview(
        &mut page,
        "add",
        "document.getElementById('whatif-n').value = '2'",
    );
    assert_eq!(lit, json!(want));
    let planned = lb
        .ok("POST", "/_lb/plan", br#"{"add": {"n": 2}}"#)
        .await
        .json()["owners"]
        .clone();
    lb.ok("POST", "/add", br#"{"n": 2}"#).await;
    assert_eq!(lb.get("/_lb/ring").await.json()["owners"], planned);
    tokio::task::block_in_place(|| {
        page.wait_for(
            LIVE,
            "the stale preview let go of",
            "!document.getElementById('ring').classList.contains('preview') && \
             document.getElementById('whatif-result').textContent.includes('changed since')",
        );
        assert_eq!(page.eval(LIT), json!([]));
    });
}

/// Ask for a preview adding "0" replicas; what the panel says.
fn preview_error(page: &mut Browser) -> String {
    page.eval(
        "(() => { const k = document.getElementById('whatif-kind'); k.value = 'add'; \
         k.dispatchEvent(new Event('change')); \
         document.getElementById('whatif-n').value = '0'; \
         document.getElementById('whatif-go').click(); \
         return document.getElementById('whatif-result').textContent; })()",
    )
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// Not a test: `cargo test -p lb --test ui -- --ignored` writes `docs/ui.png` (1280×800) of
/// the page over five replicas with traffic, for the README.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes docs/ui.png"]
async fn screenshot_for_the_readme() {
    let bin = chromium().expect("chromium");
    let lb = Arc::new(Lb::start(common::THREE));
    lb.ok("POST", "/add", br#"{"n": 2, "hostnames": ["S5"]}"#)
        .await;
    let traffic = common::Traffic::start(&lb, 2);
    let url = format!("http://{}/_lb/ui", lb.addr);
    let png = tokio::task::block_in_place(|| {
        let mut page = Browser::open(&bin, &url);
        page.wait_for(
            BROWSER,
            "requests/s on every replica",
            "(rows => rows.length === 5 && rows.every(tr => parseFloat(tr.children[5].textContent) > 0))\
               ([...document.querySelectorAll('#replicas tr')])",
        );
        let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    });
    traffic.finish().await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ui.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("wrote {}", path.display());
}

//! Start and stop a load balancer of our own: `lb --config <tmp>/lb.toml --listen 127.0.0.1:0`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::config_file;
use crate::error::{io, Error, Result};

/// How long `lb` gets to print its address.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long `lb` gets to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// Lines of `lb`'s output kept for error messages and `lb.log`.
const LOG_LINES: usize = 5_000;

/// The last lines `lb` printed (stdout and stderr interleaved).
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<VecDeque<String>>>);

impl Log {
    /// Keep `line` (the oldest goes past `LOG_LINES`).
    pub fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Everything kept, one line each.
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// The last `count` lines kept, one line each.
    pub fn tail(&self, count: usize) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let skip = lines.len().saturating_sub(count);
        lines.iter().skip(skip).map(|l| format!("{l}\n")).collect()
    }
}

/// A running `lb` child process with its own configuration file in a temporary directory.
#[derive(Debug)]
pub struct OwnedLb {
    child: Option<Child>,
    addr: SocketAddr,
    config: PathBuf,
    log: Log,
    _dir: tempfile::TempDir,
}

/// The `lb` binary next to the running executable.
pub fn default_lb_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io("current executable"))?;
    Ok(exe.with_file_name("lb"))
}

fn drain(
    stream: impl Read + Send + 'static,
    log: Log,
    listening: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if let (Some(tx), Some(addr)) =
                (&listening, line.strip_prefix("lb listening on http://"))
            {
                let _ = tx.send(addr.trim().to_owned());
            }
            log.push(line);
        }
    });
}

impl OwnedLb {
    /// Write `lb.toml` (3 replicas, ids 1..3, 100 ms heartbeats, plugins from `plugin_dir`) into a
    /// fresh temporary directory, start `lb_bin` on it on a free loopback port and wait until it
    /// prints `lb listening on http://ADDR`.
    pub fn start(lb_bin: &Path, plugin_dir: &Path) -> Result<OwnedLb> {
        OwnedLb::start_with(lb_bin, &config_file::initial(plugin_dir))
    }

    /// Write `config` as `lb.toml` into a fresh temporary directory, start `lb_bin` on it on a
    /// free loopback port and wait until it prints `lb listening on http://ADDR`.
    pub fn start_with(lb_bin: &Path, config: &str) -> Result<OwnedLb> {
        let dir = tempfile::Builder::new()
            .prefix("analysis-lb-")
            .tempdir()
            .map_err(io(std::env::temp_dir()))?;
        let text = config;
        let config = dir.path().join("lb.toml");
        std::fs::write(&config, text).map_err(io(&config))?;
        let mut child = Command::new(lb_bin)
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                path: lb_bin.to_owned(),
                source,
            })?;
        let log = Log::default();
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone(), Some(tx));
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log.clone(), None);
        }
        let mut lb = OwnedLb {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(lb.failed("it closed its output without printing its address"));
                }
            }
            if let Some(Ok(Some(status))) = lb.child.as_mut().map(Child::try_wait) {
                return Err(lb.failed(&format!("it exited ({status})")));
            }
            if started.elapsed() > START_LIMIT {
                return Err(lb.failed(&format!("no address within {START_LIMIT:?}")));
            }
        };
        lb.addr = addr
            .parse()
            .map_err(|e| lb.failed(&format!("bad address {addr:?}: {e}")))?;
        Ok(lb)
    }

    fn failed(&mut self, reason: &str) -> Error {
        self.kill();
        // The drain threads may still be copying the last lines.
        std::thread::sleep(Duration::from_millis(50));
        Error::LbStart {
            reason: reason.to_owned(),
            log: self.log.text(),
        }
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it serves traffic on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its configuration file (ours to edit; `lb` follows it live).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// What it printed so far (the last lines).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Stop it with SIGTERM (it stops its replicas itself) and wait; SIGKILL after 20 s.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.terminate().ok_or_else(|| Error::Unexpected {
            request: "stopping lb".into(),
            reason: "it was already stopped".into(),
        })?
    }

    fn terminate(&mut self) -> Option<Result<ExitStatus>> {
        let mut child = self.child.take()?;
        // Our own child, not reaped yet: its pid is still its own.
        if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_LIMIT {
            match child.try_wait() {
                Ok(Some(status)) => return Some(Ok(status)),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Some(Err(io("lb process")(e))),
            }
        }
        let _ = child.kill();
        Some(child.wait().map_err(io("lb process")))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnedLb {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

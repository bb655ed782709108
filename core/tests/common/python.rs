//! Stock Python libraries as test peers (issue 27's WebSocket and gRPC tests): finding a Python
//! that has them, and child processes driven line by line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// What a test needs from Python.
pub struct Needs {
    /// Imported to check a Python has it.
    pub imports: &'static str,
    /// What to `pip install` (said when missing).
    pub packages: &'static str,
    /// A Python to try first (e.g. `LB_WS_PYTHON`).
    pub python_env: &'static str,
    /// Set (CI): a missing library fails the test instead of skipping it.
    pub require_env: &'static str,
}

/// The `websockets` library (13 or later: its `asyncio` modules).
pub const WEBSOCKETS: Needs = Needs {
    imports: "import websockets.asyncio.server, websockets.asyncio.client",
    packages: "websockets",
    python_env: "LB_WS_PYTHON",
    require_env: "LB_REQUIRE_WEBSOCKETS",
};

/// `grpcio` and its stock health servicer.
pub const GRPC: Needs = Needs {
    imports: "import grpc, grpc_health.v1.health",
    packages: "grpcio grpcio-health-checking",
    python_env: "LB_WS_PYTHON",
    require_env: "LB_REQUIRE_GRPC",
};

/// A Python that has what `needs` names — `needs.python_env`, else `target/ws-venv` (made by
/// `scripts/test.sh`), else `python3` — or `None` after saying SKIP (a panic when
/// `needs.require_env` is set).
pub fn python(test: &str, needs: &Needs) -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ws-venv/bin/python3");
    let candidates = std::env::var_os(needs.python_env)
        .map(PathBuf::from)
        .into_iter()
        .chain([venv, PathBuf::from("python3")]);
    for python in candidates {
        let works = Command::new(&python)
            .args(["-c", needs.imports])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(python);
        }
    }
    let why = format!(
        "no Python with `{}`: run scripts/test.sh, or python3 -m venv target/ws-venv && \
         target/ws-venv/bin/pip install {}",
        needs.packages, needs.packages
    );
    assert!(
        std::env::var_os(needs.require_env).is_none(),
        "{test}: {why}"
    );
    eprintln!("SKIP {test}: {why}");
    None
}

/// A child process whose standard output is read line by line, killed when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    /// Its output lines, as they come.
    pub lines: Receiver<String>,
    /// Its standard input.
    pub stdin: Option<ChildStdin>,
}

impl Process {
    /// Start `command` with piped standard input and output.
    pub fn start(command: &mut Command) -> Process {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Process {
            child,
            lines,
            stdin,
        }
    }

    /// Its next line, waited for at most `limit`.
    pub fn line(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no line from the Python process within {limit:?}"))
    }

    /// Kill it (its pid) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

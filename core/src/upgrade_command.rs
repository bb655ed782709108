//! `lb upgrade`: ask a running `lb` on this machine to upgrade its binary (SIGUSR2) and wait
//! until the next generation serves, or say why it did not.
//!
//! The running `lb` is found through its `/_lb/status` (its pid and generation), so the
//! command needs the address that serves it (the admin address, with `[admin] listen`) and the
//! admin token if one is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lb_views::status::Status;

/// The most of a status answer read (a status lists every replica: generous).
const MOST: u64 = 64 << 20;

/// A finished upgrade: who served before and who serves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// The pid that served before.
    pub from_pid: u32,
    /// Its generation.
    pub from_generation: u64,
    /// The pid serving now.
    pub pid: u32,
    /// Its generation.
    pub generation: u64,
}

/// Why `lb upgrade` did not see an upgrade through.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeCommandError {
    /// The address is not `http://HOST:PORT`.
    #[error("{0} is not http://HOST:PORT")]
    Url(String),
    /// `/_lb/status` could not be read.
    #[error("cannot read {url}/_lb/status: {reason}")]
    Status {
        /// The address asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The status has no process (an `lb` older than upgrades).
    #[error("{0}/_lb/status names no process: that lb cannot upgrade")]
    NoProcess(String),
    /// The signal could not be sent.
    #[error("cannot signal lb (pid {pid}): {error} (lb must run on this machine, as this user)")]
    Signal {
        /// The pid.
        pid: u32,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The running `lb` said the upgrade failed (it goes on serving).
    #[error("{0}")]
    Failed(String),
    /// No new generation served in time.
    #[error("no new generation served within {0:?}; see lb's log")]
    Timeout(Duration),
}

/// Upgrade the `lb` whose status `url` (`http://HOST:PORT`) serves, sending `token` as the
/// admin token, waiting at most `limit`.
pub fn upgrade(
    url: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<Upgraded, UpgradeCommandError> {
    let base = url.trim_end_matches('/');
    let addr = address(base)?;
    let before = status(base, addr, token)?;
    let process = before
        .process
        .as_ref()
        .ok_or_else(|| UpgradeCommandError::NoProcess(base.to_owned()))?;
    let (from_pid, from_generation) = (process.pid, process.generation);
    let error_before = before.config.last_error.clone();
    let pid = i32::try_from(from_pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| UpgradeCommandError::Signal {
            pid: from_pid,
            error: std::io::Error::other("not a pid"),
        })?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR2).map_err(|e| {
        UpgradeCommandError::Signal {
            pid: from_pid,
            error: e.into(),
        }
    })?;
    let deadline = Instant::now() + limit;
    loop {
        // Between the two processes an answer may fail: asked again.
        if let Ok(now) = status(base, addr, token) {
            if let Some(p) = now.process.as_ref() {
                if p.generation > from_generation {
                    return Ok(Upgraded {
                        from_pid,
                        from_generation,
                        pid: p.pid,
                        generation: p.generation,
                    });
                }
            }
            if let Some(error) = &now.config.last_error {
                if now.config.last_error != error_before && error.message.contains("upgrade") {
                    return Err(UpgradeCommandError::Failed(error.message.clone()));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(UpgradeCommandError::Timeout(limit));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The socket address of `http://HOST:PORT`.
pub(crate) fn address(base: &str) -> Result<SocketAddr, UpgradeCommandError> {
    let bad = || UpgradeCommandError::Url(base.to_owned());
    let host_port = base.strip_prefix("http://").ok_or_else(bad)?;
    if host_port.contains('/') {
        return Err(bad());
    }
    host_port
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// `GET /_lb/status`, parsed.
fn status(
    base: &str,
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<Status, UpgradeCommandError> {
    let fail = |reason: String| UpgradeCommandError::Status {
        url: base.to_owned(),
        reason,
    };
    let (code, body) = exchange(base, addr, "GET /_lb/status", token, None).map_err(fail)?;
    match code.as_str() {
        "200" => serde_json::from_slice(&body).map_err(|e| fail(format!("not a status: {e}"))),
        "401" | "403" => Err(fail(format!(
            "{code}: give the admin token (--token or LB_ADMIN_TOKEN)"
        ))),
        _ => Err(fail(format!(
            "{code}: {}",
            String::from_utf8_lossy(&body).trim()
        ))),
    }
}

/// One HTTP/1.1 exchange with the `lb` at `addr` (`base` is `http://HOST:PORT`): `request` is
/// the method and path (`"GET /_lb/status"`), `body` a JSON body. The status code and the
/// body of the answer (at most [`MOST`] bytes), or why there was none.
pub(crate) fn exchange(
    base: &str,
    addr: SocketAddr,
    request: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(String, Vec<u8>), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let host = base.trim_start_matches("http://");
    let content = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        stream,
        "{request} HTTP/1.1\r\nHost: {host}\r\n{authorization}{content}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    if let Some(body) = body {
        stream.write_all(body).map_err(|e| e.to_string())?;
    }
    let mut answer = Vec::new();
    stream
        .take(MOST)
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "no HTTP answer".to_owned())?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let code = head
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| "no status code".to_owned())?
        .to_owned();
    Ok((code, answer[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_addresses_are_taken() {
        assert_eq!(
            address("http://127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000".parse().unwrap()
        );
        for bad in [
            "127.0.0.1:5000",
            "https://127.0.0.1:5443",
            "http://127.0.0.1:5000/_lb",
            "http://nohost",
        ] {
            assert!(
                matches!(address(bad), Err(UpgradeCommandError::Url(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_address_nobody_serves_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = upgrade(&url, None, Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {url}/_lb/status")),
            "{err}"
        );
    }
}

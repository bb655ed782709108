//! External commands A-3's phases run (`docker …`, `lb check`): each to its end within
//! `COMMAND_LIMIT`, its output collected. A leaf: it imports no phase.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lb_api::POLL;

/// Deadline of one `docker` or `lb check` command.
pub(super) const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// What a command printed and how it ended.
pub(super) struct Ran {
    /// How it ended.
    pub(super) status: std::process::ExitStatus,
    /// What it printed.
    pub(super) stdout: String,
    /// What it printed on its error output.
    pub(super) stderr: String,
}

impl Ran {
    /// Its error output, then its output.
    pub(super) fn stderr_and_stdout(&self) -> String {
        format!("{}\n{}", self.stderr.trim(), self.stdout.trim())
            .trim()
            .to_owned()
    }
}

/// Run `cmd` to its end within [`COMMAND_LIMIT`] (then it is killed), collecting its output.
pub(super) fn run_command(mut cmd: Command, shown: &str) -> Result<Ran> {
    let failed = |reason: String| Error::Command {
        command: shown.to_owned(),
        reason,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < COMMAND_LIMIT => std::thread::sleep(POLL),
            Ok(None) => {
                // Our own child, not yet reaped.
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no end within {COMMAND_LIMIT:?}")));
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    Ok(Ran {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `docker ARGS…` within [`COMMAND_LIMIT`]: its output, or an error with its error output.
pub(super) fn docker(args: &[&str]) -> Result<String> {
    let shown = format!("docker {}", args.join(" "));
    let mut cmd = Command::new("docker");
    cmd.args(args);
    let ran = run_command(cmd, &shown)?;
    if ran.status.success() {
        Ok(ran.stdout)
    } else {
        Err(Error::Command {
            command: shown,
            reason: format!("{}: {}", ran.status, one_line(&ran.stderr)),
        })
    }
}

/// The ids `docker ARGS…` lists, one per line.
pub(super) fn ids(args: &[&str]) -> Result<BTreeSet<String>> {
    Ok(docker(args)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// `text` on one line, runs of white space as one space.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_s_status_and_output_are_collected() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let ran = run_command(cmd, "sh").unwrap();
        assert_eq!(ran.status.code(), Some(3));
        assert_eq!(ran.stderr_and_stdout(), "err\nout");
        assert!(run_command(Command::new("/no/such/program"), "x").is_err());
    }
}

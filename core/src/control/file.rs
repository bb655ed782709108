//! The configuration file's I/O, done off the controller: reading and checking a saved file,
//! and writing the replica list back. Each runs on a blocking thread and reports to the
//! controller with a command, so a huge, hostile or slow file never stalls the one writer (it
//! keeps taking replica failures, `/add` and `/rm` meanwhile).
//!
//! The controller runs at most one of these at a time per file, so a write-back never races
//! its own read (see `Controller::kick_file`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lb_balance::RingHash;

use crate::config::{read_text, BackendTls, Config, LoadedCert, Protocol};

use super::persist::{self, PersistError};

/// How long reading, checking and resolving a file (plugins included), or writing it back, may
/// take before it is given up as failed. The work may go on in the background, but the file is
/// free for the next read or write.
pub(crate) const READ_LIMIT: Duration = Duration::from_secs(20);

/// What reading the followed file found.
#[derive(Debug)]
pub(crate) enum FileRead {
    /// The same text as the one last applied or written: nothing to do.
    Unchanged,
    /// It could not be read, is empty, or is invalid: the running configuration stays.
    Refused {
        /// The text, when one was read (it is the "last seen" text from now on, so the same
        /// bad save is not reported twice).
        text: Option<String>,
        /// Why, for `config.last_error` and the log.
        message: String,
    },
    /// A valid configuration, with its hash functions resolved (a plugin loaded and checked).
    Valid {
        /// The text it was parsed from.
        text: String,
        /// The configuration.
        config: Box<Config>,
        /// `[ring] hash`, ready to use.
        hash: Arc<dyn RingHash>,
        /// `[[tls.certificates]]`, read and checked.
        certs: Vec<LoadedCert>,
    },
}

/// Read `path`, and unless it still holds `last_text`, check it whole, resolve its hash
/// (plugins from the file's own `[plugins] dirs`, then the defaults: the directories are live)
/// and read its certificates. Blocking: run it on a blocking thread.
pub(crate) fn read_and_check(path: &Path, last_text: &str) -> FileRead {
    let text = match read_text(path) {
        Ok(text) => text,
        Err(e) => {
            return FileRead::Refused {
                text: None,
                message: format!("{}: {}", path.display(), with_source(&e)),
            }
        }
    };
    if text == last_text {
        return FileRead::Unchanged;
    }
    if text.trim().is_empty() {
        // Valid TOML meaning "no replicas", but far more likely a save in progress or a full
        // disk than a wish to stop everything.
        return FileRead::Refused {
            text: Some(text),
            message: format!(
                "{} is empty; keeping the running configuration (to remove every replica, \
                 leave the other settings in the file)",
                path.display()
            ),
        };
    }
    let config = match Config::parse_file(&text, path) {
        Ok(config) => config,
        Err(e) => {
            return FileRead::Refused {
                text: Some(text),
                message: format!("{}: {e}", path.display()),
            }
        }
    };
    match config
        .resolve_hash()
        .and_then(|hash| Ok((hash, config.load_certificates()?)))
    {
        Ok((hash, certs)) => FileRead::Valid {
            text,
            config: Box::new(config),
            hash,
            certs,
        },
        Err(e) => FileRead::Refused {
            text: Some(text),
            message: format!("{}: {e}", path.display()),
        },
    }
}

/// One `[[replicas]]` entry to write back, owned (it crosses to a blocking thread): server id,
/// hostname, the address of a backend by address, its TLS settings, its protocol and weight.
pub(crate) type OwnedEntry = (
    u64,
    String,
    Option<String>,
    Option<Arc<BackendTls>>,
    Protocol,
    u32,
);

/// How a write-back ended.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    /// Written (or already up to date): the text that was on disk before, and the one there now.
    Done {
        /// What the file held before.
        before: String,
        /// What it holds now.
        written: String,
    },
    /// The file holds a save that was not applied yet: it is left alone, to be read and
    /// applied first (writing now would put the controller's replica list over the user's).
    SaveFirst,
    /// It could not be written; the message says why.
    Failed(String),
}

/// Write `entries` as the replica list of the file at `path` — if it still holds `last_text`
/// (the text last applied or written); otherwise leave it for a read first. Blocking.
pub(crate) fn write_back(path: &Path, last_text: &str, entries: &[OwnedEntry]) -> WriteOutcome {
    let borrowed: Vec<persist::Entry<'_>> = entries
        .iter()
        .map(|(id, hostname, address, tls, ..)| {
            (*id, hostname.as_str(), address.as_deref(), tls.as_deref())
        })
        .collect();
    let extras: Vec<persist::Extra> = entries
        .iter()
        .map(|e| persist::Extra {
            protocol: e.4,
            weight: e.5,
        })
        .collect();
    let failed = |e: &dyn std::fmt::Display| {
        WriteOutcome::Failed(format!(
            "could not write the replica list back to {}: {e}",
            path.display()
        ))
    };
    let text = match read_text(path) {
        Ok(text) => text,
        Err(e) => return failed(&with_source(&e)),
    };
    if text != last_text {
        return WriteOutcome::SaveFirst;
    }
    let new = match persist::with_extras(&text, &borrowed, &extras) {
        Ok(new) => new,
        Err(e) => return failed(&e),
    };
    if new == text {
        return WriteOutcome::Done {
            before: text,
            written: new,
        };
    }
    // A save that landed while the new text was made wins: read and apply it first. (The window
    // left is this read and the rename.)
    match read_text(path) {
        Ok(now) if now == text => {}
        Ok(_) => return WriteOutcome::SaveFirst,
        Err(e) => return failed(&with_source(&e)),
    }
    match persist::write_atomic(path, &new) {
        Ok(()) => WriteOutcome::Done {
            before: text,
            written: new,
        },
        Err(e) => failed(&PersistError::from(e)),
    }
}

/// An error's message followed by its sources' (`cannot read the file: not a regular file`).
fn with_source(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

//! The state directory of `[tls.acme]` (`state_dir`), shared by every `lb` that orders for the
//! same names (Swarm: a volume all replicas of the `lb` service mount):
//!
//! ```text
//! state_dir/
//!   lock                               flock(2)ed by the one lb that is ordering
//!   accounts/<ca>.json                 the ACME account (its key, PKCS#8) for directory <ca>
//!   certificates/<ca>/<domain>.pem     the issued certificate: its key, then the chain
//!   challenges/<token>                 HTTP-01 answers of the order in flight (any lb answers)
//! ```
//!
//! `<ca>` is the first 16 hex digits of the directory URL's SHA-256 (a staging certificate is
//! never taken for a production one), `<domain>` the first of `domains`. Every file is 0600
//! and written whole (a temporary file in the same directory, synced, renamed over the old
//! one), so a reader — another `lb`, or this one after a restart — sees the old file or the
//! new one, never half of one. Everything here blocks: the ACME task calls it on blocking
//! threads.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use sha2::Digest as _;

use crate::config::acme::AcmeSettings;
use crate::config::tls::CertificateFiles;
use crate::config::{load_all, LoadedCert};

/// The largest account file read.
const MAX_ACCOUNT_BYTES: u64 = 64 * 1024;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// A file or directory could not be read, written or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The account file does not hold an account.
    #[error("{}: not an ACME account ({reason}); remove it to register a new account", path.display())]
    Account {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A certificate found in the state directory.
#[derive(Debug, Clone)]
pub(super) struct Issued {
    /// As the listener serves it.
    pub loaded: LoadedCert,
    /// Its notBefore, in seconds since the Unix epoch.
    pub not_before: i64,
}

/// The state directory of one `[tls.acme]`.
#[derive(Debug, Clone)]
pub(super) struct Store {
    dir: PathBuf,
    /// The directory URL's tag (`<ca>` above).
    ca: String,
    /// The certificate's file name (`<domain>.pem`).
    cert_name: String,
}

/// The identity of a file's content, to notice another `lb` replaced it without reading it.
pub(super) type Stamp = Option<(u64, i64, i64, u64)>;

impl Store {
    /// The store of `settings`.
    pub(super) fn new(settings: &AcmeSettings) -> Store {
        let digest = sha2::Sha256::digest(settings.directory.as_bytes());
        let ca = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let first = settings
            .domains
            .first()
            .map_or("certificate", String::as_str);
        Store {
            dir: settings.state_dir.clone(),
            ca,
            cert_name: format!("{first}.pem"),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Create the directories (0700) if they are not there.
    pub(super) fn prepare(&self) -> Result<(), StoreError> {
        for dir in [
            self.dir.join("accounts"),
            self.cert_dir(),
            self.challenges_dir(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(Store::io(&dir))?;
        }
        Ok(())
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("accounts").join(format!("{}.json", self.ca))
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.join("certificates").join(&self.ca)
    }

    /// The certificate's file (its key, then its chain).
    pub(super) fn cert_path(&self) -> PathBuf {
        self.cert_dir().join(&self.cert_name)
    }

    /// Where HTTP-01 answers are left for the other `lb`s.
    pub(super) fn challenges_dir(&self) -> PathBuf {
        self.dir.join("challenges")
    }

    /// The account registered before with this directory, if any.
    pub(super) fn read_account(&self) -> Result<Option<AccountCredentials>, StoreError> {
        use std::io::Read as _;
        let path = self.account_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Store::io(&path)(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_ACCOUNT_BYTES)
            .read_to_end(&mut text)
            .map_err(Store::io(&path))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StoreError::Account {
                path: path.clone(),
                reason: e.to_string(),
            })
    }

    /// Keep the account for the next start (and the other `lb`s).
    pub(super) fn write_account(&self, account: &AccountCredentials) -> Result<(), StoreError> {
        let path = self.account_path();
        let text = serde_json::to_vec(account).map_err(|e| StoreError::Account {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }

    /// What the certificate file is now (changes when it is replaced).
    pub(super) fn stamp(&self) -> Stamp {
        let meta = std::fs::metadata(self.cert_path()).ok()?;
        Some((meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len()))
    }

    /// The certificate in the state directory, if there is one: `Err` when it is there but
    /// unusable (unreadable, mismatched, expired).
    pub(super) fn load_cert(&self, now: i64) -> Result<Option<Issued>, String> {
        let path = self.cert_path();
        if !path.exists() {
            return Ok(None);
        }
        let files = CertificateFiles {
            cert: path.clone(),
            key: path,
        };
        let loaded = load_all(std::slice::from_ref(&files), now)
            .map_err(|e| e.to_string())?
            .remove(0);
        let not_before = loaded
            .key
            .end_entity_cert()
            .ok()
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map_or(now, |(_, c)| c.validity().not_before.timestamp());
        Ok(Some(Issued { loaded, not_before }))
    }

    /// Keep a new certificate: `key_pem` then `chain_pem`, one file replaced at once.
    pub(super) fn write_cert(&self, key_pem: &str, chain_pem: &str) -> Result<(), StoreError> {
        let mut text = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
        text.push_str(key_pem.trim_end());
        text.push('\n');
        text.push_str(chain_pem);
        write_atomic(&self.cert_path(), text.as_bytes())
    }

    /// Take the state directory's lock if no other process holds it: `None` when one does
    /// (it is ordering). Held until the returned file is dropped (or the process dies).
    pub(super) fn try_lock(&self) -> Result<Option<File>, StoreError> {
        use rustix::fs::{flock, FlockOperation};
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(Store::io(&path))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Store::io(&path)(e.into())),
        }
    }

    /// Leave an HTTP-01 answer for the other `lb`s sharing the directory.
    pub(super) fn put_challenge(&self, token: &str, answer: &str) -> Result<(), StoreError> {
        write_atomic(&self.challenges_dir().join(token), answer.as_bytes())
    }

    /// Remove every HTTP-01 answer (the order is over).
    pub(super) fn clear_challenges(&self) {
        if let Ok(entries) = std::fs::read_dir(self.challenges_dir()) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Write `bytes` to `path` whole: a 0600 temporary file beside it, synced, renamed over it.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".{name}.{}-{:x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself durable (best effort: not every file system syncs directories).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

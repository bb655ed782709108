//! The ACME task's pure parts and its state directory: when a certificate is due, the files
//! (0600, replaced whole), the lock two `lb`s share.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use super::renew_at;
use super::store::{Issued, Store};
use crate::config::acme::{AcmeSettings, Challenge};
use crate::config::tls::CertificateFiles;
use crate::config::LoadedCert;

const DAY: i64 = 86_400;

fn issued(not_before: i64, not_after: i64) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
    Issued {
        loaded: LoadedCert {
            files: CertificateFiles {
                cert: "c".into(),
                key: "c".into(),
            },
            names: vec!["a.test".into()],
            not_after,
            key: Arc::new(rustls::sign::CertifiedKey::new(
                vec![cert.der().clone()],
                signing,
            )),
            digest: [0; 32],
        },
        not_before,
    }
}

#[test]
fn due_renew_before_the_end_or_half_way_through_a_short_life() {
    let days = |d: u64| Duration::from_secs(d * 86_400);
    // 90 days, renewed with 30 left.
    assert_eq!(renew_at(&issued(0, 90 * DAY), days(30)), 60 * DAY);
    // 30 days and 10 s, 30 days before: 10 s after issue.
    assert_eq!(renew_at(&issued(100, 100 + 30 * DAY + 10), days(30)), 110);
    // A life shorter than renew_before: half-way, never at once (no order loop).
    assert_eq!(renew_at(&issued(0, 6 * DAY), days(30)), 3 * DAY);
    assert_eq!(renew_at(&issued(0, 30 * DAY), days(30)), 15 * DAY);
}

fn settings(dir: &std::path::Path) -> AcmeSettings {
    AcmeSettings {
        directory: "https://acme.test/dir".into(),
        contact: Vec::new(),
        domains: vec!["a.test".into()],
        state_dir: dir.to_owned(),
        renew_before: Duration::from_secs(30 * 86_400),
        challenge: Challenge::Http01,
        ca: None,
    }
}

#[test]
fn certificates_are_kept_0600_whole_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(&settings(dir.path()));
    store.prepare().unwrap();
    assert!(store.load_cert(0).unwrap().is_none());
    assert_eq!(store.stamp(), None);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    store.write_cert(&key.serialize_pem(), &cert.pem()).unwrap();
    let path = store.cert_path();
    assert!(path.starts_with(dir.path().join("certificates")));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stamp = store.stamp();
    assert!(stamp.is_some());
    let now = crate::config::unix_now();
    let found = store.load_cert(now).unwrap().expect("kept");
    assert_eq!(found.loaded.names, ["a.test"]);
    assert!(found.not_before <= now && found.loaded.not_after > now);
    // Replaced whole: no temporary file left beside it.
    store.write_cert(&key.serialize_pem(), &cert.pem()).unwrap();
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(store.stamp(), stamp, "a new file is a new stamp");
    // A broken file is an error (ordered again), not a crash.
    std::fs::write(&path, "garbage").unwrap();
    assert!(store.load_cert(now).is_err());
    // Another directory URL: another certificate (a staging one is never served for
    // production).
    let mut other = settings(dir.path());
    other.directory = "https://other.test/dir".into();
    assert_ne!(Store::new(&other).cert_path(), path);
}

#[test]
fn one_holder_of_the_lock_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(&settings(dir.path()));
    store.prepare().unwrap();
    let held = store.try_lock().unwrap().expect("free");
    // Another open file description (another lb, same directory) cannot take it.
    assert!(store.try_lock().unwrap().is_none());
    drop(held);
    assert!(store.try_lock().unwrap().is_some(), "released on drop");
}

#[test]
fn challenges_are_left_for_the_others_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(&settings(dir.path()));
    store.prepare().unwrap();
    store.put_challenge("tok_en-1", "tok_en-1.thumb").unwrap();
    let path = store.challenges_dir().join("tok_en-1");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok_en-1.thumb");
    store.clear_challenges();
    assert!(!path.exists());
}

#[tokio::test]
async fn http01_answers_only_tokens_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let answers = crate::state::tls::AcmeChallenges::default();
    answers.activate(Some(dir.path().to_owned()));
    assert!(answers.is_active());
    answers.put_http("abc", "abc.key");
    assert_eq!(answers.http01("abc").await.as_deref(), Some("abc.key"));
    assert_eq!(answers.http01("abd").await, None);
    // Another lb's token, left in the shared directory.
    std::fs::write(dir.path().join("other"), "other.key\n").unwrap();
    assert_eq!(answers.http01("other").await.as_deref(), Some("other.key"));
    // Never a path outside the directory.
    for bad in ["../other", "a/b", "", "%2e%2e"] {
        assert_eq!(answers.http01(bad).await, None, "{bad}");
    }
    answers.clear();
    assert_eq!(answers.http01("abc").await, None);
    answers.activate(None);
    assert!(!answers.is_active());
}

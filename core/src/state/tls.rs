//! The certificates the TLS listener serves: a [`CertStore`] the controller swaps whole (an
//! `ArcSwap`, so a handshake takes no lock and a reload is atomic) and rustls asks for a
//! certificate by the client's SNI ([`ResolvesServerCert`]); beside it the answers to the ACME
//! challenges of an order in flight ([`AcmeChallenges`], `[tls.acme]`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::LoadedCert;

/// What `/_lb/metrics` and `/_lb/status` show of one served certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// Its first DNS name (empty when it has none).
    pub name: String,
    /// All its DNS names.
    pub names: Vec<String>,
    /// The certificate file it was read from.
    pub cert: std::path::PathBuf,
    /// Its notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// One set of certificates, chosen among by name.
#[derive(Debug, Default)]
pub(crate) struct CertSet {
    /// The first configured certificate: for a client without SNI or with an unknown name.
    default: Option<Arc<CertifiedKey>>,
    /// By exact name, lower-case.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the parent domain of a `*.` name (`*.example.com` → `example.com`), lower-case.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The certificates, in order, for the metrics.
    pub info: Vec<CertInfo>,
}

impl CertSet {
    /// The set of `certs`, in configured order (an earlier certificate wins a name two have).
    pub(crate) fn new(certs: &[LoadedCert]) -> CertSet {
        let mut set = CertSet {
            default: certs.first().map(|c| Arc::clone(&c.key)),
            ..CertSet::default()
        };
        for cert in certs {
            for name in &cert.names {
                let name = name.to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut set.wildcard, parent.to_owned()),
                    None => (&mut set.exact, name),
                };
                map.entry(key).or_insert_with(|| Arc::clone(&cert.key));
            }
            set.info.push(CertInfo {
                name: cert.names.first().cloned().unwrap_or_default(),
                names: cert.names.clone(),
                cert: cert.files.cert.clone(),
                not_after: cert.not_after,
            });
        }
        set
    }

    /// The certificate for a client that asked for `sni`: the exact name, else a wildcard one
    /// label deep (`*.example.com` for `a.example.com`, not for `a.b.example.com` nor
    /// `example.com`), case-insensitively; else the default.
    pub(crate) fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

/// The certificates in force, swapped whole by the controller, and the answers to TLS-ALPN-01
/// challenges.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    set: ArcSwap<CertSet>,
    /// The ACME challenges in flight (HTTP-01 is answered by the plain listener from here too).
    pub acme: AcmeChallenges,
}

impl CertStore {
    /// Serve `set` from now on (new handshakes; open connections keep theirs).
    pub(crate) fn store(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }

    /// The set in force.
    pub(crate) fn load(&self) -> Arc<CertSet> {
        self.set.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // TLS-ALPN-01: the CA's validation handshake offers only `acme-tls/1` and gets the
        // challenge certificate (or none); a client offering it never gets a served one.
        if hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN))
        {
            return self.acme.alpn_cert(hello.server_name());
        }
        self.set.load().pick(hello.server_name())
    }
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737): a handshake that offers it gets the ACME
/// challenge certificate for its SNI, never a served one.
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 challenges are asked for (RFC 8555 §8.3).
pub(crate) const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The longest HTTP-01 key authorization read from a shared state directory.
const MAX_KEY_AUTHORIZATION: u64 = 1024;

/// The answers to the ACME challenges of the orders in flight (`[tls.acme]`): written only by
/// the ACME task (`control/acme/`), read by the plain listener (HTTP-01) and by rustls
/// (TLS-ALPN-01). Without `[tls.acme]` it is inactive and the challenge path is proxied like
/// any other.
#[derive(Debug, Default)]
pub(crate) struct AcmeChallenges {
    /// `[tls.acme]` is configured: `lb` answers the challenge path itself.
    active: AtomicBool,
    /// HTTP-01: token → key authorization, of this process's order in flight.
    http: ArcSwap<HashMap<String, String>>,
    /// TLS-ALPN-01: domain (lower-case) → the challenge certificate.
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// The shared state directory's `challenges/`, where another `lb` ordering for the same
    /// names leaves its tokens (the CA's request may reach any of them).
    shared: ArcSwap<Option<PathBuf>>,
}

impl AcmeChallenges {
    /// Answer the challenge path from now on, looking in `shared` for other `lb`s' tokens;
    /// `None`: `[tls.acme]` is gone, the path is proxied again.
    pub(crate) fn activate(&self, shared: Option<PathBuf>) {
        let on = shared.is_some();
        self.shared.store(Arc::new(shared));
        if !on {
            self.http.store(Arc::default());
            self.alpn.store(Arc::default());
        }
        self.active.store(on, Ordering::Relaxed);
    }

    /// Whether `lb` answers the challenge path itself.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Answer HTTP-01 for `token` with `key_authorization`.
    pub(crate) fn put_http(&self, token: &str, key_authorization: &str) {
        let mut map = HashMap::clone(&self.http.load());
        map.insert(token.to_owned(), key_authorization.to_owned());
        self.http.store(Arc::new(map));
    }

    /// Answer TLS-ALPN-01 for `domain` with `cert`.
    pub(crate) fn put_alpn(&self, domain: &str, cert: Arc<CertifiedKey>) {
        let mut map = HashMap::clone(&self.alpn.load());
        map.insert(domain.to_ascii_lowercase(), cert);
        self.alpn.store(Arc::new(map));
    }

    /// The order is over: answer nothing more of it.
    pub(crate) fn clear(&self) {
        self.http.store(Arc::default());
        self.alpn.store(Arc::default());
    }

    /// The key authorization for HTTP-01 `token`: this process's, else one another `lb`
    /// sharing the state directory left there (read off the worker's thread); `None` for
    /// anything else (a token that is not one of base64url's characters is never looked up).
    pub(crate) async fn http01(&self, token: &str) -> Option<String> {
        let valid = !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return None;
        }
        if let Some(answer) = self.http.load().get(token) {
            return Some(answer.clone());
        }
        let dir = self.shared.load();
        let path = dir.as_ref().as_ref()?.join(token);
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path)
                .ok()?
                .take(MAX_KEY_AUTHORIZATION)
                .read_to_string(&mut text)
                .ok()?;
            Some(text.trim().to_owned())
        });
        read.await.ok().flatten().filter(|t| !t.is_empty())
    }

    /// The TLS-ALPN-01 certificate for `sni`, if an order in flight has one.
    fn alpn_cert(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = sni?.trim_end_matches('.').to_ascii_lowercase();
        self.alpn.load().get(&name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::CertificateFiles;

    /// A certificate for `names` (the key is a fresh one; only identity matters here).
    fn cert(names: &[&str]) -> LoadedCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let made = params.self_signed(&key).unwrap();
        let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signing = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        LoadedCert {
            files: CertificateFiles {
                cert: "c.pem".into(),
                key: "c.key".into(),
            },
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
            key: Arc::new(CertifiedKey::new(vec![made.der().clone()], signing)),
            digest: [0; 32],
        }
    }

    fn same(a: Option<Arc<CertifiedKey>>, b: &LoadedCert) -> bool {
        a.is_some_and(|a| Arc::ptr_eq(&a, &b.key))
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let first = cert(&["site.test"]);
        let other = cert(&["other.test", "*.wild.test"]);
        let set = CertSet::new(&[first.clone(), other.clone()]);
        assert!(same(set.pick(Some("other.test")), &other));
        assert!(
            same(set.pick(Some("OTHER.Test")), &other),
            "case-insensitive"
        );
        assert!(same(set.pick(Some("a.wild.test")), &other));
        assert!(
            same(set.pick(Some("a.b.wild.test")), &first),
            "one label deep only"
        );
        assert!(same(set.pick(Some("wild.test")), &first));
        assert!(same(set.pick(Some("site.test")), &first));
        assert!(same(set.pick(Some("unknown.test")), &first));
        assert!(same(set.pick(None), &first));
        assert_eq!(set.info[1].name, "other.test");
    }

    #[test]
    fn an_empty_set_has_nothing_and_the_store_swaps() {
        let store = CertStore::default();
        assert!(store.load().pick(Some("x")).is_none());
        let only = cert(&["x.test"]);
        store.store(CertSet::new(std::slice::from_ref(&only)));
        assert!(same(store.load().pick(Some("y.test")), &only));
    }
}

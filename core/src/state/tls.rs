//! The certificates the TLS listener serves: a [`CertStore`] the controller swaps whole (an
//! `ArcSwap`, so a handshake takes no lock and a reload is atomic) and rustls asks for a
//! certificate by the client's SNI ([`ResolvesServerCert`]).

use std::collections::HashMap;
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

/// The certificates in force, swapped whole by the controller.
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    set: ArcSwap<CertSet>,
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
        self.set.load().pick(hello.server_name())
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

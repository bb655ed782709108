//! One ACME order (RFC 8555 §7.4) with `instant-acme`: the account (restored from the state
//! directory, else registered and kept there), a new order for the names, each authorization's
//! challenge answered (HTTP-01 on the plain listener, TLS-ALPN-01 on the TLS listener, through
//! [`AcmeChallenges`]), the CSR for a fresh ECDSA P-256 key (rcgen), the certificate chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::blocking;
use super::http::{chain, AcmeHttp};
use super::store::{Store, StoreError};
use crate::config::acme::{AcmeSettings, Challenge};
use crate::state::tls::AcmeChallenges;

/// How long the CA may take to validate the challenges, and then to issue.
const VALIDATION_LIMIT: Duration = Duration::from_secs(90);

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrderError {
    /// The HTTP client could not be built (the `ca` file).
    #[error(transparent)]
    Setup(#[from] super::http::HttpSetupError),
    /// The state directory could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A step of the protocol failed: which, and the ACME server's (or the network's) reason.
    #[error("{step}: {reason}")]
    Acme {
        /// What `lb` was doing.
        step: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The CA refused the order (a challenge failed, …).
    #[error("the order was refused: {0}")]
    Refused(String),
    /// The CSR could not be made.
    #[error("cannot make the certificate request: {0}")]
    Csr(String),
}

/// `step` failed with `e`.
fn acme(step: &'static str) -> impl FnOnce(instant_acme::Error) -> OrderError {
    move |e| OrderError::Acme {
        step,
        reason: chain(&e),
    }
}

/// What an order got: the new key (PEM) and the certificate chain (PEM, leaf first).
pub(super) struct Issued {
    pub key_pem: String,
    pub chain_pem: String,
}

/// Order a certificate for `settings.domains`, answering the challenges in `answers` (and, for
/// HTTP-01, in the state directory for the other `lb`s).
pub(super) async fn order(
    settings: &AcmeSettings,
    store: &Store,
    answers: &AcmeChallenges,
) -> Result<Issued, OrderError> {
    let ca = settings.ca.clone();
    let http = blocking(move || AcmeHttp::new(ca.as_deref())).await?;
    let account = account(settings, store, http).await?;
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme("new order"))?;
    let kind = match settings.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(acme("authorization"))?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(OrderError::Refused(format!(
                    "authorization for {} is {other:?}",
                    authorization.identifier()
                )))
            }
        }
        let mut challenge = authorization.challenge(kind.clone()).ok_or_else(|| {
            OrderError::Refused(format!(
                "the CA offers no {} challenge",
                settings.challenge.name()
            ))
        })?;
        let answer = challenge.key_authorization();
        match settings.challenge {
            Challenge::Http01 => {
                answers.put_http(&challenge.token, answer.as_str());
                let (store, token, text) = (
                    store.clone(),
                    challenge.token.clone(),
                    answer.as_str().to_owned(),
                );
                blocking(move || store.put_challenge(&token, &text)).await?;
            }
            Challenge::TlsAlpn01 => {
                let domain = challenge.identifier().to_string();
                let cert = alpn_certificate(&domain, answer.digest().as_ref())?;
                answers.put_alpn(&domain, cert);
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(acme("challenge ready"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(VALIDATION_LIMIT);
    let status = order.poll_ready(&retries).await;
    let status = match status {
        Ok(status) => status,
        Err(instant_acme::Error::Api(problem)) => {
            return Err(OrderError::Refused(problem.to_string()))
        }
        Err(e) => return Err(acme("waiting for validation")(e)),
    };
    if status != OrderStatus::Ready {
        return Err(OrderError::Refused(refusal(&mut order).await));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Csr(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(settings.domains.clone())
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(acme("finalize"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(acme("certificate download"))?;
    Ok(Issued {
        key_pem: key.serialize_pem(),
        chain_pem,
    })
}

/// The account of this directory: restored from the state directory, else registered (the
/// CA's terms agreed to) and kept there.
async fn account(
    settings: &AcmeSettings,
    store: &Store,
    http: AcmeHttp,
) -> Result<Account, OrderError> {
    let kept = {
        let store = store.clone();
        blocking(move || store.read_account()).await?
    };
    if let Some(credentials) = kept {
        return Account::builder_with_http(Box::new(http))
            .from_credentials(credentials)
            .await
            .map_err(acme("account"));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(acme("account registration"))?;
    let store = store.clone();
    blocking(move || store.write_account(&credentials)).await?;
    tracing::info!(directory = %settings.directory, id = account.id(), "ACME account registered");
    Ok(account)
}

/// Why an order went invalid: the failed challenges' errors, as the CA gave them.
async fn refusal(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        if let Ok(state) = authorization.refresh().await {
            for challenge in &state.challenges {
                if let Some(error) = &challenge.error {
                    reasons.push(format!("{name}: {error}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid".into()
    } else {
        reasons.join("; ")
    }
}

/// The TLS-ALPN-01 certificate for `domain` (RFC 8737 §3): self-signed, its only SAN the
/// name, the critical `acmeIdentifier` extension holding the SHA-256 of the key authorization.
fn alpn_certificate(
    domain: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let csr = |e: rcgen::Error| OrderError::Csr(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(csr)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(csr)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| OrderError::Csr("the key authorization digest is not SHA-256".into()))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(&digest));
    let cert = params.self_signed(&key).map_err(csr)?;
    let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| OrderError::Csr(e.to_string()))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

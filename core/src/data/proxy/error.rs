//! Why an attempt got no usable response, and whether the request may go to the next replica.
//!
//! Modelled on pingora's `RetryType`: each failure says itself how far it may be retried
//! ([`AttemptError::retry`] → [`Retry`]), and the attempt loop ([`super`]) only asks that,
//! against what the request allows ([`Replay`]) and how many retries are left. The rules, for
//! both transports:
//!
//! - nothing reached the replica (it could not be connected to, or the TLS handshake with it
//!   failed), or an HTTP/2 replica refused the stream unprocessed (`REFUSED_STREAM`, or a
//!   `GOAWAY` whose last stream id is below it: RFC 9113 §8.7): [`Retry::Yes`] — any request,
//!   as long as its body is still whole (an attempt that could not connect never read it);
//! - the replica may have had the request but gave no response head (the connection ended
//!   before it, no head within the response timeout, the replica left the ring as failed while
//!   the request waited): [`Retry::IfRepeatable`] — only a bodiless request whose method is safe
//!   to repeat (RFC 9110 §9.2.1); the batching client takes nothing else;
//! - the replica answered, badly (an invalid response is an answer), or its response failed
//!   after it began, or the client's own request body failed: [`Retry::No`].
//!
//! A gRPC call is never repeatable ([`super::transport`]): only the first rule sends it on.

use hyper_util::client::legacy;

use crate::data::upstream::UpstreamError;
use crate::metrics::UpstreamErrorKind;

/// How far a failed attempt may be sent again, to the next replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Nothing of the request was sent: it may go to the next replica whatever it is, as long as
    /// its body is still whole.
    Yes,
    /// The replica may have received the request: again only if the request is repeatable.
    IfRepeatable,
    /// Never: the replica answered, or the fault is the client's.
    No,
}

/// What the request allows, after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Its method is safe to repeat and it has no body.
    pub(crate) repeatable: bool,
    /// Its body, if any, was not read by an attempt: it can be sent whole again.
    pub(crate) body_whole: bool,
}

impl Retry {
    /// Whether a request that allows `replay` may go to the next replica.
    pub(crate) fn allows(self, replay: Replay) -> bool {
        match self {
            Retry::Yes => replay.body_whole,
            Retry::IfRepeatable => replay.repeatable && replay.body_whole,
            Retry::No => false,
        }
    }
}

/// Why one attempt got no usable response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The client's request body could not be read (malformed, cut off): the client's fault, a
    /// 400, not counted against the replica.
    #[error("the request body could not be read: {0}")]
    Client(String),
    /// hyper's client could not connect to the replica: nothing of the request was sent (hyper's
    /// error chain).
    #[error("{0}")]
    Unreached(String),
    /// An HTTP/2 replica refused the stream before processing it (`REFUSED_STREAM`, or a
    /// `GOAWAY` whose last stream id is below it): nothing of the request was processed.
    #[error("{0}")]
    Refused(String),
    /// The TLS handshake with the replica failed (its certificate not trusted, for another
    /// name, …): nothing of the request was sent.
    #[error("{0}")]
    Tls(String),
    /// The replica failed to answer, on either transport.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl AttemptError {
    /// Whether, and how far, the request may go to the next replica (see the module's rules).
    pub(crate) fn retry(&self) -> Retry {
        match self {
            AttemptError::Unreached(_)
            | AttemptError::Tls(_)
            | AttemptError::Refused(_)
            | AttemptError::Upstream(UpstreamError::Connect { .. }) => Retry::Yes,
            AttemptError::Upstream(
                UpstreamError::NotStarted(_)
                | UpstreamError::TimedOut(_)
                | UpstreamError::ReplicaFailed,
            ) => Retry::IfRepeatable,
            AttemptError::Client(_)
            | AttemptError::Upstream(UpstreamError::Io(_) | UpstreamError::Invalid(_)) => Retry::No,
        }
    }

    /// Which `lb_upstream_errors_total{kind}` the failure counts under at its replica (`None`:
    /// the client's fault).
    pub(crate) fn kind(&self) -> Option<UpstreamErrorKind> {
        Some(match self {
            AttemptError::Client(_) => return None,
            AttemptError::Unreached(_) | AttemptError::Upstream(UpstreamError::Connect { .. }) => {
                UpstreamErrorKind::Connect
            }
            AttemptError::Refused(_)
            | AttemptError::Upstream(UpstreamError::NotStarted(_) | UpstreamError::Io(_)) => {
                UpstreamErrorKind::Reset
            }
            AttemptError::Upstream(UpstreamError::TimedOut(_) | UpstreamError::ReplicaFailed) => {
                UpstreamErrorKind::Timeout
            }
            AttemptError::Upstream(UpstreamError::Invalid(_)) => UpstreamErrorKind::BadResponse,
            AttemptError::Tls(_) => UpstreamErrorKind::Tls,
        })
    }

    /// hyper's client failed (`client_error`: why the client's body could not be read, if it
    /// could not — that comes first).
    pub(crate) fn from_hyper(e: &legacy::Error, client_error: Option<&str>) -> Self {
        if let Some(reason) = client_error {
            AttemptError::Client(reason.to_owned())
        } else if e.is_connect() {
            match crate::connect::tls_failure(e) {
                Some(_) => AttemptError::Tls(error_chain(e)),
                None => AttemptError::Unreached(error_chain(e)),
            }
        } else if refused_unprocessed(e) {
            AttemptError::Refused(error_chain(e))
        } else if is_parse_error(e) {
            AttemptError::Upstream(UpstreamError::Invalid(error_chain(e)))
        } else {
            AttemptError::Upstream(UpstreamError::NotStarted(error_chain(e)))
        }
    }
}

/// Whether an HTTP/2 replica provably did not process the request: the `h2` error in the
/// chain is a `REFUSED_STREAM` reset, or a `GOAWAY` it received (`h2` gives that error only to
/// the streams above the `GOAWAY`'s last stream id).
fn refused_unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return never_processed(h2.reason(), h2.is_go_away(), h2.is_remote());
        }
        source = s.source();
    }
    false
}

/// The rule of [`refused_unprocessed`] on an `h2` error's `reason`, whether it is a `GOAWAY`
/// and whether the replica sent it.
fn never_processed(reason: Option<h2::Reason>, go_away: bool, remote: bool) -> bool {
    reason == Some(h2::Reason::REFUSED_STREAM) || (go_away && remote)
}

/// Whether hyper's client failed because the replica's response was not valid HTTP.
fn is_parse_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn every_error() -> Vec<AttemptError> {
        let io = || Arc::new(std::io::Error::other("reset"));
        vec![
            AttemptError::Client("bad chunk".into()),
            AttemptError::Unreached("refused".into()),
            AttemptError::Upstream(UpstreamError::Connect {
                addr: "127.0.0.1:9".into(),
                reason: io(),
            }),
            AttemptError::Upstream(UpstreamError::NotStarted("closed".into())),
            AttemptError::Upstream(UpstreamError::Io(io())),
            AttemptError::Upstream(UpstreamError::Invalid("status code 999".into())),
            AttemptError::Upstream(UpstreamError::TimedOut(Duration::from_millis(5))),
            AttemptError::Upstream(UpstreamError::ReplicaFailed),
            AttemptError::Tls("TLS to 127.0.0.1:9: certificate not trusted (UnknownIssuer)".into()),
        ]
    }

    /// The rules both forwarding loops had before there was one: the batching client (always a
    /// bodiless GET or HEAD) retried exactly on Connect, NotStarted, TimedOut and ReplicaFailed;
    /// hyper's path when the body was untouched, the answer not invalid, and the request
    /// repeatable or the replica unreached.
    #[test]
    fn the_retry_rule_is_the_one_both_paths_had() {
        let batching = Replay {
            repeatable: true,
            body_whole: true,
        };
        for e in every_error() {
            let before = matches!(
                e,
                AttemptError::Unreached(_)
                    | AttemptError::Tls(_)
                    | AttemptError::Upstream(
                        UpstreamError::Connect { .. }
                            | UpstreamError::NotStarted(_)
                            | UpstreamError::TimedOut(_)
                            | UpstreamError::ReplicaFailed
                    )
            );
            assert_eq!(e.retry().allows(batching), before, "{e:?}");
        }
        for repeatable in [false, true] {
            for body_whole in [false, true] {
                let replay = Replay {
                    repeatable,
                    body_whole,
                };
                for e in every_error() {
                    let answered = matches!(
                        e,
                        AttemptError::Upstream(UpstreamError::Invalid(_) | UpstreamError::Io(_))
                    );
                    let before = !matches!(e, AttemptError::Client(_))
                        && body_whole
                        && !answered
                        && (repeatable
                            || matches!(
                                e,
                                AttemptError::Unreached(_)
                                    | AttemptError::Tls(_)
                                    | AttemptError::Upstream(UpstreamError::Connect { .. })
                            ));
                    assert_eq!(e.retry().allows(replay), before, "{e:?} {replay:?}");
                }
            }
        }
    }

    /// HTTP/2: only a stream the replica provably never processed goes on to the next replica
    /// whatever the request (a gRPC call is never repeatable).
    #[test]
    fn an_http2_stream_refused_unprocessed_is_retried_and_nothing_else() {
        use h2::Reason;
        assert!(never_processed(Some(Reason::REFUSED_STREAM), false, true));
        assert!(never_processed(Some(Reason::REFUSED_STREAM), false, false));
        // A GOAWAY the replica sent: h2 gives it only to streams above its last stream id.
        assert!(never_processed(Some(Reason::NO_ERROR), true, true));
        assert!(never_processed(Some(Reason::PROTOCOL_ERROR), true, true));
        // lb's own GOAWAY, a stream reset after the replica took it, a cut connection: maybe
        // processed.
        assert!(!never_processed(Some(Reason::NO_ERROR), true, false));
        assert!(!never_processed(Some(Reason::CANCEL), false, true));
        assert!(!never_processed(Some(Reason::INTERNAL_ERROR), false, true));
        assert!(!never_processed(None, false, false));

        // Found in an error's source chain, as hyper wraps it.
        #[derive(Debug, thiserror::Error)]
        #[error("http2 error")]
        struct Wrapper(#[source] h2::Error);
        let refused = Wrapper(h2::Error::from(Reason::REFUSED_STREAM));
        assert!(refused_unprocessed(&refused));
        let cancelled = Wrapper(h2::Error::from(Reason::CANCEL));
        assert!(!refused_unprocessed(&cancelled));
        assert!(!refused_unprocessed(&std::io::Error::other("reset")));

        let grpc_call = Replay {
            repeatable: false,
            body_whole: true,
        };
        let refused = AttemptError::Refused("stream refused".into());
        assert_eq!(refused.retry(), Retry::Yes);
        assert!(refused.retry().allows(grpc_call));
        assert_eq!(refused.kind(), Some(UpstreamErrorKind::Reset));
        // Its body already read: nothing can be sent again.
        assert!(!refused.retry().allows(Replay {
            repeatable: false,
            body_whole: false,
        }));
        for maybe_processed in [
            AttemptError::Upstream(UpstreamError::NotStarted("stream reset: CANCEL".into())),
            AttemptError::Upstream(UpstreamError::TimedOut(Duration::from_millis(5))),
            AttemptError::Upstream(UpstreamError::ReplicaFailed),
            AttemptError::Upstream(UpstreamError::Invalid("status code 999".into())),
        ] {
            assert!(
                !maybe_processed.retry().allows(grpc_call),
                "{maybe_processed:?}"
            );
        }
    }

    #[test]
    fn failures_count_under_their_kind_and_say_why() {
        let kinds: Vec<_> = every_error().iter().map(AttemptError::kind).collect();
        use UpstreamErrorKind::*;
        assert_eq!(
            kinds,
            [
                None,
                Some(Connect),
                Some(Connect),
                Some(Reset),
                Some(Reset),
                Some(BadResponse),
                Some(Timeout),
                Some(Timeout),
                Some(Tls)
            ]
        );
        let texts: Vec<_> = every_error().iter().map(ToString::to_string).collect();
        assert_eq!(texts[0], "the request body could not be read: bad chunk");
        assert_eq!(texts[1], "refused");
        assert_eq!(texts[5], "invalid response: status code 999");
    }
}

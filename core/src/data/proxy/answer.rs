//! What the hyper transport ([`super::transport`]) accepts as a replica's answer, held to the
//! same rules as the batching client ([`crate::data::upstream`]):
//!
//! - at most [`MAX_INTERIM`] interim (1xx) responses before the final one. hyper's client reads
//!   and skips any number of them; it tells each one to a callback on the request
//!   ([`hyper::ext::on_informational`]), and past the limit the wait is given up (the request's
//!   future dropped, which makes hyper close the connection) instead of reading them all;
//! - a response head of at most [`MAX_HEAD`] bytes (hyper's read buffer is limited to about
//!   that, [`super::transport`]'s client; a head that came whole in fewer reads is measured
//!   here);
//! - no `101 Switching Protocols` to a request that did not ask for an upgrade.
//!
//! Anything else is [`Answer::Invalid`]: the replica answered, badly — a 502, never sent to
//! another replica.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tokio::sync::Notify;

pub(crate) use crate::data::upstream::{MAX_HEAD, MAX_INTERIM};

/// What one attempt on the non-batching path got.
#[derive(Debug)]
pub(crate) enum Answer<R, E> {
    /// A response within the rules.
    Response(Response<R>),
    /// hyper's client failed (could not connect, the connection closed, a malformed response).
    Failed(E),
    /// A response that breaks the rules, and why.
    Invalid(String),
}

/// The rules for one request's answer.
#[derive(Debug)]
pub(crate) struct Rules {
    interim: Arc<Interim>,
    /// The request asked for an upgrade (`Upgrade`): a `101` is an answer.
    asked_upgrade: bool,
}

impl Rules {
    /// Hold the answer to `req` to the rules (counting its interim responses from now on).
    pub(crate) fn watch<B>(req: &mut Request<B>) -> Rules {
        let interim = Arc::new(Interim::default());
        let counted = Arc::clone(&interim);
        hyper::ext::on_informational(req, move |_| counted.one());
        Rules {
            interim,
            asked_upgrade: req.headers().contains_key(http::header::UPGRADE),
        }
    }

    /// What `answer` (hyper's response future for the request) gives, checked.
    pub(crate) async fn check<F, R, E>(&self, answer: F) -> Answer<R, E>
    where
        F: Future<Output = Result<Response<R>, E>>,
    {
        let result = tokio::select! {
            biased;
            result = answer => result,
            () = self.interim.exceeded.notified() => {
                return Answer::Invalid(format!(
                    "more than {MAX_INTERIM} interim (1xx) responses to one request"
                ));
            }
        };
        match result {
            Err(e) => Answer::Failed(e),
            Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !self.asked_upgrade => {
                // hyper hands the connection over for the new protocol: dropping the response
                // closes it.
                Answer::Invalid(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                )
            }
            Ok(resp) if head_len(&resp) > MAX_HEAD => {
                Answer::Invalid(format!("response head larger than {MAX_HEAD} bytes"))
            }
            Ok(resp) => Answer::Response(resp),
        }
    }
}

/// The interim responses one request has had.
#[derive(Debug, Default)]
struct Interim {
    count: AtomicUsize,
    /// Told once the count passes [`MAX_INTERIM`].
    exceeded: Notify,
}

impl Interim {
    /// One more interim response came.
    fn one(&self) {
        if self.count.fetch_add(1, Ordering::Relaxed) == usize::from(MAX_INTERIM) {
            self.exceeded.notify_one();
        }
    }
}

/// The size of `resp`'s head as it came, at least: status line, fields, blank line (optional
/// whitespace and a reason phrase other than the usual are not counted).
fn head_len<B>(resp: &Response<B>) -> usize {
    let reason = resp.status().canonical_reason().map_or(0, str::len);
    let status_line = "HTTP/1.1 200 ".len() + reason + 2;
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    status_line + fields + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Result<Response<()>, &'static str>;

    fn request() -> (Rules, Arc<Interim>) {
        let mut req = Request::new(());
        let rules = Rules::watch(&mut req);
        let interim = Arc::clone(&rules.interim);
        (rules, interim)
    }

    #[tokio::test]
    async fn the_wait_is_given_up_past_the_interim_limit_and_not_before() {
        let (rules, interim) = request();
        for _ in 0..MAX_INTERIM {
            interim.one();
        }
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            rules.check(std::future::pending::<Sent>()),
        )
        .await;
        assert!(
            waited.is_err(),
            "{MAX_INTERIM} interim responses are allowed"
        );
        interim.one();
        let checked = rules.check(std::future::pending::<Sent>()).await;
        assert!(
            matches!(&checked, Answer::Invalid(why) if why.contains("interim")),
            "{checked:?}"
        );
    }

    #[tokio::test]
    async fn a_101_is_an_answer_only_to_an_upgrade() {
        let switching = || {
            let mut resp = Response::new(());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            Ok::<_, &str>(resp)
        };
        let (plain, _) = request();
        let checked = plain.check(async { switching() }).await;
        assert!(matches!(checked, Answer::Invalid(_)), "{checked:?}");
        let mut req = Request::new(());
        req.headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        let upgrade = Rules::watch(&mut req);
        let checked = upgrade.check(async { switching() }).await;
        assert!(matches!(checked, Answer::Response(_)), "{checked:?}");
    }

    #[tokio::test]
    async fn heads_are_measured_and_failures_passed_on() {
        let (rules, _) = request();
        let with = |value_len: usize| {
            let mut resp = Response::new(());
            resp.headers_mut()
                .insert("x-large", "a".repeat(value_len).parse().unwrap());
            Ok::<_, &str>(resp)
        };
        let small = rules.check(async { with(100) }).await;
        assert!(matches!(small, Answer::Response(_)), "{small:?}");
        let large = rules.check(async { with(MAX_HEAD) }).await;
        assert!(
            matches!(&large, Answer::Invalid(why) if why.contains("larger than")),
            "{large:?}"
        );
        let failed = rules
            .check(async { Err::<Response<()>, _>("refused") })
            .await;
        assert!(matches!(failed, Answer::Failed("refused")), "{failed:?}");
    }
}

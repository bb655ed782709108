//! A-3's endpoint checks (SPEC §3, success and error rows, the open cases, `/_lb/*`), each a
//! pass/fail [`Check`], and the routing check against `/_lb/ring`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::client::{Answer, LbClient, Method};
use crate::error::Result;
use crate::experiments::Context;
use crate::lb_api::Rep;
use crate::load::{self, served_by};
use crate::progress;

/// Requests routed by id and compared with `/_lb/ring` in the routing check.
const ROUTED_IDS: usize = 50;

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As expected.
    Pass,
    /// Not as expected.
    Fail,
    /// Could not be checked here (the reason is in `got`).
    Skip,
}

/// One endpoint check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The request.
    pub request: String,
    /// What should come back.
    pub expected: String,
    /// What came back.
    pub got: String,
    /// Pass, fail or skip.
    pub verdict: Verdict,
}

/// Run every check against the load balancer (with its replicas scaled to 3 before), with a
/// spinner, and print the summary.
pub fn run(ctx: &Context) -> Result<Vec<Check>> {
    let spinner = progress::spinner("A-3 endpoint checks");
    let checks = checks(ctx, &spinner)?;
    spinner.finish_and_clear();
    report_checks(&checks);
    Ok(checks)
}

fn report_checks(checks: &[Check]) {
    let (pass, fail) = (
        checks.iter().filter(|c| c.verdict == Verdict::Pass).count(),
        checks.iter().filter(|c| c.verdict == Verdict::Fail).count(),
    );
    progress::note(&format!(
        "A-3 checks: {pass} passed, {fail} failed, {} skipped",
        checks.len() - pass - fail
    ));
    for c in checks.iter().filter(|c| c.verdict == Verdict::Fail) {
        progress::note(&format!(
            "  FAIL {}: {} expected {}, got {}",
            c.name, c.request, c.expected, c.got
        ));
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn describe(answer: &Result<Answer>) -> String {
    match answer {
        Ok(a) if a.body.is_empty() => format!("{} (empty body)", a.status),
        Ok(a) => format!("{} {}", a.status, shorten(&a.body)),
        Err(e) => format!("error: {e}"),
    }
}

/// The `{"message": "<Error> …", "status": "failure"}` shape, optionally with an exact message.
fn is_failure(answer: &Answer, status: u16, message: Option<&str>) -> bool {
    let Some(v) = answer.json() else { return false };
    let shape = answer.status == status
        && v["status"] == "failure"
        && v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("<Error> "))
        && v.as_object().is_some_and(|o| o.len() == 2);
    shape
        && match message {
            Some(m) => v["message"] == format!("<Error> {m}"),
            None => true,
        }
}

struct Checker<'a> {
    client: &'a LbClient,
    checks: Vec<Check>,
    spinner: &'a indicatif::ProgressBar,
}

impl Checker<'_> {
    fn record(
        &mut self,
        name: &str,
        request: String,
        expected: &str,
        got: String,
        verdict: Verdict,
    ) {
        self.spinner.set_message(name.to_owned());
        self.spinner.inc(1);
        self.checks.push(Check {
            name: name.to_owned(),
            request,
            expected: expected.to_owned(),
            got,
            verdict,
        });
    }

    /// Send a request and judge the answer.
    fn expect(
        &mut self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: &str,
        judge: impl FnOnce(&Answer) -> bool,
    ) -> Option<Answer> {
        let body_text = body.map(|b| b.to_string());
        self.expect_raw(name, method, path, body_text.as_deref(), expected, judge)
    }

    fn expect_raw(
        &mut self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
        expected: &str,
        judge: impl FnOnce(&Answer) -> bool,
    ) -> Option<Answer> {
        let request = match body {
            Some(b) => format!("{method} {path} {b}"),
            None => format!("{method} {path}"),
        };
        let answer = self.client.send(method, path, body, None);
        let verdict = match &answer {
            Ok(a) if judge(a) => Verdict::Pass,
            _ => Verdict::Fail,
        };
        let got = describe(&answer);
        self.record(name, request, expected, got, verdict);
        answer.ok()
    }
}

fn rep_is(answer: &Answer, check: impl FnOnce(&Rep) -> bool) -> bool {
    answer.status == 200
        && Rep::parse(&answer.body).is_some_and(|r| r.n == r.replicas.len() && check(&r))
}

fn checks(ctx: &Context, spinner: &indicatif::ProgressBar) -> Result<Vec<Check>> {
    let client = &ctx.client;
    let mut c = Checker {
        client,
        checks: Vec::new(),
        spinner,
    };
    let before = client.rep()?;
    let names = before.replicas.clone();

    // Success rows.
    c.expect(
        "/rep lists the replicas",
        Method::GET,
        "/rep",
        None,
        "200, N = 3 and 3 hostnames",
        |a| rep_is(a, |r| r.n == 3),
    );
    c.expect(
        "/home is served by a replica",
        Method::GET,
        "/home",
        None,
        "200, \"Hello from Server: <ID>\" with <ID> one of /rep's replicas",
        |a| a.status == 200 && served_by(&a.body).is_some_and(|h| names.contains(&h)),
    );
    c.expect(
        "other replica paths are proxied",
        Method::GET,
        "/heartbeat",
        None,
        "200 with an empty body (a replica's heartbeat)",
        |a| a.status == 200 && a.body.is_empty(),
    );
    routing_check(ctx, &mut c);
    c.expect(
        "/add with hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 2, "hostnames": ["S5"]})),
        "200, N = 5, S5 and one generated name added",
        |a| {
            rep_is(a, |r| {
                r.n == 5
                    && r.replicas.iter().any(|h| h == "S5")
                    && names.iter().all(|h| r.replicas.contains(h))
            })
        },
    );
    c.expect(
        "/rm with hostnames",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 2, "hostnames": ["S5"]})),
        "200, N = 3, S5 and one replica picked at random removed",
        |a| rep_is(a, |r| r.n == 3 && !r.replicas.iter().any(|h| h == "S5")),
    );
    c.expect(
        "/add without hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 1})),
        "200, N = 4",
        |a| rep_is(a, |r| r.n == 4),
    );
    c.expect(
        "/rm without hostnames",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1})),
        "200, N = 3",
        |a| rep_is(a, |r| r.n == 3),
    );
    // Back to Server 1..3 with ids 1..3 for the error rows and the kill.
    client.scale_to(3)?;
    let before = client.rep()?;
    let existing = before.replicas.first().cloned().unwrap_or_default();

    // Error rows (SPEC §3 and the open cases): 400 in the failure shape, nothing changes.
    c.expect(
        "/add: more hostnames than n",
        Method::POST,
        "/add",
        Some(json!({"n": 1, "hostnames": ["A", "B"]})),
        "400, <Error> Length of hostname list is more than newly added instances",
        |a| {
            is_failure(
                a,
                400,
                Some("Length of hostname list is more than newly added instances"),
            )
        },
    );
    c.expect(
        "/rm: more hostnames than n",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1, "hostnames": ["A", "B"]})),
        "400, <Error> Length of hostname list is more than removable instances",
        |a| {
            is_failure(
                a,
                400,
                Some("Length of hostname list is more than removable instances"),
            )
        },
    );
    c.expect(
        "unknown path",
        Method::GET,
        "/other",
        None,
        "400, <Error> '/other' endpoint does not exist in server replicas",
        |a| {
            is_failure(
                a,
                400,
                Some("'/other' endpoint does not exist in server replicas"),
            )
        },
    );
    let failure = "400, {\"message\": \"<Error> …\", \"status\": \"failure\"}";
    c.expect(
        "/rm: n larger than N",
        Method::DELETE,
        "/rm",
        Some(json!({"n": before.n + 1})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: n = 0",
        Method::POST,
        "/add",
        Some(json!({"n": 0})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: n not an integer",
        Method::POST,
        "/add",
        Some(json!({"n": "two"})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect_raw(
        "/add: body not JSON",
        Method::POST,
        "/add",
        Some("n=1"),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/rm: unknown hostname",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1, "hostnames": ["no-such-replica"]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: duplicate hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 2, "hostnames": ["S9", "S9"]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: hostname already present",
        Method::POST,
        "/add",
        Some(json!({"n": 1, "hostnames": [existing]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/rep: wrong method",
        Method::POST,
        "/rep",
        None,
        "405",
        |a| a.status == 405,
    );
    let after = client.rep();
    c.record(
        "bad input changes nothing",
        "GET /rep".into(),
        &format!(
            "N = {} and the same replicas as before the error rows",
            before.n
        ),
        match &after {
            Ok(r) => format!("N = {}, {:?}", r.n, r.replicas),
            Err(e) => format!("error: {e}"),
        },
        if after.as_ref().is_ok_and(|r| *r == before) {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
    );

    // The load balancer's own endpoints.
    c.expect(
        "/_lb/status",
        Method::GET,
        "/_lb/status",
        None,
        "200, JSON with 3 replicas and their handles",
        |a| {
            a.status == 200
                && a.json()
                    .is_some_and(|v| v["replicas"].as_array().is_some_and(|r| r.len() == 3))
        },
    );
    c.expect(
        "/_lb/ring",
        Method::GET,
        "/_lb/ring",
        None,
        "200, JSON with an owner for each of the `slots` slots",
        |a| {
            a.status == 200
                && a.json().is_some_and(|v| {
                    v["owners"].as_array().map(|o| o.len() as u64) == v["slots"].as_u64()
                        && v["slots"].as_u64() > Some(0)
                })
        },
    );
    c.expect(
        "/_lb/plugins",
        Method::GET,
        "/_lb/plugins",
        None,
        "200, JSON listing the active hash",
        |a| {
            a.status == 200
                && a.json().is_some_and(|v| {
                    let active = v["active"].clone();
                    v["plugins"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|e| e["name"] == active))
                })
        },
    );
    Ok(c.checks)
}

/// `GET /home` with `X-Request-Id: r` must be served by the owner of slot `H(r) mod M` in
/// `/_lb/ring`, with H computed here by the `lb` library from the same hash.
fn routing_check(ctx: &Context, c: &mut Checker<'_>) {
    let name = "routing by X-Request-Id follows /_lb/ring";
    let expected = format!("{ROUTED_IDS} of {ROUTED_IDS} served by owners[H(r) mod M]");
    let request = format!("GET /home with X-Request-Id, {ROUTED_IDS} ids");
    let setup = || {
        let ring = ctx.client.ring()?;
        let status = ctx.client.status()?;
        let mut dirs: Vec<std::path::PathBuf> =
            status.config.plugin_dirs.iter().map(Into::into).collect();
        dirs.push(ctx.plugin_dir.clone());
        let hash =
            lb_balance::plugin::resolve_any(&ring.hash, &lb_balance::plugin::search_path(&dirs))?;
        Ok::<_, crate::Error>((ring, hash))
    };
    let (ring, hash) = match setup() {
        Ok(found) => found,
        Err(e) => {
            c.record(
                name,
                request,
                &expected,
                format!("cannot compute H here: {e}"),
                Verdict::Skip,
            );
            return;
        }
    };
    let mut right = 0;
    let mut first_wrong = None;
    for id in load::request_ids(ctx.seed, "a3-routing", ROUTED_IDS) {
        let slot = (hash.request(u64::from(id)) % u64::from(ring.slots)) as usize;
        let want = ring.owners.get(slot).cloned().unwrap_or_default();
        let got = ctx
            .client
            .send(Method::GET, "/home", None, Some(u64::from(id)));
        let host = got.as_ref().ok().and_then(|a| served_by(&a.body));
        if host.as_deref() == Some(want.as_str()) {
            right += 1;
        } else if first_wrong.is_none() {
            first_wrong = Some(format!(
                "id {id}: slot {slot} belongs to {want}, got {}",
                describe(&got)
            ));
        }
    }
    let got = match first_wrong {
        None => format!("{right} of {ROUTED_IDS} ({} hash)", ring.hash),
        Some(w) => format!("{right} of {ROUTED_IDS}; {w}"),
    };
    let verdict = if right == ROUTED_IDS {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    c.record(name, request, &expected, got, verdict);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_shape() {
        let a = Answer {
            status: 400,
            body: r#"{"message": "<Error> '/x' endpoint does not exist in server replicas", "status": "failure"}"#.into(),
        };
        assert!(is_failure(&a, 400, None));
        assert!(is_failure(
            &a,
            400,
            Some("'/x' endpoint does not exist in server replicas")
        ));
        assert!(!is_failure(&a, 400, Some("something else")));
        assert!(!is_failure(&a, 404, None));
        let b = Answer {
            status: 400,
            body: "bad".into(),
        };
        assert!(!is_failure(&b, 400, None));
    }
}

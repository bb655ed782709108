//! A-3's loop attempt ([`A3Phase::Loop`](crate::experiments::A3Phase::Loop)), against the
//! control-plane phases' own load balancer ([`super::plane`]): `POST /add {"n": 1,
//! "addresses": [X]}` with X the load balancer's own traffic address in several spellings
//! ([`own_addresses`]): each should be refused with 400 and N stay as it was (one that is
//! accepted is removed again at once). Then `GET /home` carrying the load balancer's own loop
//! mark — the `Via` value `/_lb/status` shows as `via` — should be answered 508 (Loop
//! Detected). A load balancer that shows no mark is recorded as such ([`LoopMark::NotShown`]).
//! The requests that reached replicas during the phase (the sum of `requests` in
//! `/_lb/status`, after minus before) are compared with the [`PLAIN_REQUESTS`] plain requests
//! sent: a loop would multiply them.

use std::net::SocketAddr;

use serde::Serialize;
use serde_json::json;

use super::faults::{probe, shorten};
use crate::client::Method;
use crate::error::Result;
use crate::experiments::Context;
use crate::lb_api::Status;
use crate::load;
use crate::progress;

/// Plain `GET /home` requests sent during the loop attempt.
pub const PLAIN_REQUESTS: usize = 100;

/// One `/add` of the load balancer's own address.
#[derive(Debug, Clone, Serialize)]
pub struct LoopAdd {
    /// The address given.
    pub address: String,
    /// The answer's status (`None`: no answer).
    pub status: Option<u16>,
    /// The start of the answer (or of the error).
    pub answer: String,
    /// N before.
    pub n_before: usize,
    /// N after.
    pub n_after: usize,
    /// What was done about an accepted one: removed again, or why that failed.
    pub undone: Option<String>,
}

/// The request carrying the load balancer's own mark.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopMark {
    /// `/_lb/status` shows no `via`: this load balancer has no loop mark.
    NotShown,
    /// Sent.
    Forged {
        /// The `Via` value sent (the load balancer's own).
        via: String,
        /// The answer's status (`None`: no answer).
        status: Option<u16>,
        /// The start of the answer (or of the error).
        answer: String,
    },
}

/// The loop attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LoopAttempt {
    /// The load balancer's traffic address.
    pub listen: String,
    /// Each `/add`.
    pub adds: Vec<LoopAdd>,
    /// The request with the mark.
    pub mark: LoopMark,
    /// Plain `GET /home` requests sent during the phase, and how many were answered 200.
    pub plain: (usize, usize),
    /// Requests that reached replicas during the phase (`requests` in `/_lb/status`, after minus
    /// before).
    pub reached_replicas: i64,
    /// N before the phase and after it.
    pub n: (usize, usize),
}

impl LoopAttempt {
    /// `/add`s answered 400.
    pub fn refused(&self) -> usize {
        self.adds.iter().filter(|a| a.status == Some(400)).count()
    }
}

/// The load balancer's traffic address `addr` spelt as others may write it: by name, as
/// loopback, as the wildcard, as an IPv4-mapped IPv6 address.
pub fn own_addresses(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ]
}

fn requests_sum(status: &Status) -> i64 {
    status.replicas.iter().map(|r| r.requests as i64).sum()
}

/// Try to make the load balancer at `addr` (reached through `own`) loop; print the summary.
pub(super) fn run(own: &Context, addr: SocketAddr) -> Result<LoopAttempt> {
    let attempt = loop_attempt(own, addr)?;
    progress::note(&loop_note(&attempt));
    Ok(attempt)
}

fn loop_attempt(own: &Context, addr: SocketAddr) -> Result<LoopAttempt> {
    let client = &own.client;
    let before = client.status()?;
    let n_start = client.rep()?.n;
    let mut adds = Vec::new();
    for address in own_addresses(addr) {
        let rep = client.rep()?;
        let body = json!({"n": 1, "addresses": [address]}).to_string();
        let answer = client.send(Method::POST, "/add", Some(&body), None);
        let (status, text) = match &answer {
            Ok(a) => (Some(a.status), shorten(&a.body)),
            Err(e) => (None, shorten(&e.to_string())),
        };
        let after = client.rep()?;
        let added: Vec<String> = after
            .replicas
            .iter()
            .filter(|h| !rep.replicas.contains(h))
            .cloned()
            .collect();
        let undone = (!added.is_empty()).then(|| match client.rm(added.len(), &added) {
            Ok(r) => format!("removed again with /rm ({added:?}; N = {})", r.n),
            Err(e) => format!("could not be removed ({added:?}): {e}"),
        });
        adds.push(LoopAdd {
            address,
            status,
            answer: text,
            n_before: rep.n,
            n_after: after.n,
            undone,
        });
    }
    let mut conn = client.connection();
    let mut answered = 0;
    for id in load::request_ids(own.seed, "a3-control-loop", PLAIN_REQUESTS) {
        if probe(&mut conn, id).is_some() {
            answered += 1;
        }
    }
    let mark = match &before.via {
        None => LoopMark::NotShown,
        Some(via) => {
            let id = load::request_ids(own.seed, "a3-control-mark", 1)[0];
            let answer = conn.send_with_fields(
                Method::GET,
                "/home",
                None,
                Some(u64::from(id)),
                &[("via", via)],
                crate::client::REQUEST_TIMEOUT,
            );
            let (status, text) = match &answer {
                Ok(a) => (Some(a.status), shorten(&a.body)),
                Err(e) => (None, shorten(&e.to_string())),
            };
            LoopMark::Forged {
                via: via.clone(),
                status,
                answer: text,
            }
        }
    };
    let after = client.status()?;
    Ok(LoopAttempt {
        listen: if before.listen.is_empty() {
            addr.to_string()
        } else {
            before.listen.clone()
        },
        adds,
        mark,
        plain: (PLAIN_REQUESTS, answered),
        reached_replicas: requests_sum(&after) - requests_sum(&before),
        n: (n_start, client.rep()?.n),
    })
}

fn loop_note(l: &LoopAttempt) -> String {
    let adds: Vec<String> = l
        .adds
        .iter()
        .map(|a| {
            format!(
                "{} → {}",
                a.address,
                a.status.map_or("no answer".into(), |s| s.to_string())
            )
        })
        .collect();
    let mark = match &l.mark {
        LoopMark::NotShown => "lb shows no loop mark".to_owned(),
        LoopMark::Forged { status, .. } => format!(
            "its own mark → {}",
            status.map_or("no answer".into(), |s| s.to_string())
        ),
    };
    format!(
        "A-3 loop attempt: /add {}; N {} → {}; {mark}; {} requests reached replicas for {} plain ones",
        adds.join(", "),
        l.n.0,
        l.n.1,
        l.reached_replicas,
        l.plain.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_cover_the_spellings() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(
            own_addresses(addr),
            [
                "localhost:4321",
                "127.0.0.1:4321",
                "0.0.0.0:4321",
                "[::ffff:127.0.0.1]:4321"
            ]
        );
    }
}

//! The assignment's bodies: `{"message": …, "status": "successful" | "failure"}`, in the byte
//! format of Python's `json.dumps` ([`Reply::to_vec`]).
//!
//! | endpoint | `message` |
//! |---|---|
//! | `GET /rep`, `POST /add`, `DELETE /rm` | [`Replicas`]: `{"N": 3, "replicas": ["a", "b", "c"]}` |
//! | any error of `lb`'s | `"<Error> …"` |
//! | a replica's `GET /home` | `"Hello from Server: <ID>"` |
//!
//! A replica's `GET /heartbeat` answers 200 with an empty body.

use serde::{Deserialize, Serialize};

/// The `status` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `"successful"`.
    Successful,
    /// `"failure"`.
    Failure,
}

/// `{"message": M, "status": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<M> {
    /// What the reply says: [`Replicas`] or a text.
    pub message: M,
    /// Whether the request succeeded.
    pub status: Outcome,
}

impl<M> Reply<M> {
    /// A successful reply saying `message`.
    pub fn successful(message: M) -> Self {
        Reply {
            message,
            status: Outcome::Successful,
        }
    }

    /// A failure saying `message` (`lb`'s start with `<Error> `).
    pub fn failure(message: M) -> Self {
        Reply {
            message,
            status: Outcome::Failure,
        }
    }
}

impl<M: Serialize> Reply<M> {
    /// The body, byte for byte as Python's `json.dumps` writes it.
    pub fn to_vec(&self) -> Vec<u8> {
        crate::python::to_vec(self)
    }
}

/// The replica set: the message of a successful `/rep`, `/add` or `/rm`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Replicas<S = String> {
    /// `N`, the number of replicas.
    #[serde(rename = "N")]
    pub n: usize,
    /// Their hostnames, in server-id order.
    pub replicas: Vec<S>,
}

impl<S> Replicas<S> {
    /// The set of `replicas` (N is their number).
    pub fn new(replicas: Vec<S>) -> Self {
        Replicas {
            n: replicas.len(),
            replicas,
        }
    }
}

impl Replicas {
    /// The replica set of a successful `/rep`, `/add` or `/rm` body; `None` for anything else
    /// (an error, not JSON).
    pub fn parse(body: &str) -> Option<Replicas> {
        serde_json::from_str::<Reply<Replicas>>(body)
            .ok()
            .filter(|reply| reply.status == Outcome::Successful)
            .map(|reply| reply.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_sets_are_written_like_the_reference_and_read_back() {
        let written = Reply::successful(Replicas::new(vec!["Server 1", "Server 2", "S5"])).to_vec();
        let body = std::str::from_utf8(&written).unwrap();
        assert_eq!(
            body,
            r#"{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "S5"]}, "status": "successful"}"#
        );
        let read = Replicas::parse(body).unwrap();
        assert_eq!(
            (read.n, read.replicas),
            (
                3,
                vec!["Server 1".to_owned(), "Server 2".into(), "S5".into()]
            )
        );
        // The compact form (another writer) reads the same.
        assert_eq!(
            Replicas::parse(r#"{"message":{"N":0,"replicas":[]},"status":"successful"}"#),
            Some(Replicas::default())
        );
    }

    #[test]
    fn failures_and_other_bodies_are_not_replica_sets() {
        let failure =
            Reply::failure("<Error> Length of hostname list is more than newly added instances");
        let body = String::from_utf8(failure.to_vec()).unwrap();
        assert_eq!(
            body,
            r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
        );
        assert_eq!(
            serde_json::from_str::<Reply<String>>(&body).unwrap().status,
            Outcome::Failure
        );
        assert_eq!(Replicas::parse(&body), None);
        assert_eq!(
            Replicas::parse(r#"{"message": {"N": 1, "replicas": ["a"]}, "status": "failure"}"#),
            None
        );
        assert_eq!(Replicas::parse("not json"), None);
        assert_eq!(
            Replicas::parse(r#"{"message": {"N": -1, "replicas": []}, "status": "successful"}"#),
            None
        );
    }

    #[test]
    fn a_replicas_home_is_byte_exact() {
        let home = Reply::successful("Hello from Server: é 1").to_vec();
        assert_eq!(
            std::str::from_utf8(&home).unwrap(),
            r#"{"message": "Hello from Server: \u00e9 1", "status": "successful"}"#
        );
        let read: Reply<String> = serde_json::from_slice(&home).unwrap();
        assert_eq!(read, Reply::successful("Hello from Server: é 1".to_owned()));
    }
}

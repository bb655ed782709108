//! Requests that ask for an upgrade (HTTP/1.1 `Upgrade`, which hyper marks with an
//! [`OnUpgrade`] extension: the plain request path pays one empty-extensions check for it).
//!
//! What the request offers ([`offer`]) decides:
//!
//! - `Connection: upgrade` and `Upgrade: websocket` (token lists, any case): a WebSocket. It is
//!   placed by the ring's key like any request and sent with `Upgrade: websocket`,
//!   `Connection: upgrade` and its `Sec-WebSocket-*` fields over a **fresh** HTTP/1.1
//!   connection to the replica (never a pooled one; plain or TLS by address, through the same
//!   [`crate::connect::Connector`]). A replica that cannot be connected to (nothing was sent,
//!   [`super::error::Retry::Yes`]) is replaced by the next one in the placement's order, within
//!   `[proxy] retries`; once the request went out it is never sent again. The replica's `101`
//!   becomes the client's `101` (its fields, hop-by-hop ones but `Upgrade`/`Connection`
//!   dropped) and both upgraded sockets go to a [`Tunnel`] on a task of its own; any other
//!   answer (400, 426, …) goes to the client as a normal response.
//! - only `h2c` offered, or `Upgrade` without `Connection: upgrade` (no upgrade by RFC 9110
//!   §7.8): served as a plain HTTP/1.1 request, `Upgrade` dropped like any hop-by-hop field (as
//!   nginx does).
//! - anything else (`Upgrade: foo`): 501 with failure JSON saying only `websocket` is forwarded.
//!
//! RFC 8441 (a WebSocket over HTTP/2): an extended `CONNECT` with `:protocol = websocket`
//! ([`Proxy::extended_connect`]; hyper gives it the same [`OnUpgrade`]) is placed by the key
//! like any request (`:path` and its query; `:authority` as `Host`) and sent to the replica as
//! this HTTP/1.1 upgrade — `GET`, a fresh `Sec-WebSocket-Key` of `lb`'s, the client's
//! `Sec-WebSocket-Version` (`13` if none), `-Protocol` and `-Extensions`. On the replica's `101`
//! the client gets `200` with only the negotiated `Sec-WebSocket-Protocol`/`-Extensions` (never
//! `Sec-WebSocket-Accept`) and its stream goes to the same [`Tunnel`]; a refusal (not `101`) is
//! passed on as it is, but a `2xx` (which would open the stream to nothing) is a 502. Another
//! `:protocol` is a 501 naming it; a plain `CONNECT` stays the front's 405.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use tower_service::Service as _;

use super::answer::{Answer, Rules, MAX_HEAD};
use super::error::{AttemptError, Replay};
use super::outgoing::Outgoing;
use super::transport::wait;
use super::{error_response, respond, Proxy};
use crate::api::ApiError;
use crate::connect::ConnectError;
use crate::data::body::{ProxyBody, Source};
use crate::data::hop;
use crate::data::key::Peer;
use crate::data::observe::Exchange;
use crate::data::tunnel::{Handoff, Tunnel};
use crate::data::upstream::UpstreamError;
use crate::state::Backend;

/// What an upgrade request offers, as `lb` treats it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// `websocket`, with `Connection: upgrade`: tunnelled.
    WebSocket,
    /// No upgrade `lb` acts on (only `h2c`, or no `Connection: upgrade`): a plain request.
    Plain,
    /// Something else: refused (the offer, shortened).
    Unsupported(String),
}

/// Longest offer quoted back in a 501.
const QUOTED: usize = 64;

/// `sent`, shortened to [`QUOTED`] bytes (an ellipsis after), to be quoted back.
fn quoted(sent: &str) -> String {
    let mut quoted = sent.to_owned();
    if quoted.len() > QUOTED {
        let mut end = QUOTED;
        while !quoted.is_char_boundary(end) {
            end -= 1;
        }
        quoted.truncate(end);
        quoted.push('…');
    }
    quoted
}

/// What `headers` offer (see the module's documentation).
pub(super) fn offer(headers: &HeaderMap) -> Offer {
    let tokens = hop::connection_tokens(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    if !tokens.iter().any(|t| t == "upgrade") {
        return Offer::Plain;
    }
    let mut websocket = false;
    let mut others = false;
    for protocol in headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let name = protocol.split('/').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("websocket") {
            websocket = true;
        } else if !name.eq_ignore_ascii_case("h2c") {
            others = true;
        }
    }
    if websocket {
        Offer::WebSocket
    } else if others {
        let sent: Vec<&str> = headers
            .get_all(header::UPGRADE)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        Offer::Unsupported(quoted(&sent.join(", ")))
    } else {
        Offer::Plain
    }
}

/// Which client side a tunnel opens for: what the upgrade request came as and what the client
/// is answered on the replica's `101`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// An HTTP/1.1 `Upgrade: websocket`: the client gets the replica's `101`.
    Http1,
    /// An HTTP/2 extended `CONNECT` (RFC 8441): the client gets a `200` on its stream.
    Http2,
}

/// The fields of a replica's `101` that an RFC 8441 client gets on its `200` (RFC 8441 §5:
/// the negotiated subprotocol and extensions; never `Sec-WebSocket-Accept`, which answers a key
/// only `lb` sent).
const NEGOTIATED: [HeaderName; 2] = [
    HeaderName::from_static("sec-websocket-protocol"),
    HeaderName::from_static("sec-websocket-extensions"),
];
/// The WebSocket key `lb` sends a replica for an RFC 8441 client (which sends none).
const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// The WebSocket version; RFC 8441 clients send it too, `13` when they do not.
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64): it only proves to
/// `lb` that the replica speaks WebSocket, so it needs no cryptographic randomness.
fn fresh_key() -> HeaderValue {
    use base64::Engine as _;
    let bytes = fastrand::u128(..).to_le_bytes();
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    HeaderValue::from_str(&key).expect("base64 is a valid field value")
}

impl Proxy {
    /// A WebSocket upgrade: placed, sent to its replica over a fresh connection, and on a
    /// `101` joined to it by a [`Tunnel`] (see the module's documentation).
    pub(super) async fn websocket(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<ProxyBody> {
        use http_body::Body as _;
        if req.method() != Method::GET {
            return error_response(&ApiError::BadRequest(format!(
                "a WebSocket upgrade is a GET request (RFC 6455 §4.1), not {}",
                req.method()
            )));
        }
        if !req.body().is_end_stream() {
            return error_response(&ApiError::BadRequest(
                "a WebSocket upgrade request carries no body".into(),
            ));
        }
        let client = hyper::upgrade::on(&mut req);
        self.tunnel_to_replica(req, client, peer, exchange, Side::Http1)
            .await
    }

    /// An HTTP/2 extended `CONNECT` (RFC 8441; hyper marks its `:protocol` with a
    /// [`Protocol`]): `websocket` goes to its replica as an HTTP/1.1 upgrade (a fresh key, the
    /// client's `Sec-WebSocket-*` fields) and on the `101` the client's stream is joined to it
    /// by the same [`Tunnel`], the client answered `200`; any other protocol is a 501 naming
    /// it. `req` is already an HTTP/1.1-shaped request ([`hop::from_h2`]).
    pub(super) async fn extended_connect(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<ProxyBody> {
        let websocket = req
            .extensions()
            .get::<Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if !websocket {
            let asked = req
                .extensions()
                .get::<Protocol>()
                .map_or_else(String::new, |p| quoted(p.as_str()));
            return error_response(&ApiError::ConnectProtocolUnsupported(asked));
        }
        let client = hyper::upgrade::on(&mut req);
        self.tunnel_to_replica(req, client, peer, exchange, Side::Http2)
            .await
    }

    /// Place `req` (a WebSocket request from the `side` given, whose socket `client` resolves
    /// to) and send it to its replica as an HTTP/1.1 upgrade; on the replica's `101`, answer
    /// the client and open the tunnel. A replica that was not reached is replaced by the next
    /// one within `[proxy] retries`; any other answer goes to the client as it is.
    async fn tunnel_to_replica(
        &self,
        req: Request<Incoming>,
        client: OnUpgrade,
        peer: &Peer,
        exchange: &mut Exchange,
        side: Side,
    ) -> Response<ProxyBody> {
        let Some((slot, first)) = self.place(&req, peer, exchange) else {
            return error_response(&ApiError::Unavailable(
                "no replica is available to serve the request".into(),
            ));
        };
        let owner = {
            let snapshot = self.shared.snapshot.load();
            snapshot
                .placement
                .owner_of_slot(slot)
                .map_or(first.incarnation, |m| snapshot.backends[m].incarnation)
        };
        let (mut parts, _) = req.into_parts();
        let path = hop::outgoing_head(
            &mut parts,
            &peer.forwarded_for,
            &peer.proto,
            self.transports.trust_forwarded_for(),
        );
        let headers = &mut parts.headers;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if side == Side::Http2 {
            // An RFC 8441 client proves nothing by a key: lb's own, checked by nobody but
            // the replica (its Accept is not passed on).
            headers.insert(SEC_WEBSOCKET_KEY, fresh_key());
            headers
                .entry(SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        exchange.replica = Some(first);
        let mut tried: Vec<u64> = Vec::new();
        // Once sent, never again; before (a connection refused, a TLS handshake failed), yes.
        let replay = Replay {
            repeatable: false,
            body_whole: true,
        };
        let mut client = Some(client);
        loop {
            let backend = Arc::clone(exchange.replica.as_ref().expect("proxy chose a replica"));
            let in_flight = backend.begin_request();
            let error = match self.upgrade_attempt(&parts.headers, &path, &backend).await {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let Some(client) = client.take() else {
                        unreachable!("a 101 ends the loop");
                    };
                    let opened = Opened {
                        backend,
                        in_flight,
                        slot,
                        owner,
                    };
                    return self.open_tunnel(resp, client, opened, side);
                }
                Ok(resp) if side == Side::Http2 && resp.status().is_success() => {
                    // A 2xx would open the client's stream as a tunnel to nothing.
                    let status = resp.status().as_u16();
                    drop(in_flight);
                    return respond::did_not_answer(
                        &backend,
                        &format!("its answer to the WebSocket upgrade was {status}, not 101"),
                    );
                }
                Ok(resp) => {
                    let (mut head, body) = resp.into_parts();
                    hop::strip(&mut head.headers);
                    return Response::from_parts(head, ProxyBody::from(Source::Hyper(body)))
                        .map(|b| b.in_flight(in_flight));
                }
                Err(error) => error,
            };
            drop(in_flight);
            if let Some(kind) = error.kind() {
                self.recorder.upstream_error(&backend, kind);
            }
            tried.push(backend.id);
            let next = (error.retry().allows(replay) && tried.len() <= self.retries)
                .then(|| self.next_replica(slot, &tried))
                .flatten();
            let Some(next) = next else {
                return match error {
                    AttemptError::Upstream(e @ UpstreamError::TimedOut(_)) => {
                        respond::timed_out(&backend, &e.to_string())
                    }
                    e => respond::did_not_answer(&backend, &e.to_string()),
                };
            };
            self.shared
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(from = %backend.hostname, to = %next.hostname, %error, "WebSocket upgrade: trying the next replica");
            exchange.replica = Some(next);
        }
    }

    /// One attempt: a fresh connection to `backend`, the upgrade request (`headers`, `path`),
    /// its response head within the response timeout.
    async fn upgrade_attempt(
        &self,
        headers: &HeaderMap,
        path: &PathAndQuery,
        backend: &Backend,
    ) -> Result<Response<Incoming>, AttemptError> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if backend.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(backend.authority.clone());
        uri.path_and_query = Some(path.clone());
        let uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        let mut connector = self.transports.connector().clone();
        let connected = match poll_fn(|cx| connector.poll_ready(cx)).await {
            Ok(()) => connector.call(uri).await,
            Err(e) => Err(e),
        };
        let io = connected.map_err(|e| match e {
            ConnectError::Tls { .. } => AttemptError::Tls(e.to_string()),
            e => AttemptError::Unreached(format!("connecting to {}: {e}", backend.addr)),
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD.max(8192))
            .handshake::<_, Outgoing>(io)
            .await
            .map_err(|e| AttemptError::Unreached(e.to_string()))?;
        // The connection runs until the upgrade hands its socket over (or it ends).
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut request = Request::new(Outgoing::Empty);
        *request.method_mut() = Method::GET;
        *request.uri_mut() = Uri::from(path.clone());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers.clone();
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&backend.addr) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        let rules = Rules::watch(&mut request);
        let sent = rules.check(sender.send_request(request));
        match wait(sent, backend, self.transports.response_timeout(), false).await {
            Ok(Answer::Invalid(reason)) => Err(UpstreamError::Invalid(reason).into()),
            Ok(Answer::Response(resp)) if resp.status().as_u16() > 599 => Err(
                UpstreamError::Invalid(format!("status code {}", resp.status().as_u16())).into(),
            ),
            Ok(Answer::Response(resp)) => Ok(resp),
            Ok(Answer::Failed(e)) => Err(UpstreamError::NotStarted(e.to_string()).into()),
            Err(waited) => Err(waited.into()),
        }
    }

    /// The replica said `101`: the client's answer (its `101` with the replica's fields over
    /// HTTP/1.1; a `200` with the negotiated ones over HTTP/2), and the tunnel that joins both
    /// sockets once hyper hands them over, on a task of its own.
    fn open_tunnel(
        &self,
        mut resp: Response<Incoming>,
        client: OnUpgrade,
        opened: Opened,
        side: Side,
    ) -> Response<ProxyBody> {
        let replica = hyper::upgrade::on(&mut resp);
        let (mut head, _) = resp.into_parts();
        match side {
            Side::Http1 => {
                let protocol = head
                    .headers
                    .get(header::UPGRADE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("websocket"));
                hop::strip(&mut head.headers);
                head.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                head.headers.insert(header::UPGRADE, protocol);
            }
            Side::Http2 => {
                let mut negotiated = HeaderMap::new();
                for name in NEGOTIATED {
                    for value in head.headers.get_all(&name) {
                        negotiated.append(name.clone(), value.clone());
                    }
                }
                head.headers = negotiated;
                head.status = StatusCode::OK;
            }
        }
        head.version = Version::HTTP_11;
        let (handoff, observation) = Handoff::new();
        head.extensions = http::Extensions::new();
        head.extensions.insert(handoff);
        let Opened {
            backend,
            in_flight,
            slot,
            owner,
        } = opened;
        tokio::spawn(
            Tunnel {
                client,
                replica,
                backend,
                in_flight,
                slot,
                owner,
                shared: Arc::clone(&self.shared),
                idle: self.tunnel_idle,
                observation,
            }
            .run(),
        );
        Response::from_parts(head, ProxyBody::full(Bytes::new()))
    }
}

/// A replica that answered `101`: what its tunnel holds.
struct Opened {
    backend: Arc<Backend>,
    in_flight: crate::state::InFlight,
    slot: u32,
    owner: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(connection: &[&'static str], upgrade: &[&'static str]) -> Offer {
        let mut headers = HeaderMap::new();
        for c in connection {
            headers.append(header::CONNECTION, HeaderValue::from_static(c));
        }
        for u in upgrade {
            headers.append(header::UPGRADE, HeaderValue::from_static(u));
        }
        offer(&headers)
    }

    #[test]
    fn websocket_is_found_in_token_lists_in_any_case() {
        assert_eq!(with(&["Upgrade"], &["websocket"]), Offer::WebSocket);
        assert_eq!(
            with(&["keep-alive, UPGRADE"], &["WebSocket"]),
            Offer::WebSocket
        );
        assert_eq!(
            with(&["keep-alive", "upgrade"], &["foo, websocket"]),
            Offer::WebSocket
        );
        assert_eq!(
            with(&["upgrade"], &["h2c", "websocket/13"]),
            Offer::WebSocket
        );
    }

    #[test]
    fn a_fresh_key_is_sixteen_random_bytes_in_base64() {
        use base64::Engine as _;
        let a = fresh_key();
        let b = fresh_key();
        assert_ne!(a, b);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.as_bytes())
            .unwrap();
        assert_eq!(bytes.len(), 16);
        assert_eq!(a.len(), 24);
    }

    #[test]
    fn h2c_or_no_connection_upgrade_is_a_plain_request_and_the_rest_refused() {
        assert_eq!(with(&["Upgrade, HTTP2-Settings"], &["h2c"]), Offer::Plain);
        assert_eq!(with(&[], &["websocket"]), Offer::Plain);
        assert_eq!(with(&["close"], &["foo"]), Offer::Plain);
        assert_eq!(with(&["upgrade"], &[]), Offer::Plain);
        assert_eq!(
            with(&["upgrade"], &["foo/2, h2c"]),
            Offer::Unsupported("foo/2, h2c".into())
        );
        let Offer::Unsupported(long) = with(
            &["upgrade"],
            &[concat!(
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
            )],
        ) else {
            panic!("refused");
        };
        assert_eq!(long.chars().count(), QUOTED + 1);
    }
}

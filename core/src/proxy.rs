//! The HTTP front: the load balancer's own endpoints (`/rep`, `/add`, `/rm`, `/_lb/…`) and the
//! proxy path that sends every other request to the replica the ring picks.
//!
//! The hot path loads one snapshot (no lock), hashes the request id, indexes the owner table and
//! forwards the request over a pooled keep-alive connection, streaming the response back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::admin;
use crate::api::{self, ApiError, Scale};
use crate::body::LbBody;
use crate::config::ProxySection;
use crate::controller::ControllerHandle;
use crate::hash::request_id_from_header;
use crate::hop;
use crate::state::{Backend, Shared};
use crate::upstream::{self, Upstreams};

/// The header whose value routes a request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Everything a connection needs to answer requests.
pub struct App {
    shared: Arc<Shared>,
    controller: ControllerHandle,
    client: Client<HttpConnector, Incoming>,
    /// Batching connections for bodiless `GET`/`HEAD`, if enabled.
    upstreams: Option<Upstreams>,
}

impl App {
    /// An app over `shared` that sends changes to `controller`.
    pub fn new(shared: Arc<Shared>, controller: ControllerHandle, settings: ProxySection) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        App {
            shared,
            controller,
            client,
            upstreams: settings.pipelining.then(Upstreams::new),
        }
    }

    /// Answer one request; `forwarded_for` is the client's address as a header value.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        forwarded_for: &HeaderValue,
    ) -> Response<LbBody> {
        let result = match req.uri().path() {
            "/rep" => self.rep(req.method()),
            "/add" => self.scale(req, Scale::Add).await,
            "/rm" => self.scale(req, Scale::Remove).await,
            "/_lb/plugins" => self.plugins(req.method()).await,
            path if path == "/_lb" || path.starts_with("/_lb/") => self.admin(&req),
            _ => return self.proxy(req, forwarded_for).await,
        };
        result.unwrap_or_else(|e| error_response(&e))
    }

    fn rep(&self, method: &Method) -> Result<Response<LbBody>, ApiError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/rep",
                allowed: "GET",
            });
        }
        let snapshot = self.shared.snapshot.load();
        let body = api::replicas_body(snapshot.backends.iter().map(|b| b.hostname.as_str()));
        Ok(json_response(StatusCode::OK, body))
    }

    async fn scale(
        &self,
        req: Request<Incoming>,
        scale: Scale,
    ) -> Result<Response<LbBody>, ApiError> {
        let (path, method, allowed) = match scale {
            Scale::Add => ("/add", Method::POST, "POST"),
            Scale::Remove => ("/rm", Method::DELETE, "DELETE"),
        };
        if req.method() != method {
            return Err(ApiError::MethodNotAllowed { path, allowed });
        }
        let body = read_body(req).await?;
        let request = api::parse_scale(&body, scale)?;
        let hostnames = match scale {
            Scale::Add => self.controller.add(request).await?,
            Scale::Remove => self.controller.remove(request).await?,
        };
        Ok(json_response(
            StatusCode::OK,
            api::replicas_body(hostnames.iter().map(String::as_str)),
        ))
    }

    async fn plugins(&self, method: &Method) -> Result<Response<LbBody>, ApiError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/_lb/plugins",
                allowed: "GET",
            });
        }
        let shared = Arc::clone(&self.shared);
        let body = tokio::task::spawn_blocking(move || admin::plugins(&shared))
            .await
            .map_err(|e| ApiError::Internal(format!("listing plugins failed: {e}")))?;
        Ok(json_response(StatusCode::OK, body))
    }

    fn admin(&self, req: &Request<Incoming>) -> Result<Response<LbBody>, ApiError> {
        let path = req.uri().path();
        let endpoint: fn(&App) -> Vec<u8> = match path {
            "/_lb/status" => |app| admin::status(&app.shared),
            "/_lb/ring" => |app| admin::ring(&app.shared.snapshot.load()),
            _ => return Err(ApiError::NotFound(path.to_owned())),
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/_lb/",
                allowed: "GET",
            });
        }
        Ok(json_response(StatusCode::OK, Bytes::from(endpoint(self))))
    }

    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        forwarded_for: &HeaderValue,
    ) -> Response<LbBody> {
        let backend = {
            let snapshot = self.shared.snapshot.load();
            let id = match req.headers().get(REQUEST_ID) {
                Some(value) => request_id_from_header(value.as_bytes()),
                None => fastrand::u64(100_000..=999_999),
            };
            match snapshot.ring.lookup(id) {
                Some(member) => Arc::clone(&snapshot.backends[member]),
                None => {
                    return error_response(&ApiError::Unavailable(
                        "no replica is available to serve the request".into(),
                    ))
                }
            }
        };
        if let Some(upstreams) = &self.upstreams {
            if batchable(&req) {
                return self
                    .pipelined(upstreams, &req, &backend, forwarded_for)
                    .await;
            }
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(backend.authority.clone());
        parts.path_and_query = Some(path_and_query.clone());
        *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
        let headers = req.headers_mut();
        hop::strip(headers);
        headers.append(X_FORWARDED_FOR, forwarded_for.clone());

        let in_flight = backend.begin_request();
        match self.client.request(req).await {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                not_in_replicas(path_and_query.path())
            }
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                hop::strip(&mut parts.headers);
                Response::from_parts(parts, LbBody::Proxied { body, in_flight })
            }
            Err(e) => did_not_answer(&backend, &error_chain(&e)),
        }
    }

    /// Forward a bodiless `GET`/`HEAD` over a batching connection ([`crate::upstream`]).
    async fn pipelined(
        &self,
        upstreams: &Upstreams,
        req: &Request<Incoming>,
        backend: &Arc<Backend>,
        forwarded_for: &HeaderValue,
    ) -> Response<LbBody> {
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let head = upstream::request_head(
            req.method(),
            path_and_query,
            req.headers(),
            backend.authority.as_str(),
            forwarded_for,
        );
        let in_flight = backend.begin_request();
        let head_only = req.method() == Method::HEAD;
        match upstreams.request(&backend.addr, head, head_only).await {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => not_in_replicas(req.uri().path()),
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, LbBody::Piped { body, in_flight })
            }
            Err(e) => did_not_answer(backend, &e.to_string()),
        }
    }
}

/// Whether a request may go over a batching connection: safe to repeat and without a body.
fn batchable(req: &Request<Incoming>) -> bool {
    use http_body::Body as _;
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.body().is_end_stream()
        && !req.headers().contains_key(header::EXPECT)
}

/// A replica's 404: the assignment's error for endpoints the replicas do not have.
fn not_in_replicas(path: &str) -> Response<LbBody> {
    error_response(&ApiError::BadRequest(format!(
        "'{path}' endpoint does not exist in server replicas"
    )))
}

fn did_not_answer(backend: &Backend, reason: &str) -> Response<LbBody> {
    error_response(&ApiError::BadGateway(format!(
        "replica '{}' did not answer: {reason}",
        backend.hostname
    )))
}

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

/// Largest oversized body that is read and discarded before answering 413, so that the client
/// finishes sending and reads the answer (like nginx's lingering close). Past this the answer is
/// sent at once and the connection closed.
const DISCARD_LIMIT: usize = 1 << 20;
/// How long discarding an oversized body may take.
const DISCARD_TIME: Duration = Duration::from_secs(2);

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = req.into_body();
    if declared.is_some_and(|len| len > api::MAX_BODY as u64) {
        if declared.is_some_and(|len| len <= DISCARD_LIMIT as u64) {
            discard(body).await;
        }
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = body;
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if collected.len() + data.len() > api::MAX_BODY {
                discard(body).await;
                return Err(ApiError::PayloadTooLarge);
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

/// Read and drop up to [`DISCARD_LIMIT`] more bytes of `body`, for at most [`DISCARD_TIME`].
async fn discard(body: Incoming) {
    let limited = Limited::new(body, DISCARD_LIMIT);
    let _ = tokio::time::timeout(DISCARD_TIME, limited.collect()).await;
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<LbBody> {
    let mut resp = Response::new(LbBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(error: &ApiError) -> Response<LbBody> {
    let mut resp = json_response(error.status(), error.body());
    match error {
        ApiError::MethodNotAllowed { allowed, .. } => {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        // The rest of the body may be unread: do not reuse the connection.
        ApiError::PayloadTooLarge => {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

/// Accept connections on `listener` and serve them with `app` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        // Built once per connection, cloned (a reference count) per request.
        let forwarded_for = HeaderValue::from_str(&remote.ip().to_string())
            .expect("an IP address is a valid header value");
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = Arc::clone(&app);
                let forwarded_for = forwarded_for.clone();
                async move { Ok::<_, Infallible>(app.handle(req, &forwarded_for).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

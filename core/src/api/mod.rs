//! The load balancer's own endpoints: the assignment's `/rep`, `/add`, `/rm` and the views under
//! the reserved `/_lb/` prefix (JSON, and the `/_lb/ui` dashboard). Handlers answer with
//! `Response<Bytes>`; the front turns that into its response type. Control errors become HTTP
//! answers in one place (`From<ControlError> for ApiError`).

pub(crate) mod admin;
mod contract;
mod prometheus;
mod ui;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use contract::PROXIED_METHODS;
pub(crate) use contract::{
    parse_plan, parse_scale, replicas_body, ApiError, PlanBody, Scale, MAX_BODY,
};

use crate::config::{BackendTls, Config, Protocol};
use crate::control::{AddedTls, ControllerHandle, PlanAsk, ScaleRequest};
use crate::state::{Shared, Snapshot};

/// Whether `path` is one of the load balancer's own endpoints (everything else is proxied).
pub(crate) fn owns(path: &str) -> bool {
    matches!(path, "/rep" | "/add" | "/rm") || path == "/_lb" || path.starts_with("/_lb/")
}

/// Which of the load balancer's endpoints one listener serves (who may use them: the admin
/// token in [`Shared::admin_token`], live).
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// Whether `/add`, `/rm` and `/_lb/*` are served here (not when `[admin] listen` moves them
    /// to an address of their own). `/rep` is served everywhere.
    pub(crate) admin_routes: bool,
}

/// Whether `req` carries the admin token in force (always, when there is none).
fn allows(shared: &Shared, req: &Request<Incoming>) -> bool {
    let token = shared.admin_token.load();
    let Some(token) = token.as_deref() else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .unwrap_or_default();
    constant_time_eq(given, token.as_bytes())
}

/// The token of `Authorization: Bearer <token>` credentials: the scheme in any case (RFC 9110
/// §11.1), then one or more spaces. `None` for another scheme or no token.
fn bearer_token(credentials: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let (scheme, rest) = credentials.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// Equality that takes as long for every byte string of the same length (no early exit that
/// would tell an attacker how much of a guess is right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The TLS settings an `/add` asks for, built (a CA file is read on a blocking thread, relative
/// to `base_dir` like the file's `ca` keys): a 400 naming the address for each that cannot be.
async fn build_tls(
    request: &ScaleRequest,
    base_dir: &std::path::Path,
) -> Result<Vec<Option<AddedTls>>, ApiError> {
    if !request.tls.iter().any(Option::is_some) {
        return Ok(request.tls.clone());
    }
    let wanted: Vec<_> = request
        .addresses
        .iter()
        .cloned()
        .zip(request.tls.iter().cloned())
        .zip(
            request
                .protocols
                .iter()
                .copied()
                .chain(std::iter::repeat(Protocol::Http1)),
        )
        .collect();
    let base_dir = base_dir.to_path_buf();
    let built = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|((address, tls), protocol)| match tls {
                Some(AddedTls::Asked {
                    server_name,
                    ca,
                    verify,
                }) => {
                    let tls = BackendTls::build(
                        &address,
                        server_name.as_deref(),
                        ca.as_deref(),
                        verify,
                        &base_dir,
                        protocol,
                    )
                    .map_err(|e| format!("address '{address}': {e}"))?;
                    if !verify {
                        tracing::warn!(
                            address,
                            "/add with tls_verify = false: the backend's certificate is NOT verified; anyone on the path can impersonate it"
                        );
                    }
                    Ok(Some(AddedTls::Built(Arc::new(tls))))
                }
                other => Ok(other),
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("building the TLS settings failed: {e}")))?;
    built.map_err(ApiError::BadRequest)
}

/// Routes that change state or reveal processes, files and addresses.
fn protected(path: &str) -> bool {
    matches!(
        path,
        "/add" | "/rm" | "/_lb/status" | "/_lb/plugins" | "/_lb/metrics" | "/_lb/plan"
    )
}

/// The REST handlers, over the shared state and a handle to the controller.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    shared: Arc<Shared>,
    controller: ControllerHandle,
    access: Access,
}

impl Api {
    /// Handlers reading `shared` and sending changes to `controller`.
    pub(crate) fn new(shared: Arc<Shared>, controller: ControllerHandle, access: Access) -> Self {
        Api {
            shared,
            controller,
            access,
        }
    }

    /// Answer a request for one of the paths [`owns`] accepts.
    pub(crate) async fn answer(&self, req: Request<Incoming>) -> Response<Bytes> {
        let path = req.uri().path();
        if path != "/rep" && !self.access.admin_routes {
            return error_response(&ApiError::Elsewhere(path.to_owned()));
        }
        if protected(path) && !allows(&self.shared, &req) {
            return error_response(&ApiError::Unauthorized(path.to_owned()));
        }
        let result = match req.uri().path() {
            "/rep" => self.rep(req.method()),
            "/add" => self.scale(req, Scale::Add).await,
            "/rm" => self.scale(req, Scale::Remove).await,
            "/_lb/plugins" => self.plugins(req.method()).await,
            "/_lb/ui" => ui::page(req.method()),
            "/_lb/metrics" => self.metrics(req.method()).await,
            "/_lb/ring" => self.ring(&req).await,
            "/_lb/plan" => self.plan(req).await,
            _ => self.views(&req),
        };
        result.unwrap_or_else(|e| error_response(&e))
    }

    fn rep(&self, method: &Method) -> Result<Response<Bytes>, ApiError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/rep",
                allowed: "GET",
            });
        }
        let snapshot = self.shared.snapshot.load();
        let body = replicas_body(snapshot.listed());
        Ok(json_response(StatusCode::OK, body))
    }

    async fn scale(
        &self,
        req: Request<Incoming>,
        scale: Scale,
    ) -> Result<Response<Bytes>, ApiError> {
        let (path, method, allowed) = match scale {
            Scale::Add => ("/add", Method::POST, "POST"),
            Scale::Remove => ("/rm", Method::DELETE, "DELETE"),
        };
        if req.method() != method {
            return Err(ApiError::MethodNotAllowed { path, allowed });
        }
        let body = read_body(req).await?;
        let mut request = parse_scale(&body, scale)?;
        let listening = self.shared.meta.addresses();
        for address in &request.addresses {
            let is_local = &crate::config::own::on_this_machine;
            if let Some(own) = crate::config::own::reached_listener(address, &listening, is_local) {
                return Err(ApiError::BadRequest(format!(
                    "address '{address}' is lb's own listening address ({own}): \
                     requests would loop"
                )));
            }
        }
        request.tls = build_tls(&request, &self.shared.meta.base_dir).await?;
        let hostnames = match scale {
            Scale::Add => self.controller.add(request).await?,
            Scale::Remove => self.controller.remove(request).await?,
        };
        Ok(json_response(
            StatusCode::OK,
            replicas_body(hostnames.iter().map(String::as_str)),
        ))
    }

    async fn plugins(&self, method: &Method) -> Result<Response<Bytes>, ApiError> {
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

    async fn metrics(&self, method: &Method) -> Result<Response<Bytes>, ApiError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/_lb/metrics",
                allowed: "GET",
            });
        }
        let shared = Arc::clone(&self.shared);
        let page = tokio::task::spawn_blocking(move || prometheus::metrics(&shared))
            .await
            .map_err(|e| ApiError::Internal(format!("collecting metrics failed: {e}")))?;
        let mut resp = Response::new(Bytes::from(page));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::exposition::CONTENT_TYPE),
        );
        Ok(resp)
    }

    /// `/_lb/ring`: a page of the slot table (`?from=F&count=C`), or the whole table, built off
    /// the workers once per snapshot ([`whole_ring`]).
    async fn ring(&self, req: &Request<Incoming>) -> Result<Response<Bytes>, ApiError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ApiError::MethodNotAllowed {
                path: "/_lb/",
                allowed: "GET",
            });
        }
        let snapshot = self.shared.snapshot.load_full();
        let slots = snapshot.placement.balancer().slots();
        let page = admin::parse_page(req.uri().query(), slots)
            .map_err(|why| ApiError::BadRequest(format!("/_lb/ring: {why}")))?;
        let body =
            match page {
                None => whole_ring(snapshot).await?,
                Some(page) => tokio::task::spawn_blocking(move || {
                    Bytes::from(admin::ring(&snapshot, Some(page)))
                })
                .await
                .map_err(|e| ApiError::Internal(format!("building the ring view failed: {e}")))?,
            };
        Ok(json_response(StatusCode::OK, body))
    }

    /// `POST /_lb/plan`: what an `/add`, an `/rm`, new weights or a configuration file would
    /// move, as JSON; nothing changes. A file is checked (and its hash resolved, plugins only
    /// from the directories this `lb` loads from) off the workers.
    async fn plan(&self, req: Request<Incoming>) -> Result<Response<Bytes>, ApiError> {
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed {
                path: "/_lb/plan",
                allowed: "POST",
            });
        }
        let body = read_body(req).await?;
        let ask = match parse_plan(&body)? {
            PlanBody::Change(change) => PlanAsk::Change(change),
            PlanBody::Config(text) => {
                let base = self.shared.meta.base_dir.join("lb.toml");
                let dirs = self.shared.config.load().plugin_dirs.clone();
                tokio::task::spawn_blocking(move || {
                    let config =
                        Config::parse_file(&text, &base).map_err(|e| format!("'config': {e}"))?;
                    let hash = config
                        .resolve_hash_in(&dirs)
                        .map_err(|e| format!("'config': {e}"))?;
                    Ok(PlanAsk::Config {
                        config: Box::new(config),
                        hash,
                    })
                })
                .await
                .map_err(|e| ApiError::Internal(format!("checking the file failed: {e}")))?
                .map_err(ApiError::BadRequest)?
            }
        };
        let plan = self.controller.plan(ask).await?;
        let body = serde_json::to_vec(&plan)
            .map_err(|e| ApiError::Internal(format!("writing the plan failed: {e}")))?;
        Ok(json_response(StatusCode::OK, body))
    }

    fn views(&self, req: &Request<Incoming>) -> Result<Response<Bytes>, ApiError> {
        let path = req.uri().path();
        let endpoint: fn(&Api) -> Vec<u8> = match path {
            "/_lb/status" => |app| admin::status(&app.shared),
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
}

/// The whole `/_lb/ring` body of the latest snapshot asked for, shared by every worker: built
/// once per snapshot on a blocking thread (at 4 194 304 slots it is tens of megabytes), with
/// requests that come while it is being built waiting for the same build. Held by a weak
/// reference, so the cache keeps no snapshot alive (its allocation stays, so the address cannot
/// be taken by another).
type RingCache = Option<(Weak<Snapshot>, Arc<tokio::sync::OnceCell<Bytes>>)>;
static WHOLE_RING: Mutex<RingCache> = Mutex::new(None);

/// The whole `/_lb/ring` body for `snapshot` ([`WHOLE_RING`]).
async fn whole_ring(snapshot: Arc<Snapshot>) -> Result<Bytes, ApiError> {
    let cell = {
        let mut cache = WHOLE_RING.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((built_for, cell)) if std::ptr::eq(built_for.as_ptr(), Arc::as_ptr(&snapshot)) => {
                Arc::clone(cell)
            }
            _ => {
                let cell = Arc::new(tokio::sync::OnceCell::new());
                *cache = Some((Arc::downgrade(&snapshot), Arc::clone(&cell)));
                cell
            }
        }
    };
    cell.get_or_try_init(|| async move {
        tokio::task::spawn_blocking(move || Bytes::from(admin::ring(&snapshot, None)))
            .await
            .map_err(|e| ApiError::Internal(format!("building the ring view failed: {e}")))
    })
    .await
    .cloned()
}

/// Largest oversized body that is read and discarded before answering 413, so that the client
/// finishes sending and reads the answer (like nginx's lingering close). Past this the answer is
/// sent at once and the connection closed.
const DISCARD_LIMIT: usize = 1 << 20;
/// How long discarding an oversized body may take.
const DISCARD_TIME: Duration = Duration::from_secs(2);

pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = req.into_body();
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
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
            if collected.len() + data.len() > MAX_BODY {
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

/// A JSON answer with `status`.
pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer for `error`, in the `{"message": "<Error> …", "status": "failure"}` shape, with
/// `Allow` on a 405 and `Connection: close` on a 413 (the rest of the body may be unread) and a
/// 408 (the connection is closed after it).
pub(crate) fn error_response(error: &ApiError) -> Response<Bytes> {
    let mut resp = json_response(error.status(), error.body());
    match error {
        ApiError::Unauthorized(_) => {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lb\""),
            );
        }
        ApiError::MethodNotAllowed { allowed, .. } => {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        ApiError::NoTunnel => {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(PROXIED_METHODS));
        }
        ApiError::PayloadTooLarge | ApiError::RequestTimeout(_) => {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        for credentials in [
            &b"Bearer s3cret"[..],
            b"bearer s3cret",
            b"BEARER s3cret",
            b"bEaReR   s3cret",
        ] {
            assert_eq!(bearer_token(credentials), Some(&b"s3cret"[..]));
        }
        for credentials in [
            &b"Basic s3cret"[..],
            b"Bearers3cret",
            b"Bearer",
            b"Bearer ",
            b"s3cret",
            b"",
        ] {
            assert_eq!(bearer_token(credentials), None, "{credentials:?}");
        }
        assert_eq!(bearer_token(b"bearer S3CRET"), Some(&b"S3CRET"[..]));
    }

    #[test]
    fn only_state_changing_and_revealing_routes_are_protected() {
        for path in [
            "/add",
            "/rm",
            "/_lb/status",
            "/_lb/plugins",
            "/_lb/metrics",
            "/_lb/plan",
        ] {
            assert!(protected(path), "{path}");
        }
        for path in ["/rep", "/_lb/ring", "/_lb/ui", "/home"] {
            assert!(!protected(path), "{path}");
        }
        for path in ["/rep", "/add", "/rm", "/_lb/status", "/_lb/ring", "/_lb/ui"] {
            assert!(owns(path), "{path}");
        }
        assert!(!owns("/home") && !owns("/_lbx"));
    }
}

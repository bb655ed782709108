//! A small HTTP/1.1 client for the load balancer (hyper, pooled keep-alive connections).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// How long one request may take, answer body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body, as text (lossy UTF-8).
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Client for one load balancer, identified by its base URL.
#[derive(Debug, Clone)]
pub struct LbClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl LbClient {
    /// A client for `base_url` (`http://HOST:PORT`, no path).
    pub fn new(base_url: &str) -> Result<LbClient> {
        let bad = |reason: &str| Error::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("give the base URL only, without a path"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(LbClient {
            base: format!("http://{authority}"),
            client,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host part of the base URL (without port).
    pub fn host(&self) -> String {
        self.base
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Send `method path` with an optional body and `X-Request-Id`, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
    ) -> Result<Answer> {
        let fail = |reason: String| Error::Http {
            method: method.to_string(),
            path: path.to_owned(),
            reason,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        if let Some(id) = request_id {
            request = request.header("x-request-id", id.to_string());
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .map_err(|e| fail(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| fail(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(error_chain(&e)))?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.send(Method::GET, path, None, None).await
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_base_urls_only() {
        assert_eq!(
            LbClient::new("http://127.0.0.1:5000").unwrap().base(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            LbClient::new("http://localhost:80/").unwrap().host(),
            "localhost"
        );
        assert!(LbClient::new("https://127.0.0.1").is_err());
        assert!(LbClient::new("http://127.0.0.1/rep").is_err());
        assert!(LbClient::new("127.0.0.1:5000").is_err());
    }
}

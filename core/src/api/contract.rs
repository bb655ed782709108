//! The REST contract (SPEC §3): request bodies of `/add` and `/rm`, and the JSON every endpoint
//! answers with ([`lb_views::reply`]), byte-compatible with the assignment's Python reference.

use bytes::Bytes;
use http::StatusCode;
use lb_views::{Replicas, Reply};
use serde_json::Value;

use crate::config::{check_address, check_hostname, Protocol};
use crate::control::{AddedTls, ControlError, PlanChange, ScaleRequest};

/// Most replicas one `/add` or `/rm` may name in `n`.
pub(crate) const MAX_BATCH: u64 = 64;
/// Largest accepted request body for `/add` and `/rm`.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Which scaling endpoint a body is for (their error messages differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// `POST /add`
    Add,
    /// `DELETE /rm`
    Remove,
}

/// An error answer, in the `{"message": "<Error> …", "status": "failure"}` shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: the request is wrong; nothing changed.
    #[error("{0}")]
    BadRequest(String),
    /// 405: wrong method for an endpoint of the load balancer.
    #[error("{path} accepts {allowed} only")]
    MethodNotAllowed {
        /// The endpoint.
        path: &'static str,
        /// The method it accepts.
        allowed: &'static str,
    },
    /// 404: an unknown `/_lb/` endpoint.
    #[error("'{0}' is not an endpoint of the load balancer")]
    NotFound(String),
    /// 404: an endpoint of the load balancer served on the admin address, not this one.
    #[error("'{0}' is served on the load balancer's admin address only")]
    Elsewhere(String),
    /// 401: the endpoint needs the admin token.
    #[error("{0} needs 'Authorization: Bearer <token>' with the admin token")]
    Unauthorized(String),
    /// 408: the client did not send a whole request head within this many milliseconds
    /// (`[proxy] client_header_timeout_ms`); the connection is closed after the answer.
    #[error("the request head did not arrive whole within {0} ms")]
    RequestTimeout(u64),
    /// 431: an HTTP/2 request with more header fields than `lb` forwards (the number given; an
    /// HTTP/1.1 head with more is refused by hyper's parser).
    #[error("the request has more than {0} header fields")]
    TooManyFields(usize),
    /// 413: body over [`MAX_BODY`].
    #[error("request body is larger than {MAX_BODY} bytes")]
    PayloadTooLarge,
    /// 500: the load balancer could not do it (e.g. a replica did not start); nothing changed.
    #[error("{0}")]
    Internal(String),
    /// 502: the chosen replica did not answer.
    #[error("{0}")]
    BadGateway(String),
    /// 503: no replica to send the request to, or the load balancer is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 504: the chosen replica (and those tried after it) did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 501: an `Upgrade` to a protocol other than `websocket` (the offer, as sent, shortened).
    #[error(
        "lb forwards only 'Upgrade: websocket' (an 'h2c' upgrade is served as plain HTTP/1.1); \
         this request asks for 'Upgrade: {0}'"
    )]
    UpgradeUnsupported(String),
    /// 501: an HTTP/2 extended `CONNECT` (RFC 8441) for a `:protocol` other than `websocket`
    /// (the protocol, as sent, shortened).
    #[error(
        "lb tunnels only the 'websocket' protocol of an extended CONNECT (RFC 8441); \
         this request asks for ':protocol = {0}'"
    )]
    ConnectProtocolUnsupported(String),
    /// 405: `CONNECT`, which asks for a tunnel; answered with `Allow`.
    #[error("lb is a reverse proxy and does not tunnel: CONNECT is not supported")]
    NoTunnel,
    /// 508: the request already carries this load balancer's `Via` mark (the value given): it
    /// came back through a backend that leads to `lb` itself.
    #[error(
        "request loop: this request already passed through this load balancer (Via: {0}); \
         a backend's address leads back to lb itself"
    )]
    LoopDetected(String),
}

/// What `Allow` says with [`ApiError::NoTunnel`]: every method is proxied but `CONNECT`.
pub(crate) const PROXIED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

impl ApiError {
    /// The HTTP status of this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed { .. } | ApiError::NoTunnel => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ApiError::NotFound(_) | ApiError::Elsewhere(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyFields(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::LoopDetected(_) => StatusCode::LOOP_DETECTED,
            ApiError::UpgradeUnsupported(_) | ApiError::ConnectProtocolUnsupported(_) => {
                StatusCode::NOT_IMPLEMENTED
            }
        }
    }

    /// The JSON body: `{"message": "<Error> …", "status": "failure"}`.
    pub(crate) fn body(&self) -> Bytes {
        let message = format!("<Error> {self}");
        Bytes::from(Reply::failure(message.as_str()).to_vec())
    }
}

/// The one mapping of the controller's errors to HTTP: the request's fault is a 400, a replica
/// that did not start a 500, a controller that has stopped a 503.
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NameTaken(_)
            | ControlError::AddressTaken(_)
            | ControlError::NoAddresses(_)
            | ControlError::NoRoom { .. }
            | ControlError::TooFew { .. }
            | ControlError::UnknownName { .. }
            | ControlError::Unplaceable(_)
            | ControlError::TooMany { .. } => ApiError::BadRequest(e.to_string()),
            ControlError::StartFailed(_) | ControlError::Failed => {
                ApiError::Internal(e.to_string())
            }
            ControlError::ShuttingDown | ControlError::RemoveFailed(_) => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

/// The first key a JSON object (`body`, already known to be one) repeats at its top level.
fn repeated_key(body: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut repeated = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) && repeated.is_none() {
                    repeated = Some(key);
                }
            }
            Ok(repeated)
        }
    }
    serde_json::Deserializer::from_slice(body)
        .deserialize_map(Keys)
        .ok()
        .flatten()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// `{"message": {"N": …, "replicas": […]}, "status": "successful"}` for `/rep`, `/add` and `/rm`.
pub(crate) fn replicas_body<'a>(hostnames: impl IntoIterator<Item = &'a str>) -> Bytes {
    let replicas = Replicas::new(hostnames.into_iter().collect());
    Bytes::from(Reply::successful(replicas).to_vec())
}

/// Validate an `/add` or `/rm` body: everything that can be checked without knowing the current
/// replicas. (Names already present, unknown names and `n` > N are the controller's checks.)
pub(crate) fn parse_scale(body: &[u8], scale: Scale) -> Result<ScaleRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad(
            r#"request body must be a JSON object such as {"n": 2, "hostnames": ["S5", "S6"]}"#,
        ));
    };
    if let Some(key) = repeated_key(body) {
        return Err(bad(format!("field '{key}' is given more than once")));
    }
    let known: &[&str] = match scale {
        Scale::Add => &["n", "hostnames", "addresses", "weights"],
        Scale::Remove => &["n", "hostnames"],
    };
    if let Some(key) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(match scale {
            Scale::Add => format!(
                "unknown field '{key}'; the body takes 'n' and optionally 'hostnames', 'addresses' and 'weights'"
            ),
            Scale::Remove => {
                format!("unknown field '{key}'; the body takes 'n' and optionally 'hostnames'")
            }
        }));
    }
    let n = match fields.get("n") {
        None => return Err(bad("field 'n' is required")),
        Some(Value::Number(num)) => match (num.as_i64(), num.as_u64()) {
            (_, Some(n)) => i128::from(n),
            (Some(n), None) => i128::from(n),
            _ => return Err(bad(format!("'n' must be an integer, got {num}"))),
        },
        Some(other) => return Err(bad(format!("'n' must be an integer, got {other}"))),
    };
    if n < 1 {
        return Err(bad(format!("'n' must be at least 1, got {n}")));
    }
    if n > i128::from(MAX_BATCH) {
        return Err(bad(format!(
            "'n' must be at most {MAX_BATCH} per request, got {n}"
        )));
    }
    let n = n as usize;
    let hostnames = strings(&fields, "hostnames")?;
    if hostnames.len() > n {
        return Err(bad(match scale {
            Scale::Add => "Length of hostname list is more than newly added instances",
            Scale::Remove => "Length of hostname list is more than removable instances",
        }));
    }
    for (i, name) in hostnames.iter().enumerate() {
        check_hostname(name).map_err(|e| bad(e.to_string()))?;
        if hostnames[..i].contains(name) {
            return Err(bad(format!(
                "hostname '{name}' appears more than once in 'hostnames'"
            )));
        }
    }
    let (addresses, tls, protocols) = address_entries(&fields)?;
    if addresses.len() > n {
        return Err(bad(format!(
            "'addresses' lists {} addresses for n = {n} new entries",
            addresses.len()
        )));
    }
    for (i, address) in addresses.iter().enumerate() {
        check_address(address).map_err(|e| bad(e.to_string()))?;
        if addresses[..i]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address))
        {
            return Err(bad(format!(
                "address '{address}' appears more than once in 'addresses'"
            )));
        }
    }
    let weights = match fields.get("weights") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => weights(value, n)?,
    };
    Ok(ScaleRequest {
        n,
        hostnames,
        addresses,
        tls,
        protocols,
        weights,
    })
}

/// An `/add`'s `weights`: a list of at most `n` integers from 1 to [`lb_balance::MAX_WEIGHT`],
/// paired by position with the new entries.
fn weights(value: &Value, n: usize) -> Result<Vec<u32>, ApiError> {
    let max = lb_balance::MAX_WEIGHT;
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "'weights' must be a list of integers from 1 to {max} (one per new entry), got {value}"
        )));
    };
    if items.len() > n {
        return Err(bad(format!(
            "'weights' lists {} weights for n = {n} new entries",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .filter(|w| (1..=max).contains(w))
                .ok_or_else(|| {
                    bad(format!(
                        "weights[{i}] must be an integer from 1 to {max}, got {item}"
                    ))
                })
        })
        .collect()
}

/// A `POST /_lb/plan` body, checked as far as it can be without the running state.
#[derive(Debug)]
pub(crate) enum PlanBody {
    /// `{"rm": …, "add": …, "weights": {…}}`, any of them (applied in that order).
    Change(Box<PlanChange>),
    /// `{"config": "<lb.toml text>"}`.
    Config(String),
}

/// What a plan body may be, for the messages that refuse one.
const PLAN_BODIES: &str = r#"a plan body is {"add": <an /add body>}, {"rm": <an /rm body naming every replica it removes>}, {"weights": {"HOSTNAME": W}} (any of these three together) or {"config": "<lb.toml text>"}"#;

/// Check a `POST /_lb/plan` body.
pub(crate) fn parse_plan(body: &[u8]) -> Result<PlanBody, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "request body is not valid JSON: {e}; {PLAN_BODIES}"
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(bad(PLAN_BODIES));
    };
    if let Some(key) = repeated_key(body) {
        return Err(bad(format!("field '{key}' is given more than once")));
    }
    if fields.is_empty() {
        return Err(bad(format!("nothing to plan: {PLAN_BODIES}")));
    }
    if let Some(key) = fields
        .keys()
        .find(|k| !["add", "rm", "weights", "config"].contains(&k.as_str()))
    {
        return Err(bad(format!("unknown field '{key}'; {PLAN_BODIES}")));
    }
    if let Some(config) = fields.get("config") {
        if fields.len() > 1 {
            return Err(bad(format!(
                "'config' plans a whole file and goes alone; {PLAN_BODIES}"
            )));
        }
        return match config {
            Value::String(text) => Ok(PlanBody::Config(text.clone())),
            other => Err(bad(format!(
                "'config' must be the text of an lb.toml as a string, got {other}"
            ))),
        };
    }
    let scale = |key: &str, scale: Scale| -> Result<Option<ScaleRequest>, ApiError> {
        let Some(value) = fields.get(key) else {
            return Ok(None);
        };
        let text = serde_json::to_vec(value).unwrap_or_default();
        parse_scale(&text, scale)
            .map(Some)
            .map_err(|e| bad(format!("'{key}': {e}")))
    };
    let add = scale("add", Scale::Add)?;
    let rm = scale("rm", Scale::Remove)?;
    if let Some(rm) = &rm {
        if rm.hostnames.len() != rm.n {
            return Err(bad(format!(
                "'rm': a planned /rm must name every replica it removes ({} named for n = {}):                  /rm picks the others at random",
                rm.hostnames.len(),
                rm.n
            )));
        }
    }
    let weights = match fields.get("weights") {
        None => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, w)| {
                let max = lb_balance::MAX_WEIGHT;
                let weight = w
                    .as_u64()
                    .and_then(|w| u32::try_from(w).ok())
                    .filter(|w| (1..=max).contains(w))
                    .ok_or_else(|| {
                        bad(format!(
                            "'weights': the weight of '{name}' must be an integer from 1 to {max}, got {w}"
                        ))
                    })?;
                Ok((name.clone(), weight))
            })
            .collect::<Result<_, ApiError>>()?,
        Some(other) => {
            return Err(bad(format!(
                "'weights' must be an object of hostnames and weights such as {{\"Server 1\": 4}}, got {other}"
            )))
        }
    };
    Ok(PlanBody::Change(Box::new(PlanChange { rm, add, weights })))
}

/// Longest `ca` path an `/add` may give.
const MAX_CA_PATH: usize = 4096;

/// The `addresses` of an `/add`: each `"HOST:PORT"`, or an object `{"address": "HOST:PORT",
/// "tls": true, "server_name": …, "ca": …, "tls_verify": …}` with the keys of a `[[replicas]]`
/// entry (and `"protocol"`). The addresses, how to speak TLS to each, and what protocol.
type AddressEntries = (Vec<String>, Vec<Option<AddedTls>>, Vec<Protocol>);

/// See [`AddressEntries`].
fn address_entries(fields: &serde_json::Map<String, Value>) -> Result<AddressEntries, ApiError> {
    let items = match fields.get("addresses") {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new(), Vec::new())),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(bad(format!(
                "'addresses' must be a list of \"HOST:PORT\" strings or objects, got {other}"
            )))
        }
    };
    let mut addresses = Vec::with_capacity(items.len());
    let mut tls = Vec::with_capacity(items.len());
    let mut protocols = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(address) => {
                addresses.push(address.clone());
                tls.push(None);
                protocols.push(Protocol::Http1);
            }
            Value::Object(entry) => {
                let (address, added, protocol) = address_object(entry)?;
                addresses.push(address);
                tls.push(added);
                protocols.push(protocol);
            }
            other => {
                return Err(bad(format!(
                    "'addresses' must be a list of \"HOST:PORT\" strings or objects, found {other}"
                )))
            }
        }
    }
    Ok((addresses, tls, protocols))
}

/// One `addresses` object: its address, TLS settings and protocol.
fn address_object(
    entry: &serde_json::Map<String, Value>,
) -> Result<(String, Option<AddedTls>, Protocol), ApiError> {
    const KEYS: [&str; 6] = [
        "address",
        "tls",
        "server_name",
        "ca",
        "tls_verify",
        "protocol",
    ];
    if let Some(key) = entry.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field '{key}' in an 'addresses' entry; it takes 'address' and optionally \
             'tls', 'server_name', 'ca', 'tls_verify' and 'protocol'"
        )));
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!(
                "'{key}' in an 'addresses' entry must be a string, got {other}"
            ))),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>, ApiError> {
        match entry.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(format!(
                "'{key}' in an 'addresses' entry must be true or false, got {other}"
            ))),
        }
    };
    let Some(address) = text("address")? else {
        return Err(bad("an 'addresses' entry needs 'address' (\"HOST:PORT\")"));
    };
    let (server_name, ca, verify) = (text("server_name")?, text("ca")?, flag("tls_verify")?);
    let protocol = match text("protocol")? {
        None => Protocol::Http1,
        Some(name) => Protocol::parse(&name).ok_or_else(|| {
            bad(format!(
                "'protocol' for address '{address}' must be \"http1\", \"h2c\" or \"h2\", got {name:?}"
            ))
        })?,
    };
    let wants_tls = flag("tls")? == Some(true);
    match (protocol, wants_tls) {
        (Protocol::H2, false) => {
            return Err(bad(format!(
                "'protocol': \"h2\" for address '{address}' is HTTP/2 over TLS: it needs \"tls\": true (in clear text: \"h2c\")"
            )))
        }
        (Protocol::H2c, true) => {
            return Err(bad(format!(
                "'protocol': \"h2c\" for address '{address}' is HTTP/2 in clear text: it cannot be used with \"tls\": true (over TLS: \"h2\")"
            )))
        }
        _ => {}
    }
    if !wants_tls {
        if let Some(key) = [
            ("server_name", server_name.is_some()),
            ("ca", ca.is_some()),
            ("tls_verify", verify.is_some()),
        ]
        .iter()
        .find_map(|&(key, given)| given.then_some(key))
        {
            return Err(bad(format!(
                "'{key}' for address '{address}' needs \"tls\": true"
            )));
        }
        return Ok((address, None, protocol));
    }
    if let Some(name) = &server_name {
        crate::config::backend_tls::server_name(name).map_err(|e| bad(e.to_string()))?;
    }
    if let Some(ca) = &ca {
        if ca.is_empty() || ca.len() > MAX_CA_PATH || ca.contains('\0') {
            return Err(bad(format!(
                "'ca' for address '{address}' must be a file path of 1 to {MAX_CA_PATH} bytes"
            )));
        }
    }
    Ok((
        address,
        Some(AddedTls::Asked {
            server_name,
            ca,
            verify: verify.unwrap_or(true),
        }),
        protocol,
    ))
}

/// The optional list of strings `key` (absent or `null`: empty).
fn strings(fields: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(format!(
                    "'{key}' must be a list of strings, found {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(bad(format!(
            "'{key}' must be a list of strings, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str, scale: Scale) -> String {
        match parse_scale(body.as_bytes(), scale) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn weights_pair_with_the_new_entries_and_bad_ones_say_which() {
        let add = parse_scale(br#"{"n": 3, "weights": [2, 1000]}"#, Scale::Add).unwrap();
        assert_eq!(add.weights, [2, 1000]);
        assert!(parse_scale(br#"{"n": 1}"#, Scale::Add)
            .unwrap()
            .weights
            .is_empty());
        for (body, says) in [
            (
                r#"{"n": 1, "weights": [0]}"#,
                "weights[0] must be an integer from 1 to 1000, got 0",
            ),
            (
                r#"{"n": 2, "weights": [1, -3]}"#,
                "weights[1] must be an integer from 1 to 1000, got -3",
            ),
            (r#"{"n": 1, "weights": [1001]}"#, "got 1001"),
            (r#"{"n": 1, "weights": [1.5]}"#, "got 1.5"),
            (r#"{"n": 1, "weights": ["2"]}"#, r#"got "2""#),
            (
                r#"{"n": 1, "weights": [1, 2]}"#,
                "'weights' lists 2 weights for n = 1 new entries",
            ),
            (
                r#"{"n": 1, "weights": 2}"#,
                "'weights' must be a list of integers",
            ),
            (r#"{"n": 1, "weights": [99999999999]}"#, "got 99999999999"),
        ] {
            assert!(
                err(body, Scale::Add).contains(says),
                "{body}: {}",
                err(body, Scale::Add)
            );
        }
        assert!(
            err(r#"{"n": 1, "weights": [2]}"#, Scale::Remove).contains("unknown field 'weights'")
        );
    }

    #[test]
    fn addresses_take_a_protocol_that_agrees_with_tls() {
        let add = parse_scale(
            br#"{"n": 3, "addresses": ["10.0.0.5:80", {"address": "10.0.0.6:50051", "protocol": "h2c"}, {"address": "10.0.0.7:443", "tls": true, "protocol": "h2"}]}"#,
            Scale::Add,
        )
        .unwrap();
        assert_eq!(
            add.protocols,
            [Protocol::Http1, Protocol::H2c, Protocol::H2]
        );
        for (body, says) in [
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "protocol": "h2"}]}"#,
                "is HTTP/2 over TLS: it needs \"tls\": true",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "tls": true, "protocol": "h2c"}]}"#,
                "cannot be used with \"tls\": true",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "protocol": "h3"}]}"#,
                "'protocol' for address 'a:1' must be \"http1\", \"h2c\" or \"h2\", got \"h3\"",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "protocol": 2}]}"#,
                "'protocol' in an 'addresses' entry must be a string",
            ),
        ] {
            let error = parse_scale(body.as_bytes(), Scale::Add).unwrap_err();
            assert!(error.to_string().contains(says), "{body}: {error}");
        }
    }

    #[test]
    fn addresses_take_strings_or_objects_with_tls_settings() {
        let add = parse_scale(
            br#"{"n": 3, "addresses": ["10.0.0.5:80", {"address": "10.0.0.6:443", "tls": true, "server_name": "api.internal", "ca": "certs/ca.pem"}, {"address": "10.0.0.7:443", "tls": true, "tls_verify": false}]}"#,
            Scale::Add,
        )
        .unwrap();
        assert_eq!(
            add.addresses,
            ["10.0.0.5:80", "10.0.0.6:443", "10.0.0.7:443"]
        );
        assert_eq!(
            add.tls,
            [
                None,
                Some(AddedTls::Asked {
                    server_name: Some("api.internal".into()),
                    ca: Some("certs/ca.pem".into()),
                    verify: true,
                }),
                Some(AddedTls::Asked {
                    server_name: None,
                    ca: None,
                    verify: false,
                }),
            ]
        );
        // `"tls": false` (or absent) is plain HTTP.
        let plain = parse_scale(
            br#"{"n": 1, "addresses": [{"address": "10.0.0.5:80", "tls": false}]}"#,
            Scale::Add,
        )
        .unwrap();
        assert_eq!(plain.tls, [None]);
        for (body, says) in [
            (
                r#"{"n": 1, "addresses": [{"tls": true}]}"#,
                "needs 'address'",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "cert": "x"}]}"#,
                "unknown field 'cert'",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "ca": "x.pem"}]}"#,
                "'ca' for address 'a:1' needs \"tls\": true",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "tls": "yes"}]}"#,
                "'tls' in an 'addresses' entry must be true or false",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "tls": true, "server_name": 7}]}"#,
                "must be a string",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "tls": true, "server_name": "no spaces allowed"}]}"#,
                "not a valid DNS name",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "a:1", "tls": true, "ca": ""}]}"#,
                "must be a file path",
            ),
            (
                r#"{"n": 1, "addresses": [{"address": "bad", "tls": true}]}"#,
                "bad",
            ),
            (r#"{"n": 1, "addresses": [7]}"#, "strings or objects"),
            (
                r#"{"n": 2, "addresses": ["a:1", {"address": "A:1", "tls": true}]}"#,
                "appears more than once",
            ),
        ] {
            let message = err(body, Scale::Add);
            assert!(message.contains(says), "{body}: {message}");
        }
    }

    #[test]
    fn accepts_spec_examples() {
        let add = parse_scale(
            br#"{"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}"#,
            Scale::Add,
        )
        .unwrap();
        assert_eq!(add.n, 4);
        assert_eq!(add.hostnames, ["S5", "S4", "S10", "S11"]);
        let rm = parse_scale(br#"{"n": 3}"#, Scale::Remove).unwrap();
        assert_eq!((rm.n, rm.hostnames.len()), (3, 0));
    }

    #[test]
    fn spec_error_messages_are_exact() {
        let body =
            ApiError::BadRequest(err(r#"{"n": 1, "hostnames": ["a", "b"]}"#, Scale::Add)).body();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
        );
        assert_eq!(
            err(r#"{"n": 1, "hostnames": ["a", "b"]}"#, Scale::Remove),
            "Length of hostname list is more than removable instances"
        );
    }

    #[test]
    fn open_cases_are_refused_with_a_reason() {
        for (body, needle) in [
            ("not json", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"n": "2"}"#, "integer"),
            (r#"{"n": 2.5}"#, "integer"),
            (r#"{"n": true}"#, "integer"),
            (r#"{"n": 0}"#, "at least 1"),
            (r#"{"n": -3}"#, "at least 1"),
            (r#"{"n": 65}"#, "at most 64"),
            (r#"{"n": 99999999999999999999}"#, "integer"),
            (r#"{}"#, "required"),
            (r#"{"n": 1, "hostname": ["a"]}"#, "unknown field 'hostname'"),
            (r#"{"n": 1, "hostnames": "a"}"#, "list of strings"),
            (r#"{"n": 2, "hostnames": ["a", 3]}"#, "list of strings"),
            (r#"{"n": 2, "hostnames": ["a", "a"]}"#, "more than once"),
            (r#"{"n": 1, "hostnames": [""]}"#, "1 to 63"),
            (r#"{"n": 1, "hostnames": ["a/b"]}"#, "'/'"),
            (r#"{"n": 1, "n": 64}"#, "field 'n' is given more than once"),
            (
                r#"{"n": 2, "hostnames": ["a"], "hostnames": ["b", "c"]}"#,
                "field 'hostnames' is given more than once",
            ),
        ] {
            let m = err(body, Scale::Add);
            assert!(m.contains(needle), "{body}: {m}");
        }
    }

    #[test]
    fn replicas_body_is_byte_exact() {
        let body = replicas_body(["Server 1", "Server 2", "Server 3"]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "Server 3"]}, "status": "successful"}"#
        );
    }
}

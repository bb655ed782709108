//! `lb plan`: what a change would move, before it is made. Against a running `lb`
//! (`POST /_lb/plan`: a new file, or `--add`, `--rm`, `--weight` as the API would make them),
//! or offline between two files (`--from OLD.toml NEW.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lb_views::Plan;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::control::plan::{sample_keys, view, Side};
use crate::upgrade_command::{address, exchange};

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// A new configuration file (against the running `lb`, or against `from`).
    pub new: Option<PathBuf>,
    /// Offline: the file the change starts from.
    pub from: Option<PathBuf>,
    /// Replicas an `/add` would add.
    pub add: Option<usize>,
    /// Replicas an `/rm` would remove, by hostname.
    pub rm: Vec<String>,
    /// New weights: `HOSTNAME=W`.
    pub weights: Vec<String>,
    /// Where the running `lb` serves `/_lb/plan` (`http://HOST:PORT`).
    pub url: String,
    /// Its admin token, if one is set.
    pub token: Option<String>,
}

/// Why `lb plan` could not plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanCommandError {
    /// The options do not say one change.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file is not a valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, with line and column.
        message: String,
    },
    /// The tables could not be built.
    #[error("{0}")]
    Unplaceable(String),
    /// The running `lb` could not be asked, or refused.
    #[error("{url}/_lb/plan: {reason}")]
    Remote {
        /// Where it was asked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Plan `request`.
pub fn plan(request: &PlanRequest) -> Result<Plan, PlanCommandError> {
    let api_change = request.add.is_some() || !request.rm.is_empty() || !request.weights.is_empty();
    if let Some(from) = &request.from {
        let Some(new) = request.new.as_deref().filter(|_| !api_change) else {
            return Err(PlanCommandError::Usage(
                "--from plans offline between two files: give NEW.toml, and no --add, --rm or --weight"
                    .into(),
            ));
        };
        return offline(from, new);
    }
    let body =
        match &request.new {
            Some(_) if api_change => return Err(PlanCommandError::Usage(
                "plan either a file (NEW.toml) or an API change (--add, --rm, --weight), not both"
                    .into(),
            )),
            Some(path) => json!({ "config": read(path)? }),
            None if !api_change => {
                return Err(PlanCommandError::Usage(
                    "nothing to plan: give NEW.toml, or --add N, --rm NAME, --weight NAME=W".into(),
                ))
            }
            None => api_body(request)?,
        };
    remote(request, &body)
}

/// The `POST /_lb/plan` body of `--add`, `--rm` and `--weight`.
fn api_body(request: &PlanRequest) -> Result<Value, PlanCommandError> {
    let mut body = Map::new();
    if let Some(n) = request.add {
        body.insert("add".into(), json!({ "n": n }));
    }
    if !request.rm.is_empty() {
        body.insert(
            "rm".into(),
            json!({ "n": request.rm.len(), "hostnames": request.rm }),
        );
    }
    if !request.weights.is_empty() {
        let mut weights = Map::new();
        for pair in &request.weights {
            let parsed = pair
                .rsplit_once('=')
                .and_then(|(name, w)| Some((name, w.trim().parse::<u32>().ok()?)));
            let Some((name, weight)) = parsed else {
                return Err(PlanCommandError::Usage(format!(
                    "--weight takes HOSTNAME=W (W an integer), not {pair:?}"
                )));
            };
            weights.insert(name.to_owned(), json!(weight));
        }
        body.insert("weights".into(), Value::Object(weights));
    }
    Ok(Value::Object(body))
}

/// Ask the running `lb`.
fn remote(request: &PlanRequest, body: &Value) -> Result<Plan, PlanCommandError> {
    let base = request.url.trim_end_matches('/');
    let fail = |reason: String| PlanCommandError::Remote {
        url: base.to_owned(),
        reason,
    };
    let addr = address(base).map_err(|e| fail(e.to_string()))?;
    let text = serde_json::to_vec(body).unwrap_or_default();
    let (code, answer) = exchange(
        base,
        addr,
        "POST /_lb/plan",
        request.token.as_deref(),
        Some(&text),
    )
    .map_err(fail)?;
    match code.as_str() {
        "200" => serde_json::from_slice(&answer).map_err(|e| fail(format!("not a plan: {e}"))),
        "401" | "403" => Err(fail(format!(
            "{code}: give the admin token (--token or LB_ADMIN_TOKEN)"
        ))),
        _ => {
            let said: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            let message = said["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&answer).into_owned(),
                str::to_owned,
            );
            Err(fail(format!("{code}: {}", message.trim())))
        }
    }
}

/// Plan between two files, with nothing running.
fn offline(from: &Path, new: &Path) -> Result<Plan, PlanCommandError> {
    let (before, after) = (side_of(from)?, side_of(new)?);
    let unplaceable = |path: &Path, e: lb_balance::PlaceError| {
        PlanCommandError::Unplaceable(format!("{}: {e}", path.display()))
    };
    let before_table = before.place().map_err(|e| unplaceable(from, e))?;
    let after_table = after.place().map_err(|e| unplaceable(new, e))?;
    let names: BTreeMap<u64, String> = before
        .replicas
        .iter()
        .map(|(id, (name, _))| (*id, name.clone()))
        .collect();
    Ok(view(
        &before_table,
        &names,
        &after_table,
        &after,
        &sample_keys(),
    ))
}

fn read(path: &Path) -> Result<String, PlanCommandError> {
    std::fs::read_to_string(path).map_err(|error| PlanCommandError::Read {
        path: path.to_owned(),
        error,
    })
}

/// A file's replicas and ring, checked, with its hash resolved.
fn side_of(path: &Path) -> Result<Side, PlanCommandError> {
    let text = read(path)?;
    let invalid = |message: String| PlanCommandError::Invalid {
        path: path.to_owned(),
        message,
    };
    let config = Config::parse_file(&text, path).map_err(|e| invalid(e.to_string()))?;
    let hash = config.resolve_hash().map_err(|e| invalid(e.to_string()))?;
    Ok(Side::of_config(&config, hash))
}

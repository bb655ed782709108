//! The `lb.toml` of a load balancer we own: written at start, edited to switch the hash.

use std::path::Path;

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::error::{io, Error, Result};

/// `[proxy] client_header_timeout_ms` of the load balancer `analysis` starts: short, so that
/// A-3's slow-loris connections are answered 408 within a few seconds (the default is 10 s). The
/// other experiments send whole request heads at once and are not affected.
pub const HEADER_TIMEOUT_MS: u64 = 3000;

/// The configuration `analysis` starts its load balancer with: heartbeats every 100 ms, a
/// [`HEADER_TIMEOUT_MS`] header timeout, hash plugins looked up in `plugin_dir` first, and three
/// replicas `Server 1`..`Server 3` with server ids 1..3.
pub fn initial(plugin_dir: &Path) -> String {
    with_header(&initial_doc(plugin_dir))
}

fn with_header(doc: &DocumentMut) -> String {
    format!(
        "# Written by `analysis`; the load balancer writes /add, /rm and replacements back.\n{doc}"
    )
}

/// How long a replica container may take to answer its first heartbeat
/// (`[health] start_timeout_ms` with the Docker and Swarm supervisors).
pub const CONTAINER_START_MS: u64 = 20_000;

/// The `[supervisor]` section of a load balancer `analysis` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supervisor {
    /// `kind = "process"`: replicas are child processes of `lb`.
    Process,
    /// `kind = "docker"` or `"swarm"`: replicas are containers (or Swarm services) of `image`
    /// on `network`, owned by `instance`.
    Containers {
        /// `"docker"` or `"swarm"`.
        kind: &'static str,
        /// The replica image.
        image: String,
        /// The network the replicas join.
        network: String,
        /// The load balancer's instance name (in the ownership labels).
        instance: String,
        /// How `lb` reaches the replicas (`"ip"`, `"published"`, …).
        address: &'static str,
    },
}

/// [`initial`] with an explicit `[supervisor]` section; for containers also
/// `[health] start_timeout_ms = CONTAINER_START_MS`.
pub fn with_supervisor(plugin_dir: &Path, supervisor: &Supervisor) -> String {
    let mut doc = initial_doc(plugin_dir);
    let mut section = Table::new();
    match supervisor {
        Supervisor::Process => section["kind"] = value("process"),
        Supervisor::Containers {
            kind,
            image,
            network,
            instance,
            address,
        } => {
            section["kind"] = value(*kind);
            section["image"] = value(image.as_str());
            section["network"] = value(network.as_str());
            section["instance"] = value(instance.as_str());
            section["address"] = value(*address);
            doc["health"]["start_timeout_ms"] = value(CONTAINER_START_MS as i64);
        }
    }
    doc["supervisor"] = Item::Table(section);
    with_header(&doc)
}

fn initial_doc(plugin_dir: &Path) -> DocumentMut {
    let mut doc = DocumentMut::new();
    let mut ring = Table::new();
    ring["hash"] = value("spec");
    doc["ring"] = Item::Table(ring);
    let mut health = Table::new();
    health["interval_ms"] = value(100);
    doc["health"] = Item::Table(health);
    let mut proxy = Table::new();
    proxy["client_header_timeout_ms"] = value(HEADER_TIMEOUT_MS as i64);
    doc["proxy"] = Item::Table(proxy);
    let mut plugins = Table::new();
    let mut dirs = Array::new();
    dirs.push(plugin_dir.display().to_string());
    plugins["dirs"] = value(dirs);
    doc["plugins"] = Item::Table(plugins);
    let mut replicas = ArrayOfTables::new();
    for id in 1..=3i64 {
        let mut replica = Table::new();
        replica["hostname"] = value(format!("Server {id}"));
        replica["id"] = value(id);
        replicas.push(replica);
    }
    doc["replicas"] = Item::ArrayOfTables(replicas);
    doc
}

/// `[health]` of the load balancer of A-3's control-plane phases: a heartbeat every
/// `interval_ms`, `timeout_ms` to answer it, out of the ring after `fall` missed in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Heartbeats {
    /// `interval_ms`.
    pub interval_ms: u64,
    /// `timeout_ms`.
    pub timeout_ms: u64,
    /// `fall`.
    pub fall: u64,
}

/// The heartbeats of the control-plane phases' load balancer (the setting).
pub const CONTROL_HEARTBEATS: Heartbeats = Heartbeats {
    interval_ms: 100,
    timeout_ms: 300,
    fall: 3,
};

/// The normal `[ring] slots` of the control-plane phases' load balancer (rendezvous over 4096
/// slots: a table built on the controller in well under a millisecond per replica).
pub const CONTROL_SLOTS: u32 = 4096;

/// `[limits] max_replicas` of the control-plane phases' load balancer: room above its 64
/// replicas, so that an `/add` of its own address is judged for what it is, not refused for the
/// count.
pub const CONTROL_MAX_REPLICAS: u64 = 72;

/// The configuration of the load balancer of A-3's control-plane phases: rendezvous over `slots`
/// slots with the `spec` hash, [`CONTROL_HEARTBEATS`], `[limits] max_replicas =`
/// [`CONTROL_MAX_REPLICAS`] (its line is [`CONTROL_LIMITS_LINE`]), and `replicas` as
/// `(hostname, server id)` entries. It has no `[proxy]` table, so that a hostile part can add
/// one as a section of its own.
pub fn control_plane(replicas: &[(String, u64)], slots: u32) -> String {
    let mut doc = DocumentMut::new();
    let mut ring = Table::new();
    ring["algorithm"] = value("rendezvous");
    ring["slots"] = value(i64::from(slots));
    ring["hash"] = value("spec");
    doc["ring"] = Item::Table(ring);
    let mut health = Table::new();
    let h = CONTROL_HEARTBEATS;
    health["interval_ms"] = value(h.interval_ms as i64);
    health["timeout_ms"] = value(h.timeout_ms as i64);
    health["fall"] = value(h.fall as i64);
    doc["health"] = Item::Table(health);
    let mut limits = Table::new();
    limits["max_replicas"] = value(CONTROL_MAX_REPLICAS as i64);
    doc["limits"] = Item::Table(limits);
    let mut tables = ArrayOfTables::new();
    for (hostname, id) in replicas {
        let mut replica = Table::new();
        replica["hostname"] = value(hostname.as_str());
        replica["id"] = value(*id as i64);
        tables.push(replica);
    }
    doc["replicas"] = Item::ArrayOfTables(tables);
    with_header(&doc)
}

/// The line of [`control_plane`]'s `[limits]` table, after which keys of that table can be
/// added.
pub const CONTROL_LIMITS_LINE: &str = "[limits]\nmax_replicas = 72\n";

/// Set `[ring] hash = "NAME"` in the file at `path`, keeping everything else (the load balancer
/// writes its replica changes into the same file). The file is replaced atomically (write to a
/// temporary file in the same directory, then rename), so the watcher never sees half a file.
pub fn set_hash(path: &Path, name: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("{e}"),
    })?;
    if !doc.contains_table("ring") {
        doc["ring"] = Item::Table(Table::new());
    }
    doc["ring"]["hash"] = value(name);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".lb.toml.analysis-tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The values of the `[ring]` keys `keys` in the file at `path` (`None` for a key not set).
pub fn ring_values(path: &Path, keys: &[&str]) -> Result<Vec<Option<toml_edit::Value>>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let doc: DocumentMut = text.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("{e}"),
    })?;
    Ok(keys
        .iter()
        .map(|k| {
            doc.get("ring")
                .and_then(|r| r.get(k))
                .and_then(Item::as_value)
                .cloned()
        })
        .collect())
}

/// Set (`Some`) or remove (`None`) keys of `[ring]` in the file at `path` in one atomic rewrite
/// (as [`set_hash`]), so the load balancer never sees some of them changed and others not
/// (e.g. `algorithm = "maglev"` with a `slots` that is not a prime).
pub fn set_ring(path: &Path, changes: &[(&str, Option<toml_edit::Value>)]) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("{e}"),
    })?;
    if !doc.contains_table("ring") {
        doc["ring"] = Item::Table(Table::new());
    }
    for (key, v) in changes {
        match v {
            Some(v) => doc["ring"][key] = Item::Value(v.clone()),
            None => {
                if let Some(t) = doc["ring"].as_table_mut() {
                    t.remove(key);
                }
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(".lb.toml.analysis-tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// `[proxy] client_header_timeout_ms` in the file at `path`, if it is set there.
pub fn header_timeout_ms(path: &Path) -> Result<Option<u64>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let doc: DocumentMut = text.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("{e}"),
    })?;
    Ok(doc
        .get("proxy")
        .and_then(|p| p.get("client_header_timeout_ms"))
        .and_then(Item::as_integer)
        .and_then(|t| u64::try_from(t).ok()))
}

/// The hostnames of the `[[replicas]]` in the file at `path`.
pub fn replica_hostnames(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let doc: DocumentMut = text.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        reason: format!("{e}"),
    })?;
    Ok(doc
        .get("replicas")
        .and_then(Item::as_array_of_tables)
        .map(|tables| {
            tables
                .iter()
                .filter_map(|t| t.get("hostname").and_then(Item::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_config_has_three_replicas_and_the_plugin_dir() {
        let text = initial(Path::new("/x/y \"z\""));
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(doc["health"]["interval_ms"].as_integer(), Some(100));
        assert_eq!(
            doc["proxy"]["client_header_timeout_ms"].as_integer(),
            Some(HEADER_TIMEOUT_MS as i64)
        );
        assert_eq!(doc["ring"]["hash"].as_str(), Some("spec"));
        assert_eq!(
            doc["plugins"]["dirs"]
                .as_array()
                .unwrap()
                .get(0)
                .unwrap()
                .as_str(),
            Some("/x/y \"z\"")
        );
        let replicas = doc["replicas"].as_array_of_tables().unwrap();
        let ids: Vec<i64> = replicas
            .iter()
            .map(|t| t["id"].as_integer().unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn supervisor_sections() {
        let process: DocumentMut = with_supervisor(Path::new("/p"), &Supervisor::Process)
            .parse()
            .unwrap();
        assert_eq!(process["supervisor"]["kind"].as_str(), Some("process"));
        assert!(process["health"].get("start_timeout_ms").is_none());
        let swarm = Supervisor::Containers {
            kind: "swarm",
            image: "lb-replica:latest".into(),
            network: "net-a".into(),
            instance: "inst-a".into(),
            address: "published",
        };
        let text = with_supervisor(Path::new("/p"), &swarm);
        let doc: DocumentMut = text.parse().unwrap();
        let s = &doc["supervisor"];
        assert_eq!(
            [
                &s["kind"],
                &s["image"],
                &s["network"],
                &s["instance"],
                &s["address"]
            ]
            .map(|v| v.as_str()),
            [
                Some("swarm"),
                Some("lb-replica:latest"),
                Some("net-a"),
                Some("inst-a"),
                Some("published")
            ]
        );
        assert_eq!(
            doc["health"]["start_timeout_ms"].as_integer(),
            Some(CONTAINER_START_MS as i64)
        );
        assert_eq!(doc["replicas"].as_array_of_tables().unwrap().len(), 3);
        assert!(text.starts_with("# Written by `analysis`"), "{text}");
    }

    #[test]
    fn the_control_plane_file_has_no_proxy_or_limits_table() {
        let replicas = [("Server 1".to_owned(), 1), ("a\"b".to_owned(), 7)];
        let text = control_plane(&replicas, 4_194_304);
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(doc["ring"]["algorithm"].as_str(), Some("rendezvous"));
        assert_eq!(doc["ring"]["slots"].as_integer(), Some(4_194_304));
        assert_eq!(doc["health"]["timeout_ms"].as_integer(), Some(300));
        assert_eq!(doc["health"]["fall"].as_integer(), Some(3));
        let tables = doc["replicas"].as_array_of_tables().unwrap();
        assert_eq!(tables.get(1).unwrap()["hostname"].as_str(), Some("a\"b"));
        assert_eq!(tables.get(1).unwrap()["id"].as_integer(), Some(7));
        assert!(doc.get("proxy").is_none());
        assert_eq!(
            doc["limits"]["max_replicas"].as_integer(),
            Some(CONTROL_MAX_REPLICAS as i64)
        );
        assert!(text.contains(CONTROL_LIMITS_LINE), "{text}");
    }

    #[test]
    fn set_hash_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        let text = initial(Path::new("/plugins")).replace("Server 2", "abc-123");
        std::fs::write(&path, format!("# mine\n{text}")).unwrap();
        set_hash(&path, "murmur3").unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with("# mine\n"), "{after}");
        assert!(after.contains("hash = \"murmur3\""), "{after}");
        assert_eq!(
            replica_hostnames(&path).unwrap(),
            ["Server 1", "abc-123", "Server 3"]
        );
        assert_eq!(header_timeout_ms(&path).unwrap(), Some(HEADER_TIMEOUT_MS));
        set_ring(
            &path,
            &[
                ("algorithm", Some("maglev".into())),
                ("slots", Some(65537.into())),
                ("hash", None),
            ],
        )
        .unwrap();
        let values = ring_values(&path, &["algorithm", "slots", "hash"]).unwrap();
        assert_eq!(values[0].as_ref().and_then(|v| v.as_str()), Some("maglev"));
        assert_eq!(values[1].as_ref().and_then(|v| v.as_integer()), Some(65537));
        assert!(values[2].is_none());
        std::fs::write(&path, "[ring]\nhash = \"spec\"\n").unwrap();
        assert_eq!(header_timeout_ms(&path).unwrap(), None);
    }
}

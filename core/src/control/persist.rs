//! Writing the replica list back to `lb.toml`, keeping the user's comments and layout.
//!
//! Only the `[[replicas]]` array changes: entries that still exist keep their tables (and the
//! comments around them), a replaced replica gets its new hostname in place, removed ones
//! disappear and new ones are appended. The file is replaced atomically: a temporary file in the
//! same directory, fsync, rename.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

use crate::config::{BackendTls, Protocol};

/// Why the replica list could not be written back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// The file on disk is not valid TOML right now (e.g. mid-edit): it is left alone.
    #[error("the file is not valid TOML, so it was left as it is: {0}")]
    NotToml(#[from] toml_edit::TomlError),
    /// The file on disk is empty — most likely caught between the truncation and the write of
    /// someone else's save — so it is left alone (the controller does not apply an empty file
    /// either).
    #[error("the file is empty (a save in progress?), so it was left as it is")]
    Empty,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One `[[replicas]]` entry as written back: server id, hostname, the address of a backend by
/// address, and the TLS settings a new entry is written with (`tls = true`, `server_name`,
/// `ca`, `tls_verify = false` as given; a kept entry keeps its keys as the user wrote them).
pub(crate) type Entry<'a> = (u64, &'a str, Option<&'a str>, Option<&'a BackendTls>);

/// `text` with its `[[replicas]]` set to `replicas`, in that order for new entries; everything
/// else untouched (a kept entry's other keys, such as `pipelining`, stay as the user wrote them).
#[cfg(test)]
pub(crate) fn with_replicas(text: &str, replicas: &[Entry<'_>]) -> Result<String, PersistError> {
    with_extras(text, replicas, &[])
}

/// What a new entry is written with besides an [`Entry`]: a backend by address's `protocol`
/// (written when it is not `http1`) and the `weight` (written when it is not 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extra {
    /// What `lb` speaks to it.
    pub(crate) protocol: Protocol,
    /// Its weight.
    pub(crate) weight: u32,
}

impl Default for Extra {
    fn default() -> Self {
        Extra {
            protocol: Protocol::Http1,
            weight: 1,
        }
    }
}

/// [`with_replicas`], a new entry written with its [`Extra`] keys (`extras` paired by position
/// with `replicas`; shorter: the defaults for the rest). A kept entry keeps the keys its
/// user wrote, except its weight when an extra is given for it and differs (a weight the
/// runtime changed, Swarm's label): set in place, keeping the comment around it.
pub(crate) fn with_extras(
    text: &str,
    replicas: &[Entry<'_>],
    extras: &[Extra],
) -> Result<String, PersistError> {
    let extra_of = |i: usize| extras.get(i).copied().unwrap_or_default();
    if text.trim().is_empty() {
        return Err(PersistError::Empty);
    }
    let mut doc: DocumentMut = text.parse()?;
    let Some(tables) = doc
        .get_mut("replicas")
        .and_then(Item::as_array_of_tables_mut)
    else {
        // Absent, or written as an inline array: write it as [[replicas]] tables.
        let mut tables = ArrayOfTables::new();
        for (i, &(id, hostname, address, tls)) in replicas.iter().enumerate() {
            tables.push(entry(id, hostname, address, tls, extra_of(i)));
        }
        doc.insert("replicas", Item::ArrayOfTables(tables));
        return Ok(doc.to_string());
    };
    let wanted = |id: i64| replicas.iter().find(|(i, ..)| i64::try_from(*i) == Ok(id));
    let mut kept = Vec::new();
    let mut orphaned: Vec<String> = Vec::new();
    for index in (0..tables.len()).rev() {
        let table = tables.get_mut(index).expect("index below len");
        let id = table.get("id").and_then(Item::as_integer);
        match id.and_then(wanted) {
            Some(&(id, hostname, address, _)) if !kept.contains(&id) => {
                kept.push(id);
                let position = replicas.iter().position(|(i, ..)| *i == id);
                if let Some(extra) = position.and_then(|i| extras.get(i)) {
                    set_weight_keeping_decor(table, extra.weight);
                }
                set_keeping_decor(table, "hostname", Some(hostname));
                set_keeping_decor(table, "address", address);
                if address.is_none() {
                    // TLS keys belong to backends by address only.
                    for key in ["tls", "server_name", "ca", "tls_verify", "protocol"] {
                        table.remove(key);
                    }
                }
            }
            _ => {
                // Comments above a removed table are the user's: they go to the table that
                // follows it, or, for the last one, to a new table or the end of the file.
                let comments = comments_of(table);
                tables.remove(index);
                if let Some(comments) = comments {
                    match tables.get_mut(index) {
                        Some(next) => prepend_comments(next, &comments),
                        None => orphaned.insert(0, comments),
                    }
                }
            }
        }
    }
    for (i, &(id, hostname, address, tls)) in replicas.iter().enumerate() {
        if !kept.contains(&id) {
            let mut table = entry(id, hostname, address, tls, extra_of(i));
            if !orphaned.is_empty() {
                prepend_comments(&mut table, &orphaned.concat());
                orphaned.clear();
            }
            tables.push(table);
        }
    }
    if !orphaned.is_empty() {
        let trailing = doc.trailing().as_str().unwrap_or_default().to_owned();
        doc.set_trailing(format!("{trailing}{}", orphaned.concat()));
    }
    Ok(doc.to_string())
}

/// The comment lines in front of `table`'s header, if there are any.
fn comments_of(table: &Table) -> Option<String> {
    let prefix = table.decor().prefix()?.as_str()?;
    prefix.contains('#').then(|| prefix.to_owned())
}

/// Put `comments` in front of `table`'s header, before what is already there.
fn prepend_comments(table: &mut Table, comments: &str) {
    let own = table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_owned();
    table.decor_mut().set_prefix(format!("{comments}{own}"));
}

/// Set `key` of `table` to the string `wanted` (or remove it for `None`) unless it already is,
/// keeping the comments and spacing around the old value.
fn set_keeping_decor(table: &mut Table, key: &str, wanted: Option<&str>) {
    if table.get(key).and_then(Item::as_str) == wanted {
        return;
    }
    let Some(wanted) = wanted else {
        table.remove(key);
        return;
    };
    let decor = table
        .get(key)
        .and_then(Item::as_value)
        .map(|v| v.decor().clone());
    let mut new = toml_edit::Value::from(wanted);
    if let Some(decor) = decor {
        *new.decor_mut() = decor;
    }
    table.insert(key, Item::Value(new));
}

/// Set `table`'s `weight` to `weight` unless it already is (no key is weight 1), keeping the
/// comments and spacing around the old value.
fn set_weight_keeping_decor(table: &mut Table, weight: u32) {
    let current = table.get("weight").and_then(Item::as_integer).unwrap_or(1);
    if current == i64::from(weight) {
        return;
    }
    let decor = table
        .get("weight")
        .and_then(Item::as_value)
        .map(|v| v.decor().clone());
    let mut new = toml_edit::Value::from(i64::from(weight));
    if let Some(decor) = decor {
        *new.decor_mut() = decor;
    }
    table.insert("weight", Item::Value(new));
}

fn entry(
    id: u64,
    hostname: &str,
    address: Option<&str>,
    tls: Option<&BackendTls>,
    extra: Extra,
) -> Table {
    let mut table = Table::new();
    table.insert("hostname", value(hostname));
    table.insert("id", value(i64::try_from(id).unwrap_or(i64::MAX)));
    if extra.weight != 1 {
        table.insert("weight", value(i64::from(extra.weight)));
    }
    if let Some(address) = address {
        table.insert("address", value(address));
        if let Some(tls) = tls {
            table.insert("tls", value(true));
            if let Some(name) = &tls.written.server_name {
                table.insert("server_name", value(name.as_str()));
            }
            if let Some(ca) = &tls.written.ca {
                table.insert("ca", value(ca.as_str()));
            }
            if !tls.verify {
                table.insert("tls_verify", value(false));
            }
        }
        if extra.protocol != Protocol::Http1 {
            table.insert("protocol", value(extra.protocol.as_str()));
        }
    }
    table
}

/// Replace the file at `path` with `text` atomically. A symlink is followed and its target
/// replaced, so the link itself stays a link.
pub(crate) fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let target = fs::canonicalize(path)?;
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("the file has no directory"))?;
    let name = target
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path has no file name"))?;
    // A fresh, unpredictable name, created exclusively: a file or symlink planted at a
    // guessable name cannot redirect the write.
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(
            ".{}.lb-{:016x}.tmp",
            name.to_string_lossy(),
            fastrand::u64(..)
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(text.as_bytes())?;
        if let Ok(meta) = fs::metadata(&target) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const FILE: &str = r#"# my load balancer
listen = "127.0.0.1:5000"

[ring]
slots = 512 # M

# the first one
[[replicas]]
hostname = "Server 1"   # keep me
id = 1

# the second one
[[replicas]]
hostname = "Server 2"
id = 2
"#;

    fn replicas_of(text: &str) -> Vec<(u64, String)> {
        Config::parse(text)
            .unwrap()
            .replicas
            .iter()
            .map(|r| (*r.id.get_ref(), r.hostname.get_ref().clone()))
            .collect()
    }

    #[test]
    fn a_new_backend_by_address_is_written_with_its_protocol_unless_http1() {
        let file = "[[replicas]]\nhostname = \"a\"\nid = 1\n";
        let entries = [
            (1, "a", None, None),
            (2, "grpc-1", Some("10.0.0.5:50051"), None),
            (3, "web-1", Some("10.0.0.6:80"), None),
        ];
        let extras = [Protocol::Http1, Protocol::H2c, Protocol::Http1].map(|protocol| Extra {
            protocol,
            weight: 1,
        });
        let out = with_extras(file, &entries, &extras).unwrap();
        let config = crate::config::Config::parse(&out).unwrap();
        let r = &config.replicas;
        assert_eq!(r[1].protocol(), Protocol::H2c, "{out}");
        assert!(r[2].protocol.is_none(), "{out}");
        assert_eq!(out.matches("protocol").count(), 1, "{out}");
        // A kept entry that stops being a backend by address loses it.
        let out = with_replicas(&out, &[(2, "grpc-1", None, None)]).unwrap();
        assert!(!out.contains("protocol"), "{out}");
    }

    #[test]
    fn a_new_entry_is_written_with_its_weight_unless_1_and_a_kept_one_keeps_the_users() {
        let file = "[[replicas]]\nhostname = \"a\"\nid = 1\nweight = 5 # big box\n";
        let entries = [
            (1, "a", None, None),
            (2, "b", None, None),
            (3, "c", None, None),
        ];
        let extras = |w: [u32; 3]| {
            w.map(|weight| Extra {
                protocol: Protocol::Http1,
                weight,
            })
        };
        let out = with_extras(file, &entries, &extras([5, 3, 1])).unwrap();
        assert!(out.contains("weight = 5 # big box"), "{out}");
        let config = crate::config::Config::parse(&out).unwrap();
        assert_eq!(config.replica_weights(), [5, 3, 1], "{out}");
        assert_eq!(out.matches("weight").count(), 2, "{out}");
        // No extras: kept entries keep their weights.
        let same = with_replicas(&out, &entries).unwrap();
        assert_eq!(same, out);
        // A weight changed elsewhere (Swarm's label): set in place with its comment; 1 is
        // written as 1 where the user had a key, left out where there was none.
        let out = with_extras(&out, &entries, &extras([1, 7, 1])).unwrap();
        assert!(out.contains("weight = 1 # big box"), "{out}");
        let config = crate::config::Config::parse(&out).unwrap();
        assert_eq!(config.replica_weights(), [1, 7, 1], "{out}");
        assert_eq!(out.matches("weight").count(), 2, "{out}");
    }

    #[test]
    fn a_new_backend_over_tls_is_written_with_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        crate::selfsigned::self_signed(&["api.internal".to_owned()], dir.path()).unwrap();
        let checked = BackendTls::build(
            "10.0.0.6:443",
            Some("api.internal"),
            Some("ca.pem"),
            true,
            dir.path(),
            Protocol::Http1,
        )
        .unwrap();
        let unverified = BackendTls::build(
            "10.0.0.7:443",
            None,
            None,
            false,
            dir.path(),
            Protocol::Http1,
        )
        .unwrap();
        let out = with_replicas(
            "",
            &[
                (1, "api-1", Some("10.0.0.6:443"), Some(&checked)),
                (2, "api-2", Some("10.0.0.7:443"), Some(&unverified)),
                (3, "api-3", None, Some(&unverified)),
            ],
        );
        assert!(matches!(out, Err(PersistError::Empty)));
        let out = with_replicas(
            "[ring]\nslots = 512\n",
            &[
                (1, "api-1", Some("10.0.0.6:443"), Some(&checked)),
                (2, "api-2", Some("10.0.0.7:443"), Some(&unverified)),
                (3, "api-3", None, Some(&unverified)),
            ],
        )
        .unwrap();
        let config = Config::parse_file(&out, &dir.path().join("lb.toml")).unwrap();
        let r = &config.replicas;
        assert!(
            r[0].wants_tls() && r[1].wants_tls() && !r[2].wants_tls(),
            "{out}"
        );
        assert_eq!(r[0].server_name.as_ref().unwrap().get_ref(), "api.internal");
        assert_eq!(r[0].ca.as_ref().unwrap().get_ref(), "ca.pem");
        assert!(r[0].tls_verify.is_none(), "{out}");
        assert_eq!(r[1].tls_verify.as_ref().map(|v| *v.get_ref()), Some(false));
        assert!(r[1].server_name.is_none() && r[1].ca.is_none(), "{out}");
        // Read back, the same settings: a reload changes nothing.
        assert_eq!(r[0].tls_settings.as_deref(), Some(&checked));
        assert_eq!(r[1].tls_settings.as_deref(), Some(&unverified));
    }

    #[test]
    fn backends_by_address_keep_and_get_their_address() {
        let file = "[[replicas]]\nhostname = \"api-1\"\nid = 1\naddress = \"10.0.0.5:80\" # the old one\npipelining = true\n";
        let out = with_replicas(
            file,
            &[
                (1, "api-1", Some("10.0.0.5:80"), None),
                (2, "api-2", Some("api.local:8080"), None),
            ],
        )
        .unwrap();
        assert!(out.starts_with(file), "{out}");
        let config = Config::parse(&out).unwrap();
        let addresses: Vec<_> = config.replicas.iter().map(|r| r.address()).collect();
        assert_eq!(addresses, [Some("10.0.0.5:80"), Some("api.local:8080")]);
        assert_eq!(config.replicas[0].pipelining, Some(true));
        // An entry that stops being a backend by address loses the key.
        let out = with_replicas(file, &[(1, "api-1", None, None)]).unwrap();
        assert_eq!(Config::parse(&out).unwrap().replicas[0].address(), None);
        // … and its TLS keys; a kept backend by address keeps them.
        let tls = format!("{file}tls = true\ntls_verify = false\n");
        let out = with_replicas(&tls, &[(1, "api-1", Some("10.0.0.5:80"), None)]).unwrap();
        assert_eq!(out, tls);
        let out = with_replicas(&tls, &[(1, "api-1", None, None)]).unwrap();
        assert!(!out.contains("tls"), "{out}");
        assert!(Config::parse(&out).is_ok(), "{out}");
    }

    #[test]
    fn adding_keeps_comments_and_appends() {
        let out = with_replicas(
            FILE,
            &[
                (1, "Server 1", None, None),
                (2, "Server 2", None, None),
                (3, "S5", None, None),
            ],
        )
        .unwrap();
        assert!(out.starts_with(FILE), "{out}");
        assert_eq!(
            replicas_of(&out),
            [
                (1, "Server 1".into()),
                (2, "Server 2".into()),
                (3, "S5".into())
            ]
        );
    }

    #[test]
    fn unchanged_list_gives_identical_text() {
        assert_eq!(
            with_replicas(
                FILE,
                &[(1, "Server 1", None, None), (2, "Server 2", None, None)]
            )
            .unwrap(),
            FILE
        );
    }

    #[test]
    fn replacing_renames_in_place_and_removing_drops_the_table() {
        let out = with_replicas(FILE, &[(1, "S123456", None, None)]).unwrap();
        assert!(out.contains("hostname = \"S123456\"   # keep me"), "{out}");
        assert!(out.contains("# the first one"), "{out}");
        assert!(!out.contains("Server 2"), "{out}");
        assert!(out.contains("slots = 512 # M"), "{out}");
        assert_eq!(replicas_of(&out), [(1, "S123456".into())]);
    }

    #[test]
    fn comments_above_a_removed_table_are_kept() {
        // Removing the first: its comment moves to the table that follows.
        let out = with_replicas(FILE, &[(2, "Server 2", None, None)]).unwrap();
        assert!(
            out.contains(
                "# the first one\n\n# the second one\n[[replicas]]\nhostname = \"Server 2\""
            ),
            "{out}"
        );
        // Removing the last: its comment goes to the table added in its place …
        let out =
            with_replicas(FILE, &[(1, "Server 1", None, None), (3, "S5", None, None)]).unwrap();
        assert!(
            out.contains("# the second one\n[[replicas]]\nhostname = \"S5\""),
            "{out}"
        );
        // … or to the end of the file.
        let out = with_replicas(FILE, &[(1, "Server 1", None, None)]).unwrap();
        assert!(out.trim_end().ends_with("# the second one"), "{out}");
        assert_eq!(replicas_of(&out), [(1, "Server 1".into())]);
    }

    #[test]
    fn no_replicas_section_or_inline_array() {
        let out = with_replicas(
            "[ring]\nslots = 64\n",
            &[(1, "A", None, None), (2, "B", None, None)],
        )
        .unwrap();
        assert_eq!(replicas_of(&out), [(1, "A".into()), (2, "B".into())]);
        let inline = "replicas = [{ hostname = \"X\", id = 7 }]\n";
        let out = with_replicas(inline, &[(7, "X", None, None), (8, "Y", None, None)]).unwrap();
        assert_eq!(replicas_of(&out), [(7, "X".into()), (8, "Y".into())]);
    }

    #[test]
    fn invalid_toml_is_refused() {
        assert!(matches!(
            with_replicas("[ring\n", &[(1, "A", None, None)]),
            Err(PersistError::NotToml(_))
        ));
    }

    /// An empty file is someone's save caught between truncation and write: writing the replica
    /// list into it would replace everything else they wrote.
    #[test]
    fn an_empty_file_is_left_alone() {
        for text in ["", " \n"] {
            assert!(matches!(
                with_replicas(text, &[(1, "A", None, None)]),
                Err(PersistError::Empty)
            ));
        }
    }

    #[test]
    fn atomic_write_never_follows_a_planted_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        fs::write(&path, "old").unwrap();
        // Every name the old scheme would have used, planted as a symlink to a victim file.
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let planted = dir
            .path()
            .join(format!(".lb.toml.lb-{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") && !n.contains(&std::process::id().to_string()))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[test]
    fn atomic_write_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        let link = dir.path().join("lb.toml");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, "new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "temporary file left behind");
    }
}

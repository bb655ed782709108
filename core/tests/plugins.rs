//! Hash plugins: every shipped plugin loads from its built file and routes traffic; the `spec`
//! plugin equals the built-in; broken plugins are refused (or contained) with a clear message
//! while traffic keeps flowing; swapping the hash under traffic drops nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{eventually, Lb, Traffic, THREE};
use lb_balance::hash::{RingHash, SpecHash};
use lb_balance::plugin::{self, PluginError, PluginHash};
use lb_balance::ring::{self, RingParams};
use serde_json::Value;

use lb_balance::plugin::SHIPPED;
const FIXTURES: [&str; 3] = ["wrong-abi", "panics-at-load", "panics-sometimes"];
const DEADLINE: Duration = Duration::from_secs(20);

/// `cargo test` does not build `cdylib`s, so build the plugins and fixtures here, with the same
/// cargo, into a directory of their own (no lock shared with the running `cargo test`).
fn built_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-build");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target);
        for name in SHIPPED {
            cmd.args(["-p", &format!("lb-hash-{name}")]);
        }
        for name in FIXTURES {
            cmd.args(["-p", &format!("lb-test-plugin-{name}")]);
        }
        let status = cmd.status().expect("run cargo build for the plugins");
        assert!(status.success(), "building the plugins failed");
        target.join("debug")
    })
}

/// A fresh plugin directory holding the given built plugins under their plugin file names.
fn plugin_dir(shipped: &[&str], fixtures: &[&str]) -> tempfile::TempDir {
    let built = built_plugins();
    let dir = tempfile::tempdir().unwrap();
    for name in shipped {
        let file = plugin::file_name(name);
        std::fs::copy(built.join(&file), dir.path().join(&file)).unwrap();
    }
    for name in fixtures {
        let from = format!("liblb_test_plugin_{}.so", name.replace('-', "_"));
        std::fs::copy(built.join(from), dir.path().join(plugin::file_name(name))).unwrap();
    }
    dir
}

/// Three replicas using `hash`, with plugins looked up in `dir` (`hash` is on line 3, column 8).
fn config(hash: &str, dir: &Path) -> String {
    format!(
        "\n[ring]\nhash = \"{hash}\"\n[plugins]\ndirs = [\"{}\"]\n{THREE}",
        dir.display()
    )
}

async fn wait_for_hash(lb: &Lb, hash: &str) -> Value {
    eventually(DEADLINE, &format!("hash {hash} in /_lb/ring"), || async {
        let ring = lb.get("/_lb/ring").await.json();
        (ring["hash"] == hash).then_some(ring)
    })
    .await
}

async fn wait_for_error(lb: &Lb, needle: &str) -> String {
    eventually(DEADLINE, needle, || async {
        let status = lb.status().await;
        status["config"]["last_error"]["message"]
            .as_str()
            .filter(|m| m.contains(needle))
            .map(str::to_owned)
    })
    .await
}

#[test]
fn every_shipped_plugin_loads_and_passes_its_self_check() {
    let dir = plugin_dir(&SHIPPED, &[]);
    for name in SHIPPED {
        let path = dir.path().join(plugin::file_name(name));
        let plugin = PluginHash::load(&path, Some(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plugin.name(), name);
        assert!(!plugin.description().is_empty());
        // It builds the assignment's ring.
        let ring = ring::build(RingParams::default(), Arc::new(plugin), &[1, 2, 3]).unwrap();
        assert_eq!(ring.slot_counts().iter().sum::<u32>(), 512);
    }
}

#[test]
fn spec_plugin_is_identical_to_the_built_in() {
    let dir = plugin_dir(&["spec"], &[]);
    let plugin = plugin::resolve("spec", &[dir.path().to_path_buf()]).unwrap();
    for r in (0..100_000u64).chain([u64::MAX, u64::MAX / 3]) {
        assert_eq!(plugin.request(r), SpecHash.request(r), "H({r})");
    }
    for params in [
        RingParams::default(),
        RingParams {
            slots: 64,
            virtual_nodes: 5,
            probing: lb_balance::ring::Probing::Quadratic,
        },
    ] {
        for n in 1..=6u64 {
            let ids: Vec<u64> = (1..=n).collect();
            let a = ring::build(params, Arc::new(SpecHash), &ids).unwrap();
            let b = ring::build(params, plugin.clone(), &ids).unwrap();
            assert_eq!(a.owners(), b.owners(), "{params:?}, N = {n}");
            for k in 0..ids.len() {
                assert_eq!(a.virtual_slots(k), b.virtual_slots(k));
            }
        }
    }
}

#[test]
fn broken_plugins_are_refused_with_the_reason() {
    let dir = plugin_dir(&[], &["wrong-abi", "panics-at-load"]);
    let garbage = dir.path().join(plugin::file_name("garbage"));
    std::fs::write(&garbage, "this is not a shared library").unwrap();
    let dirs = [dir.path().to_path_buf()];
    let err = |name: &str| plugin::resolve(name, &dirs).unwrap_err();

    match err("wrong-abi") {
        PluginError::WrongAbi {
            found, expected, ..
        } => assert_eq!((found, expected), (999, 1)),
        other => panic!("{other}"),
    }
    assert!(err("wrong-abi")
        .to_string()
        .contains("liblb_hash_wrong_abi.so"));
    let m = err("panics-at-load").to_string();
    assert!(m.contains("self-check failed: Φ(1, 0) panicked"), "{m}");
    let m = err("garbage").to_string();
    assert!(m.contains("not a loadable library"), "{m}");
    assert!(m.contains("liblb_hash_garbage.so"), "{m}");
    let m = err("nope").to_string();
    assert!(
        m.contains("no plugin \"nope\"") && m.contains("liblb_hash_nope.so"),
        "{m}"
    );
    // A file under another plugin's name.
    std::fs::copy(
        dir.path().join(plugin::file_name("panics-at-load")),
        dir.path().join(plugin::file_name("alias")),
    )
    .unwrap();
    assert!(matches!(err("alias"), PluginError::NameMismatch { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_shipped_plugin_routes_traffic_after_a_live_switch() {
    let dir = plugin_dir(&SHIPPED, &[]);
    let dirs = [dir.path().to_path_buf()];
    let lb = Lb::start(&config("spec", dir.path()));
    for name in SHIPPED {
        std::fs::write(&lb.config, config(name, dir.path())).unwrap();
        let ring = wait_for_hash(&lb, name).await;
        // Where the ring says each request id goes, computed with the plugin itself.
        let hash = plugin::resolve(name, &dirs).unwrap();
        let owners = ring["owners"].as_array().unwrap();
        for id in (0..40u64).map(|k| 100_000 + k * 22_501) {
            let expected = owners[(hash.request(id) % 512) as usize].as_str().unwrap();
            let got = lb.home(&[("X-Request-Id", &id.to_string())]).await;
            assert_eq!(got, expected, "{name}: request {id}");
        }
    }
    // /_lb/plugins lists them all, the last one active; those loaded (every one selected, but
    // `spec`, whose compiled-in copy wins) with ABI version and description.
    let listing = lb.get("/_lb/plugins").await.json();
    assert_eq!(listing["active"], "ketama");
    let plugins = listing["plugins"].as_array().unwrap();
    for name in SHIPPED {
        let entry = plugins
            .iter()
            .find(|p| p["name"] == name && p["builtin"] == false)
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"));
        if name == "spec" {
            assert_eq!(entry["loaded"], false, "{entry}");
        } else {
            assert_eq!(entry["loaded"], true, "{entry}");
            assert_eq!(entry["abi_version"], 1);
            assert!(entry["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
        assert_eq!(entry["active"], name == "ketama", "{entry}");
    }
    assert_eq!(plugins.iter().filter(|p| p["active"] == true).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_plugins_leave_the_running_ring_serving() {
    let dir = plugin_dir(&["murmur3"], &["wrong-abi", "panics-at-load"]);
    std::fs::write(
        dir.path().join(plugin::file_name("garbage")),
        "not a library",
    )
    .unwrap();
    let lb = Lb::start(&config("murmur3", dir.path()));
    let before = lb.get("/_lb/ring").await.json();
    assert_eq!(before["hash"], "murmur3");
    for (name, needle) in [
        (
            "wrong-abi",
            "plugin ABI version 999, but this lb speaks version 1",
        ),
        ("garbage", "not a loadable library"),
        ("nope", "no plugin \"nope\""),
        ("panics-at-load", "self-check failed: Φ(1, 0) panicked"),
    ] {
        std::fs::write(&lb.config, config(name, dir.path())).unwrap();
        let message = wait_for_error(&lb, needle).await;
        assert!(message.contains("line 3, column 8"), "{message}");
        assert_eq!(lb.get("/_lb/ring").await.json(), before, "after {name}");
        for id in 0..20u32 {
            lb.home(&[("X-Request-Id", &id.to_string())]).await;
        }
    }
    // The listing shows the broken files with their errors.
    let listing = lb.get("/_lb/plugins").await.json();
    let wrong = listing["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wrong-abi")
        .unwrap()
        .clone();
    assert!(
        wrong["error"].as_str().unwrap().contains("ABI version 999"),
        "{wrong}"
    );
}

#[test]
fn a_panic_in_h_is_contained_in_process() {
    let dir = plugin_dir(&[], &["panics-sometimes"]);
    let plugin = plugin::resolve("panics-sometimes", &[dir.path().to_path_buf()]).unwrap();
    assert_eq!(plugin.panics(), 0);
    // 7 000 021 = 7 × 1 000 003: the fixture's H panics; the request id itself is used instead.
    assert_eq!(plugin.request(7_000_021), 7_000_021);
    assert_eq!(plugin.panics(), 1);
    assert_ne!(plugin.request(7_000_022), 7_000_022);
    assert_eq!(plugin.panics(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_h_is_contained() {
    let dir = plugin_dir(&[], &["panics-sometimes"]);
    let lb = Lb::start(&config("panics-sometimes", dir.path()));
    // 7 × 1 000 003 panics in the plugin's H: lb routes by the id itself and keeps serving.
    for id in [7_000_021u64, 7_000_028, 1_000_003] {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    eventually(DEADLINE, "the panic logged", || async {
        lb.log().contains("hash plugin panicked in H").then_some(())
    })
    .await;
    assert!(lb.log().contains("H cannot hash 7000021"), "{}", lb.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_hashes_under_traffic_drops_nothing() {
    let dir = plugin_dir(&["murmur3", "xxh3", "ketama"], &[]);
    let lb = Arc::new(Lb::start(&config("spec", dir.path())));
    let traffic = Traffic::start(&lb, 4);
    for round in 0..12 {
        let name = ["murmur3", "xxh3", "ketama", "spec"][round % 4];
        std::fs::write(&lb.config, config(name, dir.path())).unwrap();
        wait_for_hash(&lb, name).await;
    }
    let answers = traffic.finish().await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let total = answers.len();
    assert!(total >= 100, "only {total} requests");
}

/// Listing plugins never loads one: only the selected plugin is mapped into `lb`, and the
/// others are listed by file name.
#[tokio::test(flavor = "multi_thread")]
async fn listing_plugins_loads_none() {
    let dir = plugin_dir(&["murmur3", "xxh3"], &["wrong-abi", "panics-at-load"]);
    let lb = Lb::start(&config("murmur3", dir.path()));
    let mapped = || std::fs::read_to_string(format!("/proc/{}/maps", lb.pid())).unwrap();
    for _ in 0..3 {
        let listing = lb.get("/_lb/plugins").await.json();
        let entries = listing["plugins"].as_array().unwrap();
        let entry = |name: &str| {
            entries
                .iter()
                .find(|p| p["name"] == name && p["builtin"] == false)
                .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
                .clone()
        };
        assert_eq!(entry("murmur3")["loaded"], true);
        assert_eq!(entry("murmur3")["active"], true);
        for name in ["xxh3", "wrong-abi", "panics-at-load"] {
            assert_eq!(entry(name)["loaded"], false, "{name}");
            assert_eq!(entry(name)["description"], Value::Null, "{name}");
        }
    }
    let maps = mapped();
    assert!(
        maps.contains("liblb_hash_murmur3.so"),
        "the selected one is loaded"
    );
    for file in [
        "liblb_hash_xxh3.so",
        "liblb_hash_wrong_abi.so",
        "liblb_hash_panics_at_load.so",
    ] {
        assert!(!maps.contains(file), "{file} was loaded by listing");
    }
    // [plugins] dirs is live: a save naming another directory is searched from then on (the
    // hash in use is re-resolved there), and nothing waits for a restart.
    let other = plugin_dir(&["murmur3"], &[]);
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(
        &lb.config,
        text.replace(
            &dir.path().display().to_string(),
            &other.path().display().to_string(),
        ),
    )
    .unwrap();
    let listing = eventually(DEADLINE, "the new directory searched", || async {
        let listing = lb.get("/_lb/plugins").await.json();
        (listing["search_path"][0] == other.path().display().to_string()).then_some(listing)
    })
    .await;
    let old = dir.path().display().to_string();
    assert!(
        listing["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| !p["path"].as_str().unwrap_or_default().starts_with(&old)),
        "the old directory is no longer listed: {listing}"
    );
    let status = lb.status().await;
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    assert_eq!(status["config"]["last_error"], Value::Null);
}

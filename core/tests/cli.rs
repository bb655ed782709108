//! The `lb` command line: `lb check`, and the embedded default configuration.

mod common;

use std::process::Command;

fn lb_check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_accepts_the_shipped_configuration() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lb.toml");
    let (ok, text) = lb_check(&shipped);
    assert!(ok, "{text}");
    assert!(
        text.contains("ok (3 replicas, 512 slots, 9 virtual nodes, linear probing"),
        "{text}"
    );
}

#[test]
fn check_refuses_bad_files_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (content, needle) in [
        (
            "[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"A\"\nid = 2\n",
            "line 5, column 12: duplicate hostname \"A\"",
        ),
        (
            "[ring]\nslots = 8\n[[replicas]]\nhostname = \"A\"\nid = 1\n",
            "exceeds 8 slots",
        ),
        ("[ring]\nprobing = \"cubic\"\n", "line 2"),
        ("listen = 5000\n", "line 1"),
    ] {
        std::fs::write(&path, content).unwrap();
        let (ok, text) = lb_check(&path);
        assert!(!ok, "accepted:\n{content}");
        assert!(text.contains(needle), "{content}\n→ {text}");
    }
    let (ok, text) = lb_check(&dir.path().join("missing.toml"));
    assert!(!ok);
    assert!(text.contains("cannot read"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_on_the_embedded_default_without_a_config_file() {
    let lb = common::Lb::start_embedded();
    assert_eq!(
        lb.get("/rep").await.body,
        r#"{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "Server 3"]}, "status": "successful"}"#
    );
    assert_eq!(lb.status().await["config"]["path"], "(embedded default)");
    let name = lb.home(&[]).await;
    assert!(name.starts_with("Server "), "{name}");
}

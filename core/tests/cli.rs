//! The `lb` command line: `lb check`, `lb tls self-signed`, and the embedded default configuration.

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

#[test]
fn check_reports_every_problem_with_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "[health]\nintervl_ms = 100\n[ring]\nprobing = \"cubic\"\n[[replicas]]\nhostname = \"A\"\nid = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let name = path.display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!("lb: {name}: line 2, column 1: unknown key `intervl_ms` in [health]; did you mean `interval_ms`?"),
            format!("lb: {name}: line 4, column 11: unknown variant `cubic`, expected `linear` or `quadratic`"),
            format!("lb: {name}: line 7, column 6: replica ids start at 1"),
            format!("lb: {name}: 3 problems"),
        ],
        "{text}"
    );
}

#[test]
fn listen_takes_host_names_and_a_busy_port_is_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["--listen", &format!("localhost:{port}")])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("lb started on a busy port");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("lb: cannot listen on 127.0.0.1:{port}: address already in use"),
        "{text}"
    );
    assert!(!text.contains("os error"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["--listen", "no-such-host.invalid:5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-host.invalid:5000"));
}

/// `openssl`'s output for `args`, or the reason it could not run.
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (Debian package openssl; scripts/test.sh installs it) must be installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn tls_self_signed_writes_a_chain_openssl_verifies_for_the_names_given() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let run = |names: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb"));
        cmd.args(["tls", "self-signed", "--out"]).arg(&out_dir);
        for name in names {
            cmd.args(["--name", name]);
        }
        cmd.output().unwrap()
    };
    let out = run(&["localhost", "127.0.0.1", "*.lb.test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[[tls.certificates]]"), "{stdout}");
    let path = |name: &str| out_dir.join(name).to_string_lossy().into_owned();
    let (ok, text) = openssl(&["verify", "-CAfile", &path("ca.pem"), &path("cert.pem")]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        &path("cert.pem"),
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    assert!(ok, "{text}");
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "DNS:*.lb.test",
        "TLS Web Server Authentication",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    // The key is the certificate's: both give the same public key.
    let (_, from_cert) = openssl(&["x509", "-in", &path("cert.pem"), "-noout", "-pubkey"]);
    let (_, from_key) = openssl(&["pkey", "-in", &path("key.pem"), "-pubout"]);
    assert!(from_cert.contains("BEGIN PUBLIC KEY") && from_cert == from_key);

    // A second run never overwrites: exit status 1, the reason, the files unchanged.
    let before = std::fs::read(path("key.pem")).unwrap();
    let again = run(&["localhost"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::read(path("key.pem")).unwrap(), before);
}

/// config/examples/https.toml passes `lb check` once `lb tls self-signed` made its files, as
/// the README says; without them, the check names the missing file.
#[test]
fn the_https_example_checks_with_the_self_signed_files() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/https.toml");
    let config = dir.path().join("https.local.toml");
    std::fs::copy(&example, &config).unwrap();
    let (ok, text) = lb_check(&config);
    assert!(!ok && text.contains("cert.pem"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["tls", "self-signed", "--name", "localhost", "--out"])
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, text) = lb_check(&config);
    assert!(ok, "{text}");
}

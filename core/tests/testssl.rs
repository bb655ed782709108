//! The TLS listener as an outside scanner sees it: `testssl.sh` (Debian's `testssl.sh` package,
//! the `testssl` command) against `lb` serving the certificate `lb tls self-signed` makes, with
//! the default `[tls] min_version = "1.2"`. Checks protocols (`-p`), cipher categories (`-s`),
//! forward secrecy (`-f`), vulnerabilities (`-U`), server defaults (`-S`) and the ciphers per
//! protocol (`-E`), offline (no DNS, `--ip 127.0.0.1`), and asserts from its JSON: no finding
//! rated HIGH or CRITICAL, nothing below TLS 1.2 offered, no weak cipher.
//!
//! Without `testssl` installed the test says why and passes, unless `LB_REQUIRE_TESTSSL=1`
//! (scripts/test.sh installs it and sets that).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::Lb;

/// The longest a scan may take (it takes about 30 s on a 2-core machine).
const SCAN_LIMIT: Duration = Duration::from_secs(240);

/// Findings rated HIGH that concern the test's certificate, not `lb`: the local CA of
/// `lb tls self-signed` publishes no CRL or OCSP address (a public CA's certificate does).
const ABOUT_THE_CERTIFICATE: &[&str] = &["cert_revocation"];

/// The `testssl` command, if installed (Debian names it `testssl`, upstream `testssl.sh`).
fn testssl() -> Option<&'static str> {
    ["testssl", "testssl.sh"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// `lb tls self-signed` for localhost and 127.0.0.1 into `dir`.
fn self_signed(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "tls",
            "self-signed",
            "--name",
            "localhost",
            "--name",
            "127.0.0.1",
        ])
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb tls self-signed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `command` on `target`, writing its flat JSON to `json`, for at most [`SCAN_LIMIT`]:
/// its console output (killed at the limit: a failure).
fn scan(command: &str, target: &str, ca: &Path, json: &Path) -> String {
    let log = json.with_extension("log");
    let mut child = Command::new(command)
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
        ])
        .args([
            "--ip",
            "127.0.0.1",
            "--connect-timeout",
            "10",
            "--openssl-timeout",
            "10",
        ])
        .arg("--add-ca")
        .arg(ca)
        .args(["-p", "-s", "-f", "-U", "-S", "-E"])
        .arg("--jsonfile")
        .arg(json)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run testssl");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > SCAN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "testssl did not finish in {SCAN_LIMIT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Its exit status counts the checks it could not finish; what matters is in the JSON.
    eprintln!("testssl took {:?} ({status})", start.elapsed());
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// The finding of the one result with `id`.
fn finding<'a>(results: &'a [Value], id: &str, output: &str) -> &'a str {
    results
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["finding"].as_str())
        .unwrap_or_else(|| panic!("testssl reported no {id}:\n{output}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn testssl_finds_nothing_high_no_old_protocol_and_no_weak_cipher() {
    let Some(command) = testssl() else {
        if std::env::var("LB_REQUIRE_TESTSSL").as_deref() == Ok("1") {
            panic!(
                "testssl is not installed and LB_REQUIRE_TESTSSL=1 (apt-get install testssl.sh)"
            );
        }
        eprintln!("SKIP: testssl is not installed (apt-get install testssl.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    self_signed(&certs);
    let lb = Lb::start(&format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [[replicas]]\nhostname = \"Server 1\"\nid = 1\n",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display()
    ));
    let https = lb.https.expect("an https listener");
    let json = dir.path().join("testssl.json");
    let target = format!("localhost:{}", https.port());
    let ca = certs.join("ca.pem");
    let output = {
        let (json, ca) = (json.clone(), ca.clone());
        tokio::task::spawn_blocking(move || scan(command, &target, &ca, &json))
            .await
            .unwrap()
    };
    let results: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .unwrap_or_else(|e| panic!("testssl's JSON: {e}\n{output}"));

    // Nothing rated HIGH or CRITICAL but what concerns the local CA's certificate.
    let high: Vec<&Value> = results
        .iter()
        .filter(|r| matches!(r["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .filter(|r| {
            !ABOUT_THE_CERTIFICATE
                .iter()
                .any(|id| r["id"].as_str() == Some(id))
        })
        .collect();
    assert!(high.is_empty(), "HIGH or CRITICAL: {high:#?}\n{output}");

    // No protocol below TLS 1.2; 1.2 and 1.3 offered.
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let said = finding(&results, old, &output);
        assert!(said.starts_with("not offered"), "{old}: {said}\n{output}");
    }
    for offered in ["TLS1_2", "TLS1_3"] {
        let said = finding(&results, offered, &output);
        assert!(said.starts_with("offered"), "{offered}: {said}\n{output}");
    }

    // No weak cipher category, and none among the ciphers offered per protocol.
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
    ] {
        let said = finding(&results, weak, &output);
        assert!(said.starts_with("not offered"), "{weak}: {said}\n{output}");
    }
    let ciphers: Vec<&str> = results
        .iter()
        .filter(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("cipher-tls"))
        })
        .filter_map(|r| r["finding"].as_str())
        .collect();
    assert!(
        ciphers.iter().any(|c| c.starts_with("TLS 1.3")),
        "no TLS 1.3 cipher listed: {ciphers:#?}\n{output}"
    );
    let weak = [
        "NULL", "EXP", "RC4", "DES", "anon", "ADH", "AECDH", "MD5", "IDEA",
    ];
    for cipher in &ciphers {
        assert!(
            !weak.iter().any(|w| cipher.contains(w)),
            "a weak cipher is offered: {cipher}"
        );
        assert!(
            cipher.starts_with("TLS 1.2") || cipher.starts_with("TLS 1.3"),
            "a cipher of an old protocol: {cipher}"
        );
    }
    for known in [
        "heartbleed",
        "CCS",
        "ROBOT",
        "POODLE_SSL",
        "SWEET32",
        "RC4",
        "BEAST",
    ] {
        let severity = results
            .iter()
            .find(|r| r["id"] == known)
            .and_then(|r| r["severity"].as_str())
            .unwrap_or("missing");
        assert_eq!(severity, "OK", "{known}\n{output}");
    }

    // lb served every probe and still answers.
    assert_eq!(lb.get("/_lb/status").await.status, 200, "{}", lb.log());
}

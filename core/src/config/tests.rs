use super::*;
use std::path::{Path, PathBuf};

use lb_balance::ring::RingParams;
use lb_balance::{Algorithm, Balancer};
use load::MAX_CONFIG_BYTES;
use names::HostnameError;
use problem::{Problem, MAX_PROBLEMS};
use sections::default_listen;

#[test]
fn embedded_default_is_valid_and_has_three_replicas() {
    let c = Config::parse(EMBEDDED).unwrap();
    assert_eq!(c.replicas.len(), 3);
    assert_eq!(c.ring_params(), RingParams::default());
    assert_eq!(c.listen, default_listen());
}

#[test]
fn empty_file_gives_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.ring_params(), RingParams::default());
    assert!(c.replicas.is_empty());
    assert_eq!(c.health.fall, 2);
}

fn invalid(text: &str) -> (usize, usize, String) {
    match Config::parse(text) {
        Err(ConfigError::Invalid(problems)) => {
            let first = problems.into_iter().next().expect("never empty");
            (first.line, first.column, first.message)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn duplicate_hostname_points_at_the_second_one() {
    let text = "[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"A\"\nid = 2\n";
    let (line, column, message) = invalid(text);
    assert_eq!((line, column), (5, 12));
    assert!(message.contains("duplicate hostname"), "{message}");
}

#[test]
fn duplicate_id_and_zero_id() {
    let text = "[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"B\"\nid = 1\n";
    assert_eq!(invalid(text).0, 6);
    let text = "[[replicas]]\nhostname = \"A\"\nid = 0\n";
    assert!(invalid(text).2.contains("start at 1"));
}

#[test]
fn too_many_virtual_nodes_is_an_error_with_position() {
    let mut text = String::from("[ring]\nslots = 16\nvirtual_nodes = 9\n");
    for i in 1..=2 {
        text.push_str(&format!("[[replicas]]\nhostname = \"S{i}\"\nid = {i}\n"));
    }
    let (line, _, message) = invalid(&text);
    assert_eq!(line, 3);
    assert!(message.contains("16"), "{message}");
}

#[test]
fn syntax_and_unknown_fields_report_line_and_column() {
    let err = Config::parse("listen = \"127.0.0.1:5000\"\n[ring]\nslots = 512\nslotz = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("slotz"), "{err}");
    let err = Config::parse("[ring\n").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    let err = Config::parse("[ring]\nhash = \"no/pe\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("no/pe"), "{err}");
    // An unknown plugin name is only found out when it is resolved.
    let config = Config::parse("[ring]\nvirtual_nodes = 3\nhash = \"nope\"\n").unwrap();
    let err = config.resolve_hash().unwrap_err().to_string();
    assert!(err.contains("line 3, column 8"), "{err}");
    assert!(err.contains("liblb_hash_nope.so"), "{err}");
    let err = Config::parse("[supervisor]\nkind = \"kubernetes\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("kubernetes"), "{err}");
}

#[test]
fn hostname_rules() {
    assert!(check_hostname("Server 1").is_ok());
    assert!(check_hostname("a-b_c.d").is_ok());
    assert!(check_hostname(&"x".repeat(63)).is_ok());
    assert!(check_hostname(&"x".repeat(64)).is_err());
    assert!(check_hostname("").is_err());
    assert!(check_hostname("a/b").is_err());
    assert!(check_hostname("é").is_err());
    for bad in ["-x", "--help", " S1", "S1 ", " ", ".", "..", ". ."] {
        assert!(
            matches!(check_hostname(bad), Err(HostnameError::Shape(_))),
            "{bad:?} accepted"
        );
    }
    assert!(check_hostname("a-").is_ok() && check_hostname("x.y z").is_ok());
    // A long name is not echoed whole.
    let long = "y".repeat(65_000);
    assert!(check_hostname(&long).unwrap_err().to_string().len() < 200);
}

/// The example in config/examples/ that the README runs is valid and fronts three services.
#[test]
fn the_services_example_is_valid() {
    let text = include_str!("../../../config/examples/services.toml");
    let config = Config::parse(text).unwrap();
    assert_eq!(config.replicas.len(), 3);
    assert!(config.replicas.iter().all(|r| r.address().is_some()));
    assert_eq!(config.health.path, "/");
}

/// The gRPC example the README runs: three backends by address over h2c, by `x-shard`.
#[test]
fn the_grpc_example_is_valid() {
    let text = include_str!("../../../config/examples/grpc.toml");
    let config = Config::parse(text).unwrap();
    assert_eq!(config.replicas.len(), 3);
    assert!(config
        .replicas
        .iter()
        .all(|r| r.address().is_some() && r.protocol() == Protocol::H2c));
}

#[test]
fn address_rules() {
    for good in [
        "10.0.0.5:8080",
        "localhost:8001",
        "api-1.internal:80",
        "[::1]:8001",
        "web_1:65535",
    ] {
        assert!(check_address(good).is_ok(), "{good:?} refused");
    }
    for bad in [
        "",
        "10.0.0.5",
        "10.0.0.5:0",
        "10.0.0.5:65536",
        "10.0.0.5:+80",
        ":80",
        "http://x:80",
        "x/y:80",
        "-x:80",
        "a..b:80",
        "[::1:80",
        "[zz]:80",
        "1.2.3.4.5:80",
        "host name:80",
    ] {
        assert!(check_address(bad).is_err(), "{bad:?} accepted");
    }
    // A long address is not echoed.
    let long = format!("{}:80", "a".repeat(65_000));
    assert!(check_address(&long).unwrap_err().to_string().len() < 200);
}

#[test]
fn backends_by_address_in_the_file() {
    let config = Config::parse(
        "[health]\npath = \"/healthz\"\nrise = 3\n\
         [[replicas]]\nhostname = \"api-1\"\nid = 1\naddress = \"localhost:8001\"\n\
         [[replicas]]\nhostname = \"Server 2\"\nid = 2\npipelining = false\n",
    )
    .unwrap();
    assert_eq!(config.health.path, "/healthz");
    assert_eq!(config.health.rise, 3);
    assert_eq!(config.replicas[0].address(), Some("localhost:8001"));
    assert_eq!(config.replicas[1].address(), None);
    assert_eq!(config.replicas[1].pipelining, Some(false));

    let messages: Vec<String> = problems(
        "listen = \"127.0.0.1:5000\"\n[health]\npath = \"heartbeat\"\nrise = 0\n\
         [[replicas]]\nhostname = \"a\"\nid = 1\naddress = \"nope\"\n\
         [[replicas]]\nhostname = \"b\"\nid = 2\naddress = \"127.0.0.1:5000\"\n\
         [[replicas]]\nhostname = \"c\"\nid = 3\naddress = \"10.0.0.1:80\"\n\
         [[replicas]]\nhostname = \"d\"\nid = 4\naddress = \"10.0.0.1:80\"\n",
    )
    .into_iter()
    .map(|p| p.message)
    .collect();
    let expect = [
        "health.path",
        "health.rise must be at least 1",
        "HOST:PORT",
        "lb's own listening address",
        "duplicate address",
    ];
    assert_eq!(messages.len(), expect.len(), "{messages:?}");
    for (m, e) in messages.iter().zip(expect) {
        assert!(m.contains(e), "{m:?} does not say {e:?}");
    }
}

/// Every spelling of `lb`'s own listeners (the traffic one and `[admin] listen`) in an entry is
/// refused where the file shows it.
#[test]
fn backends_at_lbs_own_listeners_are_refused_with_their_place() {
    for (address, listener) in [
        ("localhost:5000", "127.0.0.1:5000"),
        ("0.0.0.0:5000", "127.0.0.1:5000"),
        ("[::ffff:127.0.0.1]:5000", "127.0.0.1:5000"),
        ("127.0.0.1:5001", "127.0.0.1:5001"),
        ("LOCALHOST:5001", "127.0.0.1:5001"),
    ] {
        let text = format!(
            "listen = \"127.0.0.1:5000\"\n[admin]\nlisten = \"127.0.0.1:5001\"\n\
             [[replicas]]\nhostname = \"a\"\nid = 1\naddress = \"{address}\"\n"
        );
        let (line, column, message) = invalid(&text);
        assert_eq!((line, column), (7, 11), "{address}: {message}");
        assert!(
            message.contains("lb's own listening address")
                && message.contains(listener)
                && message.contains(address),
            "{address}: {message}"
        );
    }
    // Another port, or a wildcard listener's port on another machine: fine.
    for address in ["localhost:5002", "10.0.0.1:5000"] {
        let text = format!(
            "listen = \"127.0.0.1:5000\"\n[[replicas]]\nhostname = \"a\"\nid = 1\n\
             address = \"{address}\"\n"
        );
        assert!(Config::parse(&text).is_ok(), "{address}");
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::parse(text) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "\
listen = \"127.0.0.1:5000\"
[ring]
slotz = 512
probing = \"cubic\"
[health]
intervl_ms = 500
fall = 0
[[replicas]]
hostname = \"A\"
id = 1
[[replicas]]
hostname = \"A\"
id = 2
[[replicas]]
hostname = \"B\"
id = \"three\"
[helth]
timeout_ms = 3
";
    let found = problems(text);
    let at: Vec<(usize, usize)> = found.iter().map(|p| (p.line, p.column)).collect();
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        at,
        [(3, 1), (4, 11), (6, 1), (7, 1), (12, 12), (16, 6), (17, 2)],
        "{messages:#?}"
    );
    assert!(messages[0].contains("unknown key `slotz` in [ring]; did you mean `slots`?"));
    assert!(messages[1].contains("cubic"));
    assert!(messages[2].contains("did you mean `interval_ms`?"));
    assert_eq!(messages[3], "health.fall must be at least 1");
    assert_eq!(messages[4], "duplicate hostname \"A\"");
    assert!(messages[5].contains("invalid type"), "{}", messages[5]);
    assert!(
        messages[6].contains("`helth`; did you mean `health`?"),
        "{}",
        messages[6]
    );
}

#[test]
fn an_unknown_key_far_from_every_known_one_lists_them() {
    let found = problems("[plugins]\ncolour = 1\n");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].message,
        "unknown key `colour` in [plugins]; known keys in [plugins]: `dirs`"
    );
}

#[test]
fn a_syntax_error_is_one_problem_with_its_position() {
    let found = problems("[ring]\nslots = = 3\n[health\n");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].line, found[0].column), (2, 9));
}

#[test]
fn wrong_types_in_one_section_are_all_found() {
    let found = problems("[health]\ninterval_ms = \"fast\"\ntimeout_ms = -1\nfall = true\n");
    let lines: Vec<usize> = found.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4], "{found:#?}");
}

#[test]
fn proxy_timeouts_must_be_positive() {
    let found = problems(
        "[proxy]\nconnect_timeout_ms = 0\nresponse_timeout_ms = 0\nclient_header_timeout_ms = 0\n\
         client_idle_timeout_ms = 0\nclient_send_timeout_ms = 0\n",
    );
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "proxy.connect_timeout_ms must be at least 1",
            "proxy.response_timeout_ms must be at least 1",
            "proxy.client_header_timeout_ms must be at least 1",
            "proxy.client_idle_timeout_ms must be at least 1",
            "proxy.client_send_timeout_ms must be at least 1",
        ]
    );
    assert_eq!(
        found.iter().map(|p| p.line).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6]
    );
}

#[test]
fn http2_limits_have_defaults_and_ranges() {
    let shipped = Config::parse(EMBEDDED).unwrap().proxy;
    let default = Config::parse("").unwrap().proxy;
    for p in [&shipped, &default] {
        assert_eq!(
            (
                p.h2_max_concurrent_streams,
                p.h2_max_header_list_size,
                p.h2_initial_stream_window,
                p.h2_initial_connection_window,
                p.h2_keepalive_interval_ms
            ),
            (100, 32_768, 1 << 20, 2 << 20, 30_000)
        );
    }
    let found = problems(
        "[proxy]\nh2_max_concurrent_streams = 0\nh2_max_header_list_size = 100\n\
         h2_initial_stream_window = 1000\nh2_initial_connection_window = 4294967295\n",
    );
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "proxy.h2_max_concurrent_streams = 0 is outside 1..=10000",
            "proxy.h2_max_header_list_size = 100 is outside 1024..=16777216",
            "proxy.h2_initial_stream_window = 1000 is outside 65535..=2147483647",
            "proxy.h2_initial_connection_window = 4294967295 is outside 65535..=2147483647",
        ]
    );
    assert_eq!(
        found.iter().map(|p| p.line).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    let c = Config::parse("[proxy]\nh2_max_concurrent_streams = 8\nh2_keepalive_interval_ms = 0\n")
        .unwrap();
    assert_eq!(
        (
            c.proxy.h2_max_concurrent_streams,
            c.proxy.h2_keepalive_interval_ms
        ),
        (8, 0)
    );
}

#[test]
fn client_timeouts_have_defaults_and_are_read() {
    let c = Config::parse("").unwrap();
    assert_eq!(
        (
            c.proxy.client_header_timeout_ms,
            c.proxy.client_idle_timeout_ms,
            c.proxy.client_send_timeout_ms
        ),
        (10_000, 60_000, 60_000)
    );
    let c = Config::parse("[proxy]\nclient_send_timeout_ms = 250\n").unwrap();
    assert_eq!(c.proxy.client_send_timeout_ms, 250);
    let c = Config::parse("[proxy]\nclient_idle_timeout_ms = 1500\n").unwrap();
    assert_eq!(c.proxy.client_idle_timeout_ms, 1500);
    let c = Config::parse(EMBEDDED).unwrap();
    assert_eq!(
        c.proxy.client_idle_timeout_ms, 60_000,
        "the shipped default"
    );
}

#[test]
fn the_hash_key_has_a_default_and_is_read() {
    use key::{KeyFallback, KeyRule, KeySource};
    assert_eq!(
        Config::parse("").unwrap().ring.key_rule(),
        KeyRule::default()
    );
    let shipped = Config::parse(EMBEDDED).unwrap();
    assert_eq!(
        shipped.ring.key_rule(),
        KeyRule::default(),
        "the shipped default"
    );
    assert!(!shipped.proxy.trust_forwarded_for);
    let c = Config::parse(
        "[ring]\nkey = \"cookie:sid\"\nkey_fallback = \"client_ip\"\n[proxy]\ntrust_forwarded_for = true\n",
    )
    .unwrap();
    assert_eq!(
        c.ring.key_rule(),
        KeyRule {
            source: KeySource::Cookie("sid".into()),
            fallback: KeyFallback::ClientIp,
        }
    );
    assert!(c.proxy.trust_forwarded_for);
    for (text, key) in [
        ("header:X-User", "header:X-User"),
        ("query:user", "query:user"),
        ("path", "path"),
        ("client_ip", "client_ip"),
    ] {
        let c = Config::parse(&format!("[ring]\nkey = \"{text}\"\n")).unwrap();
        assert_eq!(c.ring.key_rule().source.to_string(), key);
    }
}

#[test]
fn bad_hash_keys_are_problems_with_line_and_column() {
    for (value, expected) in [
        ("\"cookie:\"", "names no cookie"),
        (
            "\"header:bad name\"",
            "\"bad name\" is not a header field name",
        ),
        ("\"foo\"", "\"foo\" is not a known key"),
        ("\"path:/x\"", "takes no name"),
        ("42", "invalid type"),
    ] {
        let found = problems(&format!("[ring]\nslots = 512\nkey = {value}\n"));
        assert_eq!(found.len(), 1, "{value}: {found:#?}");
        assert_eq!(
            (found[0].line, found[0].column),
            (3, 7),
            "{value}: {found:#?}"
        );
        assert!(found[0].message.contains(expected), "{value}: {found:#?}");
    }
    let found = problems("[ring]\nkey_fallback = \"header\"\n");
    assert_eq!((found[0].line, found[0].column), (2, 16), "{found:#?}");
    assert!(
        found[0].message.contains("`random`") && found[0].message.contains("`client_ip`"),
        "{found:#?}"
    );
    // Every problem, not only the first.
    let found = problems("[ring]\nkey = \"foo\"\nkey_fallback = \"never\"\n[health]\nfall = 0\n");
    assert_eq!(
        found.iter().map(|p| p.line).collect::<Vec<_>>(),
        [2, 3, 5],
        "{found:#?}"
    );
}

/// `n` replicas named S1.. with ids 1..=n, after `ring`.
fn with_replicas(ring: &str, n: u64) -> String {
    let mut text = format!("[ring]\n{ring}");
    for i in 1..=n {
        text.push_str(&format!("[[replicas]]\nhostname = \"S{i}\"\nid = {i}\n"));
    }
    text
}

#[test]
fn the_algorithm_selects_the_balancer() {
    assert_eq!(
        Config::parse("").unwrap().balancer(),
        Balancer::Ring(RingParams::default())
    );
    assert_eq!(
        *Config::parse(EMBEDDED).unwrap().ring.algorithm.get_ref(),
        Algorithm::Ring
    );
    let c = Config::parse(&with_replicas("algorithm = \"maglev\"\nslots = 65537\n", 3)).unwrap();
    assert_eq!(c.balancer(), Balancer::Maglev { slots: 65_537 });
    let c = Config::parse("[ring]\nalgorithm = \"rendezvous\"\n").unwrap();
    assert_eq!(c.balancer(), Balancer::Rendezvous { slots: 512 });
    // virtual_nodes and probing are the ring's: the others ignore them, and K·N ≤ M is the
    // ring's rule only (17 slots, 9 virtual nodes, 3 replicas: 27 > 17).
    let ring = "slots = 17\nvirtual_nodes = 9\nprobing = \"quadratic\"\n";
    let (line, _, message) = invalid(&with_replicas(ring, 3));
    assert_eq!(line, 3);
    assert!(message.contains("K·N > M"), "{message}");
    for algorithm in ["maglev", "rendezvous"] {
        let text = with_replicas(&format!("algorithm = \"{algorithm}\"\n{ring}"), 3);
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.balancer().slots(), 17);
        assert!(c.resolve_hash().is_ok());
    }
}

#[test]
fn an_unknown_algorithm_is_a_problem_with_line_and_column() {
    let (line, column, message) = invalid("[ring]\nslots = 512\nalgorithm = \"hrw\"\n");
    assert_eq!((line, column), (3, 13));
    assert!(message.contains("hrw"), "{message}");
    assert!(
        message.contains("ring") && message.contains("maglev") && message.contains("rendezvous"),
        "{message}"
    );
}

#[test]
fn maglev_needs_a_prime_number_of_slots_at_least_n() {
    let (line, column, message) = invalid("[ring]\nalgorithm = \"maglev\"\nslots = 512\n");
    assert_eq!((line, column), (3, 9), "{message}");
    assert_eq!(
        message,
        "algorithm \"maglev\" needs a prime number of slots, not 512 (the nearest primes are \
         509 and 521; 65537 is the usual choice)"
    );
    // Without `slots` in the file (the default 512), the problem points at the algorithm.
    let (line, column, message) = invalid("\n[ring]\nalgorithm = \"maglev\"\n");
    assert_eq!((line, column), (3, 13), "{message}");
    assert!(message.contains("not 512"), "{message}");
    // Found along with the other problems of the file.
    let text = "[ring]\nalgorithm = \"maglev\"\nslots = 100\n[health]\nfall = 0\n";
    assert_eq!(problems(text).len(), 2);
    // A prime smaller than N.
    let (line, _, message) = invalid(&with_replicas("algorithm = \"maglev\"\nslots = 3\n", 4));
    assert_eq!(line, 3);
    assert!(message.contains("4 replicas > 3 slots"), "{message}");
    // Largest slots allowed and largest prime within it.
    assert!(Config::parse("[ring]\nalgorithm = \"maglev\"\nslots = 4194301\n").is_ok());
    assert!(Config::parse("[ring]\nalgorithm = \"rendezvous\"\nslots = 4194304\n").is_ok());
    assert!(
        invalid("[ring]\nalgorithm = \"rendezvous\"\nslots = 4194305\n")
            .2
            .contains("between 1 and 4194304")
    );
}

#[test]
fn the_access_log_is_off_by_default_and_read() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.access_log(), AccessTarget::Off);
    assert_eq!(c.log.access_format, AccessFormat::Text);
    let c = Config::parse("[log]\naccess = \"stdout\"\naccess_format = \"json\"\n").unwrap();
    assert_eq!(c.access_log(), AccessTarget::Stdout);
    assert_eq!(c.log.access_format, AccessFormat::Json);
    // A relative path is relative to the file's directory.
    let c = Config::parse_file(
        "[log]\naccess = \"logs/access.log\"\n",
        Path::new("/etc/lb/lb.toml"),
    )
    .unwrap();
    assert_eq!(
        c.access_log(),
        AccessTarget::File(PathBuf::from("/etc/lb/logs/access.log"))
    );
    let c = Config::parse("[log]\naccess = \"/var/log/lb.log\"\n").unwrap();
    assert_eq!(
        c.access_log(),
        AccessTarget::File(PathBuf::from("/var/log/lb.log"))
    );
}

#[test]
fn bad_access_log_settings_are_problems_with_line_and_column() {
    let (line, column, message) = invalid("[log]\naccess = \"stdout\"\naccess_format = \"xml\"\n");
    assert_eq!((line, column), (3, 17));
    assert!(
        message.contains("`text`") && message.contains("`json`"),
        "{message}"
    );
    let (line, column, message) = invalid("[log]\naccess = \"\"\n");
    assert_eq!((line, column), (2, 10));
    assert!(message.contains("\"off\", \"stdout\""), "{message}");
    let (line, _, message) = invalid("\n[log]\naccess = \"/var/log/\"\n");
    assert_eq!(line, 3);
    assert!(message.contains("directory"), "{message}");
    let (line, column, message) = invalid("[log]\nacess = \"stdout\"\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("did you mean `access`"), "{message}");
}

#[test]
fn swarm_settings_are_checked_with_line_and_column() {
    let ok = Config::parse(
        "[supervisor]\nkind = \"swarm\"\ninstance = \"lb-swarm\"\naddress = \"published\"\n\
         [[replicas]]\nhostname = \"S1\"\nid = 1\n",
    )
    .unwrap();
    assert_eq!(ok.supervisor.kind, SupervisorKind::Swarm);
    assert_eq!(ok.supervisor.address, AddressMode::Published);
    // Backends by address would not be shared by the other lbs of the instance.
    let err = Config::parse(
        "[supervisor]\nkind = \"swarm\"\n[[replicas]]\nhostname = \"web\"\nid = 1\naddress = \"127.0.0.1:8001\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 6") && err.contains("swarm"), "{err}");
    // The instance names services.
    for bad in ["", "a b", "-x", "a_b", &"x".repeat(41)] {
        let text = format!("[supervisor]\nkind = \"swarm\"\ninstance = {bad:?}\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("instance"),
            "{bad:?}: {err}"
        );
        // The same names are fine for the other supervisors (a label, not a name).
        let other = format!("[supervisor]\nkind = \"docker\"\ninstance = {bad:?}\n");
        assert!(Config::parse(&other).is_ok() || bad.is_empty(), "{bad:?}");
    }
    // "published" means a Swarm task's published port.
    let err = Config::parse("[supervisor]\nkind = \"docker\"\naddress = \"published\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3") && err.contains("swarm"), "{err}");
}

/// Issue "hard to break, round 2", item 1: a rejected value longer than 65 535 bytes used to
/// panic while its key was blanked out (a `format!` width is capped), killing the controller.
#[test]
fn a_huge_rejected_value_is_a_problem_not_a_panic() {
    let value = "x".repeat(70_000);
    for text in [
        format!("[ring]\nslots = \"{value}\"\n"),
        format!("[health]\n{value} = 1\n"),
        format!("[{value}]\na = 1\n"),
        format!("listen = \"{value}\"\n"),
        format!("[[replicas]]\nhostname = \"{value}\"\nid = 1\n"),
        format!("[ring]\nslots = \"é{value}é\"\n"),
    ] {
        let found = problems(&text);
        assert!(!found.is_empty());
        assert!(found[0].line <= 3, "{:?}", found[0]);
    }
}

/// Item 5: every unknown key is found in one pass, and at most `MAX_PROBLEMS` are reported,
/// the last saying how many more there were.
#[test]
fn thousands_of_unknown_keys_are_reported_capped() {
    let mut text = String::from("[ring]\nslots = 512\n");
    for i in 0..30_000 {
        text.push_str(&format!("unknown_{i} = {i}\n"));
    }
    let found = problems(&text);
    assert_eq!(found.len(), MAX_PROBLEMS);
    assert_eq!((found[0].line, found[0].column), (3, 1));
    assert!(
        found[0].message.contains("unknown key `unknown_0`"),
        "{:?}",
        found[0]
    );
    assert_eq!(found[MAX_PROBLEMS - 2].line, MAX_PROBLEMS + 1);
    let last = &found[MAX_PROBLEMS - 1].message;
    assert!(last.starts_with("29901 more problems not shown"), "{last}");
    // Many unknown keys on one line (an inline table) are found too.
    let inline: Vec<String> = (0..20_000).map(|i| format!("k{i} = 1")).collect();
    let text = format!("ring = {{ {} }}\n", inline.join(", "));
    let found = problems(&text);
    assert_eq!(found.len(), MAX_PROBLEMS);
    assert_eq!((found[1].line, found[1].column), (1, 18));
}

/// Item 1: a file over `MAX_CONFIG_BYTES` is refused before it is parsed; files that are not
/// regular files (a FIFO would block a reader forever) are refused without being opened.
#[test]
fn oversized_and_special_files_are_refused() {
    let big = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    let found = problems(&big);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.contains("at most 1048576 bytes"),
        "{:?}",
        found[0]
    );
    let dir = std::env::temp_dir().join(format!("lb-config-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.toml");
    std::fs::write(&file, &big).unwrap();
    match read_text(&file) {
        Err(ConfigError::TooLarge { size, .. }) => assert_eq!(size, big.len() as u64),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let fifo = dir.join("fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        match read_text(&fifo) {
            Err(ConfigError::Io { source, .. }) => {
                assert!(
                    source.to_string().contains("not a regular file"),
                    "{source}"
                )
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    assert!(
        read_text(&dir).is_err(),
        "a directory is not a configuration"
    );
    std::fs::write(&file, b"listen = \"\xff\"\n").unwrap();
    assert!(matches!(read_text(&file), Err(ConfigError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of `lb.toml` syntax, valid and not, to build hostile files from.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[ring]\n".to_owned()),
            Just("[[replicas]]\n".to_owned()),
            Just("[health]\n".to_owned()),
            Just("[proxy]\n".to_owned()),
            Just("[supervisor]\n".to_owned()),
            Just("[admin]\n".to_owned()),
            Just("[log]\n".to_owned()),
            "[a-z_]{1,12} = [0-9]{1,25}\n",
            "[a-z_]{1,12} = \"[^\"\\\\\n]{0,40}\"\n",
            "(slots|virtual_nodes|id|fall|rise|interval_ms|timeout_ms|hostname|address|listen|algorithm|hash|key|probing|kind|bounded_load) = (-?[0-9]{1,22}|\"[a-zé: .-]{0,20}\"|true|1e400|nan|\\[\\]|\\{\\})\n",
            "[\\[\\]{}=\",.\n é#'a-z0-9]{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `lb check` and every reload parse arbitrary files: never a panic, and every problem
        /// points inside the file.
        #[test]
        fn parsing_never_panics(pieces in proptest::collection::vec(piece(), 0..24)) {
            let text: String = pieces.concat();
            if let Err(ConfigError::Invalid(found)) = Config::parse(&text) {
                prop_assert!(!found.is_empty());
                for p in &found {
                    prop_assert!(p.line >= 1 && p.line <= text.lines().count().max(1) + 1, "{p:?}");
                }
            }
        }

        /// Arbitrary bytes (as text) never panic either.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::parse(&text);
        }
    }
}

/// `[[replicas]]` entry text for `api-1` with `extra` lines.
fn tls_entry(address: bool, extra: &str) -> String {
    let address = if address {
        "address = \"127.0.0.1:8443\"\n"
    } else {
        ""
    };
    format!("[[replicas]]\nhostname = \"api-1\"\nid = 1\n{address}{extra}")
}

#[test]
fn tls_keys_only_on_backends_by_address_and_with_tls_on() {
    for key in [
        "tls = true",
        "server_name = \"a.test\"",
        "ca = \"ca.pem\"",
        "tls_verify = false",
    ] {
        let (line, column, message) = invalid(&tls_entry(false, &format!("{key}\n")));
        let name = key.split(' ').next().unwrap();
        assert_eq!((line, column), (4, key.find('=').unwrap() + 3), "{key}");
        assert_eq!(
            message,
            format!("{name} applies only to a backend by address (an entry with address = \"HOST:PORT\")")
        );
    }
    for key in [
        "server_name = \"a.test\"",
        "ca = \"ca.pem\"",
        "tls_verify = false",
    ] {
        let name = key.split(' ').next().unwrap();
        for tls in ["", "tls = false\n"] {
            let (line, _, message) = invalid(&tls_entry(true, &format!("{tls}{key}\n")));
            assert_eq!(line, if tls.is_empty() { 5 } else { 6 });
            assert_eq!(message, format!("{name} needs tls = true on this entry"));
        }
    }
    let (line, _, message) = invalid(&tls_entry(
        true,
        "tls = true\nserver_name = \"not a name\"\n",
    ));
    assert_eq!(line, 6);
    assert_eq!(
        message,
        "server_name \"not a name\" is not a valid DNS name or IP address"
    );
    let (line, _, message) = invalid(&tls_entry(true, "tls = true\npipelining = true\n"));
    assert_eq!(line, 5);
    assert!(
        message.starts_with("pipelining = true cannot be used with tls = true"),
        "{message}"
    );
    // Plain backends by address and tls = false are as before.
    let plain = Config::parse(&tls_entry(true, "tls = false\n")).unwrap();
    assert!(plain.replicas[0].tls_settings.is_none());
}

#[test]
fn the_ca_file_is_read_relative_to_the_file_and_its_problems_have_a_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(
        dir.path().join("certs/ca.pem"),
        params.self_signed(&key).unwrap().pem(),
    )
    .unwrap();
    let text = tls_entry(
        true,
        "tls = true\nserver_name = \"backend.test\"\nca = \"certs/ca.pem\"\n",
    );
    let config = Config::parse_file(&text, &path).unwrap();
    let tls = config.replicas[0].tls_settings.as_ref().expect("built");
    assert!(tls.verify);
    // A CA that is missing or not PEM: a problem at `ca`, naming the file and the reason.
    for (ca, why) in [
        ("certs/missing.pem", "cannot be read"),
        ("lb.toml", "holds no PEM certificate"),
    ] {
        let text = tls_entry(true, &format!("tls = true\nca = \"{ca}\"\n"));
        std::fs::write(&path, &text).unwrap();
        let problems = match Config::parse_file(&text, &path) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!((problems[0].line, problems[0].column), (6, 6));
        let message = &problems[0].message;
        assert!(message.starts_with("replica \"api-1\": ca "), "{message}");
        assert!(message.contains(ca) && message.contains(why), "{message}");
    }
    // tls_verify = false needs no roots.
    let text = tls_entry(true, "tls = true\ntls_verify = false\n");
    let config = Config::parse_file(&text, &path).unwrap();
    assert!(!config.replicas[0].tls_settings.as_ref().unwrap().verify);
}

#[test]
fn health_kinds_are_read_and_checked() {
    use super::sections::{HealthCheck, HealthKind};
    let c = Config::parse("").unwrap();
    assert_eq!(c.health.kind, HealthKind::Http);
    assert_eq!(c.health.check(true), HealthCheck::Http("/heartbeat"));

    let c = Config::parse("[health]\nkind = \"grpc\"\ngrpc_service = \"shard\"\n").unwrap();
    assert_eq!(c.health.check(true), HealthCheck::Grpc("shard"));
    // The replicas lb runs keep their contract whatever the kind.
    assert_eq!(c.health.check(false), HealthCheck::Http("/heartbeat"));
    let c = Config::parse("[health]\nkind = \"grpc\"\n").unwrap();
    assert_eq!(c.health.check(true), HealthCheck::Grpc(""));
    let c = Config::parse("[health]\nkind = \"tcp\"\npath = \"/ignored\"\n").unwrap();
    assert_eq!(c.health.check(true), HealthCheck::Tcp);

    let found = problems("[health]\nkind = \"udp\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 2);
    for kind in ["http", "grpc", "tcp"] {
        assert!(found[0].message.contains(kind), "{}", found[0].message);
    }

    let found = problems("[health]\nkind = \"tcp\"\ngrpc_service = \"shard\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 3);
    assert!(
        found[0].message.contains("only for kind = \"grpc\""),
        "{}",
        found[0].message
    );
    let found = problems("[health]\ngrpc_service = \"shard\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");

    let found = problems("[health]\nkind = \"grpc\"\ngrpc_service = \"a b\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].message.contains("health.grpc_service"));
}

#[test]
fn protocol_is_for_backends_by_address_and_agrees_with_tls() {
    // On a replica lb runs: an error at the value, whatever it is.
    for value in ["http1", "h2c", "h2"] {
        let (line, column, message) =
            invalid(&tls_entry(false, &format!("protocol = \"{value}\"\n")));
        assert_eq!((line, column), (4, 12), "{value}");
        assert_eq!(
            message,
            format!("protocol = \"{value}\" applies only to a backend by address (an entry with address = \"HOST:PORT\"); the replicas lb runs speak HTTP/1.1")
        );
    }
    let (line, _, message) = invalid(&tls_entry(true, "protocol = \"h2\"\n"));
    assert_eq!(line, 5);
    assert!(message.contains("it needs tls = true"), "{message}");
    let (line, _, message) = invalid(&tls_entry(
        true,
        "tls = true\ntls_verify = false\nprotocol = \"h2c\"\n",
    ));
    assert_eq!(line, 7);
    assert!(
        message.contains("cannot be used with tls = true"),
        "{message}"
    );
    let (line, _, message) = invalid(&tls_entry(true, "protocol = \"h2c\"\npipelining = true\n"));
    assert_eq!(line, 5);
    assert!(
        message.contains("pipelining = true cannot be used"),
        "{message}"
    );
    // Not a protocol at all: the value's position and the choices.
    let (line, _, message) = invalid(&tls_entry(true, "protocol = \"h3\"\n"));
    assert_eq!(line, 5);
    assert!(message.contains("h2c"), "{message}");

    let h2c = Config::parse(&tls_entry(true, "protocol = \"h2c\"\n")).unwrap();
    assert_eq!(h2c.replicas[0].protocol(), Protocol::H2c);
    let plain = Config::parse(&tls_entry(true, "")).unwrap();
    assert_eq!(plain.replicas[0].protocol(), Protocol::Http1);
    let h2 = Config::parse(&tls_entry(
        true,
        "tls = true\ntls_verify = false\nprotocol = \"h2\"\n",
    ))
    .unwrap();
    assert_eq!(h2.replicas[0].protocol(), Protocol::H2);
    let tls = h2.replicas[0].tls_settings.as_ref().unwrap();
    assert_eq!(tls.config.alpn_protocols, [b"h2".to_vec()]);
    // The same TLS keys under another protocol are other settings (a reload swaps them).
    let h1 = Config::parse(&tls_entry(true, "tls = true\ntls_verify = false\n")).unwrap();
    let h1_tls = h1.replicas[0].tls_settings.as_ref().unwrap();
    assert_eq!(h1_tls.config.alpn_protocols, [b"http/1.1".to_vec()]);
    assert_ne!(**tls, **h1_tls);
}

#[test]
fn weights_are_integers_from_1_to_the_max_told_with_their_place() {
    let entry =
        |weight: &str| format!("[[replicas]]\nhostname = \"A\"\nid = 1\nweight = {weight}\n");
    for bad in ["0", "-2", "1001"] {
        let (line, column, message) = invalid(&entry(bad));
        assert_eq!((line, column), (4, 10), "{bad}: {message}");
        assert!(
            message.contains("weight must be an integer from 1 to 1000"),
            "{bad}: {message}"
        );
        assert!(message.contains(bad), "{bad}: {message}");
    }
    for bad in ["1.5", "\"2\"", "true"] {
        let (line, _, message) = invalid(&entry(bad));
        assert_eq!(line, 4, "{bad}: {message}");
    }
    let config = Config::parse(&entry("7")).unwrap();
    assert_eq!(config.replica_weights(), [7]);
    let (line, _, message) = invalid(&entry("1000"));
    assert_eq!(
        line, 4,
        "the weight that overflows the default ring: {message}"
    );
    assert!(message.contains("total weight 1000"), "{message}");
    let maglev = format!(
        "[ring]\nalgorithm = \"maglev\"\nslots = 509\n{}",
        entry("1000")
    );
    assert_eq!(Config::parse(&maglev).unwrap().replica_weights(), [1000]);
    let unweighted = Config::parse("[[replicas]]\nhostname = \"A\"\nid = 1\n").unwrap();
    assert_eq!(unweighted.replica_weights(), [1]);
}

#[test]
fn the_ring_holds_k_virtual_nodes_per_unit_of_weight() {
    // K·Σw ≤ M: 4 · (1 + 3) = 16 fits 16 slots, 4 · (1 + 4) = 20 does not.
    let text = |w: u32| {
        format!(
            "[ring]\nslots = 16\nvirtual_nodes = 4\n[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"B\"\nid = 2\nweight = {w}\n"
        )
    };
    assert!(Config::parse(&text(3)).is_ok());
    let (line, _, message) = invalid(&text(4));
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("total weight 5"), "{message}");
    // Maglev and rendezvous: only N ≤ M counts.
    let maglev = "[ring]\nalgorithm = \"maglev\"\nslots = 7\n[[replicas]]\nhostname = \"A\"\nid = 1\nweight = 1000\n";
    assert!(Config::parse(maglev).is_ok());
}

#[test]
fn slow_start_is_off_by_default_and_at_most_an_hour() {
    assert_eq!(Config::parse("").unwrap().ring.slow_start(), None);
    let on = Config::parse("[ring]\nslow_start_ms = 10000\n").unwrap();
    assert_eq!(
        on.ring.slow_start(),
        Some(std::time::Duration::from_secs(10))
    );
    let (line, column, message) = invalid("[ring]\nslow_start_ms = 3600001\n");
    assert_eq!((line, column), (2, 17), "{message}");
    assert!(
        message.contains("at most") || message.contains("to 3600000"),
        "{message}"
    );
    let (line, _, _) = invalid("[ring]\nslow_start_ms = -5\n");
    assert_eq!(line, 2);
}

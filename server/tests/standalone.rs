//! The standalone `server` binary: hostname from the environment, port from a flag.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn serves_home_heartbeat_and_404() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env("SERVER_ID", "S5")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            http_get(port, "/home"),
            (
                200,
                r#"{"message": "Hello from Server: S5", "status": "successful"}"#.to_owned()
            )
        );
        assert_eq!(http_get(port, "/heartbeat"), (200, String::new()));
        assert_eq!(http_get(port, "/nope").0, 404);
    });
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}

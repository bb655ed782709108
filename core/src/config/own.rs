//! Whether a backend's address is `lb` itself: one of its own listening addresses (the traffic
//! listener or `[admin] listen`), however it is written. A backend there would send every
//! request it gets back into `lb`, which would pick it again: a request loop.
//!
//! An address reaches a listener when its port is the listener's and its host is
//!
//! - the listener's own IP, also written as an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`);
//! - `0.0.0.0` or `::` (connecting there reaches the loopback address of its family);
//! - `localhost` or a name under `.localhost` (loopback by definition, RFC 6761);
//! - for a listener on a wildcard address (`0.0.0.0`, `::`): any loopback address, or any
//!   address of this machine's interfaces (asked of the caller's `is_local`).
//!
//! Other names are resolved where a backend joins the ring (`control/launch.rs`), and the
//! address they resolve to is judged the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first of `listening` that `address` (`HOST:PORT`) reaches, if any. `is_local` says
/// whether an IP belongs to one of this machine's interfaces ([`on_this_machine`], or a fixed
/// answer in a test or where only the file is known).
pub(crate) fn reached_listener(
    address: &str,
    listening: &[SocketAddr],
    is_local: &dyn Fn(IpAddr) -> bool,
) -> Option<SocketAddr> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let candidates: [Option<IpAddr>; 2] = match host.parse::<IpAddr>() {
        Ok(ip) => [Some(connects_to(ip)), None],
        Err(_) if is_localhost(host) => [
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ],
        Err(_) => return None,
    };
    listening.iter().copied().find(|listener| {
        listener.port() == port
            && candidates
                .iter()
                .flatten()
                .any(|&ip| reaches(ip, listener.ip(), is_local))
    })
}

/// Whether a connection to `ip` (already as [`connects_to`] gives it) is accepted by a listener
/// bound to `bound`.
fn reaches(ip: IpAddr, bound: IpAddr, is_local: &dyn Fn(IpAddr) -> bool) -> bool {
    let bound = bound.to_canonical();
    if bound.is_unspecified() {
        ip.is_loopback() || is_local(ip)
    } else {
        ip == bound
    }
}

/// The address a connection to `ip` goes to: IPv4-mapped IPv6 addresses as IPv4, and the
/// unspecified address as the loopback address of its family (what Linux does on `connect`).
fn connects_to(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// `localhost`, or a name under it (RFC 6761 §6.3), in any case, with or without the final dot.
fn is_localhost(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether `ip` is an address of one of this machine's interfaces: binding a UDP socket to it
/// succeeds only then (no packet is sent). A system that allows binding foreign addresses
/// (`net.ipv4.ip_nonlocal_bind`) makes every address look local.
pub(crate) fn on_this_machine(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn every_spelling_of_a_loopback_listener_is_found() {
        let lb: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for address in [
            "127.0.0.1:5000",
            "localhost:5000",
            "LocalHost.:5000",
            "api.localhost:5000",
            "0.0.0.0:5000",
            "[::ffff:127.0.0.1]:5000",
            "[::ffff:0.0.0.0]:5000",
        ] {
            assert_eq!(
                reached_listener(address, &[lb], &none),
                Some(lb),
                "{address}"
            );
        }
        for address in [
            "127.0.0.1:5001",
            "127.0.0.2:5000",
            "10.0.0.5:5000",
            "[::1]:5000",
            "[::]:5000",
            "api:5000",
            "localhost:x",
            "no-port",
            "localhostx:5000",
        ] {
            assert_eq!(reached_listener(address, &[lb], &none), None, "{address}");
        }
    }

    #[test]
    fn a_wildcard_listener_is_every_local_address() {
        let any: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let here = |ip: IpAddr| ip == "10.0.0.5".parse::<IpAddr>().unwrap();
        for address in [
            "127.0.0.1:5000",
            "127.0.0.9:5000",
            "[::1]:5000",
            "[::]:5000",
            "0.0.0.0:5000",
            "localhost:5000",
            "10.0.0.5:5000",
            "[::ffff:10.0.0.5]:5000",
        ] {
            assert_eq!(
                reached_listener(address, &[any], &here),
                Some(any),
                "{address}"
            );
        }
        for address in ["10.0.0.6:5000", "10.0.0.5:5001", "[2001:db8::1]:5000"] {
            assert_eq!(reached_listener(address, &[any], &here), None, "{address}");
        }
        let v6: SocketAddr = "[::]:7000".parse().unwrap();
        assert_eq!(reached_listener("127.0.0.1:7000", &[v6], &none), Some(v6));
    }

    #[test]
    fn the_admin_listener_counts_too() {
        let traffic: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(
            reached_listener("localhost:5001", &[traffic, admin], &none),
            Some(admin)
        );
        assert_eq!(
            reached_listener("localhost:5002", &[traffic, admin], &none),
            None
        );
    }

    #[test]
    fn loopback_is_on_this_machine() {
        assert!(on_this_machine(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // TEST-NET-3 (RFC 5737) is never assigned to an interface.
        assert!(!on_this_machine("203.0.113.7".parse().unwrap()));
    }
}

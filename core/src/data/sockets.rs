//! Listening sockets: bound with `SO_REUSEPORT`, one per worker on the same address, and the
//! sets of them a listener is made of ([`Bound`]), which a worker takes its own from and which
//! a listener move replaces whole.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections each listening socket queues.
const BACKLOG: i32 = 4096;

/// A listener that could not be bound. (The OS error is kept but not chained as a source, so
/// the message says it once.)
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {}", describe(error))]
pub(crate) struct ListenError {
    /// The address.
    pub(crate) addr: SocketAddr,
    /// What the OS said.
    pub(crate) error: std::io::Error,
}

/// An OS error in the words of a one-line message (no error number).
fn describe(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::AddrInUse => "address already in use".into(),
        ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

/// Fail if anything already listens on `addr`. The workers' sockets share their port with
/// `SO_REUSEPORT`, which would let a second `lb` (same user) bind beside the first and take half
/// its connections; a socket without it is refused while any other is bound there.
fn check_free(addr: SocketAddr) -> Result<(), ListenError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let err = |error| ListenError { addr, error };
    let probe =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    probe.set_reuse_address(true).map_err(err)?;
    probe.bind(&addr.into()).map_err(err)?;
    Ok(())
}

/// `count` listening sockets on `addr`, all bound to the same port (the first one's, when `addr`
/// asks for port 0).
pub(crate) fn listen(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, ListenError> {
    check_free(addr)?;
    reuse_port(addr, count)
}

/// `count` sockets on `addr` with `SO_REUSEPORT`, without checking that nothing else listens
/// there (for more sockets beside this process' own).
fn reuse_port(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, ListenError> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let err = |error| ListenError { addr: bound, error };
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&bound.into()).map_err(err)?;
        socket.listen(BACKLOG).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr().map_err(err)?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// One listener's sockets: one per traffic worker on one address (or one, for the admin
/// address), bound before any worker uses them.
#[derive(Debug)]
pub(crate) struct Bound {
    /// The address asked for (in the file; port 0: any).
    pub(crate) requested: SocketAddr,
    /// The address bound.
    pub(crate) local: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

impl Bound {
    /// `count` sockets on `addr` ([`listen`]).
    pub(crate) fn bind(addr: SocketAddr, count: usize) -> Result<Bound, ListenError> {
        let sockets = listen(addr, count)?;
        let local = sockets[0]
            .local_addr()
            .map_err(|error| ListenError { addr, error })?;
        Ok(Bound {
            requested: addr,
            local,
            sockets,
        })
    }

    /// This set with more sockets, up to `count`, on its address (its port, when port 0 was
    /// asked for): the same sockets first (new descriptors of them), then new ones beside them.
    pub(crate) fn grown(&self, count: usize) -> Result<Bound, ListenError> {
        let err = |error| ListenError {
            addr: self.local,
            error,
        };
        let mut sockets = self
            .sockets
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(err)?;
        if count > sockets.len() {
            sockets.extend(reuse_port(self.local, count - sockets.len())?);
        }
        Ok(Bound {
            requested: self.requested,
            local: self.local,
            sockets,
        })
    }

    /// How many sockets (workers) it has.
    pub(crate) fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Worker `index`'s socket (a descriptor of its own on the same socket).
    pub(crate) fn socket(&self, index: usize) -> std::io::Result<std::net::TcpListener> {
        self.sockets[index % self.sockets.len()].try_clone()
    }
}

impl Bound {
    /// The descriptors of its sockets, to hand to a new `lb` (an upgrade).
    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.sockets.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// A set of sockets an earlier `lb` handed over: `fds`, each listening on `local`. The
    /// sockets are the same (never closed in between): connections queued on them wait for
    /// whichever process accepts first.
    pub(crate) fn adopt(
        requested: SocketAddr,
        local: SocketAddr,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Bound, ListenError> {
        let err = |error| ListenError {
            addr: requested,
            error,
        };
        if fds.is_empty() {
            return Err(err(std::io::Error::other("no socket handed over")));
        }
        let mut sockets = Vec::with_capacity(fds.len());
        for fd in fds {
            let socket = Socket::from(fd);
            let listening = socket.is_listener().map_err(err)?;
            let at = socket.local_addr().map_err(err)?.as_socket();
            if !listening || at != Some(local) {
                return Err(err(std::io::Error::other(format!(
                    "a handed-over descriptor is not a socket listening on {local}"
                ))));
            }
            socket.set_nonblocking(true).map_err(err)?;
            sockets.push(socket.into());
        }
        Ok(Bound {
            requested,
            local,
            sockets,
        })
    }
}

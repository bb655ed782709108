//! A load-balancer replica (SPEC §1).
//!
//! - `GET /home` → 200, `{"message": "Hello from Server: <ID>", "status": "successful"}`
//! - `GET /heartbeat` → 200 with an empty body
//! - anything else → 404
//!
//! The crate is both the `server` binary and a library: the `lb` binary re-executes itself as a
//! replica through [`run`], so a single binary is enough for the local-process deployment. The
//! bodies are [`lb_views::Reply`]s, in the byte format of Python's `json.dumps`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lb_views::Reply;
use tokio::net::TcpListener;

/// The exact `/home` body for a replica called `hostname`.
pub fn home_body(hostname: &str) -> Bytes {
    let message = format!("Hello from Server: {hostname}");
    Bytes::from(Reply::successful(message.as_str()).to_vec())
}

/// Answers requests for one replica. Cheap to clone (the `/home` body is shared).
#[derive(Clone, Debug)]
pub struct Replica {
    home: Bytes,
}

impl Replica {
    /// A replica that introduces itself as `hostname`.
    pub fn new(hostname: &str) -> Self {
        Replica {
            home: home_body(hostname),
        }
    }

    /// Route one request.
    pub fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let get = method == Method::GET || method == Method::HEAD;
        match path {
            "/home" | "/heartbeat" if !get => {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                resp
            }
            "/home" => json_response(StatusCode::OK, self.home.clone()),
            "/heartbeat" => Response::new(Full::new(Bytes::new())),
            _ => {
                let message = format!("<Error> '{path}' endpoint does not exist");
                let body = Reply::failure(message.as_str()).to_vec();
                json_response(StatusCode::NOT_FOUND, Bytes::from(body))
            }
        }
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Serve `replica` on `listener` (HTTP/1.1, keep-alive) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    replica: Replica,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let replica = replica.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = replica.respond(req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            // Pipelined requests (a load balancer batching them) get their responses in one
            // write instead of one each.
            let _ = hyper::server::conn::http1::Builder::new()
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The machine's hostname (what a container's replica reports when no ID is given).
pub fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Command-line options of a replica, shared by the `server` binary and `lb replica`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The replica's ID, shown in `/home` (default: the machine's hostname).
    #[arg(long, env = "SERVER_ID")]
    pub hostname: Option<String>,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// Serve on an already-bound listening socket inherited as this file descriptor (used by
    /// `lb`'s process supervisor, so no port can be taken in between).
    #[arg(long, hide = true)]
    pub listen_fd: Option<RawFd>,
}

/// Run a replica until SIGTERM or Ctrl-C, on a single-threaded runtime.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let hostname = args
        .hostname
        .or_else(system_hostname)
        .ok_or_else(|| anyhow::anyhow!("no --hostname/SERVER_ID given and no system hostname"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = match args.listen_fd {
            Some(fd) => {
                // SAFETY: the parent passed us this descriptor as a bound, listening TCP socket that
                // nothing else in this process owns.
                // The process supervisor's counterpart: the one `unsafe` outside it and the plugins.
                #[allow(unsafe_code)]
                let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                std_listener.set_nonblocking(true)?;
                TcpListener::from_std(std_listener)?
            }
            None => TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?,
        };
        eprintln!(
            "replica {hostname:?} listening on {}",
            listener.local_addr()?
        );
        serve(listener, Replica::new(&hostname), shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(resp: Response<Full<Bytes>>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn home_is_byte_exact() {
        let r = Replica::new("Server 1");
        let resp = r.respond(&Method::GET, "/home");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            body_of(resp).await,
            r#"{"message": "Hello from Server: Server 1", "status": "successful"}"#
        );
    }

    #[tokio::test]
    async fn heartbeat_is_empty_and_other_paths_404() {
        let r = Replica::new("S5");
        let hb = r.respond(&Method::GET, "/heartbeat");
        assert_eq!(hb.status(), StatusCode::OK);
        assert_eq!(body_of(hb).await, "");
        let nf = r.respond(&Method::GET, "/other");
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        assert!(body_of(nf).await.contains("'/other'"));
        assert_eq!(
            r.respond(&Method::POST, "/home").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}

//! A unix socket in front of the Docker engine's, for tests of an engine that stops answering:
//! `lb` is pointed at it with `DOCKER_HOST`, and the test decides what passes.

/// What a fake engine socket does with the traffic between `lb` and the real engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Everything passes.
    Answers,
    /// Requests reach the engine (and are carried out), answers are held back.
    Late,
    /// Nothing passes: requests are held back, nothing is answered.
    Silent,
}

/// A unix socket in front of the engine's, whose traffic the test can hold back
/// ([`Engine`]); `lb` is pointed at it with `DOCKER_HOST`.
pub struct EngineProxy {
    path: std::path::PathBuf,
    mode: tokio::sync::watch::Sender<Engine>,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl EngineProxy {
    /// Listen on a socket of its own, passing everything on at first.
    pub fn start() -> EngineProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (mode, watching) = tokio::sync::watch::channel(Engine::Answers);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    let (from_client, to_client) = client.into_split();
                    let (from_engine, to_engine) = engine.into_split();
                    let requests =
                        tokio::spawn(pipe(from_client, to_engine, watching.clone(), false));
                    pipe(from_engine, to_client, watching, true).await;
                    requests.abort();
                });
            }
        });
        EngineProxy {
            path,
            mode,
            accept,
            _dir: dir,
        }
    }

    /// `DOCKER_HOST` for it.
    pub fn host(&self) -> std::ffi::OsString {
        format!("unix://{}", self.path.display()).into()
    }

    /// What to let through from now on.
    pub fn set(&self, mode: Engine) {
        self.mode.send_replace(mode);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copy `from` to `to` as `mode` says. Requests (`answers` false) read while the engine is
/// silent never reach it: the connection is closed once it speaks again (like a request lost
/// on the way). Answers read while they are held back are delivered when they may pass.
async fn pipe(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<Engine>,
    answers: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *mode.borrow_and_update();
        if !answers && now == Engine::Silent {
            let _ = mode.wait_for(|m| *m != Engine::Silent).await;
            return;
        }
        if answers
            && now != Engine::Answers
            && mode.wait_for(|m| *m == Engine::Answers).await.is_err()
        {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

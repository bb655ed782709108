//! Binary upgrades from a test: SIGUSR2 to the `lb` serving now, the next generation awaited,
//! and the `lb` an upgrade started (not the test's child) ended with the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{alive, eventually, signal, Lb};

/// `/_lb/status` where `lb` serves it (its admin address, if it has one).
pub async fn status(lb: &Lb) -> serde_json::Value {
    let answer = lb
        .send_to(lb.admin.unwrap_or(lb.addr), "GET", "/_lb/status", b"", &[])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

/// The `lb` serving now, as `/_lb/status` names it: (pid, generation).
pub async fn serving(lb: &Lb) -> (u32, u64) {
    let status = status(lb).await;
    let process = &status["process"];
    (
        process["pid"].as_u64().expect("status.process.pid") as u32,
        process["generation"]
            .as_u64()
            .expect("status.process.generation"),
    )
}

/// Ends the `lb` the last upgrade started when dropped (SIGTERM, SIGKILL after 10 s), however
/// the test ends.
#[derive(Default)]
pub struct Successor(Arc<Mutex<Option<u32>>>);

impl Successor {
    /// The `lb` it will end, taken out (the test ends it itself).
    pub fn take(&self) -> Option<u32> {
        self.0.lock().unwrap().take()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(pid) = self.take() {
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// SIGUSR2 to the `lb` serving now; waits for the next generation to serve and the old one
/// to exit; `successor` ends the new one with the test. The new (pid, generation).
pub async fn upgrade(lb: &Lb, successor: &Successor) -> (u32, u64) {
    let (old, generation) = serving(lb).await;
    signal(old, libc::SIGUSR2);
    let new = eventually(Duration::from_secs(40), "the next generation", || async {
        let (pid, now) = serving(lb).await;
        (now == generation + 1).then_some((pid, now))
    })
    .await;
    assert_ne!(new.0, old, "the same process after an upgrade");
    *successor.0.lock().unwrap() = Some(new.0);
    eventually(Duration::from_secs(30), "the old lb to exit", || async {
        (!alive(old)).then_some(())
    })
    .await;
    new
}

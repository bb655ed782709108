//! What a real `lb` writes to `/_lb/status`, `/_lb/ring` and `/rep` is what `lb_views` declares:
//! each body reads into its view (as the analysis reads it) and writes back byte for byte.

mod common;

use common::{Lb, THREE};
use lb_views::{Replicas, RingTable, Status};

/// `body` read as a `T` and written again (compact, as `lb` writes the `/_lb/` views).
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(body: &str) -> (T, String) {
    let view: T = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let again = serde_json::to_string(&view).unwrap();
    (view, again)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_views_are_what_lb_writes() {
    let lb = Lb::start(THREE);
    let status = lb.get("/_lb/status").await;
    assert_eq!(status.status, 200);
    let (view, again) = round_trip::<Status>(&status.body);
    assert_eq!(again, status.body);
    assert_eq!(view.n, 3);
    assert_eq!(view.id_of("Server 2"), Some(2));
    assert!(view.replicas.iter().all(|r| r.handle.pid.is_some()));
    assert!(view.via.is_some_and(|v| v.starts_with("1.1 lb-")));
    for path in ["/_lb/ring", "/_lb/ring?from=2&count=3"] {
        let ring = lb.get(path).await;
        assert_eq!(ring.status, 200, "{path}");
        let (table, again) = round_trip::<RingTable>(&ring.body);
        assert_eq!(again, ring.body, "{path}");
        assert_eq!(table.replicas.len(), 3, "{path}");
        assert_eq!(table.hash, view.ring.hash, "{path}");
    }
    let rep = lb.get("/rep").await;
    let replicas = Replicas::parse(&rep.body).expect("a replica set");
    assert_eq!(replicas.n, 3);
    assert_eq!(replicas.replicas, ["Server 1", "Server 2", "Server 3"]);
}

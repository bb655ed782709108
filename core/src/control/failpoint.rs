//! Fault injection for tests: `LB_FAILPOINTS=name,name` makes the named points panic, in debug
//! builds only (release builds compile every point to nothing). The tests use it to show that a
//! panic in the control plane is caught and the load balancer keeps working.

/// Panic here when `name` is listed in `LB_FAILPOINTS` (debug builds only).
#[inline]
pub(crate) fn hit(name: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static POINTS: OnceLock<Vec<String>> = OnceLock::new();
        let points = POINTS.get_or_init(|| {
            std::env::var("LB_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        });
        if points.iter().any(|p| p == name) {
            panic!("failpoint {name} (LB_FAILPOINTS)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

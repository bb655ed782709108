use super::*;

use bytes::Bytes;

use crate::data::body::ProxyBody;

const HEAD: Duration = Duration::from_millis(400);
const IDLE: Duration = Duration::from_millis(2000);
/// Longer than the others in most tests, so that theirs are the ones seen.
const SEND: Duration = Duration::from_millis(3000);

fn watchdog() -> (Arc<Activity>, Watchdog, Instant) {
    watchdog_sending(SEND)
}

fn watchdog_sending(send: Duration) -> (Arc<Activity>, Watchdog, Instant) {
    let activity = Arc::new(Activity::default());
    let start = Instant::now();
    let dog = Watchdog::new(Arc::clone(&activity), HEAD, IDLE, send, start);
    (activity, dog, start)
}

/// Look every period from `from` (exclusive) to `to` (inclusive); the first verdict that is
/// not [`Verdict::Fine`], and when.
fn run(dog: &mut Watchdog, from: Instant, to: Instant) -> Option<(Verdict, Duration)> {
    let mut at = from;
    while at < to {
        at += dog.period();
        match dog.check(at) {
            Verdict::Fine => {}
            v => return Some((v, at - from)),
        }
    }
    None
}

#[test]
fn the_period_is_a_quarter_of_the_shorter_timeout() {
    let (_, dog, _) = watchdog();
    assert_eq!(dog.period(), Duration::from_millis(100));
    let dog = Watchdog::new(
        Arc::default(),
        Duration::from_millis(1),
        Duration::from_millis(1),
        Duration::from_millis(1),
        Instant::now(),
    );
    assert_eq!(dog.period(), Duration::from_millis(1));
    let (_, dog, _) = watchdog_sending(Duration::from_millis(200));
    assert_eq!(
        dog.period(),
        Duration::from_millis(50),
        "the send timeout counts"
    );
}

#[test]
fn a_new_connection_that_says_nothing_is_closed_after_the_header_timeout() {
    let (_, mut dog, start) = watchdog();
    let (verdict, after) = run(&mut dog, start, start + IDLE).unwrap();
    assert_eq!(verdict, Verdict::Close);
    assert_eq!(after, HEAD);
}

#[test]
fn a_head_that_never_ends_is_answered_408() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    let (verdict, after) = run(&mut dog, start, start + IDLE).unwrap();
    assert_eq!(verdict, Verdict::RequestTimeout);
    assert_eq!(after, HEAD, "counted from the accept");
}

#[test]
fn a_head_trickled_byte_by_byte_is_answered_408() {
    let (activity, mut dog, start) = watchdog();
    let mut at = start;
    let verdict = loop {
        bump(&activity.reads);
        at += dog.period();
        match dog.check(at) {
            Verdict::Fine => assert!(at - start < IDLE, "never cut"),
            v => break v,
        }
    };
    assert_eq!(verdict, Verdict::RequestTimeout);
    assert_eq!(at - start, HEAD);
}

#[test]
fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    let busy = activity.begin();
    assert_eq!(dog.check(start + dog.period()), Verdict::Fine);
    bump(&activity.writes);
    drop(busy);
    let done = start + dog.period() * 2;
    assert_eq!(dog.check(done), Verdict::Fine);
    let (verdict, after) = run(&mut dog, done, done + IDLE * 2).unwrap();
    assert_eq!(verdict, Verdict::Close);
    assert_eq!(after, IDLE);
}

#[test]
fn a_request_that_came_and_went_between_looks_restarts_the_clock() {
    let (activity, mut dog, start) = watchdog();
    let almost = start + HEAD - dog.period();
    assert_eq!(dog.check(almost), Verdict::Fine);
    bump(&activity.reads);
    drop(activity.begin());
    let (verdict, after) = run(&mut dog, almost, almost + IDLE * 2).unwrap();
    assert_eq!(verdict, Verdict::Close);
    assert_eq!(after, IDLE + dog.period());
}

#[test]
fn the_next_head_after_an_idle_spell_gets_the_header_timeout() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    drop(activity.begin());
    let mut at = start + dog.period();
    assert_eq!(dog.check(at), Verdict::Fine);
    at += IDLE / 2;
    assert_eq!(dog.check(at), Verdict::Fine);
    bump(&activity.reads);
    let (verdict, after) = run(&mut dog, at, at + IDLE).unwrap();
    assert_eq!(verdict, Verdict::RequestTimeout);
    assert_eq!(after, HEAD + dog.period());
}

#[test]
fn a_request_in_progress_is_never_cut() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    let busy = activity.begin();
    assert_eq!(run(&mut dog, start, start + IDLE * 3), None);
    drop(busy);
}

#[test]
fn a_response_the_client_takes_slowly_is_not_cut() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    drop(activity.begin());
    let mut at = start;
    while at < start + IDLE * 3 {
        bump(&activity.writes);
        at += dog.period();
        assert_eq!(dog.check(at), Verdict::Fine);
    }
    // Once the client stops taking it: closed, without an answer on top of the output
    // hyper still holds.
    activity.write_blocked.store(true, Ordering::Relaxed);
    let (verdict, _) = run(&mut dog, at, at + IDLE * 2).unwrap();
    assert_eq!(verdict, Verdict::Close);
}

#[test]
fn a_response_the_client_stops_taking_is_cut_after_the_send_timeout() {
    let send = Duration::from_millis(800);
    let (activity, mut dog, start) = watchdog_sending(send);
    bump(&activity.reads);
    let busy = activity.begin();
    // The replica takes its time: nothing waits for the client, nothing is cut.
    let mut at = start;
    while at < start + send * 3 {
        at += dog.period();
        assert_eq!(dog.check(at), Verdict::Fine);
    }
    // The response streams, then the client stops reading.
    bump(&activity.writes);
    activity.write_blocked.store(true, Ordering::Relaxed);
    at += dog.period();
    assert_eq!(dog.check(at), Verdict::Fine);
    let (verdict, after) = run(&mut dog, at, at + IDLE * 2).unwrap();
    assert_eq!(verdict, Verdict::SendTimeout);
    assert_eq!(after, send);
    drop(busy);
}

#[test]
fn a_client_reading_slowly_but_steadily_is_never_cut() {
    let send = Duration::from_millis(800);
    let (activity, mut dog, start) = watchdog_sending(send);
    bump(&activity.reads);
    let busy = activity.begin();
    let mut at = start;
    let mut looks = 0;
    while at < start + send * 10 {
        // The socket is full between looks, and takes a little every now and then (less
        // often than the watchdog looks).
        activity.write_blocked.store(true, Ordering::Relaxed);
        if looks % 3 == 0 {
            bump(&activity.writes);
        }
        looks += 1;
        at += dog.period();
        assert_eq!(dog.check(at), Verdict::Fine, "cut after {:?}", at - start);
    }
    drop(busy);
    // Its response done but still held by hyper for it: the same rule.
    let (verdict, after) = run(&mut dog, at, at + IDLE * 2).unwrap();
    assert_eq!(verdict, Verdict::SendTimeout);
    assert!(after <= send + dog.period(), "{after:?}");
}

#[test]
fn a_stalled_head_behind_unsent_output_is_closed_without_an_answer() {
    let (activity, mut dog, start) = watchdog();
    bump(&activity.reads);
    activity.write_blocked.store(true, Ordering::Relaxed);
    let (verdict, _) = run(&mut dog, start, start + IDLE).unwrap();
    assert_eq!(verdict, Verdict::Close);
}

#[test]
fn tracked_bodies_keep_their_request_in_progress() {
    use http_body::Body as _;
    let activity = Arc::new(Activity::default());
    let body = ProxyBody::full(Bytes::from_static(b"abc")).tracked(activity.begin(), ());
    assert_eq!(body.size_hint().exact(), Some(3));
    assert_eq!(activity.open.load(Ordering::Relaxed), 1);
    bump(&activity.reads);
    drop(body);
    assert_eq!(activity.open.load(Ordering::Relaxed), 0);
    assert_eq!(activity.reads_at_rest.load(Ordering::Relaxed), 1);
}

#[test]
fn the_408_is_whole_and_closes() {
    let answer = String::from_utf8(request_timeout_answer(HEAD)).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    assert_eq!(
        body,
        r#"{"message": "<Error> the request head did not arrive whole within 400 ms", "status": "failure"}"#
    );
}

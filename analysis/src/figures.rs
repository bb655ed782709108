//! The report's charts, made from the [`Results`].

use std::path::Path;

use serde::Serialize;

use crate::charts::{self, Bars, Line, Lines, Panel};
use crate::data::Results;
use crate::error::Result;
use crate::experiments::a3::slowloris;
use crate::experiments::a3::{Bin, PhaseOutcome, BIN};
use crate::experiments::a5::A5;
use crate::experiments::a6::{Ramp, A6};
use crate::experiments::Measurement;

/// The chart files (PNG, SVG) of each figure that was drawn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// requests per replica.
    pub a1: Option<[String; 2]>,
    /// load per replica against N.
    pub a2_load: Option<[String; 2]>,
    /// spread against N.
    pub a2_spread: Option<[String; 2]>,
    /// requests per second around the kill.
    pub a3_timeline: Option<[String; 2]>,
    /// requests per second around the hang.
    pub a3_hang: Option<[String; 2]>,
    /// slow-loris connections open, and the normal clients' requests per second.
    pub a3_slowloris: Option<[String; 2]>,
    /// A-1 per hash.
    pub a4_a1: Option<[String; 2]>,
    /// A-2 spread per hash.
    pub a4_a2: Option<[String; 2]>,
    /// the offline part.
    pub a4_offline: Option<[String; 2]>,
    /// max/avg share against N per algorithm.
    pub a5_balance: Option<[String; 2]>,
    /// keys moved on removal (and addition) against N per algorithm.
    pub a5_moves: Option<[String; 2]>,
    /// the hot key's busiest replica.
    pub a5_hot_key: Option<[String; 2]>,
    /// weighted shares' largest error against N per setup.
    pub a6_shares: Option<[String; 2]>,
    /// keys a weight change moves over the minimum, against N per setup.
    pub a6_weight_change: Option<[String; 2]>,
    /// the ramping replica's share and requests per second over time.
    pub a6_ramp: Option<[String; 2]>,
}

fn a1_bars(m: &Measurement, title: String) -> Bars {
    let fair = m.served() as f64 / m.n.max(1) as f64;
    Bars {
        title,
        y_desc: "requests served".into(),
        groups: m.replicas.iter().map(|r| r.hostname.clone()).collect(),
        series: vec!["requests".into()],
        values: m.replicas.iter().map(|r| vec![r.requests as f64]).collect(),
        reference: Some((fair, format!("fair share: {fair:.0} (= 200s / N)"))),
        value_labels: true,
    }
}

fn line(name: &str, points: Vec<(f64, f64)>, colour: Option<usize>, dashed: bool) -> Line {
    Line {
        name: name.into(),
        points,
        dashed,
        colour,
    }
}

fn per_n(points: &[Measurement], value: impl Fn(&Measurement) -> Option<f64>) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter_map(|m| Some((m.n as f64, value(m)?)))
        .collect()
}

/// 200s and failures per second, from a timeline in [`BIN`] bins, against seconds.
fn rate_lines(timeline: &[Bin]) -> Vec<Line> {
    let scale = 1000.0 / BIN.as_millis() as f64;
    let centre = |start: u64| (start as f64 + BIN.as_millis() as f64 / 2.0) / 1000.0;
    vec![
        line(
            "200 OK",
            timeline
                .iter()
                .map(|b| (centre(b.start_ms), b.ok as f64 * scale))
                .collect(),
            Some(2),
            false,
        ),
        line(
            "failed",
            timeline
                .iter()
                .map(|b| (centre(b.start_ms), b.failed as f64 * scale))
                .collect(),
            Some(3),
            false,
        ),
    ]
}

/// The hang and slow-loris figures of A-3.
fn a3_fault_figures(dir: &Path, results: &Results, figures: &mut Figures) -> Result<()> {
    let Some(a3) = &results.a3 else {
        return Ok(());
    };
    if let PhaseOutcome::Done(h) = &a3.hang {
        let mut markers = vec![(h.stopped_ms / 1000.0, format!("SIGSTOP {}", h.victim))];
        if let Some(t) = h.left_ring_after_ms {
            markers.push(((h.stopped_ms + t) / 1000.0, format!("left /rep +{t:.0} ms")));
        }
        markers.push((
            (h.stopped_ms + h.stopped_for_ms) / 1000.0,
            format!("SIGCONT +{:.1} s", h.stopped_for_ms / 1000.0),
        ));
        let timeline = Lines {
            title: format!(
                "A-3: {} clients' requests per second while {} is stopped",
                h.clients, h.victim
            ),
            x_desc: "time since traffic started (s)".into(),
            y_desc: "requests per second".into(),
            lines: rate_lines(&h.timeline),
            integer_x: false,
            markers,
            y_min: 0.0,
            log_x: false,
        };
        figures.a3_hang = Some(charts::render(
            dir,
            "a3_hang_timeline",
            (1100, 560),
            1,
            &[Panel::Lines(timeline)],
        )?);
    }
    if let Some(s) = a3.slowloris.as_ref().filter(|s| s.opened > 0) {
        let seconds = |points: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
            points.into_iter().map(|(t, v)| (t / 1000.0, v)).collect()
        };
        let mut markers = Vec::new();
        if let Some(t) = s.header_timeout_ms {
            markers.push((
                (s.attack_started_ms + t as f64) / 1000.0,
                format!("header timeout {t} ms"),
            ));
        }
        let open = Lines {
            title: format!(
                "A-3: slow-loris connections still open ({} opened)",
                s.opened
            ),
            x_desc: "time since traffic started (s)".into(),
            y_desc: "connections open".into(),
            lines: vec![line(
                "slow-loris connections open",
                seconds(slowloris::open_over_time(s)),
                Some(4),
                false,
            )],
            integer_x: false,
            markers: markers.clone(),
            y_min: 0.0,
            log_x: false,
        };
        let traffic = Lines {
            title: format!(
                "A-3: {} normal clients' requests per second meanwhile",
                s.clients
            ),
            x_desc: "time since traffic started (s)".into(),
            y_desc: "requests per second".into(),
            lines: rate_lines(&s.timeline),
            integer_x: false,
            markers,
            y_min: 0.0,
            log_x: false,
        };
        figures.a3_slowloris = Some(charts::render(
            dir,
            "a3_slowloris",
            (760, 520),
            2,
            &[Panel::Lines(open), Panel::Lines(traffic)],
        )?);
    }
    Ok(())
}

/// Draw every figure the results allow into `dir`.
pub fn draw(dir: &Path, results: &Results) -> Result<Figures> {
    let mut figures = Figures::default();
    if let Some(m) = &results.a1 {
        let title = format!("A-1: {} requests, N = {}, hash {}", m.sent, m.n, m.hash);
        figures.a1 = Some(charts::render(
            dir,
            "a1_requests_per_replica",
            (900, 560),
            1,
            &[Panel::Bars(a1_bars(m, title))],
        )?);
    }
    if let Some(a2) = &results.a2 {
        let p = &a2.points;
        let load = Lines {
            title: format!(
                "A-2: load per replica, {} requests per N, hash {}",
                results.settings.requests, a2.hash
            ),
            x_desc: "N (replicas)".into(),
            y_desc: "requests per replica".into(),
            lines: vec![
                line(
                    "busiest replica",
                    per_n(p, |m| m.spread.map(|s| s.max)),
                    Some(3),
                    false,
                ),
                line(
                    "average (= requests / N)",
                    per_n(p, |m| m.spread.map(|s| s.avg)),
                    Some(0),
                    false,
                ),
                line(
                    "least busy replica",
                    per_n(p, |m| m.spread.map(|s| s.min)),
                    Some(2),
                    false,
                ),
            ],
            integer_x: true,
            markers: Vec::new(),
            y_min: 0.0,
            log_x: false,
        };
        figures.a2_load = Some(charts::render(
            dir,
            "a2_load_per_replica",
            (900, 560),
            1,
            &[Panel::Lines(load)],
        )?);
        let spread = Lines {
            title: format!("A-2: spread of the load, hash {}", a2.hash),
            x_desc: "N (replicas)".into(),
            y_desc: "max / avg, coefficient of variation".into(),
            lines: vec![
                line(
                    "max / avg",
                    per_n(p, |m| m.spread.map(|s| s.max_over_avg)),
                    Some(3),
                    false,
                ),
                line(
                    "coefficient of variation",
                    per_n(p, |m| m.spread.map(|s| s.cv)),
                    Some(4),
                    false,
                ),
                line(
                    "max / avg if one replica got all (= N)",
                    per_n(p, |m| Some(m.n as f64)),
                    None,
                    true,
                ),
            ],
            integer_x: true,
            markers: Vec::new(),
            y_min: 0.0,
            log_x: false,
        };
        figures.a2_spread = Some(charts::render(
            dir,
            "a2_spread",
            (900, 560),
            1,
            &[Panel::Lines(spread)],
        )?);
    }
    if let Some(PhaseOutcome::Done(k)) = results.a3.as_ref().map(|a| &a.kill) {
        let mut markers = vec![(k.killed_ms / 1000.0, format!("SIGKILL {}", k.victim))];
        if let Some(t) = k.left_ring_after_ms {
            markers.push(((k.killed_ms + t) / 1000.0, format!("left ring +{t:.0} ms")));
        }
        if let Some(t) = k.recovered_after_ms {
            markers.push((
                (k.killed_ms + t) / 1000.0,
                format!("N = {} again +{t:.0} ms", k.n),
            ));
        }
        let timeline = Lines {
            title: format!(
                "A-3: client requests per second around the kill of {}",
                k.victim
            ),
            x_desc: "time since traffic started (s)".into(),
            y_desc: "requests per second".into(),
            lines: rate_lines(&k.timeline),
            integer_x: false,
            markers,
            y_min: 0.0,
            log_x: false,
        };
        figures.a3_timeline = Some(charts::render(
            dir,
            "a3_timeline",
            (1100, 560),
            1,
            &[Panel::Lines(timeline)],
        )?);
    }
    a3_fault_figures(dir, results, &mut figures)?;
    if let Some(a4) = &results.a4 {
        if !a4.runs.is_empty() {
            let ids: Vec<u64> = {
                let mut ids: Vec<u64> = a4
                    .runs
                    .iter()
                    .flat_map(|r| r.a1.replicas.iter().filter_map(|x| x.id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            };
            let requests = a4.runs[0].a1.sent as f64;
            let bars = Bars {
                title: format!(
                    "A-4: A-1 per hash ({} requests, N = 3, same request ids)",
                    a4.runs[0].a1.sent
                ),
                y_desc: "requests served".into(),
                groups: a4.runs.iter().map(|r| r.name.clone()).collect(),
                series: ids.iter().map(|i| format!("server id {i}")).collect(),
                values: a4
                    .runs
                    .iter()
                    .map(|r| {
                        ids.iter()
                            .map(|&i| {
                                r.a1.replicas
                                    .iter()
                                    .find(|x| x.id == Some(i))
                                    .map_or(0.0, |x| x.requests as f64)
                            })
                            .collect()
                    })
                    .collect(),
                reference: Some((requests / ids.len().max(1) as f64, "fair share".into())),
                value_labels: false,
            };
            figures.a4_a1 = Some(charts::render(
                dir,
                "a4_a1_per_hash",
                (1300, 600),
                1,
                &[Panel::Bars(bars)],
            )?);
            let spread_panel =
                |title: &str, y_desc: &str, value: fn(&crate::stats::Spread) -> f64| Lines {
                    title: title.into(),
                    x_desc: "N (replicas)".into(),
                    y_desc: y_desc.into(),
                    lines: a4
                        .runs
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            line(
                                &r.name,
                                per_n(&r.a2.points, |m| m.spread.as_ref().map(value)),
                                Some(i),
                                false,
                            )
                        })
                        .collect(),
                    integer_x: true,
                    markers: Vec::new(),
                    y_min: 0.0,
                    log_x: false,
                };
            figures.a4_a2 = Some(charts::render(
                dir,
                "a4_a2_spread_per_hash",
                (760, 560),
                2,
                &[
                    Panel::Lines(spread_panel(
                        "A-4: A-2 max / avg per hash",
                        "busiest replica / average",
                        |s| s.max_over_avg,
                    )),
                    Panel::Lines(spread_panel(
                        "A-4: A-2 coefficient of variation per hash",
                        "coefficient of variation",
                        |s| s.cv,
                    )),
                ],
            )?);
        }
        let off = &a4.offline;
        if !off.hashes.is_empty() {
            let share_panel = |title: &str, id: bool| Lines {
                title: title.into(),
                x_desc: "N (server ids 1..N)".into(),
                y_desc: "busiest replica's share / fair share".into(),
                lines: off
                    .hashes
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let pts = h
                            .shares
                            .iter()
                            .filter_map(|s| {
                                Some((
                                    s.n as f64,
                                    if id { s.id_spread } else { s.slot_spread }?.max_over_avg,
                                ))
                            })
                            .collect();
                        line(&h.name, pts, Some(i), false)
                    })
                    .collect(),
                integer_x: true,
                markers: Vec::new(),
                y_min: 0.0,
                log_x: false,
            };
            let mut add_lines: Vec<Line> = off
                .hashes
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    line(
                        &h.name,
                        h.adds.iter().map(|m| (m.to_n as f64, m.moved)).collect(),
                        Some(i),
                        false,
                    )
                })
                .collect();
            if let Some(h) = off.hashes.first() {
                add_lines.push(line(
                    "ideal 1/(N+1)",
                    h.adds.iter().map(|m| (m.to_n as f64, m.ideal)).collect(),
                    None,
                    true,
                ));
            }
            let mut rm_lines: Vec<Line> = off
                .hashes
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let pts = crate::experiments::offline::COUNTS
                        .filter_map(|n| Some((n as f64, h.worst_removal(n)?.moved)))
                        .collect();
                    line(&h.name, pts, Some(i), false)
                })
                .collect();
            rm_lines.push(line(
                "ideal 1/N",
                crate::experiments::offline::COUNTS
                    .skip(1)
                    .map(|n| (n as f64, 1.0 / n as f64))
                    .collect(),
                None,
                true,
            ));
            let moves = |title: &str, x_desc: &str, lines: Vec<Line>| Lines {
                title: title.into(),
                x_desc: x_desc.into(),
                y_desc: "fraction of request ids moved".into(),
                lines,
                integer_x: true,
                markers: Vec::new(),
                y_min: 0.0,
                log_x: false,
            };
            figures.a4_offline = Some(charts::render(
                dir,
                "a4_offline",
                (760, 540),
                2,
                &[
                    Panel::Lines(share_panel("Slot share: busiest / fair (offline)", false)),
                    Panel::Lines(share_panel(
                        "Request-id share: busiest / fair (offline)",
                        true,
                    )),
                    Panel::Lines(moves(
                        "Ids moved when adding replica N (from N-1)",
                        "N after adding",
                        add_lines,
                    )),
                    Panel::Lines(moves(
                        "Ids moved when removing one of N (worst choice)",
                        "N before removing",
                        rm_lines,
                    )),
                ],
            )?);
        }
    }
    if let Some(a5) = &results.a5 {
        a5_figures(dir, a5, &mut figures)?;
    }
    if let Some(a6) = &results.a6 {
        a6_figures(dir, a6, &mut figures)?;
    }
    Ok(figures)
}

fn a5_figures(dir: &Path, a5: &A5, figures: &mut Figures) -> Result<()> {
    let curves = |value: fn(&crate::experiments::a5::Point) -> f64| -> Vec<Line> {
        a5.curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let points = c.points.iter().map(|p| (p.n as f64, value(p))).collect();
                line(&c.setup.label(), points, Some(i), false)
            })
            .collect()
    };
    let ns: Vec<f64> = a5
        .curves
        .first()
        .map(|c| c.points.iter().map(|p| p.n as f64).collect())
        .unwrap_or_default();
    let panel = |title: &str, y_desc: &str, mut lines: Vec<Line>, ideal: Option<&str>| {
        if let Some(name) = ideal {
            lines.push(line(
                name,
                ns.iter().map(|&n| (n, 1.0)).collect(),
                None,
                true,
            ));
        }
        Panel::Lines(Lines {
            title: title.into(),
            x_desc: "N (replicas, log scale)".into(),
            y_desc: y_desc.into(),
            lines,
            integer_x: false,
            markers: Vec::new(),
            y_min: 0.0,
            log_x: true,
        })
    };
    if !a5.curves.is_empty() {
        figures.a5_balance = Some(charts::render(
            dir,
            "a5_balance",
            (760, 540),
            2,
            &[
                panel(
                    &format!("Slots: busiest / fair (M = {})", a5.slots),
                    "max/avg share of slots",
                    curves(|p| p.slot_max_over_avg),
                    Some("perfect balance"),
                ),
                panel(
                    &format!("{} random request ids: busiest / fair", a5.random_ids),
                    "max/avg share of requests",
                    curves(|p| p.request_max_over_avg),
                    Some("perfect balance"),
                ),
            ],
        )?);
        figures.a5_moves = Some(charts::render(
            dir,
            "a5_moves",
            (760, 540),
            2,
            &[
                panel(
                    "Keys moved when one replica is removed",
                    "moved / ideal 1/N (mean)",
                    curves(|p| p.removed_over_ideal),
                    Some("ideal (1/N)"),
                ),
                panel(
                    "Keys moved when replica N+1 is added",
                    "moved / ideal 1/(N+1)",
                    curves(|p| p.added_over_ideal),
                    Some("ideal (1/(N+1))"),
                ),
            ],
        )?);
    }
    if !a5.hot.is_empty() {
        let bars = Bars {
            title: format!(
                "Hot key: {} clients, one X-Request-Id, N = {}",
                crate::experiments::a5::HOT_CLIENTS,
                crate::experiments::a5::LIVE_N
            ),
            y_desc: "busiest replica's share (%)".into(),
            groups: a5
                .hot
                .iter()
                .map(|h| match &h.unavailable {
                    Some(_) => format!("{} (not available)", h.label),
                    None => h.label.clone(),
                })
                .collect(),
            series: vec!["busiest replica".into()],
            values: a5
                .hot
                .iter()
                .map(|h| vec![100.0 * h.busiest_share])
                .collect(),
            reference: Some((
                100.0 / crate::experiments::a5::LIVE_N as f64,
                "fair share (100 % / N)".into(),
            )),
            value_labels: true,
        };
        figures.a5_hot_key = Some(charts::render(
            dir,
            "a5_hot_key",
            (900, 560),
            1,
            &[Panel::Bars(bars)],
        )?);
    }
    Ok(())
}

fn a6_figures(dir: &Path, a6: &A6, figures: &mut Figures) -> Result<()> {
    use crate::experiments::a6::WeightPoint;
    let ns: Vec<f64> = a6
        .curves
        .first()
        .map(|c| c.points.iter().map(|p| p.n as f64).collect())
        .unwrap_or_default();
    let curves = |only: &[&str], value: fn(&WeightPoint) -> f64| -> Vec<Line> {
        a6.curves
            .iter()
            .enumerate()
            .filter(|(_, c)| only.is_empty() || only.contains(&c.setup.algorithm))
            .map(|(i, c)| {
                let points = c.points.iter().map(|p| (p.n as f64, value(p))).collect();
                line(&c.setup.label(), points, Some(i), false)
            })
            .collect()
    };
    let level = |name: &str, y: f64, colour: Option<usize>| {
        line(name, ns.iter().map(|&n| (n, y)).collect(), colour, true)
    };
    let colour_of = |algorithm: &str| {
        a6.curves
            .iter()
            .position(|c| c.setup.algorithm == algorithm)
    };
    let panel = |title: String, y_desc: &str, lines: Vec<Line>| {
        Panel::Lines(Lines {
            title,
            x_desc: "N (replicas, weights 1, 2, 3, 1, …; log scale)".into(),
            y_desc: y_desc.into(),
            lines,
            integer_x: false,
            markers: Vec::new(),
            y_min: 0.0,
            log_x: true,
        })
    };
    if !a6.curves.is_empty() {
        let both = ["maglev", "rendezvous"];
        let mut slots_zoom = curves(&both, |p| p.slot_error_points);
        slots_zoom.push(level(
            "Maglev's target: 0.1 point",
            0.1,
            colour_of("maglev"),
        ));
        slots_zoom.push(level(
            "rendezvous's target: 1 point",
            1.0,
            colour_of("rendezvous"),
        ));
        let requests_zoom = curves(&both, |p| p.request_error_points);
        figures.a6_shares = Some(charts::render(
            dir,
            "a6_shares",
            (760, 520),
            2,
            &[
                panel(
                    format!("Slots (M = {}): largest |share − w/Σw|", a6.slots),
                    "percentage points",
                    curves(&[], |p| p.slot_error_points),
                ),
                panel(
                    format!(
                        "{} random request ids: largest |share − w/Σw|",
                        a6.random_ids
                    ),
                    "percentage points",
                    curves(&[], |p| p.request_error_points),
                ),
                panel(
                    "Slots, Maglev and rendezvous only".into(),
                    "percentage points",
                    slots_zoom,
                ),
                panel(
                    "Request ids, Maglev and rendezvous only".into(),
                    "percentage points",
                    requests_zoom,
                ),
            ],
        )?);
        let mut ratio = curves(&[], |p| p.change.over_minimum);
        ratio.push(level("the minimum", 1.0, None));
        ratio.push(level(
            "1.25 × the minimum (Maglev's target)",
            1.25,
            colour_of("maglev"),
        ));
        figures.a6_weight_change = Some(charts::render(
            dir,
            "a6_weight_change",
            (760, 520),
            2,
            &[
                panel(
                    "Replica 1's weight 1 → 2: requests moved / minimum".into(),
                    "moved / minimum",
                    ratio,
                ),
                panel(
                    "… of them moved elsewhere than to replica 1".into(),
                    "% of all requests",
                    curves(&[], |p| 100.0 * p.change.moved_elsewhere),
                ),
            ],
        )?);
    }
    if let Some(r) = a6.ramp.as_ref().and_then(|r| r.done()) {
        figures.a6_ramp = Some(ramp_figure(dir, r)?);
    }
    Ok(())
}

fn ramp_figure(dir: &Path, r: &Ramp) -> Result<[String; 2]> {
    let half = r.bucket_ms as f64 / 2000.0;
    let at = |start_ms: i64| start_ms as f64 / 1000.0 + half;
    let mut markers = Vec::new();
    if let Some(t) = r.joined_ms {
        markers.push((t / 1000.0, format!("joined +{t:.0} ms")));
    }
    if let Some(t) = r.ramp_done_ms {
        markers.push((t / 1000.0, format!("whole weight +{:.1} s", t / 1000.0)));
    }
    let first = r.buckets.first().map_or(0.0, |b| at(b.start_ms));
    let last = r.buckets.last().map_or(1.0, |b| at(b.start_ms));
    let share = Lines {
        title: format!(
            "A-6: {}'s share (weight {} joining {} more, slow_start_ms = {})",
            r.added, r.weight, r.others_weight, r.slow_start_ms
        ),
        x_desc: "time since the /add (s)".into(),
        y_desc: "share of the requests answered (%)".into(),
        lines: vec![
            line(
                "measured",
                r.buckets
                    .iter()
                    .filter(|b| b.served > 0)
                    .map(|b| (at(b.start_ms), 100.0 * b.share))
                    .collect(),
                Some(0),
                false,
            ),
            line(
                "its effective weight's share (/_lb/status)",
                r.buckets
                    .iter()
                    .filter_map(|b| Some((at(b.start_ms), 100.0 * b.expected_share?)))
                    .collect(),
                Some(1),
                true,
            ),
            line(
                &format!("w / Σw = {:.0} %", 100.0 * r.target_share),
                vec![
                    (first, 100.0 * r.target_share),
                    (last, 100.0 * r.target_share),
                ],
                None,
                true,
            ),
        ],
        integer_x: false,
        markers: markers.clone(),
        y_min: 0.0,
        log_x: false,
    };
    let rate = Lines {
        title: format!("A-6: requests per second, {} clients", r.clients),
        x_desc: "time since the /add (s)".into(),
        y_desc: "requests per second".into(),
        lines: vec![
            line(
                &format!("answered by {}", r.added),
                r.buckets
                    .iter()
                    .map(|b| (at(b.start_ms), b.rate_new))
                    .collect(),
                Some(0),
                false,
            ),
            line(
                "answered in all",
                r.buckets
                    .iter()
                    .map(|b| (at(b.start_ms), b.rate_all))
                    .collect(),
                Some(2),
                false,
            ),
        ],
        integer_x: false,
        markers,
        y_min: 0.0,
        log_x: false,
    };
    charts::render(
        dir,
        "a6_ramp",
        (1100, 480),
        1,
        &[Panel::Lines(share), Panel::Lines(rate)],
    )
}

//! `report.md`: the charts, the numbers, and observations computed from them — a section per
//! experiment (`a1.rs` … `a6.rs`; A-3's control-plane phases in `a3_control.rs`), over the
//! formatting they share (`common.rs`, a leaf). Only this file imports the sections (and `a3.rs`
//! its control-plane part, `a3_control.rs`); nothing imports back.

mod a1;
mod a2;
mod a3;
mod a3_control;
mod a4;
mod a5;
mod a6;
mod common;

use std::fmt::Write as _;

use self::a1::a1_section;
use self::a2::a2_section;
use self::a3::a3_section;
use self::a4::a4_section;
use self::a5::a5_section;
use self::a6::a6_section;
use crate::data::Results;
use crate::figures::Figures;

/// The whole report.
pub fn render(results: &Results, figures: &Figures, data_files: &[String]) -> String {
    let s = &results.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# Load balancer analysis\n");
    let _ = writeln!(
        md,
        "Made by `analysis` (see `analysis/README.md`). Every number below was measured or computed in this run; \
         rerun with `--seed {}` for the same request ids.\n",
        s.seed
    );
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| load balancer | {} ({}) |",
        s.lb_url,
        if s.own_lb {
            format!(
                "started by analysis, 3 replicas, 100 ms heartbeats, {} ms client header timeout",
                crate::config_file::HEADER_TIMEOUT_MS
            )
        } else {
            "given with --lb".to_owned()
        }
    );
    let _ = writeln!(md, "| requests per measurement | {} |", s.requests);
    let _ = writeln!(md, "| requests in flight | {} |", s.concurrency);
    let _ = writeln!(md, "| seed | {} |", s.seed);
    let _ = writeln!(md, "| plugin directory | `{}` |", s.plugin_dir);
    let _ = writeln!(md, "| run time | {:.1} s |\n", results.elapsed_s);
    let a4 = results.a4.as_ref();
    if let Some(m) = &results.a1 {
        a1_section(&mut md, m, figures, a4, s.concurrency);
    }
    if let Some(a2) = &results.a2 {
        a2_section(&mut md, a2, figures);
    }
    if let Some(a3) = &results.a3 {
        a3_section(&mut md, a3, figures, s.concurrency);
    }
    if let Some(a4) = a4 {
        a4_section(&mut md, a4, figures);
    }
    if let Some(a5) = &results.a5 {
        a5_section(&mut md, a5, figures);
    }
    if let Some(a6) = &results.a6 {
        a6_section(&mut md, a6, figures);
    }
    let _ = writeln!(md, "## Raw data\n");
    for f in data_files {
        let _ = writeln!(md, "- [{f}]({f})");
    }
    md
}

//! `analysis`: run the assignment's experiments A-1..A-6 against a load balancer and write
//! charts, raw data and `report.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;

use analysis::cli::{Cli, Which};
use analysis::client::LbClient;
use analysis::data::{self, Results, Settings};
use analysis::experiments::{a1, a2, a3, a4, a5, a6, Context};
use analysis::lb_process::{default_lb_bin, OwnedLb};
use analysis::progress::note;
use analysis::{figures, report};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("analysis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let o = &cli.options;
    let seed = o.seed.unwrap_or_else(|| fastrand::u64(..));
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;

    let (own, url, plugin_dir, lb_bin) = match &o.lb {
        Some(url) => {
            let plugin_dir = match &o.plugin_dir {
                Some(dir) => absolute(dir)?,
                None => default_lb_bin()?
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            };
            // A-3's supervisor comparison starts load balancers of its own even then.
            let lb_bin = match &o.lb_bin {
                Some(path) => Some(absolute(path)?),
                None => default_lb_bin()
                    .ok()
                    .filter(|p| p.is_file())
                    .and_then(|p| absolute(&p).ok()),
            };
            (
                None,
                url.trim_end_matches('/').to_owned(),
                plugin_dir,
                lb_bin,
            )
        }
        None => {
            let lb_bin = match &o.lb_bin {
                Some(path) => path.clone(),
                None => default_lb_bin()?,
            };
            if !lb_bin.is_file() {
                bail!(
                    "no lb binary at {} (build it with `cargo build --release`, or give --lb-bin PATH or --lb URL)",
                    lb_bin.display()
                );
            }
            let lb_bin = absolute(&lb_bin)?;
            let plugin_dir = match &o.plugin_dir {
                Some(dir) => absolute(dir)?,
                None => lb_bin.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            let lb = OwnedLb::start(&lb_bin, &plugin_dir)?;
            note(&format!(
                "analysis: started {} at {} (seed {seed})",
                lb_bin.display(),
                lb.url()
            ));
            let url = lb.url();
            (Some(lb), url, plugin_dir, Some(lb_bin))
        }
    };

    let ctx = Context {
        client: LbClient::new(&url)?,
        requests: o.requests as usize,
        concurrency: o.concurrency as usize,
        phase_timeout: Duration::from_secs(o.phase_timeout),
        seed,
        owned_config: own.as_ref().map(|lb| lb.config_path().to_path_buf()),
        plugin_dir: plugin_dir.clone(),
        lb_bin,
        a3_phases: o.a3_phases.clone(),
    };
    let mut results = Results {
        settings: Settings {
            requests: ctx.requests,
            concurrency: ctx.concurrency,
            seed,
            lb_url: url,
            own_lb: own.is_some(),
            plugin_dir: plugin_dir.display().to_string(),
        },
        a1: None,
        a2: None,
        a3: None,
        a4: None,
        a5: None,
        a6: None,
        elapsed_s: 0.0,
    };

    let failure = experiments(&ctx, cli.which, o, &mut results).err();
    if let (Some(lb), Some(_)) = (&own, &failure) {
        let log = o.out.join("lb.log");
        std::fs::write(&log, lb.log().text()).with_context(|| log.display().to_string())?;
        note(&format!(
            "analysis: the load balancer's log is in {}",
            log.display()
        ));
    }
    if let Some(lb) = own {
        let status = lb.stop()?;
        note(&format!("analysis: stopped the load balancer ({status})"));
    }
    results.elapsed_s = started.elapsed().as_secs_f64();

    let data_files = data::write_all(&o.out, &results)?;
    let figures = figures::draw(&o.out, &results)?;
    let report_path = o.out.join("report.md");
    std::fs::write(
        &report_path,
        report::render(&results, &figures, &data_files),
    )
    .with_context(|| report_path.display().to_string())?;
    note(&format!(
        "analysis: wrote {} ({:.1} s)",
        report_path.display(),
        results.elapsed_s
    ));
    match failure {
        Some(e) => Err(e.context("an experiment failed (the report has what ran before it)")),
        None => Ok(()),
    }
}

fn experiments(
    ctx: &Context,
    which: Which,
    o: &analysis::cli::Options,
    results: &mut Results,
) -> anyhow::Result<()> {
    for step in which.experiments() {
        match step {
            Which::A1 => results.a1 = Some(a1::run(ctx, "A-1").context("A-1")?),
            Which::A2 => results.a2 = Some(a2::run(ctx, "A-2").context("A-2")?),
            Which::A3 => results.a3 = Some(a3::run(ctx).context("A-3")?),
            Which::A4 => results.a4 = Some(a4::run(ctx).context("A-4")?),
            Which::A5 => results.a5 = Some(a5::run(ctx, &o.a5_counts).context("A-5")?),
            Which::A6 => results.a6 = Some(a6::run(ctx, &o.a6_counts).context("A-6")?),
            Which::All => {}
        }
    }
    Ok(())
}

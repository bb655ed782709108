//! Charts, each written as PNG and SVG with plotters. Text is drawn with DejaVu Sans, embedded
//! in the binary (`assets/DejaVuSans.ttf`), so no system font library is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{Error, Result};

/// DejaVu Sans (Bitstream Vera license, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Colours of series, in order.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type DrawResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Make the embedded font the `sans-serif` family (once).
pub fn init_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            register_font("sans-serif", style, FONT)
                .map_err(|_| "the embedded font is not a valid TTF".to_owned())?;
        }
        Ok(())
    })
    .clone()
    .map_err(|reason| Error::Chart {
        path: PathBuf::from("assets/DejaVuSans.ttf"),
        reason,
    })
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Bars in groups: `values[g][s]` is series `s` in group `g`.
#[derive(Debug, Clone)]
pub struct Bars {
    /// Title.
    pub title: String,
    /// Y axis description.
    pub y_desc: String,
    /// Group labels (x axis).
    pub groups: Vec<String>,
    /// Series names (legend; none is drawn for a single series).
    pub series: Vec<String>,
    /// Values per group, per series.
    pub values: Vec<Vec<f64>>,
    /// A dashed horizontal reference line (e.g. the fair share) and its label.
    pub reference: Option<(f64, String)>,
    /// Print each bar's value above it.
    pub value_labels: bool,
}

/// A line series.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend entry.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (for references such as "ideal").
    pub dashed: bool,
    /// Colour index in [`PALETTE`]; `None` for black.
    pub colour: Option<usize>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Lines {
    /// Title.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// The series.
    pub lines: Vec<Line>,
    /// X values are integers (label them without decimals).
    pub integer_x: bool,
    /// Vertical markers: x and label.
    pub markers: Vec<(f64, String)>,
    /// Lowest y shown (the top is fitted to the data).
    pub y_min: f64,
    /// A logarithmic x axis (x values must be positive; labels show the values themselves).
    pub log_x: bool,
}

/// One or more charts side by side.
#[derive(Debug, Clone)]
pub enum Panel {
    /// Bars.
    Bars(Bars),
    /// Lines.
    Lines(Lines),
}

fn nice_top(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    max * 1.15
}

/// A number for a label: no decimals from 100 on, else up to two without trailing zeros.
fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, bars: &Bars) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let groups = bars.groups.len().max(1);
    let series = bars.series.len().max(1);
    let max = bars
        .values
        .iter()
        .flatten()
        .copied()
        .chain(bars.reference.as_ref().map(|r| r.0))
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(&bars.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), 0f64..nice_top(max))?;
    let names = bars.groups.clone();
    let label = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 4 + 1)
        .x_label_formatter(&label)
        .y_desc(&bars.y_desc)
        .y_label_formatter(&|y| format_value(*y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let width = 0.8 / series as f64;
    for s in 0..series {
        let style = colour(if series == 1 { 0 } else { s }).filled();
        let rects = bars.values.iter().enumerate().filter_map(|(g, row)| {
            let v = *row.get(s)?;
            let left = g as f64 - 0.4 + s as f64 * width;
            Some(Rectangle::new(
                [(left, 0.0), (left + width * 0.92, v)],
                style,
            ))
        });
        let drawn = chart.draw_series(rects)?;
        if series > 1 {
            let name = bars.series.get(s).cloned().unwrap_or_default();
            drawn
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], style));
        }
        if bars.value_labels {
            let text = bars.values.iter().enumerate().filter_map(|(g, row)| {
                let v = *row.get(s)?;
                let centre = g as f64 - 0.4 + (s as f64 + 0.46) * width;
                Some(Text::new(
                    format_value(v),
                    (centre, v),
                    ("sans-serif", 14).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                ))
            });
            chart.draw_series(text)?;
        }
    }
    if let Some((y, name)) = &bars.reference {
        chart
            .draw_series(DashedLineSeries::new(
                [(-0.5, *y), (groups as f64 - 0.5, *y)],
                8,
                5,
                BLACK.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    }
    if series > 1 || bars.reference.is_some() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

fn draw_lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, lines: &Lines) -> DrawResult
where
    DB::ErrorType: 'static,
{
    if lines.log_x {
        // Draw log10(x) on a linear axis, labelled with x itself.
        let mut log = lines.clone();
        log.log_x = false;
        log.integer_x = false;
        for line in &mut log.lines {
            for p in &mut line.points {
                p.0 = p.0.max(f64::MIN_POSITIVE).log10();
            }
        }
        for m in &mut log.markers {
            m.0 = m.0.max(f64::MIN_POSITIVE).log10();
        }
        return draw_lines_with(area, &log, true);
    }
    draw_lines_with(area, lines, false)
}

fn draw_lines_with<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &Lines,
    log_x: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xs = lines
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (x_min, x_max) = if x_min <= x_max {
        (x_min, x_max)
    } else {
        (0.0, 1.0)
    };
    let pad = if lines.integer_x {
        0.25
    } else {
        (x_max - x_min).max(1e-9) * 0.02
    };
    let data_max = lines
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(lines.y_min, f64::max);
    // Head room above the data for the legend (about 4.5 % of the height per entry), so it never
    // hides a line.
    let legend_part = (0.06 + 0.045 * lines.lines.len() as f64).min(0.6);
    let y_max = lines.y_min + (data_max - lines.y_min) / (1.0 - legend_part) / 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(&lines.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(66)
        .build_cartesian_2d(
            (x_min - pad)..(x_max + pad),
            lines.y_min..nice_top(y_max - lines.y_min) + lines.y_min,
        )?;
    let integer = lines.integer_x;
    let x_fmt = move |x: &f64| {
        if log_x {
            let v = 10f64.powf(*x);
            if v >= 10.0 {
                format!("{v:.0}")
            } else {
                format_value((v * 10.0).round() / 10.0)
            }
        } else if integer {
            let i = x.round();
            if (x - i).abs() < 1e-6 {
                format!("{i:.0}")
            } else {
                String::new()
            }
        } else {
            format!("{x:.1}")
        }
    };
    chart
        .configure_mesh()
        .x_labels(if integer {
            ((x_max - x_min) as usize + 1) * 2
        } else {
            12
        })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| format_value(*y))
        .x_desc(&lines.x_desc)
        .y_desc(&lines.y_desc)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    let y_top = nice_top(y_max - lines.y_min) + lines.y_min;
    for (i, (x, label)) in lines.markers.iter().enumerate() {
        chart.draw_series(DashedLineSeries::new(
            [(*x, lines.y_min), (*x, y_top)],
            6,
            4,
            BLACK.mix(0.7).stroke_width(1),
        ))?;
        // Labels step down so that markers close together stay readable.
        let y = y_top - (y_top - lines.y_min) * 0.07 * i as f64;
        chart.draw_series(std::iter::once(Text::new(
            format!(" {label}"),
            (*x, y),
            ("sans-serif", 13).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Top,
                ),
            ),
        )))?;
    }
    for line in &lines.lines {
        let c: RGBColor = line.colour.map_or(BLACK, colour);
        let style = c.stroke_width(2);
        let drawn = if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 8, 5, style))?
        } else {
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            chart.draw_series(LineSeries::new(line.points.clone(), style))?
        };
        drawn
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

fn draw_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    columns: usize,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let cols = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for (area, panel) in areas.iter().zip(panels) {
        match panel {
            Panel::Bars(b) => draw_bars(area, b)?,
            Panel::Lines(l) => draw_lines(area, l)?,
        }
    }
    root.present()?;
    Ok(())
}

/// Draw `panels` side by side, `columns` to a row, into `<dir>/<stem>.png` and
/// `<dir>/<stem>.svg`; each panel gets `panel_size` pixels. Answers the two file names.
pub fn render(
    dir: &Path,
    stem: &str,
    panel_size: (u32, u32),
    columns: usize,
    panels: &[Panel],
) -> Result<[String; 2]> {
    init_font()?;
    let cols = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (panel_size.0 * cols as u32, panel_size.1 * rows as u32);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| Error::Chart {
            path,
            reason: e.to_string(),
        }
    };
    draw_panels(
        &BitMapBackend::new(&png, size).into_drawing_area(),
        panels,
        cols,
    )
    .map_err(fail(&png))?;
    draw_panels(
        &SVGBackend::new(&svg, size).into_drawing_area(),
        panels,
        cols,
    )
    .map_err(fail(&svg))?;
    Ok([format!("{stem}.png"), format!("{stem}.svg")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(2500.0), "2500");
        assert_eq!(format_value(0.0), "0");
    }

    #[test]
    fn draws_png_and_svg_with_the_embedded_font() {
        let dir = tempfile::tempdir().unwrap();
        let bars = Bars {
            title: "t".into(),
            y_desc: "y".into(),
            groups: vec!["a".into(), "b".into()],
            series: vec!["s".into()],
            values: vec![vec![1.0], vec![3.0]],
            reference: Some((2.0, "fair".into())),
            value_labels: true,
        };
        let files = render(dir.path(), "x", (300, 200), 1, &[Panel::Bars(bars)]).unwrap();
        let png = std::fs::read(dir.path().join(&files[0])).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(dir.path().join(&files[1])).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("<text") && svg.contains("fair"),
            "{svg}"
        );
    }
}

//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, then one
//! sample per line, `name{label="value",…} value`. Label values are escaped (`\\`, `\"`, `\n`),
//! so a hostname cannot break a line or a label.

use std::fmt::Write as _;

/// The `Content-Type` of an exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What a family's samples mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up (restarts at 0 with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket{le}`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
pub(crate) trait Value {
    /// Append the value as the format spells it.
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub(crate) fn new() -> Exposition {
        Exposition::default()
    }

    /// Start the family `name`: its help text and type.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample of `name` with `labels`.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(text, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
    }

    /// The samples of one histogram series: `buckets` holds the count of each bucket (not
    /// cumulative) for the upper `bounds` (in seconds) and a last one for `+Inf`; `sum` is in
    /// seconds.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        buckets: &[u64],
        sum: f64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let mut le = String::new();
            match bounds.get(i) {
                Some(bound) => bound.write(&mut le),
                None => le.push_str("+Inf"),
            }
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The page.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Append `value` escaped for a label value: `\` → `\\`, `"` → `\"`, a line feed → `\n`.
pub(crate) fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value("a\\b\"c\nd e", &mut out);
        assert_eq!(out, r#"a\\b\"c\nd e"#);
    }

    #[test]
    fn families_and_samples_are_spelled_as_the_format_says() {
        let mut page = Exposition::new();
        page.family("lb_x_total", Kind::Counter, "Things.\nMore \\ things.");
        page.sample(
            "lb_x_total",
            &[("replica", "S \"1\""), ("code", "200")],
            7u64,
        );
        page.sample("lb_y", &[], 0.5f64);
        page.sample("lb_z", &[], f64::INFINITY);
        assert_eq!(
            page.finish(),
            "# HELP lb_x_total Things.\\nMore \\\\ things.\n\
             # TYPE lb_x_total counter\n\
             lb_x_total{replica=\"S \\\"1\\\"\",code=\"200\"} 7\n\
             lb_y 0.5\n\
             lb_z +Inf\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut page = Exposition::new();
        page.histogram(
            "h_seconds",
            &[("replica", "A")],
            &[0.001, 0.01],
            &[2, 0, 1],
            1.5,
        );
        assert_eq!(
            page.finish(),
            "h_seconds_bucket{replica=\"A\",le=\"0.001\"} 2\n\
             h_seconds_bucket{replica=\"A\",le=\"0.01\"} 2\n\
             h_seconds_bucket{replica=\"A\",le=\"+Inf\"} 3\n\
             h_seconds_sum{replica=\"A\"} 1.5\n\
             h_seconds_count{replica=\"A\"} 3\n"
        );
    }
}

//! Latency percentile plots (PNG): one curve per run, the percentile on a "nines"
//! axis (50, 90, 99, 99.9, ...) and the latency on a log axis, as HDR histograms are
//! usually drawn, so the tail is as visible as the median.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One curve: (percentile, microseconds) points from [`crate::report::Latency::curve`].
pub struct Series {
    pub label: String,
    pub curve: Vec<(f64, u64)>,
}

/// Where a TrueType font is looked for (plotters draws text with ab_glyph and has no
/// font of its own). Debian's fonts-dejavu-core provides the first.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn load_font() -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let (path, bytes) = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
                .ok_or_else(|| {
                    format!(
                        "no TrueType font found for the plot's text (looked for {}); \
                         install the Debian package fonts-dejavu-core",
                        FONTS.join(", ")
                    )
                })?;
            // register_font wants 'static bytes; one font per process, loaded once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// -log10(1 - p/100): 50% → 0.3, 90% → 1, 99% → 2, 100% → the axis end.
fn nines(percentile: f64, end: f64) -> f64 {
    if percentile >= 100.0 {
        end
    } else {
        (-(1.0 - percentile / 100.0).log10()).min(end)
    }
}

fn nines_label(x: f64) -> String {
    if x <= 0.0 {
        return "0%".to_owned();
    }
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x - 2.0).ceil().max(0.0) as usize;
    format!("{p:.digits$}%")
}

/// Draws `series` into `path` (PNG, 1000×600).
pub fn draw(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    if series.iter().all(|s| s.curve.is_empty()) {
        bail!("nothing to plot: no run has latency percentiles");
    }
    load_font()?;
    // The x axis ends one step past the deepest resolved percentile; 100% (the
    // maximum) is drawn there.
    let deepest = series
        .iter()
        .flat_map(|s| s.curve.iter())
        .filter(|(p, _)| *p < 100.0)
        .map(|(p, _)| nines(*p, f64::INFINITY))
        .fold(1.0f64, f64::max);
    let end = deepest.ceil() + 0.3;
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.curve.iter().map(|(_, us)| *us as f64 / 1000.0))
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), ms| {
            (lo.min(ms), hi.max(ms))
        });
    let lo = (lo.max(0.001) / 1.5).max(0.001);
    let hi = (hi * 1.5).max(lo * 10.0);

    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, (lo..hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("end-to-end latency (ms)")
        .x_labels(end.ceil() as usize + 1)
        .y_labels(12)
        .x_label_formatter(&|x| {
            if (*x - end).abs() < 1e-9 {
                "max".to_owned()
            } else {
                nines_label(*x)
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.3}")
            }
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(f64, f64)> = s
            .curve
            .iter()
            .map(|(p, us)| (nines(*p, end), (*us as f64 / 1000.0).max(lo)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The curve of a `--json` report written by any run with latency.
pub fn series_from_report(label: String, path: &Path) -> Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let latency = report
        .get("latency")
        .filter(|l| !l.is_null())
        .with_context(|| {
            format!(
                "{} has no latency (run latency, e2e or fanout)",
                path.display()
            )
        })?;
    let latency: crate::report::Latency = serde_json::from_value(latency.clone())
        .with_context(|| format!("{}: unexpected latency section", path.display()))?;
    Ok(Series {
        label,
        curve: latency.curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(90.0, 9.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9, 9.0) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0, 4.3), 4.3);
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(4.0), "99.99%");
    }
}

//! The report's chart: one bar per figure that has a reference, showing
//! how many times as good as the reference this project is (log scale),
//! green where its goal is met, red where not, grey without a goal.

use crate::figures::Figure;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// Bar height in pixels.
const ROW: u32 = 26;

/// Writes the chart of `figures` to `path` as SVG.
pub fn write_svg(figures: &[Figure], path: &Path) -> Result<()> {
    // Drawn from the bottom up: reversed, the first figure is on top.
    let bars: Vec<(String, f64, Option<bool>)> = figures
        .iter()
        .rev()
        .filter_map(|f| {
            let advantage = f.advantage()?;
            Some((format!("{}: {}", f.section, f.case), advantage, f.met()))
        })
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let low = bars.iter().map(|b| b.1).fold(1.0, f64::min) / 2.0;
    let high = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 2.0;
    let n = bars.len();
    let height = 120 + ROW * n as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Debug| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "This project relative to the reference measured in the same run (> 1 is better)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(760)
        .build_cartesian_2d((low..high).log_scale(), (0..n).into_segmented())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("times as good as the reference (log scale)")
        .x_label_formatter(&|x| format!("{x}x"))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, advantage, met))| {
            let colour = match met {
                Some(true) => RGBColor(46, 139, 87),
                Some(false) => RGBColor(200, 50, 50),
                None => RGBColor(150, 150, 150),
            };
            let mut bar = Rectangle::new(
                [
                    (low, SegmentValue::Exact(i)),
                    (*advantage, SegmentValue::Exact(i + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(|e| draw(&e))?;
    // Parity with the reference.
    chart
        .draw_series(LineSeries::new(
            [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

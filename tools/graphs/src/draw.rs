//! The figure: four panels on one time axis (clients issued; mean response time with the
//! target; VMs active, booting and draining; the policy's metric with the size it decided),
//! the load test's high-load phases shaded in each. Drawn once per backend (SVG, PNG).

use plotters::{coord::Shift, prelude::*};

use crate::data::Run;

/// The font the PNG backend renders with, bundled (DejaVu Sans, its licence beside it).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Registers the bundled font as "sans-serif" (once per process).
pub fn register_font() -> Result<(), String> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font cannot be read".to_owned())
}

const HIGH_SHADE: RGBColor = RGBColor(255, 222, 222);
const ACTIVE: RGBColor = RGBColor(31, 119, 180);
const BOOTING: RGBColor = RGBColor(255, 127, 14);
const DRAINING: RGBColor = RGBColor(127, 127, 127);
const TARGET: RGBColor = RGBColor(214, 39, 40);

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A legend entry: a short line in the series' colour.
fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
}

/// Draws the figure on `root`.
pub fn figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &Run) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let x_max = run
        .rows
        .iter()
        .map(|r| run.x(r.time))
        .chain(run.phases.iter().map(|p| run.x(p.end)))
        .fold(1.0f64, f64::max);
    let x_min = run
        .rows
        .iter()
        .map(|r| run.x(r.time))
        .fold(0.0f64, f64::min);
    let high: Vec<(f64, f64)> = run
        .phases
        .iter()
        .filter(|p| p.is_high())
        .map(|p| (run.x(p.start), run.x(p.end)))
        .collect();
    let panels = root.split_evenly((4, 1));

    // 1. Clients issued by the load test: a step per phase.
    let clients: Vec<(f64, f64)> = run
        .phases
        .iter()
        .flat_map(|p| {
            let c = f64::from(p.clients);
            [(run.x(p.start), c), (run.x(p.end), c)]
        })
        .collect();
    let y = clients.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    panel(
        &panels[0],
        "Concurrent clients issued (ab)",
        "clients",
        (x_min, x_max),
        y,
        &high,
        |chart| {
            chart
                .draw_series(LineSeries::new(clients.clone(), BLACK.stroke_width(2)))?
                .label("clients")
                .legend(legend_line(BLACK));
            Ok(())
        },
    )?;

    // 2. Mean response time per second, and the target.
    let mean: Vec<(f64, f64)> = run
        .rows
        .iter()
        .filter_map(|r| Some((run.x(r.time), r.mean_response_time?)))
        .collect();
    let target = run.target();
    let y = mean.iter().map(|p| p.1).fold(target, f64::max) * 1.15;
    panel(
        &panels[1],
        "Mean response time (s)",
        "seconds",
        (x_min, x_max),
        y,
        &high,
        |chart| {
            chart
                .draw_series(LineSeries::new(mean.clone(), ACTIVE.stroke_width(2)))?
                .label("mean response time")
                .legend(legend_line(ACTIVE));
            chart
                .draw_series(LineSeries::new(
                    [(x_min, target), (x_max, target)],
                    TARGET.stroke_width(2),
                ))?
                .label(format!("target {target} s"))
                .legend(legend_line(TARGET));
            Ok(())
        },
    )?;

    // 3. VMs by state.
    let series = |f: fn(&autoscaler_core::timeseries::Row) -> u32| -> Vec<(f64, f64)> {
        run.rows
            .iter()
            .map(|r| (run.x(r.time), f64::from(f(r))))
            .collect()
    };
    let active = series(|r| r.vms_active);
    let booting = series(|r| r.vms_booting);
    let draining = series(|r| r.vms_draining);
    let y = run
        .rows
        .iter()
        .map(|r| f64::from(r.vms_active + r.vms_booting + r.vms_draining))
        .fold(1.0, f64::max)
        + 1.0;
    panel(
        &panels[2],
        "Web VMs",
        "VMs",
        (x_min, x_max),
        y,
        &high,
        |chart| {
            for (data, color, name) in [
                (active.clone(), ACTIVE, "active"),
                (booting.clone(), BOOTING, "booting"),
                (draining.clone(), DRAINING, "draining"),
            ] {
                chart
                    .draw_series(LineSeries::new(data, color.stroke_width(2)))?
                    .label(name)
                    .legend(legend_line(color));
            }
            Ok(())
        },
    )?;

    // 4. The policy's metric (the VMs the load needs) and the size it decided.
    let metric: Vec<(f64, f64)> = run
        .rows
        .iter()
        .filter_map(|r| Some((run.x(r.time), r.metric?)))
        .collect();
    let desired = series(|r| r.desired);
    let y = metric
        .iter()
        .chain(desired.iter())
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.15;
    panel(
        &panels[3],
        "Decision metric: web VMs the load needs (policy)",
        "VMs",
        (x_min, x_max),
        y,
        &high,
        |chart| {
            chart
                .draw_series(LineSeries::new(metric.clone(), ACTIVE.stroke_width(2)))?
                .label("needed (metric)")
                .legend(legend_line(ACTIVE));
            chart
                .draw_series(LineSeries::new(desired.clone(), BLACK.stroke_width(2)))?
                .label("decided size")
                .legend(legend_line(BLACK));
            Ok(())
        },
    )?;
    root.present()?;
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One panel: caption, axes, the high-load shading, then `series`, then the legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    (x_min, x_max): (f64, f64),
    y_max: f64,
    high: &[(f64, f64)],
    series: impl FnOnce(&mut Chart<'_, DB>) -> DrawResult,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the load test started")
        .y_desc(y_desc)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    chart.draw_series(
        high.iter()
            .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], HIGH_SHADE.filled())),
    )?;
    series(&mut chart)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

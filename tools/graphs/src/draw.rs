//! The figure: four panels on one time axis (clients issued, or without a phase file the
//! load the splitter measured; mean response time with the target; VMs active, booting
//! and draining; the policy's metric with the size it decided), the high-load phases
//! shaded in each. Drawn once per backend (SVG, PNG).

use plotters::{coord::Shift, prelude::*};

use autoscaler_core::timeseries::Row;
use plotters::{chart::SeriesLabelStyle, coord::CoordTranslate};

use crate::data::{Phases, Run};

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
    let axes = Axes {
        x: (x_min, x_max),
        x_desc: match run.source {
            Phases::LoadTest => "seconds since the load test started",
            Phases::Measured { .. } => "seconds since the time series' first row",
        },
        high: run
            .phases
            .iter()
            .filter(|p| p.is_high())
            .map(|p| (run.x(p.start), run.x(p.end)))
            .collect(),
        right: match run.source {
            Phases::LoadTest => 0,
            Phases::Measured { .. } => 70,
        },
    };
    let panels = root.split_evenly((4, 1));
    match run.source {
        Phases::LoadTest => clients_panel(&panels[0], run, &axes)?,
        Phases::Measured { .. } => measured_load_panel(&panels[0], run, &axes)?,
    }
    response_panel(&panels[1], run, &axes)?;
    vms_panel(&panels[2], run, &axes)?;
    metric_panel(&panels[3], run, &axes)?;
    root.present()?;
    Ok(())
}

/// What every panel shares: the x range and its description, the high-load shading, and
/// the room right of the plot (the measured load's second axis; every panel keeps it so
/// that the time axes line up).
struct Axes {
    x: (f64, f64),
    x_desc: &'static str,
    high: Vec<(f64, f64)>,
    right: u32,
}

/// `(x, f(row))` for every row.
fn series(run: &Run, f: impl Fn(&Row) -> f64) -> Vec<(f64, f64)> {
    run.rows.iter().map(|r| (run.x(r.time), f(r))).collect()
}

/// 1. Clients issued by the load test: a step per phase.
fn clients_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &Run,
    axes: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
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
        area,
        "Concurrent clients issued (ab)",
        "clients",
        axes,
        y,
        |chart| {
            chart
                .draw_series(LineSeries::new(clients, BLACK.stroke_width(2)))?
                .label("clients")
                .legend(legend_line(BLACK));
            Ok(())
        },
    )
}

/// 1, without a phase file: the load the splitter measured, requests in flight (left
/// axis) and requests a second (right axis), shaded where it was found high.
fn measured_load_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &Run,
    axes: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let in_flight = series(run, |r| r.in_flight.unwrap_or(0.0));
    let rate = series(run, |r| r.rate);
    let y = in_flight.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let y2 = rate.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Load measured at the splitter (no phase file)",
            ("sans-serif", 24),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(axes.right)
        .build_cartesian_2d(axes.x.0..axes.x.1, 0.0..y)?
        .set_secondary_coord(axes.x.0..axes.x.1, 0.0..y2);
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc("requests in flight")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("requests/s")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    chart.draw_series(shading(axes, y))?;
    chart
        .draw_series(LineSeries::new(in_flight, BLACK.stroke_width(2)))?
        .label("requests in flight (left)")
        .legend(legend_line(BLACK));
    chart
        .draw_secondary_series(LineSeries::new(rate, ACTIVE.stroke_width(1)))?
        .label("requests/s (right)")
        .legend(legend_line(ACTIVE));
    // The secondary series' legend entries are kept with the primary's.
    legend(&mut chart.configure_series_labels())?;
    Ok(())
}

/// 2. Mean response time per second, and the target.
fn response_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &Run,
    axes: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mean: Vec<(f64, f64)> = run
        .rows
        .iter()
        .filter_map(|r| Some((run.x(r.time), r.mean_response_time?)))
        .collect();
    let target = run.target();
    let y = mean.iter().map(|p| p.1).fold(target, f64::max) * 1.15;
    let (x_min, x_max) = axes.x;
    panel(
        area,
        "Mean response time (s)",
        "seconds",
        axes,
        y,
        |chart| {
            chart
                .draw_series(LineSeries::new(mean, ACTIVE.stroke_width(2)))?
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
    )
}

/// 3. VMs by state.
fn vms_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &Run,
    axes: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let y = run
        .rows
        .iter()
        .map(|r| f64::from(r.vms_active + r.vms_booting + r.vms_draining))
        .fold(1.0, f64::max)
        + 1.0;
    panel(area, "Web VMs", "VMs", axes, y, |chart| {
        for (data, color, name) in [
            (series(run, |r| f64::from(r.vms_active)), ACTIVE, "active"),
            (
                series(run, |r| f64::from(r.vms_booting)),
                BOOTING,
                "booting",
            ),
            (
                series(run, |r| f64::from(r.vms_draining)),
                DRAINING,
                "draining",
            ),
        ] {
            chart
                .draw_series(LineSeries::new(data, color.stroke_width(2)))?
                .label(name)
                .legend(legend_line(color));
        }
        Ok(())
    })
}

/// 4. The policy's metric (the VMs the load needs) and the size it decided.
fn metric_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &Run,
    axes: &Axes,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let metric: Vec<(f64, f64)> = run
        .rows
        .iter()
        .filter_map(|r| Some((run.x(r.time), r.metric?)))
        .collect();
    let desired = series(run, |r| f64::from(r.desired));
    let y = metric
        .iter()
        .chain(desired.iter())
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.15;
    panel(
        area,
        "Decision metric: web VMs the load needs (policy)",
        "VMs",
        axes,
        y,
        |chart| {
            chart
                .draw_series(LineSeries::new(metric, ACTIVE.stroke_width(2)))?
                .label("needed (metric)")
                .legend(legend_line(ACTIVE));
            chart
                .draw_series(LineSeries::new(desired, BLACK.stroke_width(2)))?
                .label("decided size")
                .legend(legend_line(BLACK));
            Ok(())
        },
    )
}

/// The high-load shading, full height.
fn shading(axes: &Axes, y_max: f64) -> impl Iterator<Item = Rectangle<(f64, f64)>> + '_ {
    axes.high
        .iter()
        .map(move |&(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], HIGH_SHADE.filled()))
}

/// The legend's place and look, the same in every panel.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    labels: &mut SeriesLabelStyle<'a, '_, DB, CT>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    labels
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
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
    axes: &Axes,
    y_max: f64,
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
        .right_y_label_area_size(axes.right)
        .build_cartesian_2d(axes.x.0..axes.x.1, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    chart.draw_series(shading(axes, y_max))?;
    series(&mut chart)?;
    legend(&mut chart.configure_series_labels())?;
    Ok(())
}

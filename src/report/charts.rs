//! The report's line charts, drawn by plotters into an RGB buffer and saved as a PNG. The
//! font (DejaVu Sans, from the `dejavu` crate) is embedded in the binary, so no system font is
//! needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::{RangedCoordu32, RangedCoordu64};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::run_dir::metrics::{Axis, Panel};

pub const WIDTH: u32 = 1600;
pub const HEIGHT: u32 = 1000;
const HEADER: u32 = 70;
const FOOTER: u32 = 36;
const FONT: &str = "sans-serif";

/// Distinct colours for the runs of a report, in order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// One line of a chart.
pub struct Series {
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// One chart: what it shows (its panel) and its lines.
pub struct Chart<'p> {
    pub panel: &'p Panel,
    pub series: Vec<Series>,
}

impl Chart<'_> {
    /// Where `y` sits on the chart's y axis: itself, or its log10 (not finite for y <= 0, so
    /// left out like any other value that is not finite).
    fn y_at(&self, y: f64) -> f64 {
        if self.panel.log_y {
            y.log10()
        } else {
            y
        }
    }
}

/// A whole report page: a title with a legend of the runs, the charts two to a row, and a
/// footer line.
pub struct Page<'a> {
    pub title: &'a str,
    pub legend: &'a [(String, RGBColor)],
    pub charts: &'a [Chart<'a>],
    pub footer: &'a str,
}

type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;

/// Turns a drawing error into ours (plotters' errors borrow the backend).
fn drawing<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("drawing the report failed: {e}"))
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Draws `page` and writes it to `path` as PNG.
pub fn save_png(page: &Page, path: &Path) -> Result<()> {
    register_font();
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        let (header, rest) = root.split_vertically(HEADER);
        let (body, footer) = rest.split_vertically(HEIGHT - HEADER - FOOTER);
        draw_header(&header, page)?;
        let rows = page.charts.len().div_ceil(2).max(1);
        for (area, chart) in body.split_evenly((rows, 2)).iter().zip(page.charts) {
            draw_chart(area, chart)?;
        }
        let style = (FONT, 15).into_font().color(&RGBColor(110, 110, 110));
        drawing(footer.draw(&Text::new(page.footer.to_string(), (30, 8), style)))?;
        drawing(root.present())?;
    }
    image::save_buffer(path, &pixels, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The title and a row of legend entries (a line in the run's colour, its name).
fn draw_header(area: &Area, page: &Page) -> Result<()> {
    let title = (FONT, 30).into_font().color(&BLACK);
    drawing(area.draw(&Text::new(page.title.to_string(), (30, 20), title)))?;
    let label = (FONT, 20).into_font().color(&BLACK);
    let mut x = 330;
    for (name, color) in page.legend {
        let line = PathElement::new(vec![(x, 34), (x + 40, 34)], color.stroke_width(4));
        drawing(area.draw(&line))?;
        drawing(area.draw(&Text::new(name.clone(), (x + 50, 23), label.clone())))?;
        let (width, _) = drawing(area.estimate_text_size(name, &label))?;
        x += 90 + width as i32;
    }
    Ok(())
}

/// The range of `get` over the points the chart draws (x and y on its axes finite), padded
/// by 5 %.
fn bounds(chart: &Chart, get: fn(&(f64, f64)) -> f64) -> Option<(f64, f64)> {
    let values = drawn(chart, chart.series.iter().flat_map(|s| s.points.iter())).map(|p| get(&p));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Some((lo - pad, hi + pad))
}

/// The epoch axis: whole epochs, one beyond the data on each side, so that ticks fall on
/// whole epochs only.
pub fn epoch_range(lo: f64, hi: f64) -> (u32, u32) {
    let first = lo.round().max(1.0) as u32;
    let last = hi.round().max(1.0) as u32;
    (first - 1, last + 1)
}

/// The step axis: whole steps covering the (padded) data, at least one step wide.
pub fn step_range(lo: f64, hi: f64) -> (u64, u64) {
    let first = lo.floor().max(0.0) as u64;
    let last = (hi.ceil().max(0.0) as u64).max(first + 1);
    (first, last)
}

/// A y tick label: scientific for small magnitudes (learning rates), plain otherwise.
fn y_label(v: &f64) -> String {
    // A tick at zero may come out as a rounding residue like -3.4e-21.
    if v.abs() < 1e-12 {
        return "0".into();
    }
    if v.abs() < 1e-2 {
        format!("{v:.1e}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The points of `points` the chart draws, with y on its axis: x and y finite there.
fn drawn<'p>(
    chart: &'p Chart,
    points: impl Iterator<Item = &'p (f64, f64)> + 'p,
) -> impl Iterator<Item = (f64, f64)> + 'p {
    points
        .map(|&(x, y)| (x, chart.y_at(y)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

fn draw_chart(area: &Area, chart: &Chart) -> Result<()> {
    let area = area.margin(6, 6, 10, 24);
    let (Some(x), Some(y)) = (bounds(chart, |p| p.0), bounds(chart, |p| p.1)) else {
        let caption = (FONT, 24).into_font().color(&BLACK);
        drawing(area.draw(&Text::new(chart.panel.title, (60, 10), caption)))?;
        let gray = (FONT, 20).into_font().color(&RGBColor(120, 120, 120));
        return drawing(area.draw(&Text::new("no data", (100, 200), gray)));
    };
    match chart.panel.x {
        Axis::Step => {
            let (first, last) = step_range(x.0, x.1);
            let range = RangedCoordu64::from(first..last);
            plot(&area, chart, range, y, |v| v.round() as u64)
        }
        Axis::Epoch => {
            let (first, last) = epoch_range(x.0, x.1);
            let range = RangedCoordu32::from(first..last);
            plot(&area, chart, range, y, |v| v.round() as u32)
        }
    }
}

/// Axes, grid, labels and lines of `chart` in `area`; `to_x` turns a point's x into the
/// axis' value type.
fn plot<X, XT>(
    area: &Area,
    chart: &Chart,
    x_range: X,
    (y_lo, y_hi): (f64, f64),
    to_x: impl Fn(f64) -> XT,
) -> Result<()>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    XT: Clone + 'static,
{
    let mut ctx = drawing(
        ChartBuilder::on(area)
            .caption(chart.panel.title, (FONT, 24))
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(x_range, y_lo..y_hi),
    )?;
    let x_label = match chart.panel.x {
        Axis::Step => "step",
        Axis::Epoch => "epoch",
    };
    // a log axis is drawn as log10 of the values, its ticks labelled with the values
    let tick = |v: &f64| {
        y_label(&if chart.panel.log_y {
            10f64.powf(*v)
        } else {
            *v
        })
    };
    drawing(
        ctx.configure_mesh()
            .x_desc(x_label)
            .y_desc(chart.panel.y_label)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 16))
            .y_label_formatter(&tick)
            .light_line_style(TRANSPARENT)
            .draw(),
    )?;
    for series in &chart.series {
        let points: Vec<(XT, f64)> = drawn(chart, series.points.iter())
            .map(|(x, y)| (to_x(x), y))
            .collect();
        let style = series.color.stroke_width(2);
        if series.dashed {
            drawing(ctx.draw_series(DashedLineSeries::new(points.clone(), 8, 6, style)))?;
        } else {
            drawing(ctx.draw_series(LineSeries::new(points.clone(), style)))?;
        }
        // Markers where points are few enough to tell apart (per-epoch series).
        if points.len() <= 60 {
            let marker = |p: (XT, f64)| Circle::new(p, 4, series.color.filled());
            drawing(ctx.draw_series(points.into_iter().map(marker)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_label_whole_steps_and_readable_rates() {
        assert_eq!(step_range(-0.7, 14.7), (0, 15));
        assert_eq!(step_range(3.0, 3.0), (3, 4));
        assert_eq!(y_label(&0.0006), "6.0e-4");
        assert_eq!(y_label(&0.5), "0.5");
        assert_eq!(y_label(&2.0), "2");
        assert_eq!(y_label(&-3.4e-21), "0");
    }

    /// Learning rates a decade apart take the same room on a log axis; a rate of 0 has no
    /// place on it and is left out.
    fn panel(x: Axis, log_y: bool) -> Panel {
        Panel {
            title: "t",
            x,
            y_label: "y",
            log_y,
        }
    }

    #[test]
    fn a_log_axis_spaces_decades_evenly() {
        let lr = panel(Axis::Step, true);
        let chart = Chart {
            panel: &lr,
            series: vec![Series {
                color: PALETTE[0],
                points: vec![(1.0, 1e-4), (2.0, 1e-5), (3.0, 1e-6), (4.0, 0.0)],
                dashed: false,
            }],
        };
        let (lo, hi) = bounds(&chart, |p| p.1).unwrap();
        assert!(
            (lo + 6.1).abs() < 1e-9 && (hi + 3.9).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(bounds(&chart, |p| p.0), Some((0.9, 3.1)));
    }

    #[test]
    fn the_epoch_axis_spans_whole_epochs() {
        assert_eq!(epoch_range(0.9, 3.1), (0, 4));
        assert_eq!(epoch_range(0.95, 1.05), (0, 2));
        assert_eq!(epoch_range(10.8, 15.2), (10, 16));
    }

    #[test]
    fn a_page_is_drawn_with_every_run_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.png");
        let line = |color, dashed| Series {
            color,
            points: vec![(1.0, 0.2), (2.0, 0.5), (3.0, 0.4)],
            dashed,
        };
        let panels = [
            panel(Axis::Step, false),
            panel(Axis::Epoch, false),
            panel(Axis::Step, true),
        ];
        let chart = |panel| Chart {
            panel,
            series: vec![line(PALETTE[0], false), line(PALETTE[1], true)],
        };
        // five charts: three rows, the last with one
        let charts = [
            chart(&panels[0]),
            chart(&panels[1]),
            Chart {
                panel: &panels[1],
                series: vec![],
            },
            chart(&panels[2]),
            chart(&panels[1]),
        ];
        let legend = [("a".to_string(), PALETTE[0]), ("b".to_string(), PALETTE[1])];
        let page = Page {
            title: "vggtiny report",
            legend: &legend,
            charts: &charts,
            footer: "runs: a b",
        };
        save_png(&page, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        let count = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        assert!(count(PALETTE[0]) > 200 && count(PALETTE[1]) > 200);
        // text was drawn: dark pixels in the header
        let dark = (0..400)
            .flat_map(|x| (0..HEADER).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 80)
            .count();
        assert!(dark > 100, "{dark}");
    }
}

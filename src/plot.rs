//! Just enough raster plotting for `vggtiny report`: line charts with axes, ticks, labels and a
//! legend, drawn into an RGB buffer and saved as PNG.

use std::path::Path;

use anyhow::{Context, Result};

use crate::font;

pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [20, 20, 20];
pub const GRAY: Rgb = [120, 120, 120];
const GRID: Rgb = [225, 225, 225];
const WHITE: Rgb = [255, 255, 255];

/// Distinct colours for the runs of a report, in order.
pub const PALETTE: [Rgb; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
    [140, 86, 75],
    [227, 119, 194],
];

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// One chart: a title, axis names and its lines.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// A screen rectangle: left, top, width, height.
#[derive(Clone, Copy)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    fn put(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = (y as usize * self.width + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    pub fn fill(&mut self, r: Rect, color: Rgb) {
        for y in r.y as i64..(r.y + r.h) as i64 {
            for x in r.x as i64..(r.x + r.w) as i64 {
                self.put(x, y, color);
            }
        }
    }

    /// A line `width` pixels thick; dashed lines alternate 8 pixels drawn, 6 skipped.
    pub fn line(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        color: Rgb,
        width: i64,
        dashed: bool,
    ) {
        let length = (x1 - x0).hypot(y1 - y0);
        let steps = (length * 2.0).ceil().max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            if dashed && (t * length) % 14.0 > 8.0 {
                continue;
            }
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dy in 0..width {
                for dx in 0..width {
                    self.put(x as i64 + dx - width / 2, y as i64 + dy - width / 2, color);
                }
            }
        }
    }

    /// Pixel width of `text` at `scale`.
    pub fn text_width(text: &str, scale: usize) -> f64 {
        (text.chars().count() * (font::WIDTH + 1) * scale) as f64
    }

    /// Draws `text` with its top-left corner at (x, y); `vertical` reads bottom to top.
    pub fn text(&mut self, x: f64, y: f64, text: &str, color: Rgb, scale: usize, vertical: bool) {
        for (n, c) in text.chars().enumerate() {
            let advance = (n * (font::WIDTH + 1) * scale) as i64;
            for (row, bits) in font::glyph(c).iter().enumerate() {
                for (col, bit) in bits.chars().enumerate() {
                    if bit != '#' {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let (u, v) = ((col * scale + sx) as i64, (row * scale + sy) as i64);
                            let (px, py) = if vertical {
                                (x as i64 + v, y as i64 - advance - u)
                            } else {
                                (x as i64 + advance + u, y as i64 + v)
                            };
                            self.put(px, py, color);
                        }
                    }
                }
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        image::save_buffer(
            path,
            &self.pixels,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// About five round tick values (1, 2 or 5 times a power of ten) within [lo, hi], and their step.
pub fn ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A tick label: plain with the decimals the step needs, scientific for small magnitudes.
pub fn tick_label(value: f64, step: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    if step < 1e-3 {
        return format!("{value:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// Draws `chart` inside `area`: frame, grid, ticks, labels, lines.
pub fn draw_chart(canvas: &mut Canvas, area: Rect, chart: &Chart) {
    let plot = Rect {
        x: area.x + 90.0,
        y: area.y + 40.0,
        w: area.w - 110.0,
        h: area.h - 95.0,
    };
    let title_x = area.x + (area.w - Canvas::text_width(&chart.title, 2)) / 2.0;
    canvas.text(title_x, area.y + 10.0, &chart.title, BLACK, 2, false);
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<&(f64, f64)> = points
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        canvas.text(
            plot.x + 20.0,
            plot.y + plot.h / 2.0,
            "no data",
            GRAY,
            2,
            false,
        );
        return;
    }
    let bounds = |get: fn(&(f64, f64)) -> f64| {
        let lo = finite.iter().map(|p| get(p)).fold(f64::INFINITY, f64::min);
        let hi = finite
            .iter()
            .map(|p| get(p))
            .fold(f64::NEG_INFINITY, f64::max);
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else {
            lo.abs().max(1.0) * 0.05
        };
        (lo - pad, hi + pad)
    };
    let (x_lo, x_hi) = bounds(|p| p.0);
    let (y_lo, y_hi) = bounds(|p| p.1);
    let sx = |x: f64| plot.x + (x - x_lo) / (x_hi - x_lo) * plot.w;
    let sy = |y: f64| plot.y + plot.h - (y - y_lo) / (y_hi - y_lo) * plot.h;

    let (x_ticks, x_step) = ticks(x_lo, x_hi);
    for &t in &x_ticks {
        let x = sx(t);
        canvas.line((x, plot.y), (x, plot.y + plot.h), GRID, 1, false);
        let label = tick_label(t, x_step);
        let w = Canvas::text_width(&label, 2);
        canvas.text(x - w / 2.0, plot.y + plot.h + 8.0, &label, BLACK, 2, false);
    }
    let (y_ticks, y_step) = ticks(y_lo, y_hi);
    for &t in &y_ticks {
        let y = sy(t);
        canvas.line((plot.x, y), (plot.x + plot.w, y), GRID, 1, false);
        let label = tick_label(t, y_step);
        let w = Canvas::text_width(&label, 2);
        canvas.text(plot.x - w - 8.0, y - 7.0, &label, BLACK, 2, false);
    }
    let corners = [
        (plot.x, plot.y),
        (plot.x + plot.w, plot.y),
        (plot.x + plot.w, plot.y + plot.h),
        (plot.x, plot.y + plot.h),
    ];
    for i in 0..4 {
        canvas.line(corners[i], corners[(i + 1) % 4], BLACK, 1, false);
    }
    let x_label_x = plot.x + (plot.w - Canvas::text_width(&chart.x_label, 2)) / 2.0;
    canvas.text(
        x_label_x,
        plot.y + plot.h + 32.0,
        &chart.x_label,
        BLACK,
        2,
        false,
    );
    let y_label_y = plot.y + (plot.h + Canvas::text_width(&chart.y_label, 2)) / 2.0;
    canvas.text(area.x + 8.0, y_label_y, &chart.y_label, BLACK, 2, true);

    for series in &chart.series {
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        for w in pts.windows(2) {
            canvas.line(w[0], w[1], series.color, 2, series.dashed);
        }
        // Markers where points are few enough to tell apart (per-epoch series).
        if pts.len() <= 60 {
            for &(x, y) in &pts {
                canvas.fill(
                    Rect {
                        x: x - 3.0,
                        y: y - 3.0,
                        w: 7.0,
                        h: 7.0,
                    },
                    series.color,
                );
            }
        }
    }
}

/// A row of legend entries (swatch and label) starting at (x, y).
pub fn legend(canvas: &mut Canvas, x: f64, y: f64, entries: &[(String, Rgb, bool)]) {
    let mut at = x;
    for (label, color, dashed) in entries {
        canvas.line((at, y + 7.0), (at + 40.0, y + 7.0), *color, 3, *dashed);
        canvas.text(at + 50.0, y, label, BLACK, 2, false);
        at += 80.0 + Canvas::text_width(label, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), (vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0], 2.0));
        let (t, _) = ticks(0.13, 0.87);
        assert!(
            t.iter().all(|v| (0.13..=0.87).contains(v)) && t.len() >= 3,
            "{t:?}"
        );
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(1500.0, 500.0), "1500");
        assert_eq!(tick_label(0.0003, 0.0001), "3.0e-4");
    }

    #[test]
    fn drawing_marks_pixels_inside_the_canvas_only() {
        let mut c = Canvas::new(100, 50);
        c.line((-10.0, 25.0), (200.0, 25.0), BLACK, 2, false);
        c.text(2.0, 2.0, "Ag", BLACK, 1, false);
        let inked = c.pixels.chunks(3).filter(|p| p[0] == BLACK[0]).count();
        assert!(inked > 100, "{inked}");
    }
}

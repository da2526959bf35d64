//! The chart kinds and how each is drawn. Every chart draws onto any plotters backend, so
//! the SVG and the PNG of a chart come from the same code.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Axis, FONT};
use crate::metrics::Interval;
use crate::story::format_number;

/// Tableau 10: distinguishable, colour-blind-aware, prints well in grey.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

const WIDTH: u32 = 960;
const TITLE_SIZE: u32 = 24;
const LABEL_SIZE: u32 = 15;
const DESC_SIZE: u32 = 17;

fn e<E: std::fmt::Display>(x: E) -> anyhow::Error {
    anyhow!("drawing failed: {x}")
}

/// A chart that can draw itself on any backend.
pub trait Draw {
    fn kind(&self) -> &'static str;
    fn title(&self) -> String;
    fn caption(&self) -> String;
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

pub fn to_svg<T: Draw>(c: &T) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, c.size()).into_drawing_area();
        c.draw(&root)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Draws into memory, encodes the PNG and writes it atomically: a full disk leaves no
/// truncated image under the final name, and the error is the plain I/O one.
pub fn to_png<T: Draw>(c: &T, path: &Path) -> Result<()> {
    let (w, h) = c.size();
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        c.draw(&root)?;
        root.present().map_err(e)?;
    }
    let img = image::RgbImage::from_raw(w, h, pixels)
        .ok_or_else(|| anyhow::anyhow!("a {w}x{h} chart has the wrong number of pixels"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|err| anyhow::anyhow!("cannot encode {}: {err}", path.display()))?;
    crate::workspace::atomic_write(path, &png)
}

/// Pixels a label needs at the label font size (DejaVu Sans averages ~0.6 em per glyph).
fn text_width(s: &str, size: u32) -> u32 {
    (s.chars().count() as f64 * size as f64 * 0.6).ceil() as u32
}

/// A value range with some air around it; never empty.
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let d = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        return (lo - d, hi + d);
    }
    (lo - span * frac, hi + span * frac)
}

fn tick(x: f64) -> String {
    super::compact_number(x)
}

/// Ticks at 1, 2 and 5 times each power of ten inside `[lo, hi]` (values, not logs), as log10:
/// the labels of a log axis then read 0.05, 0.1, 0.2, … rather than arbitrary fractions.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for e in a..=b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v.log10());
            }
        }
    }
    if out.len() < 2 {
        out = vec![lo.log10(), hi.log10()];
    }
    out
}

/// A linear f64 axis whose ticks are given, not chosen by plotters: the swept values of a
/// sweep, the 1-2-5 ticks of a log axis.
#[derive(Clone)]
struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + ((limit.1 - limit.0) as f64 * t).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks
                .iter()
                .copied()
                .filter(|t| self.range.start <= *t && *t <= self.range.end)
                .collect()
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// About `n` round ticks over `[lo, hi]` (steps of 1, 2 or 5 times a power of ten).
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 {
        return vec![lo];
    }
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| {
            (span / a - n as f64)
                .abs()
                .total_cmp(&(span / b - n as f64).abs())
        })
        .unwrap_or(mag);
    // Multiples of the step, computed (not accumulated) so 0.6 does not drift to 0.6000000001.
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// The corner of the plot with the fewest points near it, for the legend.
fn emptiest_corner(points: &[(f64, f64)], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let near = |cx: f64, cy: f64| {
        points
            .iter()
            .filter(|(px, py)| {
                ((px - cx) / (x.1 - x.0)).abs() < 0.45 && ((py - cy) / (y.1 - y.0)).abs() < 0.35
            })
            .count()
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, x.1, y.1),
        (SeriesLabelPosition::LowerRight, x.1, y.0),
        (SeriesLabelPosition::UpperLeft, x.0, y.1),
        (SeriesLabelPosition::LowerLeft, x.0, y.0),
    ];
    corners
        .into_iter()
        .min_by_key(|(_, cx, cy)| near(*cx, *cy))
        .map(|(p, _, _)| p)
        .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// The `kind`, `title` and `caption` of a chart whose struct has `title` and `caption` fields.
macro_rules! chart_text {
    ($kind:literal) => {
        fn kind(&self) -> &'static str {
            $kind
        }
        fn title(&self) -> String {
            self.title.clone()
        }
        fn caption(&self) -> String {
            self.caption.clone()
        }
    };
}

/// The frame every chart shares: the title on top, the margin, the x label area; the y label
/// area is as wide as the chart's labels need.
fn chart_builder<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_label_area: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, TITLE_SIZE))
        .margin(18)
        .x_label_area_size(56)
        .y_label_area_size(y_label_area);
    builder
}

/// The mesh of a chart, with the fonts every chart uses for tick labels and axis descriptions.
fn mesh<'a, 'b, DB, X, Y>(
    chart: &'b mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> MeshStyle<'a, 'b, X, Y, DB>
where
    DB: DrawingBackend,
    X: Ranged + ValueFormatter<X::ValueType>,
    Y: Ranged + ValueFormatter<Y::ValueType>,
{
    let mut mesh = chart.configure_mesh();
    mesh.label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, DESC_SIZE));
    mesh
}

/// The legend box, at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, LABEL_SIZE))
        .draw()
        .map_err(e)
}

/// The legend mark of a line series: a short stroke.
fn line_legend(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style)
}

/// A value and the ends of its interval (the value itself where it has none).
fn value_and_ends(v: f64, iv: Option<Interval>) -> [f64; 3] {
    [v, iv.map_or(v, |i| i.low), iv.map_or(v, |i| i.high)]
}

/// An axis description, marked when the axis is drawn on a log scale.
fn log_desc(desc: String, log: bool) -> String {
    if log {
        format!("{desc} (log scale)")
    } else {
        desc
    }
}

/// The label of a tick at `v` on an axis that is drawn as log10 of the value when `log`.
fn log_tick(v: f64, log: bool) -> String {
    tick(if log { 10f64.powf(v) } else { v })
}

/// The ticks of an axis over the values `[lo, hi]`, drawn over `[a0, a1]`: 1-2-5 ticks on a log
/// axis, round ones otherwise.
fn axis_ticks(log: bool, lo: f64, hi: f64, a0: f64, a1: f64) -> Vec<f64> {
    if log {
        log_ticks(lo, hi)
    } else {
        nice_ticks(a0, a1, 8)
    }
}

// ---------------------------------------------------------------------------------------------
// Bars

/// One horizontal bar per case, best-ranked at the top, with interval whiskers.
pub struct BarChart {
    pub title: String,
    pub axis: Axis,
    /// (case label, value, interval)
    pub rows: Vec<(String, f64, Option<Interval>)>,
    pub caption: String,
}

impl Draw for BarChart {
    chart_text!("bar");
    fn size(&self) -> (u32, u32) {
        (WIDTH, (150 + 34 * self.rows.len() as u32).clamp(240, 1400))
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(e)?;
        let n = self.rows.len();
        if n == 0 {
            return Ok(());
        }
        let lo = self
            .rows
            .iter()
            .map(|r| r.2.map_or(r.1, |i| i.low.min(r.1)))
            .fold(0.0_f64, f64::min);
        let hi = self
            .rows
            .iter()
            .map(|r| r.2.map_or(r.1, |i| i.high.max(r.1)))
            .fold(0.0_f64, f64::max);
        let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
        // Bars start at zero (so their lengths compare honestly); the right margin holds the text.
        let x0 = if lo < 0.0 { lo - span * 0.05 } else { 0.0 };
        let x1 = hi + span * 0.5;
        let label_w = self
            .rows
            .iter()
            .map(|r| text_width(&r.0, LABEL_SIZE))
            .max()
            .unwrap_or(40)
            .clamp(40, 420)
            + 16;
        let labels: Vec<&str> = self.rows.iter().map(|r| r.0.as_str()).collect();
        let mut chart = chart_builder(root, &self.title, label_w)
            .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())
            .map_err(e)?;
        let ylabel = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].to_string(),
            _ => String::new(),
        };
        mesh(&mut chart)
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&ylabel)
            // The axis runs past the data to make room for the value text: no ticks out there.
            .x_label_formatter(&|x| {
                if *x <= hi + span * 1e-9 {
                    tick(*x)
                } else {
                    String::new()
                }
            })
            .x_desc(self.axis.described())
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        let color = PALETTE[0];
        chart
            .draw_series(self.rows.iter().enumerate().map(|(k, r)| {
                let i = n - 1 - k;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (r.1, SegmentValue::Exact(i + 1)),
                    ],
                    color.mix(0.85).filled(),
                );
                bar.set_margin(7, 7, 0, 0);
                bar
            }))
            .map_err(e)?;
        chart
            .draw_series(self.rows.iter().enumerate().filter_map(|(k, r)| {
                r.2.map(|iv| {
                    ErrorBar::new_horizontal(
                        SegmentValue::CenterOf(n - 1 - k),
                        iv.low,
                        r.1,
                        iv.high,
                        BLACK.stroke_width(2),
                        12,
                    )
                })
            }))
            .map_err(e)?;
        let style =
            TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(self.rows.iter().enumerate().map(|(k, r)| {
                let end = r.2.map_or(r.1, |iv| iv.high.max(r.1)).max(0.0);
                let text = match r.2 {
                    Some(iv) => format!(
                        "{}  [{}, {}]",
                        format_number(r.1),
                        format_number(iv.low),
                        format_number(iv.high)
                    ),
                    None => format_number(r.1),
                };
                Text::new(
                    text,
                    (end + span * 0.035, SegmentValue::CenterOf(n - 1 - k)),
                    style.clone(),
                )
            }))
            .map_err(e)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Trade-off scatter

#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    /// Points of one group share a colour (the algorithm).
    pub group: String,
    pub x: f64,
    pub y: f64,
    pub x_iv: Option<Interval>,
    pub y_iv: Option<Interval>,
    pub on_frontier: bool,
}

/// Two metrics of every case against each other, with the Pareto frontier: the cases no other
/// case beats on both metrics at once.
pub struct ScatterChart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub points: Vec<Point>,
    pub frontier: Vec<(f64, f64)>,
    pub caption: String,
}

/// Indices of the points no other point dominates (at least as good on both axes and better
/// on one), for the given directions.
pub fn pareto_front(points: &[(f64, f64)], x_higher: bool, y_higher: bool) -> Vec<usize> {
    let better = |a: f64, b: f64, higher: bool| if higher { a > b } else { a < b };
    let at_least = |a: f64, b: f64, higher: bool| if higher { a >= b } else { a <= b };
    (0..points.len())
        .filter(|&i| {
            let (xi, yi) = points[i];
            !points.iter().enumerate().any(|(j, &(xj, yj))| {
                j != i
                    && at_least(xj, xi, x_higher)
                    && at_least(yj, yi, y_higher)
                    && (better(xj, xi, x_higher) || better(yj, yi, y_higher))
            })
        })
        .collect()
}

impl ScatterChart {
    pub fn new(title: String, x: Axis, y: Axis, mut points: Vec<Point>) -> Self {
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.y)).collect();
        let front = pareto_front(
            &xy,
            x.higher_is_better.unwrap_or(true),
            y.higher_is_better.unwrap_or(true),
        );
        for &i in &front {
            points[i].on_frontier = true;
        }
        let mut frontier: Vec<(f64, f64)> = front.iter().map(|&i| xy[i]).collect();
        frontier.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        frontier.dedup();
        let caption = format!(
            "Each point is a case: up is {}, right is {}. The line joins the {} case(s) on the Pareto frontier, which no other case beats on both metrics at once; whiskers: 95 % confidence intervals",
            y.phrase(),
            x.phrase(),
            front.len()
        );
        ScatterChart {
            title,
            x,
            y,
            points,
            frontier,
            caption,
        }
    }
}

impl Draw for ScatterChart {
    chart_text!("scatter");
    fn size(&self) -> (u32, u32) {
        (WIDTH, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(e)?;
        let xs: Vec<f64> = self
            .points
            .iter()
            .flat_map(|p| value_and_ends(p.x, p.x_iv))
            .collect();
        let ys: Vec<f64> = self
            .points
            .iter()
            .flat_map(|p| value_and_ends(p.y, p.y_iv))
            .collect();
        // An axis whose values spread over orders of magnitude (a slow link next to a fast
        // one) is drawn on a log scale, or one outlier squeezes every other case into a line.
        let spread = |v: &[f64]| {
            let (lo, hi) = (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            (lo, hi, lo > 0.0 && hi / lo >= 50.0)
        };
        let (xlo, xhi, lx) = spread(&xs);
        let (ylo, yhi, ly) = spread(&ys);
        let fx = move |v: f64| if lx { v.log10() } else { v };
        let fy = move |v: f64| if ly { v.log10() } else { v };
        let (x0, x1) = padded(fx(xlo), fx(xhi), 0.12);
        let (y0, y1) = padded(fy(ylo), fy(yhi), 0.12);
        let xt = axis_ticks(lx, xlo, xhi, x0, x1);
        let yt = axis_ticks(ly, ylo, yhi, y0, y1);
        let mut chart = chart_builder(root, &self.title, 84)
            .build_cartesian_2d(
                Ticked {
                    range: x0..x1,
                    ticks: xt,
                },
                Ticked {
                    range: y0..y1,
                    ticks: yt,
                },
            )
            .map_err(e)?;
        mesh(&mut chart)
            .x_desc(log_desc(self.x.described(), lx))
            .y_desc(log_desc(self.y.described(), ly))
            .x_label_formatter(&|v| log_tick(*v, lx))
            .y_label_formatter(&|v| log_tick(*v, ly))
            .draw()
            .map_err(e)?;
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(LineSeries::new(
                self.frontier.iter().map(|(x, y)| (fx(*x), fy(*y))),
                grey.stroke_width(2),
            ))
            .map_err(e)?
            .label("Pareto frontier")
            .legend(line_legend(grey.stroke_width(2)));
        // Whiskers first so the points sit on top.
        let whisker = BLACK.mix(0.35).stroke_width(1);
        chart
            .draw_series(self.points.iter().filter_map(|p| {
                p.y_iv.map(|i| {
                    ErrorBar::new_vertical(fx(p.x), fy(i.low), fy(p.y), fy(i.high), whisker, 8)
                })
            }))
            .map_err(e)?;
        chart
            .draw_series(self.points.iter().filter_map(|p| {
                p.x_iv.map(|i| {
                    ErrorBar::new_horizontal(fy(p.y), fx(i.low), fx(p.x), fx(i.high), whisker, 8)
                })
            }))
            .map_err(e)?;
        let mut groups: Vec<&str> = Vec::new();
        for p in &self.points {
            if !groups.contains(&p.group.as_str()) {
                groups.push(&p.group);
            }
        }
        for (gi, g) in groups.iter().enumerate() {
            let color = PALETTE[gi % PALETTE.len()];
            chart
                .draw_series(self.points.iter().filter(|p| p.group == *g).map(|p| {
                    Circle::new(
                        (fx(p.x), fy(p.y)),
                        if p.on_frontier { 7 } else { 5 },
                        color.filled(),
                    )
                }))
                .map_err(e)?
                .label(g.to_string())
                .legend(move |(x, y)| Circle::new((x + 11, y), 6, color.filled()));
        }
        // Name the frontier cases; the others are in the leaderboard. A label that would run off
        // the right edge goes to the left of its point.
        let left = TextStyle::from((FONT, LABEL_SIZE - 2).into_font())
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        let right = TextStyle::from((FONT, LABEL_SIZE - 2).into_font())
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        chart
            .draw_series(self.points.iter().filter(|p| p.on_frontier).map(|p| {
                let room = (x1 - fx(p.x)) / (x1 - x0) * (WIDTH as f64 - 120.0);
                let fits = (text_width(&p.label, LABEL_SIZE - 2) as f64) < room;
                EmptyElement::at((fx(p.x), fy(p.y)))
                    + Text::new(
                        p.label.clone(),
                        if fits { (9, -6) } else { (-9, -6) },
                        if fits { left.clone() } else { right.clone() },
                    )
            }))
            .map_err(e)?;
        let pts: Vec<(f64, f64)> = self.points.iter().map(|p| (fx(p.x), fy(p.y))).collect();
        draw_legend(&mut chart, emptiest_corner(&pts, (x0, x1), (y0, y1)))
    }
}

// ---------------------------------------------------------------------------------------------
// Sweep lines

/// One point of a sweep line: (hyperparameter value, metric value, interval of the metric).
pub type SweepPoint = (f64, f64, Option<Interval>);

/// A metric against a swept hyperparameter, one line per combination of the other settings.
pub struct LineChart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    /// (series name, points (x, y, interval of y) sorted by x)
    pub series: Vec<(String, Vec<SweepPoint>)>,
    /// Draw x on a log scale (the values span two decades or more, e.g. learning rates).
    pub log_x: bool,
    pub caption: String,
}

impl Draw for LineChart {
    chart_text!("line");
    fn size(&self) -> (u32, u32) {
        (WIDTH, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(e)?;
        // A log axis is drawn as log10 of the value with ticks labelled by the value itself.
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let pts = self.series.iter().flat_map(|(_, p)| p.iter());
        let (x0, x1) = padded(
            pts.clone().map(|p| tx(p.0)).fold(f64::INFINITY, f64::min),
            pts.clone()
                .map(|p| tx(p.0))
                .fold(f64::NEG_INFINITY, f64::max),
            0.06,
        );
        let ylo = pts
            .clone()
            .map(|p| p.2.map_or(p.1, |i| i.low))
            .fold(f64::INFINITY, f64::min);
        let yhi = pts
            .map(|p| p.2.map_or(p.1, |i| i.high))
            .fold(f64::NEG_INFINITY, f64::max);
        let (y0, y1) = padded(ylo, yhi, 0.1);
        // Ticks sit exactly at the swept values.
        let mut swept: Vec<f64> = self
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| tx(q.0)))
            .collect();
        swept.sort_by(f64::total_cmp);
        swept.dedup();
        let mut chart = chart_builder(root, &self.title, 84)
            .build_cartesian_2d(
                Ticked {
                    range: x0..x1,
                    ticks: swept,
                },
                y0..y1,
            )
            .map_err(e)?;
        let log = self.log_x;
        mesh(&mut chart)
            .x_desc(log_desc(self.x.described(), log))
            .y_desc(self.y.described())
            .x_label_formatter(&|v| log_tick(*v, log))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        for (si, (name, p)) in self.series.iter().enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            chart
                .draw_series(p.iter().filter_map(|(x, y, iv)| {
                    iv.map(|i| {
                        ErrorBar::new_vertical(
                            tx(*x),
                            i.low,
                            *y,
                            i.high,
                            color.mix(0.6).stroke_width(1),
                            8,
                        )
                    })
                }))
                .map_err(e)?;

            chart
                .draw_series(
                    LineSeries::new(
                        p.iter().map(|(x, y, _)| (tx(*x), *y)),
                        color.stroke_width(2),
                    )
                    .point_size(4),
                )
                .map_err(e)?
                .label(name.clone())
                .legend(line_legend(color.stroke_width(3)));
        }
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| (tx(q.0), q.1)))
            .collect();
        draw_legend(&mut chart, emptiest_corner(&pts, (x0, x1), (y0, y1)))
    }
}

// ---------------------------------------------------------------------------------------------
// Heatmap

/// A numeric matrix a case stored (e.g. the lifelong accuracy matrix), one cell per value.
#[derive(Debug, Clone)]
pub struct HeatmapChart {
    pub title: String,
    pub caption: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// The header's top-left cell: what the rows are (e.g. `trained on \ tested on`).
    pub corner: String,
    pub values: Vec<Vec<Option<f64>>>,
}

impl Draw for HeatmapChart {
    chart_text!("heatmap");
    fn size(&self) -> (u32, u32) {
        // Cells wide enough for their column labels, so long task names do not run together.
        let rows = self.row_labels.len() as u32;
        let cell = self
            .col_labels
            .iter()
            .map(|l| text_width(l, LABEL_SIZE) + 14)
            .max()
            .unwrap_or(0)
            .clamp(60, 220);
        let label_w = self
            .row_labels
            .iter()
            .map(|l| text_width(l, LABEL_SIZE))
            .max()
            .unwrap_or(20)
            .clamp(20, 300)
            + 60;
        (
            (label_w + 60 + cell * self.col_labels.len() as u32).clamp(480, 1800),
            (170 + 60 * rows).clamp(300, 1200),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(e)?;
        let (rows, cols) = (self.row_labels.len(), self.col_labels.len());
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let vals: Vec<f64> = self.values.iter().flatten().flatten().copied().collect();
        let (lo, hi) = (
            vals.iter().copied().fold(f64::INFINITY, f64::min),
            vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let label_w = self
            .row_labels
            .iter()
            .map(|l| text_width(l, LABEL_SIZE))
            .max()
            .unwrap_or(20)
            .clamp(20, 300)
            + 16;
        let mut chart = chart_builder(
            root,
            &self.title,
            label_w + if self.corner.is_empty() { 0 } else { 28 },
        )
        .build_cartesian_2d(
            (0..cols - 1).into_segmented(),
            (0..rows - 1).into_segmented(),
        )
        .map_err(e)?;
        let xl = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < cols => self.col_labels[*i].clone(),
            _ => String::new(),
        };
        let yl = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < rows => self.row_labels[rows - 1 - *i].clone(),
            _ => String::new(),
        };
        let (xdesc, ydesc) = match self.corner.split_once(['\\', '/']) {
            Some((r, c)) => (c.trim().to_string(), r.trim().to_string()),
            // A corner that names only the rows (`after_round`) leaves the column labels to
            // speak for themselves.
            None => (
                String::new(),
                if self.corner.is_empty() {
                    "row".to_string()
                } else {
                    self.corner.clone()
                },
            ),
        };
        mesh(&mut chart)
            .disable_mesh()
            .x_labels(cols)
            .y_labels(rows)
            .x_label_formatter(&xl)
            .y_label_formatter(&yl)
            .x_desc(xdesc)
            .y_desc(ydesc)
            .draw()
            .map_err(e)?;
        let cells: Vec<(usize, usize, Option<f64>)> = self
            .values
            .iter()
            .enumerate()
            .flat_map(|(r, row)| row.iter().enumerate().map(move |(c, v)| (r, c, *v)))
            .collect();
        let norm = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        chart
            .draw_series(cells.iter().map(|&(r, c, v)| {
                let y = rows - 1 - r;
                let fill = match v {
                    Some(v) => ViridisRGB::get_color(norm(v)).filled(),
                    None => RGBColor(235, 235, 235).filled(),
                };
                let mut cell = Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1)),
                    ],
                    fill,
                );
                cell.set_margin(1, 1, 1, 1);
                cell
            }))
            .map_err(e)?;
        if rows * cols <= 400 {
            let style = |dark: bool| {
                TextStyle::from((FONT, LABEL_SIZE).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Center))
                    .color(if dark { &WHITE } else { &BLACK })
            };
            chart
                .draw_series(cells.iter().filter_map(|&(r, c, v)| {
                    v.map(|v| {
                        Text::new(
                            super::compact_number(v),
                            (
                                SegmentValue::CenterOf(c),
                                SegmentValue::CenterOf(rows - 1 - r),
                            ),
                            style(norm(v) < 0.55),
                        )
                    })
                }))
                .map_err(e)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Latency distribution

/// Empirical CDF of a per-sample time, one line per case.
pub struct CdfChart {
    pub title: String,
    pub x_label: String,
    /// (case label, values in ms)
    pub series: Vec<(String, Vec<f64>)>,
    pub caption: String,
}

impl Draw for CdfChart {
    chart_text!("cdf");
    fn size(&self) -> (u32, u32) {
        (WIDTH, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(e)?;
        let all = self.series.iter().flat_map(|(_, v)| v.iter().copied());
        let (lo, hi) = (
            all.clone().fold(f64::INFINITY, f64::min),
            all.fold(f64::NEG_INFINITY, f64::max),
        );
        // Latencies spread over orders of magnitude read best on a log axis.
        let log = lo > 0.0 && hi / lo >= 50.0;
        let tx = |x: f64| if log { x.log10() } else { x };
        let (x0, x1) = padded(tx(lo), tx(hi), 0.04);
        let ticks = axis_ticks(log, lo, hi, x0, x1);
        let mut chart = chart_builder(root, &self.title, 84)
            .build_cartesian_2d(
                Ticked {
                    range: x0..x1,
                    ticks,
                },
                0.0..1.02,
            )
            .map_err(e)?;
        mesh(&mut chart)
            .x_desc(log_desc(self.x_label.clone(), log))
            .y_desc("share of samples at or below")
            .x_label_formatter(&|v| log_tick(*v, log))
            .y_label_formatter(&|v| format!("{:.0} %", v * 100.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(e)?;
        for (si, (name, vals)) in self.series.iter().enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            let mut v = vals.clone();
            v.sort_by(f64::total_cmp);
            let n = v.len() as f64;
            // A step function: the share jumps at each observed value.
            let mut steps = Vec::with_capacity(v.len() * 2);
            for (i, x) in v.iter().enumerate() {
                steps.push((tx(*x), i as f64 / n));
                steps.push((tx(*x), (i + 1) as f64 / n));
            }
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))
                .map_err(e)?
                .label(name.clone())
                .legend(line_legend(color.stroke_width(3)));
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t: Vec<f64> = log_ticks(0.07, 4.2)
            .iter()
            .map(|x| (10f64.powf(*x) * 1e6).round() / 1e6)
            .collect();
        assert_eq!(t, vec![0.1, 0.2, 0.5, 1.0, 2.0]);
        let t = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(
            t.iter()
                .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        assert_eq!(nice_ticks(3.0, 47.0, 4), vec![10.0, 20.0, 30.0, 40.0]);
    }

    #[test]
    fn pareto_front_respects_directions() {
        // (latency, accuracy): lower latency and higher accuracy are better.
        let pts = [
            (1.0, 0.80),
            (2.0, 0.90),
            (3.0, 0.85),
            (1.5, 0.80),
            (4.0, 0.95),
        ];
        let mut f = pareto_front(&pts, false, true);
        f.sort();
        assert_eq!(f, vec![0, 1, 4]);
        // Both higher-is-better: only the top-right survives here.
        assert_eq!(
            pareto_front(&[(1.0, 1.0), (2.0, 2.0), (0.5, 1.5)], true, true),
            vec![1]
        );
        // Identical points do not dominate each other.
        assert_eq!(
            pareto_front(&[(1.0, 1.0), (1.0, 1.0)], true, true),
            vec![0, 1]
        );
    }
}

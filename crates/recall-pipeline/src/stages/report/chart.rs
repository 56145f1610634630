//! The report's chart: HitRate@K and NDCG@K at each K of every model and baseline on the test
//! split, one row of panels per seen-filter view, drawn as SVG with plotters.
//!
//! Drawn for reading: one colour per model across every panel (from a palette without pale
//! colours; baselines in greys), a single legend above the panels, K as categories (the
//! configured cut-offs, labelled as integers), light horizontal rules only.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use recall_eval::split::SeenView;

/// One line of the chart: a result row's values at each K.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub view: SeenView,
    /// The view as the panel's title names it (`recent (newest 200)`).
    pub view_label: String,
    /// (metric key, points (K, value)).
    pub metrics: Vec<(&'static str, Vec<(usize, f64)>)>,
}

/// The metrics drawn, with their axis titles.
pub const METRICS: [(&str, &str); 2] = [("hit_rate", "HitRate@K"), ("ndcg", "NDCG@K")];

/// Strong, distinguishable colours for models (Tableau 10 without its olive and grey).
const MODEL_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// The colour of each distinct name: models in order of first appearance, then the baselines
/// in greys.
fn colours(series: &[Series]) -> Vec<(String, RGBColor)> {
    let mut out: Vec<(String, RGBColor)> = Vec::new();
    let mut next = 0;
    let is_baseline = |n: &str| matches!(n, "popularity" | "random");
    let models = series.iter().filter(|s| !is_baseline(&s.name));
    let baselines = series.iter().filter(|s| is_baseline(&s.name));
    for s in models.chain(baselines) {
        if out.iter().any(|(n, _)| *n == s.name) {
            continue;
        }
        let colour = match s.name.as_str() {
            "popularity" => RGBColor(90, 90, 90),
            "random" => RGBColor(170, 170, 170),
            _ => {
                next += 1;
                MODEL_COLOURS[(next - 1) % MODEL_COLOURS.len()]
            }
        };
        out.push((s.name.clone(), colour));
    }
    out
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("chart: {e}")
}

const PANEL_HEIGHT: u32 = 300;
const LEGEND_HEIGHT: u32 = 56;
const WIDTH: u32 = 1100;

/// Draws the grid (a row of panels per view present, in the order none, all, recent; a column
/// per metric) as an SVG document.
pub fn draw(series: &[Series], ks: &[usize]) -> Result<String> {
    let views: Vec<(SeenView, String)> = [SeenView::None, SeenView::All, SeenView::Recent]
        .into_iter()
        .filter_map(|v| {
            series
                .iter()
                .find(|s| s.view == v)
                .map(|s| (v, s.view_label.clone()))
        })
        .collect();
    let colours = colours(series);
    let colour_of = |name: &str| {
        colours
            .iter()
            .find(|(n, _)| n == name)
            .map_or(BLACK, |(_, c)| *c)
    };
    let height = LEGEND_HEIGHT + PANEL_HEIGHT * views.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (legend, panels) = root.split_vertically(LEGEND_HEIGHT);
        legend
            .draw(&Text::new(
                "Test split, exact ranking over the whole catalogue",
                (14, 8),
                ("sans-serif", 20).into_font().color(&BLACK),
            ))
            .map_err(err)?;
        let mut x = 14;
        for (name, colour) in &colours {
            legend
                .draw(&PathElement::new(
                    vec![(x, 41), (x + 26, 41)],
                    colour.stroke_width(3),
                ))
                .map_err(err)?;
            legend
                .draw(&Text::new(
                    name.clone(),
                    (x + 32, 33),
                    ("sans-serif", 18).into_font().color(&BLACK),
                ))
                .map_err(err)?;
            x += 52 + 9 * name.chars().count() as i32;
        }
        let n = ks.len().max(1);
        let cells = panels.split_evenly((views.len().max(1), METRICS.len()));
        let panel_of = views
            .iter()
            .flat_map(|v| METRICS.iter().map(move |m| (v, m)));
        for (area, ((view, view_label), (metric, title))) in cells.iter().zip(panel_of) {
            let lines: Vec<(&str, &Vec<(usize, f64)>)> = series
                .iter()
                .filter(|s| s.view == *view)
                .filter_map(|s| {
                    s.metrics
                        .iter()
                        .find(|(m, _)| m == metric)
                        .map(|(_, p)| (s.name.as_str(), p))
                })
                .collect();
            let y_max = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.12;
            let caption = match view {
                SeenView::None => format!("{title}, unfiltered"),
                _ => format!("{title}, seen filter {view_label}"),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 19))
                .margin(10)
                .margin_left(18)
                .margin_right(28)
                .x_label_area_size(42)
                .y_label_area_size(52)
                .build_cartesian_2d(0..n - 1, 0f64..y_max)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.12))
                .y_labels(6)
                .x_desc("K")
                .x_labels(n)
                .x_label_formatter(&|i| ks.get(*i).map_or_else(String::new, |k| k.to_string()))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(err)?;
            for (name, points) in &lines {
                let colour = colour_of(name);
                let at = |k: usize| ks.iter().position(|&x| x == k).unwrap_or(0);
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|&(k, v)| (at(k), v)),
                        colour.stroke_width(2),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&(k, v)| Circle::new((at(k), v), 3, colour.filled())),
                    )
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, view: SeenView) -> Series {
        Series {
            name: name.into(),
            view,
            view_label: match view {
                SeenView::Recent => "recent (newest 200)".into(),
                v => format!("{v:?}").to_lowercase(),
            },
            metrics: METRICS
                .iter()
                .map(|(m, _)| (*m, vec![(10, 0.1), (50, 0.3), (100, 0.4)]))
                .collect(),
        }
    }

    #[test]
    fn every_series_is_drawn_in_every_view_with_one_legend() {
        let svg = draw(
            &[
                s("youtubednn", SeenView::None),
                s("popularity", SeenView::None),
                s("youtubednn", SeenView::All),
                s("popularity", SeenView::All),
                s("youtubednn", SeenView::Recent),
            ],
            &[10, 50, 100],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        // One legend entry per name, not one per panel.
        assert_eq!(svg.matches("\nyoutubednn\n").count(), 1, "{svg}");
        assert_eq!(svg.matches("\npopularity\n").count(), 1);
        assert!(svg.contains("NDCG@K, seen filter recent (newest 200)"));
        assert!(svg.contains("HitRate@K, unfiltered"));
        // One polyline per series per metric (5 series x 2 metrics) and legend marks.
        assert!(svg.matches("<polyline").count() >= 10, "{svg}");
        // K labelled as the integers configured, never `10.0`.
        assert!(svg.contains("\n50\n") && !svg.contains("\n10.0\n"), "{svg}");
        // Every series line is in a palette colour or a baseline grey (no pale yellow).
        let mut allowed: Vec<String> = MODEL_COLOURS
            .iter()
            .map(|c| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2))
            .collect();
        allowed.extend(["#5A5A5A".into(), "#AAAAAA".into(), "#000000".into()]);
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let stroke = line
                .split("stroke=\"")
                .nth(1)
                .unwrap_or("")
                .get(..7)
                .unwrap_or("");
            assert!(allowed.iter().any(|a| a == stroke), "{line}");
        }
    }
}

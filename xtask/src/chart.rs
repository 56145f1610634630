//! The report's chart: HitRate@K and NDCG@K over K for every model and baseline, without and
//! with seen-item filtering, drawn as SVG with plotters.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One line of the chart: a result row's values at each K.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub filter_seen: bool,
    /// (metric key, points (K, value)).
    pub metrics: Vec<(&'static str, Vec<(f64, f64)>)>,
}

/// The metrics drawn, with their axis titles.
pub const METRICS: [(&str, &str); 2] = [("hit_rate", "HitRate@K"), ("ndcg", "NDCG@K")];

/// Draws the 2 x 2 grid (rows: unfiltered, filtered; columns: the metrics) as an SVG document.
pub fn draw(series: &[Series], ks: &[usize]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
        let k_max = ks.iter().copied().max().unwrap_or(1) as f64;
        for (area, (filter, (metric, title))) in root.split_evenly((2, 2)).iter().zip(
            [false, true]
                .into_iter()
                .flat_map(|f| METRICS.into_iter().map(move |m| (f, m))),
        ) {
            let lines: Vec<(&str, &Vec<(f64, f64)>)> = series
                .iter()
                .filter(|s| s.filter_seen == filter)
                .filter_map(|s| {
                    s.metrics
                        .iter()
                        .find(|(m, _)| *m == metric)
                        .map(|(_, p)| (s.name.as_str(), p))
                })
                .collect();
            let y_max = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.1;
            let caption = format!(
                "{title}{}",
                if filter { ", seen items filtered" } else { "" }
            );
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(0f64..k_max * 1.05, 0f64..y_max)
                .map_err(|e| anyhow!("chart: {e}"))?;
            chart
                .configure_mesh()
                .x_desc("K")
                .y_desc(title)
                .draw()
                .map_err(|e| anyhow!("chart: {e}"))?;
            for (i, (name, points)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| anyhow!("chart: {e}"))?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow!("chart: {e}"))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow!("chart: {e}"))?;
        }
        root.present().map_err(|e| anyhow!("chart: {e}"))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_drawn_with_its_label() {
        let s = |name: &str, filter_seen| Series {
            name: name.into(),
            filter_seen,
            metrics: METRICS
                .iter()
                .map(|(m, _)| (*m, vec![(10.0, 0.1), (50.0, 0.3), (100.0, 0.4)]))
                .collect(),
        };
        let svg = draw(
            &[
                s("youtubednn", false),
                s("popularity", false),
                s("youtubednn", true),
            ],
            &[10, 50, 100],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("youtubednn") && svg.contains("popularity"));
        assert!(svg.contains("NDCG@K, seen items filtered"));
        // One polyline per series per metric (3 series x 2 metrics), plus their legend marks.
        assert!(svg.matches("<polyline").count() >= 6, "{svg}");
    }
}

//! How `cobuy eval` results are shown: a terminal table and a self-contained HTML page with
//! inline SVG plots (no script, no external file: it opens from disk or an email attachment).
//! The plots are plain rectangles and polylines; a plotting crate would need a font backend
//! and a bundled font to lay out its labels, which SVG text gives us for free.

use std::fmt::Write as _;

use super::{EvalReport, KS, MethodResult, Protocol, ProtocolResult};

/// Columns of the terminal table per protocol.
fn columns(protocol: Protocol) -> Vec<String> {
    match protocol {
        Protocol::BoughtTogether => [
            "hit@10",
            "mrr",
            "hit@10 few orders",
            "mrr few orders",
            "hit@10 few-order context",
        ]
        .map(String::from)
        .to_vec(),
        _ => {
            let mut cols = Vec::new();
            for k in KS {
                cols.push(format!("recall@{k}"));
                cols.push(format!("ndcg@{k}"));
                cols.push(format!("phr@{k}"));
            }
            cols.push("recall_repeat@10".into());
            cols.push("recall_explore@10".into());
            cols.push("explore_hit_share@10".into());
            cols
        }
    }
}

/// The results as text tables, one per protocol.
pub fn table(report: &EvalReport) -> String {
    let mut out = String::new();
    let cfg = &report.config;
    let _ = writeln!(
        out,
        "cobuy eval: {} ({} folds, seeds {}..{}, T = {}, users with {}..={} baskets for next basket)",
        report.dataset,
        cfg.folds,
        cfg.seed,
        cfg.seed + cfg.folds as u64 - 1,
        cfg.min_item_baskets,
        cfg.min_user_baskets,
        cfg.max_user_baskets
    );
    for p in &report.protocols {
        let _ = writeln!(out);
        let mean = |v: &[usize]| v.iter().sum::<usize>() / v.len().max(1);
        let _ = writeln!(
            out,
            "{}: {} users, {} test and {} validation cases per fold{}, {:.1} s",
            p.protocol.title(),
            p.users,
            mean(&p.test_cases_per_fold),
            mean(&p.validation_cases_per_fold),
            p.surface
                .map(|s| format!(", cobuy as surface {s}"))
                .unwrap_or_default(),
            p.seconds
        );
        let cols = columns(p.protocol);
        let _ = write!(out, "{:<28}", "method");
        for c in &cols {
            let _ = write!(out, " {c:>17}");
        }
        let _ = writeln!(out);
        for m in &p.methods {
            let _ = write!(out, "{:<28}", m.method);
            for c in &cols {
                let cell = m
                    .metrics
                    .get(c)
                    .map(|v| format!("{:.4}±{:.4}", v.mean, v.std))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(out, " {cell:>17}");
            }
            let _ = writeln!(out);
        }
        for c in &p.comparisons {
            let _ = writeln!(
                out,
                "  cobuy vs best baseline {} on {}: {:+.4} = {} x the larger method std; \
                 paired per fold {:+.4}±{:.4} = {} x its std",
                c.best_baseline,
                c.metric,
                c.cobuy.mean - c.baseline.mean,
                times(c.margin_in_std),
                c.paired_difference.mean,
                c.paired_difference.std,
                times(c.paired_margin_in_std)
            );
        }
    }
    out
}

/// A margin in standard deviations; with one fold there is no spread to compare with.
fn times(margin: f64) -> String {
    if margin.is_finite() {
        format!("{margin:+.1}")
    } else {
        "n/a (one fold)".to_owned()
    }
}

const COLORS: [&str; 8] = [
    "#8c8c8c", "#d4a017", "#b5651d", "#6a5acd", "#2e8b57", "#7fb3d5", "#c0392b", "#1f4e9c",
];

fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 16.0;
const RIGHT: f64 = 190.0;

/// Axes with a y scale from 0 to `y_max` and a legend.
fn frame(svg: &mut String, y_max: f64, x_label: &str, legend: &[(&str, usize)]) {
    let plot_h = H - TOP - BOTTOM;
    for step in 0..=4 {
        let v = y_max * step as f64 / 4.0;
        let y = TOP + plot_h * (1.0 - step as f64 / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{v:.3}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 4.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        LEFT + (W - RIGHT - LEFT) / 2.0,
        H - 6.0,
        escape(x_label)
    );
    for (row, (name, c)) in legend.iter().enumerate() {
        let y = TOP + 14.0 * row as f64;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{y:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            W - RIGHT + 12.0,
            color(*c),
            W - RIGHT + 26.0,
            y + 9.0,
            escape(name)
        );
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * magnitude)
}

/// Lines of y against x = 1..=n, one per series.
fn line_chart(series: &[(&str, &[f64])], x_label: &str) -> String {
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}">"#);
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(2);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(0.0, f64::max),
    );
    let legend: Vec<(&str, usize)> = series.iter().enumerate().map(|(i, s)| (s.0, i)).collect();
    frame(&mut svg, y_max, x_label, &legend);
    let plot_w = W - RIGHT - LEFT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * i as f64 / (n - 1) as f64;
    for i in (0..n).step_by((n / 10).max(1)) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            x(i),
            H - BOTTOM + 14.0,
            i + 1
        );
    }
    for (s, (_, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), TOP + plot_h * (1.0 - v / y_max)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            color(s),
            points.join(" ")
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped bars: one group per label, one bar per series.
fn bar_chart(labels: &[String], series: &[(&str, Vec<f64>)], x_label: &str) -> String {
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}">"#);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(0.0, f64::max),
    );
    let legend: Vec<(&str, usize)> = series.iter().enumerate().map(|(i, s)| (s.0, i)).collect();
    frame(&mut svg, y_max, x_label, &legend);
    let plot_w = W - RIGHT - LEFT;
    let plot_h = H - TOP - BOTTOM;
    let group_w = plot_w / labels.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (g, label) in labels.iter().enumerate() {
        let gx = LEFT + group_w * g as f64 + group_w * 0.1;
        for (s, (_, values)) in series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0.0);
            let h = plot_h * v / y_max;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.4}</title></rect>"#,
                gx + bar_w * s as f64,
                TOP + plot_h - h,
                bar_w.max(1.0),
                color(s),
                escape(label)
            );
        }
        let short: String = label.chars().take(14).collect();
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            H - BOTTOM + 14.0,
            escape(&short)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn html_table(p: &ProtocolResult) -> String {
    let cols = columns(p.protocol);
    let mut t = String::from("<table><tr><th>method</th>");
    for c in &cols {
        let _ = write!(t, "<th>{}</th>", escape(c));
    }
    t.push_str("</tr>");
    for m in &p.methods {
        let _ = write!(t, "<tr><td>{}</td>", escape(&m.method));
        for c in &cols {
            let cell = m
                .metrics
                .get(c)
                .map(|v| format!("{:.4} ± {:.4}", v.mean, v.std))
                .unwrap_or_else(|| "-".into());
            let _ = write!(t, "<td>{cell}</td>");
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// Per-category hit rates of cobuy and the best baseline on the largest categories.
fn category_chart(p: &ProtocolResult) -> Option<String> {
    let ours = p.methods.iter().find(|m| m.method == super::COBUY)?;
    let best = p.comparisons.first().map(|c| c.best_baseline.clone())?;
    let base = p.methods.iter().find(|m| m.method == best)?;
    let top: Vec<&(String, u64, u64)> = ours.category_hits.iter().take(10).collect();
    if top.len() < 2 {
        return None;
    }
    let rate = |m: &MethodResult, name: &str| {
        m.category_hits
            .iter()
            .find(|c| c.0 == name)
            .map_or(0.0, |c| c.1 as f64 / c.2.max(1) as f64)
    };
    let labels: Vec<String> = top.iter().map(|c| c.0.clone()).collect();
    let series = vec![
        (
            best.as_str(),
            labels.iter().map(|l| rate(base, l)).collect(),
        ),
        (super::COBUY, labels.iter().map(|l| rate(ours, l)).collect()),
    ];
    Some(bar_chart(
        &labels,
        &series,
        "hit rate at 10 of target items, by top-level category (largest first)",
    ))
}

/// The self-contained HTML report.
pub fn html(report: &EvalReport) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>cobuy eval: {0}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:8px}}</style></head><body>
<h1>cobuy eval: {0}</h1><p>Mean ± standard deviation over {1} folds (user splits with seeds {2}..). Settings:</p><pre>{3}</pre>"#,
        escape(&report.dataset),
        report.config.folds,
        report.config.seed,
        escape(&serde_json::to_string_pretty(&report.config).unwrap_or_default())
    );
    for p in &report.protocols {
        let _ = write!(
            page,
            "<h2>{}</h2><p>{} users; {} test cases in the first fold; {:.1} s.</p>{}",
            p.protocol.title(),
            p.users,
            p.test_cases_per_fold.first().copied().unwrap_or(0),
            p.seconds,
            html_table(p)
        );
        for c in &p.comparisons {
            let _ = write!(
                page,
                "<p>cobuy vs the best baseline, {}, on {}: {:+.4} ({} x the larger method \
                 std); paired per fold {:+.4}±{:.4} ({} x its std).</p>",
                escape(&c.best_baseline),
                escape(&c.metric),
                c.cobuy.mean - c.baseline.mean,
                times(c.margin_in_std),
                c.paired_difference.mean,
                c.paired_difference.std,
                times(c.paired_margin_in_std)
            );
        }
        if p.protocol != Protocol::BoughtTogether {
            let series: Vec<(&str, &[f64])> = p
                .methods
                .iter()
                .map(|m| (m.method.as_str(), m.recall_curve.as_slice()))
                .collect();
            let _ = write!(page, "<h3>Recall by K</h3>{}", line_chart(&series, "K"));
            let labels: Vec<String> = p.methods.iter().map(|m| m.method.clone()).collect();
            let metric = |name: &str| -> Vec<f64> {
                p.methods
                    .iter()
                    .map(|m| m.metrics.get(name).map_or(0.0, |v| v.mean))
                    .collect()
            };
            let series = vec![
                ("repeat recall@10", metric("recall_repeat@10")),
                ("explore recall@10", metric("recall_explore@10")),
            ];
            let _ = write!(
                page,
                "<h3>Repeat and explore items</h3>{}",
                bar_chart(
                    &labels,
                    &series,
                    "recall@10 of repeat and of new items, by method"
                )
            );
        }
        if let Some(chart) = category_chart(p) {
            let _ = write!(page, "<h3>By category</h3>{chart}");
        }
        if !p.blends.is_empty() {
            let _ = write!(
                page,
                "<h3>Weights used per fold</h3><pre>{}</pre>",
                escape(&serde_json::to_string(&p.blends).unwrap_or_default())
            );
        }
    }
    page.push_str("</body></html>\n");
    page
}

/// The weights tuned on the first fold's validation users, as `[model.blend.<surface>]` tables.
pub fn blend_toml(report: &EvalReport) -> String {
    let mut out = format!(
        "# Ranking weights tuned by `cobuy eval` on validation users of {} (fold 0, seed {}).\n\
         # Paste into the mapping's [model] section; the other folds chose:\n",
        report.dataset, report.config.seed
    );
    let mut tables = String::new();
    for p in &report.protocols {
        let (Some(surface), Some(first)) = (p.surface, p.blends.first()) else {
            continue;
        };
        for (fold, b) in p.blends.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "#   {surface} fold {fold}: {}",
                serde_json::to_string(b).unwrap_or_default()
            );
        }
        let mut table = toml::Table::new();
        table.insert(
            surface.to_owned(),
            toml::Value::try_from(first).unwrap_or(toml::Value::Table(Default::default())),
        );
        let mut blend = toml::Table::new();
        blend.insert("blend".into(), toml::Value::Table(table));
        let mut model = toml::Table::new();
        model.insert("model".into(), toml::Value::Table(blend));
        let _ = write!(tables, "\n{}", toml::to_string(&model).unwrap_or_default());
    }
    out + &tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_scale_to_the_largest_value_and_escape_labels() {
        let svg = line_chart(&[("a<b", &[0.1, 0.2, 0.3])], "K");
        assert!(svg.contains("a&lt;b"));
        assert!(
            svg.contains("0.500"),
            "y axis tops at 0.5 for a 0.3 maximum: {svg}"
        );
        let bars = bar_chart(&["x".into(), "y".into()], &[("s", vec![1.0, 0.5])], "label");
        assert_eq!(
            bars.matches("<rect").count(),
            2 + 1,
            "two bars and one legend box"
        );
        assert_eq!(nice_max(0.23), 0.25);
        assert_eq!(nice_max(0.07), 0.1);
    }
}

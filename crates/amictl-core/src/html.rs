//! `amictl report --html FILE`: one self-contained page (inline CSS, SVG charts and a few lines
//! of script for the filters; nothing fetched from the network). Pure: [`render`] turns plain
//! data into the page.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::audit::AuditReport;
use crate::catalog::LineageNode;
use crate::inventory::Channel;
use crate::journal::{RunSummary, StepRecord};

/// The age buckets of the histogram, in days: `[from, to)`.
pub const AGE_BUCKETS: [(i64, i64, &str); 5] =
    [(0, 31, "0–30 d"), (31, 91, "31–90 d"), (91, 181, "91–180 d"), (181, 366, "181–365 d"), (366, i64::MAX, "> 1 y")];

/// An emergency run for the timeline.
pub struct EmergencyView {
    pub run: RunSummary,
    pub cve: String,
    pub steps: Vec<StepRecord>,
}

/// Everything the page shows.
pub struct Page<'a> {
    pub generated_at: DateTime<Utc>,
    pub audit: &'a AuditReport,
    pub lineage: &'a [LineageNode],
    pub channels: &'a [Channel],
    pub runs: &'a [RunSummary],
    /// Run id → how many instances a patch run failed on (its steps may all have succeeded).
    pub failed_instances: &'a std::collections::BTreeMap<i64, usize>,
    pub emergency: Option<&'a EmergencyView>,
}

/// `&`, `<`, `>`, `"` and `'` escaped, for text and attribute values.
/// Escaped text for an element's content, with every AWS id in it kept on one line (a browser
/// breaks lines after a hyphen: `ami-` | `0abc…`).
pub fn text(s: &str) -> String {
    let escaped = escape(s);
    id_pattern().replace_all(&escaped, r#"<span class="id">$0</span>"#).into_owned()
}

fn id_pattern() -> &'static regex::Regex {
    static ID: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        regex::Regex::new(r"\b(ami|snap|i|lt|vol|sg|subnet|vpc|eni|fleet|sfr|sir|lc)-[0-9a-f]{8,17}\b")
            .expect("a valid pattern")
    })
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How many images of each family fall in each age bucket.
pub fn age_histogram(audit: &AuditReport) -> BTreeMap<String, [usize; 5]> {
    let mut out: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    for i in &audit.images {
        let family = i.family.clone().unwrap_or_else(|| "(no family)".into());
        let age = i.age_days.unwrap_or(0);
        let bucket = AGE_BUCKETS.iter().position(|(from, to, _)| age >= *from && age < *to).unwrap_or(0);
        out.entry(family).or_default()[bucket] += 1;
    }
    out
}

/// Live instances per image (what runs where), most used first: `(image, label, count)`.
pub fn fleet_share(audit: &AuditReport) -> Vec<(String, String, usize)> {
    let mut out: Vec<(String, String, usize)> = audit
        .images
        .iter()
        .map(|i| {
            // Live means running: a stopped instance uses the image but runs nothing.
            let n = i.in_use_by.iter().filter(|r| r.is_running_instance()).count();
            let label = match &i.family {
                Some(f) => format!("{f} · {} ({})", i.name, i.id),
                None => format!("{} ({})", i.name, i.id),
            };
            (i.id.clone(), label, n)
        })
        .filter(|(_, _, n)| *n > 0)
        .collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    out
}

/// A vertical bar chart: one `rect.bar` per value, labelled below.
fn bar_chart(class: &str, title: &str, bars: &[(String, usize)]) -> String {
    let (w, h, pad) = (60usize, 120usize, 30usize);
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let width = pad + bars.len() * w;
    let mut s = format!(
        r#"<svg class="chart {class}" role="img" aria-label="{}" width="{width}" height="{}" viewBox="0 0 {width} {}">"#,
        escape(title),
        h + 54,
        h + 54
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let bh = v * h / max;
        let x = pad + i * w;
        let _ = write!(
            s,
            r#"<rect class="bar" data-value="{v}" x="{}" y="{}" width="{}" height="{bh}"><title>{}: {v}</title></rect><text x="{}" y="{}" class="value">{v}</text><text x="{}" y="{}" class="label">{}</text>"#,
            x + 6,
            20 + h - bh,
            w - 12,
            escape(label),
            x + w / 2,
            16 + h - bh,
            x + w / 2,
            h + 38,
            escape(label)
        );
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart (long labels): one `rect.bar` per row.
fn hbar_chart(class: &str, rows: &[(String, usize)]) -> String {
    let (label_w, bar_w, row_h) = (420usize, 360usize, 22usize);
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let height = rows.len() * row_h + 10;
    let width = label_w + bar_w + 60;
    let mut s = format!(
        r#"<svg class="chart {class}" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 5 + i * row_h;
        let bw = (v * bar_w / max).max(1);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="hlabel">{}</text><rect class="bar" data-value="{v}" x="{label_w}" y="{}" width="{bw}" height="{}"><title>{}: {v}</title></rect><text x="{}" y="{}" class="hvalue">{v}</text>"#,
            label_w - 8,
            y + 15,
            escape(label),
            y + 2,
            row_h - 6,
            escape(label),
            label_w + bw + 6,
            y + 15
        );
    }
    s.push_str("</svg>");
    s
}

fn section_ages(audit: &AuditReport) -> String {
    let mut s = String::from(r#"<section id="ages"><h2>AMI age by family</h2><div class="charts">"#);
    let hist = age_histogram(audit);
    if hist.is_empty() {
        s.push_str("<p>No images.</p>");
    }
    for (family, counts) in &hist {
        let bars: Vec<(String, usize)> =
            AGE_BUCKETS.iter().zip(counts).map(|((_, _, l), n)| (l.to_string(), *n)).collect();
        let _ = write!(
            s,
            r#"<figure><figcaption>{}</figcaption>{}</figure>"#,
            escape(family),
            bar_chart("age-histogram", family, &bars)
        );
    }
    s.push_str("</div></section>");
    s
}

fn section_fleet(audit: &AuditReport) -> String {
    let rows: Vec<(String, usize)> = fleet_share(audit).into_iter().map(|(_, l, n)| (l, n)).collect();
    let total: usize = rows.iter().map(|(_, n)| n).sum();
    let mut s = format!(
        r#"<section id="fleet"><h2>Fleet by image</h2><p>{total} live instance(s) on {} image(s).</p>"#,
        rows.len()
    );
    if !rows.is_empty() {
        s.push_str(&hbar_chart("fleet-share", &rows));
    }
    s.push_str("</section>");
    s
}

fn section_findings(audit: &AuditReport) -> String {
    let mut s = String::from(
        r#"<section id="findings"><h2>Compliance findings</h2>
<div class="filters"><label>Severity at least <select id="sev"><option value="0">info</option><option value="1">low</option><option value="2">medium</option><option value="3">high</option><option value="4">critical</option></select></label>
<label>Rule <select id="rule"><option value="">all</option>"#,
    );
    for rule in audit.summary.by_rule.keys() {
        let _ = write!(s, r#"<option>{}</option>"#, escape(rule));
    }
    s.push_str(r#"</select></label> <label>Text <input id="text" type="search" placeholder="ami-, i-, group…"></label> <span id="shown"></span></div>
<table id="findings-table"><thead><tr><th>Severity</th><th>Rule</th><th>Scope</th><th>Resource</th><th>Message</th></tr></thead><tbody>"#);
    for f in &audit.findings {
        let _ = write!(
            s,
            r#"<tr data-sev="{}" data-rule="{}"><td class="sev {}">{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>"#,
            f.severity as u8,
            escape(&f.rule),
            f.severity,
            f.severity,
            escape(&f.rule),
            escape(&f.account),
            escape(&f.region),
            text(&f.resource),
            text(&f.message)
        );
    }
    s.push_str("</tbody></table></section>");
    s
}

fn lineage_node(s: &mut String, n: &LineageNode) {
    let _ = write!(
        s,
        r#"<li><span class="node{}">{} <code>{}</code>{}{}</span>"#,
        if n.revoked { " revoked" } else { "" },
        escape(&n.name),
        escape(&n.image_id),
        n.version.as_deref().map(|v| format!(" v{}", escape(v))).unwrap_or_default(),
        n.outdated_by
            .as_deref()
            .map(|o| format!(r#" <em class="outdated">outdated: {}</em>"#, escape(o)))
            .unwrap_or_default()
    );
    if !n.children.is_empty() {
        s.push_str("<ul>");
        for c in &n.children {
            lineage_node(s, c);
        }
        s.push_str("</ul>");
    }
    s.push_str("</li>");
}

fn section_lineage(lineage: &[LineageNode]) -> String {
    // Only trees: an image nothing was built from says nothing about lineage.
    let trees: Vec<&LineageNode> = lineage.iter().filter(|n| !n.children.is_empty()).collect();
    let mut s = String::from(r#"<section id="lineage"><h2>Lineage (base → patched images)</h2>"#);
    if trees.is_empty() {
        s.push_str("<p>No image was built from another one here.</p>");
    } else {
        s.push_str(r#"<ul class="tree">"#);
        for t in trees {
            lineage_node(&mut s, t);
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
    s
}

fn section_channels(channels: &[Channel]) -> String {
    let mut s = String::from(
        r#"<section id="channels"><h2>Channels</h2><table><thead><tr><th>Family</th><th>Channel</th><th>Image</th><th>Parameter version</th></tr></thead><tbody>"#,
    );
    for c in channels {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&c.family),
            escape(&c.name),
            text(&c.image_id),
            c.history.last().map(|h| h.version).unwrap_or(0)
        );
    }
    s.push_str("</tbody></table></section>");
    s
}

fn section_runs(runs: &[RunSummary], failed_instances: &std::collections::BTreeMap<i64, usize>) -> String {
    let mut s = String::from(
        r#"<section id="runs"><h2>Recent runs</h2><table><thead><tr><th>Run</th><th>Command</th><th>Started</th><th>Finished</th><th>Status</th><th>Done</th><th>Failed</th><th>Aborted</th></tr></thead><tbody>"#,
    );
    for r in runs {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="status {}">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            r.id,
            escape(&r.command),
            escape(&r.started_at),
            escape(r.finished_at.as_deref().unwrap_or("")),
            escape(&r.status),
            escape(&r.status),
            r.done,
            match failed_instances.get(&r.id).copied().unwrap_or(0) {
                0 => r.failed.to_string(),
                n => format!("{} step(s), {n} instance(s)", r.failed),
            },
            r.aborted
        );
    }
    s.push_str("</tbody></table></section>");
    s
}

/// The emergency run's steps as bars on a time axis.
fn section_timeline(e: &EmergencyView) -> String {
    let parse = |t: &str| crate::journal::parse_time(t);
    let start = e.steps.iter().filter_map(|st| parse(&st.started_at)).min();
    let end = e.steps.iter().filter_map(|st| st.finished_at.as_deref().and_then(parse)).max();
    let mut s = format!(
        r#"<section id="timeline"><h2>Emergency run {} — {}</h2><p>Status: <span class="status {}">{}</span>.</p>"#,
        e.run.id,
        escape(&e.cve),
        escape(&e.run.status),
        escape(&e.run.status)
    );
    let (Some(start), Some(end)) = (start, end.or(start)) else {
        s.push_str("<p>No step recorded.</p></section>");
        return s;
    };
    let span = (end - start).num_milliseconds().max(1) as f64;
    let (label_w, bar_w, row_h) = (260.0, 560.0, 22.0);
    let height = e.steps.len() as f64 * row_h + 30.0;
    let _ = write!(
        s,
        r#"<svg class="chart timeline" role="img" width="{}" height="{height}" viewBox="0 0 {} {height}">"#,
        label_w + bar_w + 80.0,
        label_w + bar_w + 80.0
    );
    for (i, st) in e.steps.iter().enumerate() {
        let from = parse(&st.started_at).unwrap_or(start);
        let to = st.finished_at.as_deref().and_then(parse).unwrap_or(end);
        let x = label_w + (from - start).num_milliseconds() as f64 / span * bar_w;
        let w = ((to - from).num_milliseconds() as f64 / span * bar_w).max(2.0);
        let y = 5.0 + i as f64 * row_h;
        let status = format!("{:?}", st.status).to_lowercase();
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="hlabel">{}</text><rect class="bar step {status}" x="{x:.1}" y="{}" width="{w:.1}" height="{}"><title>{} {status} {} → {}</title></rect>"#,
            label_w - 8.0,
            y + 15.0,
            escape(&st.action_id),
            y + 2.0,
            row_h - 6.0,
            escape(&st.action_id),
            escape(&st.started_at),
            escape(st.finished_at.as_deref().unwrap_or("…"))
        );
    }
    let _ = write!(
        s,
        r#"<text x="{label_w}" y="{}" class="axis">{}</text><text x="{}" y="{}" class="axis end">{}</text></svg>"#,
        height - 5.0,
        escape(&crate::time::rfc3339(start)),
        label_w + bar_w,
        height - 5.0,
        escape(&crate::time::rfc3339(end))
    );
    s.push_str("</section>");
    s
}

const STYLE: &str = r#"body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{margin-bottom:.2em}section{margin:2em 0}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.charts{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{font-weight:600}
rect.bar{fill:#3b7dd8}rect.step.failed{fill:#d83b3b}rect.step.started{fill:#d8a23b}text{font-size:11px}text.label,text.value{text-anchor:middle}
text.hlabel{text-anchor:end}text.axis.end{text-anchor:end}.sev.critical,.sev.high{color:#b00;font-weight:600}.sev.medium{color:#b60}
.filters{margin:.5em 0}.filters label{margin-right:1em}ul.tree,ul.tree ul{list-style:none;padding-left:1.2em;border-left:1px dotted #aaa}
.id,code{white-space:nowrap}.node.revoked{text-decoration:line-through;color:#b00}.outdated{color:#b60}.status.failed,.status.interrupted{color:#b00}"#;

const SCRIPT: &str = r#"(function(){var sev=document.getElementById('sev'),rule=document.getElementById('rule'),text=document.getElementById('text'),shown=document.getElementById('shown');
function apply(){var rows=document.querySelectorAll('#findings-table tbody tr'),n=0,min=+sev.value,r=rule.value,t=text.value.toLowerCase();
rows.forEach(function(tr){var ok=(+tr.dataset.sev>=min)&&(!r||tr.dataset.rule===r)&&(!t||tr.textContent.toLowerCase().indexOf(t)>=0);tr.hidden=!ok;if(ok)n++;});
shown.textContent=n+' of '+rows.length+' shown';}
[sev,rule,text].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});apply();})();"#;

/// The whole page.
pub fn render(p: &Page) -> String {
    let a = p.audit;
    let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        s,
        "<title>amictl report — {}</title><style>{STYLE}</style></head><body><h1>amictl report</h1><p>{} · generated {} · {} image(s), {} in use, {} finding(s){}</p>",
        escape(&a.scopes.join(", ")),
        escape(&a.scopes.join(", ")),
        escape(&crate::time::rfc3339(p.generated_at)),
        a.summary.images,
        a.summary.images_in_use,
        a.summary.findings,
        if a.failures.is_empty() { String::new() } else { format!(" · <strong>incomplete: {} read(s) failed</strong>", a.failures.len()) }
    );
    if let Some(e) = p.emergency {
        s.push_str(&section_timeline(e));
    }
    s.push_str(&section_ages(a));
    s.push_str(&section_fleet(a));
    s.push_str(&section_findings(a));
    s.push_str(&section_lineage(p.lineage));
    s.push_str(&section_channels(p.channels));
    s.push_str(&section_runs(p.runs, p.failed_instances));
    let _ = write!(s, "<script>{SCRIPT}</script></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_text_stay_on_one_line_and_markup_is_escaped() {
        let t = text("ami-0123456789abcdef0 runs on i-0abc12345678 <b>");
        assert_eq!(
            t,
            r#"<span class="id">ami-0123456789abcdef0</span> runs on <span class="id">i-0abc12345678</span> &lt;b&gt;"#
        );
    }

    fn audit() -> AuditReport {
        serde_json::from_value(serde_json::json!({
            "schema": "amictl.audit/v1", "generated_at": "2026-11-30T00:00:00Z", "scopes": ["123456789012/us-east-1"],
            "failures": [], "summary": {"images": 2, "images_in_use": 1, "findings": 1, "by_severity": {}, "by_rule": {"ami-too-old": 1}},
            "images": [
                {"image_id": "ami-1", "account": "1", "region": "r", "name": "web<1>", "family": "web", "state": "available",
                 "creation_date": null, "age_days": 400, "in_use": true,
                 "in_use_by": [{"kind": "instance", "resource": "i-1", "evidence": "instance i-1 (running)"},
                               {"kind": "instance", "resource": "i-2", "evidence": "instance i-2 (running)"},
                               {"kind": "instance", "resource": "i-3", "evidence": "instance i-3 (stopped)"}],
                 "history": [], "sharing_checked": false, "findings": []},
                {"image_id": "ami-2", "account": "1", "region": "r", "name": "web-2", "family": "web", "state": "available",
                 "creation_date": null, "age_days": 3, "in_use": false, "in_use_by": [], "history": [], "sharing_checked": false, "findings": []}
            ],
            "findings": [{"severity": "medium", "rule": "ami-too-old", "account": "1", "region": "r", "resource": "ami-1", "image_id": "ami-1", "message": "<script>alert(1)</script>"}],
            "orphaned_snapshots": []
        }))
        .unwrap()
    }

    #[test]
    fn ages_fall_in_their_buckets() {
        assert_eq!(age_histogram(&audit())["web"], [1, 0, 0, 0, 1]);
    }

    #[test]
    fn the_page_has_one_bar_per_bucket_and_per_image_in_use_and_escapes_text() {
        let a = audit();
        let page = render(&Page {
            generated_at: Utc::now(),
            audit: &a,
            lineage: &[],
            channels: &[],
            runs: &[],
            failed_instances: &Default::default(),
            emergency: None,
        });
        assert_eq!(page.matches(r#"<rect class="bar" data-value"#).count(), 5 + 1, "{page}");
        assert!(page.contains("2 live instance(s) on 1 image(s)"), "a stopped instance is not live: {page}");
        assert!(page.contains("web&lt;1&gt;"));
        assert!(!page.contains("<script>alert"), "a message must not become markup");
        assert!(!page.contains("http://") && !page.contains("https://"), "the page must not fetch anything");
    }
}

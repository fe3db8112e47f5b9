//! Scanner reports (trivy JSON, grype JSON, lynis report files) read into findings, and the
//! verdict they earn against a severity gate. Pure: `pipeline::scan` runs the scanner.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::Severity;

/// Which report format a scanner prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// Told from the report itself.
    Auto,
    Trivy,
    Grype,
    Lynis,
}

/// One vulnerability (or, for lynis, one warning or suggestion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `CVE-2024-1234`, `GHSA-…`, or a lynis test id.
    pub id: String,
    pub severity: Severity,
    pub package: Option<String>,
    pub installed: Option<String>,
    pub fixed: Option<String>,
}

/// A parsed report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    pub format: ReportFormat,
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// Findings at or above `gate`: a scan passes when there is none.
    pub fn blocking(&self, gate: Severity) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.severity >= gate).collect()
    }

    /// How many findings of each severity, highest first (severities with none left out).
    pub fn counts(&self) -> Vec<(Severity, usize)> {
        let all = [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info];
        all.iter()
            .map(|s| (*s, self.findings.iter().filter(|f| f.severity == *s).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Whether the report names `cve`.
    pub fn mentions(&self, cve: &str) -> bool {
        self.findings.iter().any(|f| f.id.eq_ignore_ascii_case(cve))
    }
}

/// Whether package version `installed` is older than `fixed`, compared as dpkg and rpm do:
/// the epoch (`1:`) first, then runs of digits numerically and runs of other characters by
/// character, `~` before anything (so `1.0~rc1` is below `1.0`).
pub fn version_below(installed: &str, fixed: &str) -> bool {
    compare_versions(installed, fixed) == std::cmp::Ordering::Less
}

fn split_epoch(v: &str) -> (u64, &str) {
    match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), rest),
        _ => (0, v),
    }
}

fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let ((ea, a), (eb, b)) = (split_epoch(a.trim()), split_epoch(b.trim()));
    if ea != eb {
        return ea.cmp(&eb);
    }
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        // Non-digit runs: `~` sorts before everything, even the end; letters before symbols.
        let order = |c: Option<&u8>| -> i32 {
            match c {
                Some(b'~') => -1,
                None => 0,
                Some(c) if c.is_ascii_digit() => 0,
                Some(c) if c.is_ascii_alphabetic() => *c as i32,
                Some(c) => *c as i32 + 256,
            }
        };
        while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
            let (oa, ob) = (order(a.first()), order(b.first()));
            if oa != ob {
                return oa.cmp(&ob);
            }
            a = &a[1.min(a.len())..];
            b = &b[1.min(b.len())..];
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (digits(a), digits(b));
        let (da, db) = (&a[..na], &b[..nb]);
        let (ta, tb) = (trim_zeros(da), trim_zeros(db));
        let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
        if o != Ordering::Equal {
            return o;
        }
        a = &a[na..];
        b = &b[nb..];
        if a.is_empty() && b.is_empty() {
            return Ordering::Equal;
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().take_while(|c| **c == b'0').count();
    &d[start..]
}

/// Reads `text` as `format`; a report that does not parse is an error, never an empty pass.
pub fn parse(text: &str, format: ReportFormat) -> Result<ScanReport, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the scanner printed nothing".into());
    }
    let format = match format {
        ReportFormat::Auto => detect(text).ok_or_else(|| {
            format!("the report is neither trivy JSON, grype JSON nor a lynis report (it begins {:?})", begin(text))
        })?,
        f => f,
    };
    let findings = match format {
        ReportFormat::Trivy => trivy(&json(text, "trivy")?)?,
        ReportFormat::Grype => grype(&json(text, "grype")?)?,
        ReportFormat::Lynis => lynis(text)?,
        ReportFormat::Auto => unreachable!("detected above"),
    };
    Ok(ScanReport { format, findings })
}

fn begin(text: &str) -> String {
    text.chars().take(60).collect()
}

fn detect(text: &str) -> Option<ReportFormat> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if v.get("SchemaVersion").is_some() || v.get("Results").is_some() {
            return Some(ReportFormat::Trivy);
        }
        if v.get("matches").is_some() {
            return Some(ReportFormat::Grype);
        }
        return None;
    }
    text.lines()
        .any(|l| l.starts_with("lynis_version=") || l.starts_with("report_version"))
        .then_some(ReportFormat::Lynis)
}

fn json(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            return format!("the {what} report is not valid JSON: {e} (cut short: SSM keeps the first 24,000 characters of the output)");
        }
        format!("the {what} report is not valid JSON: {e} (it begins {:?})", begin(text))
    })
}

/// Trivy's and grype's severity words. A vulnerability the scanner could not rate (`UNKNOWN`)
/// counts as high: unknown is not harmless, and the default gate stops it.
fn severity(word: &str) -> Severity {
    match word.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" | "moderate" => Severity::Medium,
        "low" => Severity::Low,
        "negligible" | "none" => Severity::Info,
        _ => Severity::High,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// `{"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"VulnerabilityID", "PkgName",
/// "InstalledVersion", "FixedVersion", "Severity"}]}]}`; `Vulnerabilities` may be null.
fn trivy(v: &Value) -> Result<Vec<Finding>, String> {
    if v.get("SchemaVersion").is_none() && v.get("Results").is_none() {
        return Err("the trivy report has neither SchemaVersion nor Results".into());
    }
    let results = match v.get("Results") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(r)) => r,
        Some(_) => return Err("the trivy report's Results is not a list".into()),
    };
    let mut out = Vec::new();
    for r in results {
        for vuln in r.get("Vulnerabilities").and_then(Value::as_array).into_iter().flatten() {
            let id = text(vuln, "VulnerabilityID").ok_or("a trivy vulnerability has no VulnerabilityID")?;
            out.push(Finding {
                id,
                severity: severity(vuln.get("Severity").and_then(Value::as_str).unwrap_or("UNKNOWN")),
                package: text(vuln, "PkgName"),
                installed: text(vuln, "InstalledVersion"),
                fixed: text(vuln, "FixedVersion"),
            });
        }
    }
    Ok(out)
}

/// `{"matches": [{"vulnerability": {"id", "severity", "fix": {"versions": []}}, "artifact":
/// {"name", "version"}}]}`.
fn grype(v: &Value) -> Result<Vec<Finding>, String> {
    let matches = v.get("matches").and_then(Value::as_array).ok_or("the grype report has no matches list")?;
    matches
        .iter()
        .map(|m| {
            let vuln = m.get("vulnerability").ok_or("a grype match has no vulnerability")?;
            let artifact = m.get("artifact");
            let fixed = vuln
                .pointer("/fix/versions")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .filter(|s| !s.is_empty());
            Ok(Finding {
                id: text(vuln, "id").ok_or("a grype vulnerability has no id")?,
                severity: severity(vuln.get("severity").and_then(Value::as_str).unwrap_or("Unknown")),
                package: artifact.and_then(|a| text(a, "name")),
                installed: artifact.and_then(|a| text(a, "version")),
                fixed,
            })
        })
        .collect()
}

/// A lynis report file (`/var/log/lynis-report.dat`): `warning[]=TEST-ID|text|…` lines are
/// findings of medium severity, `suggestion[]=…` lines low (lynis does not rate them).
fn lynis(text: &str) -> Result<Vec<Finding>, String> {
    if !text.lines().any(|l| l.starts_with("lynis_version=") || l.starts_with("report_version")) {
        return Err("the lynis report has no lynis_version line: is it /var/log/lynis-report.dat?".into());
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let (severity, rest) = match line.split_once("[]=") {
            Some(("warning", rest)) => (Severity::Medium, rest),
            Some(("suggestion", rest)) => (Severity::Low, rest),
            _ => continue,
        };
        let id = rest.split('|').next().unwrap_or(rest).to_string();
        out.push(Finding { id, severity, package: None, installed: None, fixed: None });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions_compare_as_dpkg_and_rpm_do() {
        assert!(version_below("3.0.2", "3.0.13"));
        assert!(!version_below("3.0.13", "3.0.13"));
        assert!(!version_below("3.0.14", "3.0.13"));
        assert!(version_below("3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.12"));
        assert!(version_below("1.0~rc1", "1.0"));
        assert!(version_below("1.0", "1.0a"));
        assert!(version_below("1:1.0", "2:0.1"));
        assert!(!version_below("2:0.1", "1:9.9"));
        assert!(version_below("1.1.1k-7.el8", "1:1.1.1k-9.el8"));
        assert!(!version_below("010", "10") && !version_below("10", "010"));
    }

    const TRIVY: &str = r#"{"SchemaVersion": 2, "ArtifactName": "/", "ArtifactType": "filesystem",
      "Results": [{"Target": "amazon 2023", "Class": "os-pkgs", "Type": "amazon", "Vulnerabilities": [
        {"VulnerabilityID": "CVE-2024-0001", "PkgName": "openssl", "InstalledVersion": "3.0.8",
         "FixedVersion": "3.0.13", "Severity": "CRITICAL"},
        {"VulnerabilityID": "CVE-2024-0002", "PkgName": "curl", "InstalledVersion": "8.1",
         "Severity": "MEDIUM"}]},
        {"Target": "usr/lib/node_modules", "Class": "lang-pkgs", "Vulnerabilities": null}]}"#;

    const GRYPE: &str = r#"{"matches": [
      {"vulnerability": {"id": "CVE-2023-4863", "severity": "High", "fix": {"versions": ["1.3.2"], "state": "fixed"}},
       "artifact": {"name": "libwebp", "version": "1.2.4"}},
      {"vulnerability": {"id": "GHSA-xxxx", "severity": "Negligible", "fix": {"versions": [], "state": "not-fixed"}},
       "artifact": {"name": "tar", "version": "1.34"}}],
      "source": {"type": "directory", "target": "/"}, "descriptor": {"name": "grype"}}"#;

    #[test]
    fn trivy_findings_carry_id_package_versions_and_severity() {
        let r = parse(TRIVY, ReportFormat::Auto).unwrap();
        assert_eq!(r.format, ReportFormat::Trivy);
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings[0].id, "CVE-2024-0001");
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert_eq!(r.findings[0].fixed.as_deref(), Some("3.0.13"));
        assert_eq!(r.findings[1].fixed, None);
        assert!(r.mentions("cve-2024-0001"));
    }

    #[test]
    fn the_gate_blocks_findings_at_or_above_it() {
        let r = parse(TRIVY, ReportFormat::Trivy).unwrap();
        assert_eq!(r.blocking(Severity::Critical).len(), 1);
        assert_eq!(r.blocking(Severity::Medium).len(), 2);
        let g = parse(GRYPE, ReportFormat::Auto).unwrap();
        assert_eq!(g.format, ReportFormat::Grype);
        assert!(g.blocking(Severity::Critical).is_empty());
        assert_eq!(g.blocking(Severity::High).len(), 1);
        assert_eq!(g.findings[1].severity, Severity::Info);
        assert_eq!(severity("UNKNOWN"), Severity::High, "an unrated vulnerability is not waved through");
        assert_eq!(g.counts(), vec![(Severity::High, 1), (Severity::Info, 1)]);
    }

    #[test]
    fn a_clean_trivy_report_has_no_findings() {
        let r = parse(r#"{"SchemaVersion": 2, "ArtifactName": "/"}"#, ReportFormat::Auto).unwrap();
        assert!(r.findings.is_empty());
    }

    #[test]
    fn what_does_not_parse_is_an_error_never_a_pass() {
        assert!(parse("", ReportFormat::Auto).is_err());
        assert!(parse("Segmentation fault", ReportFormat::Auto).is_err());
        assert!(parse(r#"{"hello": 1}"#, ReportFormat::Auto).is_err());
        let cut = &TRIVY[..TRIVY.len() / 2];
        let e = parse(cut, ReportFormat::Trivy).unwrap_err();
        assert!(e.contains("24,000"), "{e}");
        assert!(parse(r#"{"matches": [{"artifact": {}}]}"#, ReportFormat::Grype).is_err());
        assert!(parse(GRYPE, ReportFormat::Trivy).is_err());
    }

    #[test]
    fn lynis_warnings_and_suggestions_become_findings() {
        let dat = "report_version_major=1\nlynis_version=3.0.9\nwarning[]=SSH-7408|Root login allowed|-|\nsuggestion[]=PKGS-7392|Update packages|-|\n";
        let r = parse(dat, ReportFormat::Auto).unwrap();
        assert_eq!(r.format, ReportFormat::Lynis);
        assert_eq!(
            r.findings.iter().map(|f| (f.id.as_str(), f.severity)).collect::<Vec<_>>(),
            vec![("SSH-7408", Severity::Medium), ("PKGS-7392", Severity::Low)]
        );
    }
}

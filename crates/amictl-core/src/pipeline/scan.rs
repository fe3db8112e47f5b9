//! `amictl scan AMI`: a throw-away scanner from the image, a scanner (trivy, grype, lynis or
//! any command printing one of their reports) run through SSM, its report read into findings
//! and gated on severity, the report kept in the journal and the verdict tagged on the image
//! (`amictl:scan=passed|failed`, `amictl:scanned-at`); the scanner terminated however the run
//! ends. A report that does not parse is an error, never a pass.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, Machines};
use crate::engine::{Progress, Run};
use crate::error::Error;
use crate::pipeline::{command, ephemeral};
use crate::presets::{self, Scanner};
use crate::report::Severity;
use crate::scan::{self, Finding, ReportFormat, ScanReport};

pub const SCANNED_AT_TAG: &str = "amictl:scanned-at";
/// GetCommandInvocation returns at most this many characters of standard output.
pub const SSM_OUTPUT_LIMIT: usize = 24_000;

/// Which scanner runs (`[scan]` in amictl.toml, or flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerChoice {
    Preset(Scanner),
    /// A command that prints a trivy or grype JSON report or a lynis report file.
    Command {
        command: String,
        format: ReportFormat,
    },
}

impl ScannerChoice {
    fn command(&self) -> (String, ReportFormat) {
        match self {
            ScannerChoice::Preset(s) => presets::scanner_command(*s),
            ScannerChoice::Command { command, format } => (command.clone(), *format),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanRequest {
    pub image_id: String,
    pub scanner: ScannerChoice,
    pub fail_on: Severity,
    /// The tag the verdict goes to (`compliance.scan_tag`, `amictl:scan` by default).
    pub scan_tag: String,
    pub instances: ephemeral::InstanceSettings,
    #[serde(with = "crate::time::duration")]
    pub command_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scanned {
    pub image_id: String,
    pub passed: bool,
    pub fail_on: Severity,
    pub report: ScanReport,
    /// The findings at or above `fail_on`.
    pub blocking: Vec<Finding>,
    pub scanner: Option<String>,
    pub run_id: i64,
    #[serde(default)]
    pub swept: Vec<(String, String)>,
}

/// Scans one image.
pub async fn scan<C: Cloud + Machines>(
    cloud: &C,
    journal: crate::journal::Journal,
    req: &ScanRequest,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<Scanned, Error> {
    let image = ephemeral::launchable_image(cloud, &req.image_id).await?;
    let request = serde_json::to_string(req).unwrap_or_default();
    let scanner = std::sync::Mutex::new(None);
    let work = async |run: &Run| {
        let machine =
            ephemeral::launch(cloud, run, ephemeral::Role::Scanner, &image.id, &req.instances, progress).await?;
        let id = machine.instance_id.clone();
        *scanner.lock().unwrap() = Some(id.clone());
        let ssm = ephemeral::wait_managed(cloud, &id, req.instances.ssm_timeout, progress);
        run.step("wait-scanner-ssm", progress, ssm, |_| format!("{id} is managed by Systems Manager")).await?;
        let read = run_scanner(cloud, &id, req, run.id(), progress);
        let report =
            run.step("scan", progress, read, |r: &ScanReport| format!("{} findings", r.findings.len())).await?;
        let blocking: Vec<Finding> = report.blocking(req.fail_on).into_iter().cloned().collect();
        let verdict = if blocking.is_empty() { "passed" } else { "failed" };
        let kept = serde_json::json!({"fail_on": req.fail_on, "report": report}).to_string();
        run.journal().lock().unwrap().record_scan(&image.id, run.id(), verdict, &kept)?;
        let tags =
            [(req.scan_tag.clone(), verdict.to_string()), (SCANNED_AT_TAG.to_string(), crate::time::rfc3339(now))];
        let tag = async { Ok(cloud.tag(std::slice::from_ref(&image.id), &tags).await?) };
        run.step("record-verdict", progress, tag, |_| format!("{} {}={verdict}", image.id, req.scan_tag)).await?;
        Ok((report, blocking))
    };
    let done = ephemeral::run_launching(cloud, journal, "scan", &request, &req.instances, now, work).await?;
    let (report, blocking) = done.result;
    Ok(Scanned {
        image_id: image.id,
        passed: blocking.is_empty(),
        fail_on: req.fail_on,
        report,
        blocking,
        scanner: scanner.into_inner().unwrap(),
        run_id: done.run_id,
        swept: done.swept,
    })
}

/// Runs the scanner and reads its report from the invocation's standard output.
async fn run_scanner<M: Machines>(
    m: &M,
    instance_id: &str,
    req: &ScanRequest,
    run_id: i64,
    progress: &dyn Progress,
) -> Result<ScanReport, Error> {
    let (script, format) = req.scanner.command();
    let shell = command::shell(vec![script], req.command_timeout);
    let request = command::on_instance(instance_id, shell, format!("amictl scan, run {run_id}"));
    let outcome = command::run(m, &request, req.command_timeout + request.delivery_timeout, progress).await?;
    if !outcome.all_succeeded() {
        return Err(Error::Other(format!("the scanner did not run to the end: {}", outcome.failure_summary())));
    }
    let command_id = &outcome.command_ids[0];
    let (stdout, _) = m.invocation_output(command_id, instance_id).await?;
    // What SSM keeps of an output ends there: a report that long may have lost findings.
    if stdout.chars().count() >= SSM_OUTPUT_LIMIT {
        return Err(Error::Other(format!(
            "scan of {}: the report reached SSM's limit of {SSM_OUTPUT_LIMIT} characters and may be cut short: \
             use a --scanner-command that prints a smaller report (e.g. only findings at or above --fail-on)",
            req.image_id
        )));
    }
    scan::parse(&stdout, format).map_err(|e| Error::Other(format!("scan of {}: {e}", req.image_id)))
}

/// The last report the journal keeps for `image_id`.
pub fn last_report(journal: &crate::journal::Journal, image_id: &str) -> Result<Option<serde_json::Value>, Error> {
    Ok(journal.last_scan(image_id)?.map(|(run_id, at, verdict, report)| {
        let report: serde_json::Value = serde_json::from_str(&report).unwrap_or(serde_json::Value::Null);
        serde_json::json!({"image_id": image_id, "run_id": run_id, "scanned_at": at, "verdict": verdict,
                           "fail_on": report.get("fail_on"), "report": report.get("report")})
    }))
}

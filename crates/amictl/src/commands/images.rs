//! `amictl bake`, `amictl validate`, `amictl scan`: flags and `amictl.toml` into requests,
//! the pipelines in `amictl_core::pipeline`, results rendered.

use std::collections::BTreeMap;

use amictl_core::catalog::Bump;
use amictl_core::config::Config;
use amictl_core::pipeline::bake::{self, BakeRequest, BaseChoice, Patch};
use amictl_core::pipeline::ephemeral::InstanceSettings;
use amictl_core::pipeline::scan::{self as scan_pipeline, ScanRequest, ScannerChoice};
use amictl_core::pipeline::validate::{self as validate_pipeline, HttpCheck, ValidateRequest};
use amictl_core::presets::{PatchPreset, Scanner};
use amictl_core::scan::ReportFormat;
use amictl_core::text::counted;
use amictl_core::Error;
use chrono::Utc;

use super::{connect_one, duration_flag, execute};
use crate::cli::{
    BakeArgs, GlobalArgs, InstanceArgs, Output, PatchPresetArg, ReportFormatArg, ScanImageArgs, ScannerArg,
    ValidateArgs,
};
use crate::exit;
use crate::out::outln;
use crate::progress::Spinner;
use crate::render;

/// `[instances]` with the flags on top.
pub(super) fn instance_settings(c: &Config, a: &InstanceArgs) -> Result<InstanceSettings, Error> {
    let mut s = c.instances.clone();
    if let Some(t) = &a.instance_type {
        s.instance_type = t.clone();
    }
    if a.subnet.is_some() {
        s.subnet_id = a.subnet.clone();
    }
    if !a.security_groups.is_empty() {
        s.security_group_ids = a.security_groups.clone();
    }
    if a.instance_profile.is_some() {
        s.instance_profile = a.instance_profile.clone();
    }
    if let Some(d) = &a.boot_timeout {
        s.boot_timeout = positive_duration("--boot-timeout", d)?;
    }
    if let Some(d) = &a.ssm_timeout {
        s.ssm_timeout = positive_duration("--ssm-timeout", d)?;
    }
    Ok(s)
}

fn positive_duration(flag: &str, value: &str) -> Result<std::time::Duration, Error> {
    let d = duration_flag(flag, value)?;
    if d.is_zero() {
        return Err(Error::Usage(format!("{flag}: must be longer than 0s")));
    }
    Ok(d)
}

pub(super) fn command_timeout(c: &Config, a: &InstanceArgs) -> Result<std::time::Duration, Error> {
    match &a.command_timeout {
        Some(d) => positive_duration("--command-timeout", d),
        None => Ok(c.bake.command_timeout),
    }
}

fn swept_warnings(swept: &[(String, String)]) {
    for (id, why) in swept {
        crate::out::eprint_line(&format!("note: terminated {id}, left behind: {why}"));
    }
}

/// `name=PATTERN[,owner=OWNER...]`.
fn base_filter(text: &str) -> Result<BaseChoice, Error> {
    let mut name = None;
    let mut owners = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("name", v)) if !v.is_empty() => name = Some(v.to_string()),
            Some(("owner", v)) if !v.is_empty() => owners.push(v.to_string()),
            _ => {
                return Err(Error::Usage(format!(
                    "--base-filter {text:?}: {part:?} is not name=PATTERN or owner=OWNER"
                )))
            }
        }
    }
    let name = name.ok_or_else(|| Error::Usage(format!("--base-filter {text:?}: name=PATTERN is required")))?;
    Ok(BaseChoice::Filter { name, owners })
}

fn patch(c: &Config, a: &BakeArgs) -> Result<Patch, Error> {
    if let Some(doc) = &a.patch_document {
        let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &a.patch_parameter {
            let (k, v) = p
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::Usage(format!("--patch-parameter {p:?} is not KEY=VALUE")))?;
            parameters.entry(k.to_string()).or_default().push(v.to_string());
        }
        return Ok(Patch::Document { name: doc.clone(), parameters });
    }
    if !a.patch_command.is_empty() {
        return Ok(Patch::Commands(a.patch_command.clone()));
    }
    Ok(match a.patch_preset {
        Some(PatchPresetArg::SecurityUpdates) => Patch::Preset(PatchPreset::SecurityUpdates),
        Some(PatchPresetArg::AllUpdates) => Patch::Preset(PatchPreset::AllUpdates),
        None => match (&c.bake.patch_document, c.bake.patch_commands.is_empty()) {
            (Some(doc), _) => Patch::Document { name: doc.clone(), parameters: BTreeMap::new() },
            (None, false) => Patch::Commands(c.bake.patch_commands.clone()),
            (None, true) => Patch::Preset(c.bake.patch_preset),
        },
    })
}

pub async fn bake(g: &GlobalArgs, c: Config, a: &BakeArgs) -> Result<u8, Error> {
    let rules = c.family_rules()?;
    let base = match (&a.base, &a.base_family, &a.base_filter) {
        (Some(id), _, _) => BaseChoice::Image(id.clone()),
        (_, Some(f), _) => BaseChoice::Family(f.clone()),
        (_, _, Some(text)) => base_filter(text)?,
        _ => return Err(Error::Usage("give the base: --base, --base-family or --base-filter".into())),
    };
    let req = BakeRequest {
        family: a.family.clone(),
        base,
        version: a.version.clone(),
        bump: match a.bump.as_str() {
            "major" => Bump::Major,
            "minor" => Bump::Minor,
            _ => Bump::Patch,
        },
        patch: patch(&c, a)?,
        cves: a.cve.clone(),
        copy_to: a.copy_to.clone(),
        share_with: a.share_with.clone(),
        instances: instance_settings(&c, &a.instance)?,
        command_timeout: command_timeout(&c, &a.instance)?,
        image_timeout: match &a.image_timeout {
            Some(d) => positive_duration("--image-timeout", d)?,
            None => c.bake.image_timeout,
        },
    };
    for account in &a.share_with {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Usage(format!("--share-with {account:?} is not a 12-digit account id")));
        }
    }
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let home = amictl_core::aws::Cloud::scope(cloud).region.clone();
    if a.copy_to.contains(&home) {
        return Err(Error::Usage(format!("--copy-to {home}: the image is baked there already")));
    }
    let copies = if a.copy_to.is_empty() {
        vec![]
    } else {
        let mut cc = c.clone();
        cc.regions = a.copy_to.clone();
        super::connect(&cc).await?.clouds
    };
    let journal = execute::open_journal(&c, a.instance.journal.as_deref())?;
    let spinner = Spinner::new(&format!("baking {}", a.family));
    let scan = (c.compliance.scan_tag.as_str(), c.compliance.scan_passed_values.as_slice());
    let baked = bake::bake(cloud, &copies, journal, &req, &rules, scan, &spinner, Utc::now()).await?;
    swept_warnings(&baked.swept);
    match g.output {
        Output::Json => render::json("amictl.bake/v1", &baked)?,
        Output::Table => {
            let copies: Vec<String> =
                baked.regions.iter().skip(1).map(|r| format!("{} in {}", r.image_id, r.region)).collect();
            outln!(
                "{} {} ({} {}) from {} in run {}{}{}{}",
                if baked.adopted_from_run.is_some() { "Finished" } else { "Baked" },
                baked.image_id,
                baked.family,
                baked.version,
                baked.source_ami,
                baked.run_id,
                baked
                    .adopted_from_run
                    .map(|r| format!(" (the image run {r} made before it stopped)"))
                    .unwrap_or_default(),
                if copies.is_empty() { String::new() } else { format!("; copies: {}", copies.join(", ")) },
                if baked.shared_with.is_empty() {
                    String::new()
                } else {
                    format!("; shared with {}", baked.shared_with.join(", "))
                },
            )
        }
    }
    Ok(exit::OK)
}

pub async fn validate(g: &GlobalArgs, c: Config, a: &ValidateArgs) -> Result<u8, Error> {
    let mut checks = c.validate.clone();
    if !a.check_command.is_empty() {
        checks.commands = a.check_command.clone();
    }
    if a.no_status_checks {
        checks.status_checks = false;
    }
    if let Some(url) = &a.http_url {
        checks.http = Some(HttpCheck {
            url: url.clone(),
            expect_status: 200,
            expect_body: None,
            timeout: std::time::Duration::from_secs(5),
            retries: 5,
        });
    }
    if let Some(h) = checks.http.as_mut() {
        if let Some(s) = a.http_status {
            h.expect_status = s;
        }
        if a.http_body.is_some() {
            h.expect_body = a.http_body.clone();
        }
        if let Some(t) = &a.http_timeout {
            h.timeout = positive_duration("--http-timeout", t)?;
        }
        if let Some(r) = a.http_retries {
            h.retries = r.min(100) as u32;
        }
    } else if a.http_status.is_some() || a.http_body.is_some() || a.http_timeout.is_some() || a.http_retries.is_some() {
        return Err(Error::Usage(
            "--http-status, --http-body, --http-timeout and --http-retries need --http-url".into(),
        ));
    }
    let req = ValidateRequest {
        image_id: a.image.clone(),
        checks,
        instances: instance_settings(&c, &a.instance)?,
        command_timeout: command_timeout(&c, &a.instance)?,
    };
    validate_pipeline::check_request(&req)?;
    let conn = connect_one(&c).await?;
    let journal = execute::open_journal(&c, a.instance.journal.as_deref())?;
    let spinner = Spinner::new(&format!("validating {}", a.image));
    let v = validate_pipeline::validate(&conn.clouds[0], journal, &req, &spinner, Utc::now()).await?;
    swept_warnings(&v.swept);
    match g.output {
        Output::Json => render::json("amictl.validation/v1", &v)?,
        Output::Table => {
            for check in &v.checks {
                outln!("{} {:<14} {}", if check.passed { "pass" } else { "FAIL" }, check.kind, check.detail);
            }
            outln!(
                "{} {} (validator {}, run {})",
                v.image_id,
                if v.passed { "passed validation" } else { "FAILED validation" },
                v.validator.as_deref().unwrap_or("-"),
                v.run_id
            );
        }
    }
    Ok(if v.passed { exit::OK } else { exit::FINDINGS })
}

pub async fn scan(g: &GlobalArgs, c: Config, a: &ScanImageArgs) -> Result<u8, Error> {
    let journal = execute::open_journal(&c, a.instance.journal.as_deref())?;
    if a.show {
        let last = scan_pipeline::last_report(&journal, &a.image)?.ok_or_else(|| Error::NotFound {
            what: format!("a scan report of {}", a.image),
            looked_in: format!("the journal {}", journal.path().display()),
        })?;
        match g.output {
            Output::Json => render::json("amictl.scan-report/v1", &last)?,
            Output::Table => print_saved(&last),
        }
        return Ok(exit::OK);
    }
    let scanner = scanner_choice(&c, a.scanner_command.as_ref(), a.scanner, a.report_format);
    let req = ScanRequest {
        image_id: a.image.clone(),
        scanner,
        fail_on: match &a.fail_on {
            Some(s) => s.parse().map_err(Error::Usage)?,
            None => c.scan.fail_on,
        },
        scan_tag: c.compliance.scan_tag.clone(),
        instances: instance_settings(&c, &a.instance)?,
        command_timeout: command_timeout(&c, &a.instance)?,
    };
    let conn = connect_one(&c).await?;
    let spinner = Spinner::new(&format!("scanning {}", a.image));
    let s = scan_pipeline::scan(&conn.clouds[0], journal, &req, &spinner, Utc::now()).await?;
    swept_warnings(&s.swept);
    match g.output {
        Output::Json => render::json("amictl.scan/v1", &s)?,
        Output::Table => {
            for f in &s.blocking {
                outln!(
                    "{:<9} {:<20} {} {}{}",
                    f.severity.to_string(),
                    f.id,
                    f.package.as_deref().unwrap_or("-"),
                    f.installed.as_deref().unwrap_or(""),
                    f.fixed.as_deref().map(|v| format!(" (fixed in {v})")).unwrap_or_default()
                );
            }
            let counts: Vec<String> = s.report.counts().iter().map(|(sev, n)| format!("{n} {sev}")).collect();
            outln!(
                "{} {} the scan: {}{} ({} at or above {}; scanner {}, run {})",
                s.image_id,
                if s.passed { "passed" } else { "FAILED" },
                counted(s.report.findings.len(), "finding", "findings"),
                if counts.is_empty() { String::new() } else { format!(": {}", counts.join(", ")) },
                s.blocking.len(),
                s.fail_on,
                s.scanner.as_deref().unwrap_or("-"),
                s.run_id
            );
        }
    }
    Ok(if s.passed { exit::OK } else { exit::FINDINGS })
}

/// `--scanner-command`, `--scanner`, `[scan] command`, `[scan] scanner`, in that order.
pub(super) fn scanner_choice(
    c: &Config,
    command: Option<&String>,
    preset: Option<ScannerArg>,
    format: Option<ReportFormatArg>,
) -> ScannerChoice {
    let format = match format {
        None => c.scan.format,
        Some(ReportFormatArg::Auto) => ReportFormat::Auto,
        Some(ReportFormatArg::Trivy) => ReportFormat::Trivy,
        Some(ReportFormatArg::Grype) => ReportFormat::Grype,
        Some(ReportFormatArg::Lynis) => ReportFormat::Lynis,
    };
    match (command, preset, &c.scan.command) {
        (Some(cmd), _, _) => ScannerChoice::Command { command: cmd.clone(), format },
        (None, Some(s), _) => ScannerChoice::Preset(match s {
            ScannerArg::Trivy => Scanner::Trivy,
            ScannerArg::Grype => Scanner::Grype,
            ScannerArg::Lynis => Scanner::Lynis,
        }),
        (None, None, Some(cmd)) => ScannerChoice::Command { command: cmd.clone(), format },
        (None, None, None) => ScannerChoice::Preset(c.scan.scanner),
    }
}

fn print_saved(last: &serde_json::Value) {
    let findings = last.pointer("/report/findings").and_then(|f| f.as_array()).cloned().unwrap_or_default();
    for f in &findings {
        outln!(
            "{:<9} {:<20} {}",
            f["severity"].as_str().unwrap_or("?"),
            f["id"].as_str().unwrap_or("?"),
            f["package"].as_str().unwrap_or("-")
        );
    }
    outln!(
        "{} {} (run {}, scanned {}, fail on {}): {}",
        last["image_id"].as_str().unwrap_or("?"),
        last["verdict"].as_str().unwrap_or("?"),
        last["run_id"],
        last["scanned_at"].as_str().unwrap_or("?"),
        last["fail_on"].as_str().unwrap_or("?"),
        counted(findings.len(), "finding", "findings")
    );
}

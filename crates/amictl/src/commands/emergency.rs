//! `amictl emergency`: flags and `amictl.toml` into an emergency request, the blast radius
//! printed, the run in `amictl_core::pipeline::emergency`, its report (text, JSON, HTML) and
//! SNS messages.

use amictl_core::alerts::{self, Event};
use amictl_core::aws::collect::{self, DEFAULT_CONCURRENCY};
use amictl_core::config::{Config, SharingScope};
use amictl_core::patching::Threshold;
use amictl_core::pipeline::bake::{BakeRequest, BaseChoice};
use amictl_core::pipeline::deploy::{DeployRequest, ImageChoice, Strategy};
use amictl_core::pipeline::emergency::{
    self, BlastRadius, EmergencyReport, EmergencyRequest, Evidence, PackageFix, SavedEmergency, Settings,
};
use amictl_core::pipeline::patch::{Action, PatchRequest, Targets};
use amictl_core::pipeline::scan::ScanRequest;
use amictl_core::pipeline::validate::ValidateRequest;
use amictl_core::text::counted;
use amictl_core::Error;

use super::images::{command_timeout, instance_settings, scanner_choice};
use super::{connect_one, duration_flag, execute, observe, require_complete};
use crate::cli::{EmergencyArgs, GlobalArgs, Output, StrategyArg};
use crate::exit;
use crate::out::outln;
use crate::progress::Spinner;
use crate::render;

fn check_cve(cve: &str) -> Result<(), Error> {
    let ok = cve.strip_prefix("CVE-").and_then(|r| r.split_once('-')).is_some_and(|(y, n)| {
        y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) && n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("--cve {cve:?} is not a CVE id like CVE-2026-1234")))
    }
}

fn request(c: &Config, a: &EmergencyArgs) -> Result<EmergencyRequest, Error> {
    let cve = a.cve.clone().unwrap_or_default().to_ascii_uppercase();
    check_cve(&cve)?;
    let instances = instance_settings(c, &a.instance)?;
    let command_timeout = command_timeout(c, &a.instance)?;
    let mut checks = c.validate.clone();
    if !a.check_command.is_empty() {
        checks.commands = a.check_command.clone();
    }
    let validate = ValidateRequest { image_id: String::new(), checks, instances: instances.clone(), command_timeout };
    amictl_core::pipeline::validate::check_request(&validate)?;
    Ok(EmergencyRequest {
        cve: cve.clone(),
        package: a
            .package
            .clone()
            .map(|name| PackageFix { name, fixed_version: a.fixed_version.clone().unwrap_or_default() }),
        families: a.families.clone(),
        channels: a.channels.clone(),
        revoke: a.revoke,
        bake: BakeRequest {
            family: String::new(),
            base: BaseChoice::Image(String::new()),
            version: None,
            bump: amictl_core::catalog::Bump::Patch,
            patch: amictl_core::pipeline::bake::Patch::Preset(c.bake.patch_preset),
            cves: vec![cve],
            copy_to: vec![],
            share_with: vec![],
            instances: instances.clone(),
            command_timeout,
            image_timeout: c.bake.image_timeout,
        },
        validate,
        scan: ScanRequest {
            image_id: String::new(),
            scanner: scanner_choice(c, a.scanner_command.as_ref(), None, None),
            fail_on: c.scan.fail_on,
            scan_tag: c.compliance.scan_tag.clone(),
            instances,
            command_timeout,
        },
        deploy: deploy_request(a)?,
        patch: PatchRequest {
            targets: Targets::default(),
            action: Action::Preset(c.patch.preset),
            scan_only: false,
            max_concurrency: Threshold::parse("[patch] max_concurrency", &c.patch.max_concurrency, 1)
                .map_err(Error::Usage)?,
            max_errors: Threshold::parse("[patch] max_errors", &c.patch.max_errors, 0).map_err(Error::Usage)?,
            min_healthy: a.min_healthy,
            command_timeout,
        },
    })
}

/// The fast preset: the floor given (90 % by default), no checkpoints, instances already on
/// the image skipped.
fn deploy_request(a: &EmergencyArgs) -> Result<DeployRequest, Error> {
    let timeout = duration_flag("--deploy-timeout", &a.deploy_timeout)?;
    if timeout.is_zero() {
        return Err(Error::Usage("--deploy-timeout: must be longer than 0s".into()));
    }
    Ok(DeployRequest {
        group: String::new(),
        image: ImageChoice::Image(String::new()),
        strategy: match a.strategy {
            StrategyArg::Rolling => Strategy::Rolling,
            StrategyArg::Batched => Strategy::Batched,
            StrategyArg::BlueGreen => Strategy::BlueGreen,
            StrategyArg::Canary => Strategy::Canary,
        },
        min_healthy: a.min_healthy,
        max_healthy: None,
        warmup_seconds: None,
        checkpoints: vec![],
        checkpoint_delay_seconds: None,
        skip_matching: true,
        bake_time_seconds: None,
        alarms: a.alarms.clone(),
        batch_size: Threshold::parse("--batch-size", &a.batch_size, 1).map_err(Error::Usage)?,
        force: false,
        allow_family_change: false,
        no_surge: false,
        timeout,
        health_timeout: timeout,
        poll_interval: duration_flag("--poll-interval", &a.poll_interval)?.max(std::time::Duration::from_millis(100)),
        shift: vec![],
        shift_pause: std::time::Duration::ZERO,
        keep_blue: std::time::Duration::ZERO,
        listener: None,
        green_target_group: None,
    })
}

pub async fn run(g: &GlobalArgs, c: Config, a: &EmergencyArgs) -> Result<u8, Error> {
    let journal = execute::open_journal(&c, a.instance.journal.as_deref())?;
    let conn = connect_one(&c).await?;
    let cloud = &conn.clouds[0];
    let rules = c.family_rules()?;
    let (resume, saved) = match a.resume {
        Some(id) => {
            let (rid, saved) = emergency::interrupted(&journal, (id != 0).then_some(id))?;
            (Some(rid), saved)
        }
        None => {
            let req = request(&c, a)?;
            let inv = collect::collect(&conn.clouds, SharingScope::Deferred, DEFAULT_CONCURRENCY).await;
            // Fail closed: what a missing region runs would be left vulnerable unseen.
            require_complete(&inv)?;
            let scans = emergency::stored_scans(&journal)?;
            let ev = Evidence { inventory: &inv.scopes[0], rules: &rules, scans: &scans };
            let blast_radius = emergency::blast_radius(&req, &ev)?;
            (None, SavedEmergency { request: req, blast_radius })
        }
    };
    if a.dry_run {
        match g.output {
            Output::Json => render::json("amictl.emergency-plan/v1", &saved.blast_radius)?,
            Output::Table => print_plan(&saved.blast_radius),
        }
        return Ok(exit::OK);
    }
    if g.output == Output::Table {
        print_plan(&saved.blast_radius);
    }
    let topic = a.topic_arn.clone().or_else(|| c.alerts.topic_arn.clone());
    let scope = amictl_core::aws::Cloud::scope(cloud).to_string();
    let question = format!(
        "Patch {}: bake, validate, scan, roll out to {}, patch {}?",
        counted(saved.blast_radius.families.len(), "family", "families"),
        counted(saved.blast_radius.families.iter().map(|f| f.groups.len()).sum::<usize>(), "group", "groups"),
        counted(
            saved.blast_radius.families.iter().map(|f| f.standalone.len()).sum::<usize>(),
            "standalone instance",
            "standalone instances"
        )
    );
    // A resumed run was agreed to when it began.
    if resume.is_none() {
        execute::ask(&question, "run the emergency", a.yes)?;
    }
    let who = conn.callers.first().cloned().unwrap_or_default();
    let settings = Settings {
        rules: &rules,
        scan_tag: &c.compliance.scan_tag,
        scan_passed: &c.compliance.scan_passed_values,
        lineage_tag: &c.retire.lineage_tag,
        who: &who,
    };
    let plan_text = plan_text(&saved.blast_radius);
    let started = async {
        let m = alerts::pipeline(
            "emergency",
            resume,
            Event::Started,
            &scope,
            &format!("{}\n\n{plan_text}", saved.request.cve),
        );
        observe::notify(cloud, topic.as_deref(), &m).await;
    };
    started.await;
    let spinner = Spinner::new(&format!("emergency {}", saved.request.cve));
    let result = emergency::run(cloud, journal, &saved, resume, || Ok(()), &settings, &spinner).await;
    drop(spinner);
    match &result {
        Ok(r) => {
            let event = if r.all_patched { Event::Finished } else { Event::Failed };
            observe::notify(
                cloud,
                topic.as_deref(),
                &alerts::pipeline("emergency", Some(r.run_id), event, &scope, &report_text(r)),
            )
            .await;
        }
        Err(e) => {
            let m = alerts::pipeline("emergency", resume, Event::Failed, &scope, &e.to_string());
            observe::notify(cloud, topic.as_deref(), &m).await;
        }
    }
    let report = result?;
    if let Some(path) = &a.report_html {
        observe::write_report(&c, &conn, a.instance.journal.as_deref(), path, Some(report.run_id)).await?;
    }
    match g.output {
        Output::Json => render::json("amictl.emergency/v1", &report)?,
        Output::Table => outln!("{}", report_text(&report)),
    }
    Ok(if report.all_patched { exit::OK } else { exit::FINDINGS })
}

fn plan_text(b: &BlastRadius) -> String {
    let mut s = format!("Blast radius of {}: {} affected image(s)\n", b.cve, b.images.len());
    for i in &b.images {
        s.push_str(&format!(
            "  {} {} [{}]: {}\n",
            i.image_id,
            i.name,
            i.family.as_deref().unwrap_or("no family"),
            i.why
        ));
    }
    for f in &b.families {
        s.push_str(&format!(
            "family {}: bake from {}; groups: {}; templates: {}; instances: {} ({} standalone, patched in place); channels: {}\n",
            f.family,
            f.base.as_deref().unwrap_or("NO VALIDATED BASE"),
            list(&f.groups),
            list(&f.templates),
            f.instances.len(),
            f.standalone.len(),
            list(&f.channels)
        ));
    }
    for i in &b.without_family {
        s.push_str(&format!("  {} ({}) has no family: no patched image can be baked for it\n", i.image_id, i.name));
    }
    s
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn print_plan(b: &BlastRadius) {
    outln!("{}", plan_text(b).trim_end());
}

/// The run's result as text: the SNS message body and the table output.
fn report_text(r: &EmergencyReport) -> String {
    let mut s = format!(
        "Emergency run {} for {}: {}\n",
        r.run_id,
        r.cve,
        if r.all_patched { "everything patched" } else { "NOT everything is patched" }
    );
    for f in &r.families {
        s.push_str(&format!(
            "family {}: {} {}{}{}\n",
            f.family,
            f.image_id.as_deref().unwrap_or("no image"),
            f.version.as_deref().map(|v| format!("(version {v}) ")).unwrap_or_default(),
            if f.validated && f.scanned { "validated and scanned" } else { "not proven" },
            f.error.as_deref().map(|e| format!("; FAILED: {e}")).unwrap_or_default()
        ));
        for (g, o) in &f.deployments {
            s.push_str(&format!("  group {g}: {o}\n"));
        }
        if let Some(p) = &f.patched {
            s.push_str(&format!(
                "  standalone instances: {} of {} patched{}\n",
                p.succeeded,
                p.targeted,
                if p.all_succeeded() { "" } else { " (see amictl history)" }
            ));
        }
        if !f.promoted.is_empty() {
            s.push_str(&format!("  promoted to: {}\n", f.promoted.join(", ")));
        }
        if !f.deprecated.is_empty() {
            s.push_str(&format!("  deprecated: {}\n", f.deprecated.join(", ")));
        }
        if !f.revoked.is_empty() {
            s.push_str(&format!("  revoked: {}\n", f.revoked.join(", ")));
        }
    }
    s.trim_end().to_string()
}

//! `amictl patch`: flags and `[patch]` into a request, the fleet resolved and batched, the run
//! on the engine, every instance's result rendered.

use amictl_core::config::Config;
use amictl_core::patching::{self, Threshold};
use amictl_core::pipeline::patch::{self as pipeline, Action, PatchReport, PatchRequest, Saved, Targets};
use amictl_core::presets::PatchPreset;
use amictl_core::Error;
use chrono::Utc;

use super::{connect_one, duration_flag, execute};
use crate::cli::{GlobalArgs, OperationArg, Output, PatchArgs, PatchPresetArg, RebootArg};
use crate::exit;
use crate::out::outln;
use crate::progress::Spinner;
use crate::render;

fn request(c: &Config, a: &PatchArgs) -> Result<PatchRequest, Error> {
    let targets = Targets {
        tags: a
            .targets
            .iter()
            .map(|t| patching::parse_tag_target(t))
            .collect::<Result<_, _>>()
            .map_err(Error::Usage)?,
        instances: a.instances.clone(),
        groups: a.groups.clone(),
    };
    let action = if a.baseline || a.operation.is_some() || a.reboot.is_some() {
        Action::Baseline {
            install: a.operation != Some(OperationArg::Scan),
            reboot: a.reboot != Some(RebootArg::Never),
        }
    } else if !a.command.is_empty() {
        Action::Commands(a.command.clone())
    } else {
        Action::Preset(match a.preset {
            Some(PatchPresetArg::SecurityUpdates) => PatchPreset::SecurityUpdates,
            Some(PatchPresetArg::AllUpdates) => PatchPreset::AllUpdates,
            None => c.patch.preset,
        })
    };
    let concurrency = a.max_concurrency.as_deref().unwrap_or(&c.patch.max_concurrency);
    let errors = a.max_errors.as_deref().unwrap_or(&c.patch.max_errors);
    if (a.scan_only || a.operation == Some(OperationArg::Scan)) && matches!(action, Action::Commands(_)) {
        return Err(Error::Usage("--scan-only runs a preset's listing or the baseline's scan, not --command".into()));
    }
    // `--operation scan` is a scan: nothing changes, no batching for health.
    let scan_only = a.scan_only || a.operation == Some(OperationArg::Scan);
    Ok(PatchRequest {
        targets,
        action,
        scan_only,
        max_concurrency: Threshold::parse("--max-concurrency", concurrency, 1).map_err(Error::Usage)?,
        max_errors: Threshold::parse("--max-errors", errors, 0).map_err(Error::Usage)?,
        min_healthy: a.min_healthy.unwrap_or(c.patch.min_healthy).min(100),
        command_timeout: match &a.command_timeout {
            Some(d) => duration_flag("--command-timeout", d)?,
            None => c.bake.command_timeout,
        },
    })
}

pub async fn run(g: &GlobalArgs, c: Config, a: &PatchArgs) -> Result<u8, Error> {
    let journal = execute::open_journal(&c, a.journal.as_deref())?;
    let fresh = if a.resume.is_none() { Some(request(&c, a)?) } else { None };
    let conn = connect_one(&c).await?;
    let (resume, saved) = match a.resume {
        Some(id) => {
            let (id, saved) = pipeline::interrupted(&journal, (id != 0).then_some(id))?;
            (Some(id), saved)
        }
        None => {
            let req = fresh.expect("a request when not resuming");
            let fleet = pipeline::resolve(&conn.clouds[0], &req.targets).await?;
            let plan = pipeline::plan(&req, &fleet)?;
            let nonce = amictl_core::pipeline::ephemeral::process_nonce().to_string();
            (None, Saved { request: req, fleet, plan, nonce })
        }
    };
    if a.dry_run {
        print_plan(g, &saved)?;
        return Ok(exit::OK);
    }
    let managed: usize = saved.plan.batches.iter().map(|b| b.instance_ids.len()).sum();
    let verb = if saved.request.scan_only { "scan" } else { "patch" };
    let question = format!(
        "{} {managed} instance(s) in {} batch(es) ({} not managed by SSM)?",
        if saved.request.scan_only { "Scan" } else { "Patch" },
        saved.plan.batches.len(),
        saved.plan.not_managed.len()
    );
    let yes = a.yes || saved.request.scan_only || resume.is_some();
    let spinner = Spinner::new(verb);
    let report = pipeline::run(
        &conn.clouds[0],
        journal,
        &saved,
        resume,
        || execute::ask(&question, verb, yes),
        &spinner,
        Utc::now(),
    )
    .await?;
    match g.output {
        Output::Json => render::json("amictl.patch/v1", &report)?,
        Output::Table => print_report(&report),
    }
    Ok(if report.summary.all_succeeded() { exit::OK } else { exit::FINDINGS })
}

fn print_plan(g: &GlobalArgs, saved: &Saved) -> Result<(), Error> {
    if g.output == Output::Json {
        return render::json("amictl.patch-plan/v1", saved);
    }
    for b in &saved.plan.batches {
        let groups: Vec<String> = b.groups.iter().map(|(g, n)| format!("{g}: {n}")).collect();
        outln!(
            "batch {}: {} instance(s){}",
            b.number,
            b.instance_ids.len(),
            if groups.is_empty() { String::new() } else { format!(" ({})", groups.join(", ")) }
        );
    }
    for g in &saved.plan.groups {
        outln!("group {}: {} in service, at most {} patched at once", g.name, g.in_service, g.at_once);
    }
    if !saved.plan.not_managed.is_empty() {
        outln!("not managed by Systems Manager (nothing sent): {}", saved.plan.not_managed.join(", "));
    }
    outln!(
        "max concurrency {}, the run stops sending after {} error(s); nothing sent (--dry-run)",
        saved.request.max_concurrency.text(),
        saved.plan.max_errors
    );
    Ok(())
}

fn print_report(r: &PatchReport) {
    let shown: Vec<&amictl_core::patching::InstanceResult> =
        r.results.iter().filter(|i| i.status != "Success" || r.scan_only).collect();
    if !shown.is_empty() {
        render::print(&render::patch_results(&shown, render::width()));
    }
    let s = &r.summary;
    outln!(
        "run {}: {} targeted, {} succeeded, {} failed, {} timed out, {} not managed, {} not run",
        r.run_id,
        s.targeted,
        s.succeeded,
        s.failed,
        s.timed_out,
        s.not_managed,
        s.not_run
    );
}

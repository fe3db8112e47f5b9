//! `amictl emergency --cve CVE-…`: from a vulnerability to a patched fleet in one journaled run.
//!
//! 1. **Blast radius** ([`blast_radius`], pure): the images a stored scan report names the CVE
//!    in (or lists the package below its fixed version), else every image of the families
//!    given; for each, the groups, templates and instances that run it.
//! 2. For each affected family, one after the other: **bake** a patched image from the newest
//!    validated image of the family, **validate** it, **scan** it (the scan must no longer
//!    report the CVE), **promote** it to the channels that pointed at a vulnerable image,
//!    **deploy** it to every affected group, **patch in place** the standalone instances, and
//!    **deprecate** (and with `--revoke`, revoke) the vulnerable images.
//!
//! Every stage is a step of the emergency run and every bake, validation, scan, deployment and
//! patch is a run of its own, recorded as the emergency run's child and working under its lock.
//! A resumed run skips what is done, continues an interrupted deployment or patch where it
//! stopped, and lets an interrupted bake finish the image it made. A family that fails does not
//! stop the others.

use std::collections::{BTreeMap, BTreeSet};

use std::future::Future;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::aws::{Alarms, Cloud, Groups, LoadBalancing, Machines};
use crate::catalog;
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;
use crate::family::FamilyRules;
use crate::inventory::{Image, RegionInventory};
use crate::journal::Journal;
use crate::patching::Summary;
use crate::pipeline::bake::{self, BakeRequest, BaseChoice};
use crate::pipeline::deploy::{self, DeployRequest, ImageChoice};
use crate::pipeline::patch::{self, PatchRequest, Saved, Targets};
use crate::pipeline::scan::{self as scan_pipeline, ScanRequest};
use crate::pipeline::validate::{self, ValidateRequest};
use crate::scan::{self, ScanReport};
use crate::usage::{self, RefKind};

/// On a vulnerable image the emergency deprecated: the CVE and the run.
pub const DEPRECATED_BY_TAG: &str = "amictl:deprecated-for";

/// `--package openssl --fixed-version 3.0.13`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFix {
    pub name: String,
    pub fixed_version: String,
}

/// What the emergency run was asked for; the per-family requests are templates whose image,
/// family and group are filled in per family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmergencyRequest {
    pub cve: String,
    pub package: Option<PackageFix>,
    pub families: Vec<String>,
    /// Channels to promote to; empty: those that point at a vulnerable image now.
    pub channels: Vec<String>,
    pub revoke: bool,
    pub bake: BakeRequest,
    pub validate: ValidateRequest,
    pub scan: ScanRequest,
    pub deploy: DeployRequest,
    pub patch: PatchRequest,
}

/// An image the CVE affects, and why amictl thinks so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    pub image_id: String,
    pub name: String,
    pub family: Option<String>,
    pub why: String,
}

/// One affected family: what to bake from and where the patched image goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyPlan {
    pub family: String,
    /// The newest validated image of the family (the bake's base).
    pub base: Option<String>,
    pub vulnerable: Vec<String>,
    pub groups: Vec<String>,
    /// Launch template versions that name a vulnerable image (`lt-…:3`).
    pub templates: Vec<String>,
    /// Live instances on a vulnerable image (in a group or not).
    pub instances: Vec<String>,
    /// Those not in any group: patched in place.
    pub standalone: Vec<String>,
    pub channels: Vec<String>,
}

/// The blast radius: the plan `--dry-run` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlastRadius {
    pub cve: String,
    pub images: Vec<Affected>,
    pub families: Vec<FamilyPlan>,
    /// Affected images no family rule places: no patched image can be baked for them.
    pub without_family: Vec<Affected>,
}

/// What is known about the estate, for [`blast_radius`].
pub struct Evidence<'a> {
    pub inventory: &'a RegionInventory,
    pub rules: &'a FamilyRules,
    /// The newest stored scan report of each image.
    pub scans: &'a BTreeMap<String, ScanReport>,
}

/// Why a scan report makes an image affected, if it does.
pub fn affected_by(report: &ScanReport, cve: &str, package: Option<&PackageFix>) -> Option<String> {
    if let Some(f) = report.findings.iter().find(|f| f.id.eq_ignore_ascii_case(cve)) {
        let what = f.package.as_deref().map(|p| format!(" in {p} {}", f.installed.as_deref().unwrap_or("")));
        return Some(format!("its scan reports {cve}{}", what.unwrap_or_default().trim_end()));
    }
    let p = package?;
    report.findings.iter().find_map(|f| {
        let installed = f.installed.as_deref()?;
        (f.package.as_deref() == Some(p.name.as_str()) && scan::version_below(installed, &p.fixed_version))
            .then(|| format!("its scan lists {} {installed}, below the fixed {}", p.name, p.fixed_version))
    })
}

fn lists_package(report: &ScanReport, name: &str) -> bool {
    report.findings.iter().any(|f| f.package.as_deref() == Some(name))
}

/// The affected images: from the scan reports, and every image of the families given.
fn affected_images(req: &EmergencyRequest, ev: &Evidence) -> Result<Vec<Affected>, Error> {
    let mut out: BTreeMap<String, Affected> = BTreeMap::new();
    let family = |i: &Image| ev.rules.name_of(i);
    for image in ev.inventory.images.iter().filter(|i| i.state != "deregistered") {
        if let Some(why) = ev.scans.get(&image.id).and_then(|r| affected_by(r, &req.cve, req.package.as_ref())) {
            out.insert(
                image.id.clone(),
                Affected { image_id: image.id.clone(), name: image.name.clone(), family: family(image), why },
            );
        }
    }
    if let Some(p) = &req.package {
        if !ev.scans.values().any(|r| lists_package(r, &p.name)) && req.families.is_empty() {
            return Err(Error::Usage(format!(
                "no stored scan report lists package {}: scan the images first (`amictl scan AMI`), or name the families to patch with --family",
                p.name
            )));
        }
    }
    for f in &req.families {
        let images = catalog::family_versions(&ev.inventory.images, f, ev.rules);
        if images.is_empty() {
            return Err(Error::NotFound {
                what: format!("family {f} (no AMI the family rules put in it)"),
                looked_in: ev.inventory.scope().to_string(),
            });
        }
        for image in images.into_iter().filter(|i| i.state == "available") {
            out.entry(image.id.clone()).or_insert_with(|| Affected {
                image_id: image.id.clone(),
                name: image.name.clone(),
                family: Some(f.clone()),
                why: format!("--family {f}"),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(match &req.package {
            Some(p) => format!(
                "no stored scan report names {} or lists {} below {}, and no --family was given: name the families to patch",
                req.cve, p.name, p.fixed_version
            ),
            None => format!(
                "no stored scan report names {}, and no --family was given: name the families to patch (--family F), \
                 or scan the images first (`amictl scan AMI`)",
                req.cve
            ),
        }));
    }
    Ok(out.into_values().collect())
}

/// The newest validated image of the family (its scan verdict does not matter: this bake is
/// what fixes it), the base of its patched image.
fn base_of(inv: &RegionInventory, family: &str, rules: &FamilyRules) -> Option<String> {
    catalog::family_versions(&inv.images, family, rules)
        .into_iter()
        .find(|i| {
            i.state == "available"
                && !catalog::is_revoked(i)
                && i.tags.get(catalog::VALIDATION_TAG).is_some_and(|v| v == "passed")
        })
        .map(|i| i.id.clone())
}

/// One family's users of its vulnerable images.
fn family_plan(
    req: &EmergencyRequest,
    ev: &Evidence,
    use_: &usage::Usage,
    family: &str,
    vulnerable: Vec<String>,
) -> FamilyPlan {
    let in_group: BTreeSet<&str> =
        ev.inventory.auto_scaling_groups.iter().flat_map(|g| g.instance_ids.iter().map(String::as_str)).collect();
    let mut groups = BTreeSet::new();
    let mut templates = BTreeSet::new();
    let mut instances = BTreeSet::new();
    for id in &vulnerable {
        for r in use_.references.get(id).into_iter().flatten() {
            match r.kind {
                RefKind::AutoScalingGroup => {
                    groups.insert(r.id.clone());
                }
                RefKind::LaunchTemplate => {
                    templates.insert(r.id.clone());
                }
                RefKind::Instance => {
                    instances.insert(r.id.clone());
                }
                _ => {}
            }
        }
    }
    // A group whose members run a vulnerable image, whatever its template says now.
    for g in &ev.inventory.auto_scaling_groups {
        if g.instance_ids.iter().any(|i| instances.contains(i)) {
            groups.insert(g.name.clone());
        }
    }
    let standalone = instances.iter().filter(|i| !in_group.contains(i.as_str())).cloned().collect();
    let channels = if req.channels.is_empty() {
        ev.inventory
            .channels
            .iter()
            .filter(|c| c.family == family && vulnerable.contains(&c.image_id))
            .map(|c| c.name.clone())
            .collect()
    } else {
        req.channels.clone()
    };
    FamilyPlan {
        family: family.to_string(),
        base: base_of(ev.inventory, family, ev.rules),
        vulnerable,
        groups: groups.into_iter().collect(),
        templates: templates.into_iter().collect(),
        instances: instances.into_iter().collect(),
        standalone,
        channels,
    }
}

/// The affected images and, per family, what runs them. A family given by name that nothing
/// runs is an error (there is nothing to roll out); so is a CVE no scan names with no family.
pub fn blast_radius(req: &EmergencyRequest, ev: &Evidence) -> Result<BlastRadius, Error> {
    let images = affected_images(req, ev)?;
    let use_ = usage::analyze(ev.inventory);
    let mut by_family: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut without_family = Vec::new();
    for a in &images {
        match &a.family {
            Some(f) => by_family.entry(f.clone()).or_default().push(a.image_id.clone()),
            None => without_family.push(a.clone()),
        }
    }
    let families: Vec<FamilyPlan> = by_family.into_iter().map(|(f, v)| family_plan(req, ev, &use_, &f, v)).collect();
    for f in &req.families {
        if let Some(p) = families.iter().find(|p| &p.family == f && p.groups.is_empty() && p.instances.is_empty()) {
            return Err(Error::Usage(format!(
                "family {}: no Auto Scaling group or instance runs its images ({}): nothing to roll out \
                 (bake a patched image with `amictl bake --family {}`)",
                p.family,
                p.vulnerable.join(", "),
                p.family
            )));
        }
    }
    Ok(BlastRadius { cve: req.cve.clone(), images, families, without_family })
}

/// The newest stored scan report of every image the journal has one for.
pub fn stored_scans(journal: &Journal) -> Result<BTreeMap<String, ScanReport>, Error> {
    let mut out = BTreeMap::new();
    for (image_id, report) in journal.latest_scans()? {
        let v: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
        if let Some(r) = v.get("report").and_then(|r| serde_json::from_value::<ScanReport>(r.clone()).ok()) {
            out.insert(image_id, r);
        }
    }
    Ok(out)
}

/// What happened to one family.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FamilyOutcome {
    pub family: String,
    pub image_id: Option<String>,
    pub version: Option<String>,
    pub validated: bool,
    pub scanned: bool,
    pub promoted: Vec<String>,
    /// `(group, outcome)`: `deployed`, `rolled-back`, or the error.
    pub deployments: Vec<(String, String)>,
    pub patched: Option<Summary>,
    pub deprecated: Vec<String>,
    pub revoked: Vec<String>,
    /// Why the family is not patched, when it is not.
    pub error: Option<String>,
}

impl FamilyOutcome {
    pub fn patched_everything(&self) -> bool {
        self.error.is_none()
            && self.deployments.iter().all(|(_, o)| o == "deployed")
            && self.patched.as_ref().is_none_or(|s| s.all_succeeded())
    }
}

/// What the emergency run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmergencyReport {
    pub run_id: i64,
    pub cve: String,
    pub blast_radius: BlastRadius,
    pub families: Vec<FamilyOutcome>,
    /// Every family patched, deployed and its vulnerable images deprecated.
    pub all_patched: bool,
}

/// The saved plan of an emergency run: what a resume continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedEmergency {
    pub request: EmergencyRequest,
    pub blast_radius: BlastRadius,
}

/// What the pipeline needs from the configuration besides the request.
pub struct Settings<'a> {
    pub rules: &'a FamilyRules,
    pub scan_tag: &'a str,
    pub scan_passed: &'a [String],
    pub lineage_tag: &'a str,
    pub who: &'a str,
}

/// Runs (or, with `resume`, continues) an emergency on the engine.
pub async fn run<C: Cloud + Machines + Groups + LoadBalancing + Alarms>(
    cloud: &C,
    journal: Journal,
    saved: &SavedEmergency,
    resume: Option<i64>,
    confirm: impl FnOnce() -> Result<(), Error>,
    settings: &Settings<'_>,
    progress: &dyn Progress,
) -> Result<EmergencyReport, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let plan = serde_json::to_string(saved).map_err(|e| Error::Other(format!("cannot record the plan: {e}")))?;
    let (run, dead) = crate::engine::Engine::new(journal, "emergency")
        .guard(&[], false)?
        .confirm(confirm)?
        .begin(&plan, &scopes, resume)?;
    for h in dead {
        tracing::warn!("took over the lock of {}/{} from run {} (its process is gone)", h.account, h.region, h.run_id);
    }
    let work = async {
        let mut families = Vec::new();
        for fp in &saved.blast_radius.families {
            // Boxed: the stages' futures together are too deep for a thread's stack.
            families.push(Box::pin(family(cloud, &run, saved, fp, settings, progress)).await?);
        }
        Ok(families)
    };
    let r = run.drive(work).await;
    let report = r.map(|families| {
        let all_patched =
            families.iter().all(FamilyOutcome::patched_everything) && saved.blast_radius.without_family.is_empty();
        EmergencyReport {
            run_id: run.id(),
            cve: saved.request.cve.clone(),
            blast_radius: saved.blast_radius.clone(),
            families,
            all_patched,
        }
    });
    run.finish(match &report {
        Ok(r) if r.all_patched => "completed",
        Ok(_) => "completed-with-errors",
        Err(_) => "failed",
    })?;
    report
}

/// A step whose result is kept as JSON in the journal, so a resumed run reads it back instead
/// of doing it again.
async fn kept<T: Serialize + for<'de> Deserialize<'de>>(
    run: &Run,
    id: &str,
    progress: &dyn Progress,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    if let Recorded::Done(detail) = run.recorded(id)? {
        if let Ok(v) = serde_json::from_str(&detail) {
            return Ok(v);
        }
    }
    run.step(id, progress, work, |v| serde_json::to_string(v).unwrap_or_default()).await
}

/// A journal for a child run of `run`.
fn child_journal(run: &Run) -> Result<Journal, Error> {
    let path = run.journal().lock().unwrap().path().to_path_buf();
    Ok(Journal::open(&path)?.within(run.id()))
}

/// The newest child run of `command` whose plan `matches`, with its status and plan.
fn child_run(run: &Run, command: &str, matches: impl Fn(&str) -> bool) -> Result<Option<(i64, String, String)>, Error> {
    let children = run.journal().lock().unwrap().children(run.id())?;
    Ok(children.into_iter().rev().find(|(_, c, _, plan)| c == command && matches(plan)).map(|(id, _, s, p)| (id, s, p)))
}

/// One family, start to end; a failure is recorded in its outcome, not raised.
async fn family<C: Cloud + Machines + Groups + LoadBalancing + Alarms>(
    cloud: &C,
    run: &Run,
    saved: &SavedEmergency,
    fp: &FamilyPlan,
    settings: &Settings<'_>,
    progress: &dyn Progress,
) -> Result<FamilyOutcome, Error> {
    let mut out = FamilyOutcome { family: fp.family.clone(), ..Default::default() };
    match family_steps(cloud, run, saved, fp, settings, progress, &mut out).await {
        Ok(()) => {}
        // An interruption ends the whole run; anything else ends only this family.
        Err(e @ Error::Interrupted(_)) => return Err(e),
        Err(e) => out.error = Some(e.to_string()),
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Made {
    image_id: String,
    version: String,
    run_id: i64,
}

#[allow(clippy::too_many_arguments)]
async fn family_steps<C: Cloud + Machines + Groups + LoadBalancing + Alarms>(
    cloud: &C,
    run: &Run,
    saved: &SavedEmergency,
    fp: &FamilyPlan,
    settings: &Settings<'_>,
    progress: &dyn Progress,
    out: &mut FamilyOutcome,
) -> Result<(), Error> {
    let req = &saved.request;
    let f = &fp.family;
    let made = kept(run, &format!("bake:{f}"), progress, bake_step(cloud, run, req, fp, settings, progress)).await?;
    out.image_id = Some(made.image_id.clone());
    out.version = Some(made.version.clone());
    let image = made.image_id.as_str();
    kept(run, &format!("validate:{f}"), progress, validate_step(cloud, run, req, image, progress)).await?;
    out.validated = true;
    kept(run, &format!("scan:{f}"), progress, scan_step(cloud, run, req, image, progress)).await?;
    out.scanned = true;
    for channel in &fp.channels {
        let promote = async {
            let j = child_journal(run)?;
            let c = crate::pipeline::catalog::promote(
                cloud,
                j,
                f,
                channel,
                image,
                settings.rules,
                settings.scan_tag,
                settings.scan_passed,
                false,
                settings.who,
                Utc::now(),
            )
            .await?;
            Ok(c.version)
        };
        kept(run, &format!("promote:{f}:{channel}"), progress, promote).await?;
        out.promoted.push(channel.clone());
    }
    for group in &fp.groups {
        let outcome = match kept(
            run,
            &format!("deploy:{f}:{group}"),
            progress,
            deploy_step(cloud, run, req, group, image, settings, progress),
        )
        .await
        {
            Ok(o) => o,
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) => e.to_string(),
        };
        out.deployments.push((group.clone(), outcome));
    }
    if !fp.standalone.is_empty() {
        let summary =
            kept(run, &format!("patch:{f}"), progress, patch_step(cloud, run, req, &fp.standalone, progress)).await?;
        out.patched = Some(summary);
    }
    if !out.patched_everything() {
        // The vulnerable images still run somewhere: deprecating them now would only hide them.
        return Err(Error::Other(format!(
            "{f}: not every group and instance is on {image}; the vulnerable images stay"
        )));
    }
    // EC2's own deprecation (a minute ahead: EC2 refuses a time in the past), not retirement's
    // stage tags: retirement takes it from EC2's state, and never "restores" a deprecation it
    // did not make, even when it keeps the image (e.g. as the base of the patched one).
    let deprecate = async {
        // Right before: nothing may run a vulnerable image any more (an instance launched since
        // the plan, by anything), but the instances patched in place.
        // The standalone instances were patched in place: their image id stays the old one.
        let users: Vec<_> = cloud
            .live_instances_using(&fp.vulnerable)
            .await?
            .into_iter()
            .filter(|i| !fp.standalone.contains(&i.id))
            .collect();
        if !users.is_empty() {
            let ids: Vec<String> = users.iter().map(|i| format!("{} ({})", i.id, i.image_id)).collect();
            return Err(Error::Other(format!(
                "{f}: still running a vulnerable image: {}; not deprecated",
                ids.join(", ")
            )));
        }
        let now = Utc::now();
        for id in &fp.vulnerable {
            cloud.deprecate_image(id, now + chrono::Duration::minutes(1)).await?;
        }
        let tags = [(DEPRECATED_BY_TAG.to_string(), format!("{} (amictl emergency run {})", req.cve, run.id()))];
        cloud.tag(&fp.vulnerable, &tags).await?;
        Ok(fp.vulnerable.clone())
    };
    out.deprecated = kept(run, &format!("deprecate:{f}"), progress, deprecate).await?;
    if req.revoke {
        let revoke = async {
            let mut revoked = Vec::new();
            for id in &fp.vulnerable {
                let reason = format!("{} (amictl emergency run {})", req.cve, run.id());
                let r = crate::pipeline::catalog::revoke(
                    cloud,
                    id,
                    false,
                    &reason,
                    false,
                    settings.lineage_tag,
                    Utc::now(),
                )
                .await?;
                revoked.extend(r.image_ids);
            }
            Ok(revoked)
        };
        out.revoked = kept(run, &format!("revoke:{f}"), progress, revoke).await?;
    }
    Ok(())
}

async fn bake_step<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &EmergencyRequest,
    fp: &FamilyPlan,
    settings: &Settings<'_>,
    progress: &dyn Progress,
) -> Result<Made, Error> {
    let base = fp.base.clone().ok_or_else(|| {
        Error::Other(format!(
            "family {}: no validated image to bake from (available, not revoked, amictl:validation=passed)",
            fp.family
        ))
    })?;
    let mut cves = req.bake.cves.clone();
    if !cves.contains(&req.cve) {
        cves.push(req.cve.clone());
    }
    let bake = BakeRequest { family: fp.family.clone(), base: BaseChoice::Image(base), cves, ..req.bake.clone() };
    let scan = (settings.scan_tag, settings.scan_passed);
    let b = Box::pin(bake::bake(cloud, &[], child_journal(run)?, &bake, settings.rules, scan, progress, Utc::now()))
        .await?;
    Ok(Made { image_id: b.image_id, version: b.version, run_id: b.run_id })
}

async fn validate_step<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &EmergencyRequest,
    image: &str,
    progress: &dyn Progress,
) -> Result<i64, Error> {
    let v = ValidateRequest { image_id: image.to_string(), ..req.validate.clone() };
    let done = Box::pin(validate::validate(cloud, child_journal(run)?, &v, progress, Utc::now())).await?;
    if !done.passed {
        let failed: Vec<String> =
            done.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.kind, c.detail)).collect();
        return Err(Error::Other(format!("{image} failed validation (run {}): {}", done.run_id, failed.join("; "))));
    }
    Ok(done.run_id)
}

async fn scan_step<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &EmergencyRequest,
    image: &str,
    progress: &dyn Progress,
) -> Result<i64, Error> {
    let s = ScanRequest { image_id: image.to_string(), ..req.scan.clone() };
    let done = Box::pin(scan_pipeline::scan(cloud, child_journal(run)?, &s, progress, Utc::now())).await?;
    if let Some(why) = affected_by(&done.report, &req.cve, req.package.as_ref()) {
        return Err(Error::Other(format!(
            "the patched image {image} is still vulnerable: {why} (scan run {})",
            done.run_id
        )));
    }
    if !done.passed {
        let ids: Vec<&str> = done.blocking.iter().map(|f| f.id.as_str()).collect();
        return Err(Error::Other(format!(
            "{image} failed its scan (run {}): {} finding(s) at or above {}: {}",
            done.run_id,
            ids.len(),
            done.fail_on,
            ids.join(", ")
        )));
    }
    Ok(done.run_id)
}

fn release_rules<'a>(settings: &Settings<'a>) -> deploy::ReleaseRules<'a> {
    deploy::ReleaseRules { scan_tag: settings.scan_tag, scan_passed: settings.scan_passed, families: settings.rules }
}

/// Moves `group` to `image`, or continues the deployment an interrupted run began.
async fn deploy_step<C: Cloud + Machines + Groups + LoadBalancing + Alarms>(
    cloud: &C,
    run: &Run,
    req: &EmergencyRequest,
    group: &str,
    image: &str,
    settings: &Settings<'_>,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let same = |plan: &str| {
        serde_json::from_str::<deploy::SavedPlan>(plan)
            .is_ok_and(|s| s.prepared.group == group && s.prepared.image_id == image)
    };
    let earlier = child_run(run, "deploy", same)?;
    let d = match earlier {
        Some((id, status, _)) if matches!(status.as_str(), "interrupted" | "failed") => {
            let (rid, dreq, prepared) = deploy::interrupted(&run.journal().lock().unwrap(), Some(id))?;
            let back = deploy::rolling_back(&run.journal().lock().unwrap(), rid)?;
            deploy::recheck(cloud, &dreq, &prepared, &release_rules(settings), back).await?;
            Box::pin(deploy::run(
                cloud,
                child_journal(run)?,
                "deploy",
                &dreq,
                &prepared,
                Some(rid),
                progress,
                Utc::now(),
            ))
            .await?
        }
        _ => {
            let dreq = DeployRequest {
                group: group.to_string(),
                image: ImageChoice::Image(image.to_string()),
                ..req.deploy.clone()
            };
            let prepared = deploy::prepare(cloud, &dreq, &release_rules(settings)).await?;
            Box::pin(deploy::run(cloud, child_journal(run)?, "deploy", &dreq, &prepared, None, progress, Utc::now()))
                .await?
        }
    };
    if d.outcome != "deployed" {
        return Err(Error::Other(format!(
            "group {group}: {} ({})",
            d.outcome,
            d.reason.as_deref().unwrap_or("the health gate failed")
        )));
    }
    Ok(d.outcome)
}

/// Patches the standalone instances in place, or continues the patch an interrupted run began.
async fn patch_step<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    req: &EmergencyRequest,
    instances: &[String],
    progress: &dyn Progress,
) -> Result<Summary, Error> {
    // This family's patch, told by its targets: another family's has other instances.
    let wanted: std::collections::BTreeSet<&String> = instances.iter().collect();
    let same = |plan: &str| {
        serde_json::from_str::<Saved>(plan)
            .is_ok_and(|s| s.request.targets.instances.iter().collect::<std::collections::BTreeSet<_>>() == wanted)
    };
    let earlier = child_run(run, "patch", same)?;
    let report = match earlier {
        Some((id, status, _)) if status == "interrupted" => {
            let (rid, saved) = patch::interrupted(&run.journal().lock().unwrap(), Some(id))?;
            Box::pin(patch::run(cloud, child_journal(run)?, &saved, Some(rid), || Ok(()), progress, Utc::now())).await?
        }
        _ => {
            let preq = PatchRequest {
                targets: Targets { instances: instances.to_vec(), ..Targets::default() },
                ..req.patch.clone()
            };
            let fleet = patch::resolve(cloud, &preq.targets).await?;
            let plan = patch::plan(&preq, &fleet)?;
            let saved =
                Saved { request: preq, fleet, plan, nonce: crate::pipeline::ephemeral::process_nonce().to_string() };
            Box::pin(patch::run(cloud, child_journal(run)?, &saved, None, || Ok(()), progress, Utc::now())).await?
        }
    };
    Ok(report.summary)
}

/// The newest interrupted emergency run (or run `id`), to resume it.
pub fn interrupted(journal: &Journal, id: Option<i64>) -> Result<(i64, SavedEmergency), Error> {
    let (id, plan) = journal.resumable_run("emergency", id, &["interrupted", "failed"])?;
    let saved = serde_json::from_str(&plan)
        .map_err(|e| Error::Other(format!("run {id}: its recorded plan does not read as an emergency plan: {e}")))?;
    Ok((id, saved))
}

/// Every step of run `id` with its times, oldest first: the timeline of the report.
pub fn timeline(journal: &Journal, id: i64) -> Result<Vec<crate::journal::StepRecord>, Error> {
    let mut steps: Vec<_> = journal.steps(id)?.into_values().collect();
    steps.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.action_id.cmp(&b.action_id)));
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::image;
    use crate::inventory::{AsgSource, AutoScalingGroup, Instance, LaunchTemplate, LaunchTemplateVersion, TemplateRef};
    use crate::scan::{Finding, ReportFormat};

    fn rules() -> FamilyRules {
        FamilyRules { explicit: vec![], tag_keys: vec!["Application".into()], name_pattern: None }
    }

    fn instance(id: &str, image: &str) -> Instance {
        Instance {
            id: id.into(),
            image_id: image.into(),
            state: "running".into(),
            name: None,
            launch_time: None,
            tags: Default::default(),
        }
    }

    /// web-1 (vulnerable, validated) runs in group `web` (i-1, i-2) and standalone on i-3;
    /// web-2 (newer, unscanned) runs on i-4; db-1 runs on i-5 and its scan is clean.
    fn inventory() -> RegionInventory {
        let web = [("Application", "web"), ("amictl:validation", "passed")];
        let mut inv = RegionInventory { account: "1".into(), region: "r".into(), ..Default::default() };
        inv.images = vec![
            image("ami-web1", 30, &web),
            image("ami-web2", 5, &[("Application", "web")]),
            image("ami-db1", 10, &[("Application", "db"), ("amictl:validation", "passed")]),
        ];
        inv.instances = vec![
            instance("i-1", "ami-web1"),
            instance("i-2", "ami-web1"),
            instance("i-3", "ami-web1"),
            instance("i-4", "ami-web2"),
            instance("i-5", "ami-db1"),
        ];
        inv.launch_templates = vec![LaunchTemplate {
            id: "lt-1".into(),
            name: "web".into(),
            default_version: 1,
            latest_version: 1,
            versions: vec![LaunchTemplateVersion { number: 1, image_id: Some("ami-web1".into()) }],
        }];
        inv.auto_scaling_groups = vec![AutoScalingGroup {
            name: "web".into(),
            min_size: 2,
            max_size: 2,
            desired_capacity: 2,
            source: AsgSource::LaunchTemplate {
                template: TemplateRef { id: Some("lt-1".into()), name: None, version: Some("$Default".into()) },
            },
            instance_ids: vec!["i-1".into(), "i-2".into()],
            in_service: vec!["i-1".into(), "i-2".into()],
        }];
        inv
    }

    fn report(findings: &[(&str, &str, &str)]) -> ScanReport {
        ScanReport {
            format: ReportFormat::Trivy,
            findings: findings
                .iter()
                .map(|(id, pkg, v)| Finding {
                    id: id.to_string(),
                    severity: crate::report::Severity::High,
                    package: Some(pkg.to_string()),
                    installed: Some(v.to_string()),
                    fixed: None,
                })
                .collect(),
        }
    }

    fn request(cve: &str, package: Option<(&str, &str)>, families: &[&str]) -> EmergencyRequest {
        let template: serde_json::Value = serde_json::json!({
            "cve": cve, "package": package.map(|(n, v)| serde_json::json!({"name": n, "fixed_version": v})),
            "families": families, "channels": [], "revoke": false,
            "bake": {"family": "", "base": {"image": ""}, "version": null, "bump": "patch", "patch": {"preset": "security-updates"},
                     "cves": [], "copy_to": [], "share_with": [], "instances": {}, "command_timeout": "10m", "image_timeout": "1h"},
            "validate": {"image_id": "", "checks": {}, "instances": {}, "command_timeout": "10m"},
            "scan": {"image_id": "", "scanner": {"preset": "trivy"}, "fail_on": "high", "scan_tag": "amictl:scan", "instances": {}, "command_timeout": "10m"},
            "deploy": {"group": "", "image": {"image": ""}, "strategy": "rolling", "min_healthy": 90, "max_healthy": null,
                       "warmup_seconds": null, "checkpoints": [], "checkpoint_delay_seconds": null, "skip_matching": true,
                       "bake_time_seconds": null, "alarms": [], "batch_size": {"percent": 25}, "force": false, "timeout": "1h"},
            "patch": {"targets": {"tags": [], "instances": [], "groups": []}, "action": {"preset": "security-updates"}, "scan_only": false,
                      "max_concurrency": {"percent": 10}, "max_errors": {"count": 0}, "min_healthy": 90, "command_timeout": "10m"}
        });
        serde_json::from_value(template).unwrap()
    }

    fn radius(req: &EmergencyRequest, scans: &BTreeMap<String, ScanReport>) -> Result<BlastRadius, Error> {
        let inv = inventory();
        let rules = rules();
        blast_radius(req, &Evidence { inventory: &inv, rules: &rules, scans })
    }

    #[test]
    fn a_scan_that_names_the_cve_makes_its_image_affected_with_everything_that_runs_it() {
        let scans = BTreeMap::from([
            ("ami-web1".to_string(), report(&[("CVE-2026-1", "openssl", "3.0.2")])),
            ("ami-db1".to_string(), report(&[("CVE-2020-9", "zlib", "1.2")])),
        ]);
        let b = radius(&request("CVE-2026-1", None, &[]), &scans).unwrap();
        assert_eq!(b.images.len(), 1);
        assert_eq!(b.images[0].image_id, "ami-web1");
        assert!(b.images[0].why.contains("openssl 3.0.2"), "{}", b.images[0].why);
        let web = &b.families[0];
        assert_eq!(web.family, "web");
        assert_eq!(web.base.as_deref(), Some("ami-web1"), "the newest validated image, whatever its scan says");
        assert_eq!(web.groups, vec!["web"]);
        assert_eq!(web.templates, vec!["lt-1:1"]);
        assert_eq!(web.instances, vec!["i-1", "i-2", "i-3"]);
        assert_eq!(web.standalone, vec!["i-3"], "group members are rolled, not patched in place");
    }

    #[test]
    fn a_package_below_its_fixed_version_is_affected_and_one_at_or_above_is_not() {
        let scans = BTreeMap::from([
            ("ami-web1".to_string(), report(&[("CVE-2020-1", "openssl", "3.0.2")])),
            ("ami-db1".to_string(), report(&[("CVE-2020-2", "openssl", "3.0.13")])),
        ]);
        let b = radius(&request("CVE-2026-1", Some(("openssl", "3.0.13")), &[]), &scans).unwrap();
        let ids: Vec<&str> = b.images.iter().map(|i| i.image_id.as_str()).collect();
        assert_eq!(ids, vec!["ami-web1"]);
        assert!(b.images[0].why.contains("below the fixed 3.0.13"));
    }

    #[test]
    fn without_scan_data_a_named_family_is_affected_whole() {
        let b = radius(&request("CVE-2026-1", None, &["web"]), &BTreeMap::new()).unwrap();
        let ids: Vec<&str> = b.images.iter().map(|i| i.image_id.as_str()).collect();
        assert_eq!(ids, vec!["ami-web1", "ami-web2"]);
        assert_eq!(b.families[0].instances, vec!["i-1", "i-2", "i-3", "i-4"]);
        assert_eq!(b.families[0].standalone, vec!["i-3", "i-4"]);
    }

    #[test]
    fn what_cannot_be_planned_is_refused_with_what_was_looked_for() {
        let none = BTreeMap::new();
        let e = radius(&request("CVE-2026-1", None, &[]), &none).unwrap_err().to_string();
        assert!(e.contains("no stored scan report names CVE-2026-1") && e.contains("--family"), "{e}");
        let e = radius(&request("CVE-2026-1", Some(("libfoo", "1.0")), &[]), &none).unwrap_err().to_string();
        assert!(e.contains("lists package libfoo"), "{e}");
        let e = radius(&request("CVE-2026-1", None, &["nosuch"]), &none).unwrap_err().to_string();
        assert!(e.contains("family nosuch"), "{e}");
    }

    #[test]
    fn a_named_family_nothing_runs_is_refused() {
        let mut inv = inventory();
        inv.images.push(image("ami-batch", 3, &[("Application", "batch")]));
        let rules = rules();
        let scans = BTreeMap::new();
        let req = request("CVE-2026-1", None, &["batch"]);
        let e =
            blast_radius(&req, &Evidence { inventory: &inv, rules: &rules, scans: &scans }).unwrap_err().to_string();
        assert!(e.contains("family batch: no Auto Scaling group or instance runs its images"), "{e}");
    }

    #[test]
    fn a_family_is_patched_only_when_every_group_and_instance_is() {
        let mut f = FamilyOutcome { deployments: vec![("web".into(), "deployed".into())], ..Default::default() };
        assert!(f.patched_everything());
        f.deployments.push(("api".into(), "rolled-back".into()));
        assert!(!f.patched_everything());
    }
}

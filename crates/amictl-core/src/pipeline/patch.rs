//! `amictl patch`: SSM Run Command across a fleet. Targets are resolved (tags, instance ids,
//! Auto Scaling groups), the instances SSM does not manage are set aside and reported, the rest
//! batched so that no group drops below its minimum healthy share ([`crate::patching::plan`]),
//! and each batch sent (SSM fans out within it, with MaxConcurrency and the run's remaining
//! MaxErrors) and followed to the last invocation. Once more instances failed than MaxErrors
//! allows, no further batch is sent. Every batch's command ids are journaled, so a resumed run
//! reads the invocations it started instead of sending them again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Cloud, CommandRequest, CommandTargets, Invocation, Machines};
use crate::engine::{poll, Look, Progress, Run, SLOW_POLL};
use crate::error::Error;
use crate::patching::{self, Batch, InstanceResult, PatchPlan, Summary, Target, Threshold};
use crate::pipeline::command;
use crate::presets::{self, PatchPreset};

/// What to patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// `(tag key, accepted values)`; instances must match every one.
    pub tags: Vec<(String, Vec<String>)>,
    pub instances: Vec<String>,
    pub groups: Vec<String>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.instances.is_empty() && self.groups.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.tags.iter().map(|(k, v)| format!("tag {k}={}", v.join(","))).collect();
        parts.extend(self.instances.iter().map(|i| format!("instance {i}")));
        parts.extend(self.groups.iter().map(|g| format!("group {g}")));
        parts.join(", ")
    }
}

/// What runs on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Preset(PatchPreset),
    Commands(Vec<String>),
    /// `AWS-RunPatchBaseline` with Operation=Scan|Install and RebootOption.
    Baseline {
        install: bool,
        reboot: bool,
    },
}

impl Action {
    /// Whether it takes instances out of service (a scan does not).
    pub fn disruptive(&self, scan_only: bool) -> bool {
        !scan_only && !matches!(self, Action::Baseline { install: false, .. })
    }

    fn document(&self, scan_only: bool, timeout: Duration) -> (String, BTreeMap<String, Vec<String>>) {
        match self {
            Action::Preset(p) if scan_only => command::shell(presets::missing_updates_commands(*p), timeout),
            Action::Preset(p) => command::shell(presets::patch_commands(*p), timeout),
            Action::Commands(c) => command::shell(c.clone(), timeout),
            Action::Baseline { install, reboot } => {
                let operation = if *install && !scan_only { "Install" } else { "Scan" };
                let reboot = if *reboot && *install && !scan_only { "RebootIfNeeded" } else { "NoReboot" };
                let parameters = BTreeMap::from([
                    ("Operation".to_string(), vec![operation.to_string()]),
                    ("RebootOption".to_string(), vec![reboot.to_string()]),
                ]);
                ("AWS-RunPatchBaseline".into(), parameters)
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchRequest {
    pub targets: Targets,
    pub action: Action,
    /// Report what is missing; change nothing.
    pub scan_only: bool,
    pub max_concurrency: Threshold,
    pub max_errors: Threshold,
    pub min_healthy: u8,
    #[serde(with = "crate::time::duration")]
    pub command_timeout: Duration,
}

/// The fleet as resolved now: every target, and each group's healthy count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fleet {
    pub targets: Vec<Target>,
    pub in_service: BTreeMap<String, usize>,
}

/// Reads the targets from the estate: every running instance matching the tags, the given ids
/// (each must exist and run), and each group's members; which group each belongs to; which
/// SSM manages. Anything asked for that is not there is an error naming it.
pub async fn resolve<C: Cloud + Machines>(cloud: &C, targets: &Targets) -> Result<Fleet, Error> {
    if targets.is_empty() {
        return Err(Error::Usage("nothing to patch: give --target KEY=VALUE, --instance or --asg".into()));
    }
    let scope = cloud.scope().to_string();
    let groups = cloud.auto_scaling_groups().await?;
    let mut ids: BTreeSet<String> = BTreeSet::new();
    if !targets.tags.is_empty() {
        let filters: Vec<(String, Vec<String>)> =
            targets.tags.iter().map(|(k, v)| (format!("tag:{k}"), v.clone())).collect();
        ids.extend(cloud.running_instances(&filters).await?.into_iter().map(|m| m.instance_id));
    }
    if !targets.instances.is_empty() {
        let found: BTreeSet<String> = cloud
            .running_instances(&[("instance-id".into(), targets.instances.clone())])
            .await?
            .into_iter()
            .map(|m| m.instance_id)
            .collect();
        if let Some(missing) = targets.instances.iter().find(|i| !found.contains(*i)) {
            return Err(Error::NotFound { what: format!("running instance {missing}"), looked_in: scope });
        }
        ids.extend(found);
    }
    for name in &targets.groups {
        let g = groups
            .iter()
            .find(|g| &g.name == name)
            .ok_or_else(|| Error::NotFound { what: format!("Auto Scaling group {name}"), looked_in: scope.clone() })?;
        ids.extend(g.in_service.iter().cloned());
    }
    if ids.is_empty() {
        return Err(Error::NotFound {
            what: format!("a running instance matching {}", targets.describe()),
            looked_in: scope,
        });
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let managed: BTreeSet<String> = cloud.managed(&ids).await?.into_iter().collect();
    let group_of: BTreeMap<&str, &str> =
        groups.iter().flat_map(|g| g.instance_ids.iter().map(move |i| (i.as_str(), g.name.as_str()))).collect();
    let targets = ids
        .iter()
        .map(|i| Target {
            instance_id: i.clone(),
            group: group_of.get(i.as_str()).map(|g| g.to_string()),
            managed: managed.contains(i),
        })
        .collect();
    let in_service = groups.iter().map(|g| (g.name.clone(), g.in_service.len())).collect();
    Ok(Fleet { targets, in_service })
}

/// The plan for `fleet`.
pub fn plan(req: &PatchRequest, fleet: &Fleet) -> Result<PatchPlan, Error> {
    patching::plan(
        &fleet.targets,
        &fleet.in_service,
        req.min_healthy,
        req.action.disruptive(req.scan_only),
        req.max_errors,
    )
    .map_err(Error::Usage)
}

/// What a patch run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchReport {
    pub run_id: i64,
    pub scan_only: bool,
    pub plan: PatchPlan,
    pub results: Vec<InstanceResult>,
    pub summary: Summary,
    pub command_ids: Vec<String>,
}

/// What a run journals as its plan, and a resumed run continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub request: PatchRequest,
    pub fleet: Fleet,
    pub plan: PatchPlan,
    /// Names this run's commands (with the run id) so a resume finds them: run ids are per
    /// journal, the nonce per process that planned.
    #[serde(default)]
    pub nonce: String,
}

/// Runs a patch on the engine: confirmation, lock, journal (the plan is what a resume
/// continues), the batches, the results; the run ends `completed` when every target
/// succeeded, `completed-with-errors` when some did not, `failed` on an error.
pub async fn run<C: Cloud + Machines>(
    cloud: &C,
    journal: crate::journal::Journal,
    saved: &Saved,
    resume: Option<i64>,
    confirm: impl FnOnce() -> Result<(), Error>,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<PatchReport, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let plan_json = serde_json::to_string(saved).map_err(|e| Error::Other(format!("cannot record the plan: {e}")))?;
    let (run, dead) = crate::engine::Engine::new(journal, "patch")
        .guard(&[], false)?
        .confirm(confirm)?
        .begin(&plan_json, &scopes, resume)?;
    for h in dead {
        tracing::warn!("took over the lock of {}/{} from run {} (its process is gone)", h.account, h.region, h.run_id);
    }
    let r = run.drive(execute(cloud, &run, saved, progress, now)).await;
    let status = match &r {
        Ok(report) if report.summary.all_succeeded() => "completed",
        Ok(_) => "completed-with-errors",
        Err(_) => "failed",
    };
    run.finish(status)?;
    r
}

/// The plan of the newest interrupted patch run (or of run `id`), to resume it.
pub fn interrupted(journal: &crate::journal::Journal, id: Option<i64>) -> Result<(i64, Saved), Error> {
    let (id, plan) = journal.resumable_run("patch", id, &["interrupted"])?;
    let saved = serde_json::from_str(&plan)
        .map_err(|e| Error::Other(format!("run {id}: its recorded plan does not read as a patch plan: {e}")))?;
    Ok((id, saved))
}

/// Sends the batches of `saved.plan` on a begun run, then tags each instance with its result.
pub async fn execute<C: Cloud + Machines>(
    cloud: &C,
    run: &Run,
    saved: &Saved,
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<PatchReport, Error> {
    let group_of: BTreeMap<&str, Option<&String>> =
        saved.fleet.targets.iter().map(|t| (t.instance_id.as_str(), t.group.as_ref())).collect();
    let group_of = |id: &str| group_of.get(id).copied().flatten();
    let mut results: Vec<InstanceResult> = saved
        .plan
        .not_managed
        .iter()
        .map(|i| unrun(i, group_of(i), None, "NotManaged", "not managed by Systems Manager"))
        .collect();
    let mut errors = 0;
    let mut command_ids = Vec::new();
    for batch in &saved.plan.batches {
        if errors > saved.plan.max_errors {
            let why = format!("not sent: {errors} errors crossed --max-errors ({})", saved.plan.max_errors);
            results
                .extend(batch.instance_ids.iter().map(|i| unrun(i, group_of(i), Some(batch.number), "NotSent", &why)));
            continue;
        }
        let budget = saved.plan.max_errors - errors;
        if !batch.groups.is_empty() && !saved.request.scan_only {
            let check = groups_can_spare(cloud, batch, &saved.plan, saved.request.min_healthy, progress);
            run.step(&format!("check-groups-{}", batch.number), progress, check, |s: &String| s.clone()).await?;
        }
        let ids = send_batch(cloud, run, saved, batch, budget, progress).await?;
        let invocations = wait_batch(cloud, run, &saved.request, batch, &ids, progress).await?;
        errors += patching::errors(&invocations);
        command_ids.extend(ids);
        results.extend(batch_results(batch, &invocations, &group_of));
    }
    let rows: Vec<(String, String)> =
        results.iter().map(|r| (r.instance_id.clone(), serde_json::to_string(r).unwrap_or_default())).collect();
    run.journal().lock().unwrap().record_instance_results(run.id(), &rows)?;
    if !saved.request.scan_only {
        record(cloud, run, &results, progress, now).await?;
    }
    let summary = Summary::of(&results);
    Ok(PatchReport {
        run_id: run.id(),
        scan_only: saved.request.scan_only,
        plan: saved.plan.clone(),
        results,
        summary,
        command_ids,
    })
}

fn unrun(id: &str, group: Option<&String>, batch: Option<usize>, status: &str, details: &str) -> InstanceResult {
    InstanceResult {
        instance_id: id.to_string(),
        group: group.cloned(),
        batch,
        status: status.into(),
        status_details: details.into(),
        exit_code: None,
        output: String::new(),
    }
}

/// The comment that names a batch's command: a resumed run finds a command it sent but did not
/// get to journal by it.
fn comment(nonce: &str, run_id: i64, batch: usize, part: usize) -> String {
    format!("amictl patch {nonce} run {run_id} batch {batch} part {part}")
}

/// Waits (up to ten minutes: instances rebooting after the last batch) until every group of the
/// batch can spare the instances the batch takes without going below `min_healthy` percent of
/// what it had in service when planned.
async fn groups_can_spare<C: Cloud>(
    cloud: &C,
    batch: &Batch,
    plan: &PatchPlan,
    min_healthy: u8,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let look = async || {
        let now: BTreeMap<String, usize> =
            cloud.auto_scaling_groups().await?.into_iter().map(|g| (g.name, g.in_service.len())).collect();
        let short: Vec<String> = batch
            .groups
            .iter()
            .filter_map(|(g, n)| {
                let planned = plan.groups.iter().find(|p| &p.name == g).map(|p| p.in_service).unwrap_or(0);
                let floor = (planned * min_healthy as usize).div_ceil(100);
                let serving = now.get(g).copied().unwrap_or(0);
                (serving < floor + n).then(|| format!("{g} has {serving} in service, needs {} to spare {n}", floor + n))
            })
            .collect();
        Ok(if short.is_empty() { Look::Done(()) } else { Look::NotYet(short.join("; "), short.join("; ")) })
    };
    match poll(Duration::from_secs(600), SLOW_POLL, progress, look).await? {
        Ok(()) => Ok(format!("groups can spare batch {}", batch.number)),
        Err(short) => Err(Error::Other(format!(
            "not sending batch {}: it would take a group below --min-healthy {min_healthy}%: {short}",
            batch.number
        ))),
    }
}

/// Sends a batch (50 instance ids a command) once: a batch the journal has as sent, or whose
/// command SSM already has, is not sent again.
async fn send_batch<C: Machines>(
    cloud: &C,
    run: &Run,
    saved: &Saved,
    batch: &Batch,
    budget: usize,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    let step = format!("send-batch-{}", batch.number);
    let (done, started) = journaled(run, &step)?;
    if let Some(ids) = done {
        return Ok(ids);
    }
    let req = &saved.request;
    let send = async {
        let (document, parameters) = req.action.document(req.scan_only, req.command_timeout);
        let mut ids = Vec::new();
        for (part, chunk) in batch.instance_ids.chunks(patching::IDS_PER_COMMAND).enumerate() {
            let comment = comment(&saved.nonce, run.id(), batch.number, part + 1);
            // A step started but never finished may have sent its command: SSM knows.
            if started {
                if let Some(id) = cloud.commands_with_comment(&comment).await?.first() {
                    ids.push(id.clone());
                    continue;
                }
            }
            let request = CommandRequest {
                targets: CommandTargets::Instances(chunk.to_vec()),
                document: document.clone(),
                parameters: parameters.clone(),
                max_concurrency: req.max_concurrency.text(),
                max_errors: budget.to_string(),
                delivery_timeout: Duration::from_secs(600),
                comment,
            };
            ids.push(cloud.send_command(&request).await?);
        }
        Ok(ids)
    };
    run.step(&step, progress, send, |ids| serde_json::to_string(ids).unwrap_or_default()).await
}

/// The command ids a done `send-batch-N` step recorded, and whether the step was started
/// (by an earlier, interrupted attempt) without being done.
fn journaled(run: &Run, step: &str) -> Result<(Option<Vec<String>>, bool), Error> {
    Ok(match run.recorded(step)? {
        crate::engine::Recorded::Never => (None, false),
        crate::engine::Recorded::Started => (None, true),
        crate::engine::Recorded::Done(detail) => (serde_json::from_str(&detail).ok(), false),
    })
}

async fn wait_batch<C: Machines>(
    cloud: &C,
    run: &Run,
    req: &PatchRequest,
    batch: &Batch,
    ids: &[String],
    progress: &dyn Progress,
) -> Result<Vec<Invocation>, Error> {
    let timeout = req.command_timeout + Duration::from_secs(600);
    let wait = command::watch(cloud, ids, Some(batch.instance_ids.len()), timeout, progress);
    let detail = |inv: &Vec<Invocation>| {
        let ok = inv.iter().filter(|i| i.succeeded()).count();
        format!("{ok} of {} succeeded", inv.len())
    };
    run.step(&format!("wait-batch-{}", batch.number), progress, wait, detail).await
}

fn batch_results<'a>(
    batch: &Batch,
    invocations: &[Invocation],
    group_of: &dyn Fn(&str) -> Option<&'a String>,
) -> Vec<InstanceResult> {
    let by_id: BTreeMap<&str, &Invocation> = invocations.iter().map(|i| (i.instance_id.as_str(), i)).collect();
    batch
        .instance_ids
        .iter()
        .map(|id| match by_id.get(id.as_str()) {
            Some(i) => InstanceResult {
                instance_id: id.clone(),
                group: group_of(id).cloned(),
                batch: Some(batch.number),
                status: i.status.clone(),
                status_details: i.status_details.clone(),
                exit_code: i.exit_code,
                output: patching::tail(&i.output, 20),
            },
            None => unrun(id, group_of(id), Some(batch.number), "Failed", "no invocation reported by SSM"),
        })
        .collect()
}

/// Tags every instance that ran the command with its outcome (and, on success, when), so
/// `audit` can report failed and stale patches.
async fn record<C: Cloud>(
    cloud: &C,
    run: &Run,
    results: &[InstanceResult],
    progress: &dyn Progress,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut by_status: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in results.iter().filter(|r| !matches!(r.status.as_str(), "NotManaged" | "NotSent")) {
        by_status.entry(r.status.as_str()).or_default().push(r.instance_id.clone());
    }
    let tag = async {
        for (status, ids) in &by_status {
            let mut tags = vec![
                (patching::STATUS_TAG.to_string(), status.to_string()),
                (patching::RUN_TAG.to_string(), run.id().to_string()),
            ];
            if *status == "Success" {
                tags.push((patching::PATCHED_AT_TAG.to_string(), crate::time::rfc3339(now)));
            }
            for chunk in ids.chunks(1000) {
                cloud.tag(chunk, &tags).await?;
            }
        }
        Ok(())
    };
    let n: usize = by_status.values().map(Vec::len).sum();
    run.step("record-results", progress, tag, |_| format!("tagged {n} instances with their result")).await
}

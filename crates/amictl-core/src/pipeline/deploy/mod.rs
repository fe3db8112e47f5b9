//! `amictl deploy` and `amictl rollback`: an Auto Scaling group moved to a new image without
//! taking its service down.
//!
//! Everything a deployment needs is checked before its first change ([`prepare`]): the image's
//! release gate and family, the group's shape, spare capacity, and for blue-green every target
//! group, listener and rule that reaches the group. A refused deployment changes nothing.
//!
//! The new image goes in a new *numbered* launch template version made from the group's
//! current one (CreateLaunchTemplateVersion with SourceVersion, so every other field is kept);
//! the group is pinned to numbers, never `$Latest` or `$Default`. Once the new version serves
//! (after the health gates), the previous version and image are the group's last-known-good,
//! in the journal and as the `amictl:last-known-good` tag that retirement protects.
//!
//! Strategies, one file each:
//! - [`rolling`]: an instance refresh with the health floor, checkpoints, skip matching and
//!   auto-rollback;
//! - [`batched`]: the group surges by a batch, the new instances serve, then as many old ones go;
//! - [`blue_green`] (and canary): a green group in green target groups beside every blue one,
//!   attached to every listener and rule at weight 0, then traffic moved by weights.
//!
//! Health is read as AWS reports it ([`health`]): only `healthy` passes a gate.

mod batched;
mod blue_green;
mod checks;
mod health;
mod rollback;
mod rolling;
mod status;
mod template;
mod traffic;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{Alarms, Cloud, Groups, LoadBalancing, Machines, Route, TargetGroupInfo};
use crate::engine::{Progress, Recorded, Run};
use crate::error::Error;
use crate::journal::Journal;
use crate::patching::Threshold;

pub use checks::{group_objection, ReleaseRules};
pub(crate) use checks::{prepare, recheck};
use rollback::{blue_of, prepare_rollback, roll_back_blue_green};
pub use status::{status, GroupStatus, LastKnownGood};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Rolling,
    Batched,
    /// A green group beside the blue one, traffic switched at the listeners.
    BlueGreen,
    /// Blue-green with traffic shifted by weights in small steps.
    Canary,
}

impl Strategy {
    /// Whether traffic moves from a blue group to a green one.
    pub fn switches_traffic(self) -> bool {
        matches!(self, Strategy::BlueGreen | Strategy::Canary)
    }
}

/// The image a deployment rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageChoice {
    Image(String),
    /// What `/amictl/<family>/<channel>` points at now.
    Channel {
        family: String,
        channel: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub group: String,
    pub image: ImageChoice,
    pub strategy: Strategy,
    pub min_healthy: u8,
    pub max_healthy: Option<u16>,
    pub warmup_seconds: Option<i32>,
    pub checkpoints: Vec<u8>,
    pub checkpoint_delay_seconds: Option<i32>,
    pub skip_matching: bool,
    pub bake_time_seconds: Option<i32>,
    pub alarms: Vec<String>,
    /// Batched: instances replaced at a time.
    pub batch_size: Threshold,
    /// Deploy an image that has not passed validation and scan (never a revoked one).
    pub force: bool,
    /// Deploy an image of another family than the one the group runs.
    #[serde(default)]
    pub allow_family_change: bool,
    /// Batched: replace in place instead of growing the group by a batch first.
    #[serde(default)]
    pub no_surge: bool,
    #[serde(with = "crate::time::duration")]
    pub timeout: Duration,
    /// How long each health gate waits for its instances to serve.
    #[serde(with = "crate::time::duration", default = "default_health_timeout")]
    pub health_timeout: Duration,
    /// The longest pause between two looks at a refresh or a group (polls start faster).
    #[serde(with = "crate::time::duration", default = "default_poll")]
    pub poll_interval: Duration,
    /// Blue-green and canary: the green share of traffic after each step (ends at 100).
    #[serde(default)]
    pub shift: Vec<u8>,
    /// How long each shift step is watched before the health gate.
    #[serde(with = "crate::time::duration", default)]
    pub shift_pause: Duration,
    /// How long blue stays at full size after the switch (instant rollback), before it is
    /// scaled in.
    #[serde(with = "crate::time::duration", default)]
    pub keep_blue: Duration,
    /// The listener expected to carry the group's traffic (a check: every route is moved).
    #[serde(default)]
    pub listener: Option<String>,
    /// Green's target group (default: one made like blue's), for a group in one target group.
    #[serde(default)]
    pub green_target_group: Option<String>,
}

fn default_poll() -> Duration {
    Duration::from_secs(15)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

/// A blue target group and its green twin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwinPlan {
    pub blue: TargetGroupInfo,
    /// The name green's target group gets (made like blue's).
    pub green_name: String,
    /// `--green-target-group`: an existing target group to use instead of making one.
    pub given: Option<String>,
}

/// What a blue-green deployment found before changing anything; journaled with the plan, so
/// that every undo restores what was there before the first change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficPlan {
    pub green_group: String,
    pub twins: Vec<TwinPlan>,
    /// Every listener default action and rule forwarding to blue's target groups, as they were.
    pub routes: Vec<Route>,
    /// Blue's size before the deployment.
    pub blue_min: i32,
    pub blue_desired: i32,
    /// Scaling processes already suspended on blue before the deployment (left as they are).
    #[serde(default)]
    pub blue_suspended: Vec<String>,
}

/// How a batched deployment replaces instances, decided before anything changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CapacityPlan {
    /// The desired capacity the group has, and has again between batches.
    pub desired: i32,
    /// Instances replaced at a time.
    pub batch: usize,
    /// Grow by a batch first (false: replace in place above the health floor).
    pub surge: bool,
}

/// What a deployment found and decided before changing anything; journaled as the run's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub group: String,
    pub template_id: String,
    /// The version the group named (`$Default`, `7`).
    pub named_version: String,
    pub previous_version: i64,
    pub previous_image: Option<String>,
    pub image_id: String,
    /// Set for a rollback: the existing version to return to (no new version is made).
    pub target_version: Option<i64>,
    /// CreateLaunchTemplateVersion's idempotency token, kept in the plan so a resumed run
    /// sends the same one; green resources are tagged with it.
    #[serde(default)]
    pub token: String,
    pub overridden: Vec<String>,
    /// The image as a person knows it: name, family and version.
    #[serde(default)]
    pub image_label: String,
    /// What the group runs now, likewise.
    #[serde(default)]
    pub previous_label: String,
    #[serde(default)]
    pub capacity: Option<CapacityPlan>,
    #[serde(default)]
    pub traffic: Option<TrafficPlan>,
}

/// What a deployment did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// `deploy` or `rollback`.
    pub command: String,
    pub run_id: i64,
    pub group: String,
    pub strategy: Strategy,
    pub image_id: String,
    pub version: i64,
    pub previous_image: Option<String>,
    pub previous_version: i64,
    /// `deployed`, or `rolled-back` (a health gate failed; the group is on its previous version).
    pub outcome: String,
    /// Blue-green and canary: the new group that took the traffic.
    pub green_group: Option<String>,
    pub reason: Option<String>,
    pub refresh_id: Option<String>,
    pub overridden: Vec<String>,
    /// What else a deployment did or could not do that its user should know (policies whose
    /// alarms still act on blue, ...).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The end of a strategy: `deployed` or `rolled-back`, why, the refresh it followed, notes.
pub(crate) struct Outcome {
    pub deployed: bool,
    pub reason: Option<String>,
    pub refresh_id: Option<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    fn deployed() -> Self {
        Outcome { deployed: true, reason: None, refresh_id: None, notes: vec![] }
    }
    fn rolled_back(why: String) -> Self {
        Outcome { deployed: false, reason: Some(why), refresh_id: None, notes: vec![] }
    }
}

/// What a deploy run journals as its plan (and a resume, a rollback or `status` reads back).
#[derive(Serialize, Deserialize)]
pub struct SavedPlan {
    pub request: DeployRequest,
    pub prepared: Prepared,
}

/// What a `deploy` or `rollback` command asks for.
pub enum Order {
    /// A new deployment.
    Deploy(DeployRequest),
    /// Continue deploy run `id` (None: the newest interrupted or failed one).
    Resume(Option<i64>),
    /// The group back on its last-known-good (or a blue-green deployment undone). `settings`
    /// carries the rollout flags; its strategy counts only when `strategy_given` (else the way
    /// the deployment came).
    Rollback { group: String, settings: DeployRequest, strategy_given: bool },
}

/// The pipeline's one entry point: every check, then `confirm` with the question a person
/// answers (a resumed run was agreed to when it began), then the run on the engine.
pub async fn execute<C: Cloud + Groups + Machines + LoadBalancing + Alarms>(
    cloud: &C,
    journal: Journal,
    order: Order,
    rules: &ReleaseRules<'_>,
    confirm: impl FnOnce(&str) -> Result<(), Error>,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    match order {
        Order::Deploy(req) => {
            let p = prepare(cloud, &req, rules).await?;
            confirm(&question(&req, &p))?;
            run(cloud, journal, "deploy", &req, &p, None, progress, Utc::now()).await
        }
        Order::Resume(id) => {
            let (run_id, req, p) = interrupted(&journal, id)?;
            // Checked as a new run is: the image may have been revoked since.
            recheck(cloud, &req, &p, rules, rolling_back(&journal, run_id)?).await?;
            run(cloud, journal, "deploy", &req, &p, Some(run_id), progress, Utc::now()).await
        }
        Order::Rollback { group, settings, strategy_given } => {
            if let Some((deploy_run, _, saved)) = blue_of(&journal, &group)? {
                let t = blue_green::traffic_of(&saved.prepared)?;
                confirm(&format!("Move the traffic from {} back to {}?", t.green_group, saved.prepared.group))?;
                let req = DeployRequest { group: saved.prepared.group.clone(), ..settings };
                return roll_back_blue_green(cloud, journal, deploy_run, &saved, &req, progress).await;
            }
            let (p, came) = prepare_rollback(cloud, &journal, &group).await?;
            let strategy = if strategy_given { settings.strategy } else { came };
            let req =
                DeployRequest { image: ImageChoice::Image(p.image_id.clone()), force: true, strategy, ..settings };
            confirm(&question(&req, &p))?;
            run(cloud, journal, "rollback", &req, &p, None, progress, Utc::now()).await
        }
    }
}

/// What a person is asked before the group moves: from what (name, family, version) to what.
fn question(req: &DeployRequest, p: &Prepared) -> String {
    let to = match p.target_version {
        Some(v) => format!("version {v} ({})", p.image_label),
        None => format!("{} (a new version from {})", p.image_label, p.previous_version),
    };
    let forced =
        if p.overridden.is_empty() { String::new() } else { format!(" --force: {}.", p.overridden.join("; ")) };
    format!(
        "Move group {} ({:?}) from version {} ({}) to {to}?{forced}",
        p.group, req.strategy, p.previous_version, p.previous_label
    )
}

/// Runs a prepared deployment on the engine (command `deploy` or `rollback`), or continues run
/// `resume` (whose checks [`recheck`] made again).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<C: Cloud + Groups + Machines + LoadBalancing + Alarms>(
    cloud: &C,
    journal: Journal,
    command: &str,
    req: &DeployRequest,
    p: &Prepared,
    resume: Option<i64>,
    progress: &dyn Progress,
    _now: DateTime<Utc>,
) -> Result<Deployment, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let saved = SavedPlan { request: req.clone(), prepared: p.clone() };
    let plan = serde_json::to_string(&saved).map_err(|e| Error::Other(format!("cannot record the plan: {e}")))?;
    let (run, dead) = crate::engine::Engine::new(journal, command)
        .guard(&[], false)?
        .confirm(|| Ok(()))?
        .begin(&plan, &scopes, resume)?;
    for h in dead {
        tracing::warn!("took over the lock of {}/{} from run {} (its process is gone)", h.account, h.region, h.run_id);
    }
    let r = run.drive(steps(cloud, &run, req, p, progress)).await.map(|d| Deployment { command: command.into(), ..d });
    // A rollback says where the group is now, read back, not where the journal meant it to go.
    let r = match r {
        Ok(mut d) if command == "rollback" && d.outcome == "deployed" => {
            rollback::group_version(cloud, &p.group).await.map(|(version, image)| {
                d.version = version;
                d.image_id = image.unwrap_or_default();
                d
            })
        }
        other => other,
    };
    let status = match &r {
        Ok(d) if d.outcome == "deployed" => "completed",
        Ok(_) => "rolled-back",
        Err(_) => "failed",
    };
    run.finish(status)?;
    r
}

async fn steps<C: Cloud + Groups + Machines + LoadBalancing + Alarms>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    template::pin_current(cloud, run, p, progress).await?;
    let version = match p.target_version {
        Some(v) => v,
        None => template::new_version(cloud, run, p, progress).await?,
    };
    let outcome = match req.strategy {
        Strategy::Rolling => rolling::rolling(cloud, run, req, p, version, progress).await?,
        Strategy::Batched => batched::batched(cloud, run, req, p, version, progress).await?,
        Strategy::BlueGreen | Strategy::Canary => blue_green::blue_green(cloud, run, req, p, version, progress).await?,
    };
    // The previous version is the last-known-good once the new one serves (the gates passed),
    // and only then.
    if outcome.deployed && p.target_version.is_none() {
        template::record_last_known_good(cloud, run, p, progress).await?;
    }
    if outcome.deployed && req.strategy.switches_traffic() {
        blue_green::scale_in_blue(cloud, run, p, progress).await?;
    }
    Ok(Deployment {
        command: String::new(),
        run_id: run.id(),
        group: p.group.clone(),
        strategy: req.strategy,
        image_id: p.image_id.clone(),
        version,
        previous_image: p.previous_image.clone(),
        previous_version: p.previous_version,
        green_group: p.traffic.as_ref().filter(|_| outcome.deployed).map(|t| t.green_group.clone()),
        outcome: if outcome.deployed { "deployed" } else { "rolled-back" }.into(),
        reason: outcome.reason,
        refresh_id: outcome.refresh_id,
        overridden: p.overridden.clone(),
        notes: outcome.notes,
    })
}

/// Runs a step once: a step the journal has as done (an earlier attempt of a resumed run) is
/// not run again, and its recorded detail is returned instead.
pub(crate) async fn once(
    run: &Run,
    id: &str,
    progress: &dyn Progress,
    work: impl std::future::Future<Output = Result<String, Error>>,
) -> Result<String, Error> {
    if let Recorded::Done(detail) = run.recorded(id)? {
        return Ok(detail);
    }
    run.step(id, progress, work, |d: &String| d.clone()).await
}

/// Deployment waits start with quick looks (the first answers often come at once) and back
/// off to `--poll-interval`.
fn fast_poll(poll_interval: Duration) -> (Duration, Duration) {
    (Duration::from_millis(200), poll_interval)
}

/// The `--alarm`s in ALARM now, as gate failures (`alarm NAME`).
async fn firing<C: Alarms>(cloud: &C, req: &DeployRequest) -> Result<Vec<String>, Error> {
    if req.alarms.is_empty() {
        return Ok(vec![]);
    }
    Ok(cloud
        .alarm_states(&req.alarms)
        .await?
        .into_iter()
        .filter(|(_, state)| state == "ALARM")
        .map(|(name, _)| format!("alarm {name}"))
        .collect())
}

async fn current_group<C: Groups>(cloud: &C, name: &str) -> Result<crate::aws::GroupDetail, Error> {
    cloud.group(name).await?.ok_or_else(|| Error::Other(format!("group {name} vanished during the deployment")))
}

/// The version a `create-version` step's detail names (`version 7 of lt-… runs ami-…`).
fn created_version(detail: &str) -> Option<i64> {
    detail.strip_prefix("version ")?.split_whitespace().next()?.parse().ok()
}

/// The version deploy run `id` made, from its journaled `create-version` step.
fn version_made(journal: &Journal, id: i64) -> Result<Option<i64>, Error> {
    Ok(journal.steps(id)?.get("create-version").and_then(|s| s.detail.as_deref()).and_then(created_version))
}

/// The group's last-known-good, from the newest deployment whose version the group is on now:
/// `(version, image, run)`.
pub fn last_known_good(
    journal: &Journal,
    group: &str,
    current_version: Option<i64>,
) -> Result<Option<(i64, Option<String>, i64)>, Error> {
    for (id, status, plan) in journal.runs_of("deploy")? {
        // A deployment that rolled itself back is not what the group runs; an interrupted one
        // that moved the group is.
        if status == "rolled-back" {
            continue;
        }
        let Ok(SavedPlan { prepared: p, .. }) = serde_json::from_str(&plan) else { continue };
        if p.group != group {
            continue;
        }
        if current_version.is_none() || version_made(journal, id)? == current_version {
            return Ok(Some((p.previous_version, p.previous_image, id)));
        }
    }
    Ok(None)
}

/// The request and plan of an interrupted (or failed) deployment, to resume it: run `id`, or
/// the newest.
pub(crate) fn interrupted(journal: &Journal, id: Option<i64>) -> Result<(i64, DeployRequest, Prepared), Error> {
    let runs = journal.runs_of("deploy")?;
    let found = runs.into_iter().find(|(rid, _, _)| id.is_none_or(|i| i == *rid));
    let (rid, _, plan) = found.ok_or_else(|| Error::NotFound {
        what: id.map(|i| format!("deploy run {i}")).unwrap_or_else(|| "a deploy run".into()),
        looked_in: journal.path().display().to_string(),
    })?;
    let status = journal.run_plan(rid)?.map(|(s, _)| s).unwrap_or_default();
    if !matches!(status.as_str(), "interrupted" | "failed") {
        return Err(Error::Usage(format!(
            "deploy run {rid} is {status}: only an interrupted or failed deployment resumes"
        )));
    }
    let saved: SavedPlan =
        serde_json::from_str(&plan).map_err(|e| Error::Other(format!("run {rid}: unreadable plan: {e}")))?;
    Ok((rid, saved.request, saved.prepared))
}

/// Whether deploy run `id` had begun going back to the previous version (a batch or a gate
/// failed): a resume only finishes that.
pub(crate) fn rolling_back(journal: &Journal, id: i64) -> Result<bool, Error> {
    let steps = journal.steps(id)?;
    let back = ["rollback-pin", "rollback-refresh", "attach-blue", "restore-routes", "tear-down-green"];
    Ok(steps.keys().any(|k| back.contains(&k.as_str()) || k.starts_with("discard-"))
        || steps.values().any(|s| s.detail.as_deref().is_some_and(|d| d.starts_with("failed: "))))
}

/// The green group's name: blue's with its version suffix replaced (`web-v3` → `web-v4`).
pub fn green_name(blue: &str, version: i64) -> String {
    let base = match blue.rsplit_once("-v") {
        Some((b, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => b,
        _ => blue,
    };
    format!("{base}-v{version}")
}

/// The traffic steps: the green share after each, rising, ending at 100.
pub fn shift_steps(req: &DeployRequest) -> Vec<u8> {
    let mut steps = if req.shift.is_empty() {
        match req.strategy {
            Strategy::Canary => vec![5, 25, 100],
            _ => vec![100],
        }
    } else {
        req.shift.clone()
    };
    steps.retain(|s| *s > 0 && *s <= 100);
    steps.sort_unstable();
    steps.dedup();
    if steps.last() != Some(&100) {
        steps.push(100);
    }
    steps
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn request(min_healthy: u8, size: Threshold) -> DeployRequest {
        DeployRequest {
            group: "web".into(),
            image: ImageChoice::Image("ami-1".into()),
            strategy: Strategy::Batched,
            min_healthy,
            max_healthy: None,
            warmup_seconds: None,
            checkpoints: vec![],
            checkpoint_delay_seconds: None,
            skip_matching: false,
            bake_time_seconds: None,
            alarms: vec![],
            batch_size: size,
            force: false,
            allow_family_change: false,
            no_surge: false,
            timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            shift: vec![],
            shift_pause: Duration::ZERO,
            keep_blue: Duration::ZERO,
            listener: None,
            green_target_group: None,
        }
    }

    #[test]
    fn green_is_named_after_its_version_and_steps_end_at_100() {
        assert_eq!(green_name("web", 4), "web-v4");
        assert_eq!(green_name("web-v3", 4), "web-v4");
        assert_eq!(green_name("web-vx", 4), "web-vx-v4");
        let mut r = request(90, Threshold::Count(1));
        r.strategy = Strategy::Canary;
        assert_eq!(shift_steps(&r), vec![5, 25, 100]);
        r.strategy = Strategy::BlueGreen;
        assert_eq!(shift_steps(&r), vec![100]);
        r.shift = vec![50, 10];
        assert_eq!(shift_steps(&r), vec![10, 50, 100]);
    }
}

//! `amictl deploy` and `amictl rollback`: an Auto Scaling group moved to a new image.
//!
//! The new image goes in a new *numbered* launch template version made from the group's
//! current one (CreateLaunchTemplateVersion with SourceVersion, so every other field is kept);
//! the group is pinned to numbers, never `$Latest` or `$Default` (a group on `$Default` is first
//! pinned to the number it means, which is also what makes instance refresh auto-rollback work);
//! the previous version and image are recorded as the group's last-known-good, in the journal
//! and as the `amictl:last-known-good` tag that retirement protects.
//!
//! Strategies: `rolling` (an instance refresh with the health floor, checkpoints, skip
//! matching and auto-rollback) and `batched` (instances replaced a batch at a time, each batch's
//! replacements healthy before the next, the old version restored if they are not).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::{
    Alarms, Cloud, GroupDetail, Groups, ListenerInfo, LoadBalancing, Machines, RefreshPreferences, RefreshState,
};
use crate::catalog;
use crate::engine::{poll, Look, Progress, Recorded, Run};
use crate::error::Error;
use crate::inventory::Image;
use crate::journal::Journal;
use crate::patching::Threshold;
use crate::policy::LAST_KNOWN_GOOD_TAG;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Rolling,
    Batched,
    /// A green group beside the blue one, traffic switched at the listener.
    BlueGreen,
    /// Blue-green with traffic shifted by weights in small steps.
    Canary,
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
    /// Batched: instances replaced at a time (bounded by the health floor).
    pub batch_size: Threshold,
    /// Deploy an image that has not passed validation and scan (never a revoked one).
    pub force: bool,
    #[serde(with = "crate::time::duration")]
    pub timeout: Duration,
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
    /// The listener to switch (default: every listener forwarding to blue's target group).
    #[serde(default)]
    pub listener: Option<String>,
    /// Green's target group (default: one made like blue's).
    #[serde(default)]
    pub green_target_group: Option<String>,
}

fn default_poll() -> Duration {
    Duration::from_secs(15)
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
    /// sends the same one.
    #[serde(default)]
    pub token: String,
    pub overridden: Vec<String>,
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
}

/// Refuses a group a deployment cannot handle, with what to do about it.
pub fn group_objection(g: &GroupDetail) -> Option<String> {
    if let Some(lc) = &g.launch_configuration {
        return Some(format!(
            "group {} uses launch configuration {lc}: amictl deploys through launch templates. Migrate it: create a \
             launch template from the configuration (EC2 console: Launch templates > Create, or `aws ec2 \
             create-launch-template`), then `aws autoscaling update-auto-scaling-group --auto-scaling-group-name {} \
             --launch-template LaunchTemplateId=lt-…,Version=1`",
            g.name, g.name
        ));
    }
    if g.mixed_instances {
        return Some(format!(
            "group {} launches through a mixed instances policy, which amictl does not deploy to yet",
            g.name
        ));
    }
    if g.template_id.is_none() {
        return Some(format!("group {} names no launch template", g.name));
    }
    None
}

/// Resolves the image and checks image and group; nothing changes.
pub async fn prepare<C: Cloud + Groups + Alarms>(
    cloud: &C,
    req: &DeployRequest,
    scan: (&str, &[String]),
) -> Result<Prepared, Error> {
    if req.min_healthy > 100 {
        return Err(Error::Usage(format!("--min-healthy {} is over 100", req.min_healthy)));
    }
    if !req.checkpoints.is_empty() && req.checkpoint_delay_seconds.is_none() {
        return Err(Error::Usage(
            "--checkpoints needs --checkpoint-delay (AWS waits an hour at each checkpoint otherwise)".into(),
        ));
    }
    if !req.checkpoints.windows(2).all(|w| w[0] < w[1]) {
        return Err(Error::Usage("--checkpoints must rise (e.g. 20,50)".into()));
    }
    let scope = cloud.scope().to_string();
    if !req.alarms.is_empty() {
        let known: Vec<String> = cloud.alarm_states(&req.alarms).await?.into_iter().map(|(n, _)| n).collect();
        if let Some(missing) = req.alarms.iter().find(|a| !known.contains(a)) {
            return Err(Error::NotFound { what: format!("CloudWatch alarm {missing} (--alarm)"), looked_in: scope });
        }
    }
    let image_id = match &req.image {
        ImageChoice::Image(id) => id.clone(),
        ImageChoice::Channel { family, channel } => {
            crate::pipeline::catalog::existing_channel(cloud, family, channel).await?.image_id
        }
    };
    let image = cloud.image_now(&image_id).await?.ok_or_else(|| Error::NotFound {
        what: format!("AMI {image_id} (an image of another region must be copied here first: `amictl bake --copy-to`)"),
        looked_in: scope.clone(),
    })?;
    let overridden = image_gate(&image, scan, req.force)?;
    let g = cloud.group(&req.group).await?.ok_or_else(|| Error::NotFound {
        what: format!("Auto Scaling group {}", req.group),
        looked_in: scope.clone(),
    })?;
    if let Some(why) = group_objection(&g) {
        return Err(Error::Usage(why));
    }
    let template_id = g.template_id.clone().unwrap_or_default();
    let named = g.template_version.clone().unwrap_or_else(|| "$Default".into());
    let (previous_version, previous_image) = cloud.template_version(&template_id, &named).await?.ok_or_else(|| {
        Error::NotFound { what: format!("version {named} of launch template {template_id}"), looked_in: scope }
    })?;
    if req.strategy == Strategy::Rolling && previous_image.as_deref().is_some_and(|i| i.starts_with("resolve:ssm:")) {
        return Err(Error::Usage(format!(
            "group {} takes its image from an SSM parameter ({}): an instance refresh cannot roll back from that, and \
             a version naming an AMI would stop the group following the parameter; point the parameter at the new \
             image (`amictl channel promote`) and refresh, or use --strategy batched",
            g.name,
            previous_image.unwrap_or_default()
        )));
    }
    Ok(Prepared {
        group: g.name,
        template_id,
        named_version: named,
        previous_version,
        previous_image,
        image_id: image.id,
        target_version: None,
        token: format!("amictl-deploy-{}-{}", crate::pipeline::ephemeral::process_nonce(), req.group)
            .chars()
            .take(64)
            .collect(),
        overridden,
    })
}

/// Validation and scan must have passed (unless `force`); a revoked or unavailable image never
/// deploys.
fn image_gate(image: &Image, scan: (&str, &[String]), force: bool) -> Result<Vec<String>, Error> {
    let objections = catalog::release_objections(image, scan.0, scan.1);
    let hard: Vec<&String> =
        objections.iter().filter(|o| o.contains("is revoked") || o.contains("not available")).collect();
    if !hard.is_empty() {
        return Err(Error::Usage(format!(
            "not deploying: {}",
            hard.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        )));
    }
    if !objections.is_empty() && !force {
        return Err(Error::Usage(format!("not deploying: {} (--force overrides)", objections.join("; "))));
    }
    Ok(objections)
}

/// The refresh preferences a request asks for.
fn preferences(req: &DeployRequest) -> RefreshPreferences {
    // AWS ends a refresh at its last checkpoint: 100 makes it replace every instance.
    let mut checkpoints = req.checkpoints.clone();
    if checkpoints.last().is_some_and(|c| *c < 100) {
        checkpoints.push(100);
    }
    RefreshPreferences {
        min_healthy: req.min_healthy,
        max_healthy: req.max_healthy,
        warmup_seconds: req.warmup_seconds,
        checkpoints,
        checkpoint_delay_seconds: req.checkpoint_delay_seconds,
        skip_matching: req.skip_matching,
        auto_rollback: true,
        alarms: req.alarms.clone(),
        bake_time_seconds: req.bake_time_seconds,
    }
}

/// Runs a prepared deployment on the engine (command `deploy` or `rollback`), or continues run
/// `resume`.
#[allow(clippy::too_many_arguments)]
pub async fn run<C: Cloud + Groups + Machines + LoadBalancing + Alarms>(
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
    // $Default / $Latest: pinned to the number it means now, before a new version exists (on
    // $Latest the group would launch it at once), and once only (a resumed run must not pin the
    // group back while its refresh moves it on).
    let pinned_before = matches!(run.recorded("pin-current")?, Recorded::Done(_));
    if !pinned_before && !p.named_version.chars().all(|c| c.is_ascii_digit()) {
        let pin = async { Ok(cloud.pin_group(&p.group, &p.template_id, p.previous_version).await?) };
        run.step("pin-current", progress, pin, |_| format!("{} pinned to version {}", p.group, p.previous_version))
            .await?;
    }
    let version = match p.target_version {
        Some(v) => v,
        None => new_version(cloud, run, p, progress).await?,
    };
    if p.target_version.is_none() {
        record_last_known_good(cloud, run, p, progress).await?;
    }
    let (outcome, reason, refresh_id) = match req.strategy {
        Strategy::Rolling => rolling(cloud, run, req, p, version, progress).await?,
        Strategy::Batched => batched(cloud, run, req, p, version, progress).await?,
        Strategy::BlueGreen | Strategy::Canary => blue_green(cloud, run, req, p, version, progress).await?,
    };
    Ok(Deployment {
        command: String::new(),
        run_id: run.id(),
        group: p.group.clone(),
        strategy: req.strategy,
        image_id: p.image_id.clone(),
        version,
        previous_image: p.previous_image.clone(),
        previous_version: p.previous_version,
        green_group: (matches!(req.strategy, Strategy::BlueGreen | Strategy::Canary) && outcome == "deployed")
            .then(|| green_name(&p.group, version)),
        outcome,
        reason,
        refresh_id,
        overridden: p.overridden.clone(),
    })
}

/// The new version: made once (a resumed run reads the number it journaled, or finds the
/// version an interrupted attempt made before it could journal it).
async fn new_version<C: Cloud + Groups>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<i64, Error> {
    match run.recorded("create-version")? {
        Recorded::Done(detail) => {
            if let Some(v) = created_version(&detail) {
                return Ok(v);
            }
        }
        Recorded::Started => {
            if let Some((v, Some(image))) = cloud.template_version(&p.template_id, "$Latest").await? {
                if image == p.image_id && v > p.previous_version {
                    return Ok(v);
                }
            }
        }
        Recorded::Never => {}
    }
    let token = if p.token.is_empty() { format!("amictl-deploy-{}-{}", run.id(), p.group) } else { p.token.clone() };
    let description = format!("{} by amictl (run {}), from version {}", p.image_id, run.id(), p.previous_version);
    let create = async {
        Ok(cloud.create_template_version(&p.template_id, p.previous_version, &p.image_id, &description, &token).await?)
    };
    run.step("create-version", progress, create, |v| format!("version {v} of {} runs {}", p.template_id, p.image_id))
        .await
}

/// Tags the previous image as the group's rollback target, which retirement keeps.
async fn record_last_known_good<C: Cloud>(
    cloud: &C,
    run: &Run,
    p: &Prepared,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let Some(image) = p.previous_image.clone().filter(|i| i.starts_with("ami-")) else { return Ok(()) };
    let tag =
        async { Ok(cloud.tag(std::slice::from_ref(&image), &[(LAST_KNOWN_GOOD_TAG.into(), p.group.clone())]).await?) };
    run.step("record-last-known-good", progress, tag, |_| {
        format!("{image} (version {}) is {}'s last-known-good", p.previous_version, p.group)
    })
    .await
}

type Outcome = (String, Option<String>, Option<String>);

/// An instance refresh to `version`, followed to its end.
async fn rolling<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    if p.target_version.is_some() {
        if let Some(active) = cloud.refresh_state(&p.group, None).await?.filter(|r| !r.is_done()) {
            return roll_back_refresh(cloud, run, req, p, version, active, progress).await;
        }
    }
    let id = start_refresh_once(cloud, run, req, p, version, progress).await?;
    let wait = follow_refresh(cloud, &p.group, &id, req.timeout, req.poll_interval, progress);
    let end = run
        .step("wait-refresh", progress, wait, |s: &RefreshState| format!("{} ({}%)", s.status, s.percentage))
        .await?;
    if end.status == "Successful" {
        let pin = async { Ok(cloud.pin_group(&p.group, &p.template_id, version).await?) };
        run.step("pin-new", progress, pin, |_| format!("{} pinned to version {version}", p.group)).await?;
        return Ok(("deployed".into(), None, Some(id)));
    }
    let why = format!("instance refresh {}: {}", end.status, end.reason.clone().unwrap_or_default());
    if end.status == "RollbackSuccessful" {
        return Ok(("rolled-back".into(), Some(why), Some(id)));
    }
    // Failed, cancelled, or a rollback that failed: the group's instances are mixed.
    Err(Error::Other(format!("{why}; {} may run both images: `amictl status --asg {}`", p.group, p.group)))
}

/// Rolls back a refresh that is still running (AWS's own RollbackInstanceRefresh), then pins
/// the group to `version`.
async fn roll_back_refresh<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    active: RefreshState,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    // One already rolling back is followed, not rolled back again.
    if active.status != "RollbackInProgress" {
        let rb = async { Ok(cloud.rollback_refresh(&p.group).await?) };
        run.step("rollback-refresh", progress, rb, |_| format!("rolling back instance refresh {}", active.id)).await?;
    }
    let wait = follow_refresh(cloud, &p.group, &active.id, req.timeout, req.poll_interval, progress);
    let end = run
        .step("wait-refresh", progress, wait, |s: &RefreshState| format!("{} ({}%)", s.status, s.percentage))
        .await?;
    if end.status != "RollbackSuccessful" {
        return Err(Error::Other(format!(
            "rolling back instance refresh {} of {} ended {}: {}",
            active.id,
            p.group,
            end.status,
            end.reason.unwrap_or_default()
        )));
    }
    // AWS restored the group to what it named before that refresh; say what that is.
    let g = current_group(cloud, &p.group).await?;
    let now = g.template_version.unwrap_or_default();
    let _ = version;
    run.step("group-restored", progress, async { Ok(now.clone()) }, |v| format!("{} names version {v}", p.group))
        .await?;
    Ok(("deployed".into(), None, Some(active.id)))
}

/// Starts the refresh once: a resumed run follows the one it started (journaled, or found
/// active on the group after an attempt that could not journal it).
async fn start_refresh_once<C: Groups>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<String, Error> {
    match run.recorded("start-refresh")? {
        Recorded::Done(detail) => {
            if let Some(id) = detail.strip_prefix("instance refresh ") {
                return Ok(id.to_string());
            }
        }
        Recorded::Started => {
            // Only a refresh to this run's version is this run's.
            if let Some(r) = cloud
                .refresh_state(&p.group, None)
                .await?
                .filter(|r| !r.is_done() && r.desired_version == Some(version))
            {
                return Ok(r.id);
            }
        }
        Recorded::Never => {}
    }
    let prefs = preferences(req);
    let start = async { Ok(cloud.start_refresh(&p.group, &p.template_id, version, &prefs).await?) };
    run.step("start-refresh", progress, start, |id| format!("instance refresh {id}")).await
}

/// Polls the refresh until it ends (or `timeout`), showing its progress.
async fn follow_refresh<C: Groups>(
    cloud: &C,
    group: &str,
    id: &str,
    timeout: Duration,
    poll_interval: Duration,
    progress: &dyn Progress,
) -> Result<RefreshState, Error> {
    let look = async || {
        let s = cloud
            .refresh_state(group, Some(id))
            .await?
            .ok_or_else(|| Error::Other(format!("instance refresh {id} of {group} vanished")))?;
        if s.is_done() {
            return Ok(Look::Done(s));
        }
        let reason = s.reason.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
        let note = format!("{}: {}% replaced, {} to go{reason}", s.status, s.percentage, s.to_update);
        Ok(Look::NotYet(s.status, note))
    };
    poll(timeout, fast_poll(poll_interval), progress, look).await?.map_err(|status| {
        Error::Other(format!(
            "instance refresh {id} of {group} still {status} after {}; it goes on in AWS: `amictl status --asg {group}`",
            crate::time::format_duration(timeout)
        ))
    })
}

/// Deployment waits start with quick looks (the first answers often come at once) and back
/// off to `--poll-interval`.
fn fast_poll(poll_interval: Duration) -> (Duration, Duration) {
    (Duration::from_millis(200), poll_interval)
}

/// Pins the group to `version` and replaces its other instances a batch at a time; a batch
/// whose replacements are not all healthy stops it, and the previous version comes back the
/// same way. A resumed run that had begun rolling back goes on rolling back.
async fn batched<C: Groups + Machines + Alarms + LoadBalancing>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let why = match run.recorded("rollback-pin")? {
        Recorded::Done(_) => "an earlier attempt of this run was rolling back".to_string(),
        _ => {
            let pin = async { Ok(cloud.pin_group(&p.group, &p.template_id, version).await?) };
            run.step("pin-new", progress, pin, |_| format!("{} pinned to version {version}", p.group)).await?;
            match replace_all(cloud, run, req, p, &p.image_id, "batch", progress).await? {
                None => return Ok(("deployed".into(), None, None)),
                Some(why) => {
                    let back = async { Ok(cloud.pin_group(&p.group, &p.template_id, p.previous_version).await?) };
                    run.step("rollback-pin", progress, back, |_| {
                        format!("{} back on version {}", p.group, p.previous_version)
                    })
                    .await?;
                    why
                }
            }
        }
    };
    if let Some(previous) = &p.previous_image {
        if let Some(again) = replace_all(cloud, run, req, p, previous, "rollback-batch", progress).await? {
            return Err(Error::Other(format!("{why}; and rolling back failed too: {again}")));
        }
    }
    Ok(("rolled-back".into(), Some(why), None))
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
    steps.dedup();
    if steps.last() != Some(&100) {
        steps.push(100);
    }
    steps
}

/// What a blue-green deployment found about blue before changing anything.
struct Blue {
    group: GroupDetail,
    target_group: crate::aws::TargetGroupInfo,
    listeners: Vec<ListenerInfo>,
}

async fn find_blue<C: Groups + LoadBalancing>(cloud: &C, req: &DeployRequest, p: &Prepared) -> Result<Blue, Error> {
    let group = current_group(cloud, &p.group).await?;
    let arn = group.target_group_arns.first().cloned().ok_or_else(|| {
        Error::Usage(format!("group {} is in no target group: blue-green and canary switch traffic at a load balancer; use --strategy rolling", p.group))
    })?;
    let target_group = cloud
        .target_group(&arn)
        .await?
        .ok_or_else(|| Error::Other(format!("target group {arn} of {} vanished", p.group)))?;
    let mut listeners = cloud.listeners_forwarding_to(&target_group).await?;
    if let Some(l) = &req.listener {
        listeners.retain(|x| &x.arn == l);
    }
    if listeners.is_empty() {
        return Err(Error::Usage(format!(
            "no listener forwards to {}'s target group {}{}",
            p.group,
            target_group.name,
            req.listener.as_ref().map(|l| format!(" (asked for {l})")).unwrap_or_default()
        )));
    }
    Ok(Blue { group, target_group, listeners })
}

/// Blue-green (and canary): a green group launching `version`, in its own target group;
/// traffic moved to it at the listeners, in steps, once every green target is healthy and
/// after each step; blue kept at full size for `--keep-blue`, then scaled in. Green that never
/// becomes healthy is torn down; blue is not touched before green is healthy.
async fn blue_green<C: Groups + LoadBalancing + Alarms>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    version: i64,
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let blue = find_blue(cloud, req, p).await?;
    let green = green_name(&p.group, version);
    let made_tg = req.green_target_group.is_none();
    let tg_name: String = format!("{}-v{version}", blue.target_group.name.chars().take(24).collect::<String>());
    // A resumed run uses the target group and the group it made (journaled, or found by name).
    let green_tg = match run.recorded("green-target-group")? {
        Recorded::Done(arn) if !arn.is_empty() => arn,
        _ => {
            let make_tg = async {
                Ok(match &req.green_target_group {
                    Some(arn) => arn.clone(),
                    None => cloud.create_target_group_like(&blue.target_group, &tg_name).await?,
                })
            };
            run.step("green-target-group", progress, make_tg, |a: &String| a.clone()).await?
        }
    };
    let exists = matches!(run.recorded("create-green")?, Recorded::Done(_)) || cloud.group(&green).await?.is_some();
    if !exists {
        let targets = std::slice::from_ref(&green_tg);
        let create =
            async { Ok(cloud.create_group_like(&blue.group, &green, &p.template_id, version, targets).await?) };
        run.step("create-green", progress, create, |_| format!("{green} launches version {version}")).await?;
    }
    let teardown = async |why: String| -> Result<Outcome, Error> {
        let down = async {
            cloud.delete_group(&green).await?;
            if made_tg {
                cloud.delete_target_group(&green_tg).await?;
            }
            Ok(())
        };
        run.step("tear-down-green", progress, down, |_| format!("{green} deleted")).await?;
        Ok(("rolled-back".to_string(), Some(why), None))
    };
    let desired = blue.group.desired_capacity.max(0) as usize;
    let healthy = green_healthy(cloud, &green, &green_tg, desired, req, progress);
    let sick = run.step("wait-green-healthy", progress, healthy, unhealthy_or("every green target healthy")).await?;
    if !sick.is_empty() {
        return teardown(format!("green never became healthy: {}", sick.join(", "))).await;
    }
    for step in shift_steps(req) {
        let weights = |l: &ListenerInfo| -> Vec<(String, i32)> {
            let _ = l;
            if step >= 100 {
                vec![(green_tg.clone(), 1)]
            } else {
                vec![(blue.target_group.arn.clone(), 100 - step as i32), (green_tg.clone(), step as i32)]
            }
        };
        let shift = async {
            for l in &blue.listeners {
                cloud.forward(&l.arn, &weights(l)).await?;
            }
            Ok(())
        };
        run.step(&format!("shift-{step}"), progress, shift, |_| format!("{step}% of traffic to {green}")).await?;
        if !req.shift_pause.is_zero() {
            progress.note(&format!("{step}% on {green}; watching {}", crate::time::format_duration(req.shift_pause)));
            tokio::time::sleep(req.shift_pause).await;
        }
        let gate = async {
            let mut failing = unhealthy_targets(cloud, &green_tg).await?;
            failing.extend(firing(cloud, req).await?);
            Ok(failing)
        };
        let sick = run.step(&format!("gate-{step}"), progress, gate, unhealthy_or("green healthy")).await?;
        if !sick.is_empty() {
            let back = async {
                for l in &blue.listeners {
                    cloud.forward(&l.arn, &l.forwards).await?;
                }
                Ok(())
            };
            run.step("shift-back", progress, back, |_| "traffic back on blue".to_string()).await?;
            return teardown(format!("green failed its health gate at {step}%: {}", sick.join(", "))).await;
        }
    }
    if !req.keep_blue.is_zero() {
        progress.note(&format!("keeping {} at full size for {}", p.group, crate::time::format_duration(req.keep_blue)));
        tokio::time::sleep(req.keep_blue).await;
    }
    let scale_in = async { Ok(cloud.scale(&p.group, 0, 0).await?) };
    run.step("scale-in-blue", progress, scale_in, |_| format!("{} scaled in", p.group)).await?;
    Ok(("deployed".into(), None, None))
}

/// Waits until the green group has `desired` instances in service and every one of them is a
/// healthy target; returns the unhealthy ones (empty: healthy) once all are in service.
async fn green_healthy<C: Groups + LoadBalancing>(
    cloud: &C,
    green: &str,
    tg: &str,
    desired: usize,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    let look = async || {
        let g = current_group(cloud, green).await?;
        let in_service = g.instances.iter().filter(|i| i.lifecycle_state == "InService").count();
        let health = cloud.target_health(tg).await?;
        let healthy = health.iter().filter(|(_, s)| s == "healthy").count();
        let sick: Vec<String> = health.iter().filter(|(_, s)| s == "unhealthy").map(|(i, _)| i.clone()).collect();
        if in_service >= desired && (healthy >= desired || !sick.is_empty()) {
            return Ok(Look::Done(sick));
        }
        Ok(Look::NotYet(healthy, format!("{green}: {in_service} of {desired} in service, {healthy} healthy targets")))
    };
    Ok(poll(req.timeout, fast_poll(req.poll_interval), progress, look).await?.unwrap_or_else(|healthy| {
        vec![format!("{healthy} of {desired} healthy after {}", crate::time::format_duration(req.timeout))]
    }))
}

async fn unhealthy_targets<C: LoadBalancing>(cloud: &C, tg: &str) -> Result<Vec<String>, Error> {
    Ok(cloud.target_health(tg).await?.into_iter().filter(|(_, s)| s == "unhealthy").map(|(i, _)| i).collect())
}

/// A gate step's journal detail: `ok`, or what was unhealthy.
fn unhealthy_or(ok: &'static str) -> impl Fn(&Vec<String>) -> String {
    move |s| if s.is_empty() { ok.into() } else { format!("unhealthy: {}", s.join(", ")) }
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

/// Replaces the group's in-service instances that run another image than `image`, planning
/// each batch from the group as it is then: unhealthy ones first (replacing them costs
/// nothing), else as many as `--batch-size` and the floor (`--min-healthy` of the desired
/// capacity) allow. `Some(why)` when a batch's replacements did not all become healthy.
async fn replace_all<C: Groups + Machines + Alarms + LoadBalancing>(
    cloud: &C,
    run: &Run,
    req: &DeployRequest,
    p: &Prepared,
    image: &str,
    label: &str,
    progress: &dyn Progress,
) -> Result<Option<String>, Error> {
    let mut n = 0;
    loop {
        let g = current_group(cloud, &p.group).await?;
        let desired = g.desired_capacity.max(0) as usize;
        let old = instances_not_on(cloud, &g, image).await?;
        if old.is_empty() {
            return Ok(None);
        }
        // Each instance is replaced once; more rounds than that mean replacements keep the old image.
        if n > desired + 1 {
            return Ok(Some(format!("replacements of {} keep launching another image than {image}", p.group)));
        }
        let batch = next_batch(&g, &old, req).map_err(Error::Usage)?;
        n += 1;
        let replace = async {
            for id in &batch {
                cloud.replace_instance(id).await?;
            }
            Ok(())
        };
        run.step(&format!("{label}-{n}"), progress, replace, |_| format!("replaced {}", batch.join(", "))).await?;
        let wait = wait_replacements(cloud, &p.group, desired, req, progress);
        let sick =
            run.step(&format!("wait-{label}-{n}"), progress, wait, unhealthy_or("all in service and healthy")).await?;
        if !sick.is_empty() {
            return Ok(Some(format!("batch {n} failed its health gate: {} unhealthy", sick.join(", "))));
        }
        let alarms = firing(cloud, req).await?;
        if !alarms.is_empty() {
            return Ok(Some(format!("batch {n} failed its alarm gate: {} firing", alarms.join(", "))));
        }
    }
}

/// The next instances to replace (pure): `old` are the in-service instances on another image.
fn next_batch(g: &GroupDetail, old: &[String], req: &DeployRequest) -> Result<Vec<String>, String> {
    let unhealthy = |id: &String| g.instances.iter().any(|i| &i.instance_id == id && !i.serving());
    let sick: Vec<String> = old.iter().filter(|id| unhealthy(id)).cloned().collect();
    if !sick.is_empty() {
        return Ok(sick);
    }
    let desired = g.desired_capacity.max(0) as usize;
    let serving = g.instances.iter().filter(|i| i.serving()).count();
    let floor = (desired * req.min_healthy as usize).div_ceil(100);
    let spare = serving.saturating_sub(floor);
    if spare == 0 {
        return Err(format!(
            "group {} has {serving} of {desired} in service: replacing one more would go below --min-healthy {}%",
            g.name, req.min_healthy
        ));
    }
    let size = req.batch_size.of(desired).max(1).min(spare);
    Ok(old.iter().take(size).cloned().collect())
}

async fn current_group<C: Groups>(cloud: &C, name: &str) -> Result<GroupDetail, Error> {
    cloud.group(name).await?.ok_or_else(|| Error::Other(format!("group {name} vanished during the deployment")))
}

/// The group's in-service instances that run another image than `image` (pending and
/// terminating ones are on their way in or out).
async fn instances_not_on<C: Machines>(cloud: &C, g: &GroupDetail, image: &str) -> Result<Vec<String>, Error> {
    let ids: Vec<String> =
        g.instances.iter().filter(|i| i.lifecycle_state == "InService").map(|i| i.instance_id.clone()).collect();
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let running = cloud.running_instances(&[("instance-id".into(), ids)]).await?;
    Ok(running.into_iter().filter(|m| m.image_id != image).map(|m| m.instance_id).collect())
}

/// Waits until the group has `desired` instances in service; returns the unhealthy ones (the
/// health gate) as soon as every instance has left `Pending`.
async fn wait_replacements<C: Groups + LoadBalancing>(
    cloud: &C,
    group: &str,
    desired: usize,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Vec<String>, Error> {
    let look = async || {
        let g = current_group(cloud, group).await?;
        let settled = g.instances.iter().filter(|i| i.lifecycle_state == "InService").count();
        let sick = unhealthy_members(cloud, &g).await?;
        if !sick.is_empty() || settled < desired {
            return Ok(if sick.is_empty() {
                Look::NotYet(settled, format!("{settled} of {desired} in service"))
            } else {
                Look::Done(sick)
            });
        }
        // A new instance is Healthy during its grace period: look again after the warmup.
        let Some(w) = req.warmup_seconds.filter(|w| *w > 0) else { return Ok(Look::Done(sick)) };
        progress.note(&format!("all in service; warming up {w}s"));
        tokio::time::sleep(Duration::from_secs(w as u64)).await;
        let g = current_group(cloud, group).await?;
        Ok(Look::Done(unhealthy_members(cloud, &g).await?))
    };
    Ok(poll(req.timeout, fast_poll(req.poll_interval), progress, look).await?.unwrap_or_else(|settled| {
        vec![format!(
            "{} instance(s) not in service after {}",
            desired - settled,
            crate::time::format_duration(req.timeout)
        )]
    }))
}

/// The group's instances that are unhealthy to Auto Scaling or in any of its target groups.
async fn unhealthy_members<C: LoadBalancing>(cloud: &C, g: &GroupDetail) -> Result<Vec<String>, Error> {
    let mut sick: Vec<String> = g
        .instances
        .iter()
        .filter(|i| !i.health_status.eq_ignore_ascii_case("healthy"))
        .map(|i| i.instance_id.clone())
        .collect();
    let members: std::collections::BTreeSet<&str> = g.instances.iter().map(|i| i.instance_id.as_str()).collect();
    for tg in &g.target_group_arns {
        for (id, state) in cloud.target_health(tg).await? {
            if state == "unhealthy" && members.contains(id.as_str()) && !sick.contains(&id) {
                sick.push(id);
            }
        }
    }
    Ok(sick)
}

/// What a deploy run journals as its plan (and a resume, a rollback or `status` reads back).
#[derive(Serialize, Deserialize)]
pub struct SavedPlan {
    pub request: DeployRequest,
    pub prepared: Prepared,
}

/// The version a `create-version` step's detail names (`version 7 of lt-… runs ami-…`).
fn created_version(detail: &str) -> Option<i64> {
    detail.strip_prefix("version ")?.split_whitespace().next()?.parse().ok()
}

/// The version deploy run `id` made, from its journaled `create-version` step.
fn version_made(journal: &Journal, id: i64) -> Result<Option<i64>, Error> {
    Ok(journal.steps(id)?.get("create-version").and_then(|s| s.detail.as_deref()).and_then(created_version))
}

/// The group's last-known-good, from the newest completed deployment whose version the group
/// is on now: `(version, image)`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn group(serving: usize, sick: usize) -> GroupDetail {
        let instance = |i: usize, health: &str| crate::aws::GroupInstance {
            instance_id: format!("i-{i}"),
            lifecycle_state: "InService".into(),
            health_status: health.into(),
        };
        GroupDetail {
            name: "web".into(),
            template_id: Some("lt-1".into()),
            template_version: Some("1".into()),
            launch_configuration: None,
            mixed_instances: false,
            min_size: 10,
            max_size: 10,
            desired_capacity: 10,
            subnets: None,
            availability_zones: vec![],
            target_group_arns: vec![],
            health_check_type: None,
            health_check_grace_period: None,
            instances: (0..serving)
                .map(|i| instance(i, "Healthy"))
                .chain((serving..serving + sick).map(|i| instance(i, "Unhealthy")))
                .collect(),
        }
    }

    fn request(min_healthy: u8, size: Threshold) -> DeployRequest {
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
            timeout: Duration::from_secs(60),
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
        r.shift = vec![10, 50];
        assert_eq!(shift_steps(&r), vec![10, 50, 100]);
    }

    #[test]
    fn a_batch_never_takes_the_group_below_its_floor_of_the_desired_capacity() {
        let old: Vec<String> = (0..10).map(|i| format!("i-{i}")).collect();
        assert_eq!(next_batch(&group(10, 0), &old, &request(80, Threshold::Percent(50))).unwrap().len(), 2);
        assert_eq!(next_batch(&group(10, 0), &old, &request(0, Threshold::Count(5))).unwrap().len(), 5);
        // One already out of service: it goes first, alone, whatever the floor.
        assert_eq!(next_batch(&group(9, 1), &old, &request(90, Threshold::Count(1))).unwrap(), vec!["i-9".to_string()]);
        // Nine of ten serving at a floor of 90 %: nothing healthy can go.
        let e = next_batch(&group(9, 0), &old[..9], &request(90, Threshold::Count(1))).unwrap_err();
        assert!(e.contains("9 of 10 in service"), "{e}");
    }

    #[test]
    fn launch_configuration_groups_are_refused_with_the_way_to_migrate() {
        let g = GroupDetail {
            name: "legacy".into(),
            template_id: None,
            template_version: None,
            launch_configuration: Some("lc-1".into()),
            mixed_instances: false,
            min_size: 1,
            max_size: 1,
            desired_capacity: 1,
            instances: vec![],
            subnets: None,
            availability_zones: vec![],
            target_group_arns: vec![],
            health_check_type: None,
            health_check_grace_period: None,
        };
        let why = group_objection(&g).unwrap();
        assert!(why.contains("launch configuration lc-1") && why.contains("create-launch-template"), "{why}");
    }
}

/// Prepares a rollback: the group returns to its last-known-good version (no new version is
/// made), found in the journal from the deployment the group is on now.
pub async fn prepare_rollback<C: Cloud + Groups>(cloud: &C, journal: &Journal, group: &str) -> Result<Prepared, Error> {
    let scope = cloud.scope().to_string();
    let g = cloud
        .group(group)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("Auto Scaling group {group}"), looked_in: scope.clone() })?;
    if let Some(why) = group_objection(&g) {
        return Err(Error::Usage(why));
    }
    let template_id = g.template_id.clone().unwrap_or_default();
    let named = g.template_version.clone().unwrap_or_else(|| "$Default".into());
    let (current, current_image) = cloud.template_version(&template_id, &named).await?.ok_or_else(|| {
        Error::NotFound { what: format!("version {named} of launch template {template_id}"), looked_in: scope.clone() }
    })?;
    // A refresh still running (a deployment interrupted or still going) is rolled back itself;
    // the group may not name the new version yet.
    let in_flight = cloud.refresh_state(group, None).await?.is_some_and(|r| !r.is_done());
    let (version, image, run) = last_known_good(journal, group, (!in_flight).then_some(current))?.ok_or_else(|| {
        Error::Usage(format!(
            "group {group} is on version {current}, which no completed amictl deployment in {} made: nothing to roll back to",
            journal.path().display()
        ))
    })?;
    let image = image.ok_or_else(|| Error::Usage(format!("version {version} (run {run}) names no image")))?;
    match cloud.image_now(&image).await? {
        None => {
            return Err(Error::NotFound {
                what: format!("last-known-good AMI {image} (version {version})"),
                looked_in: scope,
            })
        }
        Some(i) if catalog::is_revoked(&i) => {
            return Err(Error::Usage(format!("not rolling back: the last-known-good {image} has been revoked")))
        }
        Some(_) => {}
    }
    Ok(Prepared {
        group: g.name,
        template_id,
        named_version: named,
        previous_version: current,
        previous_image: current_image,
        image_id: image,
        target_version: Some(version),
        token: String::new(),
        overridden: vec![],
    })
}

/// The request and plan of an interrupted (or failed) deployment, to resume it: run `id`, or
/// the newest.
pub fn interrupted(journal: &Journal, id: Option<i64>) -> Result<(i64, DeployRequest, Prepared), Error> {
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

/// The blue-green deployment whose green group is `group`, from the journal: blue's plan (its
/// group, version and image) and the run id.
pub fn blue_of(journal: &Journal, group: &str) -> Result<Option<(Prepared, i64)>, Error> {
    for (id, status, plan) in journal.runs_of("deploy")? {
        if status != "completed" {
            continue;
        }
        let Ok(SavedPlan { request: req, prepared: p }) = serde_json::from_str(&plan) else { continue };
        if !matches!(req.strategy, Strategy::BlueGreen | Strategy::Canary) {
            continue;
        }
        if version_made(journal, id)?.is_some_and(|v| green_name(&p.group, v) == group) {
            return Ok(Some((p, id)));
        }
    }
    Ok(None)
}

/// Rolls a blue-green deployment back: blue back to green's size and healthy in its target
/// group, every listener forwarding to green moved back to blue, green scaled in.
pub async fn roll_back_blue_green<C: Cloud + Groups + LoadBalancing>(
    cloud: &C,
    journal: Journal,
    green: &str,
    blue: &Prepared,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    let scope = cloud.scope();
    let scopes = [(scope.account.clone(), scope.region.clone())];
    let plan = serde_json::json!({"request": req, "prepared": blue, "green": green}).to_string();
    let (run, _) = crate::engine::Engine::new(journal, "rollback")
        .guard(&[], false)?
        .confirm(|| Ok(()))?
        .begin(&plan, &scopes, None)?;
    let r = run.drive(back_to_blue(cloud, &run, green, blue, req, progress)).await;
    run.finish(if r.is_ok() { "completed" } else { "failed" })?;
    r
}

async fn back_to_blue<C: Cloud + Groups + LoadBalancing>(
    cloud: &C,
    run: &Run,
    green: &str,
    blue: &Prepared,
    req: &DeployRequest,
    progress: &dyn Progress,
) -> Result<Deployment, Error> {
    let g = current_group(cloud, green).await?;
    let b = current_group(cloud, &blue.group).await?;
    let in_tg = |d: &GroupDetail| {
        d.target_group_arns.first().cloned().ok_or_else(|| Error::Other(format!("{} is in no target group", d.name)))
    };
    let (blue_tg, green_tg) = (in_tg(&b)?, in_tg(&g)?);
    let up = async { Ok(cloud.scale(&blue.group, g.min_size, g.desired_capacity).await?) };
    run.step("scale-out-blue", progress, up, |_| format!("{} back to {}", blue.group, g.desired_capacity)).await?;
    let healthy = green_healthy(cloud, &blue.group, &blue_tg, g.desired_capacity.max(0) as usize, req, progress);
    let sick =
        run.step("wait-blue-healthy", progress, healthy, |s: &Vec<String>| format!("{} unhealthy", s.len())).await?;
    if !sick.is_empty() {
        return Err(Error::Other(format!(
            "{} did not become healthy again: {}; the traffic stays on {green}",
            blue.group,
            sick.join(", ")
        )));
    }
    let tg_of = async |arn: &str| {
        cloud.target_group(arn).await?.ok_or_else(|| Error::Other(format!("target group {arn} vanished")))
    };
    let mut tg = tg_of(&green_tg).await?;
    // Green's target group reached the load balancers through blue's listeners: look there too.
    tg.load_balancer_arns.extend(tg_of(&blue_tg).await?.load_balancer_arns);
    tg.load_balancer_arns.sort();
    tg.load_balancer_arns.dedup();
    let listeners = cloud.listeners_forwarding_to(&tg).await?;
    if listeners.is_empty() {
        return Err(Error::Other(format!("no listener forwards to {green}'s target group: nothing to move back")));
    }
    let back = async {
        for l in &listeners {
            cloud.forward(&l.arn, &[(blue_tg.clone(), 1)]).await?;
        }
        Ok(())
    };
    run.step("shift-back", progress, back, |_| format!("traffic back on {}", blue.group)).await?;
    let down = async { Ok(cloud.scale(green, 0, 0).await?) };
    run.step("scale-in-green", progress, down, |_| format!("{green} scaled in")).await?;
    Ok(Deployment {
        command: "rollback".into(),
        run_id: run.id(),
        group: blue.group.clone(),
        strategy: req.strategy,
        image_id: blue.previous_image.clone().unwrap_or_default(),
        version: blue.previous_version,
        previous_image: Some(blue.image_id.clone()),
        previous_version: blue.previous_version,
        outcome: "deployed".into(),
        green_group: None,
        reason: Some(format!("traffic back on {}", blue.group)),
        refresh_id: None,
        overridden: vec![],
    })
}

/// What a group runs now.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub template_id: Option<String>,
    /// The version the group names (`7`, `$Default`).
    pub named_version: Option<String>,
    pub version: Option<i64>,
    /// Whether the group names a version number (not `$Latest` or `$Default`).
    pub pinned: bool,
    pub image_id: Option<String>,
    /// Image id → how many of the group's instances run it.
    pub instances_by_image: std::collections::BTreeMap<String, usize>,
    pub desired_capacity: i32,
    pub in_service: usize,
    pub refresh: Option<RefreshState>,
    pub last_known_good: Option<LastKnownGood>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastKnownGood {
    pub version: i64,
    pub image_id: Option<String>,
    pub run_id: i64,
}

/// The status of `group`, or of every group.
pub async fn status<C: Cloud + Groups + Machines>(
    cloud: &C,
    journal: &Journal,
    group: Option<&str>,
) -> Result<Vec<GroupStatus>, Error> {
    let names = match group {
        Some(g) => vec![g.to_string()],
        None => cloud.group_names().await?,
    };
    let mut out = Vec::new();
    for name in names {
        let g = cloud.group(&name).await?.ok_or_else(|| Error::NotFound {
            what: format!("Auto Scaling group {name}"),
            looked_in: cloud.scope().to_string(),
        })?;
        out.push(group_status(cloud, journal, g).await?);
    }
    Ok(out)
}

async fn group_status<C: Cloud + Groups + Machines>(
    cloud: &C,
    journal: &Journal,
    g: GroupDetail,
) -> Result<GroupStatus, Error> {
    let resolved = match (&g.template_id, &g.template_version) {
        (Some(t), Some(v)) => cloud.template_version(t, v).await?,
        _ => None,
    };
    let ids: Vec<String> = g.instances.iter().map(|i| i.instance_id.clone()).collect();
    let mut by_image = std::collections::BTreeMap::new();
    if !ids.is_empty() {
        for m in cloud.running_instances(&[("instance-id".into(), ids)]).await? {
            *by_image.entry(m.image_id).or_insert(0) += 1;
        }
    }
    let refresh = cloud.refresh_state(&g.name, None).await?;
    let lkg = last_known_good(journal, &g.name, resolved.as_ref().map(|r| r.0))?
        .map(|(version, image_id, run_id)| LastKnownGood { version, image_id, run_id });
    Ok(GroupStatus {
        pinned: g.template_version.as_deref().is_some_and(|v| v.chars().all(|c| c.is_ascii_digit())),
        group: g.name.clone(),
        template_id: g.template_id.clone(),
        named_version: g.template_version.clone(),
        version: resolved.as_ref().map(|r| r.0),
        image_id: resolved.and_then(|r| r.1),
        instances_by_image: by_image,
        desired_capacity: g.desired_capacity,
        in_service: g.instances.iter().filter(|i| i.serving()).count(),
        refresh,
        last_known_good: lkg,
    })
}

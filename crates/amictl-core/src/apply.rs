//! Executes a [`Plan`]'s actions through [`Cloud`], journaling each step before and after its
//! call, re-checking each image right before anything is done to it.
//!
//! Actions on one image run in order (a snapshot only after its image's deregistration
//! succeeded); different images run concurrently, bounded by `concurrency` and, optionally, a
//! rate of calls per second. Steps the journal already has as done (a resumed run) are not
//! repeated; a step that was started but not finished is re-checked and, where its effect is
//! already there (image gone, snapshot gone), recorded as done without a second call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use serde::Serialize;

use crate::aws::Cloud;
use crate::error::{CloudErrorKind, Error};
use crate::inventory::{Inventory, Scope};
use crate::journal::{Journal, StepStatus};
use crate::plan::{Action, ActionKey, ActionKind, Plan, Stage};
use crate::policy::{RetirePolicy, AFTER_TAG, LAST_KNOWN_GOOD_TAG, RETIRED_IMAGE_TAG, STAGE_TAG, UNSHARED_TAG};
use crate::usage::{self, Usage};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Images worked on at once.
    pub concurrency: usize,
    /// At most this many mutating calls per second (all images together).
    pub rate_per_sec: Option<f64>,
    /// How fast the changing calls of one scope can go at best: the client's pace for them
    /// (see [`crate::aws::pacing`]); it sizes the batches of re-checks like `rate_per_sec`.
    pub paced_per_sec: Option<f64>,
    /// The clock stage tags are written with.
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    pub action_id: String,
    pub kind: ActionKind,
    pub target: String,
    pub status: StepStatus,
    pub detail: String,
    /// Done in an earlier, interrupted attempt of this run.
    pub earlier: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub run_id: i64,
    pub outcomes: Vec<StepOutcome>,
}

impl ApplyReport {
    pub fn count(&self, status: StepStatus) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }
    pub fn all_done(&self) -> bool {
        self.outcomes.iter().all(|o| o.status == StepStatus::Done)
    }
}

struct Limiter(Option<tokio::sync::Mutex<tokio::time::Interval>>);

impl Limiter {
    fn new(rate: Option<f64>) -> Self {
        Limiter(rate.filter(|r| *r > 0.0).map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::sync::Mutex::new(i)
        }))
    }
    async fn wait(&self) {
        if let Some(i) = &self.0 {
            i.lock().await.tick().await;
        }
    }
}

/// What is known about one scope at apply time.
struct Fresh {
    usage: Usage,
    /// snapshot id → images that map it.
    mapped: HashMap<String, Vec<String>>,
    /// Launch permissions read at `permissions_read_at` (the plan's reading, when the apply
    /// followed it at once): the re-check takes them while they are at most
    /// [`PERMISSIONS_FRESH`] old instead of reading them again.
    permissions: std::collections::BTreeMap<String, Vec<crate::inventory::LaunchPermission>>,
    permissions_read_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How old a launch-permission reading may be and still count as an image's re-check: about
/// as old as the batched image and instance re-checks get (see [`batch_size`]), so an apply
/// run straight after its plan (`--yes`) reads each image's permissions once, not twice.
pub const PERMISSIONS_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl Fresh {
    /// The permissions of `image` if they were read recently enough to stand as its re-check.
    fn recent_permissions(&self, image: &str) -> Option<&Vec<crate::inventory::LaunchPermission>> {
        let window = chrono::Duration::from_std(PERMISSIONS_FRESH).unwrap_or_default();
        // A clock that stepped back makes no reading recent.
        let age = self.permissions_read_at.map(|t| chrono::Utc::now() - t);
        let recent = age.is_some_and(|age| age >= chrono::Duration::zero() && age <= window);
        recent.then(|| self.permissions.get(image)).flatten()
    }
}

struct Ctx<'a, C> {
    clouds: HashMap<Scope, &'a C>,
    fresh: HashMap<Scope, Fresh>,
    journal: &'a Mutex<Journal>,
    run_id: i64,
    policy: &'a RetirePolicy,
    opts: &'a ApplyOptions,
    limiter: Limiter,
    /// Outcomes of this run so far, by action id (dependencies read it).
    outcomes: Mutex<HashMap<String, StepStatus>>,
    /// Steps done by an earlier attempt of this run (a resume).
    done_before: HashSet<String>,
    /// The re-check reads of the batch being worked on, by scope.
    prefetched: Mutex<HashMap<Scope, Prefetched>>,
    /// Deregistration action id → the snapshots the plan deletes after it.
    dependents: HashMap<String, Vec<String>>,
    /// Snapshot → the image whose deregistration deleted it in this attempt of the run.
    deleted_with_image: Mutex<HashMap<String, String>>,
}

/// How many re-check reads (launch and volume permissions) run at once in one scope.
const READ_CONCURRENCY: usize = crate::aws::collect::DEFAULT_CONCURRENCY;

/// Images re-checked together: one DescribeImages and one DescribeInstances per this many
/// (EC2's limit of values in one filter), right before the batch's calls.
const RECHECK_BATCH: usize = 200;

/// How many chains share one batched re-check: at most [`RECHECK_BATCH`], and under a rate
/// limit (`--rate`, or the pace of the scope's changing calls) no more than about 15 s of calls:
/// a batch's re-checks are read while the batch before it runs, so none is older than about
/// 30 s when it counts.
fn batch_size(opts: &ApplyOptions) -> usize {
    let rate = match (opts.rate_per_sec, opts.paced_per_sec) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let by_rate = rate.map_or(RECHECK_BATCH, |r| (r * 15.0) as usize);
    by_rate.clamp(opts.concurrency.max(1), RECHECK_BATCH)
}

/// What one batch of re-checks read in one scope.
#[derive(Default)]
struct Prefetched {
    /// Every image asked about; absent from `images`: gone.
    asked: HashSet<String>,
    images: HashMap<String, crate::inventory::Image>,
    /// Live instances by the image they run.
    users: HashMap<String, Vec<crate::inventory::Instance>>,
    /// Launch permissions, one call per image (no list call returns them); absent: not read.
    permissions: HashMap<String, Vec<crate::inventory::LaunchPermission>>,
    /// createVolumePermission of the snapshots deregistrations may delete with their image,
    /// one call per snapshot; absent: not read.
    snapshot_permissions: HashMap<String, Vec<String>>,
}

/// Applies `plan` (with `run_id` already started in `journal`). `fresh` is an inventory
/// collected right before: its templates, configurations and groups are what the re-checks
/// compare against.
pub async fn apply<C: Cloud>(
    plan: &Plan,
    clouds: &[C],
    fresh: &Inventory,
    journal: &Mutex<Journal>,
    run_id: i64,
    opts: &ApplyOptions,
) -> Result<ApplyReport, Error> {
    let prior = journal.lock().unwrap().steps(run_id)?;
    let done_before: HashSet<String> =
        prior.iter().filter(|(_, s)| s.status == StepStatus::Done).map(|(id, _)| id.clone()).collect();
    let ctx = Ctx {
        clouds: clouds.iter().map(|c| (c.scope().clone(), c)).collect(),
        fresh: fresh
            .scopes
            .iter()
            .map(|s| {
                let mut mapped: HashMap<String, Vec<String>> = HashMap::new();
                for i in s.images.iter().filter(|i| i.state != "deregistered") {
                    for snap in &i.snapshot_ids {
                        mapped.entry(snap.clone()).or_default().push(i.id.clone());
                    }
                }
                let fresh = Fresh {
                    usage: usage::analyze(s),
                    mapped,
                    permissions: s.launch_permissions.clone(),
                    permissions_read_at: s.launch_permissions_read_at,
                };
                (s.scope(), fresh)
            })
            .collect(),
        journal,
        run_id,
        policy: &plan.policy,
        opts,
        limiter: Limiter::new(opts.rate_per_sec),
        outcomes: Mutex::new(done_before.iter().map(|id| (id.clone(), StepStatus::Done)).collect()),
        dependents: plan.actions.iter().filter(|a| a.kind == ActionKind::DeleteSnapshot).fold(
            HashMap::new(),
            |mut m: HashMap<String, Vec<String>>, a| {
                if let (Some(d), Some(s)) = (a.depends_on(), &a.snapshot_id) {
                    m.entry(d).or_default().push(s.to_string());
                }
                m
            },
        ),
        deleted_with_image: Mutex::default(),
        done_before,
        prefetched: Mutex::default(),
    };

    // Chains: an action and everything that depends on it, in plan order.
    let mut chains: BTreeMap<usize, Vec<&Action>> = BTreeMap::new();
    let mut chain_of: HashMap<ActionKey, usize> = HashMap::new();
    for (i, a) in plan.actions.iter().enumerate() {
        let head = a.dependency().and_then(|d| chain_of.get(&d).copied()).unwrap_or(i);
        chain_of.insert(a.key(), head);
        chains.entry(head).or_default().push(a);
    }

    // Scopes go side by side: each has its own API budget (EC2 throttles per account and
    // Region), so one scope's paced calls need not wait for another's. `--concurrency` bounds
    // the images worked on at once over all of them.
    let mut by_scope: BTreeMap<Scope, Vec<Vec<&Action>>> = BTreeMap::new();
    for chain in chains.into_values() {
        let scope = Scope { account: chain[0].account.to_string(), region: chain[0].region.to_string() };
        by_scope.entry(scope).or_default().push(chain);
    }
    let at_once = tokio::sync::Semaphore::new(opts.concurrency.max(1));
    let (ctx, at_once) = (&ctx, &at_once);
    // In each scope, a batch's re-checks are read while the batch before it runs, so the paced
    // changing calls never wait for them; batches are sized so that two of them take about 30 s.
    let per_scope = by_scope.into_values().map(|chains| async move {
        let batches: Vec<&[Vec<&Action>]> = chains.chunks(batch_size(opts)).collect();
        let mut outcomes: Vec<StepOutcome> = Vec::new();
        if let Some(first) = batches.first() {
            prefetch(ctx, first).await;
        }
        for (n, batch) in batches.iter().enumerate() {
            let next = async {
                if let Some(next) = batches.get(n + 1) {
                    prefetch(ctx, next).await;
                }
            };
            let run = stream::iter(batch.iter().map(|chain| async move {
                let _turn = at_once.acquire().await;
                run_chain(ctx, chain).await
            }))
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<Vec<StepOutcome>>>();
            let ((), results) = futures::join!(next, run);
            outcomes.extend(results.into_iter().flatten());
        }
        outcomes
    });
    let mut outcomes: Vec<StepOutcome> = futures::future::join_all(per_scope).await.into_iter().flatten().collect();
    let order: HashMap<String, usize> = plan.actions.iter().enumerate().map(|(i, a)| (a.id(), i)).collect();
    outcomes.sort_by_key(|o| order.get(o.action_id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(ApplyReport { run_id, outcomes })
}

async fn run_chain<C: Cloud>(ctx: &Ctx<'_, C>, chain: &[&Action]) -> Vec<StepOutcome> {
    let mut out = Vec::new();
    for a in chain {
        if ctx.done_before.contains(&a.id()) {
            out.push(outcome(a, StepStatus::Done, "done in an earlier attempt".into(), true));
            continue;
        }
        out.push(run_step(ctx, a).await);
    }
    out
}

/// Reads, for a batch of chains, what their re-checks need, a scope at a time: the images as
/// they are now and the live instances running them, in a few batched calls instead of two
/// per image. A read that fails leaves the re-checks to ask per image (and fail there).
async fn prefetch<C: Cloud>(ctx: &Ctx<'_, C>, batch: &[Vec<&Action>]) {
    let mut wanted: HashMap<Scope, Vec<String>> = HashMap::new();
    let mut snapshots: HashMap<Scope, Vec<String>> = HashMap::new();
    for a in batch.iter().flatten() {
        let rechecked = matches!(a.kind, ActionKind::Deprecate | ActionKind::Disable | ActionKind::Deregister);
        if rechecked && !ctx.done_before.contains(&a.id()) {
            let scope = Scope { account: a.account.to_string(), region: a.region.to_string() };
            wanted.entry(scope.clone()).or_default().extend(a.image_id.as_deref().map(str::to_string));
            if a.kind == ActionKind::Deregister {
                snapshots.entry(scope).or_default().extend(ctx.dependents.get(&a.id()).into_iter().flatten().cloned());
            }
        }
    }
    let mut read = HashMap::new();
    for (scope, ids) in wanted {
        let Some(cloud) = ctx.clouds.get(&scope) else { continue };
        let recent = |id: &String| ctx.fresh.get(&scope).and_then(|f| f.recent_permissions(id)).cloned();
        let known: HashMap<String, Vec<crate::inventory::LaunchPermission>> =
            ids.iter().filter_map(|id| recent(id).map(|p| (id.clone(), p))).collect();
        let unknown = ids.iter().filter(|id| !known.contains_key(*id));
        // Reads go as wide as the inventory's; --concurrency bounds the changing calls.
        let permissions =
            stream::iter(unknown.map(|id| async move { (id.clone(), cloud.launch_permissions(id).await) }))
                .buffer_unordered(READ_CONCURRENCY)
                .collect::<Vec<_>>();
        let snaps = snapshots.remove(&scope).unwrap_or_default();
        let snapshot_permissions =
            stream::iter(snaps.iter().map(|id| async move { (id.clone(), cloud.snapshot_permissions(id).await) }))
                .buffer_unordered(READ_CONCURRENCY)
                .collect::<Vec<_>>();
        let (images, users, permissions, snapshot_permissions) = futures::join!(
            cloud.images_by_id(&ids),
            cloud.live_instances_using(&ids),
            permissions,
            snapshot_permissions
        );
        let (Ok(images), Ok(users)) = (images, users) else { continue };
        let mut p = Prefetched { asked: ids.into_iter().collect(), ..Default::default() };
        // A permission read that failed is read again, alone, by the re-check (and fails there).
        p.permissions = permissions.into_iter().filter_map(|(id, r)| r.ok().map(|v| (id, v))).chain(known).collect();
        p.snapshot_permissions =
            snapshot_permissions.into_iter().filter_map(|(id, r)| r.ok().map(|v| (id, v))).collect();
        p.images = images.into_iter().map(|i| (i.id.clone(), i)).collect();
        for i in users {
            p.users.entry(i.image_id.clone()).or_default().push(i);
        }
        read.insert(scope, p);
    }
    // Added to what earlier batches read: the batch before this one may still be running (its
    // images' reads stay), and other scopes' batches run meanwhile with their own. Each image
    // is re-checked once, by its own chain, so nothing older is ever taken for this batch's.
    let mut prefetched = ctx.prefetched.lock().unwrap();
    for (scope, p) in read {
        let into = prefetched.entry(scope).or_default();
        into.asked.extend(p.asked);
        into.images.extend(p.images);
        into.users.extend(p.users);
        into.permissions.extend(p.permissions);
        into.snapshot_permissions.extend(p.snapshot_permissions);
    }
}

impl StepOutcome {
    /// What happened to action `a` in this attempt of the run.
    pub fn of(a: &Action, status: StepStatus, detail: String) -> StepOutcome {
        outcome(a, status, detail, false)
    }
}

fn outcome(a: &Action, status: StepStatus, detail: String, earlier: bool) -> StepOutcome {
    StepOutcome { action_id: a.id(), kind: a.kind, target: a.target().to_string(), status, detail, earlier }
}

async fn run_step<C: Cloud>(ctx: &Ctx<'_, C>, a: &Action) -> StepOutcome {
    let id = a.id();
    let finish = |status: StepStatus, detail: String| {
        ctx.outcomes.lock().unwrap().insert(id.clone(), status);
        if let Err(e) = ctx.journal.lock().unwrap().step_finished(ctx.run_id, &id, status, &detail) {
            tracing::error!("{e}");
            return outcome(
                a,
                StepStatus::Failed,
                format!("{detail}; and the journal could not record it: {e}"),
                false,
            );
        }
        outcome(a, status, detail, false)
    };
    if let Some(dep) = a.depends_on() {
        let status = ctx.outcomes.lock().unwrap().get(&dep).copied();
        if status != Some(StepStatus::Done) {
            return finish(StepStatus::Skipped, format!("{dep} did not succeed"));
        }
    }
    let scope = Scope { account: a.account.to_string(), region: a.region.to_string() };
    let (Some(cloud), Some(fresh)) = (ctx.clouds.get(&scope), ctx.fresh.get(&scope)) else {
        return finish(StepStatus::Failed, format!("scope {scope} is not connected or was not listed"));
    };
    if let Err(e) = ctx.journal.lock().unwrap().step_started(ctx.run_id, &id) {
        return outcome(a, StepStatus::Failed, format!("not started: {e}"), false);
    }
    match execute(ctx, *cloud, fresh, a).await {
        Ok(Ok(detail)) => finish(StepStatus::Done, detail),
        Ok(Err(why)) => finish(StepStatus::Aborted, why),
        Err(e) => finish(StepStatus::Failed, e.to_string()),
    }
}

fn is_gone(e: &crate::error::CloudError) -> bool {
    e.kind == CloudErrorKind::NotFound
        || e.code.as_deref().is_some_and(|c| c.contains("NotFound") || c == "InvalidAMIID.Unavailable")
}

/// `Ok(Ok(detail))` done, `Ok(Err(why))` aborted by a re-check, `Err` the call failed.
async fn execute<C: Cloud>(
    ctx: &Ctx<'_, C>,
    cloud: &C,
    fresh: &Fresh,
    a: &Action,
) -> Result<Result<String, String>, crate::error::CloudError> {
    let now = ctx.opts.now;
    let after = |secs: Option<u64>| crate::time::rfc3339(now + chrono::Duration::seconds(secs.unwrap_or(0) as i64));
    let image = a.image_id.as_deref().unwrap_or_default().to_string();
    match a.kind {
        ActionKind::Restore => {
            let Some(current) = cloud.image_now(&image).await? else {
                return Ok(Err(format!("{image} is gone: nothing to restore")));
            };
            ctx.limiter.wait().await;
            if current.state == "disabled" {
                cloud.enable_image(&image).await?;
            }
            let native = cloud.undeprecate_image(&image).await?;
            cloud.untag(std::slice::from_ref(&image), &[STAGE_TAG.into(), AFTER_TAG.into()]).await?;
            Ok(Ok(format!("restored {image}{}", if native { "" } else { " (stage tags removed)" })))
        }
        ActionKind::Unshare => unshare(ctx, cloud, fresh, a, &image, after(a.next_stage_after_secs)).await,
        ActionKind::Deprecate | ActionKind::Disable | ActionKind::Deregister => {
            let current = match recheck(ctx, cloud, fresh, &image).await? {
                Err(why) => return Ok(Err(why)),
                Ok(None) if a.kind == ActionKind::Deregister => {
                    return Ok(Ok(format!("{image} was already deregistered")));
                }
                Ok(None) => return Ok(Err(format!("{image} is gone"))),
                Ok(Some(c)) => c,
            };
            ctx.limiter.wait().await;
            match a.kind {
                ActionKind::Deprecate => {
                    let native = cloud.deprecate_image(&image, now + chrono::Duration::minutes(1)).await?;
                    let tags = [
                        (STAGE_TAG.to_string(), Stage::Deprecated.as_str().to_string()),
                        (AFTER_TAG.to_string(), after(a.next_stage_after_secs)),
                    ];
                    cloud.tag(std::slice::from_ref(&image), &tags).await?;
                    Ok(Ok(format!(
                        "deprecated {image}{}",
                        if native { "" } else { " (recorded in tags; the endpoint has no native deprecation)" }
                    )))
                }
                ActionKind::Disable => {
                    if current.state != "disabled" {
                        cloud.disable_image(&image).await?;
                    }
                    let tags = [
                        (STAGE_TAG.to_string(), Stage::Disabled.as_str().to_string()),
                        (AFTER_TAG.to_string(), after(a.next_stage_after_secs)),
                    ];
                    cloud.tag(std::slice::from_ref(&image), &tags).await?;
                    Ok(Ok(format!("disabled {image}")))
                }
                _ => {
                    // The image's own mapping, as EC2 shows it now: what its snapshots were.
                    let recorded = ctx.journal.lock().unwrap().record_image_snapshots(
                        cloud.scope(),
                        &image,
                        &current.snapshot_ids,
                        ctx.run_id,
                    );
                    if let Err(e) = recorded {
                        return Ok(Err(format!("not deregistered: the journal could not record its snapshots: {e}")));
                    }
                    if !a.stage_snapshots.is_empty() {
                        // Before the image goes: the snapshots carry the stage from now on.
                        let tags = [
                            (STAGE_TAG.to_string(), Stage::Deregistered.as_str().to_string()),
                            (AFTER_TAG.to_string(), after(a.next_stage_after_secs)),
                            (RETIRED_IMAGE_TAG.to_string(), image.clone()),
                        ];
                        cloud.tag(&a.stage_snapshots, &tags).await?;
                    }
                    let together = snapshots_go_with_image(ctx, cloud, fresh, a, &current).await?;
                    match cloud.deregister_image(&image, together).await {
                        Ok(deleted) if deleted.is_empty() => Ok(Ok(format!("deregistered {image}"))),
                        Ok(deleted) => {
                            let detail =
                                format!("deregistered {image} and deleted its snapshots {}", deleted.join(", "));
                            ctx.deleted_with_image
                                .lock()
                                .unwrap()
                                .extend(deleted.into_iter().map(|s| (s, image.clone())));
                            Ok(Ok(detail))
                        }
                        Err(e) if is_gone(&e) => Ok(Ok(format!("{image} was already deregistered"))),
                        Err(e) => Err(e),
                    }
                }
            }
        }
        ActionKind::DeleteSnapshot => {
            let snap = a.snapshot_id.as_deref().unwrap_or_default().to_string();
            if let Some(image) = ctx.deleted_with_image.lock().unwrap().get(&snap) {
                return Ok(Ok(format!("deleted snapshot {snap} with {image}")));
            }
            let others: Vec<&String> = fresh
                .mapped
                .get(&snap)
                .into_iter()
                .flatten()
                .filter(|i| Some(i.as_str()) != a.image_id.as_deref())
                .collect();
            if !others.is_empty() {
                return Ok(Err(format!(
                    "{snap} is still used by {}",
                    others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            // After a deregistration this run saw succeed, the image is known gone; after one
            // from an earlier attempt (a resume), look.
            let dep_earlier = a.depends_on().is_some_and(|d| ctx.done_before.contains(&d));
            if let Some(img) = a.image_id.as_deref().filter(|_| !a.after_deregistration || dep_earlier) {
                if cloud.image_now(img).await?.is_some_and(|i| i.state != "deregistered") {
                    return Ok(Err(format!("{img} still exists: its snapshot {snap} stays")));
                }
            }
            // Someone else may build volumes from it: theirs to lose, not ours to delete.
            match cloud.snapshot_permissions(&snap).await {
                Ok(who) if !who.is_empty() => {
                    return Ok(Err(format!("{snap} is shared (createVolumePermission: {}): kept", who.join(", "))));
                }
                Err(e) if is_gone(&e) => return Ok(Ok(format!("snapshot {snap} was already deleted"))),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            ctx.limiter.wait().await;
            match cloud.delete_snapshot(&snap).await {
                Ok(()) => Ok(Ok(format!("deleted snapshot {snap}"))),
                Err(e) if is_gone(&e) => Ok(Ok(format!("snapshot {snap} was already deleted"))),
                Err(e) => Err(e),
            }
        }
    }
}

/// Whether EC2 may delete the image's snapshots in the deregistration itself
/// (DeleteAssociatedSnapshots), saving a call per snapshot: only when the plan deletes every
/// snapshot the image maps now, right after it, and each passes the checks its own step would
/// make (no other image maps it, nobody may build volumes from it). Otherwise each snapshot
/// goes through its own step as before.
async fn snapshots_go_with_image<C: Cloud>(
    ctx: &Ctx<'_, C>,
    cloud: &C,
    fresh: &Fresh,
    a: &Action,
    current: &crate::inventory::Image,
) -> Result<bool, crate::error::CloudError> {
    let planned = ctx.dependents.get(&a.id()).map(Vec::as_slice).unwrap_or(&[]);
    let mut mapped: Vec<&String> = current.snapshot_ids.iter().collect();
    let mut listed: Vec<&String> = planned.iter().collect();
    mapped.sort();
    listed.sort();
    if !a.stage_snapshots.is_empty() || mapped.is_empty() || mapped != listed {
        return Ok(false);
    }
    let image = a.image_id.as_deref();
    if planned.iter().any(|s| fresh.mapped.get(s).into_iter().flatten().any(|i| Some(i.as_str()) != image)) {
        return Ok(false);
    }
    for snap in planned {
        let read =
            ctx.prefetched.lock().unwrap().get(cloud.scope()).and_then(|p| p.snapshot_permissions.get(snap).cloned());
        let read = match read {
            Some(who) => Ok(who),
            None => cloud.snapshot_permissions(snap).await,
        };
        match read {
            Ok(who) if who.is_empty() => {}
            Ok(_) => return Ok(false),
            // Unknown: each snapshot's own step reads it again (and fails there).
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Takes the image back from accounts that do not use it: only those the fresh read found
/// unused there, and only while nothing else uses the image. Tagged so that retirement waits
/// the grace period before it goes on.
async fn unshare<C: Cloud>(
    ctx: &Ctx<'_, C>,
    cloud: &C,
    fresh: &Fresh,
    a: &Action,
    image: &str,
    after: String,
) -> Result<Result<String, String>, crate::error::CloudError> {
    let unused = fresh.usage.unused_shares.get(image).map(Vec::as_slice).unwrap_or(&[]);
    if let Some(account) = a.accounts.iter().find(|x| !unused.contains(x)) {
        return Ok(Err(format!("{image}: {account} is not known to leave it unused now")));
    }
    let other: Vec<&str> = fresh
        .usage
        .refs(image)
        .iter()
        .filter(|r| r.is_use() && !(r.kind == crate::usage::RefKind::SharedAccount && a.accounts.contains(&r.id)))
        .map(|r| r.evidence.as_str())
        .collect();
    if !other.is_empty() {
        return Ok(Err(format!("{image} is in use now: {}", other.join("; "))));
    }
    let Some(current) = cloud.image_now(image).await? else { return Ok(Err(format!("{image} is gone"))) };
    if let Some(k) = ctx.policy.all_keep_tags().chain([LAST_KNOWN_GOOD_TAG]).find(|k| current.tags.contains_key(*k)) {
        return Ok(Err(format!("{image} carries the tag {k} now")));
    }
    ctx.limiter.wait().await;
    // Tagged first: an unsharing that took effect always has its grace period recorded.
    let tags = [(UNSHARED_TAG.to_string(), a.accounts.join(",")), (AFTER_TAG.to_string(), after)];
    cloud.tag(&[image.to_string()], &tags).await?;
    cloud.unshare_image(image, &a.accounts).await?;
    Ok(Ok(format!("unshared {image} from {}", a.accounts.join(", "))))
}

/// Right before a destructive call: is the image still unused, untagged, unshared? Returns
/// the image as it is now (None: gone), or why the item must be aborted.
async fn recheck<C: Cloud>(
    ctx: &Ctx<'_, C>,
    cloud: &C,
    fresh: &Fresh,
    image: &str,
) -> Result<Result<Option<crate::inventory::Image>, String>, crate::error::CloudError> {
    let refs: Vec<&str> = fresh.usage.refs(image).iter().filter(|r| r.is_use()).map(|r| r.evidence.as_str()).collect();
    if !refs.is_empty() {
        return Ok(Err(format!("{image} is in use now: {}", refs.join("; "))));
    }
    let scope = cloud.scope().clone();
    let (read, permissions) = {
        let p = ctx.prefetched.lock().unwrap();
        let p = p.get(&scope).filter(|p| p.asked.contains(image));
        let read = p.map(|p| (p.images.get(image).cloned(), p.users.get(image).and_then(|u| u.first().cloned())));
        (read, p.and_then(|p| p.permissions.get(image).cloned()))
    };
    let (current, user) = match read {
        Some(r) => r,
        None => {
            let current = cloud.image_now(image).await?;
            let users =
                if current.is_some() { cloud.live_instances_using(&[image.to_string()]).await? } else { vec![] };
            (current, users.into_iter().next())
        }
    };
    let Some(current) = current else { return Ok(Ok(None)) };
    if let Some(k) = ctx.policy.all_keep_tags().chain([LAST_KNOWN_GOOD_TAG]).find(|k| current.tags.contains_key(*k)) {
        return Ok(Err(format!("{image} carries the tag {k} now")));
    }
    if current.public {
        return Ok(Err(format!("{image} is public now")));
    }
    if let Some(i) = user {
        return Ok(Err(format!("{image} is in use now: instance {} ({})", i.id, i.state)));
    }
    let perms = match permissions {
        Some(p) => p,
        None => match cloud.launch_permissions(image).await {
            Ok(p) => p,
            // Deregistered since it was read: gone, which each step handles.
            Err(e) if is_gone(&e) => return Ok(Ok(None)),
            Err(e) => return Err(e),
        },
    };
    if !perms.is_empty() {
        return Ok(Err(format!("{image} is shared now: {perms:?}")));
    }
    Ok(Ok(Some(current)))
}

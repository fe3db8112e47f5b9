//! The retirement planner: a pure function (inventory, families, policy, now) → [`Plan`].
//!
//! Every AMI gets a verdict with its reasons. Kept: in use (with the evidence), keep tag,
//! last-known-good, newest N of its family, too young, parent of a kept image, matches no
//! family (when the policy says so), not in a state amictl touches. Retired: everything else,
//! one stage per run (deprecate → disable → deregister → delete owned snapshots) as grace
//! periods pass, or all at once with `immediate`.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::family::FamilyRules;
use crate::inventory::{Image, Inventory, RegionInventory};
use crate::policy::{RetirePolicy, AFTER_TAG, LAST_KNOWN_GOOD_TAG, STAGE_TAG};
use crate::usage::{self, Usage};

pub const SCHEMA: &str = "amictl.plan/v1";

/// What `amictl retire` prints and `amictl apply` executes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub schema: String,
    #[serde(with = "crate::time::secs")]
    pub created_at: DateTime<Utc>,
    /// The time ages and grace periods were judged at.
    #[serde(with = "crate::time::secs")]
    pub as_of: DateTime<Utc>,
    pub policy: RetirePolicy,
    pub scopes: Vec<ScopeSummary>,
    pub images: Vec<ImageVerdict>,
    /// In order; actions on one image run in this order, after their `depends_on`.
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSummary {
    pub account: String,
    pub region: String,
    pub images: usize,
    /// Instances not terminated: the sanity guards compare it with the last run.
    pub live_instances: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageVerdict {
    pub account: String,
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub family: Option<String>,
    #[serde(with = "crate::time::opt_secs")]
    pub creation_date: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    pub state: String,
    pub stage: Option<Stage>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Keep,
    /// Retired: this run takes it one stage further.
    Retire,
    /// Being retired, but the grace period of its stage has not passed.
    Wait,
}

/// The retirement stage recorded on an image (or its snapshots) in tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Deprecated,
    Disabled,
    Deregistered,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Deprecated => "deprecated",
            Stage::Disabled => "disabled",
            Stage::Deregistered => "deregistered",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "deprecated" => Some(Stage::Deprecated),
            "disabled" => Some(Stage::Disabled),
            "deregistered" => Some(Stage::Deregistered),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    InUse,
    /// A channel points at it, or did within the policy's window.
    Channel,
    KeepTag,
    /// A retirement tag that does not parse: kept until a person fixes it.
    MalformedTag,
    LastKnownGood,
    Newest,
    TooYoung,
    Lineage,
    /// The scope's in-use evidence is incomplete (a parameter could not be read): nothing in it
    /// is retired.
    Incomplete,
    Unmatched,
    State,
    /// Why a retired image is retired.
    Eligible,
    /// Why a retiring image waits.
    Grace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Stable across re-planning: `account/region/kind/target`.
    pub id: String,
    pub account: String,
    pub region: String,
    pub kind: ActionKind,
    pub image_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// An action that must have succeeded first (a snapshot waits for its image's deregistration).
    pub depends_on: Option<String>,
    /// For stage actions: the grace period, from execution, until the next stage may run.
    pub next_stage_after_secs: Option<u64>,
    /// For Deregister with a snapshot grace period: the snapshots to tag as retiring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_snapshots: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Deprecate,
    Disable,
    Deregister,
    DeleteSnapshot,
    /// Undo a started retirement of an image that is kept now.
    Restore,
}

impl ActionKind {
    /// The name used in action ids and output (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Deprecate => "deprecate",
            ActionKind::Disable => "disable",
            ActionKind::Deregister => "deregister",
            ActionKind::DeleteSnapshot => "delete-snapshot",
            ActionKind::Restore => "restore",
        }
    }

    pub fn is_destructive(self) -> bool {
        !matches!(self, ActionKind::Restore)
    }
}

impl Plan {
    pub fn count(&self, kind: ActionKind) -> usize {
        self.actions.iter().filter(|a| a.kind == kind).count()
    }

    /// What `max_deletions` counts: images disabled or deregistered, snapshots deleted.
    pub fn deletions(&self) -> usize {
        [ActionKind::Disable, ActionKind::Deregister, ActionKind::DeleteSnapshot].map(|k| self.count(k)).iter().sum()
    }
}

fn action_id(account: &str, region: &str, kind: ActionKind, target: &str) -> String {
    format!("{account}/{region}/{}/{target}", kind.as_str())
}

/// Plans the retirement of every scope of `inv`.
pub fn plan(inv: &Inventory, families: &FamilyRules, policy: &RetirePolicy, now: DateTime<Utc>) -> Plan {
    let mut images = Vec::new();
    let mut actions = Vec::new();
    let mut scopes = Vec::new();
    for scope in &inv.scopes {
        let usage = usage::analyze(scope);
        plan_scope(scope, &usage, families, policy, now, &mut images, &mut actions);
        scopes.push(ScopeSummary {
            account: scope.account.clone(),
            region: scope.region.clone(),
            images: scope.images.len(),
            live_instances: scope.instances.iter().filter(|i| i.is_live()).count(),
        });
    }
    Plan { schema: SCHEMA.into(), created_at: now, as_of: now, policy: policy.clone(), scopes, images, actions }
}

fn stage_of(tags: &BTreeMap<String, String>) -> Option<Stage> {
    tags.get(STAGE_TAG).and_then(|s| Stage::parse(s))
}

/// The stage an image is in, from what EC2 reports: `disabled` from its state, deprecated from
/// a deprecation time that has passed; the stage tag only where EC2 reports nothing (an
/// endpoint without native deprecation). And whether amictl's `retire-after` tag times that
/// stage: only when the stage tag names the same stage. An image tagged `disabled` that EC2
/// shows available is not disabled, so it never goes straight to deregistration.
pub fn stage_now(image: &Image, now: DateTime<Utc>) -> (Option<Stage>, bool) {
    let tagged = stage_of(&image.tags);
    let deprecated = image.deprecation_time.is_some_and(|t| t <= now) || tagged.is_some();
    let stage = if image.state == "disabled" {
        Some(Stage::Disabled)
    } else if deprecated {
        Some(Stage::Deprecated)
    } else {
        None
    };
    let timed = stage.is_some() && tagged.map(|t| t.min(Stage::Disabled)) == stage;
    (stage, timed)
}

fn after_of(tags: &BTreeMap<String, String>) -> Option<DateTime<Utc>> {
    tags.get(AFTER_TAG).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

fn secs(d: std::time::Duration) -> u64 {
    d.as_secs()
}

#[allow(clippy::too_many_arguments)]
fn plan_scope(
    scope: &RegionInventory,
    usage: &Usage,
    families: &FamilyRules,
    policy: &RetirePolicy,
    now: DateTime<Utc>,
    out_images: &mut Vec<ImageVerdict>,
    out_actions: &mut Vec<Action>,
) {
    let (account, region) = (scope.account.as_str(), scope.region.as_str());
    let candidates: Vec<&Image> = scope.images.iter().filter(|i| i.state != "deregistered").collect();
    let min_age = chrono::Duration::from_std(policy.min_age).unwrap_or(chrono::Duration::MAX);

    let window = chrono::Duration::from_std(policy.channel_window).unwrap_or(chrono::Duration::MAX);
    let channel_kept =
        crate::catalog::channel_protected(&scope.channels, now.checked_sub_signed(window).unwrap_or(now));
    // Everything per image is indexed by its position in `candidates`.
    let index: HashMap<&str, usize> = candidates.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    let family_of: Vec<Option<String>> = candidates.iter().map(|i| families.family_of(i).map(|m| m.family)).collect();
    let mut reasons: Vec<Vec<Reason>> = Vec::with_capacity(candidates.len());
    // Family → members; an image in no family is a family of its own (key None) when the policy says so.
    let mut by_family: HashMap<Option<&str>, Vec<usize>> = HashMap::default();
    let mut own_families: Vec<usize> = Vec::new();
    for (n, image) in candidates.iter().enumerate() {
        let mut r = Vec::new();
        let refs: Vec<&str> =
            usage.refs(&image.id).iter().filter(|r| r.is_use()).map(|r| r.evidence.as_str()).collect();
        if !refs.is_empty() {
            r.push(Reason { code: ReasonCode::InUse, detail: refs.join("; ") });
        }
        for key in policy.all_keep_tags() {
            if let Some(v) = image.tags.get(key) {
                r.push(Reason { code: ReasonCode::KeepTag, detail: format!("tag {key}={v}") });
            }
        }
        if !scope.gaps.is_empty() {
            let detail = format!("the in-use evidence of {account}/{region} is incomplete: {}", scope.gaps.join("; "));
            r.push(Reason { code: ReasonCode::Incomplete, detail });
        }
        if let Some(why) = crate::policy::malformed_retire_tags(&image.tags) {
            r.push(Reason { code: ReasonCode::MalformedTag, detail: format!("{why}: fix or remove it") });
        }
        if let Some(why) = channel_kept.get(&image.id).filter(|_| refs.iter().all(|r| !r.starts_with("channel "))) {
            r.push(Reason { code: ReasonCode::Channel, detail: why.clone() });
        }
        if image.tags.contains_key(LAST_KNOWN_GOOD_TAG) {
            r.push(Reason { code: ReasonCode::LastKnownGood, detail: "last-known-good rollback target".into() });
        }
        match image.creation_date {
            Some(c) if now - c < min_age => r.push(Reason {
                code: ReasonCode::TooYoung,
                detail: format!(
                    "{} days old, younger than {} days",
                    (now - c).num_days(),
                    policy.min_age.as_secs() / 86_400
                ),
            }),
            None => r.push(Reason { code: ReasonCode::TooYoung, detail: "creation date unknown".into() }),
            _ => {}
        }
        if !matches!(image.state.as_str(), "available" | "disabled") {
            r.push(Reason { code: ReasonCode::State, detail: format!("state {}", image.state) });
        }
        match (&family_of[n], policy.unmatched) {
            (Some(f), _) => by_family.entry(Some(f.as_str())).or_default().push(n),
            (None, crate::policy::Unmatched::Keep) => r.push(Reason {
                code: ReasonCode::Unmatched,
                detail: "matches no family (policy: unmatched = keep)".into(),
            }),
            (None, crate::policy::Unmatched::OwnFamily) => own_families.push(n),
        }
        reasons.push(r);
    }

    // Newest N per family, among the images not already being retired.
    let rankable = |n: &usize| stage_of(&candidates[*n].tags).is_none() && candidates[*n].state == "available";
    let mut groups: Vec<(String, Vec<usize>)> = by_family
        .into_iter()
        .map(|(f, members)| (format!("family {}", f.unwrap_or_default()), members))
        .chain(own_families.into_iter().map(|n| ("its own family (matches no family rule)".to_string(), vec![n])))
        .collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    for (label, members) in &mut groups {
        members.retain(rankable);
        let by_newest = |a: &usize, b: &usize| {
            let (a, b) = (candidates[*a], candidates[*b]);
            b.creation_date.cmp(&a.creation_date).then_with(|| b.name.cmp(&a.name)).then_with(|| b.id.cmp(&a.id))
        };
        // Only the first `keep` need ordering.
        if policy.keep > 0 && policy.keep < members.len() {
            members.select_nth_unstable_by(policy.keep - 1, by_newest);
            members.truncate(policy.keep);
        }
        members.sort_by(by_newest);
        for (rank, n) in members.iter().take(policy.keep).enumerate() {
            reasons[*n].push(Reason {
                code: ReasonCode::Newest,
                detail: format!("newest {} of {} in {label}", rank + 1, policy.keep),
            });
        }
    }

    // Lineage: the image a kept image was built from is kept too, transitively.
    let mut work: Vec<usize> = (0..candidates.len()).filter(|n| !reasons[*n].is_empty()).collect();
    let mut seen: HashSet<usize> = work.iter().copied().collect();
    while let Some(kept) = work.pop() {
        let Some(parent) = candidates[kept].tags.get(&policy.lineage_tag).and_then(|p| index.get(p.as_str())) else {
            continue;
        };
        if *parent == kept {
            continue;
        }
        let detail = format!("parent of kept {} ({})", candidates[kept].id, candidates[kept].name);
        reasons[*parent].push(Reason { code: ReasonCode::Lineage, detail });
        if seen.insert(*parent) {
            work.push(*parent);
        }
    }

    // Snapshots that stay mapped by an image this run does not deregister.
    let mut deregistering: HashSet<&str> = HashSet::default();
    let owned_snapshots: HashMap<&str, &crate::inventory::Snapshot> =
        scope.snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
    let has_keep_tag = |tags: &BTreeMap<String, String>| policy.all_keep_tags().any(|k| tags.contains_key(k));

    let eligible = format!(
        "unused, at least {} days old, not among the newest {} of its family",
        policy.min_age.as_secs() / 86_400,
        policy.keep
    );
    let mut image_actions: Vec<(usize, Action)> = Vec::new();
    for (n, image) in candidates.iter().enumerate() {
        let id = image.id.as_str();
        let mut why = std::mem::take(&mut reasons[n]);
        let (stage, timed) = stage_now(image, now);
        let mk = |kind, snapshot: Option<&str>, depends: Option<String>, next: Option<u64>, detail: String| Action {
            id: action_id(account, region, kind, snapshot.unwrap_or(id)),
            account: account.into(),
            region: region.into(),
            kind,
            image_id: Some(id.to_string()),
            snapshot_id: snapshot.map(str::to_string),
            depends_on: depends,
            next_stage_after_secs: next,
            stage_snapshots: vec![],
            detail,
        };
        let verdict = if !why.is_empty() {
            // Only what amictl started (its stage tag) is restored: a deprecation by someone
            // else stays theirs.
            if stage_of(&image.tags).is_some() {
                image_actions.push((
                    n,
                    mk(ActionKind::Restore, None, None, None, format!("restore {id} ({}): kept now", image.name)),
                ));
            }
            Verdict::Keep
        } else {
            why.push(Reason { code: ReasonCode::Eligible, detail: eligible.clone() });
            let mut due = |s: Stage| match after_of(&image.tags) {
                Some(t) if t > now => {
                    why.push(Reason {
                        code: ReasonCode::Grace,
                        detail: format!("{} until {}", s.as_str(), crate::time::rfc3339(t)),
                    });
                    false
                }
                _ => true,
            };
            let step = if policy.immediate {
                Some(ActionKind::Deregister)
            } else {
                match (stage, timed) {
                    (None, _) => Some(ActionKind::Deprecate),
                    // A stage EC2 shows but amictl did not time: record it, the grace starts now.
                    (Some(Stage::Deprecated), false) => Some(ActionKind::Deprecate),
                    (Some(_), false) => Some(ActionKind::Disable),
                    (Some(Stage::Deprecated), true) => due(Stage::Deprecated).then_some(ActionKind::Disable),
                    (Some(_), true) => due(Stage::Disabled).then_some(ActionKind::Deregister),
                }
            };
            match step {
                None => Verdict::Wait,
                Some(kind) => {
                    let next = match kind {
                        ActionKind::Deprecate => Some(secs(policy.grace.deprecated)),
                        ActionKind::Disable => Some(secs(policy.grace.disabled)),
                        _ => None,
                    };
                    if kind == ActionKind::Deregister {
                        deregistering.insert(id);
                    }
                    image_actions
                        .push((n, mk(kind, None, None, next, format!("{} {id} ({})", kind.as_str(), image.name))));
                    Verdict::Retire
                }
            }
        };
        out_images.push(ImageVerdict {
            account: account.into(),
            region: region.into(),
            image_id: id.into(),
            name: image.name.clone(),
            family: family_of[n].clone(),
            creation_date: image.creation_date,
            age_days: image.creation_date.map(|c| (now - c).num_days()),
            state: image.state.clone(),
            stage,
            verdict,
            reasons: why,
        });
    }

    let still_mapped: HashSet<&str> = candidates
        .iter()
        .filter(|i| !deregistering.contains(i.id.as_str()))
        .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
        .collect();
    let snapshot_grace = !policy.immediate && !policy.grace.deregistered.is_zero();
    let mut planned_snapshots: HashSet<&str> = HashSet::default();
    for (n, mut a) in image_actions {
        let is_deregister = a.kind == ActionKind::Deregister;
        let image_id = candidates[n].id.as_str();
        let owned: Vec<&str> = candidates[n]
            .snapshot_ids
            .iter()
            .map(String::as_str)
            .filter(|s| {
                owned_snapshots.get(s).is_some_and(|snap| !has_keep_tag(&snap.tags)) && !still_mapped.contains(s)
            })
            .collect();
        if is_deregister && snapshot_grace {
            a.stage_snapshots = owned.iter().map(|s| s.to_string()).collect();
            a.next_stage_after_secs = Some(secs(policy.grace.deregistered));
        }
        let deregister_id = is_deregister.then(|| a.id.clone());
        out_actions.push(a);
        if let Some(deregister_id) = deregister_id.filter(|_| !snapshot_grace) {
            for s in owned {
                if planned_snapshots.insert(s) {
                    out_actions.push(Action {
                        id: action_id(account, region, ActionKind::DeleteSnapshot, s),
                        account: account.into(),
                        region: region.into(),
                        kind: ActionKind::DeleteSnapshot,
                        image_id: Some(image_id.to_string()),
                        snapshot_id: Some(s.into()),
                        depends_on: Some(deregister_id.clone()),
                        next_stage_after_secs: None,
                        stage_snapshots: vec![],
                        detail: format!("delete snapshot {s} of deregistered {image_id}"),
                    });
                }
            }
        }
    }

    // Snapshots whose image amictl deregistered earlier, once their grace period passed.
    let live_mapped: HashSet<&str> =
        candidates.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
    for s in &scope.snapshots {
        if stage_of(&s.tags) != Some(Stage::Deregistered)
            || live_mapped.contains(s.id.as_str())
            || has_keep_tag(&s.tags)
            || !retired_with_evidence(scope, s)
        {
            continue;
        }
        if after_of(&s.tags).is_some_and(|t| t > now) || !planned_snapshots.insert(s.id.as_str()) {
            continue;
        }
        let image = s.tags.get(crate::policy::RETIRED_IMAGE_TAG).cloned();
        out_actions.push(Action {
            id: action_id(account, region, ActionKind::DeleteSnapshot, &s.id),
            account: account.into(),
            region: region.into(),
            kind: ActionKind::DeleteSnapshot,
            image_id: image.clone(),
            snapshot_id: Some(s.id.clone()),
            depends_on: None,
            next_stage_after_secs: None,
            stage_snapshots: vec![],
            detail: format!("delete snapshot {} of retired {}", s.id, image.as_deref().unwrap_or("image")),
        });
    }

    if policy.orphans {
        for o in usage::orphaned_snapshots(scope) {
            let Some(snap) = owned_snapshots.get(o.snapshot_id.as_str()) else { continue };
            if stage_of(&snap.tags).is_some() || has_keep_tag(&snap.tags) || !planned_snapshots.insert(snap.id.as_str())
            {
                continue;
            }
            out_actions.push(Action {
                id: action_id(account, region, ActionKind::DeleteSnapshot, &o.snapshot_id),
                account: account.into(),
                region: region.into(),
                kind: ActionKind::DeleteSnapshot,
                image_id: Some(o.image_id.clone()),
                snapshot_id: Some(o.snapshot_id.clone()),
                depends_on: None,
                next_stage_after_secs: None,
                stage_snapshots: vec![],
                detail: format!(
                    "delete orphaned snapshot {} ({:?} of {}, which is gone)",
                    o.snapshot_id, o.origin, o.image_id
                ),
            });
        }
    }
}

/// Whether a snapshot tagged as retired really belonged to the image its tag names, and that
/// image is gone: the journal recorded it in the image's mapping at deregistration, or EC2's
/// own description (CreateImage/CopyImage) names that image. Tags can be written by anyone.
fn retired_with_evidence(scope: &RegionInventory, s: &crate::inventory::Snapshot) -> bool {
    let Some(image) = s.tags.get(crate::policy::RETIRED_IMAGE_TAG) else { return false };
    let gone = !scope.images.iter().any(|i| &i.id == image && i.state != "deregistered");
    let journaled = scope.retired_snapshots.get(&s.id) == Some(image);
    let described = usage::ami_snapshot_origin(&s.description).is_some_and(|(_, named)| &named == image);
    gone && (journaled || described)
}

/// The saved plan's actions that the fresh plan no longer contains, each with why.
pub fn stale_actions(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let fresh_ids: HashSet<&str> = fresh.actions.iter().map(|a| a.id.as_str()).collect();
    saved
        .actions
        .iter()
        .filter(|a| !fresh_ids.contains(a.id.as_str()))
        .map(|a| format!("{}: {}", a.detail, why_not_now(a, fresh)))
        .collect()
}

/// What a fresh plan says about the image of an action it no longer takes.
fn why_not_now(a: &Action, fresh: &Plan) -> String {
    let now = a
        .image_id
        .as_deref()
        .and_then(|i| fresh.images.iter().find(|v| v.image_id == i && v.account == a.account && v.region == a.region));
    let details = |v: &ImageVerdict| v.reasons.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>().join("; ");
    match now {
        Some(v) if v.verdict == Verdict::Keep => format!("now kept: {}", details(v)),
        Some(v) if v.verdict == Verdict::Wait => format!("now waiting: {}", details(v)),
        Some(v) => format!("now {}", details(v)),
        None => "its target is gone or changed".into(),
    }
}

/// What an apply executes: the actions of `saved` that `fresh` (a plan made now, after the
/// confirmation, under the stricter policy) also takes, each as `fresh` has it (targets,
/// snapshots and stage times from live data, never from the file); the rest, with why.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    pub actions: Vec<Action>,
    /// Saved actions that are not executed, with the reason.
    pub differing: Vec<(Action, String)>,
}

/// Reconciles a saved (or shown) plan with a fresh one. `done` tells the action ids the
/// journal has as done in this run (a resume): they pass through, and a snapshot deletion
/// whose image's deregistration is among them continues (the image is gone, so a fresh plan
/// no longer names its snapshots; the executor re-checks that nothing maps them).
/// `explain` says why a saved action is not executed (see [`explain_difference`]).
pub fn reconcile(
    saved: &Plan,
    fresh: &Plan,
    done: &dyn Fn(&str) -> bool,
    explain: &dyn Fn(&Action) -> String,
) -> Reconciled {
    let by_id: HashMap<&str, &Action> = fresh.actions.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = Reconciled::default();
    for a in &saved.actions {
        let continues = a.kind == ActionKind::DeleteSnapshot && a.depends_on.as_deref().is_some_and(done);
        match by_id.get(a.id.as_str()) {
            _ if done(&a.id) => out.actions.push(a.clone()),
            Some(f) => out.actions.push((*f).clone()),
            None if continues => out.actions.push(a.clone()),
            None => out.differing.push((a.clone(), explain(a))),
        }
    }
    out
}

/// Why a fresh plan (`now`) does not take action `a` of `saved`: already applied by an earlier
/// run, only the clock moved (`then`, a fresh plan judged at `saved`'s time, takes it), an
/// edited target that does not exist as such, or what changed in the estate.
pub fn explain_difference(
    a: &Action,
    saved: &Plan,
    now: &Plan,
    then: &Plan,
    applied_in: &dyn Fn(&str) -> Option<i64>,
) -> String {
    if let Some(run) = applied_in(&a.id) {
        return format!("already applied (run {run})");
    }
    if then.actions.iter().any(|t| t.id == a.id) {
        return format!(
            "only the clock differs: the plan was judged as of {}, and as of now it is {}",
            crate::time::rfc3339(saved.as_of),
            why_not_now(a, now).trim_start_matches("now ")
        );
    }
    format!("the estate changed, or the plan file was edited: {}", why_not_now(a, now))
}

/// Why a plan must not be applied as it is. Empty: go ahead.
pub fn guard_violations(
    plan: &Plan,
    inv: &Inventory,
    last_live_instances: &std::collections::HashMap<(String, String), usize>,
) -> Vec<String> {
    let mut out = Vec::new();
    for what in inv.incompleteness() {
        out.push(format!("the inventory is incomplete: {what}"));
    }
    for s in &plan.scopes {
        if let Some(&before) = last_live_instances.get(&(s.account.clone(), s.region.clone())) {
            if s.live_instances == 0 && before >= LAST_SEEN_MANY {
                out.push(format!(
                    "{}/{} shows 0 instances where the last run saw {before}: the listing looks wrong",
                    s.account, s.region
                ));
            }
        }
    }
    if let Some(cap) = plan.policy.max_deletions {
        let n = plan.deletions();
        if n > cap {
            out.push(format!(
                "{n} destructive steps (images disabled or deregistered, snapshots deleted), more than max_deletions = {cap}"
            ));
        }
    }
    out
}

/// "Many" instances for the zero-instances guard.
pub const LAST_SEEN_MANY: usize = 5;

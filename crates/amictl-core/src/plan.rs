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
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::family::FamilyRules;
use crate::inventory::{Image, Inventory, RegionInventory, Snapshot};
use crate::policy::{RetirePolicy, AFTER_TAG, LAST_KNOWN_GOOD_TAG, STAGE_TAG, UNSHARED_TAG};
use crate::text::Text;
use crate::usage::{self, RefKind, Usage};

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
    pub account: Text,
    pub region: Text,
    pub image_id: String,
    pub name: String,
    pub family: Option<Text>,
    #[serde(with = "crate::time::opt_secs")]
    pub creation_date: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    pub state: Text,
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
    /// Shared: most retired images give the same one.
    pub detail: Text,
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
    pub account: Text,
    pub region: Text,
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
    /// For Unshare: the accounts whose launch permission is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Remove the launch permissions of accounts that do not use the image (the step before
    /// deprecation, with `--unshare-unused`).
    Unshare,
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
            ActionKind::Unshare => "unshare",
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
    // Sized up front: growing vectors of a million verdicts copies them into fresh pages.
    let total: usize = inv.scopes.iter().map(|s| s.images.len()).sum();
    let mut images = Vec::with_capacity(total);
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

/// One scope's planning: the rules that keep an image, the stages that keep it (newest N,
/// lineage), then the step each retired image takes and what happens to its snapshots.
/// Images are judged in parallel; only the ranking within families, lineage and the snapshot
/// bookkeeping look across images.
fn plan_scope(
    scope: &RegionInventory,
    usage: &Usage,
    families: &FamilyRules,
    policy: &RetirePolicy,
    now: DateTime<Utc>,
    out_images: &mut Vec<ImageVerdict>,
    out_actions: &mut Vec<Action>,
) {
    let candidates: Vec<&Image> = scope.images.iter().filter(|i| i.state != "deregistered").collect();
    let family_of: Vec<Option<&str>> = candidates.par_iter().map(|i| families.family_name(i)).collect();
    // Everything per image is indexed by its position in `candidates`.
    let facts = ScopeFacts::new(scope, usage, policy, now);
    let mut reasons: Vec<Vec<Reason>> = candidates
        .par_iter()
        .zip(family_of.par_iter())
        .map(|(image, family)| keep_rules(&facts, image, *family))
        .collect();
    keep_newest(&candidates, &family_of, policy, &mut reasons);
    keep_lineage(&candidates, &policy.lineage_tag, &mut reasons);

    let names = ScopeNames::new(scope, &candidates, &family_of);
    let decisions: Vec<(Verdict, Vec<Reason>, Option<ActionKind>)> = candidates
        .par_iter()
        .zip(reasons.into_par_iter())
        .map(|(image, why)| {
            decide(image, why, !facts.takeable_shares(&image.id).is_empty(), &facts.eligible, policy, now)
        })
        .collect();
    let chosen: Vec<(usize, ActionKind)> = decisions.iter().enumerate().filter_map(|(n, d)| Some((n, d.2?))).collect();
    out_images.par_extend(candidates.par_iter().zip(family_of.par_iter()).zip(decisions.into_par_iter()).map(
        |((image, family), (verdict, reasons, _))| ImageVerdict {
            account: names.account.clone(),
            region: names.region.clone(),
            image_id: image.id.clone(),
            name: image.name.clone(),
            family: family.map(|f| names.families[f].clone()),
            creation_date: image.creation_date,
            age_days: image.creation_date.map(|c| (now - c).num_days()),
            state: names.states[image.state.as_str()].clone(),
            stage: stage_now(image, now).0,
            verdict,
            reasons,
        },
    ));
    let snapshots: HashMap<&str, &Snapshot> = scope.snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut planned_snapshots: HashSet<&str> = HashSet::default();
    image_and_snapshot_actions(&snapshots, &names, &facts, &candidates, &chosen, &mut planned_snapshots, out_actions);
    staged_snapshot_actions(scope, &names, &candidates, policy, now, &mut planned_snapshots, out_actions);
    if policy.orphans {
        orphan_snapshot_actions(scope, &snapshots, &names, policy, &mut planned_snapshots, out_actions);
    }
}

/// The names a scope's verdicts and actions share: made once, cloned as pointers.
struct ScopeNames<'a> {
    account: Text,
    region: Text,
    families: HashMap<&'a str, Text>,
    states: HashMap<&'a str, Text>,
}

impl<'a> ScopeNames<'a> {
    fn new(scope: &RegionInventory, candidates: &[&'a Image], family_of: &[Option<&'a str>]) -> Self {
        let mut families: HashMap<&str, Text> = HashMap::default();
        for f in family_of.iter().flatten() {
            families.entry(f).or_insert_with(|| Text::from(*f));
        }
        let mut states: HashMap<&str, Text> = HashMap::default();
        for i in candidates {
            states.entry(i.state.as_str()).or_insert_with(|| Text::from(i.state.as_str()));
        }
        ScopeNames { account: Text::from(&scope.account), region: Text::from(&scope.region), families, states }
    }
}

/// Where actions are planned.
#[derive(Clone, Copy)]
struct ScopeRef<'a> {
    account: &'a Text,
    region: &'a Text,
}

impl ScopeRef<'_> {
    fn action(self, kind: ActionKind, image: Option<&str>, snapshot: Option<&str>, detail: String) -> Action {
        let target = snapshot.or(image).unwrap_or_default();
        Action {
            id: action_id(self.account, self.region, kind, target),
            account: self.account.clone(),
            region: self.region.clone(),
            kind,
            image_id: image.map(str::to_string),
            snapshot_id: snapshot.map(str::to_string),
            depends_on: None,
            next_stage_after_secs: None,
            stage_snapshots: vec![],
            accounts: vec![],
            detail,
        }
    }
}

/// What every image of a scope is judged against, computed once per scope.
struct ScopeFacts<'a> {
    usage: &'a Usage,
    policy: &'a RetirePolicy,
    now: DateTime<Utc>,
    /// Images a channel points at, or did within the policy's window, with why.
    channel_kept: BTreeMap<String, String>,
    incomplete: Option<Reason>,
    /// Why a retired image is retired: the same words for every one of them.
    eligible: Text,
}

impl<'a> ScopeFacts<'a> {
    /// The accounts `--unshare-unused` may take the image back from (none without it).
    fn takeable_shares(&self, image: &str) -> &'a [String] {
        if !self.policy.unshare_unused {
            return &[];
        }
        self.usage.unused_shares.get(image).map(Vec::as_slice).unwrap_or(&[])
    }

    fn new(scope: &RegionInventory, usage: &'a Usage, policy: &'a RetirePolicy, now: DateTime<Utc>) -> Self {
        let window = chrono::Duration::from_std(policy.channel_window).unwrap_or(chrono::Duration::MAX);
        let since = now.checked_sub_signed(window).unwrap_or(now);
        let channel_kept = crate::catalog::channel_protected(&scope.channels, since);
        let eligible = Text::from(format!(
            "unused, at least {} days old, not among the newest {} of its family",
            policy.min_age.as_secs() / 86_400,
            policy.keep
        ));
        ScopeFacts { usage, policy, now, channel_kept, incomplete: rule_incomplete(scope), eligible }
    }
}

/// Every rule that keeps one image on its own, in the order they are reported.
fn keep_rules(facts: &ScopeFacts, image: &Image, family: Option<&str>) -> Vec<Reason> {
    let takeable = facts.takeable_shares(&image.id);
    let refs: Vec<&str> = facts
        .usage
        .refs(&image.id)
        .iter()
        .filter(|r| r.is_use() && !(r.kind == RefKind::SharedAccount && takeable.contains(&r.id)))
        .map(|r| r.evidence.as_str())
        .collect();
    let (policy, now) = (facts.policy, facts.now);
    let mut r: Vec<Reason> = Vec::new();
    r.extend(rule_in_use(&refs));
    r.extend(rule_keep_tags(policy, image));
    r.extend(facts.incomplete.clone());
    r.extend(rule_malformed_tags(image));
    r.extend(rule_channel(&facts.channel_kept, image, &refs));
    r.extend(rule_last_known_good(image));
    r.extend(rule_too_young(policy, now, image));
    r.extend(rule_state(image));
    r.extend(rule_unmatched(policy, family));
    r
}

fn rule_in_use(refs: &[&str]) -> Option<Reason> {
    (!refs.is_empty()).then(|| Reason { code: ReasonCode::InUse, detail: refs.join("; ").into() })
}

fn rule_keep_tags(policy: &RetirePolicy, image: &Image) -> Vec<Reason> {
    policy
        .all_keep_tags()
        .filter_map(|key| {
            image.tags.get(key).map(|v| Reason { code: ReasonCode::KeepTag, detail: format!("tag {key}={v}").into() })
        })
        .collect()
}

fn rule_incomplete(scope: &RegionInventory) -> Option<Reason> {
    (!scope.gaps.is_empty()).then(|| Reason {
        code: ReasonCode::Incomplete,
        detail: format!("the in-use evidence of {} is incomplete: {}", scope.scope(), scope.gaps.join("; ")).into(),
    })
}

fn rule_malformed_tags(image: &Image) -> Option<Reason> {
    crate::policy::malformed_retire_tags(&image.tags)
        .map(|why| Reason { code: ReasonCode::MalformedTag, detail: format!("{why}: fix or remove it").into() })
}

/// A channel points at it, or did within the policy's window (a rollback target); said once,
/// where a channel reference is not already the evidence of use.
fn rule_channel(channel_kept: &BTreeMap<String, String>, image: &Image, refs: &[&str]) -> Option<Reason> {
    if refs.iter().any(|r| r.starts_with("channel ")) {
        return None;
    }
    channel_kept.get(&image.id).map(|why| Reason { code: ReasonCode::Channel, detail: why.clone().into() })
}

fn rule_last_known_good(image: &Image) -> Option<Reason> {
    image
        .tags
        .contains_key(LAST_KNOWN_GOOD_TAG)
        .then(|| Reason { code: ReasonCode::LastKnownGood, detail: "last-known-good rollback target".into() })
}

fn rule_too_young(policy: &RetirePolicy, now: DateTime<Utc>, image: &Image) -> Option<Reason> {
    let min_age = chrono::Duration::from_std(policy.min_age).unwrap_or(chrono::Duration::MAX);
    match image.creation_date {
        Some(c) if now - c < min_age => Some(Reason {
            code: ReasonCode::TooYoung,
            detail: format!(
                "{} days old, younger than {} days",
                (now - c).num_days(),
                policy.min_age.as_secs() / 86_400
            )
            .into(),
        }),
        None => Some(Reason { code: ReasonCode::TooYoung, detail: "creation date unknown".into() }),
        _ => None,
    }
}

fn rule_state(image: &Image) -> Option<Reason> {
    (!matches!(image.state.as_str(), "available" | "disabled"))
        .then(|| Reason { code: ReasonCode::State, detail: format!("state {}", image.state).into() })
}

fn rule_unmatched(policy: &RetirePolicy, family: Option<&str>) -> Option<Reason> {
    (family.is_none() && policy.unmatched == crate::policy::Unmatched::Keep)
        .then(|| Reason { code: ReasonCode::Unmatched, detail: "matches no family (policy: unmatched = keep)".into() })
}

/// The newest `keep` of each family (an image in no family is a family of its own unless the
/// policy keeps those), among the images not already being retired.
fn keep_newest(candidates: &[&Image], family_of: &[Option<&str>], policy: &RetirePolicy, reasons: &mut [Vec<Reason>]) {
    let mut by_family: HashMap<&str, Vec<usize>> = HashMap::default();
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (n, family) in family_of.iter().enumerate() {
        match (family, policy.unmatched) {
            (Some(f), _) => by_family.entry(f).or_default().push(n),
            (None, crate::policy::Unmatched::OwnFamily) => {
                groups.push(("its own family (matches no family rule)".to_string(), vec![n]))
            }
            (None, crate::policy::Unmatched::Keep) => {}
        }
    }
    groups.extend(by_family.into_iter().map(|(f, members)| (format!("family {f}"), members)));
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let rankable = |n: &usize| stage_of(&candidates[*n].tags).is_none() && candidates[*n].state == "available";
    let by_newest = |a: &usize, b: &usize| {
        let (a, b) = (candidates[*a], candidates[*b]);
        b.creation_date.cmp(&a.creation_date).then_with(|| b.name.cmp(&a.name)).then_with(|| b.id.cmp(&a.id))
    };
    for (label, members) in &mut groups {
        members.retain(rankable);
        // Only the first `keep` need ordering.
        if policy.keep > 0 && policy.keep < members.len() {
            members.select_nth_unstable_by(policy.keep - 1, by_newest);
            members.truncate(policy.keep);
        }
        members.sort_by(by_newest);
        for (rank, n) in members.iter().take(policy.keep).enumerate() {
            let detail = format!("newest {} of {} in {label}", rank + 1, policy.keep);
            reasons[*n].push(Reason { code: ReasonCode::Newest, detail: detail.into() });
        }
    }
}

/// The image a kept image was built from (its lineage tag) is kept too, transitively.
fn keep_lineage(candidates: &[&Image], lineage_tag: &str, reasons: &mut [Vec<Reason>]) {
    // Only images some image names as its parent can be kept this way.
    let parents: HashSet<&str> =
        candidates.iter().filter_map(|c| c.tags.get(lineage_tag)).map(String::as_str).collect();
    if parents.is_empty() {
        return;
    }
    let index: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| parents.contains(c.id.as_str()))
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut work: Vec<usize> = (0..candidates.len()).filter(|n| !reasons[*n].is_empty()).collect();
    let mut seen: HashSet<usize> = work.iter().copied().collect();
    while let Some(kept) = work.pop() {
        let Some(&parent) = candidates[kept].tags.get(lineage_tag).and_then(|p| index.get(p.as_str())) else {
            continue;
        };
        if parent == kept {
            continue;
        }
        let detail = format!("parent of kept {} ({})", candidates[kept].id, candidates[kept].name);
        reasons[parent].push(Reason { code: ReasonCode::Lineage, detail: detail.into() });
        if seen.insert(parent) {
            work.push(parent);
        }
    }
}

/// The verdict on one image, its reasons, and the kind of action it takes: a kept image that
/// amictl started retiring is restored; an eligible one is unshared first (`unshare`: accounts
/// it may be taken back from), else takes its next stage, or waits.
fn decide(
    image: &Image,
    mut why: Vec<Reason>,
    unshare: bool,
    eligible: &Text,
    policy: &RetirePolicy,
    now: DateTime<Utc>,
) -> (Verdict, Vec<Reason>, Option<ActionKind>) {
    if !why.is_empty() {
        // Only what amictl started (its stage tag) is restored: a deprecation by someone else
        // stays theirs.
        let restore = stage_of(&image.tags).is_some().then_some(ActionKind::Restore);
        return (Verdict::Keep, why, restore);
    }
    why.reserve_exact(1);
    why.push(Reason { code: ReasonCode::Eligible, detail: eligible.clone() });
    if unshare {
        // Taken back first; retirement goes on after the grace period, in a later run.
        return (Verdict::Retire, why, Some(ActionKind::Unshare));
    }
    match next_step(image, policy, now) {
        Err(wait) => {
            why.push(wait);
            (Verdict::Wait, why, None)
        }
        Ok(kind) => (Verdict::Retire, why, Some(kind)),
    }
}

/// The action `decide` chose for an image, with its words and grace period.
fn image_action(scope: ScopeRef, image: &Image, kind: ActionKind, unshare: &[String], policy: &RetirePolicy) -> Action {
    let (id, name) = (image.id.as_str(), &image.name);
    let detail = match kind {
        ActionKind::Restore => format!("restore {id} ({name}): kept now"),
        ActionKind::Unshare => format!("unshare {id} ({name}) from {} (unused there)", unshare.join(", ")),
        _ => format!("{} {id} ({name})", kind.as_str()),
    };
    let mut a = scope.action(kind, Some(id), None, detail);
    a.next_stage_after_secs = match kind {
        ActionKind::Unshare => Some(if policy.immediate { 0 } else { secs(policy.grace.deprecated) }),
        ActionKind::Deprecate => Some(secs(policy.grace.deprecated)),
        ActionKind::Disable => Some(secs(policy.grace.disabled)),
        _ => None,
    };
    if kind == ActionKind::Unshare {
        a.accounts = unshare.to_vec();
    }
    a
}

/// The stage an eligible image moves to now, or why it waits: deprecate → disable →
/// deregister, one stage per run as grace periods pass (all at once with `immediate`). A stage
/// EC2 shows but amictl did not time is recorded first, so its grace starts now.
fn next_step(image: &Image, policy: &RetirePolicy, now: DateTime<Utc>) -> Result<ActionKind, Reason> {
    if policy.immediate {
        return Ok(ActionKind::Deregister);
    }
    let due = |s: Stage, then: ActionKind| match after_of(&image.tags) {
        Some(t) if t > now => Err(Reason {
            code: ReasonCode::Grace,
            detail: format!("{} until {}", s.as_str(), crate::time::rfc3339(t)).into(),
        }),
        _ => Ok(then),
    };
    match stage_now(image, now) {
        // Taken back from the accounts it was shared with: they get the grace period to say so.
        (None, _) if image.tags.contains_key(UNSHARED_TAG) => match after_of(&image.tags) {
            Some(t) if t > now => Err(Reason {
                code: ReasonCode::Grace,
                detail: format!(
                    "unshared from {} until {}",
                    image.tags.get(UNSHARED_TAG).map(String::as_str).unwrap_or(""),
                    crate::time::rfc3339(t)
                )
                .into(),
            }),
            _ => Ok(ActionKind::Deprecate),
        },
        (None, _) | (Some(Stage::Deprecated), false) => Ok(ActionKind::Deprecate),
        (Some(_), false) => Ok(ActionKind::Disable),
        (Some(Stage::Deprecated), true) => due(Stage::Deprecated, ActionKind::Disable),
        (Some(_), true) => due(Stage::Disabled, ActionKind::Deregister),
    }
}

/// The image actions in plan order, each deregistration followed by the deletion of the
/// snapshots only its image maps (or, with a snapshot grace period, by tagging them).
/// `chosen`: the action kind `decide` chose for a candidate, by its index.
fn image_and_snapshot_actions<'a>(
    snapshots: &HashMap<&str, &Snapshot>,
    names: &ScopeNames,
    facts: &ScopeFacts,
    candidates: &[&'a Image],
    chosen: &[(usize, ActionKind)],
    planned_snapshots: &mut HashSet<&'a str>,
    out: &mut Vec<Action>,
) {
    let policy = facts.policy;
    let deregistering: HashSet<&str> = chosen
        .iter()
        .filter(|(_, kind)| *kind == ActionKind::Deregister)
        .map(|(n, _)| candidates[*n].id.as_str())
        .collect();
    // Snapshots that stay mapped by an image this run does not deregister.
    let still_mapped: HashSet<&str> = candidates
        .iter()
        .filter(|i| !deregistering.contains(i.id.as_str()))
        .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
        .collect();
    let snapshot_grace = !policy.immediate && !policy.grace.deregistered.is_zero();
    let at = ScopeRef { account: &names.account, region: &names.region };
    let deletable =
        |s: &&str| snapshots.get(s).is_some_and(|snap| !has_keep_tag(policy, &snap.tags)) && !still_mapped.contains(s);
    // One image's actions, in order; a snapshot deletion carries its snapshot id.
    let actions_of = |out: &mut Vec<(Option<&'a str>, Action)>, n: usize, kind: ActionKind| {
        let image = candidates[n];
        let mut a = image_action(at, image, kind, facts.takeable_shares(&image.id), policy);
        let own = image.snapshot_ids.iter().map(String::as_str).filter(deletable);
        if kind != ActionKind::Deregister {
            out.push((None, a));
        } else if snapshot_grace {
            a.stage_snapshots = own.map(str::to_string).collect();
            a.next_stage_after_secs = Some(secs(policy.grace.deregistered));
            out.push((None, a));
        } else {
            let deregister_id = a.id.clone();
            out.push((None, a));
            for s in own {
                let detail = format!("delete snapshot {s} of deregistered {}", image.id);
                let mut d = at.action(ActionKind::DeleteSnapshot, Some(&image.id), Some(s), detail);
                d.depends_on = Some(deregister_id.clone());
                out.push((Some(s), d));
            }
        }
    };
    // Made in parallel, a chunk of images at a time; which snapshot deletion comes first (a
    // snapshot two images map is deleted once) is decided in plan order.
    let chunks: Vec<Vec<(Option<&str>, Action)>> = chosen
        .par_chunks(4096)
        .map(|chunk| {
            let mut v = Vec::with_capacity(chunk.len() * 2);
            for (n, kind) in chunk {
                actions_of(&mut v, *n, *kind);
            }
            v
        })
        .collect();
    out.reserve(chunks.iter().map(Vec::len).sum());
    for (snapshot, a) in chunks.into_iter().flatten() {
        if snapshot.is_none_or(|s| planned_snapshots.insert(s)) {
            out.push(a);
        }
    }
}

fn has_keep_tag(policy: &RetirePolicy, tags: &BTreeMap<String, String>) -> bool {
    policy.all_keep_tags().any(|k| tags.contains_key(k))
}

/// Snapshots whose image amictl deregistered earlier, once their grace period passed, and
/// only with evidence that they were that image's.
fn staged_snapshot_actions<'a>(
    scope: &'a RegionInventory,
    names: &ScopeNames,
    candidates: &[&Image],
    policy: &RetirePolicy,
    now: DateTime<Utc>,
    planned_snapshots: &mut HashSet<&'a str>,
    out: &mut Vec<Action>,
) {
    let staged = scope.snapshots.iter().filter(|s| stage_of(&s.tags) == Some(Stage::Deregistered));
    let mut staged = staged.peekable();
    if staged.peek().is_none() {
        return;
    }
    let live_mapped: HashSet<&str> =
        candidates.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
    let at = ScopeRef { account: &names.account, region: &names.region };
    for s in staged {
        if live_mapped.contains(s.id.as_str()) || has_keep_tag(policy, &s.tags) || !retired_with_evidence(scope, s) {
            continue;
        }
        if after_of(&s.tags).is_some_and(|t| t > now) || !planned_snapshots.insert(s.id.as_str()) {
            continue;
        }
        let image = s.tags.get(crate::policy::RETIRED_IMAGE_TAG).map(String::as_str);
        let detail = format!("delete snapshot {} of retired {}", s.id, image.unwrap_or("image"));
        out.push(at.action(ActionKind::DeleteSnapshot, image, Some(&s.id), detail));
    }
}

/// With `--orphans`: snapshots EC2 made for an AMI that is gone and nothing maps.
fn orphan_snapshot_actions<'a>(
    scope: &RegionInventory,
    snapshots: &HashMap<&'a str, &'a Snapshot>,
    names: &ScopeNames,
    policy: &RetirePolicy,
    planned_snapshots: &mut HashSet<&'a str>,
    out: &mut Vec<Action>,
) {
    let at = ScopeRef { account: &names.account, region: &names.region };
    let orphans = usage::orphaned_snapshots(scope);
    if orphans.is_empty() {
        return;
    }
    for o in orphans {
        let Some(snap) = snapshots.get(o.snapshot_id.as_str()) else { continue };
        if stage_of(&snap.tags).is_some()
            || has_keep_tag(policy, &snap.tags)
            || !planned_snapshots.insert(snap.id.as_str())
        {
            continue;
        }
        let detail =
            format!("delete orphaned snapshot {} ({:?} of {}, which is gone)", o.snapshot_id, o.origin, o.image_id);
        out.push(at.action(ActionKind::DeleteSnapshot, Some(&o.image_id), Some(&o.snapshot_id), detail));
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

#[cfg(test)]
mod tests {
    //! One test per rule and stage of the planner; the whole planner is property-tested in
    //! `tests/plan_props.rs`.

    use super::*;
    use crate::fixtures::{image, now};
    use crate::policy::{Unmatched, AFTER_TAG};

    fn policy() -> RetirePolicy {
        RetirePolicy { keep: 1, min_age: std::time::Duration::from_secs(30 * 86_400), ..Default::default() }
    }

    #[test]
    fn in_use_joins_the_evidence() {
        assert_eq!(rule_in_use(&[]), None);
        assert_eq!(rule_in_use(&["a", "b"]).unwrap().detail, "a; b");
    }

    #[test]
    fn keep_tags_include_the_builtin_one() {
        let p = RetirePolicy { keep_tags: vec!["DoNotDelete".into()], ..policy() };
        let r = rule_keep_tags(&p, &image("ami-1", 99, &[("amictl:keep", ""), ("DoNotDelete", "yes")]));
        assert_eq!(r.len(), 2);
        assert!(rule_keep_tags(&p, &image("ami-1", 99, &[("Other", "x")])).is_empty());
    }

    #[test]
    fn an_incomplete_scope_keeps_everything_in_it() {
        let mut scope = RegionInventory { account: "1".into(), region: "r".into(), ..Default::default() };
        assert_eq!(rule_incomplete(&scope), None);
        scope.gaps.push("parameter /x could not be read".into());
        assert!(rule_incomplete(&scope).unwrap().detail.contains("1/r is incomplete: parameter /x"));
    }

    #[test]
    fn malformed_tags_and_last_known_good_keep() {
        assert!(rule_malformed_tags(&image("ami-1", 99, &[(AFTER_TAG, "soon")])).is_some());
        assert!(rule_malformed_tags(&image("ami-1", 99, &[(AFTER_TAG, "2026-01-01T00:00:00Z")])).is_none());
        assert!(rule_last_known_good(&image("ami-1", 99, &[(LAST_KNOWN_GOOD_TAG, "web")])).is_some());
    }

    #[test]
    fn too_young_or_of_unknown_age_is_kept() {
        assert!(rule_too_young(&policy(), now(), &image("ami-1", 10, &[])).unwrap().detail.contains("10 days old"));
        assert_eq!(rule_too_young(&policy(), now(), &image("ami-1", 31, &[])), None);
        let unknown = Image { creation_date: None, ..image("ami-1", 0, &[]) };
        assert_eq!(rule_too_young(&policy(), now(), &unknown).unwrap().detail, "creation date unknown");
    }

    #[test]
    fn only_available_and_disabled_images_may_go() {
        assert_eq!(rule_state(&image("ami-1", 99, &[])), None);
        assert!(rule_state(&Image { state: "pending".into(), ..image("ami-1", 99, &[]) }).is_some());
    }

    #[test]
    fn unmatched_images_are_kept_only_when_the_policy_says_so() {
        assert_eq!(rule_unmatched(&policy(), None), None);
        assert!(rule_unmatched(&RetirePolicy { unmatched: Unmatched::Keep, ..policy() }, None).is_some());
        assert_eq!(rule_unmatched(&RetirePolicy { unmatched: Unmatched::Keep, ..policy() }, Some("web")), None);
    }

    #[test]
    fn the_newest_of_each_family_are_kept_and_retiring_images_do_not_count() {
        let imgs = [
            image("ami-1", 300, &[]),
            image("ami-2", 200, &[]),
            image("ami-3", 100, &[(STAGE_TAG, "deprecated")]),
            image("ami-4", 50, &[]),
        ];
        let candidates: Vec<&Image> = imgs.iter().collect();
        let family = vec![Some("web"), Some("web"), Some("web"), Some("api")];
        let mut reasons = vec![vec![]; 4];
        keep_newest(&candidates, &family, &policy(), &mut reasons);
        let kept: Vec<bool> = reasons.iter().map(|r| !r.is_empty()).collect();
        assert_eq!(kept, [false, true, false, true], "ami-3 is being retired: ami-2 is web's newest");
    }

    #[test]
    fn lineage_keeps_parents_transitively_and_survives_a_loop() {
        let imgs = [
            image("ami-1", 300, &[("SourceAMI", "ami-2")]),
            image("ami-2", 200, &[("SourceAMI", "ami-1")]),
            image("ami-3", 100, &[("SourceAMI", "ami-2")]),
        ];
        let candidates: Vec<&Image> = imgs.iter().collect();
        let mut reasons = vec![vec![], vec![], vec![Reason { code: ReasonCode::InUse, detail: "x".into() }]];
        keep_lineage(&candidates, "SourceAMI", &mut reasons);
        assert!(reasons.iter().all(|r| !r.is_empty()), "{reasons:?}");
    }

    #[test]
    fn the_next_step_follows_the_stages_and_their_grace_periods() {
        let p = policy();
        assert_eq!(next_step(&image("ami-1", 99, &[]), &p, now()), Ok(ActionKind::Deprecate));
        let past = (AFTER_TAG, "2026-01-01T00:00:00Z");
        let future = (AFTER_TAG, "2027-01-01T00:00:00Z");
        assert_eq!(
            next_step(&image("ami-1", 99, &[(STAGE_TAG, "deprecated"), past]), &p, now()),
            Ok(ActionKind::Disable)
        );
        assert!(next_step(&image("ami-1", 99, &[(STAGE_TAG, "deprecated"), future]), &p, now()).is_err());
        let disabled = Image { state: "disabled".into(), ..image("ami-1", 99, &[(STAGE_TAG, "disabled"), past]) };
        assert_eq!(next_step(&disabled, &p, now()), Ok(ActionKind::Deregister));
        let now_all = RetirePolicy { immediate: true, ..p };
        assert_eq!(next_step(&image("ami-1", 99, &[]), &now_all, now()), Ok(ActionKind::Deregister));
    }

    #[test]
    fn a_kept_image_is_restored_only_when_amictl_started_retiring_it() {
        let eligible = Text::from("eligible");
        let kept = vec![Reason { code: ReasonCode::InUse, detail: "x".into() }];
        let tagged = image("ami-1", 99, &[(STAGE_TAG, "deprecated")]);
        let (v, _, a) = decide(&tagged, kept.clone(), false, &eligible, &policy(), now());
        assert_eq!((v, a), (Verdict::Keep, Some(ActionKind::Restore)));
        let someone_elses = Image { deprecation_time: Some(now()), ..image("ami-1", 99, &[]) };
        let (_, _, a) = decide(&someone_elses, kept, false, &eligible, &policy(), now());
        assert!(a.is_none(), "a deprecation by someone else stays theirs");
        let (v, why, a) = decide(&image("ami-1", 99, &[]), vec![], false, &eligible, &policy(), now());
        assert_eq!((v, a), (Verdict::Retire, Some(ActionKind::Deprecate)));
        assert_eq!((why[0].code, why[0].detail.as_str()), (ReasonCode::Eligible, "eligible"));
    }

    #[test]
    fn an_image_unused_where_it_is_shared_is_taken_back_first_then_waits_its_grace() {
        let (account, region) = (Text::from("1"), Text::from("r"));
        let at = ScopeRef { account: &account, region: &region };
        let img = image("ami-1", 99, &[]);
        let (v, _, kind) = decide(&img, vec![], true, &Text::from("eligible"), &policy(), now());
        assert_eq!((v, kind), (Verdict::Retire, Some(ActionKind::Unshare)));
        let a = image_action(at, &img, ActionKind::Unshare, &["222222222222".to_string()], &policy());
        assert_eq!((a.id.as_str(), a.account.as_str()), ("1/r/unshare/ami-1", "1"));
        assert_eq!(a.accounts, vec!["222222222222"]);
        assert_eq!(a.next_stage_after_secs, Some(secs(policy().grace.deprecated)));
        // Unshared, within its grace: waits; after it: deprecated as usual.
        let later = crate::time::rfc3339(now() + chrono::Duration::days(3));
        let waiting = image("ami-1", 99, &[(UNSHARED_TAG, "222222222222"), (AFTER_TAG, &later)]);
        let why = next_step(&waiting, &policy(), now()).unwrap_err();
        assert!(why.detail.starts_with("unshared from 222222222222 until"), "{}", why.detail);
        let earlier = crate::time::rfc3339(now() - chrono::Duration::days(1));
        let due = image("ami-1", 99, &[(UNSHARED_TAG, "222222222222"), (AFTER_TAG, &earlier)]);
        assert_eq!(next_step(&due, &policy(), now()), Ok(ActionKind::Deprecate));
    }
}

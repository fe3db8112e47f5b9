//! The retirement planner: a pure function (inventory, families, policy, now) → [`Plan`].
//!
//! Every AMI gets a verdict with its reasons. Kept: in use (with the evidence), keep tag,
//! last-known-good, newest N of its family, too young, parent of a kept image, matches no
//! family (when the policy says so), not in a state amictl touches. Retired: everything else,
//! one stage per run (deprecate → disable → deregister → delete owned snapshots) as grace
//! periods pass, or all at once with `immediate`.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use std::sync::atomic::{AtomicU32, Ordering};

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
    pub image_id: Text,
    pub name: Text,
    pub family: Option<Text>,
    #[serde(with = "crate::time::opt_secs")]
    pub creation_date: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    pub state: Text,
    pub stage: Option<Stage>,
    pub verdict: Verdict,
    pub reasons: Reasons,
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

/// Why an image has its verdict. Most have one reason, kept inline (no allocation each).
pub type Reasons = smallvec::SmallVec<[Reason; 1]>;

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

/// One step of a plan. Its id, its words and the step it waits for follow from its kind and
/// targets, so they are rendered when asked for (a million-image plan stores none of them);
/// in JSON they are fields like the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ActionRecord")]
pub struct Action {
    pub account: Text,
    pub region: Text,
    pub kind: ActionKind,
    pub image_id: Option<Text>,
    pub snapshot_id: Option<Text>,
    /// A snapshot deletion that must wait for its image's deregistration to succeed.
    pub after_deregistration: bool,
    /// For stage actions: the grace period, from execution, until the next stage may run.
    pub next_stage_after_secs: Option<u64>,
    /// For Deregister with a snapshot grace period: the snapshots to tag as retiring.
    pub stage_snapshots: Box<[String]>,
    /// For Unshare: the accounts whose launch permission is removed.
    pub accounts: Box<[String]>,
    note: Note,
}

/// What an action's words say beyond its kind and targets.
#[derive(Debug, Clone)]
enum Note {
    /// An image's own step: the image's name.
    Image(Text),
    /// A snapshot deleted right after its image's deregistration.
    OfDeregistered,
    /// Words made when planned (rare actions) or read from a plan file.
    Given(Text),
}

/// Identifies an action within a plan without rendering its id.
pub type ActionKey<'a> = (&'a str, &'a str, ActionKind, &'a str);

impl Action {
    /// Stable across re-planning: `account/region/kind/target`.
    pub fn id(&self) -> String {
        action_id(&self.account, &self.region, self.kind, self.target())
    }

    /// What the id says, borrowed.
    pub fn key(&self) -> ActionKey<'_> {
        (&self.account, &self.region, self.kind, self.target())
    }

    /// The snapshot for snapshot deletions, else the image.
    pub fn target(&self) -> &str {
        self.snapshot_id.as_deref().or(self.image_id.as_deref()).unwrap_or_default()
    }

    /// The id of the action that must have succeeded first.
    pub fn depends_on(&self) -> Option<String> {
        self.dependency().map(|(a, r, k, t)| action_id(a, r, k, t))
    }

    /// [`Action::depends_on`], borrowed.
    pub fn dependency(&self) -> Option<ActionKey<'_>> {
        let image = self.image_id.as_deref().filter(|_| self.after_deregistration)?;
        Some((&self.account, &self.region, ActionKind::Deregister, image))
    }

    /// The action in words, e.g. `deregister ami-0abc (web-1.2.3)`.
    pub fn detail(&self) -> String {
        let image = self.image_id.as_deref().unwrap_or("image");
        let snapshot = self.snapshot_id.as_deref().unwrap_or_default();
        match (&self.note, self.kind) {
            (Note::Given(words), _) => words.to_string(),
            (Note::OfDeregistered, _) => format!("delete snapshot {snapshot} of deregistered {image}"),
            (Note::Image(name), ActionKind::Restore) => format!("restore {image} ({name}): kept now"),
            (Note::Image(name), ActionKind::Unshare) => {
                format!("unshare {image} ({name}) from {} (unused there)", self.accounts.join(", "))
            }
            (Note::Image(name), kind) => format!("{} {image} ({name})", kind.as_str()),
        }
    }
}

/// Equal when a plan file would show them the same.
impl PartialEq for Action {
    fn eq(&self, other: &Action) -> bool {
        self.key() == other.key()
            && self.image_id == other.image_id
            && self.snapshot_id == other.snapshot_id
            && self.after_deregistration == other.after_deregistration
            && self.next_stage_after_secs == other.next_stage_after_secs
            && self.stage_snapshots == other.stage_snapshots
            && self.accounts == other.accounts
            && self.detail() == other.detail()
    }
}

impl Eq for Action {}

/// An action as a plan file shows it: [`ActionRecord`]'s fields, borrowed.
#[derive(Serialize)]
struct ActionView<'a> {
    id: String,
    account: &'a Text,
    region: &'a Text,
    kind: ActionKind,
    image_id: &'a Option<Text>,
    snapshot_id: &'a Option<Text>,
    depends_on: Option<String>,
    next_stage_after_secs: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stage_snapshots: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    accounts: &'a [String],
    detail: String,
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let view = ActionView {
            id: self.id(),
            account: &self.account,
            region: &self.region,
            kind: self.kind,
            image_id: &self.image_id,
            snapshot_id: &self.snapshot_id,
            depends_on: self.depends_on(),
            next_stage_after_secs: self.next_stage_after_secs,
            stage_snapshots: &self.stage_snapshots,
            accounts: &self.accounts,
            detail: self.detail(),
        };
        view.serialize(s)
    }
}

/// An action as a plan file has it. Read back, the id and `depends_on` are not taken from
/// the file: they follow from the kind and targets (an edited id cannot point a step at
/// another target), and `depends_on` only says that the step waits for its image.
#[derive(Deserialize)]
struct ActionRecord {
    /// Required, as in every plan file amictl writes, and otherwise ignored.
    #[serde(rename = "id")]
    _id: String,
    account: Text,
    region: Text,
    kind: ActionKind,
    image_id: Option<Text>,
    snapshot_id: Option<Text>,
    depends_on: Option<String>,
    next_stage_after_secs: Option<u64>,
    #[serde(default)]
    stage_snapshots: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
    detail: String,
}

impl From<ActionRecord> for Action {
    fn from(r: ActionRecord) -> Action {
        Action {
            account: r.account,
            region: r.region,
            kind: r.kind,
            image_id: r.image_id,
            snapshot_id: r.snapshot_id,
            after_deregistration: r.depends_on.is_some(),
            next_stage_after_secs: r.next_stage_after_secs,
            stage_snapshots: r.stage_snapshots.into(),
            accounts: r.accounts.into(),
            note: Note::Given(r.detail.into()),
        }
    }
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
    [account, region, kind.as_str(), target].join("/")
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
    let mut reasons: Vec<Reasons> = candidates
        .par_iter()
        .zip(family_of.par_iter())
        .map(|(image, family)| keep_rules(&facts, image, *family))
        .collect();
    keep_newest(&candidates, &family_of, policy, &mut reasons);
    keep_lineage(&candidates, &policy.lineage_tag, &mut reasons);

    let names = ScopeNames::new(scope, &candidates, &family_of);
    // The actions share the verdicts' ids and names.
    let (mut verdicts, kinds) = judge(&candidates, &family_of, reasons, &facts, &names);
    let chosen: Vec<(usize, ActionKind)> = kinds.iter().enumerate().filter_map(|(n, k)| Some((n, (*k)?))).collect();
    let mut snapshots = ScopeSnapshots::new(&scope.snapshots, policy);
    let at = ScopeRef { account: &names.account, region: &names.region };
    image_and_snapshot_actions(&mut snapshots, at, &facts, &candidates, &verdicts, &chosen, out_actions);
    staged_snapshot_actions(scope, at, &candidates, policy, now, &mut snapshots, out_actions);
    if policy.orphans {
        orphan_snapshot_actions(scope, at, policy, &mut snapshots, out_actions);
    }
    if out_images.is_empty() {
        *out_images = verdicts;
    } else {
        out_images.append(&mut verdicts);
    }
}

/// Every candidate's verdict, in their order, and the kind of action it takes if any.
fn judge(
    candidates: &[&Image],
    family_of: &[Option<&str>],
    reasons: Vec<Reasons>,
    facts: &ScopeFacts,
    names: &ScopeNames,
) -> (Vec<ImageVerdict>, Vec<Option<ActionKind>>) {
    let (policy, now) = (facts.policy, facts.now);
    let mut verdicts = Vec::new();
    let mut kinds = Vec::new();
    candidates
        .par_iter()
        .zip(family_of.par_iter())
        .zip(reasons.into_par_iter())
        .map_init(
            // Names of each worker's own: a count that every thread bumps costs more than a verdict.
            || (names.unshared(), facts.eligible.unshared()),
            |(names, eligible), ((image, family), why)| {
                let unshare = !facts.takeable_shares(&image.id).is_empty();
                let (verdict, reasons, kind) = decide(image, why, unshare, eligible, policy, now);
                (names.verdict(image, *family, verdict, reasons, now), kind)
            },
        )
        .unzip_into_vecs(&mut verdicts, &mut kinds);
    (verdicts, kinds)
}

/// A scope's snapshots by id, and which of them the plan deletes already (a snapshot is
/// deleted once, however many images or passes name it).
struct ScopeSnapshots<'a> {
    all: &'a [Snapshot],
    index: HashMap<&'a str, u32>,
    /// By index: carries a keep tag.
    keep_tagged: Vec<bool>,
    planned: Vec<bool>,
}

impl<'a> ScopeSnapshots<'a> {
    fn new(all: &'a [Snapshot], policy: &RetirePolicy) -> Self {
        let mut index = HashMap::with_capacity_and_hasher(all.len(), Default::default());
        index.extend(all.iter().enumerate().map(|(n, s)| (s.id.as_str(), n as u32)));
        let keep_tagged = all.par_iter().map(|s| has_keep_tag(policy, &s.tags)).collect();
        ScopeSnapshots { all, index, keep_tagged, planned: vec![false; all.len()] }
    }

    /// The index of a listed snapshot.
    fn find(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    fn get(&self, id: &str) -> Option<(u32, &'a Snapshot)> {
        self.find(id).map(|n| (n, &self.all[n as usize]))
    }

    /// Marks a listed snapshot as planned; false when it was already (or is not listed).
    fn plan(&mut self, id: &str) -> bool {
        match self.find(id) {
            Some(n) => !std::mem::replace(&mut self.planned[n as usize], true),
            None => false,
        }
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

    /// The same names in allocations of this thread's own (see [`Text::unshared`]).
    fn unshared(&self) -> Self {
        let own = |m: &HashMap<&'a str, Text>| m.iter().map(|(k, v)| (*k, v.unshared())).collect();
        ScopeNames {
            account: self.account.unshared(),
            region: self.region.unshared(),
            families: own(&self.families),
            states: own(&self.states),
        }
    }

    fn verdict(
        &self,
        image: &Image,
        family: Option<&str>,
        verdict: Verdict,
        reasons: Reasons,
        now: DateTime<Utc>,
    ) -> ImageVerdict {
        ImageVerdict {
            account: self.account.clone(),
            region: self.region.clone(),
            image_id: Text::from(&image.id),
            name: Text::from(&image.name),
            family: family.map(|f| self.families[f].clone()),
            creation_date: image.creation_date,
            age_days: image.creation_date.map(|c| (now - c).num_days()),
            state: self.states[image.state.as_str()].clone(),
            stage: stage_now(image, now).0,
            verdict,
            reasons,
        }
    }
}

/// Where actions are planned.
#[derive(Clone, Copy)]
struct ScopeRef<'a> {
    account: &'a Text,
    region: &'a Text,
}

impl ScopeRef<'_> {
    fn action(self, kind: ActionKind, image: Option<Text>, snapshot: Option<Text>, note: Note) -> Action {
        Action {
            account: self.account.clone(),
            region: self.region.clone(),
            kind,
            image_id: image,
            snapshot_id: snapshot,
            after_deregistration: false,
            next_stage_after_secs: None,
            stage_snapshots: Box::default(),
            accounts: Box::default(),
            note,
        }
    }
}

/// What every image of a scope is judged against, computed once per scope.
struct ScopeFacts<'a> {
    usage: &'a Usage,
    /// `usage.references` by hash: looked up once per image.
    references: HashMap<&'a str, &'a [usage::Reference]>,
    policy: &'a RetirePolicy,
    now: DateTime<Utc>,
    /// Images a channel points at, or did within the policy's window, with why.
    channel_kept: BTreeMap<String, String>,
    incomplete: Option<Reason>,
    /// Why a retired image is retired: the same words for every one of them.
    eligible: Text,
}

impl<'a> ScopeFacts<'a> {
    fn refs(&self, image: &str) -> &'a [usage::Reference] {
        self.references.get(image).copied().unwrap_or_default()
    }

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
        let references = usage.references.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        ScopeFacts { usage, references, policy, now, channel_kept, incomplete: rule_incomplete(scope), eligible }
    }
}

/// Every rule that keeps one image on its own, in the order they are reported.
fn keep_rules(facts: &ScopeFacts, image: &Image, family: Option<&str>) -> Reasons {
    let takeable = facts.takeable_shares(&image.id);
    let refs: Vec<&str> = facts
        .refs(&image.id)
        .iter()
        .filter(|r| r.is_use() && !(r.kind == RefKind::SharedAccount && takeable.contains(&r.id)))
        .map(|r| r.evidence.as_str())
        .collect();
    let (policy, now) = (facts.policy, facts.now);
    let mut r = Reasons::new();
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
fn keep_newest(candidates: &[&Image], family_of: &[Option<&str>], policy: &RetirePolicy, reasons: &mut [Reasons]) {
    let by_family: HashMap<&str, Vec<usize>> = family_of
        .par_iter()
        .enumerate()
        .fold(HashMap::default, |mut m: HashMap<&str, Vec<usize>>, (n, family)| {
            if let Some(f) = family {
                m.entry(f).or_default().push(n);
            }
            m
        })
        .reduce(HashMap::default, |mut a, b| {
            for (f, mut members) in b {
                a.entry(f).or_default().append(&mut members);
            }
            a
        });
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    if policy.unmatched == crate::policy::Unmatched::OwnFamily {
        let alone = family_of.iter().enumerate().filter(|(_, f)| f.is_none());
        groups.extend(alone.map(|(n, _)| ("its own family (matches no family rule)".to_string(), vec![n])));
    }
    groups.extend(by_family.into_iter().map(|(f, members)| (format!("family {f}"), members)));
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let rankable = |n: &usize| stage_of(&candidates[*n].tags).is_none() && candidates[*n].state == "available";
    let by_newest = |a: &usize, b: &usize| {
        let (a, b) = (candidates[*a], candidates[*b]);
        b.creation_date.cmp(&a.creation_date).then_with(|| b.name.cmp(&a.name)).then_with(|| b.id.cmp(&a.id))
    };
    // Families are ranked in parallel; only the first `keep` of each need ordering.
    let kept: Vec<(usize, Reason)> = groups
        .par_iter_mut()
        .flat_map_iter(|(label, members)| {
            members.retain(rankable);
            if policy.keep > 0 && policy.keep < members.len() {
                members.select_nth_unstable_by(policy.keep - 1, by_newest);
            }
            members.truncate(policy.keep);
            members.sort_by(by_newest);
            members.iter().enumerate().map(move |(rank, n)| {
                let detail = format!("newest {} of {} in {label}", rank + 1, policy.keep);
                (*n, Reason { code: ReasonCode::Newest, detail: detail.into() })
            })
        })
        .collect();
    for (n, why) in kept {
        reasons[n].push(why);
    }
}

/// The image a kept image was built from (its lineage tag) is kept too, transitively.
fn keep_lineage(candidates: &[&Image], lineage_tag: &str, reasons: &mut [Reasons]) {
    // Only images some image names as its parent can be kept this way.
    let named: Vec<&str> = candidates.par_iter().filter_map(|c| c.tags.get(lineage_tag)).map(String::as_str).collect();
    if named.is_empty() {
        return;
    }
    let parents: HashSet<&str> = named.into_iter().collect();
    let index: HashMap<&str, usize> = candidates
        .par_iter()
        .enumerate()
        .filter(|(_, c)| parents.contains(c.id.as_str()))
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut work: Vec<usize> = (0..candidates.len()).into_par_iter().filter(|n| !reasons[*n].is_empty()).collect();
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
    mut why: Reasons,
    unshare: bool,
    eligible: &Text,
    policy: &RetirePolicy,
    now: DateTime<Utc>,
) -> (Verdict, Reasons, Option<ActionKind>) {
    if !why.is_empty() {
        // Only what amictl started (its stage tag) is restored: a deprecation by someone else
        // stays theirs.
        let restore = stage_of(&image.tags).is_some().then_some(ActionKind::Restore);
        return (Verdict::Keep, why, restore);
    }
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

/// The action `decide` chose for an image (its verdict), with its grace period.
fn image_action(
    scope: ScopeRef,
    image: &ImageVerdict,
    kind: ActionKind,
    unshare: &[String],
    policy: &RetirePolicy,
) -> Action {
    let mut a = scope.action(kind, Some(image.image_id.clone()), None, Note::Image(image.name.clone()));
    a.next_stage_after_secs = match kind {
        ActionKind::Unshare => Some(if policy.immediate { 0 } else { secs(policy.grace.deprecated) }),
        ActionKind::Deprecate => Some(secs(policy.grace.deprecated)),
        ActionKind::Disable => Some(secs(policy.grace.disabled)),
        _ => None,
    };
    if kind == ActionKind::Unshare {
        a.accounts = unshare.into();
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
fn image_and_snapshot_actions(
    snapshots: &mut ScopeSnapshots,
    at: ScopeRef,
    facts: &ScopeFacts,
    candidates: &[&Image],
    verdicts: &[ImageVerdict],
    chosen: &[(usize, ActionKind)],
    out: &mut Vec<Action>,
) {
    let policy = facts.policy;
    let snapshot_grace = !policy.immediate && !policy.grace.deregistered.is_zero();
    let deletable = Deletable::new(snapshots, candidates, chosen);
    let claims = if snapshot_grace { vec![] } else { claim_snapshots(candidates, chosen, &deletable) };
    let first_owner = first_owners(&claims, snapshots.all.len());
    let steps = steps_in_plan_order(chosen, claims, &first_owner);
    let build = |at: ScopeRef, step: &Step| {
        let (image, verdict) = (candidates[step.image as usize], &verdicts[step.image as usize]);
        if let Some(k) = step.snapshot {
            let snapshot = Some(Text::from(&image.snapshot_ids[k as usize]));
            let mut d = at.action(step.kind, Some(verdict.image_id.clone()), snapshot, Note::OfDeregistered);
            d.after_deregistration = true;
            return d;
        }
        let mut a = image_action(at, verdict, step.kind, facts.takeable_shares(&image.id), policy);
        if step.kind == ActionKind::Deregister && snapshot_grace {
            a.stage_snapshots = image.snapshot_ids.iter().filter(|s| deletable.index(s).is_some()).cloned().collect();
            a.next_stage_after_secs = Some(secs(policy.grace.deregistered));
        }
        a
    };
    // Each worker clones names of its own: one shared count bumped from every thread costs more
    // than the rest of an action.
    let local = || (at.account.unshared(), at.region.unshared());
    out.par_extend(
        steps.par_iter().map_init(local, |(account, region), step| build(ScopeRef { account, region }, step)),
    );
    for (planned, owner) in snapshots.planned.iter_mut().zip(first_owner) {
        *planned |= owner != u32::MAX;
    }
}

/// Which snapshots a deregistration may delete after its image: listed, without a keep tag,
/// and not mapped by an image this run keeps.
struct Deletable<'s, 'a> {
    snapshots: &'s ScopeSnapshots<'a>,
    /// By snapshot index: an image that stays maps it.
    still_mapped: Vec<bool>,
}

impl<'s, 'a> Deletable<'s, 'a> {
    fn new(snapshots: &'s ScopeSnapshots<'a>, candidates: &[&Image], chosen: &[(usize, ActionKind)]) -> Self {
        let mut deregistering = vec![false; candidates.len()];
        for (n, _) in chosen.iter().filter(|(_, kind)| *kind == ActionKind::Deregister) {
            deregistering[*n] = true;
        }
        let mut still_mapped = vec![false; snapshots.all.len()];
        let staying = candidates.iter().zip(&deregistering).filter(|(_, going)| !**going);
        for n in staying.flat_map(|(i, _)| &i.snapshot_ids).filter_map(|s| snapshots.find(s)) {
            still_mapped[n as usize] = true;
        }
        Deletable { snapshots, still_mapped }
    }

    /// The snapshot's index in the scope when it may be deleted.
    fn index(&self, id: &str) -> Option<u32> {
        let n = self.snapshots.find(id)?;
        (!self.snapshots.keep_tagged[n as usize] && !self.still_mapped[n as usize]).then_some(n)
    }
}

/// The deletable snapshots of each deregistration, in plan order: (candidate, position in its
/// mapping, index in the scope). A snapshot an image maps twice is claimed once.
fn claim_snapshots(
    candidates: &[&Image],
    chosen: &[(usize, ActionKind)],
    deletable: &Deletable,
) -> Vec<(u32, u32, u32)> {
    chosen
        .par_iter()
        .filter(|(_, kind)| *kind == ActionKind::Deregister)
        .flat_map_iter(|&(n, _)| {
            let ids = &candidates[n].snapshot_ids;
            let once = ids.iter().enumerate().filter(|(k, s)| !ids[..*k].contains(s));
            once.filter_map(move |(k, s)| Some((n as u32, k as u32, deletable.index(s)?)))
        })
        .collect()
}

/// By snapshot index, the first candidate in plan order that claims it (`u32::MAX`: none). A
/// snapshot two deregistered images map is deleted once, after the first of them.
fn first_owners(claims: &[(u32, u32, u32)], snapshots: usize) -> Vec<u32> {
    let first: Vec<AtomicU32> = (0..snapshots).map(|_| AtomicU32::new(u32::MAX)).collect();
    claims.par_iter().for_each(|&(n, _, s)| {
        first[s as usize].fetch_min(n, Ordering::Relaxed);
    });
    first.into_iter().map(AtomicU32::into_inner).collect()
}

/// What each chosen image does, in plan order: its own step, then (after a deregistration) the
/// deletion of each snapshot it was first to claim.
fn steps_in_plan_order(chosen: &[(usize, ActionKind)], claims: Vec<(u32, u32, u32)>, first_owner: &[u32]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(chosen.len() + claims.len());
    let mut claims = claims.into_iter().peekable();
    for &(n, kind) in chosen {
        let n = n as u32;
        steps.push(Step { image: n, kind, snapshot: None });
        while let Some((_, k, s)) = claims.next_if(|c| c.0 == n) {
            if first_owner[s as usize] == n {
                steps.push(Step { image: n, kind: ActionKind::DeleteSnapshot, snapshot: Some(k) });
            }
        }
    }
    steps
}

/// One action of an image before it is built: for a snapshot deletion, the position of the
/// snapshot in the image's mapping.
struct Step {
    image: u32,
    kind: ActionKind,
    snapshot: Option<u32>,
}

fn has_keep_tag(policy: &RetirePolicy, tags: &BTreeMap<String, String>) -> bool {
    policy.all_keep_tags().any(|k| tags.contains_key(k))
}

/// Snapshots whose image amictl deregistered earlier, once their grace period passed, and
/// only with evidence that they were that image's.
fn staged_snapshot_actions(
    scope: &RegionInventory,
    at: ScopeRef,
    candidates: &[&Image],
    policy: &RetirePolicy,
    now: DateTime<Utc>,
    snapshots: &mut ScopeSnapshots,
    out: &mut Vec<Action>,
) {
    let staged = scope.snapshots.iter().filter(|s| stage_of(&s.tags) == Some(Stage::Deregistered));
    let mut staged = staged.peekable();
    if staged.peek().is_none() {
        return;
    }
    let live_mapped: HashSet<&str> =
        candidates.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
    for s in staged {
        if live_mapped.contains(s.id.as_str()) || has_keep_tag(policy, &s.tags) || !retired_with_evidence(scope, s) {
            continue;
        }
        if after_of(&s.tags).is_some_and(|t| t > now) || !snapshots.plan(&s.id) {
            continue;
        }
        let image = s.tags.get(crate::policy::RETIRED_IMAGE_TAG).map(String::as_str);
        let detail = format!("delete snapshot {} of retired {}", s.id, image.unwrap_or("image"));
        out.push(at.action(
            ActionKind::DeleteSnapshot,
            image.map(Text::from),
            Some((&s.id).into()),
            Note::Given(detail.into()),
        ));
    }
}

/// With `--orphans`: snapshots EC2 made for an AMI that is gone and nothing maps.
fn orphan_snapshot_actions(
    scope: &RegionInventory,
    at: ScopeRef,
    policy: &RetirePolicy,
    snapshots: &mut ScopeSnapshots,
    out: &mut Vec<Action>,
) {
    let orphans = usage::orphaned_snapshots(scope);
    if orphans.is_empty() {
        return;
    }
    for o in orphans {
        let Some((_, snap)) = snapshots.get(&o.snapshot_id) else { continue };
        if stage_of(&snap.tags).is_some() || has_keep_tag(policy, &snap.tags) || !snapshots.plan(&snap.id) {
            continue;
        }
        let detail =
            format!("delete orphaned snapshot {} ({:?} of {}, which is gone)", o.snapshot_id, o.origin, o.image_id);
        let (image, snapshot) = (Some((&o.image_id).into()), Some((&o.snapshot_id).into()));
        out.push(at.action(ActionKind::DeleteSnapshot, image, snapshot, Note::Given(detail.into())));
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
    let fresh_keys: HashSet<ActionKey> = fresh.actions.iter().map(Action::key).collect();
    saved
        .actions
        .iter()
        .filter(|a| !fresh_keys.contains(&a.key()))
        .map(|a| format!("{}: {}", a.detail(), why_not_now(a, fresh)))
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
    let by_key: HashMap<ActionKey, &Action> = fresh.actions.iter().map(|a| (a.key(), a)).collect();
    let mut out = Reconciled::default();
    for a in &saved.actions {
        let continues = a.kind == ActionKind::DeleteSnapshot && a.depends_on().is_some_and(|d| done(&d));
        match by_key.get(&a.key()) {
            _ if done(&a.id()) => out.actions.push(a.clone()),
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
    if let Some(run) = applied_in(&a.id()) {
        return format!("already applied (run {run})");
    }
    if then.actions.iter().any(|t| t.key() == a.key()) {
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
        let mut reasons = vec![Reasons::new(); 4];
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
        let in_use = Reason { code: ReasonCode::InUse, detail: "x".into() };
        let mut reasons = vec![Reasons::new(), Reasons::new(), smallvec::smallvec![in_use]];
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
        let kept: Reasons = smallvec::smallvec![Reason { code: ReasonCode::InUse, detail: "x".into() }];
        let tagged = image("ami-1", 99, &[(STAGE_TAG, "deprecated")]);
        let (v, _, a) = decide(&tagged, kept.clone(), false, &eligible, &policy(), now());
        assert_eq!((v, a), (Verdict::Keep, Some(ActionKind::Restore)));
        let someone_elses = Image { deprecation_time: Some(now()), ..image("ami-1", 99, &[]) };
        let (_, _, a) = decide(&someone_elses, kept, false, &eligible, &policy(), now());
        assert!(a.is_none(), "a deprecation by someone else stays theirs");
        let (v, why, a) = decide(&image("ami-1", 99, &[]), Reasons::new(), false, &eligible, &policy(), now());
        assert_eq!((v, a), (Verdict::Retire, Some(ActionKind::Deprecate)));
        assert_eq!((why[0].code, why[0].detail.as_str()), (ReasonCode::Eligible, "eligible"));
    }

    fn verdict_of(img: &Image) -> ImageVerdict {
        let names = ScopeNames::new(&RegionInventory::default(), &[img], &[None]);
        names.verdict(img, None, Verdict::Retire, Reasons::new(), now())
    }

    #[test]
    fn an_action_renders_its_id_words_and_dependency_and_a_file_cannot_redirect_them() {
        let (account, region) = (Text::from("1"), Text::from("r"));
        let at = ScopeRef { account: &account, region: &region };
        let img = image("ami-1", 99, &[]);
        let dereg = image_action(at, &verdict_of(&img), ActionKind::Deregister, &[], &policy());
        let mut snap =
            at.action(ActionKind::DeleteSnapshot, Some("ami-1".into()), Some("snap-1".into()), Note::OfDeregistered);
        snap.after_deregistration = true;
        assert_eq!(
            (dereg.id(), dereg.detail()),
            ("1/r/deregister/ami-1".into(), "deregister ami-1 (ami-1-name)".into())
        );
        assert_eq!(snap.depends_on(), Some(dereg.id()));
        assert_eq!(snap.detail(), "delete snapshot snap-1 of deregistered ami-1");
        // The plan file's fields, in their order; empty lists left out.
        let text = serde_json::to_string(&snap).unwrap();
        let fields = ["id", "account", "region", "kind", "image_id", "snapshot_id", "depends_on"];
        let at: Vec<usize> = fields
            .iter()
            .chain(&["next_stage_after_secs", "detail"])
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]) && !text.contains("stage_snapshots"), "{text}");
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["id"], "1/r/delete-snapshot/snap-1");
        assert_eq!(json["depends_on"], "1/r/deregister/ami-1");
        let back: Action = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, snap);
        // An id edited to name another snapshot does not move the step: its fields decide.
        let mut edited = json;
        edited["id"] = "1/r/delete-snapshot/snap-9".into();
        let back: Action = serde_json::from_value(edited).unwrap();
        assert_eq!(back.id(), "1/r/delete-snapshot/snap-1");
    }

    #[test]
    fn an_image_unused_where_it_is_shared_is_taken_back_first_then_waits_its_grace() {
        let (account, region) = (Text::from("1"), Text::from("r"));
        let at = ScopeRef { account: &account, region: &region };
        let img = image("ami-1", 99, &[]);
        let (v, _, kind) = decide(&img, Reasons::new(), true, &Text::from("eligible"), &policy(), now());
        assert_eq!((v, kind), (Verdict::Retire, Some(ActionKind::Unshare)));
        let a = image_action(at, &verdict_of(&img), ActionKind::Unshare, &["222222222222".to_string()], &policy());
        assert_eq!((a.id().as_str(), a.account.as_str()), ("1/r/unshare/ami-1", "1"));
        assert_eq!(&*a.accounts, ["222222222222"]);
        assert_eq!(a.detail(), "unshare ami-1 (ami-1-name) from 222222222222 (unused there)");
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

//! Compliance audit: a pure function from inventory, usage and policy to findings.
//!
//! Rules (ids are stable; scripts match on them):
//!
//! | rule | severity | what |
//! |---|---|---|
//! | `ami-too-old` | medium | an image older than `compliance.max_age` |
//! | `ami-malformed-retire-tag` | medium | a retirement tag that does not parse (the planner keeps the image) |
//! | `ami-not-scanned` | medium | no security-scan tag |
//! | `ami-scan-failed` | high | a scan tag whose value is not a passing one |
//! | `ami-public` | critical | launchable by anyone |
//! | `ami-shared-outside-allowlist` | high | shared with an account not in `allowed_accounts` |
//! | `ami-unencrypted-snapshot` | medium | a snapshot of the image is not encrypted |
//! | `instance-ami-too-old` / `asg-ami-too-old` | medium | a live instance or ASG runs a too-old image |
//! | `instance-ami-not-scanned` / `asg-ami-not-scanned` | medium | … an unscanned or failed-scan image |
//! | `instance-ami-deregistered` / `asg-ami-deregistered` | high | … an image that no longer exists |
//! | `asg-missing-launch-template` | high | an ASG names a template (or version, or launch configuration) that does not exist |
//! | `template-ami-deregistered` | low | a launch template version or launch configuration names a missing image |
//! | `template-image-parameter` | info | a launch template version or fleet takes its image from an SSM parameter that was not resolved |
//! | `orphaned-snapshot` | low | an AMI snapshot whose AMI is gone |
//! | `ami-revoked` | low | a revoked image (still registered) |
//! | `instance-ami-revoked` / `asg-ami-revoked` | high | a live instance or ASG runs a revoked image |
//! | `instance-patch-failed` | high | the last `amictl patch` of a running instance failed or timed out |
//! | `instance-patch-stale` | medium | a running instance last patched (or launched) longer ago than `compliance.max_patch_age` |

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ComplianceConfig;
use crate::family::FamilyRules;
use crate::inventory::{Image, Instance, Inventory, RegionInventory, ScopeFailure, Snapshot};
use crate::report::{Finding, Severity};
use crate::usage::{self, Dangling, DanglingKind, OrphanSnapshot, RefKind, Reference, Usage};

/// The schema name of the JSON document `audit --output json` prints.
pub const SCHEMA: &str = "amictl.audit/v1";

/// The audit document. Its JSON form is what `amictl audit --output json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    pub schema: String,
    #[serde(with = "crate::time::secs")]
    pub generated_at: DateTime<Utc>,
    pub scopes: Vec<String>,
    pub failures: Vec<ScopeFailure>,
    pub summary: Summary,
    /// Every self-owned image with its references and findings.
    pub images: Vec<ImageRecord>,
    /// Findings about other resources (instances, ASGs, snapshots) and every image finding too.
    pub findings: Vec<Finding>,
    pub orphaned_snapshots: Vec<OrphanRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub images: usize,
    pub images_in_use: usize,
    pub findings: usize,
    pub by_severity: BTreeMap<Severity, usize>,
    pub by_rule: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(rename = "image_id", alias = "id")]
    pub id: String,
    pub account: String,
    pub region: String,
    pub name: String,
    pub family: Option<String>,
    pub state: String,
    #[serde(with = "crate::time::opt_secs")]
    pub creation_date: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    pub in_use: bool,
    /// References that keep the image in use.
    pub in_use_by: Vec<Reference>,
    /// Terminated instances that ran it.
    pub history: Vec<Reference>,
    /// Whether launch permissions were fetched (see `compliance.check_sharing`).
    pub sharing_checked: bool,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrphanRecord {
    pub account: String,
    pub region: String,
    #[serde(flatten)]
    pub snapshot: OrphanSnapshot,
}

/// Audits every scope of `inv`.
pub fn audit(inv: &Inventory, families: &FamilyRules, policy: &ComplianceConfig, now: DateTime<Utc>) -> AuditReport {
    let mut images = Vec::new();
    let mut findings = Vec::new();
    let mut orphans = Vec::new();
    for scope in &inv.scopes {
        let usage = usage::analyze(scope);
        let out = audit_scope(scope, &usage, families, policy, now);
        images.extend(out.images);
        findings.extend(out.findings);
        orphans.extend(out.orphans);
    }
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| a.rule.cmp(&b.rule)).then_with(|| a.resource.cmp(&b.resource))
    });
    let mut summary = Summary {
        images: images.len(),
        images_in_use: images.iter().filter(|i| i.in_use).count(),
        findings: findings.len(),
        ..Summary::default()
    };
    for f in &findings {
        *summary.by_severity.entry(f.severity).or_default() += 1;
        *summary.by_rule.entry(f.rule.clone()).or_default() += 1;
    }
    AuditReport {
        schema: SCHEMA.into(),
        generated_at: now,
        scopes: inv.scopes.iter().map(|s| s.scope().to_string()).collect(),
        // A scope that could not be listed, and evidence a listed scope could not read.
        failures: inv
            .failures
            .iter()
            .cloned()
            .chain(
                inv.scopes
                    .iter()
                    .flat_map(|s| s.gaps.iter().map(move |g| ScopeFailure { scope: s.scope(), error: g.clone() })),
            )
            .collect(),
        summary,
        images,
        findings,
        orphaned_snapshots: orphans,
    }
}

impl AuditReport {
    /// The most severe finding, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// What one scope contributes to the report.
#[derive(Debug, Default)]
struct ScopeAudit {
    images: Vec<ImageRecord>,
    /// Image findings first (in image order), then what runs, dangling references, orphans.
    findings: Vec<Finding>,
    orphans: Vec<OrphanRecord>,
}

/// One scope's audit: each self-owned image's own findings and its record, then what live
/// instances and ASGs run, references that lead nowhere, and orphaned snapshots.
fn audit_scope(
    scope: &RegionInventory,
    usage: &Usage,
    families: &FamilyRules,
    policy: &ComplianceConfig,
    now: DateTime<Utc>,
) -> ScopeAudit {
    let at = ScopeRef { account: &scope.account, region: &scope.region };
    let snapshots = snapshot_index(scope);
    let mut out = ScopeAudit::default();
    for image in &scope.images {
        let own = image_rules(at, usage, &snapshots, policy, now, image);
        // An image finding is reported twice: in the flat list and on its image's record.
        out.findings.extend(own.iter().cloned());
        out.images.push(image_record(scope, usage, families, now, image, own));
    }
    out.findings.extend(runtime_findings(at, scope, usage, policy, now));
    out.findings.extend(
        scope.instances.iter().filter(|i| i.state == "running").flat_map(|i| patch_findings(at, policy, now, i)),
    );
    out.findings.extend(usage.dangling.iter().map(|d| rule_dangling(at, d)));
    for o in usage::orphaned_snapshots(scope) {
        out.findings.push(rule_orphaned_snapshot(at, &o));
        out.orphans.push(at.orphan(o));
    }
    out
}

/// Where findings are made: every finding and record of a scope names its account and region.
#[derive(Clone, Copy)]
struct ScopeRef<'a> {
    account: &'a str,
    region: &'a str,
}

impl ScopeRef<'_> {
    fn finding(
        self,
        severity: Severity,
        rule: &str,
        resource: &str,
        image_id: Option<&str>,
        message: String,
    ) -> Finding {
        Finding {
            severity,
            rule: rule.into(),
            account: self.account.into(),
            region: self.region.into(),
            resource: resource.into(),
            image_id: image_id.map(str::to_string),
            message,
        }
    }

    /// A finding about an image itself: the image is both the resource and the image involved.
    fn image_finding(self, severity: Severity, rule: &str, image: &Image, message: String) -> Finding {
        self.finding(severity, rule, &image.id, Some(&image.id), message)
    }

    fn orphan(self, snapshot: OrphanSnapshot) -> OrphanRecord {
        OrphanRecord { account: self.account.into(), region: self.region.into(), snapshot }
    }
}

/// The scope's snapshots by id: the image rules look up the ones each image maps.
type SnapshotIndex<'a> = HashMap<&'a str, &'a Snapshot>;

fn snapshot_index(scope: &RegionInventory) -> SnapshotIndex<'_> {
    scope.snapshots.iter().map(|s| (s.id.as_str(), s)).collect()
}

/// The record of one self-owned image: who uses it, which terminated instances ran it, and
/// its own findings.
fn image_record(
    scope: &RegionInventory,
    usage: &Usage,
    families: &FamilyRules,
    now: DateTime<Utc>,
    image: &Image,
    findings: Vec<Finding>,
) -> ImageRecord {
    let refs = usage.refs(&image.id);
    ImageRecord {
        id: image.id.clone(),
        account: scope.account.clone(),
        region: scope.region.clone(),
        name: image.name.clone(),
        family: families.family_of(image).map(|m| m.family),
        state: image.state.clone(),
        creation_date: image.creation_date,
        age_days: age_days(image, now),
        in_use: usage.in_use(&image.id),
        in_use_by: refs.iter().filter(|r| r.is_use()).cloned().collect(),
        history: refs.iter().filter(|r| !r.is_use()).cloned().collect(),
        // A public image needs no launch-permission call to know it is shared with everyone.
        sharing_checked: image.public || scope.launch_permissions.contains_key(&image.id),
        findings,
    }
}

fn age_days(image: &Image, now: DateTime<Utc>) -> Option<i64> {
    image.creation_date.map(|c| (now - c).num_days())
}

/// Older than `compliance.max_age`. An image of unknown age is not: there is nothing to judge.
fn too_old(image: &Image, policy: &ComplianceConfig, now: DateTime<Utc>) -> bool {
    let max_age = chrono::Duration::from_std(policy.max_age).unwrap_or(chrono::Duration::MAX);
    image.creation_date.is_some_and(|c| now - c > max_age)
}

fn max_age_days(policy: &ComplianceConfig) -> u64 {
    policy.max_age.as_secs() / 86_400
}

/// What the security-scan tag says about an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan<'a> {
    Passed,
    /// No scan tag at all.
    Missing,
    /// A scan tag whose value is not one of `compliance.scan_passed_values`.
    Failed(&'a str),
}

fn scan<'a>(image: &'a Image, policy: &ComplianceConfig) -> Scan<'a> {
    match image.tags.get(&policy.scan_tag) {
        None => Scan::Missing,
        Some(v) if policy.scan_passed_values.contains(v) => Scan::Passed,
        Some(v) => Scan::Failed(v),
    }
}

/// Why a revoked image was revoked; None when it is not revoked.
fn revoked_reason(image: &Image) -> Option<&str> {
    crate::catalog::is_revoked(image)
        .then(|| image.tags.get(crate::catalog::REVOKED_REASON_TAG).map(String::as_str).unwrap_or("no reason given"))
}

/// Every rule about one image itself, whoever uses it, in the order its findings are reported.
fn image_rules(
    at: ScopeRef,
    usage: &Usage,
    snapshots: &SnapshotIndex,
    policy: &ComplianceConfig,
    now: DateTime<Utc>,
    image: &Image,
) -> Vec<Finding> {
    let refs = usage.refs(&image.id);
    let mut f = Vec::new();
    f.extend(rule_too_old(at, policy, now, image));
    f.extend(rule_malformed_retire_tag(at, image));
    f.extend(rule_not_scanned(at, policy, image));
    f.extend(rule_scan_failed(at, policy, image));
    f.extend(rule_revoked(at, image));
    f.extend(rule_public(at, image, refs));
    f.extend(rule_shared_outside_allowlist(at, policy, image, refs));
    f.extend(rule_unencrypted_snapshot(at, snapshots, image));
    f
}

fn rule_too_old(at: ScopeRef, policy: &ComplianceConfig, now: DateTime<Utc>, image: &Image) -> Option<Finding> {
    if !too_old(image, policy, now) {
        return None;
    }
    let message = format!(
        "{} ({}) is {} days old; the maximum is {} days",
        image.id,
        image.name,
        age_days(image, now).unwrap_or(0),
        max_age_days(policy)
    );
    Some(at.image_finding(Severity::Medium, "ami-too-old", image, message))
}

/// A retirement tag that does not parse: the planner keeps the image until a person fixes it,
/// so the audit says so.
fn rule_malformed_retire_tag(at: ScopeRef, image: &Image) -> Option<Finding> {
    let why = crate::policy::malformed_retire_tags(&image.tags)?;
    let message = format!(
        "{} ({}) has a malformed retirement tag: {why}; it is kept until the tag is fixed",
        image.id, image.name
    );
    Some(at.image_finding(Severity::Medium, "ami-malformed-retire-tag", image, message))
}

fn rule_not_scanned(at: ScopeRef, policy: &ComplianceConfig, image: &Image) -> Option<Finding> {
    (scan(image, policy) == Scan::Missing).then(|| {
        let message = format!("{} ({}) has no {} tag", image.id, image.name, policy.scan_tag);
        at.image_finding(Severity::Medium, "ami-not-scanned", image, message)
    })
}

/// Any value of the scan tag that is not a passing one fails, so a scanner's new verdict is
/// never taken as a pass.
fn rule_scan_failed(at: ScopeRef, policy: &ComplianceConfig, image: &Image) -> Option<Finding> {
    let Scan::Failed(v) = scan(image, policy) else { return None };
    let message = format!("{} ({}) has {}={v}", image.id, image.name, policy.scan_tag);
    Some(at.image_finding(Severity::High, "ami-scan-failed", image, message))
}

/// Low on its own: a revoked image that nothing runs is only waiting to be retired. What runs
/// it is [`rule_runs_revoked`].
fn rule_revoked(at: ScopeRef, image: &Image) -> Option<Finding> {
    let why = revoked_reason(image)?;
    let message = format!("{} ({}) is revoked: {why}", image.id, image.name);
    Some(at.image_finding(Severity::Low, "ami-revoked", image, message))
}

fn rule_public(at: ScopeRef, image: &Image, refs: &[Reference]) -> Option<Finding> {
    refs.iter().any(|r| r.kind == RefKind::Public).then(|| {
        let message = format!("{} ({}) is public: anyone can launch it", image.id, image.name);
        at.image_finding(Severity::Critical, "ami-public", image, message)
    })
}

/// One finding per share (account, organization, OU) not in `compliance.allowed_accounts`.
fn rule_shared_outside_allowlist(
    at: ScopeRef,
    policy: &ComplianceConfig,
    image: &Image,
    refs: &[Reference],
) -> Vec<Finding> {
    // One finding per account, however many uses of the image were read there.
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for r in refs.iter().filter(|r| r.kind == RefKind::SharedAccount && !policy.allowed_accounts.contains(&r.id)) {
        if seen.contains(&r.id.as_str()) {
            continue;
        }
        seen.push(&r.id);
        let share = match r.evidence.split_once(',') {
            _ if r.evidence.starts_with("used in") => format!("shared with {}", r.id),
            Some((share, _)) => share.to_string(),
            None => r.evidence.clone(),
        };
        let message = format!("{} ({}) is {share}, which is not an allowed account", image.id, image.name);
        out.push(at.image_finding(Severity::High, "ami-shared-outside-allowlist", image, message));
    }
    out
}

/// One finding naming every unencrypted snapshot the image maps. Snapshots this account does
/// not own are not in the inventory, so they are not judged.
fn rule_unencrypted_snapshot(at: ScopeRef, snapshots: &SnapshotIndex, image: &Image) -> Option<Finding> {
    let unencrypted: Vec<&str> = image
        .snapshot_ids
        .iter()
        .filter(|s| snapshots.get(s.as_str()).is_some_and(|s| !s.encrypted))
        .map(String::as_str)
        .collect();
    (!unencrypted.is_empty()).then(|| {
        let message = format!("{} ({}) has unencrypted snapshot(s) {}", image.id, image.name, unencrypted.join(", "));
        at.image_finding(Severity::Medium, "ami-unencrypted-snapshot", image, message)
    })
}

/// The rule-id prefix of a reference that runs its image now (a live instance or an ASG);
/// None for every other kind of reference.
fn runner_prefix(r: &Reference) -> Option<&'static str> {
    match r.kind {
        RefKind::Instance => Some("instance"),
        RefKind::AutoScalingGroup => Some("asg"),
        _ => None,
    }
}

/// What live instances and ASGs run: a revoked, too old or unscanned image, whoever owns it.
/// A missing or deregistered image is not judged here: [`rule_dangling`] reports it.
fn runtime_findings(
    at: ScopeRef,
    scope: &RegionInventory,
    usage: &Usage,
    policy: &ComplianceConfig,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    // Instances may run images this account does not own (vendor base images).
    let by_id: HashMap<&str, &Image> =
        scope.images.iter().chain(&scope.foreign_images).map(|i| (i.id.as_str(), i)).collect();
    let mut out = Vec::new();
    for (image_id, refs) in &usage.references {
        let Some(image) = by_id.get(image_id.as_str()).filter(|i| i.state != "deregistered") else { continue };
        for r in refs {
            let Some(prefix) = runner_prefix(r) else { continue };
            out.extend(rule_runs_revoked(at, prefix, r, image));
            out.extend(rule_runs_too_old(at, policy, now, prefix, r, image));
            out.extend(rule_runs_unscanned(at, policy, prefix, r, image));
        }
    }
    out
}

/// What `amictl patch` recorded on a running instance: its last run failed, or its last
/// successful patch (or its launch, if later) is older than `compliance.max_patch_age`.
fn patch_findings(at: ScopeRef, policy: &ComplianceConfig, now: DateTime<Utc>, i: &Instance) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(status) =
        i.tags.get(crate::patching::STATUS_TAG).filter(|s| matches!(s.as_str(), "Failed" | "TimedOut"))
    {
        let run = i.tags.get(crate::patching::RUN_TAG).map(|r| format!(" (run {r})")).unwrap_or_default();
        let message = format!("instance {}: the last amictl patch{run} ended {status}", i.id);
        out.push(at.finding(Severity::High, "instance-patch-failed", &i.id, Some(&i.image_id), message));
    }
    if let Some(max) = policy.max_patch_age {
        let patched = i.tags.get(crate::patching::PATCHED_AT_TAG).and_then(|t| crate::journal::parse_time(t));
        let last = patched.into_iter().chain(i.launch_time).max();
        let age = last.and_then(|t| (now - t).to_std().ok());
        if age.is_some_and(|a| a > max) {
            let what =
                if patched.is_some_and(|p| Some(p) == last) { "patched" } else { "launched (never patched by amictl)" };
            let message = format!(
                "instance {}: last {what} {} ago, over {}",
                i.id,
                crate::time::format_duration(std::time::Duration::from_secs(age.unwrap().as_secs() / 86_400 * 86_400)),
                crate::time::format_duration(max)
            );
            out.push(at.finding(Severity::Medium, "instance-patch-stale", &i.id, Some(&i.image_id), message));
        }
    }
    out
}

/// High, where [`rule_revoked`] is low: something launches the image that was withdrawn.
fn rule_runs_revoked(at: ScopeRef, prefix: &str, r: &Reference, image: &Image) -> Option<Finding> {
    let why = revoked_reason(image)?;
    let message = format!("{} runs revoked {} ({}): {why}", r.evidence, image.id, image.name);
    Some(at.finding(Severity::High, &format!("{prefix}-ami-revoked"), &r.id, Some(&image.id), message))
}

fn rule_runs_too_old(
    at: ScopeRef,
    policy: &ComplianceConfig,
    now: DateTime<Utc>,
    prefix: &str,
    r: &Reference,
    image: &Image,
) -> Option<Finding> {
    too_old(image, policy, now).then(|| {
        let message =
            format!("{} runs {} ({}), older than {} days", r.evidence, image.id, image.name, max_age_days(policy));
        at.finding(Severity::Medium, &format!("{prefix}-ami-too-old"), &r.id, Some(&image.id), message)
    })
}

/// One rule for both never scanned and failed: what matters here is that an unvetted image runs.
fn rule_runs_unscanned(
    at: ScopeRef,
    policy: &ComplianceConfig,
    prefix: &str,
    r: &Reference,
    image: &Image,
) -> Option<Finding> {
    let why = match scan(image, policy) {
        Scan::Passed => return None,
        Scan::Missing => "never scanned",
        Scan::Failed(_) => "failed its security scan",
    };
    let message = format!("{} runs {} ({}), {why}", r.evidence, image.id, image.name);
    Some(at.finding(Severity::Medium, &format!("{prefix}-ami-not-scanned"), &r.id, Some(&image.id), message))
}

/// A reference that leads nowhere, with the analysis's evidence as the message. A missing image
/// is high when something may launch from it now (a live instance or ASG), low when only a
/// stored definition names it.
fn rule_dangling(at: ScopeRef, d: &Dangling) -> Finding {
    let missing_image = d.image_id.as_deref();
    let (severity, rule, image_id) = match d.kind {
        DanglingKind::MissingImage if d.active => {
            let prefix = if d.resource.starts_with("i-") { "instance" } else { "asg" };
            (Severity::High, format!("{prefix}-ami-deregistered"), missing_image)
        }
        DanglingKind::MissingImage => (Severity::Low, "template-ami-deregistered".into(), missing_image),
        DanglingKind::MissingLaunchTemplate
        | DanglingKind::MissingTemplateVersion
        | DanglingKind::MissingLaunchConfiguration => (Severity::High, "asg-missing-launch-template".into(), None),
        DanglingKind::UnresolvedImageParameter => (Severity::Info, "template-image-parameter".into(), None),
    };
    at.finding(severity, &rule, &d.resource, image_id, d.evidence.clone())
}

/// Storage paid for an AMI that is gone (see [`usage::orphaned_snapshots`]).
fn rule_orphaned_snapshot(at: ScopeRef, o: &OrphanSnapshot) -> Finding {
    let message = format!(
        "{} ({} GiB) was made by {:?} for {}, which is gone",
        o.snapshot_id, o.volume_size_gib, o.origin, o.image_id
    );
    at.finding(Severity::Low, "orphaned-snapshot", &o.snapshot_id, Some(&o.image_id), message)
}

#[cfg(test)]
mod tests {
    //! One test per rule of the audit, and one for each function that composes them; whole
    //! reports are checked through `audit` by the integration tests and the CLI's render tests.

    use super::*;
    use crate::catalog::{REVOKED_REASON_TAG, REVOKED_TAG};
    use crate::fixtures::{image, now};
    use crate::inventory::{Instance, LaunchPermission};
    use crate::policy::AFTER_TAG;
    use crate::usage::SnapshotOrigin;

    fn at() -> ScopeRef<'static> {
        ScopeRef { account: "1", region: "r" }
    }

    const PASSED: (&str, &str) = ("amictl:scan", "passed");

    /// Images at most 90 days old; sharing allowed with account 222 only.
    fn policy() -> ComplianceConfig {
        ComplianceConfig {
            max_age: std::time::Duration::from_secs(90 * 86_400),
            allowed_accounts: vec!["222".into()],
            ..Default::default()
        }
    }

    fn scope(images: Vec<Image>) -> RegionInventory {
        RegionInventory { account: "1".into(), region: "r".into(), images, ..Default::default() }
    }

    fn instance(id: &str, image_id: &str, state: &str) -> Instance {
        Instance {
            id: id.into(),
            image_id: image_id.into(),
            state: state.into(),
            name: None,
            launch_time: None,
            tags: Default::default(),
        }
    }

    fn runs(kind: RefKind, id: &str, evidence: &str) -> Reference {
        Reference { kind, id: id.into(), evidence: evidence.into() }
    }

    fn snapshot(id: &str, encrypted: bool, description: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            description: description.into(),
            encrypted,
            volume_size_gib: 8,
            start_time: None,
            tags: Default::default(),
        }
    }

    fn rules(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.rule.as_str()).collect()
    }

    #[test]
    fn too_old_images_are_findings_and_images_of_unknown_age_are_not() {
        let f = rule_too_old(at(), &policy(), now(), &image("ami-1", 100, &[])).unwrap();
        assert_eq!((f.severity, f.rule.as_str(), f.resource.as_str()), (Severity::Medium, "ami-too-old", "ami-1"));
        assert_eq!((f.account.as_str(), f.region.as_str(), f.image_id.as_deref()), ("1", "r", Some("ami-1")));
        assert_eq!(f.message, "ami-1 (ami-1-name) is 100 days old; the maximum is 90 days");
        assert_eq!(rule_too_old(at(), &policy(), now(), &image("ami-1", 90, &[])), None);
        let unknown = Image { creation_date: None, ..image("ami-1", 0, &[]) };
        assert_eq!(rule_too_old(at(), &policy(), now(), &unknown), None);
    }

    #[test]
    fn a_malformed_retirement_tag_is_a_finding() {
        let f = rule_malformed_retire_tag(at(), &image("ami-1", 1, &[(AFTER_TAG, "soon")])).unwrap();
        assert_eq!(f.rule, "ami-malformed-retire-tag");
        assert!(f.message.starts_with("ami-1 (ami-1-name) has a malformed retirement tag: tag "), "{}", f.message);
        assert!(f.message.ends_with("; it is kept until the tag is fixed"), "{}", f.message);
        assert_eq!(rule_malformed_retire_tag(at(), &image("ami-1", 1, &[(AFTER_TAG, "2026-01-01T00:00:00Z")])), None);
    }

    #[test]
    fn an_image_without_a_scan_tag_is_not_scanned() {
        let f = rule_not_scanned(at(), &policy(), &image("ami-1", 1, &[])).unwrap();
        assert_eq!((f.severity, f.rule.as_str()), (Severity::Medium, "ami-not-scanned"));
        assert_eq!(f.message, "ami-1 (ami-1-name) has no amictl:scan tag");
        assert_eq!(rule_not_scanned(at(), &policy(), &image("ami-1", 1, &[PASSED])), None);
        assert_eq!(rule_not_scanned(at(), &policy(), &image("ami-1", 1, &[("amictl:scan", "failed")])), None);
    }

    #[test]
    fn a_scan_value_that_is_not_a_passing_one_fails() {
        let f = rule_scan_failed(at(), &policy(), &image("ami-1", 1, &[("amictl:scan", "pending")])).unwrap();
        assert_eq!((f.severity, f.rule.as_str()), (Severity::High, "ami-scan-failed"));
        assert_eq!(f.message, "ami-1 (ami-1-name) has amictl:scan=pending");
        assert_eq!(rule_scan_failed(at(), &policy(), &image("ami-1", 1, &[PASSED])), None);
        assert_eq!(rule_scan_failed(at(), &policy(), &image("ami-1", 1, &[])), None, "missing is not failed");
    }

    #[test]
    fn a_revoked_image_says_why() {
        let revoked = image("ami-1", 1, &[(REVOKED_TAG, ""), (REVOKED_REASON_TAG, "CVE-1")]);
        let f = rule_revoked(at(), &revoked).unwrap();
        assert_eq!((f.severity, f.rule.as_str()), (Severity::Low, "ami-revoked"));
        assert_eq!(f.message, "ami-1 (ami-1-name) is revoked: CVE-1");
        let no_reason = rule_revoked(at(), &image("ami-1", 1, &[(REVOKED_TAG, "")])).unwrap();
        assert_eq!(no_reason.message, "ami-1 (ami-1-name) is revoked: no reason given");
        assert_eq!(rule_revoked(at(), &image("ami-1", 1, &[])), None);
    }

    #[test]
    fn a_public_image_is_critical() {
        let s = scope(vec![Image { public: true, ..image("ami-1", 1, &[]) }, image("ami-2", 1, &[])]);
        let usage = usage::analyze(&s);
        let f = rule_public(at(), &s.images[0], usage.refs("ami-1")).unwrap();
        assert_eq!((f.severity, f.rule.as_str()), (Severity::Critical, "ami-public"));
        assert_eq!(f.message, "ami-1 (ami-1-name) is public: anyone can launch it");
        assert_eq!(rule_public(at(), &s.images[1], usage.refs("ami-2")), None);
    }

    #[test]
    fn each_share_outside_the_allowlist_is_a_finding() {
        let mut s = scope(vec![image("ami-1", 1, &[])]);
        let shares = vec![
            LaunchPermission::Account("222".into()),
            LaunchPermission::Account("333".into()),
            LaunchPermission::Organization("o-1".into()),
        ];
        s.launch_permissions.insert("ami-1".into(), shares);
        let usage = usage::analyze(&s);
        let f = rule_shared_outside_allowlist(at(), &policy(), &s.images[0], usage.refs("ami-1"));
        let messages: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "ami-1 (ami-1-name) is shared with 333, which is not an allowed account",
                "ami-1 (ami-1-name) is shared with organization o-1, which is not an allowed account",
            ]
        );
        assert!(f.iter().all(|f| f.severity == Severity::High && f.rule == "ami-shared-outside-allowlist"));
    }

    #[test]
    fn unencrypted_snapshots_are_named_in_one_finding() {
        let mut s = scope(vec![]);
        s.snapshots = vec![snapshot("snap-1", true, ""), snapshot("snap-2", false, ""), snapshot("snap-3", false, "")];
        let snapshots = snapshot_index(&s);
        let mapped = ["snap-1", "snap-2", "snap-3", "snap-not-ours"].map(String::from).to_vec();
        let img = Image { snapshot_ids: mapped, ..image("ami-1", 1, &[]) };
        let f = rule_unencrypted_snapshot(at(), &snapshots, &img).unwrap();
        assert_eq!((f.severity, f.rule.as_str()), (Severity::Medium, "ami-unencrypted-snapshot"));
        assert_eq!(f.message, "ami-1 (ami-1-name) has unencrypted snapshot(s) snap-2, snap-3");
        let encrypted = Image { snapshot_ids: vec!["snap-1".into()], ..image("ami-1", 1, &[]) };
        assert_eq!(rule_unencrypted_snapshot(at(), &snapshots, &encrypted), None);
    }

    #[test]
    fn image_rules_report_in_table_order() {
        let s = scope(vec![image("ami-1", 100, &[(REVOKED_TAG, "")])]);
        let usage = usage::analyze(&s);
        let f = image_rules(at(), &usage, &snapshot_index(&s), &policy(), now(), &s.images[0]);
        assert_eq!(rules(&f), ["ami-too-old", "ami-not-scanned", "ami-revoked"]);
        let clean = image("ami-1", 1, &[PASSED]);
        assert!(image_rules(at(), &usage, &snapshot_index(&s), &policy(), now(), &clean).is_empty());
    }

    #[test]
    fn an_image_record_separates_use_from_history() {
        let mut s = scope(vec![image("ami-1", 10, &[]), image("ami-2", 10, &[])]);
        s.instances = vec![instance("i-1", "ami-1", "running"), instance("i-2", "ami-1", "terminated")];
        s.launch_permissions.insert("ami-2".into(), vec![]);
        let usage = usage::analyze(&s);
        let families = crate::config::Config::default().family_rules().unwrap();
        let r = image_record(&s, &usage, &families, now(), &s.images[0], vec![]);
        assert!(r.in_use);
        assert_eq!((r.in_use_by[0].id.as_str(), r.history[0].id.as_str()), ("i-1", "i-2"));
        assert_eq!((r.age_days, r.sharing_checked), (Some(10), false));
        let r = image_record(&s, &usage, &families, now(), &s.images[1], vec![]);
        assert!(!r.in_use && r.sharing_checked, "its launch permissions were fetched");
    }

    #[test]
    fn only_live_instances_and_asgs_run_images() {
        assert_eq!(runner_prefix(&runs(RefKind::Instance, "i-1", "")), Some("instance"));
        assert_eq!(runner_prefix(&runs(RefKind::AutoScalingGroup, "web", "")), Some("asg"));
        assert_eq!(runner_prefix(&runs(RefKind::TerminatedInstance, "i-1", "")), None);
        assert_eq!(runner_prefix(&runs(RefKind::LaunchTemplate, "lt-1:1", "")), None);
    }

    #[test]
    fn running_a_revoked_image_is_high() {
        let r = runs(RefKind::Instance, "i-1", "instance i-1 (running)");
        let revoked = image("ami-1", 1, &[(REVOKED_TAG, ""), (REVOKED_REASON_TAG, "CVE-1")]);
        let f = rule_runs_revoked(at(), "instance", &r, &revoked).unwrap();
        assert_eq!((f.severity, f.rule.as_str(), f.resource.as_str()), (Severity::High, "instance-ami-revoked", "i-1"));
        assert_eq!(f.image_id.as_deref(), Some("ami-1"));
        assert_eq!(f.message, "instance i-1 (running) runs revoked ami-1 (ami-1-name): CVE-1");
        assert_eq!(rule_runs_revoked(at(), "instance", &r, &image("ami-1", 1, &[])), None);
    }

    #[test]
    fn running_a_too_old_image_is_a_finding() {
        let r = runs(RefKind::AutoScalingGroup, "web", "asg web via lt-1:$Latest (desired 2)");
        let f = rule_runs_too_old(at(), &policy(), now(), "asg", &r, &image("ami-1", 100, &[])).unwrap();
        assert_eq!((f.severity, f.rule.as_str(), f.resource.as_str()), (Severity::Medium, "asg-ami-too-old", "web"));
        assert_eq!(f.message, "asg web via lt-1:$Latest (desired 2) runs ami-1 (ami-1-name), older than 90 days");
        assert_eq!(rule_runs_too_old(at(), &policy(), now(), "asg", &r, &image("ami-1", 10, &[])), None);
    }

    #[test]
    fn running_an_unscanned_or_failed_image_is_one_rule() {
        let r = runs(RefKind::Instance, "i-1", "instance i-1 (running)");
        let never = rule_runs_unscanned(at(), &policy(), "instance", &r, &image("ami-1", 1, &[])).unwrap();
        assert_eq!((never.severity, never.rule.as_str()), (Severity::Medium, "instance-ami-not-scanned"));
        assert_eq!(never.message, "instance i-1 (running) runs ami-1 (ami-1-name), never scanned");
        let failed = image("ami-1", 1, &[("amictl:scan", "failed")]);
        let failed = rule_runs_unscanned(at(), &policy(), "instance", &r, &failed).unwrap();
        assert_eq!(failed.message, "instance i-1 (running) runs ami-1 (ami-1-name), failed its security scan");
        assert_eq!(rule_runs_unscanned(at(), &policy(), "instance", &r, &image("ami-1", 1, &[PASSED])), None);
    }

    #[test]
    fn runtime_findings_judge_foreign_images_and_leave_gone_ones_to_dangling() {
        let mut s = scope(vec![Image { state: "deregistered".into(), ..image("ami-1", 100, &[]) }]);
        s.foreign_images = vec![image("ami-9", 100, &[PASSED])];
        s.instances = vec![
            instance("i-1", "ami-1", "running"),
            instance("i-2", "ami-9", "running"),
            instance("i-3", "ami-9", "terminated"),
        ];
        let usage = usage::analyze(&s);
        let f = runtime_findings(at(), &s, &usage, &policy(), now());
        assert_eq!(rules(&f), ["instance-ami-too-old"]);
        assert_eq!((f[0].resource.as_str(), f[0].image_id.as_deref()), ("i-2", Some("ami-9")));
    }

    #[test]
    fn each_kind_of_dangling_reference_has_its_rule() {
        let dangling = |kind, resource: &str, image_id: Option<&str>, active| Dangling {
            kind,
            resource: resource.into(),
            evidence: format!("evidence of {resource}"),
            image_id: image_id.map(str::to_string),
            active,
        };
        let cases = [
            (
                dangling(DanglingKind::MissingImage, "i-1", Some("ami-1"), true),
                Severity::High,
                "instance-ami-deregistered",
            ),
            (dangling(DanglingKind::MissingImage, "web", Some("ami-1"), true), Severity::High, "asg-ami-deregistered"),
            (
                dangling(DanglingKind::MissingImage, "lt-1:1", Some("ami-1"), false),
                Severity::Low,
                "template-ami-deregistered",
            ),
            (
                dangling(DanglingKind::MissingTemplateVersion, "web", None, true),
                Severity::High,
                "asg-missing-launch-template",
            ),
            (
                dangling(DanglingKind::UnresolvedImageParameter, "lt-1:2", None, false),
                Severity::Info,
                "template-image-parameter",
            ),
        ];
        for (d, severity, rule) in cases {
            let f = rule_dangling(at(), &d);
            assert_eq!((f.severity, f.rule.as_str()), (severity, rule));
            assert_eq!((f.resource, f.image_id, f.message), (d.resource, d.image_id, d.evidence));
        }
    }

    #[test]
    fn an_orphaned_snapshot_names_its_gone_image() {
        let o = OrphanSnapshot {
            snapshot_id: "snap-1".into(),
            image_id: "ami-9".into(),
            origin: SnapshotOrigin::CreateImage,
            volume_size_gib: 8,
        };
        let f = rule_orphaned_snapshot(at(), &o);
        assert_eq!((f.severity, f.rule.as_str(), f.resource.as_str()), (Severity::Low, "orphaned-snapshot", "snap-1"));
        assert_eq!(f.image_id.as_deref(), Some("ami-9"));
        assert_eq!(f.message, "snap-1 (8 GiB) was made by CreateImage for ami-9, which is gone");
    }

    #[test]
    fn a_scope_reports_image_findings_on_the_record_too_and_its_orphans() {
        let mut s = scope(vec![image("ami-1", 1, &[])]);
        s.snapshots = vec![snapshot("snap-1", true, "Created by CreateImage(i-0abc) for ami-00000009")];
        let usage = usage::analyze(&s);
        let families = crate::config::Config::default().family_rules().unwrap();
        let out = audit_scope(&s, &usage, &families, &policy(), now());
        assert_eq!(rules(&out.findings), ["ami-not-scanned", "orphaned-snapshot"]);
        assert_eq!(out.images[0].findings, out.findings[..1]);
        assert_eq!(out.orphans[0].account, "1");
        assert_eq!(out.orphans[0].snapshot.snapshot_id, "snap-1");
    }

    #[test]
    fn a_failed_last_patch_is_high_and_a_stale_one_medium_when_an_age_is_set() {
        let now = crate::fixtures::now();
        let mut failed = instance("i-f", "ami-1", "running");
        failed.tags.insert(crate::patching::STATUS_TAG.into(), "Failed".into());
        failed.tags.insert(crate::patching::RUN_TAG.into(), "7".into());
        let f = patch_findings(at(), &policy(), now, &failed);
        assert_eq!(rules(&f), ["instance-patch-failed"]);
        assert!(f[0].message.contains("(run 7) ended Failed"), "{}", f[0].message);

        let mut p = policy();
        p.max_patch_age = Some(std::time::Duration::from_secs(30 * 86_400));
        let mut old = instance("i-o", "ami-1", "running");
        old.launch_time = Some(now - chrono::Duration::days(100));
        old.tags.insert(crate::patching::PATCHED_AT_TAG.into(), crate::time::rfc3339(now - chrono::Duration::days(45)));
        let f = patch_findings(at(), &p, now, &old);
        assert_eq!(rules(&f), ["instance-patch-stale"]);
        assert!(f[0].message.contains("last patched 45d ago, over 30d"), "{}", f[0].message);
        let mut fresh = old.clone();
        fresh
            .tags
            .insert(crate::patching::PATCHED_AT_TAG.into(), crate::time::rfc3339(now - chrono::Duration::days(2)));
        assert!(patch_findings(at(), &p, now, &fresh).is_empty());
        let mut never = instance("i-n", "ami-1", "running");
        never.launch_time = Some(now - chrono::Duration::days(31));
        assert!(patch_findings(at(), &p, now, &never)[0].message.contains("never patched by amictl"));
        assert!(patch_findings(at(), &policy(), now, &never).is_empty(), "no age set: not checked");
    }
}

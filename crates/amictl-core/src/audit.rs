//! Compliance audit: a pure function from inventory, usage and policy to findings.
//!
//! Rules (ids are stable; scripts match on them):
//!
//! | rule | severity | what |
//! |---|---|---|
//! | `ami-too-old` | medium | an image older than `compliance.max_age` |
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
//! | `orphaned-snapshot` | low | an AMI snapshot whose AMI is gone |
//! | `ami-revoked` | low | a revoked image (still registered) |
//! | `instance-ami-revoked` / `asg-ami-revoked` | high | a live instance or ASG runs a revoked image |

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ComplianceConfig;
use crate::family::FamilyRules;
use crate::inventory::{Image, Inventory, RegionInventory, ScopeFailure};
use crate::report::{Finding, Severity};
use crate::usage::{self, DanglingKind, OrphanSnapshot, RefKind, Reference, Usage};

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
        audit_scope(scope, &usage, families, policy, now, &mut images, &mut findings, &mut orphans);
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

/// What is wrong with an image itself, independent of who uses it.
#[derive(Debug, Clone, Copy, Default)]
struct ImageHealth {
    too_old: bool,
    unscanned: bool,
    scan_failed: bool,
}

fn health(image: &Image, policy: &ComplianceConfig, now: DateTime<Utc>) -> ImageHealth {
    let max_age = chrono::Duration::from_std(policy.max_age).unwrap_or(chrono::Duration::MAX);
    let too_old = image.creation_date.is_some_and(|c| now - c > max_age);
    match image.tags.get(&policy.scan_tag) {
        None => ImageHealth { too_old, unscanned: true, scan_failed: false },
        Some(v) => ImageHealth { too_old, unscanned: false, scan_failed: !policy.scan_passed_values.contains(v) },
    }
}

#[allow(clippy::too_many_arguments)]
fn audit_scope(
    scope: &RegionInventory,
    usage: &Usage,
    families: &FamilyRules,
    policy: &ComplianceConfig,
    now: DateTime<Utc>,
    images: &mut Vec<ImageRecord>,
    findings: &mut Vec<Finding>,
    orphans: &mut Vec<OrphanRecord>,
) {
    let finding = |severity, rule: &str, resource: &str, image_id: Option<&str>, message: String| Finding {
        severity,
        rule: rule.into(),
        account: scope.account.clone(),
        region: scope.region.clone(),
        resource: resource.into(),
        image_id: image_id.map(str::to_string),
        message,
    };
    let snapshots: HashMap<&str, &crate::inventory::Snapshot> =
        scope.snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
    let by_id: HashMap<&str, &Image> =
        scope.images.iter().chain(&scope.foreign_images).map(|i| (i.id.as_str(), i)).collect();

    for image in &scope.images {
        let mut own = Vec::new();
        let h = health(image, policy, now);
        let age_days = image.creation_date.map(|c| (now - c).num_days());
        if h.too_old {
            own.push(finding(
                Severity::Medium,
                "ami-too-old",
                &image.id,
                Some(&image.id),
                format!(
                    "{} ({}) is {} days old; the maximum is {} days",
                    image.id,
                    image.name,
                    age_days.unwrap_or(0),
                    policy.max_age.as_secs() / 86_400
                ),
            ));
        }
        if let Some(why) = crate::policy::malformed_retire_tags(&image.tags) {
            own.push(finding(
                Severity::Medium,
                "ami-malformed-retire-tag",
                &image.id,
                Some(&image.id),
                format!(
                    "{} ({}) has a malformed retirement tag: {why}; it is kept until the tag is fixed",
                    image.id, image.name
                ),
            ));
        }
        if h.unscanned {
            own.push(finding(
                Severity::Medium,
                "ami-not-scanned",
                &image.id,
                Some(&image.id),
                format!("{} ({}) has no {} tag", image.id, image.name, policy.scan_tag),
            ));
        }
        if h.scan_failed {
            let v = image.tags.get(&policy.scan_tag).map(String::as_str).unwrap_or("");
            own.push(finding(
                Severity::High,
                "ami-scan-failed",
                &image.id,
                Some(&image.id),
                format!("{} ({}) has {}={v}", image.id, image.name, policy.scan_tag),
            ));
        }
        if crate::catalog::is_revoked(image) {
            let why =
                image.tags.get(crate::catalog::REVOKED_REASON_TAG).map(String::as_str).unwrap_or("no reason given");
            own.push(finding(
                Severity::Low,
                "ami-revoked",
                &image.id,
                Some(&image.id),
                format!("{} ({}) is revoked: {why}", image.id, image.name),
            ));
        }
        let refs = usage.refs(&image.id);
        if refs.iter().any(|r| r.kind == RefKind::Public) {
            own.push(finding(
                Severity::Critical,
                "ami-public",
                &image.id,
                Some(&image.id),
                format!("{} ({}) is public: anyone can launch it", image.id, image.name),
            ));
        }
        for r in refs.iter().filter(|r| r.kind == RefKind::SharedAccount) {
            if !policy.allowed_accounts.contains(&r.id) {
                own.push(finding(
                    Severity::High,
                    "ami-shared-outside-allowlist",
                    &image.id,
                    Some(&image.id),
                    format!("{} ({}) is {}, which is not an allowed account", image.id, image.name, r.evidence),
                ));
            }
        }
        let unencrypted: Vec<&str> = image
            .snapshot_ids
            .iter()
            .filter(|s| snapshots.get(s.as_str()).is_some_and(|s| !s.encrypted))
            .map(String::as_str)
            .collect();
        if !unencrypted.is_empty() {
            own.push(finding(
                Severity::Medium,
                "ami-unencrypted-snapshot",
                &image.id,
                Some(&image.id),
                format!("{} ({}) has unencrypted snapshot(s) {}", image.id, image.name, unencrypted.join(", ")),
            ));
        }
        findings.extend(own.iter().cloned());
        images.push(ImageRecord {
            id: image.id.clone(),
            account: scope.account.clone(),
            region: scope.region.clone(),
            name: image.name.clone(),
            family: families.family_of(image).map(|m| m.family),
            state: image.state.clone(),
            creation_date: image.creation_date,
            age_days,
            in_use: usage.in_use(&image.id),
            in_use_by: refs.iter().filter(|r| r.is_use()).cloned().collect(),
            history: refs.iter().filter(|r| !r.is_use()).cloned().collect(),
            sharing_checked: image.public || scope.launch_permissions.contains_key(&image.id),
            findings: own,
        });
    }

    // What live instances and ASGs run.
    for (image_id, refs) in &usage.references {
        for r in refs.iter().filter(|r| matches!(r.kind, RefKind::Instance | RefKind::AutoScalingGroup)) {
            let prefix = if r.kind == RefKind::Instance { "instance" } else { "asg" };
            let Some(image) = by_id.get(image_id.as_str()).filter(|i| i.state != "deregistered") else {
                continue; // reported below as dangling
            };
            let h = health(image, policy, now);
            if crate::catalog::is_revoked(image) {
                let why =
                    image.tags.get(crate::catalog::REVOKED_REASON_TAG).map(String::as_str).unwrap_or("no reason given");
                findings.push(finding(
                    Severity::High,
                    &format!("{prefix}-ami-revoked"),
                    &r.id,
                    Some(image_id),
                    format!("{} runs revoked {image_id} ({}): {why}", r.evidence, image.name),
                ));
            }
            if h.too_old {
                findings.push(finding(
                    Severity::Medium,
                    &format!("{prefix}-ami-too-old"),
                    &r.id,
                    Some(image_id),
                    format!(
                        "{} runs {image_id} ({}), older than {} days",
                        r.evidence,
                        image.name,
                        policy.max_age.as_secs() / 86_400
                    ),
                ));
            }
            if h.unscanned || h.scan_failed {
                let why = if h.scan_failed { "failed its security scan" } else { "never scanned" };
                findings.push(finding(
                    Severity::Medium,
                    &format!("{prefix}-ami-not-scanned"),
                    &r.id,
                    Some(image_id),
                    format!("{} runs {image_id} ({}), {why}", r.evidence, image.name),
                ));
            }
        }
    }

    for d in &usage.dangling {
        match d.kind {
            DanglingKind::MissingImage if d.active => {
                let prefix = if d.resource.starts_with("i-") { "instance" } else { "asg" };
                findings.push(finding(
                    Severity::High,
                    &format!("{prefix}-ami-deregistered"),
                    &d.resource,
                    d.image_id.as_deref(),
                    d.evidence.clone(),
                ));
            }
            DanglingKind::MissingImage => {
                findings.push(finding(
                    Severity::Low,
                    "template-ami-deregistered",
                    &d.resource,
                    d.image_id.as_deref(),
                    d.evidence.clone(),
                ));
            }
            DanglingKind::MissingLaunchTemplate
            | DanglingKind::MissingTemplateVersion
            | DanglingKind::MissingLaunchConfiguration => {
                findings.push(finding(
                    Severity::High,
                    "asg-missing-launch-template",
                    &d.resource,
                    None,
                    d.evidence.clone(),
                ));
            }
            DanglingKind::UnresolvedImageParameter => {
                findings.push(finding(
                    Severity::Info,
                    "template-image-parameter",
                    &d.resource,
                    None,
                    d.evidence.clone(),
                ));
            }
        }
    }

    for o in usage::orphaned_snapshots(scope) {
        findings.push(finding(
            Severity::Low,
            "orphaned-snapshot",
            &o.snapshot_id,
            Some(&o.image_id),
            format!(
                "{} ({} GiB) was made by {:?} for {}, which is gone",
                o.snapshot_id, o.volume_size_gib, o.origin, o.image_id
            ),
        ));
        orphans.push(OrphanRecord { account: scope.account.clone(), region: scope.region.clone(), snapshot: o });
    }
}

//! The plain-data picture of an estate: what exists in each account and region.
//!
//! Everything here is filled by [`crate::aws::collect`] and read by the pure analyses
//! ([`crate::usage`], [`crate::audit`]); nothing here talks to AWS.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// All scopes (account × region) that were asked for, each either collected or failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub scopes: Vec<RegionInventory>,
    /// Scopes that could not be listed; an inventory with failures is incomplete and
    /// destructive decisions must not be taken on it.
    pub failures: Vec<ScopeFailure>,
}

impl Inventory {
    /// Every scope listed, and nothing in any scope left unread.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty() && self.scopes.iter().all(|s| s.gaps.is_empty())
    }

    /// What is missing, one line per scope failure or gap.
    pub fn incompleteness(&self) -> Vec<String> {
        let failed = self.failures.iter().map(|f| format!("{} could not be listed: {}", f.scope, f.error));
        let gaps = self.scopes.iter().flat_map(|s| s.gaps.iter().map(move |g| format!("{}: {g}", s.scope())));
        failed.chain(gaps).collect()
    }

    pub fn image_count(&self) -> usize {
        self.scopes.iter().map(|s| s.images.len()).sum()
    }
}

/// Where a resource lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScopeFailure {
    pub scope: Scope,
    pub error: String,
}

/// One account in one region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionInventory {
    pub account: String,
    pub region: String,
    /// Images this account owns, in every state DescribeImages shows.
    pub images: Vec<Image>,
    /// Images that something here references but this account does not own (public or shared
    /// with us, e.g. vendor base images), looked up by id. A referenced id in neither list is gone.
    pub foreign_images: Vec<Image>,
    /// Every snapshot this account owns.
    pub snapshots: Vec<Snapshot>,
    /// Instances in every state, terminated ones included (they are history, not use).
    pub instances: Vec<Instance>,
    pub launch_templates: Vec<LaunchTemplate>,
    pub launch_configurations: Vec<LaunchConfiguration>,
    pub auto_scaling_groups: Vec<AutoScalingGroup>,
    /// Explicit launch permissions, for the images whose verdict depends on them
    /// (see [`crate::usage::images_needing_launch_permissions`]). An image absent from this
    /// map was not checked.
    pub launch_permissions: BTreeMap<String, Vec<LaunchPermission>>,
    /// When the oldest reading in `launch_permissions` that amictl timed was taken: an apply
    /// takes a reading this recent as its re-check (see [`crate::apply::PERMISSIONS_FRESH`]).
    /// None: none timed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_permissions_read_at: Option<DateTime<Utc>>,
    /// Channels (`/amictl/<family>/<channel>` SSM parameters) with their history.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// EC2 Fleets, Spot Fleet requests and Spot Instance requests: they launch images too.
    #[serde(default)]
    pub fleets: Vec<Fleet>,
    /// The SSM parameters launch templates and fleets take their image from, as read now: the
    /// reference after `resolve:ssm:` (`/golden/web`, `/golden/web:12`, `/golden/web:prod`) →
    /// its value.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterValue>,
    /// Snapshot → the image whose block-device mapping held it when amictl deregistered that
    /// image (from the journal): with the snapshot's description, the only evidence that makes
    /// a staged snapshot deletable. A tag alone never does.
    #[serde(default)]
    pub retired_snapshots: BTreeMap<String, String>,
    /// Evidence this scope could not read (a parameter that is missing or unreadable): its
    /// in-use answer is incomplete, so nothing in it may be retired.
    #[serde(default)]
    pub gaps: Vec<String>,
    /// Image → account it is shared with → how that account uses it, as read in that account
    /// (same region) by [`crate::usage::link_accounts`]. Absent: not looked at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_use: BTreeMap<String, BTreeMap<String, SharedUse>>,
}

/// How an account an image is shared with uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedUse {
    /// Its references to the image, e.g. `instance i-… (running)`.
    Used(Vec<String>),
    /// Read in full: nothing there uses it.
    Unused,
    /// Not read (not among the accounts amictl reads, or its inventory failed): why.
    Unreachable(String),
}

/// The value of one `resolve:ssm:` reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterValue {
    /// What the parameter holds (an AMI id, when it is used as one).
    pub value: String,
    /// The parameter version the value is from.
    pub version: i64,
}

/// Something that launches instances on its own: an EC2 Fleet, a Spot Fleet request or a
/// Spot Instance request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    pub kind: FleetKind,
    /// `fleet-…`, `sfr-…` or `sir-…`.
    pub fleet_id: String,
    /// As the API reports it (`active`, `submitted`, `open`, `cancelled`, …).
    pub state: String,
    /// EC2 Fleet `instant|request|maintain`; Spot Instance request `one-time|persistent`.
    pub request_type: Option<String>,
    /// Images named directly: launch specifications and overrides.
    pub image_ids: Vec<String>,
    /// Launch templates it launches from, with their version selectors.
    pub templates: Vec<TemplateRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FleetKind {
    Ec2Fleet,
    SpotFleet,
    SpotRequest,
}

impl FleetKind {
    pub fn label(self) -> &'static str {
        match self {
            FleetKind::Ec2Fleet => "ec2 fleet",
            FleetKind::SpotFleet => "spot fleet",
            FleetKind::SpotRequest => "spot request",
        }
    }
}

impl Fleet {
    /// Whether it may launch an instance from now on: an EC2 Fleet or Spot Fleet that is
    /// submitted, active or being modified (an `instant` EC2 Fleet launched once and is done);
    /// a Spot Instance request that is open, or persistent and not closed. Instances it already
    /// launched are counted as instances.
    pub fn may_launch(&self) -> bool {
        let state = self.state.as_str();
        match self.kind {
            FleetKind::Ec2Fleet => {
                matches!(state, "submitted" | "active" | "modifying") && self.request_type.as_deref() != Some("instant")
            }
            FleetKind::SpotFleet => matches!(state, "submitted" | "active" | "modifying"),
            FleetKind::SpotRequest => {
                state == "open"
                    || (self.request_type.as_deref() == Some("persistent") && matches!(state, "active" | "disabled"))
            }
        }
    }
}

impl RegionInventory {
    pub fn scope(&self) -> Scope {
        Scope { account: self.account.clone(), region: self.region.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "image_id", alias = "id")]
    pub id: String,
    pub name: String,
    pub owner: String,
    /// `available`, `pending`, `disabled`, `deregistered`, `failed`, ...
    pub state: String,
    #[serde(with = "crate::time::opt_secs")]
    pub creation_date: Option<DateTime<Utc>>,
    pub public: bool,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// EBS snapshots in the block device mappings.
    pub snapshot_ids: Vec<String>,
    #[serde(with = "crate::time::opt_secs")]
    pub deprecation_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "snapshot_id", alias = "id")]
    pub id: String,
    pub description: String,
    pub encrypted: bool,
    pub volume_size_gib: i32,
    #[serde(with = "crate::time::opt_secs")]
    pub start_time: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    #[serde(rename = "instance_id", alias = "id")]
    pub id: String,
    pub image_id: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    pub name: Option<String>,
    #[serde(with = "crate::time::opt_secs")]
    pub launch_time: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// Terminated (or terminating) instances no longer use their image.
    pub fn is_live(&self) -> bool {
        !matches!(self.state.as_str(), "terminated" | "shutting-down")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplate {
    #[serde(rename = "launch_template_id", alias = "id")]
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
    /// Every version, as DescribeLaunchTemplateVersions lists them.
    pub versions: Vec<LaunchTemplateVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplateVersion {
    pub number: i64,
    /// `ami-…`, `resolve:ssm:/…`, or absent (a version need not name an image).
    pub image_id: Option<String>,
}

impl LaunchTemplate {
    /// Resolves an ASG's version selector (`$Latest`, `$Default`, a number; absent means `$Default`).
    pub fn resolve(&self, selector: Option<&str>) -> Option<&LaunchTemplateVersion> {
        let number = match selector.unwrap_or("$Default") {
            "$Latest" => self.latest_version,
            "$Default" => self.default_version,
            n => n.trim().parse().ok()?,
        };
        self.versions.iter().find(|v| v.number == number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchConfiguration {
    pub name: String,
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoScalingGroup {
    pub name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    pub source: AsgSource,
    pub instance_ids: Vec<String>,
    /// The instances `InService` and `Healthy` now: what counts toward a minimum healthy share.
    #[serde(default)]
    pub in_service: Vec<String>,
}

/// What an Auto Scaling group launches from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AsgSource {
    LaunchTemplate {
        template: TemplateRef,
    },
    /// The launch template of a mixed instances policy, plus any per-override templates.
    MixedInstancesPolicy {
        template: TemplateRef,
        overrides: Vec<TemplateRef>,
    },
    LaunchConfiguration {
        name: String,
    },
    /// Neither (an ASG being created, or a shape amictl does not know).
    Unknown,
}

/// A launch template named by id or name, with a version selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    #[serde(rename = "launch_template_id", alias = "id")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

impl TemplateRef {
    pub fn label(&self) -> String {
        let who = self.id.as_deref().or(self.name.as_deref()).unwrap_or("?");
        format!("{who}:{}", self.version.as_deref().unwrap_or("$Default"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum LaunchPermission {
    Account(String),
    Group(String),
    Organization(String),
    OrganizationalUnit(String),
}

/// A channel: an SSM parameter `/amictl/<family>/<channel>` pointing at one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub family: String,
    pub name: String,
    pub parameter: String,
    pub image_id: String,
    /// Every value it had, oldest first (the last is the current one).
    pub history: Vec<ChannelEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    pub version: i64,
    pub image_id: String,
    #[serde(with = "crate::time::opt_secs")]
    pub modified: Option<DateTime<Utc>>,
    /// Who changed it, what, and the value before (recorded by amictl in the description).
    pub note: Option<ChangeNote>,
}

/// What amictl writes into the parameter description at each change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNote {
    pub action: String,
    pub by: String,
    #[serde(with = "crate::time::secs")]
    pub at: DateTime<Utc>,
    pub previous: Option<String>,
}

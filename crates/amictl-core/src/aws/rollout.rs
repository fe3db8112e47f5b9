//! The interfaces a deployment uses: Auto Scaling groups ([`Groups`]), Elastic Load Balancing
//! ([`LoadBalancing`]) and CloudWatch alarms ([`Alarms`]), with the types they speak. The SDK
//! implementations are in `groups.rs` and `balancing.rs`.

use serde::{Deserialize, Serialize};

use crate::error::CloudError;

/// One instance of an Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInstance {
    pub instance_id: String,
    /// `InService`, `Pending`, `Terminating`, ...
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`.
    pub health_status: String,
}

impl GroupInstance {
    pub fn in_service(&self) -> bool {
        self.lifecycle_state == "InService"
    }
    /// In service and healthy to Auto Scaling (what the group counts toward its capacity).
    pub fn serving(&self) -> bool {
        self.in_service() && self.health_status.eq_ignore_ascii_case("healthy")
    }
}

/// An Auto Scaling group as a deployment sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDetail {
    pub name: String,
    /// The launch template's id and the version the group names (`$Default`, `$Latest`, `7`),
    /// directly or through its mixed instances policy.
    pub template_id: Option<String>,
    pub template_version: Option<String>,
    pub launch_configuration: Option<String>,
    /// Whether it launches through a mixed instances policy (whose launch template amictl
    /// versions and pins; its overrides are kept).
    pub mixed_instances: bool,
    /// Launch templates that overrides of the mixed instances policy name for themselves:
    /// amictl cannot move those to a new image.
    #[serde(default)]
    pub override_templates: Vec<String>,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    pub instances: Vec<GroupInstance>,
    /// Subnets (VPCZoneIdentifier) and zones it launches in.
    #[serde(default)]
    pub subnets: Option<String>,
    #[serde(default)]
    pub availability_zones: Vec<String>,
    #[serde(default)]
    pub target_group_arns: Vec<String>,
    /// Classic load balancers the group is attached to.
    #[serde(default)]
    pub classic_load_balancers: Vec<String>,
    /// Traffic sources other than Elastic Load Balancing (VPC Lattice), `type:identifier`.
    #[serde(default)]
    pub other_traffic_sources: Vec<String>,
    /// Whether the group has a warm pool.
    #[serde(default)]
    pub warm_pool: bool,
    #[serde(default)]
    pub health_check_type: Option<String>,
    #[serde(default)]
    pub health_check_grace_period: Option<i32>,
    #[serde(default)]
    pub default_instance_warmup: Option<i32>,
    /// Scaling processes suspended on the group (`Launch`, `AlarmNotification`, ...).
    #[serde(default)]
    pub suspended_processes: Vec<String>,
}

impl GroupDetail {
    /// Whether the group's version is a number (not `$Latest` or `$Default`).
    pub fn pinned(&self) -> bool {
        self.template_version.as_deref().is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
    }
}

/// Instance refresh settings (StartInstanceRefresh's Preferences).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshPreferences {
    pub min_healthy: u8,
    pub max_healthy: Option<u16>,
    pub warmup_seconds: Option<i32>,
    pub checkpoints: Vec<u8>,
    pub checkpoint_delay_seconds: Option<i32>,
    pub skip_matching: bool,
    pub auto_rollback: bool,
    pub alarms: Vec<String>,
    pub bake_time_seconds: Option<i32>,
}

/// Where an instance refresh stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    pub id: String,
    /// `Pending`, `InProgress`, `Successful`, `Failed`, `Cancelling`, `Cancelled`,
    /// `RollbackInProgress`, `RollbackSuccessful`, `RollbackFailed`, `Baking`, ...
    pub status: String,
    pub reason: Option<String>,
    pub percentage: i32,
    pub to_update: i32,
    /// The launch template version it moves the group to (its DesiredConfiguration).
    pub desired_version: Option<i64>,
}

impl RefreshState {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "Successful" | "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed")
    }
}

/// Auto Scaling deployments: templates, groups, instance refreshes.
#[allow(async_fn_in_trait)]
pub trait Groups {
    async fn group(&self, name: &str) -> Result<Option<GroupDetail>, CloudError>;
    /// Every group's name.
    async fn group_names(&self) -> Result<Vec<String>, CloudError>;
    /// `(number, image id)` of a version of a template (`7`, `$Default`, `$Latest`).
    async fn template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<Option<(i64, Option<String>)>, CloudError>;
    /// A new version based on `source_version` with only the image changed; its number.
    async fn create_template_version(
        &self,
        template_id: &str,
        source_version: i64,
        image_id: &str,
        description: &str,
        client_token: &str,
    ) -> Result<i64, CloudError>;
    /// Points the group at `version` of `template_id` (through its mixed instances policy
    /// when it has one, whose overrides are kept).
    async fn pin_group(&self, group: &str, template_id: &str, version: i64) -> Result<(), CloudError>;
    async fn start_refresh(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
        preferences: &RefreshPreferences,
    ) -> Result<String, CloudError>;
    /// The newest refresh of the group (or the one with `id`).
    async fn refresh_state(&self, group: &str, id: Option<&str>) -> Result<Option<RefreshState>, CloudError>;
    async fn rollback_refresh(&self, group: &str) -> Result<(), CloudError>;
    /// Terminates a group instance (TerminateInstanceInAutoScalingGroup). With `decrement` the
    /// group's desired capacity goes down by one; without, the group launches a replacement.
    async fn terminate_in_group(&self, instance_id: &str, decrement: bool) -> Result<(), CloudError>;
    /// Sets the desired capacity (SetDesiredCapacity, cooldowns not honoured: a deployment's
    /// surge is not a scaling decision).
    async fn set_desired(&self, name: &str, desired: i32) -> Result<(), CloudError>;
    /// A new group shaped like `like` — sizes, subnets, zones, health checks, termination and
    /// maintenance policies, lifecycle hooks, tags — launching `version` of `template_id`
    /// (through a mixed instances policy like `like`'s when it has one), registered to
    /// `target_groups`, with `extra_tags` too. Scaling policies and scheduled actions are
    /// copied separately ([`Groups::copy_scaling`]), once the group takes traffic.
    async fn create_group_like(
        &self,
        like: &GroupDetail,
        name: &str,
        template_id: &str,
        version: i64,
        target_groups: &[String],
        extra_tags: &[(String, String)],
    ) -> Result<(), CloudError>;
    /// Copies `from`'s scaling policies and scheduled actions to `to` (by name, so a second copy
    /// overwrites the first); target tracking on a target group's request count follows
    /// `target_groups` (`(from's, to's)` ARNs). Returns what was copied (`policy NAME`, ...).
    async fn copy_scaling(
        &self,
        from: &str,
        to: &str,
        target_groups: &[(String, String)],
    ) -> Result<Vec<String>, CloudError>;
    /// Deletes a group and its instances.
    async fn delete_group(&self, name: &str) -> Result<(), CloudError>;
    /// Sets a group's minimum and desired capacity.
    async fn scale(&self, name: &str, min: i32, desired: i32) -> Result<(), CloudError>;
    /// Suspends (`suspend`) or resumes scaling processes of a group (SuspendProcesses,
    /// ResumeProcesses).
    async fn set_processes(&self, name: &str, processes: &[String], suspend: bool) -> Result<(), CloudError>;
}

/// A target group, as much as a deployment reads and copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupInfo {
    pub arn: String,
    pub name: String,
    pub protocol: Option<String>,
    pub port: Option<i32>,
    pub vpc_id: Option<String>,
    #[serde(default)]
    pub target_type: Option<String>,
    pub load_balancer_arns: Vec<String>,
}

/// One target's health in a target group, as DescribeTargetHealth reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`, ...
    pub state: String,
    /// `Elb.InitialHealthChecking`, `Target.NotInUse`, ...
    pub reason: Option<String>,
}

/// Where a listener's default actions or a rule's actions forward, as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The plain form's one target group (`TargetGroupArn`), when the action has it.
    pub target_group_arn: Option<String>,
    /// `ForwardConfig`, when the action has one.
    pub config: Option<ForwardConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardConfig {
    pub target_groups: Vec<WeightedTargetGroup>,
    pub stickiness: Option<Stickiness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedTargetGroup {
    pub arn: String,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stickiness {
    pub enabled: Option<bool>,
    pub duration_seconds: Option<i32>,
}

impl Forward {
    /// Every target group it forwards to with its weight (a plain forward is weight 1).
    pub fn weights(&self) -> Vec<(String, i32)> {
        match &self.config {
            Some(c) if !c.target_groups.is_empty() => {
                c.target_groups.iter().map(|t| (t.arn.clone(), t.weight.unwrap_or(1))).collect()
            }
            _ => self.target_group_arn.iter().map(|a| (a.clone(), 1)).collect(),
        }
    }

    pub fn names(&self, arn: &str) -> bool {
        self.target_group_arn.as_deref() == Some(arn)
            || self.config.as_ref().is_some_and(|c| c.target_groups.iter().any(|t| t.arn == arn))
    }
}

/// Whether a route is a listener's default actions or one of its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    Listener,
    Rule,
}

/// A way traffic reaches target groups: a listener's default actions or a listener rule's
/// actions, whose forward action names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub kind: RouteKind,
    /// The listener's ARN, or the rule's.
    pub arn: String,
    pub listener_arn: String,
    pub load_balancer_arn: String,
    /// The listener's protocol (`HTTP`, `HTTPS`, `TCP`, ...).
    pub protocol: Option<String>,
    pub forward: Forward,
    /// The other actions' types in their order (`authenticate-oidc`, ...): kept as they are.
    pub other_actions: Vec<String>,
}

impl Route {
    /// `listener …:80` or `rule …/7` for messages.
    pub fn label(&self) -> String {
        let tail = |arn: &str| arn.rsplit_once(":listener").map(|(_, t)| t.trim_start_matches('/').to_string());
        match self.kind {
            RouteKind::Listener => format!("listener {}", tail(&self.arn).unwrap_or_else(|| self.arn.clone())),
            RouteKind::Rule => format!("rule {}", self.arn.rsplit_once(":listener-rule/").map_or(&*self.arn, |t| t.1)),
        }
    }
}

/// CloudWatch alarms, the gate between deployment steps.
#[allow(async_fn_in_trait)]
pub trait Alarms {
    /// `(name, state)` of each named alarm that exists (`OK`, `ALARM`, `INSUFFICIENT_DATA`).
    async fn alarm_states(&self, names: &[String]) -> Result<Vec<(String, String)>, CloudError>;
}

/// Elastic Load Balancing: target groups, their health, and the routes that reach them.
#[allow(async_fn_in_trait)]
pub trait LoadBalancing {
    async fn target_group(&self, arn: &str) -> Result<Option<TargetGroupInfo>, CloudError>;
    async fn target_group_named(&self, name: &str) -> Result<Option<TargetGroupInfo>, CloudError>;
    async fn target_group_tags(&self, arn: &str) -> Result<Vec<(String, String)>, CloudError>;
    /// A new target group like `like` — protocol and version, port, VPC, target type, every
    /// health check setting, its attributes (deregistration delay, stickiness, slow start,
    /// algorithm...) and tags — with `extra_tags` too; its ARN. CreateTargetGroup answers an
    /// existing group of that name and settings, so a retry does not make a second.
    async fn create_target_group_like(
        &self,
        like: &TargetGroupInfo,
        name: &str,
        extra_tags: &[(String, String)],
    ) -> Result<String, CloudError>;
    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError>;
    /// Every registered target with its state.
    async fn target_health(&self, arn: &str) -> Result<Vec<TargetHealth>, CloudError>;
    /// Every listener default action and listener rule, on the target groups' load balancers,
    /// whose forward action names one of them.
    async fn routes_to(&self, target_groups: &[TargetGroupInfo]) -> Result<Vec<Route>, CloudError>;
    /// Sets the forward action of `route` to `forward`, leaving every other action (and a rule's
    /// conditions) as it is now.
    async fn set_forward(&self, route: &Route, forward: &Forward) -> Result<(), CloudError>;
    /// The forward action `route` has now (None: it has none any more).
    async fn forward_now(&self, route: &Route) -> Result<Option<Forward>, CloudError>;
}

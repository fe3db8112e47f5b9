//! The AWS layer: the one place amictl talks to AWS.
//!
//! [`Cloud`] is the narrow interface to one account in one region; [`sdk::SdkCloud`] implements
//! it with the AWS SDK, [`failure::FailureCloud`] wraps any implementation to inject failures in
//! tests. [`collect`] builds an [`crate::inventory::RegionInventory`] through it, and
//! [`session`] turns profiles, roles and regions into clients.

pub mod api_limits;
mod balancing;
pub mod collect;
mod groups;
mod machines;
mod observe;
pub mod pacing;
// Test doubles: not part of the shipped library (the `test-support` feature, for tests).
#[cfg(feature = "test-support")]
pub mod failure;
#[cfg(feature = "test-support")]
pub mod memory;
mod rollout;
pub mod sdk;
pub mod session;

pub use rollout::*;

use chrono::{DateTime, Utc};

use crate::error::CloudError;
use crate::inventory::{
    AutoScalingGroup, Fleet, Image, Instance, LaunchConfiguration, LaunchPermission, LaunchTemplate,
    LaunchTemplateVersion, ParameterValue, Scope, Snapshot,
};
use crate::inventory::{ChangeNote, Channel};

/// What [`Cloud::parameter_values`] read: the values found, and every reference that could
/// not be read with why (missing, no permission, a call that failed for good).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterValues {
    pub found: std::collections::BTreeMap<String, ParameterValue>,
    pub unreadable: Vec<(String, String)>,
}

/// An instance to launch for a pipeline (a builder, validator or scanner).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// The IAM instance profile (name or ARN) that lets the SSM agent register.
    pub instance_profile: Option<String>,
    /// RunInstances' idempotency token: a retried launch gets the first call's instance.
    pub client_token: String,
    pub tags: Vec<(String, String)>,
}

/// A launched instance, as far as a pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    pub instance_id: String,
    pub image_id: String,
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    #[serde(with = "crate::time::opt_secs")]
    pub launch_time: Option<DateTime<Utc>>,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// EC2's two status checks of a running instance (`ok`, `impaired`, `initializing`, ...).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusChecks {
    pub system: String,
    pub instance: String,
}

/// Where an SSM command goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandTargets {
    Instances(Vec<String>),
    /// `(tag key, accepted values)`, all of which must match.
    Tags(Vec<(String, Vec<String>)>),
}

/// One SSM Run Command request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandRequest {
    pub targets: CommandTargets,
    /// `AWS-RunShellScript`, `AWS-RunPatchBaseline`, or any document.
    pub document: String,
    pub parameters: std::collections::BTreeMap<String, Vec<String>>,
    /// `10` or `10%`.
    pub max_concurrency: String,
    pub max_errors: String,
    /// How long the command may wait to be delivered (SendCommand's TimeoutSeconds).
    #[serde(with = "crate::time::duration")]
    pub delivery_timeout: std::time::Duration,
    pub comment: String,
}

/// One instance's invocation of a command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invocation {
    pub instance_id: String,
    /// `Pending`, `InProgress`, `Delayed`, `Success`, `Failed`, `TimedOut`, `Cancelled`, ...
    pub status: String,
    /// The finer status (`ExecutionTimedOut`, `DeliveryTimedOut`, `Undeliverable`, ...).
    pub status_details: String,
    pub exit_code: Option<i64>,
    /// The end of the output SSM keeps in the listing (stdout, then stderr).
    pub output: String,
}

impl Invocation {
    /// Finished one way or another: nothing more will change.
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "Success" | "Failed" | "TimedOut" | "Cancelled")
    }
    pub fn succeeded(&self) -> bool {
        self.status == "Success"
    }
}

/// Launching, watching and terminating instances, and running commands on them through SSM:
/// what bake, validate, scan (and later deploy and patch) need beyond [`Cloud`].
#[allow(async_fn_in_trait)]
pub trait Machines {
    /// Whether the region offers `instance_type` (DescribeInstanceTypeOfferings).
    async fn instance_type_offered(&self, instance_type: &str) -> Result<bool, CloudError>;
    /// Images whose name matches `name_pattern` (`*` wildcards) owned by `owners` (`self`, an
    /// account id, `amazon`); Packer's `source_ami_filter`.
    async fn images_matching(&self, name_pattern: &str, owners: &[String]) -> Result<Vec<Image>, CloudError>;
    async fn launch(&self, spec: &LaunchSpec) -> Result<String, CloudError>;
    /// Waits (the SDK's waiter) until the instance runs, at most `timeout`.
    async fn wait_running(&self, instance_id: &str, timeout: std::time::Duration) -> Result<Machine, CloudError>;
    /// The status checks, or `None` while EC2 has none for the instance yet.
    async fn status_checks(&self, instance_id: &str) -> Result<Option<StatusChecks>, CloudError>;
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError>;
    /// Instances not yet terminated that carry tag `key` (any value).
    async fn instances_tagged(&self, key: &str) -> Result<Vec<Machine>, CloudError>;
    /// Running instances matching every filter: `(name, values)` as DescribeInstances takes
    /// them (`tag:Role`, `instance-id`, ...), every page.
    async fn running_instances(&self, filters: &[(String, Vec<String>)]) -> Result<Vec<Machine>, CloudError>;
    /// The ids of the commands whose comment is `comment` (ListCommands, every page): how a
    /// resumed run finds a command it sent but did not journal.
    async fn commands_with_comment(&self, comment: &str) -> Result<Vec<String>, CloudError>;
    /// Which of `instance_ids` SSM manages and reports online (DescribeInstanceInformation).
    async fn managed(&self, instance_ids: &[String]) -> Result<Vec<String>, CloudError>;
    /// Sends a command; its id.
    async fn send_command(&self, request: &CommandRequest) -> Result<String, CloudError>;
    /// Every invocation of a command, with its status, exit code and output (every page).
    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError>;
    /// One invocation's standard output and error, as much as GetCommandInvocation keeps
    /// (24,000 characters each).
    async fn invocation_output(&self, command_id: &str, instance_id: &str) -> Result<(String, String), CloudError>;
    /// Copies `image_id` from `source_region` into this region (CopyImage with a client token).
    async fn copy_image(
        &self,
        source_region: &str,
        image_id: &str,
        name: &str,
        client_token: &str,
    ) -> Result<String, CloudError>;
    /// Adds launch permissions for `accounts`.
    async fn share_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError>;
}

/// The calls amictl makes in one account and region. Each list call returns every page.
#[allow(async_fn_in_trait)]
pub trait Cloud {
    fn scope(&self) -> &Scope;
    /// Images owned by this account, every state the API shows.
    async fn owned_images(&self) -> Result<Vec<Image>, CloudError>;
    /// Images by id, whoever owns them; ids that do not exist are left out, not an error.
    async fn images_by_id(&self, ids: &[String]) -> Result<Vec<Image>, CloudError>;
    async fn owned_snapshots(&self) -> Result<Vec<Snapshot>, CloudError>;
    async fn instances(&self) -> Result<Vec<Instance>, CloudError>;
    /// Templates without their versions.
    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>, CloudError>;
    async fn launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, CloudError>;
    async fn launch_configurations(&self) -> Result<Vec<LaunchConfiguration>, CloudError>;
    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>, CloudError>;
    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<LaunchPermission>, CloudError>;
    /// Who may create volumes from a snapshot besides its owner (account ids, `all`).
    async fn snapshot_permissions(&self, snapshot_id: &str) -> Result<Vec<String>, CloudError>;
    /// The images whose sharing changed between `since` and `until`, as the event history
    /// (CloudTrail LookupEvents) tells. Where there is none to ask, an error: every image is
    /// read afresh.
    async fn sharing_changes(
        &self,
        _since: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> Result<crate::sharing::Changes, CloudError> {
        Err(CloudError::new("LookupEvents", crate::error::CloudErrorKind::Service, "no event history here"))
    }
    /// EC2 Fleets (DescribeFleets), every state.
    async fn ec2_fleets(&self) -> Result<Vec<Fleet>, CloudError>;
    /// Spot Fleet requests (DescribeSpotFleetRequests), every state.
    async fn spot_fleet_requests(&self) -> Result<Vec<Fleet>, CloudError>;
    /// Spot Instance requests (DescribeSpotInstanceRequests), every state.
    async fn spot_instance_requests(&self) -> Result<Vec<Fleet>, CloudError>;
    /// The values of `resolve:ssm:` references (`NAME`, `NAME:VERSION`, `NAME:LABEL`), in
    /// batches (GetParameters). Never fails as a whole: what could not be read is reported.
    async fn parameter_values(&self, references: &[String]) -> ParameterValues;

    // --- re-checks right before a destructive call -------------------------------------
    /// The image as it is now (any state the API shows), or None when it is gone.
    async fn image_now(&self, image_id: &str) -> Result<Option<Image>, CloudError>;
    /// Instances that are not terminated and run one of `image_ids` (batched: up to 200 ids a
    /// request).
    async fn live_instances_using(&self, image_ids: &[String]) -> Result<Vec<Instance>, CloudError>;

    // --- changes --------------------------------------------------------------------------
    /// Native deprecation; `Ok(false)` where the endpoint does not support it.
    async fn deprecate_image(&self, image_id: &str, at: DateTime<Utc>) -> Result<bool, CloudError>;
    /// Undo native deprecation; `Ok(false)` where the endpoint does not support it.
    async fn undeprecate_image(&self, image_id: &str) -> Result<bool, CloudError>;
    async fn disable_image(&self, image_id: &str) -> Result<(), CloudError>;
    async fn enable_image(&self, image_id: &str) -> Result<(), CloudError>;
    /// Deregisters the image; with `delete_snapshots`, asks EC2 to delete its snapshots in the
    /// same call (DeleteAssociatedSnapshots) and returns those EC2 reports deleted. An endpoint
    /// that ignores the parameter reports none, and the caller deletes them itself.
    async fn deregister_image(&self, image_id: &str, delete_snapshots: bool) -> Result<Vec<String>, CloudError>;
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError>;
    async fn tag(&self, resource_ids: &[String], tags: &[(String, String)]) -> Result<(), CloudError>;
    async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<(), CloudError>;
    /// Removes the launch permission of each account (ModifyImageAttribute, `Remove`).
    async fn unshare_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError>;

    // --- the image catalog ------------------------------------------------------------------
    /// Every channel under `/amictl/`, with its history.
    async fn channels(&self) -> Result<Vec<Channel>, CloudError>;
    /// One channel by parameter name; None when it does not exist.
    async fn channel(&self, parameter: &str) -> Result<Option<Channel>, CloudError>;
    /// Points a channel at `image_id`, recording `note` with the change; returns the new version.
    async fn put_channel(&self, parameter: &str, image_id: &str, note: &ChangeNote) -> Result<i64, CloudError>;
    /// One instance by id, in any state; None when it does not exist.
    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, CloudError>;
    /// CreateImage with tags on the image; returns the new image id.
    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        no_reboot: bool,
        tags: &[(String, String)],
    ) -> Result<String, CloudError>;
    /// Waits (the SDK waiter) until the image is available; returns it.
    async fn wait_image_available(&self, image_id: &str, timeout: std::time::Duration) -> Result<Image, CloudError>;
}

/// Amazon SNS: where alerts go (`[alerts] topic_arn`).
#[allow(async_fn_in_trait)]
pub trait Notify {
    /// Publishes one message; returns its message id.
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<String, CloudError>;
}

/// One CloudWatch metric value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Datum {
    pub name: String,
    /// `(name, value)`, e.g. `("Family", "webapp")`.
    pub dimensions: Vec<(String, String)>,
    pub value: f64,
    /// A CloudWatch unit: `Count`, `Seconds`, `None`.
    pub unit: String,
}

/// CloudWatch metrics and dashboards.
#[allow(async_fn_in_trait)]
pub trait Metrics {
    /// Puts every datum (in as many PutMetricData calls as CloudWatch's limits need).
    async fn put_metrics(&self, namespace: &str, data: &[Datum]) -> Result<(), CloudError>;
    /// Creates or replaces dashboard `name` with `body` (CloudWatch's dashboard JSON).
    async fn put_dashboard(&self, name: &str, body: &str) -> Result<(), CloudError>;
}

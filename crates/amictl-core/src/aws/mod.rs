//! The AWS layer: the one place amictl talks to AWS.
//!
//! [`Cloud`] is the narrow interface to one account in one region; [`sdk::SdkCloud`] implements
//! it with the AWS SDK, [`failure::FailureCloud`] wraps any implementation to inject failures in
//! tests. [`collect`] builds an [`crate::inventory::RegionInventory`] through it, and
//! [`session`] turns profiles, roles and regions into clients.

pub mod collect;
// Test doubles: not part of the shipped library (the `test-support` feature, for tests).
#[cfg(feature = "test-support")]
pub mod failure;
#[cfg(feature = "test-support")]
pub mod memory;
pub mod sdk;
pub mod session;

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
    async fn deregister_image(&self, image_id: &str) -> Result<(), CloudError>;
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError>;
    async fn tag(&self, resource_ids: &[String], tags: &[(String, String)]) -> Result<(), CloudError>;
    async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<(), CloudError>;

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

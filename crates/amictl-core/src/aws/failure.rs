//! A [`Cloud`] wrapper that fails chosen calls, for tests that prove how failures are handled
//! (after mountpoint-s3's `failure_client`). It also counts the calls that reach it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Cloud;
use crate::error::{CloudError, CloudErrorKind};
use crate::inventory::{
    AutoScalingGroup, Fleet, Image, Instance, LaunchConfiguration, LaunchPermission, LaunchTemplate,
    LaunchTemplateVersion, Scope, Snapshot,
};

/// Wraps `inner`; calls to an operation with a pending failure fail instead of reaching it.
pub struct FailureCloud<C> {
    pub inner: C,
    failures: Mutex<HashMap<&'static str, (u32, CloudErrorKind)>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// Waited before every call reaches `inner`: the round trip to a region (benchmarks).
    latency: std::time::Duration,
}

impl<C: Cloud> FailureCloud<C> {
    pub fn new(inner: C) -> Self {
        FailureCloud { inner, failures: Mutex::default(), calls: Mutex::default(), latency: Default::default() }
    }

    /// Every call waits `latency` first, as a call to a distant region would.
    pub fn with_latency(mut self, latency: std::time::Duration) -> Self {
        self.latency = latency;
        self
    }

    async fn pause(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// Makes the next `times` calls of `operation` (e.g. `"DescribeImages"`) fail with `kind`.
    pub fn fail(self, operation: &'static str, times: u32, kind: CloudErrorKind) -> Self {
        self.failures.lock().unwrap().insert(operation, (times, kind));
        self
    }

    /// Calls made so far, by operation, failed ones included.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap().clone()
    }

    fn check(&self, operation: &'static str) -> Result<(), CloudError> {
        *self.calls.lock().unwrap().entry(operation).or_default() += 1;
        let mut failures = self.failures.lock().unwrap();
        match failures.get_mut(operation) {
            Some((n, kind)) if *n > 0 => {
                *n -= 1;
                Err(CloudError::new(operation, *kind, "injected failure"))
            }
            _ => Ok(()),
        }
    }
}

impl<C: Cloud> Cloud for FailureCloud<C> {
    fn scope(&self) -> &Scope {
        self.inner.scope()
    }
    async fn owned_images(&self) -> Result<Vec<Image>, CloudError> {
        self.check("DescribeImages")?;
        self.pause().await;
        self.inner.owned_images().await
    }
    async fn images_by_id(&self, ids: &[String]) -> Result<Vec<Image>, CloudError> {
        self.check("DescribeImages")?;
        self.pause().await;
        self.inner.images_by_id(ids).await
    }
    async fn owned_snapshots(&self) -> Result<Vec<Snapshot>, CloudError> {
        self.check("DescribeSnapshots")?;
        self.pause().await;
        self.inner.owned_snapshots().await
    }
    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        self.check("DescribeInstances")?;
        self.pause().await;
        self.inner.instances().await
    }
    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>, CloudError> {
        self.check("DescribeLaunchTemplates")?;
        self.pause().await;
        self.inner.launch_templates().await
    }
    async fn launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, CloudError> {
        self.check("DescribeLaunchTemplateVersions")?;
        self.pause().await;
        self.inner.launch_template_versions(template_id).await
    }
    async fn launch_configurations(&self) -> Result<Vec<LaunchConfiguration>, CloudError> {
        self.check("DescribeLaunchConfigurations")?;
        self.pause().await;
        self.inner.launch_configurations().await
    }
    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>, CloudError> {
        self.check("DescribeAutoScalingGroups")?;
        self.pause().await;
        self.inner.auto_scaling_groups().await
    }
    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<LaunchPermission>, CloudError> {
        self.check("DescribeImageAttribute")?;
        self.pause().await;
        self.inner.launch_permissions(image_id).await
    }
    async fn snapshot_permissions(&self, snapshot_id: &str) -> Result<Vec<String>, CloudError> {
        self.check("DescribeSnapshotAttribute")?;
        self.pause().await;
        self.inner.snapshot_permissions(snapshot_id).await
    }
    async fn ec2_fleets(&self) -> Result<Vec<Fleet>, CloudError> {
        self.check("DescribeFleets")?;
        self.pause().await;
        self.inner.ec2_fleets().await
    }
    async fn spot_fleet_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        self.check("DescribeSpotFleetRequests")?;
        self.pause().await;
        self.inner.spot_fleet_requests().await
    }
    async fn spot_instance_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        self.check("DescribeSpotInstanceRequests")?;
        self.pause().await;
        self.inner.spot_instance_requests().await
    }
    async fn parameter_values(&self, references: &[String]) -> super::ParameterValues {
        // A failed GetParameters leaves every reference it asked for unread.
        match self.check("GetParameters") {
            Ok(()) => {
                self.pause().await;
                self.inner.parameter_values(references).await
            }
            Err(e) => super::ParameterValues {
                found: Default::default(),
                unreadable: references.iter().map(|r| (r.clone(), e.to_string())).collect(),
            },
        }
    }
    async fn image_now(&self, image_id: &str) -> Result<Option<Image>, CloudError> {
        self.check("DescribeImages")?;
        self.pause().await;
        self.inner.image_now(image_id).await
    }
    async fn live_instances_using(&self, image_ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        self.check("DescribeInstances")?;
        self.pause().await;
        self.inner.live_instances_using(image_ids).await
    }
    async fn deprecate_image(&self, image_id: &str, at: DateTime<Utc>) -> Result<bool, CloudError> {
        self.check("EnableImageDeprecation")?;
        self.pause().await;
        self.inner.deprecate_image(image_id, at).await
    }
    async fn undeprecate_image(&self, image_id: &str) -> Result<bool, CloudError> {
        self.check("DisableImageDeprecation")?;
        self.pause().await;
        self.inner.undeprecate_image(image_id).await
    }
    async fn disable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.check("DisableImage")?;
        self.pause().await;
        self.inner.disable_image(image_id).await
    }
    async fn enable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.check("EnableImage")?;
        self.pause().await;
        self.inner.enable_image(image_id).await
    }
    async fn deregister_image(&self, image_id: &str, delete_snapshots: bool) -> Result<Vec<String>, CloudError> {
        self.check("DeregisterImage")?;
        self.pause().await;
        self.inner.deregister_image(image_id, delete_snapshots).await
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        self.check("DeleteSnapshot")?;
        self.pause().await;
        self.inner.delete_snapshot(snapshot_id).await
    }
    async fn tag(&self, resource_ids: &[String], tags: &[(String, String)]) -> Result<(), CloudError> {
        self.check("CreateTags")?;
        self.pause().await;
        self.inner.tag(resource_ids, tags).await
    }
    async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<(), CloudError> {
        self.check("DeleteTags")?;
        self.pause().await;
        self.inner.untag(resource_ids, keys).await
    }

    async fn unshare_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError> {
        self.check("ModifyImageAttribute")?;
        self.pause().await;
        self.inner.unshare_image(image_id, accounts).await
    }
    async fn channels(&self) -> Result<Vec<crate::inventory::Channel>, CloudError> {
        self.check("GetParametersByPath")?;
        self.pause().await;
        self.inner.channels().await
    }
    async fn channel(&self, parameter: &str) -> Result<Option<crate::inventory::Channel>, CloudError> {
        self.check("GetParameterHistory")?;
        self.pause().await;
        self.inner.channel(parameter).await
    }
    async fn put_channel(
        &self,
        parameter: &str,
        image_id: &str,
        note: &crate::inventory::ChangeNote,
    ) -> Result<i64, CloudError> {
        self.check("PutParameter")?;
        self.pause().await;
        self.inner.put_channel(parameter, image_id, note).await
    }
    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        self.check("DescribeInstances")?;
        self.pause().await;
        self.inner.instance(instance_id).await
    }
    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        no_reboot: bool,
        tags: &[(String, String)],
    ) -> Result<String, CloudError> {
        self.check("CreateImage")?;
        self.pause().await;
        self.inner.create_image(instance_id, name, description, no_reboot, tags).await
    }
    async fn wait_image_available(&self, image_id: &str, timeout: std::time::Duration) -> Result<Image, CloudError> {
        self.check("DescribeImages")?;
        self.pause().await;
        self.inner.wait_image_available(image_id, timeout).await
    }
}

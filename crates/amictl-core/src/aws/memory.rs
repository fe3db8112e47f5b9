//! A [`Cloud`] that serves a fixed [`RegionInventory`] from memory: the collector's tests run
//! on it (wrapped in [`super::failure::FailureCloud`]) without any endpoint.

use super::Cloud;
use crate::error::{CloudError, CloudErrorKind};
use crate::inventory::{
    AutoScalingGroup, Image, Instance, LaunchConfiguration, LaunchPermission, LaunchTemplate, LaunchTemplateVersion,
    RegionInventory, Scope, Snapshot,
};

/// Serves `truth` as the account/region it names. `truth.launch_permissions` holds the
/// permissions of every image that has any.
pub struct MemoryCloud {
    scope: Scope,
    truth: RegionInventory,
}

impl MemoryCloud {
    pub fn new(truth: RegionInventory) -> Self {
        MemoryCloud { scope: truth.scope(), truth }
    }
}

impl Cloud for MemoryCloud {
    fn scope(&self) -> &Scope {
        &self.scope
    }
    async fn owned_images(&self) -> Result<Vec<Image>, CloudError> {
        Ok(self.truth.images.clone())
    }
    async fn images_by_id(&self, ids: &[String]) -> Result<Vec<Image>, CloudError> {
        Ok(self.truth.foreign_images.iter().filter(|i| ids.contains(&i.id)).cloned().collect())
    }
    async fn owned_snapshots(&self) -> Result<Vec<Snapshot>, CloudError> {
        Ok(self.truth.snapshots.clone())
    }
    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.truth.instances.clone())
    }
    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>, CloudError> {
        Ok(self.truth.launch_templates.iter().map(|t| LaunchTemplate { versions: vec![], ..t.clone() }).collect())
    }
    async fn launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, CloudError> {
        self.truth
            .launch_templates
            .iter()
            .find(|t| t.id == template_id)
            .map(|t| t.versions.clone())
            .ok_or_else(|| CloudError::new("DescribeLaunchTemplateVersions", CloudErrorKind::NotFound, template_id))
    }
    async fn launch_configurations(&self) -> Result<Vec<LaunchConfiguration>, CloudError> {
        Ok(self.truth.launch_configurations.clone())
    }
    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>, CloudError> {
        Ok(self.truth.auto_scaling_groups.clone())
    }
    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<LaunchPermission>, CloudError> {
        Ok(self.truth.launch_permissions.get(image_id).cloned().unwrap_or_default())
    }
}

//! A [`Cloud`] that serves an estate from memory and applies changes to it: the collector's
//! and executor's tests run on it (wrapped in [`super::failure::FailureCloud`]) without any
//! endpoint.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Cloud;
use crate::error::{CloudError, CloudErrorKind};
use crate::inventory::{
    AutoScalingGroup, ChangeNote, Channel, ChannelEntry, Fleet, FleetKind, Image, Instance, LaunchConfiguration,
    LaunchPermission, LaunchTemplate, LaunchTemplateVersion, RegionInventory, Scope, Snapshot,
};

/// Serves `truth` as the account/region it names. `truth.launch_permissions` holds the
/// permissions of every image that has any.
pub struct MemoryCloud {
    scope: Scope,
    truth: Mutex<RegionInventory>,
}

impl MemoryCloud {
    pub fn new(truth: RegionInventory) -> Self {
        MemoryCloud { scope: truth.scope(), truth: Mutex::new(truth) }
    }

    /// The estate as it is now.
    pub fn state(&self) -> RegionInventory {
        self.truth.lock().unwrap().clone()
    }

    fn fleets_of(&self, kind: FleetKind) -> Vec<Fleet> {
        self.with(|t| t.fleets.iter().filter(|f| f.kind == kind).cloned().collect())
    }

    fn with<T>(&self, f: impl FnOnce(&mut RegionInventory) -> T) -> T {
        f(&mut self.truth.lock().unwrap())
    }
}

fn not_found(op: &str, id: &str) -> CloudError {
    CloudError {
        code: Some("InvalidAMIID.NotFound".into()),
        ..CloudError::new(op, CloudErrorKind::NotFound, format!("{id} not found"))
    }
}

impl Cloud for MemoryCloud {
    fn scope(&self) -> &Scope {
        &self.scope
    }
    async fn owned_images(&self) -> Result<Vec<Image>, CloudError> {
        Ok(self.with(|t| t.images.clone()))
    }
    async fn images_by_id(&self, ids: &[String]) -> Result<Vec<Image>, CloudError> {
        Ok(self.with(|t| t.images.iter().chain(&t.foreign_images).filter(|i| ids.contains(&i.id)).cloned().collect()))
    }
    /// Snapshots are never shared in memory.
    async fn snapshot_permissions(&self, _snapshot_id: &str) -> Result<Vec<String>, CloudError> {
        Ok(Vec::new())
    }
    async fn ec2_fleets(&self) -> Result<Vec<Fleet>, CloudError> {
        Ok(self.fleets_of(FleetKind::Ec2Fleet))
    }
    async fn spot_fleet_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        Ok(self.fleets_of(FleetKind::SpotFleet))
    }
    async fn spot_instance_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        Ok(self.fleets_of(FleetKind::SpotRequest))
    }
    /// `truth.parameters` holds every parameter that exists.
    async fn parameter_values(&self, references: &[String]) -> super::ParameterValues {
        self.with(|t| {
            let mut out = super::ParameterValues::default();
            for r in references {
                match t.parameters.get(r) {
                    Some(v) => {
                        out.found.insert(r.clone(), v.clone());
                    }
                    None => out.unreadable.push((r.clone(), "ParameterNotFound".into())),
                }
            }
            out
        })
    }
    async fn owned_snapshots(&self) -> Result<Vec<Snapshot>, CloudError> {
        Ok(self.with(|t| t.snapshots.clone()))
    }
    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.with(|t| t.instances.clone()))
    }
    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>, CloudError> {
        Ok(self.with(|t| t.launch_templates.iter().map(|t| LaunchTemplate { versions: vec![], ..t.clone() }).collect()))
    }
    async fn launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, CloudError> {
        self.with(|t| {
            t.launch_templates
                .iter()
                .find(|t| t.id == template_id)
                .map(|t| t.versions.clone())
                .ok_or_else(|| CloudError::new("DescribeLaunchTemplateVersions", CloudErrorKind::NotFound, template_id))
        })
    }
    async fn launch_configurations(&self) -> Result<Vec<LaunchConfiguration>, CloudError> {
        Ok(self.with(|t| t.launch_configurations.clone()))
    }
    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>, CloudError> {
        Ok(self.with(|t| t.auto_scaling_groups.clone()))
    }
    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<LaunchPermission>, CloudError> {
        Ok(self.with(|t| t.launch_permissions.get(image_id).cloned().unwrap_or_default()))
    }
    async fn image_now(&self, image_id: &str) -> Result<Option<Image>, CloudError> {
        Ok(self.with(|t| t.images.iter().find(|i| i.id == image_id).cloned()))
    }
    async fn live_instances_using(&self, image_ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        Ok(self
            .with(|t| t.instances.iter().filter(|i| image_ids.contains(&i.image_id) && i.is_live()).cloned().collect()))
    }
    async fn deprecate_image(&self, image_id: &str, at: DateTime<Utc>) -> Result<bool, CloudError> {
        self.with(|t| match t.images.iter_mut().find(|i| i.id == image_id) {
            Some(i) => {
                i.deprecation_time = Some(at);
                Ok(true)
            }
            None => Err(not_found("EnableImageDeprecation", image_id)),
        })
    }
    async fn undeprecate_image(&self, image_id: &str) -> Result<bool, CloudError> {
        self.with(|t| match t.images.iter_mut().find(|i| i.id == image_id) {
            Some(i) => {
                i.deprecation_time = None;
                Ok(true)
            }
            None => Err(not_found("DisableImageDeprecation", image_id)),
        })
    }
    async fn disable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.set_state(image_id, "disabled", "DisableImage")
    }
    async fn enable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.set_state(image_id, "available", "EnableImage")
    }
    async fn deregister_image(&self, image_id: &str, delete_snapshots: bool) -> Result<Vec<String>, CloudError> {
        self.with(|t| {
            let Some(at) = t.images.iter().position(|i| i.id == image_id) else {
                return Err(not_found("DeregisterImage", image_id));
            };
            let image = t.images.remove(at);
            t.launch_permissions.remove(image_id);
            if !delete_snapshots {
                return Ok(vec![]);
            }
            // As EC2 does: a snapshot another image maps is skipped.
            let deleted: Vec<String> = image
                .snapshot_ids
                .into_iter()
                .filter(|s| !t.images.iter().any(|i| i.snapshot_ids.contains(s)))
                .filter(|s| t.snapshots.iter().any(|x| &x.id == s))
                .collect();
            t.snapshots.retain(|s| !deleted.contains(&s.id));
            Ok(deleted)
        })
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        self.with(|t| {
            if t.images.iter().any(|i| i.snapshot_ids.iter().any(|s| s == snapshot_id)) {
                return Err(CloudError {
                    code: Some("InvalidSnapshot.InUse".into()),
                    ..CloudError::new(
                        "DeleteSnapshot",
                        CloudErrorKind::Service,
                        format!("{snapshot_id} is in use by an AMI"),
                    )
                });
            }
            let before = t.snapshots.len();
            t.snapshots.retain(|s| s.id != snapshot_id);
            if t.snapshots.len() == before {
                return Err(CloudError {
                    code: Some("InvalidSnapshot.NotFound".into()),
                    ..CloudError::new("DeleteSnapshot", CloudErrorKind::NotFound, snapshot_id)
                });
            }
            Ok(())
        })
    }
    async fn tag(&self, resource_ids: &[String], tags: &[(String, String)]) -> Result<(), CloudError> {
        self.with(|t| {
            for id in resource_ids {
                let target = t
                    .images
                    .iter_mut()
                    .find(|i| &i.id == id)
                    .map(|i| &mut i.tags)
                    .or_else(|| t.snapshots.iter_mut().find(|s| &s.id == id).map(|s| &mut s.tags));
                let Some(target) = target else { return Err(not_found("CreateTags", id)) };
                for (k, v) in tags {
                    target.insert(k.clone(), v.clone());
                }
            }
            Ok(())
        })
    }
    async fn unshare_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError> {
        self.with(|t| {
            if let Some(p) = t.launch_permissions.get_mut(image_id) {
                p.retain(|p| !matches!(p, LaunchPermission::Account(a) if accounts.contains(a)));
            }
        });
        Ok(())
    }

    async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<(), CloudError> {
        self.with(|t| {
            for id in resource_ids {
                if let Some(i) = t.images.iter_mut().find(|i| &i.id == id) {
                    keys.iter().for_each(|k| {
                        i.tags.remove(k);
                    });
                }
                if let Some(s) = t.snapshots.iter_mut().find(|s| &s.id == id) {
                    keys.iter().for_each(|k| {
                        s.tags.remove(k);
                    });
                }
            }
            Ok(())
        })
    }
    async fn channels(&self) -> Result<Vec<Channel>, CloudError> {
        Ok(self.with(|t| t.channels.clone()))
    }
    async fn channel(&self, parameter: &str) -> Result<Option<Channel>, CloudError> {
        Ok(self.with(|t| t.channels.iter().find(|c| c.parameter == parameter).cloned()))
    }
    async fn put_channel(&self, parameter: &str, image_id: &str, note: &ChangeNote) -> Result<i64, CloudError> {
        let (family, name) = crate::catalog::parse_channel_parameter(parameter).ok_or_else(|| {
            CloudError::new("PutParameter", CloudErrorKind::Service, format!("{parameter}: not a channel"))
        })?;
        self.with(|t| {
            let entry = |version| ChannelEntry {
                version,
                image_id: image_id.to_string(),
                modified: Some(note.at),
                note: Some(note.clone()),
            };
            match t.channels.iter_mut().find(|c| c.parameter == parameter) {
                Some(c) => {
                    let version = c.history.last().map_or(1, |e| e.version + 1);
                    c.history.push(entry(version));
                    c.image_id = image_id.to_string();
                    Ok(version)
                }
                None => {
                    let history = vec![entry(1)];
                    let parameter = parameter.to_string();
                    t.channels.push(Channel { family, name, parameter, image_id: image_id.to_string(), history });
                    Ok(1)
                }
            }
        })
    }
    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        Ok(self.with(|t| t.instances.iter().find(|i| i.id == instance_id).cloned()))
    }
    /// Registers an image of the instance's image, available at once, with one new snapshot.
    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        _no_reboot: bool,
        tags: &[(String, String)],
    ) -> Result<String, CloudError> {
        self.with(|t| {
            let n = t.images.len() + t.snapshots.len() + 1;
            let id = format!("ami-{n:017x}");
            let snapshot = format!("snap-{n:017x}");
            t.snapshots.push(Snapshot {
                id: snapshot.clone(),
                description: format!("Created by CreateImage({instance_id}) for {id}"),
                encrypted: false,
                volume_size_gib: 8,
                start_time: None,
                tags: Default::default(),
            });
            t.images.push(Image {
                id: id.clone(),
                name: name.into(),
                owner: t.account.clone(),
                state: "available".into(),
                creation_date: Some(Utc::now()),
                public: false,
                description: Some(description.into()),
                tags: tags.iter().cloned().collect(),
                snapshot_ids: vec![snapshot],
                deprecation_time: None,
            });
            Ok(id)
        })
    }
    async fn wait_image_available(&self, image_id: &str, _timeout: std::time::Duration) -> Result<Image, CloudError> {
        self.with(|t| t.images.iter().find(|i| i.id == image_id).cloned())
            .ok_or_else(|| not_found("DescribeImages", image_id))
    }
}

impl MemoryCloud {
    fn set_state(&self, image_id: &str, state: &str, op: &str) -> Result<(), CloudError> {
        self.with(|t| match t.images.iter_mut().find(|i| i.id == image_id) {
            Some(i) => {
                i.state = state.into();
                Ok(())
            }
            None => Err(not_found(op, image_id)),
        })
    }
}

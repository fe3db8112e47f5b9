//! [`Groups`] through the AWS SDK: launch template versions, UpdateAutoScalingGroup, instance
//! refresh.

use aws_sdk_autoscaling as asg;

use super::sdk::{cloud_error, SdkCloud};
use super::{GroupDetail, GroupInstance, Groups, RefreshPreferences, RefreshState};
use crate::error::{CloudError, CloudErrorKind};

fn detail(g: &asg::types::AutoScalingGroup) -> GroupDetail {
    let lt = g.launch_template();
    GroupDetail {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        template_id: lt.and_then(|t| t.launch_template_id()).map(str::to_string),
        template_version: lt.map(|t| t.version().unwrap_or("$Default").to_string()),
        launch_configuration: g.launch_configuration_name().map(str::to_string),
        mixed_instances: g.mixed_instances_policy().is_some(),
        min_size: g.min_size().unwrap_or(0),
        max_size: g.max_size().unwrap_or(0),
        desired_capacity: g.desired_capacity().unwrap_or(0),
        subnets: g.vpc_zone_identifier().filter(|s| !s.is_empty()).map(str::to_string),
        availability_zones: g.availability_zones().to_vec(),
        target_group_arns: g.target_group_arns().to_vec(),
        health_check_type: g.health_check_type().map(str::to_string),
        health_check_grace_period: g.health_check_grace_period(),
        instances: g
            .instances()
            .iter()
            .map(|i| GroupInstance {
                instance_id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                health_status: i.health_status().unwrap_or_default().to_string(),
            })
            .collect(),
    }
}

impl Groups for SdkCloud {
    async fn group(&self, name: &str) -> Result<Option<GroupDetail>, CloudError> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeAutoScalingGroups", e))?;
        let found = out.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name)).map(detail);
        // A group named by its launch template's name only: look the id up.
        match found {
            Some(mut d) if d.template_id.is_none() && d.template_version.is_some() => {
                let name = out
                    .auto_scaling_groups()
                    .iter()
                    .find_map(|g| g.launch_template().and_then(|t| t.launch_template_name()))
                    .unwrap_or_default()
                    .to_string();
                let t = self
                    .ec2
                    .describe_launch_templates()
                    .launch_template_names(&name)
                    .send()
                    .await
                    .map_err(|e| cloud_error("DescribeLaunchTemplates", e))?;
                d.template_id = t.launch_templates().first().and_then(|t| t.launch_template_id()).map(str::to_string);
                Ok(Some(d))
            }
            other => Ok(other),
        }
    }

    async fn group_names(&self) -> Result<Vec<String>, CloudError> {
        let mut pages = self.autoscaling.describe_auto_scaling_groups().max_records(100).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeAutoScalingGroups", e))?;
            out.extend(
                page.auto_scaling_groups().iter().filter_map(|g| g.auto_scaling_group_name().map(str::to_string)),
            );
        }
        Ok(out)
    }

    async fn template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<Option<(i64, Option<String>)>, CloudError> {
        let out = match self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .versions(version)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = cloud_error("DescribeLaunchTemplateVersions", e);
                return if e.kind == CloudErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        };
        Ok(out.launch_template_versions().first().map(|v| {
            (v.version_number().unwrap_or(0), v.launch_template_data().and_then(|d| d.image_id()).map(str::to_string))
        }))
    }

    async fn create_template_version(
        &self,
        template_id: &str,
        source_version: i64,
        image_id: &str,
        description: &str,
        client_token: &str,
    ) -> Result<i64, CloudError> {
        let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(image_id).build();
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(template_id)
            .source_version(source_version.to_string())
            .launch_template_data(data)
            .version_description(description.chars().take(255).collect::<String>())
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| cloud_error("CreateLaunchTemplateVersion", e))?;
        out.launch_template_version().and_then(|v| v.version_number()).ok_or_else(|| {
            CloudError::new("CreateLaunchTemplateVersion", CloudErrorKind::Service, "no version number in the answer")
        })
    }

    async fn pin_group(&self, group: &str, template_id: &str, version: i64) -> Result<(), CloudError> {
        let spec = asg::types::LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version(version.to_string())
            .build();
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .launch_template(spec)
            .send()
            .await
            .map_err(|e| cloud_error("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn start_refresh(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
        p: &RefreshPreferences,
    ) -> Result<String, CloudError> {
        let spec = asg::types::LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version(version.to_string())
            .build();
        let desired = asg::types::DesiredConfiguration::builder().launch_template(spec).build();
        let mut prefs = asg::types::RefreshPreferences::builder()
            .min_healthy_percentage(p.min_healthy as i32)
            .set_max_healthy_percentage(p.max_healthy.map(|m| m as i32))
            .set_instance_warmup(p.warmup_seconds)
            .set_checkpoint_delay(p.checkpoint_delay_seconds)
            .skip_matching(p.skip_matching)
            .auto_rollback(p.auto_rollback)
            .set_bake_time(p.bake_time_seconds);
        for c in &p.checkpoints {
            prefs = prefs.checkpoint_percentages(*c as i32);
        }
        if !p.alarms.is_empty() {
            let alarms = asg::types::AlarmSpecification::builder().set_alarms(Some(p.alarms.clone())).build();
            prefs = prefs.alarm_specification(alarms);
        }
        let out = self
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .strategy(asg::types::RefreshStrategy::Rolling)
            .desired_configuration(desired)
            .preferences(prefs.build())
            .send()
            .await
            .map_err(|e| cloud_error("StartInstanceRefresh", e))?;
        out.instance_refresh_id().map(str::to_string).ok_or_else(|| {
            CloudError::new("StartInstanceRefresh", CloudErrorKind::Service, "no refresh id in the answer")
        })
    }

    async fn refresh_state(&self, group: &str, id: Option<&str>) -> Result<Option<RefreshState>, CloudError> {
        let out = self
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .set_instance_refresh_ids(id.map(|i| vec![i.to_string()]))
            .send()
            .await
            .map_err(|e| cloud_error("DescribeInstanceRefreshes", e))?;
        Ok(out.instance_refreshes().first().map(|r| RefreshState {
            id: r.instance_refresh_id().unwrap_or_default().to_string(),
            status: r.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
            reason: r.status_reason().map(str::to_string),
            percentage: r.percentage_complete().unwrap_or(0),
            to_update: r.instances_to_update().unwrap_or(0),
            desired_version: r
                .desired_configuration()
                .and_then(|d| d.launch_template())
                .and_then(|t| t.version())
                .and_then(|v| v.parse().ok()),
        }))
    }

    async fn rollback_refresh(&self, group: &str) -> Result<(), CloudError> {
        self.autoscaling
            .rollback_instance_refresh()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| cloud_error("RollbackInstanceRefresh", e))?;
        Ok(())
    }

    async fn create_group_like(
        &self,
        like: &GroupDetail,
        name: &str,
        template_id: &str,
        version: i64,
        target_groups: &[String],
    ) -> Result<(), CloudError> {
        let spec = asg::types::LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version(version.to_string())
            .build();
        let mut call = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(spec)
            .min_size(like.min_size)
            .max_size(like.max_size)
            .desired_capacity(like.desired_capacity)
            .set_vpc_zone_identifier(like.subnets.clone())
            .set_target_group_arns(Some(target_groups.to_vec()))
            .set_health_check_type(like.health_check_type.clone())
            .set_health_check_grace_period(like.health_check_grace_period);
        if like.subnets.is_none() {
            call = call.set_availability_zones(Some(like.availability_zones.clone()));
        }
        call.send().await.map_err(|e| cloud_error("CreateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn delete_group(&self, name: &str) -> Result<(), CloudError> {
        self.autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(name)
            .force_delete(true)
            .send()
            .await
            .map_err(|e| cloud_error("DeleteAutoScalingGroup", e))?;
        Ok(())
    }

    async fn scale(&self, name: &str, min: i32, desired: i32) -> Result<(), CloudError> {
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .desired_capacity(desired)
            .send()
            .await
            .map_err(|e| cloud_error("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn replace_instance(&self, instance_id: &str) -> Result<(), CloudError> {
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map_err(|e| cloud_error("TerminateInstanceInAutoScalingGroup", e))?;
        Ok(())
    }
}

//! [`Groups`] through the AWS SDK: launch template versions, UpdateAutoScalingGroup, instance
//! refresh, and the copy of a group for blue-green.

use aws_sdk_autoscaling as asg;

use super::sdk::{cloud_error, SdkCloud};
use super::{GroupDetail, GroupInstance, Groups, RefreshPreferences, RefreshState};
use crate::error::{CloudError, CloudErrorKind};

/// The launch template a group launches from: its own, or its mixed instances policy's.
fn template_spec(g: &asg::types::AutoScalingGroup) -> Option<&asg::types::LaunchTemplateSpecification> {
    g.launch_template().or_else(|| {
        g.mixed_instances_policy().and_then(|p| p.launch_template()).and_then(|t| t.launch_template_specification())
    })
}

/// Overrides of a mixed instances policy that launch from something amictl does not version:
/// their own launch template, or their own image.
fn override_templates(g: &asg::types::AutoScalingGroup) -> Vec<String> {
    let overrides = g.mixed_instances_policy().and_then(|p| p.launch_template()).map(|t| t.overrides());
    let mut out = Vec::new();
    for o in overrides.unwrap_or_default() {
        let what = o.instance_type().unwrap_or("an override");
        if let Some(spec) = o.launch_template_specification() {
            let t = spec.launch_template_id().or(spec.launch_template_name()).unwrap_or("?");
            out.push(format!("{what} launches from its own launch template {t}"));
        }
        if let Some(image) = o.image_id() {
            out.push(format!("{what} launches its own image {image}"));
        }
    }
    out
}

fn detail(g: &asg::types::AutoScalingGroup) -> GroupDetail {
    let lt = template_spec(g);
    let elb = |t: &str| matches!(t, "elbv2" | "elb");
    GroupDetail {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        template_id: lt.and_then(|t| t.launch_template_id()).map(str::to_string),
        template_version: lt.map(|t| t.version().unwrap_or("$Default").to_string()),
        launch_configuration: g.launch_configuration_name().map(str::to_string),
        mixed_instances: g.mixed_instances_policy().is_some(),
        override_templates: override_templates(g),
        min_size: g.min_size().unwrap_or(0),
        max_size: g.max_size().unwrap_or(0),
        desired_capacity: g.desired_capacity().unwrap_or(0),
        subnets: g.vpc_zone_identifier().filter(|s| !s.is_empty()).map(str::to_string),
        availability_zones: g.availability_zones().to_vec(),
        target_group_arns: g.target_group_arns().to_vec(),
        classic_load_balancers: g.load_balancer_names().to_vec(),
        other_traffic_sources: g
            .traffic_sources()
            .iter()
            .filter(|t| !t.r#type().is_some_and(elb))
            .map(|t| format!("{}:{}", t.r#type().unwrap_or("?"), t.identifier().unwrap_or("?")))
            .collect(),
        warm_pool: g.warm_pool_configuration().is_some(),
        health_check_type: g.health_check_type().map(str::to_string),
        health_check_grace_period: g.health_check_grace_period(),
        default_instance_warmup: g.default_instance_warmup(),
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

fn spec(template_id: &str, version: i64) -> asg::types::LaunchTemplateSpecification {
    asg::types::LaunchTemplateSpecification::builder()
        .launch_template_id(template_id)
        .version(version.to_string())
        .build()
}

/// `policy` with its launch template moved to `version`; overrides and distribution as they are.
fn policy_on(
    policy: &asg::types::MixedInstancesPolicy,
    template_id: &str,
    version: i64,
) -> asg::types::MixedInstancesPolicy {
    let lt = policy.launch_template().cloned().unwrap_or_else(|| asg::types::LaunchTemplate::builder().build());
    let lt = asg::types::LaunchTemplate::builder()
        .launch_template_specification(spec(template_id, version))
        .set_overrides(lt.overrides)
        .build();
    asg::types::MixedInstancesPolicy::builder()
        .launch_template(lt)
        .set_instances_distribution(policy.instances_distribution().cloned())
        .build()
}

impl SdkCloud {
    async fn describe_group(&self, name: &str) -> Result<Option<asg::types::AutoScalingGroup>, CloudError> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeAutoScalingGroups", e))?;
        Ok(out.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name)).cloned())
    }

    /// The group's mixed instances policy, to change its version (None: it has none).
    async fn mixed_policy(&self, group: &str) -> Result<Option<asg::types::MixedInstancesPolicy>, CloudError> {
        Ok(self.describe_group(group).await?.and_then(|g| g.mixed_instances_policy().cloned()))
    }

    async fn template_id_named(&self, name: &str) -> Result<Option<String>, CloudError> {
        let t = self
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeLaunchTemplates", e))?;
        Ok(t.launch_templates().first().and_then(|t| t.launch_template_id()).map(str::to_string))
    }
}

impl Groups for SdkCloud {
    async fn group(&self, name: &str) -> Result<Option<GroupDetail>, CloudError> {
        let Some(g) = self.describe_group(name).await? else { return Ok(None) };
        let mut d = detail(&g);
        // A group naming its template by name only: look the id up.
        if d.template_id.is_none() {
            if let Some(n) = template_spec(&g).and_then(|t| t.launch_template_name()) {
                d.template_id = self.template_id_named(n).await?;
            }
        }
        Ok(Some(d))
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
        let call = self.autoscaling.update_auto_scaling_group().auto_scaling_group_name(group);
        let call = match self.mixed_policy(group).await? {
            Some(p) => call.mixed_instances_policy(policy_on(&p, template_id, version)),
            None => call.launch_template(spec(template_id, version)),
        };
        call.send().await.map_err(|e| cloud_error("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn start_refresh(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
        p: &RefreshPreferences,
    ) -> Result<String, CloudError> {
        let desired = match self.mixed_policy(group).await? {
            Some(policy) => asg::types::DesiredConfiguration::builder()
                .mixed_instances_policy(policy_on(&policy, template_id, version))
                .build(),
            None => asg::types::DesiredConfiguration::builder().launch_template(spec(template_id, version)).build(),
        };
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
        Ok(out.instance_refreshes().first().map(|r| {
            let desired = r.desired_configuration();
            let template = desired.and_then(|d| {
                d.launch_template().or_else(|| {
                    d.mixed_instances_policy()
                        .and_then(|p| p.launch_template())
                        .and_then(|t| t.launch_template_specification())
                })
            });
            RefreshState {
                id: r.instance_refresh_id().unwrap_or_default().to_string(),
                status: r.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                reason: r.status_reason().map(str::to_string),
                percentage: r.percentage_complete().unwrap_or(0),
                to_update: r.instances_to_update().unwrap_or(0),
                desired_version: template.and_then(|t| t.version()).and_then(|v| v.parse().ok()),
            }
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
        extra_tags: &[(String, String)],
    ) -> Result<(), CloudError> {
        let blue = self.describe_group(&like.name).await?.ok_or_else(|| {
            CloudError::new(
                "DescribeAutoScalingGroups",
                CloudErrorKind::NotFound,
                format!("group {} is gone", like.name),
            )
        })?;
        let hooks = self.lifecycle_hooks(&like.name).await?;
        let mut tags: Vec<asg::types::Tag> = blue
            .tags()
            .iter()
            .filter(|t| t.key().is_some_and(|k| !k.starts_with("aws:") && !extra_tags.iter().any(|(e, _)| e == k)))
            .map(|t| {
                asg::types::Tag::builder()
                    .set_key(t.key().map(str::to_string))
                    .set_value(t.value().map(str::to_string))
                    .set_propagate_at_launch(t.propagate_at_launch())
                    .build()
            })
            .collect();
        tags.extend(
            extra_tags
                .iter()
                .map(|(k, v)| asg::types::Tag::builder().key(k).value(v).propagate_at_launch(false).build()),
        );
        let mut call = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(like.min_size)
            .max_size(like.max_size)
            .desired_capacity(like.desired_capacity)
            .set_default_cooldown(blue.default_cooldown())
            .set_vpc_zone_identifier(like.subnets.clone())
            .set_target_group_arns(Some(target_groups.to_vec()))
            .set_health_check_type(like.health_check_type.clone())
            .set_health_check_grace_period(like.health_check_grace_period)
            .set_placement_group(blue.placement_group().map(str::to_string))
            .set_termination_policies(Some(blue.termination_policies().to_vec()).filter(|t| !t.is_empty()))
            .set_new_instances_protected_from_scale_in(blue.new_instances_protected_from_scale_in())
            .set_capacity_rebalance(blue.capacity_rebalance())
            .set_max_instance_lifetime(blue.max_instance_lifetime())
            .set_service_linked_role_arn(blue.service_linked_role_arn().map(str::to_string))
            .set_context(blue.context().map(str::to_string))
            .set_desired_capacity_type(blue.desired_capacity_type().map(str::to_string))
            .set_default_instance_warmup(blue.default_instance_warmup())
            .set_instance_maintenance_policy(blue.instance_maintenance_policy().cloned())
            .set_capacity_reservation_specification(blue.capacity_reservation_specification().cloned())
            .set_lifecycle_hook_specification_list(Some(hooks).filter(|h| !h.is_empty()))
            .set_tags(Some(tags).filter(|t| !t.is_empty()));
        call = match blue.mixed_instances_policy() {
            Some(p) => call.mixed_instances_policy(policy_on(p, template_id, version)),
            None => call.launch_template(spec(template_id, version)),
        };
        if like.subnets.is_none() {
            call = call.set_availability_zones(Some(like.availability_zones.clone()));
        }
        call.send().await.map_err(|e| cloud_error("CreateAutoScalingGroup", e))?;
        Ok(())
    }

    async fn copy_scaling(
        &self,
        from: &str,
        to: &str,
        target_groups: &[(String, String)],
    ) -> Result<Vec<String>, CloudError> {
        let mut copied = Vec::new();
        for p in self.scaling_policies(from).await? {
            let name = p.policy_name().unwrap_or_default().to_string();
            let tracking = p.target_tracking_configuration().cloned().map(|t| self.retarget(t, target_groups));
            self.autoscaling
                .put_scaling_policy()
                .auto_scaling_group_name(to)
                .policy_name(&name)
                .set_policy_type(p.policy_type().map(str::to_string))
                .set_adjustment_type(p.adjustment_type().map(str::to_string))
                .set_min_adjustment_magnitude(p.min_adjustment_magnitude())
                .set_scaling_adjustment(p.scaling_adjustment())
                .set_cooldown(p.cooldown())
                .set_metric_aggregation_type(p.metric_aggregation_type().map(str::to_string))
                .set_step_adjustments(Some(p.step_adjustments().to_vec()).filter(|s| !s.is_empty()))
                .set_estimated_instance_warmup(p.estimated_instance_warmup())
                .set_target_tracking_configuration(tracking)
                .set_enabled(p.enabled())
                .set_predictive_scaling_configuration(p.predictive_scaling_configuration().cloned())
                .send()
                .await
                .map_err(|e| cloud_error("PutScalingPolicy", e))?;
            let alarms: Vec<&str> = p.alarms().iter().filter_map(|a| a.alarm_name()).collect();
            copied.push(if alarms.is_empty() || p.target_tracking_configuration().is_some() {
                format!("policy {name}")
            } else {
                // Step and simple policies act when their alarms fire; those alarms name blue's policy.
                format!("policy {name} (its alarms {} still act on {from} only)", alarms.join(", "))
            });
        }
        let now = chrono::Utc::now().timestamp();
        for a in self.scheduled_actions(from).await? {
            let name = a.scheduled_action_name().unwrap_or_default().to_string();
            let future = a.start_time().filter(|t| t.secs() > now).cloned();
            if a.recurrence().is_none() && future.is_none() {
                continue; // a one-time action that has run: nothing left to copy
            }
            self.autoscaling
                .put_scheduled_update_group_action()
                .auto_scaling_group_name(to)
                .scheduled_action_name(&name)
                .set_start_time(future)
                .set_end_time(a.end_time().cloned())
                .set_recurrence(a.recurrence().map(str::to_string))
                .set_min_size(a.min_size())
                .set_max_size(a.max_size())
                .set_desired_capacity(a.desired_capacity())
                .set_time_zone(a.time_zone().map(str::to_string))
                .send()
                .await
                .map_err(|e| cloud_error("PutScheduledUpdateGroupAction", e))?;
            copied.push(format!("scheduled action {name}"));
        }
        Ok(copied)
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

    async fn set_desired(&self, name: &str, desired: i32) -> Result<(), CloudError> {
        self.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| cloud_error("SetDesiredCapacity", e))?;
        Ok(())
    }

    async fn terminate_in_group(&self, instance_id: &str, decrement: bool) -> Result<(), CloudError> {
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| cloud_error("TerminateInstanceInAutoScalingGroup", e))?;
        Ok(())
    }
}

impl SdkCloud {
    /// The group's lifecycle hooks, as CreateAutoScalingGroup takes them (so they hold for its
    /// first instances).
    async fn lifecycle_hooks(&self, group: &str) -> Result<Vec<asg::types::LifecycleHookSpecification>, CloudError> {
        let out = self
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeLifecycleHooks", e))?;
        Ok(out
            .lifecycle_hooks()
            .iter()
            .map(|h| {
                asg::types::LifecycleHookSpecification::builder()
                    .set_lifecycle_hook_name(h.lifecycle_hook_name().map(str::to_string))
                    .set_lifecycle_transition(h.lifecycle_transition().map(str::to_string))
                    .set_notification_metadata(h.notification_metadata().map(str::to_string))
                    .set_heartbeat_timeout(h.heartbeat_timeout())
                    .set_default_result(h.default_result().map(str::to_string))
                    .set_notification_target_arn(h.notification_target_arn().map(str::to_string))
                    .set_role_arn(h.role_arn().map(str::to_string))
                    .build()
            })
            .collect())
    }

    async fn scaling_policies(&self, group: &str) -> Result<Vec<asg::types::ScalingPolicy>, CloudError> {
        let mut pages = self.autoscaling.describe_policies().auto_scaling_group_name(group).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            out.extend(page.map_err(|e| cloud_error("DescribePolicies", e))?.scaling_policies().iter().cloned());
        }
        Ok(out)
    }

    async fn scheduled_actions(&self, group: &str) -> Result<Vec<asg::types::ScheduledUpdateGroupAction>, CloudError> {
        let mut pages =
            self.autoscaling.describe_scheduled_actions().auto_scaling_group_name(group).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeScheduledActions", e))?;
            out.extend(page.scheduled_update_group_actions().iter().cloned());
        }
        Ok(out)
    }

    /// A target tracking configuration on a target group's request count
    /// (`ALBRequestCountPerTarget`, resource label `app/LB/ID/targetgroup/NAME/ID`) moved to the
    /// target group that replaces it.
    fn retarget(
        &self,
        mut t: asg::types::TargetTrackingConfiguration,
        target_groups: &[(String, String)],
    ) -> asg::types::TargetTrackingConfiguration {
        let label_of = |arn: &str| arn.split_once(":targetgroup/").map(|(_, rest)| format!("targetgroup/{rest}"));
        if let Some(spec) = t.predefined_metric_specification.as_mut() {
            if let Some(label) = spec.resource_label.as_mut() {
                for (from, to) in target_groups {
                    if let (Some(f), Some(n)) = (label_of(from), label_of(to)) {
                        if label.ends_with(&f) {
                            *label = format!("{}{n}", &label[..label.len() - f.len()]);
                        }
                    }
                }
            }
        }
        t
    }
}

//! [`LoadBalancing`] and [`Alarms`] through the AWS SDK: target groups, target health, and the
//! listener default actions and rules that forward to them.

use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{Action, ActionTypeEnum};

use super::sdk::{cloud_error, SdkCloud};
use super::{
    Alarms, Forward, ForwardConfig, LoadBalancing, Route, RouteKind, Stickiness, TargetGroupInfo, TargetHealth,
    WeightedTargetGroup,
};
use crate::error::{CloudError, CloudErrorKind};

fn info(t: &elb::types::TargetGroup) -> TargetGroupInfo {
    TargetGroupInfo {
        arn: t.target_group_arn().unwrap_or_default().to_string(),
        name: t.target_group_name().unwrap_or_default().to_string(),
        protocol: t.protocol().map(|p| p.as_str().to_string()),
        port: t.port(),
        vpc_id: t.vpc_id().map(str::to_string),
        target_type: t.target_type().map(|p| p.as_str().to_string()),
        load_balancer_arns: t.load_balancer_arns().to_vec(),
    }
}

/// The forward action of a list of actions, as the API shows it.
fn forward_of(actions: &[Action]) -> Option<Forward> {
    let a = actions.iter().find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))?;
    let config = a.forward_config().map(|f| ForwardConfig {
        target_groups: f
            .target_groups()
            .iter()
            .map(|t| WeightedTargetGroup {
                arn: t.target_group_arn().unwrap_or_default().to_string(),
                weight: t.weight(),
            })
            .collect(),
        stickiness: f
            .target_group_stickiness_config()
            .map(|s| Stickiness { enabled: s.enabled(), duration_seconds: s.duration_seconds() }),
    });
    Some(Forward { target_group_arn: a.target_group_arn().map(str::to_string), config })
}

fn other_actions(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| a.r#type() != Some(&ActionTypeEnum::Forward))
        .map(|a| a.r#type().map(|t| t.as_str().to_string()).unwrap_or_default())
        .collect()
}

/// `actions` with the forward action set to `forward`, every other action as read. DescribeListeners
/// and DescribeRules never return an OIDC client secret: an action written back without one says
/// to keep the existing secret (the API reference's UseExistingClientSecret).
fn with_forward(actions: &[Action], forward: &Forward) -> Vec<Action> {
    actions
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a.r#type() == Some(&ActionTypeEnum::Forward) {
                a.target_group_arn = forward.target_group_arn.clone();
                a.forward_config = forward.config.as_ref().map(|c| {
                    let groups = c
                        .target_groups
                        .iter()
                        .map(|t| {
                            elb::types::TargetGroupTuple::builder()
                                .target_group_arn(&t.arn)
                                .set_weight(t.weight)
                                .build()
                        })
                        .collect();
                    let sticky = c.stickiness.as_ref().map(|s| {
                        elb::types::TargetGroupStickinessConfig::builder()
                            .set_enabled(s.enabled)
                            .set_duration_seconds(s.duration_seconds)
                            .build()
                    });
                    elb::types::ForwardActionConfig::builder()
                        .set_target_groups(Some(groups))
                        .set_target_group_stickiness_config(sticky)
                        .build()
                });
            }
            if let Some(oidc) = a.authenticate_oidc_config.as_mut() {
                if oidc.client_secret.is_none() {
                    oidc.use_existing_client_secret = Some(true);
                }
            }
            a
        })
        .collect()
}

impl SdkCloud {
    async fn describe_target_group(
        &self,
        call: elb::operation::describe_target_groups::builders::DescribeTargetGroupsFluentBuilder,
    ) -> Result<Option<elb::types::TargetGroup>, CloudError> {
        match call.send().await {
            Ok(out) => Ok(out.target_groups().first().cloned()),
            Err(e) => {
                let e = cloud_error("DescribeTargetGroups", e);
                if e.kind == CloudErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every listener of a load balancer.
    async fn listeners(&self, lb: &str) -> Result<Vec<elb::types::Listener>, CloudError> {
        let mut pages = self.elb.describe_listeners().load_balancer_arn(lb).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            out.extend(page.map_err(|e| cloud_error("DescribeListeners", e))?.listeners().iter().cloned());
        }
        Ok(out)
    }

    /// Every rule of a listener but its default one (the listener's own default actions).
    async fn rules(&self, listener: &str) -> Result<Vec<elb::types::Rule>, CloudError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elb
                .describe_rules()
                .listener_arn(listener)
                .page_size(400)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| cloud_error("DescribeRules", e))?;
            out.extend(page.rules().iter().filter(|r| r.is_default() != Some(true)).cloned());
            match page.next_marker().filter(|m| !m.is_empty()) {
                Some(m) => marker = Some(m.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// The actions a route has now.
    async fn route_actions(&self, route: &Route) -> Result<Vec<Action>, CloudError> {
        let gone =
            |what: &str| CloudError::new("DescribeListeners", CloudErrorKind::NotFound, format!("{what} is gone"));
        match route.kind {
            RouteKind::Listener => {
                let out = self
                    .elb
                    .describe_listeners()
                    .listener_arns(&route.arn)
                    .send()
                    .await
                    .map_err(|e| cloud_error("DescribeListeners", e))?;
                let l = out.listeners().first().ok_or_else(|| gone(&route.arn))?;
                Ok(l.default_actions().to_vec())
            }
            RouteKind::Rule => {
                let out = self
                    .elb
                    .describe_rules()
                    .rule_arns(&route.arn)
                    .send()
                    .await
                    .map_err(|e| cloud_error("DescribeRules", e))?;
                let r = out.rules().first().ok_or_else(|| gone(&route.arn))?;
                Ok(r.actions().to_vec())
            }
        }
    }
}

impl LoadBalancing for SdkCloud {
    async fn target_group(&self, arn: &str) -> Result<Option<TargetGroupInfo>, CloudError> {
        Ok(self
            .describe_target_group(self.elb.describe_target_groups().target_group_arns(arn))
            .await?
            .as_ref()
            .map(info))
    }

    async fn target_group_named(&self, name: &str) -> Result<Option<TargetGroupInfo>, CloudError> {
        Ok(self.describe_target_group(self.elb.describe_target_groups().names(name)).await?.as_ref().map(info))
    }

    async fn target_group_tags(&self, arn: &str) -> Result<Vec<(String, String)>, CloudError> {
        let out =
            self.elb.describe_tags().resource_arns(arn).send().await.map_err(|e| cloud_error("DescribeTags", e))?;
        Ok(out
            .tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
            .collect())
    }

    async fn create_target_group_like(
        &self,
        like: &TargetGroupInfo,
        name: &str,
        extra_tags: &[(String, String)],
    ) -> Result<String, CloudError> {
        let t = self
            .describe_target_group(self.elb.describe_target_groups().target_group_arns(&like.arn))
            .await?
            .ok_or_else(|| {
                CloudError::new("DescribeTargetGroups", CloudErrorKind::NotFound, format!("{} is gone", like.arn))
            })?;
        let mut tags: Vec<elb::types::Tag> = self
            .target_group_tags(&like.arn)
            .await?
            .into_iter()
            .filter(|(k, _)| !k.starts_with("aws:") && !extra_tags.iter().any(|(e, _)| e == k))
            .chain(extra_tags.iter().cloned())
            .map(|(k, v)| elb::types::Tag::builder().key(k).value(v).build())
            .collect();
        tags.truncate(50);
        let out = self
            .elb
            .create_target_group()
            .name(name)
            .set_protocol(t.protocol().cloned())
            .set_protocol_version(t.protocol_version().map(str::to_string))
            .set_port(t.port())
            .set_vpc_id(t.vpc_id().map(str::to_string))
            .set_health_check_protocol(t.health_check_protocol().cloned())
            .set_health_check_port(t.health_check_port().map(str::to_string))
            .set_health_check_enabled(t.health_check_enabled())
            .set_health_check_path(t.health_check_path().map(str::to_string))
            .set_health_check_interval_seconds(t.health_check_interval_seconds())
            .set_health_check_timeout_seconds(t.health_check_timeout_seconds())
            .set_healthy_threshold_count(t.healthy_threshold_count())
            .set_unhealthy_threshold_count(t.unhealthy_threshold_count())
            .set_matcher(t.matcher().cloned())
            .set_target_type(t.target_type().cloned())
            .set_ip_address_type(t.ip_address_type().cloned())
            .set_tags(Some(tags).filter(|t| !t.is_empty()))
            .send()
            .await
            .map_err(|e| cloud_error("CreateTargetGroup", e))?;
        let arn =
            out.target_groups().first().and_then(|t| t.target_group_arn()).map(str::to_string).ok_or_else(|| {
                CloudError::new("CreateTargetGroup", CloudErrorKind::Service, "no target group in the answer")
            })?;
        let attributes = self
            .elb
            .describe_target_group_attributes()
            .target_group_arn(&like.arn)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeTargetGroupAttributes", e))?;
        if !attributes.attributes().is_empty() {
            self.elb
                .modify_target_group_attributes()
                .target_group_arn(&arn)
                .set_attributes(Some(attributes.attributes().to_vec()))
                .send()
                .await
                .map_err(|e| cloud_error("ModifyTargetGroupAttributes", e))?;
        }
        Ok(arn)
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        match self.elb.delete_target_group().target_group_arn(arn).send().await {
            Ok(_) => Ok(()),
            // Gone already (a resumed tear-down): what was asked for is true.
            Err(e) => match cloud_error("DeleteTargetGroup", e) {
                e if e.kind == CloudErrorKind::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn target_health(&self, arn: &str) -> Result<Vec<TargetHealth>, CloudError> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| TargetHealth {
                id: d.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
                state: d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                reason: d.target_health().and_then(|h| h.reason()).map(|r| r.as_str().to_string()),
            })
            .collect())
    }

    async fn routes_to(&self, target_groups: &[TargetGroupInfo]) -> Result<Vec<Route>, CloudError> {
        let names_one = |f: &Forward| target_groups.iter().any(|t| f.names(&t.arn));
        let mut lbs: Vec<&String> = target_groups.iter().flat_map(|t| &t.load_balancer_arns).collect();
        lbs.sort();
        lbs.dedup();
        let mut out = Vec::new();
        for lb in lbs {
            for l in self.listeners(lb).await? {
                let listener_arn = l.listener_arn().unwrap_or_default().to_string();
                let route = |kind, arn: &str, actions: &[Action]| {
                    forward_of(actions).filter(names_one).map(|forward| Route {
                        kind,
                        arn: arn.to_string(),
                        listener_arn: listener_arn.clone(),
                        load_balancer_arn: lb.clone(),
                        protocol: l.protocol().map(|p| p.as_str().to_string()),
                        forward,
                        other_actions: other_actions(actions),
                    })
                };
                out.extend(route(RouteKind::Listener, &listener_arn, l.default_actions()));
                for r in self.rules(&listener_arn).await? {
                    out.extend(route(RouteKind::Rule, r.rule_arn().unwrap_or_default(), r.actions()));
                }
            }
        }
        Ok(out)
    }

    async fn set_forward(&self, route: &Route, forward: &Forward) -> Result<(), CloudError> {
        let actions = with_forward(&self.route_actions(route).await?, forward);
        match route.kind {
            RouteKind::Listener => {
                self.elb
                    .modify_listener()
                    .listener_arn(&route.arn)
                    .set_default_actions(Some(actions))
                    .send()
                    .await
                    .map_err(|e| cloud_error("ModifyListener", e))?;
            }
            RouteKind::Rule => {
                self.elb
                    .modify_rule()
                    .rule_arn(&route.arn)
                    .set_actions(Some(actions))
                    .send()
                    .await
                    .map_err(|e| cloud_error("ModifyRule", e))?;
            }
        }
        Ok(())
    }
}

impl Alarms for SdkCloud {
    async fn alarm_states(&self, names: &[String]) -> Result<Vec<(String, String)>, CloudError> {
        let mut out = Vec::new();
        // DescribeAlarms takes at most 100 names.
        for chunk in names.chunks(100) {
            let mut pages =
                self.cloudwatch.describe_alarms().set_alarm_names(Some(chunk.to_vec())).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("DescribeAlarms", e))?;
                out.extend(
                    page.metric_alarms()
                        .iter()
                        .filter_map(|a| Some((a.alarm_name()?.to_string(), a.state_value()?.as_str().to_string()))),
                );
            }
        }
        Ok(out)
    }
}

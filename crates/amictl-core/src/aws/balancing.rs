//! [`LoadBalancing`] through the AWS SDK: target groups, target health, listener weights.

use aws_sdk_elasticloadbalancingv2 as elb;

use super::sdk::{cloud_error, SdkCloud};
use super::{Alarms, ListenerInfo, LoadBalancing, TargetGroupInfo};
use crate::error::{CloudError, CloudErrorKind};

fn info(t: &elb::types::TargetGroup) -> TargetGroupInfo {
    TargetGroupInfo {
        arn: t.target_group_arn().unwrap_or_default().to_string(),
        name: t.target_group_name().unwrap_or_default().to_string(),
        protocol: t.protocol().map(|p| p.as_str().to_string()),
        port: t.port(),
        vpc_id: t.vpc_id().map(str::to_string),
        health_check_path: t.health_check_path().map(str::to_string),
        load_balancer_arns: t.load_balancer_arns().to_vec(),
    }
}

/// Where a default action forwards, with weights (a plain forward is weight 1).
fn forwards(actions: &[elb::types::Action]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for a in actions.iter().filter(|a| a.r#type() == Some(&elb::types::ActionTypeEnum::Forward)) {
        match a.forward_config().map(|f| f.target_groups()).filter(|t| !t.is_empty()) {
            Some(groups) => out.extend(
                groups.iter().filter_map(|g| Some((g.target_group_arn()?.to_string(), g.weight().unwrap_or(1)))),
            ),
            None => out.extend(a.target_group_arn().map(|t| (t.to_string(), 1))),
        }
    }
    out
}

impl LoadBalancing for SdkCloud {
    async fn target_group(&self, arn: &str) -> Result<Option<TargetGroupInfo>, CloudError> {
        match self.elb.describe_target_groups().target_group_arns(arn).send().await {
            Ok(out) => Ok(out.target_groups().first().map(info)),
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

    async fn create_target_group_like(&self, like: &TargetGroupInfo, name: &str) -> Result<String, CloudError> {
        let out = self
            .elb
            .create_target_group()
            .name(name)
            .set_protocol(like.protocol.as_deref().map(elb::types::ProtocolEnum::from))
            .set_port(like.port)
            .set_vpc_id(like.vpc_id.clone())
            .set_health_check_path(like.health_check_path.clone())
            .send()
            .await
            .map_err(|e| cloud_error("CreateTargetGroup", e))?;
        out.target_groups().first().and_then(|t| t.target_group_arn()).map(str::to_string).ok_or_else(|| {
            CloudError::new("CreateTargetGroup", CloudErrorKind::Service, "no target group in the answer")
        })
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        self.elb
            .delete_target_group()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| cloud_error("DeleteTargetGroup", e))?;
        Ok(())
    }

    async fn target_health(&self, arn: &str) -> Result<Vec<(String, String)>, CloudError> {
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
            .map(|d| {
                (
                    d.target().and_then(|t| t.id()).unwrap_or_default().to_string(),
                    d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                )
            })
            .collect())
    }

    async fn listeners_forwarding_to(&self, tg: &TargetGroupInfo) -> Result<Vec<ListenerInfo>, CloudError> {
        let mut out = Vec::new();
        for lb in &tg.load_balancer_arns {
            let mut pages = self.elb.describe_listeners().load_balancer_arn(lb).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("DescribeListeners", e))?;
                for l in page.listeners() {
                    let f = forwards(l.default_actions());
                    if f.iter().any(|(arn, _)| arn == &tg.arn) {
                        out.push(ListenerInfo { arn: l.listener_arn().unwrap_or_default().to_string(), forwards: f });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn forward(&self, listener_arn: &str, weights: &[(String, i32)]) -> Result<(), CloudError> {
        let groups = weights
            .iter()
            .map(|(arn, w)| elb::types::TargetGroupTuple::builder().target_group_arn(arn).weight(*w).build())
            .collect();
        let config = elb::types::ForwardActionConfig::builder().set_target_groups(Some(groups)).build();
        let action =
            elb::types::Action::builder().r#type(elb::types::ActionTypeEnum::Forward).forward_config(config).build();
        self.elb
            .modify_listener()
            .listener_arn(listener_arn)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| cloud_error("ModifyListener", e))?;
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

//! [`Machines`] through the AWS SDK: RunInstances and friends, SSM Run Command.

use std::time::Duration;

use aws_sdk_ec2 as ec2;
use aws_sdk_ssm as ssm;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::sdk::{cloud_error, ec2_tags, image, one_line_chain, smithy_date, SdkCloud};
use super::{CommandRequest, CommandTargets, Invocation, LaunchSpec, Machine, Machines, StatusChecks};
use crate::error::{CloudError, CloudErrorKind};
use crate::inventory::Image;

/// SendCommand takes at most 50 instance ids; DescribeInstanceInformation's filter as many.
const INSTANCE_IDS_PER_CALL: usize = 50;

fn machine(i: &ec2::types::Instance) -> Machine {
    Machine {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_string),
        public_ip: i.public_ip_address().map(str::to_string),
        launch_time: smithy_date(i.launch_time()),
        tags: ec2_tags(i.tags()),
    }
}

fn filter(name: &str, values: &[String]) -> ec2::types::Filter {
    ec2::types::Filter::builder().name(name).set_values(Some(values.to_vec())).build()
}

impl Machines for SdkCloud {
    async fn instance_type_offered(&self, instance_type: &str) -> Result<bool, CloudError> {
        let out = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(ec2::types::LocationType::Region)
            .filters(filter("instance-type", &[instance_type.to_string()]))
            .send()
            .await
            .map_err(|e| cloud_error("DescribeInstanceTypeOfferings", e))?;
        Ok(out.instance_type_offerings().iter().any(|o| o.instance_type().map(|t| t.as_str()) == Some(instance_type)))
    }

    async fn images_matching(&self, name_pattern: &str, owners: &[String]) -> Result<Vec<Image>, CloudError> {
        let mut pages = self
            .ec2
            .describe_images()
            .filters(filter("name", &[name_pattern.to_string()]))
            .set_owners((!owners.is_empty()).then(|| owners.to_vec()))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            out.extend(page.map_err(|e| cloud_error("DescribeImages", e))?.images().iter().map(image));
        }
        Ok(out)
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<String, CloudError> {
        let tags: Vec<ec2::types::Tag> =
            spec.tags.iter().map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build()).collect();
        let tag_spec =
            |kind| ec2::types::TagSpecification::builder().resource_type(kind).set_tags(Some(tags.clone())).build();
        let profile = spec.instance_profile.as_ref().map(|p| {
            let b = ec2::types::IamInstanceProfileSpecification::builder();
            if p.starts_with("arn:") { b.arn(p) } else { b.name(p) }.build()
        });
        // IMDSv2 only: a pipeline instance never answers metadata without a session token.
        let metadata = ec2::types::InstanceMetadataOptionsRequest::builder()
            .http_tokens(ec2::types::HttpTokensState::Required)
            .http_endpoint(ec2::types::InstanceMetadataEndpointState::Enabled)
            .build();
        let out = self
            .ec2
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(ec2::types::InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&spec.client_token)
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids((!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()))
            .set_iam_instance_profile(profile)
            .metadata_options(metadata)
            .instance_initiated_shutdown_behavior(ec2::types::ShutdownBehavior::Terminate)
            .tag_specifications(tag_spec(ec2::types::ResourceType::Instance))
            .tag_specifications(tag_spec(ec2::types::ResourceType::Volume))
            .send()
            .await
            .map_err(|e| cloud_error("RunInstances", e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| CloudError::new("RunInstances", CloudErrorKind::Service, "no instance in the answer"))
    }

    async fn wait_running(&self, instance_id: &str, timeout: Duration) -> Result<Machine, CloudError> {
        use ec2::client::Waiters;
        self.ec2.wait_until_instance_running().instance_ids(instance_id).wait(timeout).await.map_err(|e| {
            CloudError::new(
                "DescribeInstances",
                CloudErrorKind::Service,
                format!("waiting for {instance_id} to run: {}", one_line_chain(&e)),
            )
        })?;
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeInstances", e))?;
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(machine)
            .find(|m| m.instance_id == instance_id)
            .ok_or_else(|| {
                CloudError::new("DescribeInstances", CloudErrorKind::NotFound, format!("{instance_id} vanished"))
            })
    }

    async fn status_checks(&self, instance_id: &str) -> Result<Option<StatusChecks>, CloudError> {
        let out = self
            .ec2
            .describe_instance_status()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeInstanceStatus", e))?;
        let status = |s: Option<&ec2::types::InstanceStatusSummary>| {
            s.and_then(|s| s.status()).map(|s| s.as_str().to_string()).unwrap_or_else(|| "initializing".into())
        };
        Ok(out
            .instance_statuses()
            .iter()
            .find(|s| s.instance_id() == Some(instance_id))
            .map(|s| StatusChecks { system: status(s.system_status()), instance: status(s.instance_status()) }))
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        for chunk in instance_ids.chunks(1000) {
            match self.ec2.terminate_instances().set_instance_ids(Some(chunk.to_vec())).send().await {
                Ok(_) => {}
                // One unknown id fails the whole call, terminating none: one at a time then, an
                // instance already gone being what terminating wants.
                Err(e) if e.code() == Some("InvalidInstanceID.NotFound") && chunk.len() > 1 => {
                    for id in chunk {
                        Box::pin(self.terminate(std::slice::from_ref(id))).await?;
                    }
                }
                Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => {}
                Err(e) => return Err(cloud_error("TerminateInstances", e)),
            }
        }
        Ok(())
    }

    async fn instances_tagged(&self, key: &str) -> Result<Vec<Machine>, CloudError> {
        let live = ["pending", "running", "stopping", "stopped"].map(String::from);
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(filter("tag-key", &[key.to_string()]))
            .filters(filter("instance-state-name", &live))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeInstances", e))?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances()).map(machine));
        }
        Ok(out)
    }

    async fn running_instances(&self, filters: &[(String, Vec<String>)]) -> Result<Vec<Machine>, CloudError> {
        let mut call = self.ec2.describe_instances().filters(filter("instance-state-name", &["running".to_string()]));
        for (name, values) in filters {
            call = call.filters(filter(name, values));
        }
        let mut pages = call.max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeInstances", e))?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances()).map(machine));
        }
        Ok(out)
    }

    async fn commands_with_comment(&self, comment: &str) -> Result<Vec<String>, CloudError> {
        let mut pages = self.ssm.list_commands().into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("ListCommands", e))?;
            out.extend(
                page.commands()
                    .iter()
                    .filter(|c| c.comment() == Some(comment))
                    .filter_map(|c| c.command_id().map(str::to_string)),
            );
        }
        Ok(out)
    }

    async fn managed(&self, instance_ids: &[String]) -> Result<Vec<String>, CloudError> {
        let mut out = Vec::new();
        for chunk in instance_ids.chunks(INSTANCE_IDS_PER_CALL) {
            let f = ssm::types::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(chunk.to_vec()))
                .build()
                .map_err(|e| CloudError::new("DescribeInstanceInformation", CloudErrorKind::Service, e.to_string()))?;
            let mut pages = self.ssm.describe_instance_information().filters(f).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("DescribeInstanceInformation", e))?;
                out.extend(
                    page.instance_information_list()
                        .iter()
                        .filter(|i| i.ping_status() == Some(&ssm::types::PingStatus::Online))
                        .filter_map(|i| i.instance_id().map(str::to_string)),
                );
            }
        }
        Ok(out)
    }

    async fn send_command(&self, r: &CommandRequest) -> Result<String, CloudError> {
        let mut call = self
            .ssm
            .send_command()
            .document_name(&r.document)
            .max_concurrency(&r.max_concurrency)
            .max_errors(&r.max_errors)
            .timeout_seconds(r.delivery_timeout.as_secs().clamp(30, 2_592_000) as i32)
            .comment(r.comment.chars().take(100).collect::<String>());
        for (k, v) in &r.parameters {
            call = call.parameters(k, v.clone());
        }
        call = match &r.targets {
            CommandTargets::Instances(ids) => call.set_instance_ids(Some(ids.clone())),
            CommandTargets::Tags(tags) => tags.iter().fold(call, |c, (k, v)| {
                c.targets(ssm::types::Target::builder().key(format!("tag:{k}")).set_values(Some(v.clone())).build())
            }),
        };
        let out = call.send().await.map_err(|e| cloud_error("SendCommand", e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| CloudError::new("SendCommand", CloudErrorKind::Service, "no command id in the answer"))
    }

    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError> {
        let mut pages =
            self.ssm.list_command_invocations().command_id(command_id).details(true).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("ListCommandInvocations", e))?;
            out.extend(page.command_invocations().iter().map(|i| {
                let plugins = i.command_plugins();
                Invocation {
                    instance_id: i.instance_id().unwrap_or_default().to_string(),
                    status: i.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    status_details: i.status_details().unwrap_or_default().to_string(),
                    // A failed plugin's code, else the last plugin that answered (a document's
                    // skipped steps report 0).
                    exit_code: plugins
                        .iter()
                        .find(|p| matches!(p.status().map(|s| s.as_str()), Some("Failed" | "TimedOut")))
                        .or_else(|| plugins.iter().rev().find(|p| p.response_code() != -1))
                        .map(|p| p.response_code() as i64),
                    output: plugins.iter().filter_map(|p| p.output()).collect::<Vec<_>>().join("\n"),
                }
            }));
        }
        Ok(out)
    }

    async fn invocation_output(&self, command_id: &str, instance_id: &str) -> Result<(String, String), CloudError> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| cloud_error("GetCommandInvocation", e))?;
        Ok((
            out.standard_output_content().unwrap_or_default().to_string(),
            out.standard_error_content().unwrap_or_default().to_string(),
        ))
    }

    async fn copy_image(
        &self,
        source_region: &str,
        image_id: &str,
        name: &str,
        client_token: &str,
    ) -> Result<String, CloudError> {
        let out = self
            .ec2
            .copy_image()
            .source_region(source_region)
            .source_image_id(image_id)
            .name(name)
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| cloud_error("CopyImage", e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| CloudError::new("CopyImage", CloudErrorKind::Service, "no image id in the answer"))
    }

    async fn share_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError> {
        self.modify_launch_permission(image_id, accounts, true).await
    }
}

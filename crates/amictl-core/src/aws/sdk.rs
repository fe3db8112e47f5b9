//! [`Cloud`] implemented with the AWS SDK for Rust, and the request counter every client carries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_autoscaling as asg;
use aws_sdk_ec2 as ec2;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

use super::pacing::{Pacer, Pacing};
use super::Cloud;
use crate::catalog::{parse_channel_parameter, ChangeNote, Channel, ChannelEntry, CHANNEL_PREFIX};
use crate::error::{CloudError, CloudErrorKind};
use crate::inventory::{
    AsgSource, AutoScalingGroup, Fleet, FleetKind, Image, Instance, LaunchConfiguration, LaunchPermission,
    LaunchTemplate, LaunchTemplateVersion, ParameterValue, Scope, Snapshot, TemplateRef,
};

/// Counts every HTTP request the SDK sends (retries included), and the throttled answers, by
/// `Service.Operation`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    sent: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
}

impl RequestCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.sent.clone()).unwrap_or_default()
    }
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
    /// Requests AWS answered with a throttling error, by `Service.Operation`.
    pub fn throttled(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.throttled.clone()).unwrap_or_default()
    }
}

fn operation_key(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>().map(|m| format!("{}.{}", m.service(), m.name())).unwrap_or_else(|| "unknown".into())
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "amictl::RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = operation_key(cfg);
        if let Ok(mut m) = self.0.lock() {
            *m.sent.entry(key).or_default() += 1;
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = ctx.response();
        if super::pacing::is_throttled(response.status().as_u16(), response.body().bytes().unwrap_or_default()) {
            let key = operation_key(cfg);
            if let Ok(mut m) = self.0.lock() {
                *m.throttled.entry(key).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// One account in one region, through the SDK.
#[derive(Debug, Clone)]
pub struct SdkCloud {
    scope: Scope,
    pub ec2: ec2::Client,
    pub autoscaling: asg::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    /// The event history that tells which sharing readings still hold.
    pub cloudtrail: aws_sdk_cloudtrail::Client,
    /// Set once the endpoint turned out not to support native (de)deprecation, so later
    /// images do not pay for the failed call and its retries.
    no_native_deprecation: Arc<std::sync::atomic::AtomicBool>,
}

impl SdkCloud {
    /// The clients of `scope`; the EC2 and CloudTrail ones send through `pacer`.
    pub fn new(scope: Scope, config: &aws_types::SdkConfig, counter: &RequestCounter, pacer: &Pacer) -> Self {
        let pacing = Pacing::new(pacer, &scope);
        let paced = super::pacing::base_http_client(config).map(|c| pacing.http_client(c));
        let quota = super::session::retry_partition;
        let mut ec2 = ec2::config::Builder::from(config)
            .interceptor(counter.clone())
            .interceptor(pacing.clone())
            .retry_partition(quota("ec2"));
        let mut cloudtrail = aws_sdk_cloudtrail::config::Builder::from(config)
            .interceptor(counter.clone())
            .interceptor(pacing.clone())
            .retry_partition(quota("cloudtrail"));
        if let Some(client) = paced {
            ec2 = ec2.http_client(client.clone());
            cloudtrail = cloudtrail.http_client(client);
        } else {
            tracing::warn!("no HTTP client to pace: EC2 requests go unpaced");
        }
        let ec2 = ec2::Client::from_conf(ec2.build());
        let cloudtrail = aws_sdk_cloudtrail::Client::from_conf(cloudtrail.build());
        let autoscaling = asg::Client::from_conf(
            asg::config::Builder::from(config)
                .interceptor(counter.clone())
                .retry_partition(quota("autoscaling"))
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(config)
                .interceptor(counter.clone())
                .retry_partition(quota("ssm"))
                .build(),
        );
        let elb = aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
                .interceptor(counter.clone())
                .retry_partition(quota("elasticloadbalancing"))
                .build(),
        );
        let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(config)
                .interceptor(counter.clone())
                .retry_partition(quota("monitoring"))
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(config)
                .interceptor(counter.clone())
                .retry_partition(quota("sns"))
                .build(),
        );
        SdkCloud {
            scope,
            ec2,
            autoscaling,
            ssm,
            elb,
            cloudwatch,
            sns,
            cloudtrail,
            no_native_deprecation: Arc::default(),
        }
    }
}

impl SdkCloud {
    /// Adds (`add`) or removes each account's launch permission: ModifyImageAttribute.
    pub(super) async fn modify_launch_permission(
        &self,
        image_id: &str,
        accounts: &[String],
        add: bool,
    ) -> Result<(), CloudError> {
        let permissions = accounts.iter().map(|a| ec2::types::LaunchPermission::builder().user_id(a).build()).collect();
        let change = ec2::types::LaunchPermissionModifications::builder();
        let change = if add { change.set_add(Some(permissions)) } else { change.set_remove(Some(permissions)) }.build();
        self.ec2
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(change)
            .send()
            .await
            .map_err(|e| cloud_error("ModifyImageAttribute", e))?;
        Ok(())
    }
}

/// Turns an SDK error into a [`CloudError`] that says what kind of failure it was.
pub fn cloud_error<E, R>(operation: &str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_string);
    let full = one_line_chain(&err);
    if full.contains("no credentials found in chain") {
        return CloudError {
            operation: operation.into(),
            kind: CloudErrorKind::Credentials,
            code,
            message: "no AWS credentials found (tried environment variables, the shared config and credentials \
                      files, web identity, ECS and instance metadata)"
                .into(),
        };
    }
    let kind = match &err {
        SdkError::DispatchFailure(_) if full.contains("credential") || full.contains("identity") => {
            CloudErrorKind::Credentials
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => CloudErrorKind::Unreachable,
        _ if full.contains("no credentials") || full.contains("failed to load credentials") => {
            CloudErrorKind::Credentials
        }
        _ => match code.as_deref() {
            Some(
                "AuthFailure"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "RequestExpired"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId",
            ) => CloudErrorKind::Credentials,
            Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => CloudErrorKind::Permission,
            Some(c) if c.contains("NotFound") || c == "InvalidAMIID.Unavailable" => CloudErrorKind::NotFound,
            Some(c) if c.contains("Throttl") || c == "RequestLimitExceeded" => CloudErrorKind::Throttled,
            _ => CloudErrorKind::Service,
        },
    };
    let message = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => match &err {
            // The SDK's top-level text ("dispatch failure") says nothing; the chain does.
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ConstructionFailure(_) => full.clone(),
            SdkError::ResponseError(_) => format!("unreadable response: {full}"),
            _ => full.clone(),
        },
    };
    CloudError { operation: operation.into(), kind, code, message }
}

/// The error and its sources on one line, each as it displays itself (`dispatch failure: io
/// error: … Connection refused`); a source that only repeats the text before it is left out, and
/// nothing is shown in Rust's debug form.
pub(crate) fn one_line_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn date(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

pub(crate) fn smithy_date(d: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    d.and_then(|d| DateTime::from_timestamp(d.secs(), d.subsec_nanos()))
}

pub(crate) fn ec2_tags(tags: &[ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

pub(crate) fn image(i: &ec2::types::Image) -> Image {
    Image {
        id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().unwrap_or_default().to_string(),
        owner: i.owner_id().unwrap_or_default().to_string(),
        state: i.state().map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into()),
        creation_date: date(i.creation_date()),
        public: i.public().unwrap_or(false),
        description: i.description().map(str::to_string),
        tags: ec2_tags(i.tags()),
        snapshot_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs()?.snapshot_id().map(str::to_string))
            .collect(),
        deprecation_time: date(i.deprecation_time()),
    }
}

fn template_ref(s: &asg::types::LaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: s.launch_template_id().map(str::to_string),
        name: s.launch_template_name().map(str::to_string),
        version: s.version().map(str::to_string),
    }
}

fn asg_source(g: &asg::types::AutoScalingGroup) -> AsgSource {
    if let Some(t) = g.launch_template() {
        return AsgSource::LaunchTemplate { template: template_ref(t) };
    }
    if let Some(lt) = g.mixed_instances_policy().and_then(|p| p.launch_template()) {
        if let Some(spec) = lt.launch_template_specification() {
            let overrides =
                lt.overrides().iter().filter_map(|o| o.launch_template_specification()).map(template_ref).collect();
            return AsgSource::MixedInstancesPolicy { template: template_ref(spec), overrides };
        }
    }
    match g.launch_configuration_name() {
        Some(name) => AsgSource::LaunchConfiguration { name: name.to_string() },
        None => AsgSource::Unknown,
    }
}

fn fleet_template(s: &ec2::types::FleetLaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: s.launch_template_id().map(str::to_string),
        name: s.launch_template_name().map(str::to_string),
        version: s.version().map(str::to_string),
    }
}

fn ec2_fleet(f: &ec2::types::FleetData) -> Fleet {
    let configs = f.launch_template_configs();
    Fleet {
        kind: FleetKind::Ec2Fleet,
        fleet_id: f.fleet_id().unwrap_or_default().to_string(),
        state: f.fleet_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        request_type: f.r#type().map(|t| t.as_str().to_string()),
        image_ids: configs
            .iter()
            .flat_map(|c| c.overrides())
            .filter_map(|o| o.image_id().map(str::to_string))
            .collect(),
        templates: configs.iter().filter_map(|c| c.launch_template_specification()).map(fleet_template).collect(),
    }
}

fn spot_fleet(r: &ec2::types::SpotFleetRequestConfig) -> Fleet {
    let config = r.spot_fleet_request_config();
    let specs = config.map(|c| c.launch_specifications()).unwrap_or_default();
    let templates = config.map(|c| c.launch_template_configs()).unwrap_or_default();
    Fleet {
        kind: FleetKind::SpotFleet,
        fleet_id: r.spot_fleet_request_id().unwrap_or_default().to_string(),
        state: r.spot_fleet_request_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        request_type: config.and_then(|c| c.r#type()).map(|t| t.as_str().to_string()),
        image_ids: specs.iter().filter_map(|s| s.image_id().map(str::to_string)).collect(),
        templates: templates.iter().filter_map(|c| c.launch_template_specification()).map(fleet_template).collect(),
    }
}

fn spot_request(r: &ec2::types::SpotInstanceRequest) -> Fleet {
    Fleet {
        kind: FleetKind::SpotRequest,
        fleet_id: r.spot_instance_request_id().unwrap_or_default().to_string(),
        state: r.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        request_type: r.r#type().map(|t| t.as_str().to_string()),
        image_ids: r.launch_specification().and_then(|l| l.image_id()).map(str::to_string).into_iter().collect(),
        templates: Vec::new(),
    }
}

/// The image a sharing event is about: its resource, else the image id of its request.
fn event_image(e: &aws_sdk_cloudtrail::types::Event) -> Option<String> {
    let named = e.resources().iter().find(|r| r.resource_type() == Some("AWS::EC2::Ami"));
    if let Some(id) = named.and_then(|r| r.resource_name()).filter(|id| id.starts_with("ami-")) {
        return Some(id.to_string());
    }
    let record: serde_json::Value = serde_json::from_str(e.cloud_trail_event()?).ok()?;
    let id = record.pointer("/requestParameters/imageId")?.as_str()?;
    id.starts_with("ami-").then(|| id.to_string())
}

/// GetParameters takes at most 10 names.
const PARAMETERS_PER_CALL: usize = 10;

/// The reference a returned parameter answers: its name, with the selector it was asked with.
fn parameter_reference(p: &aws_sdk_ssm::types::Parameter) -> String {
    let name = p.name().unwrap_or_default();
    match p.selector().filter(|s| !s.is_empty()) {
        Some(s) if s.starts_with(':') => format!("{name}{s}"),
        Some(s) => format!("{name}:{s}"),
        None => name.to_string(),
    }
}

/// EC2 caps the values of one filter at 200.
const FILTER_VALUES_MAX: usize = 200;

impl Cloud for SdkCloud {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    async fn owned_images(&self) -> Result<Vec<Image>, CloudError> {
        let mut pages = self
            .ec2
            .describe_images()
            .owners("self")
            .include_deprecated(true)
            .include_disabled(true)
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeImages", e))?;
            out.extend(page.images().iter().map(image));
        }
        Ok(out)
    }

    async fn images_by_id(&self, ids: &[String]) -> Result<Vec<Image>, CloudError> {
        let mut out = Vec::new();
        // A filter (unlike ImageIds) does not fail the whole call for one unknown id.
        for chunk in ids.chunks(FILTER_VALUES_MAX) {
            let filter = ec2::types::Filter::builder().name("image-id").set_values(Some(chunk.to_vec())).build();
            let mut pages = self
                .ec2
                .describe_images()
                .filters(filter)
                .include_deprecated(true)
                .include_disabled(true)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("DescribeImages", e))?;
                out.extend(page.images().iter().map(image));
            }
        }
        Ok(out)
    }

    async fn owned_snapshots(&self) -> Result<Vec<Snapshot>, CloudError> {
        let mut pages = self.ec2.describe_snapshots().owner_ids("self").max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeSnapshots", e))?;
            // OwnerIds=self is the service's filter; some endpoints ignore it.
            let ours = page.snapshots().iter().filter(|s| s.owner_id().is_none_or(|o| o == self.scope.account));
            out.extend(ours.map(|s| Snapshot {
                id: s.snapshot_id().unwrap_or_default().to_string(),
                description: s.description().unwrap_or_default().to_string(),
                encrypted: s.encrypted().unwrap_or(false),
                volume_size_gib: s.volume_size().unwrap_or(0),
                start_time: smithy_date(s.start_time()),
                tags: ec2_tags(s.tags()),
            }));
        }
        Ok(out)
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        let mut pages = self.ec2.describe_instances().max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeInstances", e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let tags = ec2_tags(i.tags());
                out.push(Instance {
                    id: i.instance_id().unwrap_or_default().to_string(),
                    image_id: i.image_id().unwrap_or_default().to_string(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    name: tags.get("Name").cloned(),
                    launch_time: smithy_date(i.launch_time()),
                    tags,
                });
            }
        }
        Ok(out)
    }

    async fn launch_templates(&self) -> Result<Vec<LaunchTemplate>, CloudError> {
        let mut pages = self.ec2.describe_launch_templates().max_results(200).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeLaunchTemplates", e))?;
            out.extend(page.launch_templates().iter().map(|t| LaunchTemplate {
                id: t.launch_template_id().unwrap_or_default().to_string(),
                name: t.launch_template_name().unwrap_or_default().to_string(),
                default_version: t.default_version_number().unwrap_or(1),
                latest_version: t.latest_version_number().unwrap_or(1),
                versions: Vec::new(),
            }));
        }
        Ok(out)
    }

    async fn launch_template_versions(&self, template_id: &str) -> Result<Vec<LaunchTemplateVersion>, CloudError> {
        let mut pages = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .max_results(200)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeLaunchTemplateVersions", e))?;
            out.extend(page.launch_template_versions().iter().map(|v| LaunchTemplateVersion {
                number: v.version_number().unwrap_or(0),
                image_id: v.launch_template_data().and_then(|d| d.image_id()).map(str::to_string),
            }));
        }
        Ok(out)
    }

    async fn launch_configurations(&self) -> Result<Vec<LaunchConfiguration>, CloudError> {
        let mut pages = self.autoscaling.describe_launch_configurations().max_records(100).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeLaunchConfigurations", e))?;
            out.extend(page.launch_configurations().iter().map(|lc| LaunchConfiguration {
                name: lc.launch_configuration_name().unwrap_or_default().to_string(),
                image_id: lc.image_id().unwrap_or_default().to_string(),
            }));
        }
        Ok(out)
    }

    async fn auto_scaling_groups(&self) -> Result<Vec<AutoScalingGroup>, CloudError> {
        let mut pages = self.autoscaling.describe_auto_scaling_groups().max_records(100).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeAutoScalingGroups", e))?;
            out.extend(page.auto_scaling_groups().iter().map(|g| {
                AutoScalingGroup {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    min_size: g.min_size().unwrap_or(0),
                    max_size: g.max_size().unwrap_or(0),
                    desired_capacity: g.desired_capacity().unwrap_or(0),
                    source: asg_source(g),
                    instance_ids: g.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect(),
                    in_service: g
                        .instances()
                        .iter()
                        .filter(|i| {
                            i.lifecycle_state() == Some(&asg::types::LifecycleState::InService)
                                && i.health_status().is_some_and(|h| h.eq_ignore_ascii_case("healthy"))
                        })
                        .filter_map(|i| i.instance_id().map(str::to_string))
                        .collect(),
                }
            }));
        }
        Ok(out)
    }

    async fn launch_permissions(&self, image_id: &str) -> Result<Vec<LaunchPermission>, CloudError> {
        let out = self
            .ec2
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeImageAttribute", e))?;
        let mut perms: Vec<LaunchPermission> = out
            .launch_permissions()
            .iter()
            .filter_map(|p| {
                if let Some(u) = p.user_id() {
                    Some(LaunchPermission::Account(u.to_string()))
                } else if let Some(g) = p.group() {
                    Some(LaunchPermission::Group(g.as_str().to_string()))
                } else if let Some(o) = p.organization_arn() {
                    Some(LaunchPermission::Organization(o.to_string()))
                } else {
                    p.organizational_unit_arn().map(|o| LaunchPermission::OrganizationalUnit(o.to_string()))
                }
            })
            .collect();
        perms.sort();
        Ok(perms)
    }

    async fn snapshot_permissions(&self, snapshot_id: &str) -> Result<Vec<String>, CloudError> {
        let out = self
            .ec2
            .describe_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeSnapshotAttribute", e))?;
        let who = out
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string).or_else(|| p.group().map(|g| g.as_str().to_string())));
        Ok(who.collect())
    }

    async fn sharing_changes(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<crate::sharing::Changes, CloudError> {
        use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
        let mut changes = crate::sharing::Changes::default();
        for event in crate::sharing::IMAGE_SHARING_EVENTS {
            let by_name =
                LookupAttribute::builder().attribute_key(LookupAttributeKey::EventName).attribute_value(event).build();
            let by_name =
                by_name.map_err(|e| CloudError::new("LookupEvents", CloudErrorKind::Service, e.to_string()))?;
            let mut pages = self
                .cloudtrail
                .lookup_events()
                .lookup_attributes(by_name)
                .start_time(aws_smithy_types::DateTime::from_secs(since.timestamp()))
                .end_time(aws_smithy_types::DateTime::from_secs(until.timestamp() + 1))
                .max_results(50)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("LookupEvents", e))?;
                for e in page.events() {
                    match event_image(e) {
                        Some(id) => {
                            changes.images.insert(id);
                        }
                        None => changes.unnamed = true,
                    }
                }
            }
        }
        Ok(changes)
    }

    async fn ec2_fleets(&self) -> Result<Vec<Fleet>, CloudError> {
        let mut pages = self.ec2.describe_fleets().max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeFleets", e))?;
            out.extend(page.fleets().iter().map(ec2_fleet));
        }
        Ok(out)
    }

    async fn spot_fleet_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        let mut pages = self.ec2.describe_spot_fleet_requests().max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeSpotFleetRequests", e))?;
            out.extend(page.spot_fleet_request_configs().iter().map(spot_fleet));
        }
        Ok(out)
    }

    async fn spot_instance_requests(&self) -> Result<Vec<Fleet>, CloudError> {
        let mut pages = self.ec2.describe_spot_instance_requests().max_results(1000).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("DescribeSpotInstanceRequests", e))?;
            out.extend(page.spot_instance_requests().iter().map(spot_request));
        }
        Ok(out)
    }

    async fn parameter_values(&self, references: &[String]) -> super::ParameterValues {
        let mut out = super::ParameterValues::default();
        for chunk in references.chunks(PARAMETERS_PER_CALL) {
            match self.ssm.get_parameters().set_names(Some(chunk.to_vec())).send().await {
                Ok(page) => {
                    for p in page.parameters() {
                        let value =
                            ParameterValue { value: p.value().unwrap_or_default().to_string(), version: p.version() };
                        out.found.insert(parameter_reference(p), value);
                    }
                    let missing = chunk.iter().filter(|r| !out.found.contains_key(*r));
                    out.unreadable.extend(missing.map(|r| (r.clone(), "not found or not readable".to_string())));
                }
                Err(e) => {
                    let e = cloud_error("GetParameters", e);
                    out.unreadable.extend(chunk.iter().map(|r| (r.clone(), e.to_string())));
                }
            }
        }
        out
    }

    async fn image_now(&self, image_id: &str) -> Result<Option<Image>, CloudError> {
        // By id (a direct lookup on the service side), not by filter (a scan on some endpoints).
        let out =
            self.ec2.describe_images().image_ids(image_id).include_deprecated(true).include_disabled(true).send().await;
        match out {
            Ok(o) => Ok(o.images().iter().map(image).find(|i| i.id == image_id)),
            Err(e) => {
                let e = cloud_error("DescribeImages", e);
                match e.code.as_deref() {
                    Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable") => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    async fn live_instances_using(&self, image_ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        let mut out = Vec::new();
        for chunk in image_ids.chunks(FILTER_VALUES_MAX) {
            let filter = ec2::types::Filter::builder().name("image-id").set_values(Some(chunk.to_vec())).build();
            let states = ec2::types::Filter::builder()
                .name("instance-state-name")
                .set_values(Some(["pending", "running", "stopping", "stopped"].map(String::from).to_vec()))
                .build();
            let mut pages = self.ec2.describe_instances().filters(filter).filters(states).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| cloud_error("DescribeInstances", e))?;
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    let state = i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default();
                    let image = i.image_id().unwrap_or_default();
                    // Filters are the service's; the check that matters is ours.
                    if chunk.iter().any(|c| c == image) && !matches!(state.as_str(), "terminated" | "shutting-down") {
                        let tags = ec2_tags(i.tags());
                        out.push(Instance {
                            id: i.instance_id().unwrap_or_default().to_string(),
                            image_id: image.to_string(),
                            state,
                            name: tags.get("Name").cloned(),
                            launch_time: smithy_date(i.launch_time()),
                            tags,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn unshare_image(&self, image_id: &str, accounts: &[String]) -> Result<(), CloudError> {
        self.modify_launch_permission(image_id, accounts, false).await
    }

    async fn deprecate_image(&self, image_id: &str, at: DateTime<Utc>) -> Result<bool, CloudError> {
        use std::sync::atomic::Ordering;
        if self.no_native_deprecation.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let when = aws_smithy_types::DateTime::from_secs(at.timestamp());
        match self.ec2.enable_image_deprecation().image_id(image_id).deprecate_at(when).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let native = unsupported_is_false(cloud_error("EnableImageDeprecation", e))?;
                self.no_native_deprecation.store(!native, Ordering::Relaxed);
                Ok(native)
            }
        }
    }

    async fn undeprecate_image(&self, image_id: &str) -> Result<bool, CloudError> {
        if self.no_native_deprecation.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        match self.ec2.disable_image_deprecation().image_id(image_id).send().await {
            Ok(_) => Ok(true),
            Err(e) => unsupported_is_false(cloud_error("DisableImageDeprecation", e)),
        }
    }

    async fn disable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.ec2.disable_image().image_id(image_id).send().await.map_err(|e| cloud_error("DisableImage", e))?;
        Ok(())
    }

    async fn enable_image(&self, image_id: &str) -> Result<(), CloudError> {
        self.ec2.enable_image().image_id(image_id).send().await.map_err(|e| cloud_error("EnableImage", e))?;
        Ok(())
    }

    async fn deregister_image(&self, image_id: &str, delete_snapshots: bool) -> Result<Vec<String>, CloudError> {
        let out = self
            .ec2
            .deregister_image()
            .image_id(image_id)
            .set_delete_associated_snapshots(delete_snapshots.then_some(true))
            .send()
            .await
            .map_err(|e| cloud_error("DeregisterImage", e))?;
        // Only what EC2 says it deleted; anything else (skipped, an error, an endpoint that
        // ignores the parameter) is left to the snapshot's own step.
        Ok(out
            .delete_snapshot_results()
            .iter()
            .filter(|r| r.return_code() == Some(&aws_sdk_ec2::types::SnapshotReturnCodes::Success))
            .filter_map(|r| r.snapshot_id().map(str::to_string))
            .collect())
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        self.ec2
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map_err(|e| cloud_error("DeleteSnapshot", e))?;
        Ok(())
    }

    async fn tag(&self, resource_ids: &[String], tags: &[(String, String)]) -> Result<(), CloudError> {
        let tags: Vec<ec2::types::Tag> =
            tags.iter().map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build()).collect();
        self.ec2
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| cloud_error("CreateTags", e))?;
        Ok(())
    }

    async fn untag(&self, resource_ids: &[String], keys: &[String]) -> Result<(), CloudError> {
        let tags: Vec<ec2::types::Tag> = keys.iter().map(|k| ec2::types::Tag::builder().key(k).build()).collect();
        self.ec2
            .delete_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| cloud_error("DeleteTags", e))?;
        Ok(())
    }

    async fn channels(&self) -> Result<Vec<Channel>, CloudError> {
        let mut pages = self
            .ssm
            .get_parameters_by_path()
            .path(CHANNEL_PREFIX.trim_end_matches('/'))
            .recursive(true)
            .max_results(10)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("GetParametersByPath", e))?;
            names
                .extend(page.parameters().iter().filter_map(|p| Some((p.name()?.to_string(), p.value()?.to_string()))));
        }
        let mut out = Vec::new();
        for (name, value) in names {
            let Some((family, channel)) = parse_channel_parameter(&name) else { continue };
            let history = self.channel_history(&name).await?;
            out.push(Channel { family, name: channel, parameter: name, image_id: value, history });
        }
        Ok(out)
    }

    async fn channel(&self, parameter: &str) -> Result<Option<Channel>, CloudError> {
        let Some((family, channel)) = parse_channel_parameter(parameter) else { return Ok(None) };
        match self.ssm.get_parameter().name(parameter).send().await {
            Ok(out) => {
                let value = out.parameter().and_then(|p| p.value()).unwrap_or_default().to_string();
                let history = self.channel_history(parameter).await?;
                Ok(Some(Channel { family, name: channel, parameter: parameter.to_string(), image_id: value, history }))
            }
            Err(e) => {
                let e = cloud_error("GetParameter", e);
                if e.code.as_deref() == Some("ParameterNotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn put_channel(&self, parameter: &str, image_id: &str, note: &ChangeNote) -> Result<i64, CloudError> {
        let description = serde_json::to_string(note).unwrap_or_default();
        let out = self
            .ssm
            .put_parameter()
            .name(parameter)
            .value(image_id)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .data_type("aws:ec2:image")
            .description(description)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| cloud_error("PutParameter", e))?;
        Ok(out.version())
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        let out = match self.ec2.describe_instances().instance_ids(instance_id).send().await {
            Ok(o) => o,
            Err(e) => {
                let e = cloud_error("DescribeInstances", e);
                return if e.code.as_deref() == Some("InvalidInstanceID.NotFound") { Ok(None) } else { Err(e) };
            }
        };
        Ok(out.reservations().iter().flat_map(|r| r.instances()).find(|i| i.instance_id() == Some(instance_id)).map(
            |i| {
                let tags = ec2_tags(i.tags());
                Instance {
                    id: instance_id.to_string(),
                    image_id: i.image_id().unwrap_or_default().to_string(),
                    state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
                    name: tags.get("Name").cloned(),
                    launch_time: smithy_date(i.launch_time()),
                    tags,
                }
            },
        ))
    }

    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: &str,
        no_reboot: bool,
        tags: &[(String, String)],
    ) -> Result<String, CloudError> {
        let spec = ec2::types::TagSpecification::builder()
            .resource_type(ec2::types::ResourceType::Image)
            .set_tags(Some(tags.iter().map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build()).collect()))
            .build();
        let out = self
            .ec2
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .no_reboot(no_reboot)
            .tag_specifications(spec)
            .send()
            .await
            .map_err(|e| cloud_error("CreateImage", e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| CloudError::new("CreateImage", CloudErrorKind::Service, "no image id in the answer"))
    }

    async fn wait_image_available(&self, image_id: &str, timeout: std::time::Duration) -> Result<Image, CloudError> {
        use ec2::client::Waiters;
        self.ec2.wait_until_image_available().image_ids(image_id).wait(timeout).await.map_err(|e| {
            CloudError::new(
                "DescribeImages",
                CloudErrorKind::Service,
                format!("waiting for {image_id} to become available: {}", one_line_chain(&e)),
            )
        })?;
        self.image_now(image_id)
            .await?
            .ok_or_else(|| CloudError::new("DescribeImages", CloudErrorKind::NotFound, format!("{image_id} vanished")))
    }
}

impl SdkCloud {
    async fn channel_history(&self, name: &str) -> Result<Vec<ChannelEntry>, CloudError> {
        let mut pages = self.ssm.get_parameter_history().name(name).max_results(50).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloud_error("GetParameterHistory", e))?;
            out.extend(page.parameters().iter().map(|p| ChannelEntry {
                version: p.version(),
                image_id: p.value().unwrap_or_default().to_string(),
                modified: smithy_date(p.last_modified_date()),
                note: p.description().and_then(|d| serde_json::from_str(d).ok()),
            }));
        }
        out.sort_by_key(|e| e.version);
        Ok(out)
    }
}

/// An endpoint that lacks an action answers without an error code (the emulator: HTTP 500 with
/// an HTML body) or with one that says so; the caller then falls back to tags.
fn unsupported_is_false(e: CloudError) -> Result<bool, CloudError> {
    // Only the codes EC2 answers an action it does not know with: a transient 5xx (no code)
    // must not switch native deprecation off for the rest of the run.
    let unsupported = matches!(
        e.code.as_deref(),
        Some("InvalidAction" | "UnsupportedOperation" | "NotImplemented" | "UnknownOperationException")
    );
    if unsupported {
        tracing::debug!("{} unsupported here; recording the stage in tags only: {e}", e.operation);
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod sharing_event_tests {
    use aws_sdk_cloudtrail::types::{Event, Resource};

    #[test]
    fn a_sharing_event_names_its_image_by_resource_or_by_request() {
        let by_resource = Event::builder()
            .resources(Resource::builder().resource_type("AWS::EC2::Ami").resource_name("ami-1").build())
            .build();
        assert_eq!(super::event_image(&by_resource).as_deref(), Some("ami-1"));
        let by_request = Event::builder()
            .cloud_trail_event(r#"{"eventName":"ResetImageAttribute","requestParameters":{"imageId":"ami-2"}}"#)
            .build();
        assert_eq!(super::event_image(&by_request).as_deref(), Some("ami-2"));
        // Naming no image: the caller doubts every reading.
        assert_eq!(super::event_image(&Event::builder().build()), None);
    }
}

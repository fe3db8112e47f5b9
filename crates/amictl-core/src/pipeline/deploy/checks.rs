//! Everything a deployment checks before its first change, and again when it resumes. A check
//! that fails is a one-line usage error (exit 2) and nothing has changed.

use super::traffic::width_with_twins;
use super::{green_name, CapacityPlan, DeployRequest, ImageChoice, Prepared, Strategy, TrafficPlan, TwinPlan};
use crate::aws::{Alarms, Cloud, GroupDetail, Groups, LoadBalancing, Route, TargetGroupInfo};
use crate::catalog;
use crate::error::Error;
use crate::family::FamilyRules;
use crate::inventory::Image;

/// The tag green resources carry: the deployment's token, so a resumed run knows its own.
pub(super) const DEPLOYMENT_TAG: &str = "amictl:deployment";

/// What an image must satisfy to roll out: its scan verdict, and its family against the group's.
pub struct ReleaseRules<'a> {
    pub scan_tag: &'a str,
    pub scan_passed: &'a [String],
    pub families: &'a FamilyRules,
}

/// Refuses a group a deployment cannot handle, with what to do about it.
pub fn group_objection(g: &GroupDetail, strategy: Strategy) -> Option<String> {
    if let Some(lc) = &g.launch_configuration {
        return Some(format!(
            "group {} uses launch configuration {lc}: amictl deploys through launch templates. Migrate it: create a \
             launch template from the configuration (EC2 console: Launch templates > Create, or `aws ec2 \
             create-launch-template`), then `aws autoscaling update-auto-scaling-group --auto-scaling-group-name {} \
             --launch-template LaunchTemplateId=lt-…,Version=1`",
            g.name, g.name
        ));
    }
    if g.template_id.is_none() {
        return Some(format!("group {} names no launch template", g.name));
    }
    if let Some(o) = g.override_templates.first() {
        return Some(format!(
            "group {}'s mixed instances policy has an override that amictl cannot move to the new image: {o}",
            g.name
        ));
    }
    let cannot_copy = |what: String| {
        Some(format!(
            "group {} has {what}, which a green group cannot take over: blue-green and canary would leave it on blue; \
             use --strategy rolling",
            g.name
        ))
    };
    if strategy.switches_traffic() {
        if let Some(lb) = g.classic_load_balancers.first() {
            return cannot_copy(format!("classic load balancer {lb}"));
        }
        if let Some(t) = g.other_traffic_sources.first() {
            return cannot_copy(format!("traffic source {t}"));
        }
    }
    if g.warm_pool && strategy != Strategy::Rolling {
        return Some(format!(
            "group {} has a warm pool, whose instances were prepared from the old version: use --strategy rolling \
             (an instance refresh replaces them too)",
            g.name
        ));
    }
    None
}

/// The request's own values make sense.
fn check_request(req: &DeployRequest) -> Result<(), Error> {
    if req.min_healthy > 100 {
        return Err(Error::Usage(format!("--min-healthy {} is over 100", req.min_healthy)));
    }
    if !req.checkpoints.is_empty() && req.checkpoint_delay_seconds.is_none() {
        return Err(Error::Usage(
            "--checkpoints needs --checkpoint-delay (AWS waits an hour at each checkpoint otherwise)".into(),
        ));
    }
    if !req.checkpoints.windows(2).all(|w| w[0] < w[1]) {
        return Err(Error::Usage("--checkpoints must rise (e.g. 20,50)".into()));
    }
    if let Some(s) = req.shift.iter().find(|s| **s == 0 || **s > 100) {
        return Err(Error::Usage(format!("--shift {s}: each step is the green share after it, 1 to 100")));
    }
    if matches!(req.batch_size, crate::patching::Threshold::Count(0) | crate::patching::Threshold::Percent(0)) {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    if req.health_timeout.is_zero() {
        return Err(Error::Usage("--health-timeout must be longer than 0s".into()));
    }
    Ok(())
}

/// Validation and scan must have passed (unless `force`); a revoked or unavailable image never
/// deploys.
fn image_gate(image: &Image, rules: &ReleaseRules, force: bool) -> Result<Vec<String>, Error> {
    let objections = catalog::release_objections(image, rules.scan_tag, rules.scan_passed);
    let hard: Vec<&String> =
        objections.iter().filter(|o| o.contains("is revoked") || o.contains("not available")).collect();
    if !hard.is_empty() {
        return Err(Error::Usage(format!(
            "not deploying: {}",
            hard.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
        )));
    }
    if !objections.is_empty() && !force {
        return Err(Error::Usage(format!("not deploying: {} (--force overrides)", objections.join("; "))));
    }
    Ok(objections)
}

/// An image as a person knows it: `web-1.1.0 (ami-…, family web, version 1.1.0)`.
fn label(image: &Image, rules: &FamilyRules) -> String {
    let mut parts = vec![image.id.clone()];
    if let Some(f) = rules.name_of(image) {
        parts.push(format!("family {f}"));
    }
    if let Some(v) = catalog::version_of(image) {
        parts.push(format!("version {v}"));
    }
    format!("{} ({})", image.name, parts.join(", "))
}

/// The new image must be of the family the group runs (unless `--allow-family-change`). A
/// family that cannot be told (no rule matches, the running image is gone) is not a refusal.
fn family_objection(new: &Image, running: Option<&Image>, rules: &FamilyRules, group: &str) -> Option<String> {
    let (Some(to), Some(from)) = (rules.name_of(new), running.and_then(|r| rules.name_of(r))) else { return None };
    (to != from).then(|| {
        format!(
            "{} is of family {to}, but group {group} runs family {from} ({}): --allow-family-change deploys it anyway",
            new.id,
            running.map(|r| r.id.as_str()).unwrap_or("?")
        )
    })
}

async fn resolve_image<C: Cloud>(cloud: &C, choice: &ImageChoice) -> Result<Image, Error> {
    let image_id = match choice {
        ImageChoice::Image(id) => id.clone(),
        ImageChoice::Channel { family, channel } => {
            crate::pipeline::catalog::existing_channel(cloud, family, channel).await?.image_id
        }
    };
    cloud.image_now(&image_id).await?.ok_or_else(|| Error::NotFound {
        what: format!("AMI {image_id}; an image of another region must be copied here first (`amictl bake --copy-to`)"),
        looked_in: cloud.scope().to_string(),
    })
}

async fn find_group<C: Cloud + Groups>(cloud: &C, name: &str) -> Result<GroupDetail, Error> {
    cloud.group(name).await?.ok_or_else(|| Error::NotFound {
        what: format!("Auto Scaling group {name}"),
        looked_in: cloud.scope().to_string(),
    })
}

/// Resolves the image and checks image, group and — for the strategy — capacity or traffic;
/// nothing changes.
pub async fn prepare<C: Cloud + Groups + Alarms + LoadBalancing>(
    cloud: &C,
    req: &DeployRequest,
    rules: &ReleaseRules<'_>,
) -> Result<Prepared, Error> {
    check_request(req)?;
    let scope = cloud.scope().to_string();
    if !req.alarms.is_empty() {
        let known: Vec<String> = cloud.alarm_states(&req.alarms).await?.into_iter().map(|(n, _)| n).collect();
        if let Some(missing) = req.alarms.iter().find(|a| !known.contains(a)) {
            return Err(Error::NotFound { what: format!("CloudWatch alarm {missing} (--alarm)"), looked_in: scope });
        }
    }
    let image = resolve_image(cloud, &req.image).await?;
    let overridden = image_gate(&image, rules, req.force)?;
    let g = find_group(cloud, &req.group).await?;
    if let Some(why) = group_objection(&g, req.strategy) {
        return Err(Error::Usage(why));
    }
    let template_id = g.template_id.clone().unwrap_or_default();
    let named = g.template_version.clone().unwrap_or_else(|| "$Default".into());
    let (previous_version, previous_image) = cloud.template_version(&template_id, &named).await?.ok_or_else(|| {
        Error::NotFound { what: format!("version {named} of launch template {template_id}"), looked_in: scope }
    })?;
    if previous_image.as_deref() == Some(image.id.as_str()) {
        return Err(Error::Usage(format!(
            "group {} already launches {} (launch template {template_id} version {previous_version}): nothing to deploy; \
             `amictl status --asg {}` shows what its instances run",
            g.name, image.id, g.name
        )));
    }
    let running = match previous_image.as_deref().filter(|i| i.starts_with("ami-")) {
        Some(id) => cloud.image_now(id).await?,
        None => None,
    };
    if !req.allow_family_change {
        if let Some(why) = family_objection(&image, running.as_ref(), rules.families, &g.name) {
            return Err(Error::Usage(why));
        }
    }
    if req.strategy == Strategy::Rolling && previous_image.as_deref().is_some_and(|i| i.starts_with("resolve:ssm:")) {
        return Err(Error::Usage(format!(
            "group {} takes its image from an SSM parameter ({}): an instance refresh cannot roll back from that, and \
             a version naming an AMI would stop the group following the parameter; point the parameter at the new \
             image (`amictl channel promote`) and refresh, or use --strategy batched",
            g.name,
            previous_image.unwrap_or_default()
        )));
    }
    let token: String = format!("amictl-deploy-{}-{}", crate::pipeline::ephemeral::process_nonce(), req.group)
        .chars()
        .take(64)
        .collect();
    let capacity = (req.strategy == Strategy::Batched).then(|| capacity(&g, req)).transpose()?;
    let traffic = match req.strategy.switches_traffic() {
        true => {
            let next = cloud.template_version(&template_id, "$Latest").await?.map(|(v, _)| v + 1).unwrap_or(1);
            Some(traffic_plan(cloud, req, &g, next, &token).await?)
        }
        false => None,
    };
    Ok(Prepared {
        group: g.name,
        template_id,
        named_version: named,
        previous_version,
        previous_label: running
            .as_ref()
            .map(|r| label(r, rules.families))
            .unwrap_or_else(|| previous_image.clone().unwrap_or_else(|| "no image".into())),
        previous_image,
        image_label: label(&image, rules.families),
        image_id: image.id,
        target_version: None,
        token,
        overridden,
        capacity,
        traffic,
    })
}

/// The checks of [`prepare`] made again for a resumed run: the image's release gate (it may
/// have been revoked since) and family, the group's shape, and for blue-green that no route to
/// blue appeared that the plan does not know.
pub async fn recheck<C: Cloud + Groups + LoadBalancing>(
    cloud: &C,
    req: &DeployRequest,
    p: &Prepared,
    rules: &ReleaseRules<'_>,
) -> Result<(), Error> {
    let image = cloud.image_now(&p.image_id).await?.ok_or_else(|| Error::NotFound {
        what: format!("AMI {} (the image the deployment rolls out)", p.image_id),
        looked_in: cloud.scope().to_string(),
    })?;
    image_gate(&image, rules, req.force)?;
    let g = find_group(cloud, &p.group).await?;
    if let Some(why) = group_objection(&g, req.strategy) {
        return Err(Error::Usage(why));
    }
    if !req.allow_family_change {
        let running = match p.previous_image.as_deref().filter(|i| i.starts_with("ami-")) {
            Some(id) => cloud.image_now(id).await?,
            None => None,
        };
        if let Some(why) = family_objection(&image, running.as_ref(), rules.families, &g.name) {
            return Err(Error::Usage(why));
        }
    }
    if let Some(t) = &p.traffic {
        let blue: Vec<TargetGroupInfo> = t.twins.iter().map(|tw| tw.blue.clone()).collect();
        let known: Vec<&str> = t.routes.iter().map(|r| r.arn.as_str()).collect();
        if let Some(r) = cloud.routes_to(&blue).await?.into_iter().find(|r| !known.contains(&r.arn.as_str())) {
            return Err(Error::Usage(format!(
                "{} forwards to {}'s target groups now but did not when the deployment began: roll back \
                 (`amictl rollback --asg {}`) and deploy again",
                r.label(),
                p.group,
                p.group
            )));
        }
    }
    Ok(())
}

/// Batched: grow by a batch when the group can, else replace in place above the floor — and
/// if neither leaves room for one instance, refuse now.
fn capacity(g: &GroupDetail, req: &DeployRequest) -> Result<CapacityPlan, Error> {
    let desired = g.desired_capacity.max(0);
    let batch = req.batch_size.of(desired as usize).max(1);
    let room = (g.max_size - desired).max(0) as usize;
    if !req.no_surge && room > 0 {
        return Ok(CapacityPlan { desired, batch: batch.min(room), surge: true });
    }
    let serving = g.instances.iter().filter(|i| i.serving()).count();
    let floor = (desired as usize * req.min_healthy as usize).div_ceil(100);
    let spare = serving.saturating_sub(floor);
    if spare == 0 && desired > 0 {
        let why = if req.no_surge { "--no-surge".to_string() } else { format!("it is at its max size {}", g.max_size) };
        return Err(Error::Usage(format!(
            "group {} cannot grow ({why}) and has {serving} of {desired} in service: replacing one in place would go \
             below --min-healthy {}%; raise its max size (the deployment then adds new instances before removing old \
             ones) or lower --min-healthy",
            g.name, req.min_healthy
        )));
    }
    Ok(CapacityPlan { desired, batch: batch.min(spare.max(1)), surge: false })
}

/// A target group name for green: blue's (shortened) with the version (at most 32 characters,
/// letters, digits and hyphens, no hyphen at either end).
fn green_target_group_name(blue: &str, version: i64) -> String {
    let suffix = format!("-v{version}");
    let base = match blue.rsplit_once("-v") {
        Some((b, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => b,
        _ => blue,
    };
    let base: String = base.chars().take(32 - suffix.len()).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// Blue-green: every target group the group is in, every listener and rule that reaches them,
/// green's names free, every route able to take green beside blue.
async fn traffic_plan<C: Groups + LoadBalancing>(
    cloud: &C,
    req: &DeployRequest,
    g: &GroupDetail,
    next_version: i64,
    token: &str,
) -> Result<TrafficPlan, Error> {
    if g.target_group_arns.is_empty() {
        return Err(Error::Usage(format!(
            "group {} is in no target group: blue-green and canary move traffic at a load balancer; use --strategy \
             rolling or batched",
            g.name
        )));
    }
    if req.green_target_group.is_some() && g.target_group_arns.len() > 1 {
        return Err(Error::Usage(format!(
            "group {} is in {} target groups: --green-target-group names one; leave it out and amictl makes a twin of \
             each",
            g.name,
            g.target_group_arns.len()
        )));
    }
    let mut twins = Vec::new();
    for arn in &g.target_group_arns {
        let blue = cloud
            .target_group(arn)
            .await?
            .ok_or_else(|| Error::Usage(format!("target group {arn} of group {} does not exist", g.name)))?;
        let green_name = green_target_group_name(&blue.name, next_version);
        if req.green_target_group.is_none() {
            check_name_free(cloud, &green_name, token).await?;
        }
        twins.push(TwinPlan { blue, green_name, given: req.green_target_group.clone() });
    }
    let blue: Vec<TargetGroupInfo> = twins.iter().map(|t| t.blue.clone()).collect();
    let routes = cloud.routes_to(&blue).await?;
    check_routes(req, g, &routes, &twins)?;
    let green_group = green_name(&g.name, next_version);
    if cloud.group(&green_group).await?.is_some() {
        return Err(Error::Usage(format!(
            "an Auto Scaling group named {green_group} exists already: green would take that name"
        )));
    }
    Ok(TrafficPlan { green_group, twins, routes, blue_min: g.min_size, blue_desired: g.desired_capacity })
}

async fn check_name_free<C: LoadBalancing>(cloud: &C, name: &str, token: &str) -> Result<(), Error> {
    let Some(tg) = cloud.target_group_named(name).await? else { return Ok(()) };
    let tags = cloud.target_group_tags(&tg.arn).await?;
    if tags.iter().any(|(k, v)| k == DEPLOYMENT_TAG && v == token) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "a target group named {name} exists already ({}): green's twin would take that name",
        tg.arn
    )))
}

/// Every route can take green beside blue; `--listener` names one of them and no other route
/// would be left forwarding to a blue that is scaled in.
fn check_routes(req: &DeployRequest, g: &GroupDetail, routes: &[Route], twins: &[TwinPlan]) -> Result<(), Error> {
    if routes.is_empty() {
        let names: Vec<&str> = twins.iter().map(|t| t.blue.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no listener or rule forwards to group {}'s target groups ({}): there is no traffic to move; use \
             --strategy rolling or batched",
            g.name,
            names.join(", ")
        )));
    }
    if let Some(l) = &req.listener {
        if !routes.iter().any(|r| &r.listener_arn == l) {
            return Err(Error::Usage(format!("listener {l} does not forward to group {}'s target groups", g.name)));
        }
        if let Some(other) = routes.iter().find(|r| &r.listener_arn != l) {
            return Err(Error::Usage(format!(
                "{} also forwards to group {}'s target groups: once {} is scaled in it would have no targets; leave \
                 --listener out and every route moves to green",
                other.label(),
                g.name,
                g.name
            )));
        }
    }
    let pairs: Vec<(String, String)> = twins.iter().map(|t| (t.blue.arn.clone(), t.green_name.clone())).collect();
    for r in routes {
        if r.protocol.as_deref().is_some_and(|p| !matches!(p, "HTTP" | "HTTPS")) {
            return Err(Error::Usage(format!(
                "{} is a {} listener: only Application Load Balancer listeners (HTTP, HTTPS) forward by weight, \
                 which blue-green needs; use --strategy rolling or batched",
                r.label(),
                r.protocol.as_deref().unwrap_or("?")
            )));
        }
        if width_with_twins(&r.forward, &pairs) > 5 {
            return Err(Error::Usage(format!(
                "{} forwards to {} target groups: with green's twins it would need more than the 5 a forward action \
                 takes",
                r.label(),
                r.forward.weights().len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::GroupInstance;
    use crate::patching::Threshold;
    use crate::pipeline::deploy::tests::request;

    fn group(serving: usize, desired: i32, max: i32) -> GroupDetail {
        GroupDetail {
            name: "web".into(),
            template_id: Some("lt-1".into()),
            desired_capacity: desired,
            max_size: max,
            instances: (0..serving)
                .map(|i| GroupInstance {
                    instance_id: format!("i-{i}"),
                    lifecycle_state: "InService".into(),
                    health_status: "Healthy".into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_group_that_can_grow_surges_by_a_batch_within_its_max_size() {
        let c = capacity(&group(1, 1, 2), &request(90, Threshold::Percent(25))).unwrap();
        assert_eq!((c.surge, c.batch, c.desired), (true, 1, 1));
        let c = capacity(&group(6, 6, 8), &request(90, Threshold::Count(5))).unwrap();
        assert_eq!((c.surge, c.batch), (true, 2), "bounded by the room below max size");
    }

    #[test]
    fn in_place_replacement_is_refused_before_anything_when_the_floor_leaves_no_room() {
        let e = capacity(&group(3, 3, 3), &request(90, Threshold::Count(1))).unwrap_err().to_string();
        assert!(e.contains("cannot grow") && e.contains("--min-healthy 90%"), "{e}");
        let c = capacity(&group(10, 10, 10), &request(80, Threshold::Percent(50))).unwrap();
        assert_eq!((c.surge, c.batch), (false, 2));
        let mut r = request(90, Threshold::Count(1));
        r.no_surge = true;
        let e = capacity(&group(1, 1, 4), &r).unwrap_err().to_string();
        assert!(e.contains("--no-surge"), "{e}");
    }

    #[test]
    fn green_target_group_names_fit_elbv2s_limit() {
        assert_eq!(green_target_group_name("web", 4), "web-v4");
        assert_eq!(green_target_group_name("web-v3", 4), "web-v4");
        let long = green_target_group_name("a-very-long-target-group-name-indeed", 12);
        assert!(long.len() <= 32 && long.ends_with("-v12") && !long.contains("--"), "{long}");
    }

    #[test]
    fn groups_blue_green_cannot_copy_are_refused_naming_what() {
        let mut g = group(2, 2, 4);
        g.classic_load_balancers = vec!["legacy-elb".into()];
        let why = group_objection(&g, Strategy::BlueGreen).unwrap();
        assert!(why.contains("classic load balancer legacy-elb"), "{why}");
        assert!(group_objection(&g, Strategy::Batched).is_none());
        g.classic_load_balancers.clear();
        g.warm_pool = true;
        assert!(group_objection(&g, Strategy::Canary).unwrap().contains("warm pool"));
        assert!(group_objection(&g, Strategy::Rolling).is_none());
    }
}

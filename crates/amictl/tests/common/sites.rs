//! Deployment estates: an image pair, a launch template, an Auto Scaling group `web`, and when
//! asked a load balancer with target groups, listeners and rules in front of it; and the
//! readings deployment tests compare (the group's images, the emulator's record of how many
//! instances served, the whole estate before and after).

use serde_json::{json, Value};

use super::{aws, emulator, image_from_instance, load_balancer, TEST_REGION};

/// The verdict tags of an image fit to deploy.
pub const GOOD: &[(&str, &str)] = &[("amictl:validation", "passed"), ("amictl:scan", "passed")];

/// What stands in front of the group.
#[derive(Clone, Copy, Default)]
pub struct Front {
    /// Target group `web` behind listener :80 (else no load balancer at all).
    pub balanced: bool,
    /// A second target group `api` behind listener :8080.
    pub api: bool,
    /// Listener :80 authenticates (authenticate-oidc) before it forwards.
    pub oidc: bool,
    /// A rule on :80 (path /static/*) forwarding to `web` with stickiness.
    pub rule: bool,
}

pub struct Site {
    pub account: String,
    pub old: String,
    pub new: String,
    pub template: String,
    pub target_groups: Vec<String>,
    pub listeners: Vec<String>,
    pub load_balancer: Option<String>,
}

fn arn(v: &Value, list: &str, field: &str) -> String {
    v[list][0][field].as_str().unwrap_or_else(|| panic!("{list}.{field} in {v}")).to_string()
}

/// A site: group `web` of `size` instances (max `max`) on `$Default` of template `web`, images
/// `web-1.0.0` (running) and `web-1.1.0`, and `front`.
pub fn site(size: i32, max: i32, front: Front) -> Site {
    let account = super::fresh_account();
    let old = image_from_instance(&account, "web-1.0.0", GOOD);
    let new = image_from_instance(&account, "web-1.1.0", GOOD);
    let t = aws(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "web", "LaunchTemplateData": {"ImageId": old, "InstanceType": "t3.small",
               "UserData": "ZWNobyBoZWxsbw==", "MetadataOptions": {"HttpTokens": "required"}}}),
    );
    let template = t["LaunchTemplate"]["LaunchTemplateId"].as_str().unwrap().to_string();
    let mut site = Site { account, old, new, template, target_groups: vec![], listeners: vec![], load_balancer: None };
    let mut group = json!({"AutoScalingGroupName": "web", "LaunchTemplate": {"LaunchTemplateId": site.template},
        "MinSize": size.min(1), "MaxSize": max, "DesiredCapacity": size, "AvailabilityZones": ["us-east-1a"]});
    if front.balanced {
        let (subnet, tgs) = balance(&mut site, front);
        group["VPCZoneIdentifier"] = json!(subnet);
        group.as_object_mut().unwrap().remove("AvailabilityZones");
        group["TargetGroupARNs"] = json!(tgs);
    }
    aws(&site.account, "autoscaling", "create_auto_scaling_group", group);
    // A group in service before anyone deploys to it: its targets have passed their checks.
    for tg in &site.target_groups {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while healthy_targets(&site.account, tg).len() < size as usize {
            assert!(std::time::Instant::now() < deadline, "the site's targets never became healthy");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    site
}

/// The load balancer, target groups, listeners and rule of `front`: (subnet, target groups).
fn balance(site: &mut Site, front: Front) -> (String, Vec<String>) {
    let a = &site.account;
    let (vpc, subnet, lb) = load_balancer(a);
    let tg = |name: &str, port: u16| {
        let params = json!({"Name": name, "Protocol": "HTTP", "Port": port, "VpcId": vpc, "HealthCheckPath": "/health",
            "HealthyThresholdCount": 3});
        arn(&aws(a, "elbv2", "create_target_group", params), "TargetGroups", "TargetGroupArn")
    };
    let web = tg("web", 80);
    let mut actions = vec![json!({"Type": "forward", "TargetGroupArn": web, "Order": 2})];
    if front.oidc {
        actions.insert(
            0,
            json!({"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": {
                "Issuer": "https://idp.example.com", "AuthorizationEndpoint": "https://idp.example.com/authorize",
                "TokenEndpoint": "https://idp.example.com/token", "UserInfoEndpoint": "https://idp.example.com/userinfo",
                "ClientId": "web", "ClientSecret": "s3cret", "SessionCookieName": "web-session", "Scope": "openid",
                "OnUnauthenticatedRequest": "authenticate"}}),
        );
    }
    let l80 = aws(
        a,
        "elbv2",
        "create_listener",
        json!({"LoadBalancerArn": lb, "Protocol": "HTTP", "Port": 80, "DefaultActions": actions}),
    );
    let l80 = arn(&l80, "Listeners", "ListenerArn");
    if front.rule {
        aws(
            a,
            "elbv2",
            "create_rule",
            json!({"ListenerArn": l80, "Priority": 10,
                "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/static/*"]}}],
                "Actions": [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": web, "Weight": 1}],
                    "TargetGroupStickinessConfig": {"Enabled": true, "DurationSeconds": 300}}}]}),
        );
    }
    site.target_groups.push(web);
    site.listeners.push(l80);
    if front.api {
        let api = tg("api", 8080);
        let l = aws(
            a,
            "elbv2",
            "create_listener",
            json!({"LoadBalancerArn": lb, "Protocol": "HTTP", "Port": 8080,
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": api}]}),
        );
        site.target_groups.push(api);
        site.listeners.push(arn(&l, "Listeners", "ListenerArn"));
    }
    site.load_balancer = Some(lb);
    (subnet, site.target_groups.clone())
}

pub fn journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db").display().to_string();
    (dir, path)
}

/// Image id → how many running instances of group `name` run it.
pub fn images_of(account: &str, name: &str) -> std::collections::BTreeMap<String, usize> {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": [name]}));
    let Some(group) = g["AutoScalingGroups"].as_array().unwrap().first() else { return Default::default() };
    let ids: Vec<Value> = group["Instances"].as_array().unwrap().iter().map(|i| i["InstanceId"].clone()).collect();
    if ids.is_empty() {
        return Default::default();
    }
    let d = aws(account, "ec2", "describe_instances", json!({"InstanceIds": ids}));
    let mut out = std::collections::BTreeMap::new();
    for r in d["Reservations"].as_array().unwrap() {
        for i in r["Instances"].as_array().unwrap() {
            if i["State"]["Name"] == "running" {
                *out.entry(i["ImageId"].as_str().unwrap().to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// The group as DescribeAutoScalingGroups shows it (null when it does not exist).
pub fn group(account: &str, name: &str) -> Value {
    let g = aws(account, "autoscaling", "describe_auto_scaling_groups", json!({"AutoScalingGroupNames": [name]}));
    g["AutoScalingGroups"].as_array().unwrap().first().cloned().unwrap_or(Value::Null)
}

/// The fewest of the group's instances that served (in service, healthy to Auto Scaling and
/// `healthy` in every target group of the group) at any change the emulator recorded.
pub fn lowest_serving(account: &str, name: &str) -> u64 {
    let record = emulator()
        .control
        .post("/_amictl/refresh/record", &json!({"account": account, "region": TEST_REGION, "group": name}))
        .unwrap();
    let steps = record["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "the emulator recorded no change of {name}");
    steps.iter().map(|s| s["serving"].as_u64().unwrap()).min().unwrap()
}

/// Every listener's default actions and every rule of the site's load balancer.
pub fn routes(site: &Site) -> Value {
    let Some(lb) = &site.load_balancer else { return Value::Null };
    let a = &site.account;
    let listeners = aws(a, "elbv2", "describe_listeners", json!({"LoadBalancerArn": lb}));
    let mut out = Vec::new();
    for l in listeners["Listeners"].as_array().unwrap() {
        let rules = aws(a, "elbv2", "describe_rules", json!({"ListenerArn": l["ListenerArn"]}));
        out.push(json!({"listener": l, "rules": rules["Rules"]}));
    }
    json!(out)
}

/// The estate as a deployment could change it: the groups, the template's versions, the
/// routes, the target groups, the images' tags (a last-known-good tag is a change too).
pub fn estate(site: &Site) -> Value {
    let a = &site.account;
    let groups = aws(a, "autoscaling", "describe_auto_scaling_groups", json!({}));
    let versions = aws(a, "ec2", "describe_launch_template_versions", json!({"LaunchTemplateId": site.template}));
    let tgs = aws(a, "elbv2", "describe_target_groups", json!({}));
    let images = aws(a, "ec2", "describe_images", json!({"Owners": ["self"]}));
    let mut images: Vec<Value> =
        images["Images"].as_array().unwrap().iter().map(|i| json!([i["ImageId"], i["Tags"]])).collect();
    images.sort_by_key(|i| i.to_string());
    json!({"groups": groups["AutoScalingGroups"], "versions": versions["LaunchTemplateVersions"],
           "routes": routes(site), "target_groups": tgs["TargetGroups"], "images": images})
}

/// `routes` with every occurrence of each `(from, to)` ARN replaced.
pub fn renamed(routes: &Value, pairs: &[(String, String)]) -> Value {
    let mut text = routes.to_string();
    for (from, to) in pairs {
        text = text.replace(from.as_str(), to.as_str());
    }
    serde_json::from_str(&text).unwrap()
}

/// The healthy targets of a target group.
pub fn healthy_targets(account: &str, target_group: &str) -> Vec<String> {
    aws(account, "elbv2", "describe_target_health", json!({"TargetGroupArn": target_group}))["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["TargetHealth"]["State"] == "healthy")
        .map(|d| d["Target"]["Id"].as_str().unwrap().to_string())
        .collect()
}

/// How many listener and rule changes the emulator recorded so far in `account`.
pub fn route_changes(account: &str) -> usize {
    routes_record(account).len()
}

/// The fewest healthy targets behind any listener or rule (by the target groups it sends traffic to)
/// at any listener or rule change after the first `since` the emulator recorded.
pub fn fewest_behind_a_route(account: &str, since: usize) -> u64 {
    let changes = routes_record(account);
    assert!(changes.len() > since, "no listener or rule changed");
    changes[since..].iter().map(|c| c["healthy"].as_u64().unwrap()).min().unwrap()
}

fn routes_record(account: &str) -> Vec<Value> {
    let r =
        emulator().control.post("/_amictl/routes/record", &json!({"account": account, "region": TEST_REGION})).unwrap();
    r["changes"].as_array().unwrap().clone()
}

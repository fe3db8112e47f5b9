//! Blue-green and canary deployments against the emulator's load balancer: every target group
//! of the group gets a green twin, every listener and rule that forwards to blue ends forwarding
//! to green with every other action (authentication, conditions, stickiness) as it was, and
//! every undo — a failed gate, a rollback, an interrupted run rolled back — puts the routes back
//! exactly as they were before the first change.

mod common;

use common::sites::*;
use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";

fn front() -> Front {
    Front { balanced: true, api: true, oidc: true, rule: true }
}

fn deploy(s: &Site, j: &str, strategy: &str, extra: &[&str]) -> std::process::Output {
    amictl_in(&s.account)
        .args(["deploy", "--asg", "web", "--image", &s.new, "--strategy", strategy, "--yes", "--journal", j])
        .args(["-o", "json", "--poll-interval", "200ms"])
        .args(extra)
        .output()
        .unwrap()
}

fn rollback(s: &Site, j: &str, group: &str) -> std::process::Output {
    amictl_in(&s.account)
        .args(["rollback", "--asg", group, "--yes", "--journal", j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap()
}

/// The ARN of the target group named `name` (None: there is none).
fn target_group_named(account: &str, name: &str) -> Option<String> {
    let all = aws(account, "elbv2", "describe_target_groups", json!({}));
    all["TargetGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["TargetGroupName"] == name)
        .map(|t| t["TargetGroupArn"].as_str().unwrap().to_string())
}

/// Blue's target groups and their green twins (made by the deployment to version 2).
fn twins(s: &Site) -> Vec<(String, String)> {
    ["web", "api"]
        .iter()
        .zip(&s.target_groups)
        .map(|(name, blue)| {
            let green = target_group_named(&s.account, &format!("{name}-v2")).expect("green's twin");
            (blue.clone(), green)
        })
        .collect()
}

/// Every listener's and rule's forward weights, in order.
fn weights(s: &Site) -> Vec<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for r in routes(s).as_array().unwrap() {
        let mut actions = vec![r["listener"]["DefaultActions"].clone()];
        actions.extend(r["rules"].as_array().unwrap().iter().map(|rule| rule["Actions"].clone()));
        for a in actions {
            let forward = a.as_array().unwrap().iter().find(|a| a["Type"] == "forward").cloned().unwrap_or_default();
            let groups = forward["ForwardConfig"]["TargetGroups"].as_array().cloned().unwrap_or_default();
            out.push(
                groups
                    .iter()
                    .map(|g| (g["TargetGroupArn"].as_str().unwrap().to_string(), g["Weight"].as_i64().unwrap_or(1)))
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn blue_green_and_canary_move_every_route_to_green_keeping_authentication_rules_and_stickiness() {
    for strategy in ["blue-green", "canary"] {
        let s = site(3, 5, front());
        let before = routes(&s);
        let changes = route_changes(&s.account);
        let (_dir, j) = journal();
        let out = deploy(&s, &j, strategy, &[]);
        assert_code(&out, 0);
        assert_eq!(json(&out)["green_group"], "web-v2", "{strategy}");
        assert_eq!(fewest_behind_a_route(&s.account, changes), 3, "{strategy}: every route kept 3 healthy targets");
        let twins = twins(&s);
        assert_eq!(routes(&s), renamed(&before, &twins), "{strategy}: only the target groups changed");
        assert_eq!(images_of(&s.account, "web-v2"), [(s.new.clone(), 3)].into(), "{strategy}");
        let green = group(&s.account, "web-v2");
        for (_, g) in &twins {
            assert_eq!(healthy_targets(&s.account, g).len(), 3, "{strategy}: every listener serves from green");
        }
        assert_eq!(green["TargetGroupARNs"].as_array().unwrap().len(), 2, "{strategy}: one twin per target group");
        assert_eq!(group(&s.account, "web")["DesiredCapacity"], 0, "{strategy}: blue scaled in");

        let changes = route_changes(&s.account);
        let back = rollback(&s, &j, "web");
        assert_code(&back, 0);
        assert_eq!(fewest_behind_a_route(&s.account, changes), 3, "{strategy}: rolling back kept every route serving");
        let b = json(&back);
        assert_eq!((b["version"].as_i64(), b["image_id"].as_str()), (Some(1), Some(s.old.as_str())), "{b}");
        assert_eq!(routes(&s), before, "{strategy}: every route exactly as before the deployment");
        assert_eq!(images_of(&s.account, "web"), [(s.old.clone(), 3)].into(), "{strategy}");
        for blue in &s.target_groups {
            assert_eq!(healthy_targets(&s.account, blue).len(), 3, "{strategy}: blue serves again");
        }
        assert_eq!(group(&s.account, "web-v2")["DesiredCapacity"], 0, "{strategy}: green scaled in");
    }
}

#[test]
fn green_copies_blues_tags_hooks_policies_and_scheduled_actions() {
    let s = site(2, 4, Front { balanced: true, ..Front::default() });
    let a = &s.account;
    aws(
        a,
        "autoscaling",
        "create_or_update_tags",
        json!({"Tags": [{"ResourceId": "web", "ResourceType": "auto-scaling-group", "Key": "team", "Value": "payments",
            "PropagateAtLaunch": true}]}),
    );
    aws(
        a,
        "autoscaling",
        "put_lifecycle_hook",
        json!({"AutoScalingGroupName": "web", "LifecycleHookName": "drain",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING", "HeartbeatTimeout": 120, "DefaultResult": "CONTINUE"}),
    );
    aws(
        a,
        "autoscaling",
        "put_scaling_policy",
        json!({"AutoScalingGroupName": "web", "PolicyName": "cpu50", "PolicyType": "TargetTrackingScaling",
            "TargetTrackingConfiguration": {"PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
                "TargetValue": 50.0}}),
    );
    aws(
        a,
        "autoscaling",
        "put_scheduled_update_group_action",
        json!({"AutoScalingGroupName": "web", "ScheduledActionName": "nightly", "Recurrence": "0 2 * * *", "DesiredCapacity": 2}),
    );
    let (_dir, j) = journal();
    assert_code(&deploy(&s, &j, "blue-green", &[]), 0);
    let green = group(a, "web-v2");
    assert!(green["Tags"].to_string().contains("payments"), "{green}");
    let hooks = aws(a, "autoscaling", "describe_lifecycle_hooks", json!({"AutoScalingGroupName": "web-v2"}));
    assert_eq!(hooks["LifecycleHooks"][0]["LifecycleHookName"], "drain", "{hooks}");
    let policies = aws(a, "autoscaling", "describe_policies", json!({"AutoScalingGroupName": "web-v2"}));
    assert_eq!(policies["ScalingPolicies"][0]["PolicyName"], "cpu50", "{policies}");
    let actions = aws(a, "autoscaling", "describe_scheduled_actions", json!({"AutoScalingGroupName": "web-v2"}));
    assert_eq!(actions["ScheduledUpdateGroupActions"][0]["ScheduledActionName"], "nightly", "{actions}");
}

#[test]
fn green_that_never_serves_is_torn_down_and_every_route_is_as_before() {
    let s = site(3, 5, front());
    let mark = json!({"account": s.account, "region": R, "image_ids": [s.new], "kind": "application"});
    emulator().control.post("/_amictl/unhealthy", &mark).unwrap();
    let before = routes(&s);
    let blue_before = group(&s.account, "web")["Instances"].clone();
    let (_dir, j) = journal();
    let out = deploy(&s, &j, "blue-green", &[]);
    assert_code(&out, 1);
    let d = json(&out);
    assert_eq!(d["outcome"], "rolled-back");
    assert!(d["reason"].as_str().unwrap().contains("unhealthy in web-v2"), "{d}");
    assert!(group(&s.account, "web-v2").is_null(), "green deleted");
    assert_eq!(target_group_named(&s.account, "web-v2"), None, "green's twins deleted");
    assert_eq!(routes(&s), before, "every route exactly as before");
    assert_eq!(group(&s.account, "web")["Instances"], blue_before, "blue untouched");
    assert_eq!(healthy_targets(&s.account, &s.target_groups[0]).len(), 3, "blue serves");
}

/// Starts a canary that pauses 5 s at 25 %, and kills it there: the routes carry 25 % to green.
fn killed_at_25_percent(s: &Site, j: &str) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("amictl"))
        .env_clear()
        .envs(test_env())
        .args(["--role-arn", &role_arn(&s.account)])
        .args(["deploy", "--asg", "web", "--image", &s.new, "--strategy", "canary", "--shift", "25,100"])
        .args(["--shift-pause", "5s", "--yes", "--journal", j, "--poll-interval", "200ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !weights(s).iter().any(|w| w.iter().any(|(_, weight)| *weight == 25)) {
        assert!(child.try_wait().unwrap().is_none(), "the canary ended before 25 %");
        assert!(std::time::Instant::now() < deadline, "never reached 25 %");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_canary_interrupted_at_25_percent_resumes_from_the_original_routes_or_rolls_back_to_them() {
    // Resumed: it goes on from the routes as they were before it began, not the shifted ones.
    let s = site(2, 4, front());
    let before = routes(&s);
    let (_dir, j) = journal();
    killed_at_25_percent(&s, &j);
    let out = amictl_in(&s.account)
        .args(["deploy", "--resume", "--journal", &j, "-o", "json", "--poll-interval", "200ms"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(routes(&s), renamed(&before, &twins(&s)), "resumed: only the target groups changed");
    assert_eq!(group(&s.account, "web")["DesiredCapacity"], 0);

    // Rolled back: every route as it was, green gone, blue never stopped serving.
    let s = site(2, 4, front());
    let before = routes(&s);
    let blue_before = group(&s.account, "web")["Instances"].clone();
    let (_dir, j) = journal();
    killed_at_25_percent(&s, &j);
    let out = rollback(&s, &j, "web");
    assert_code(&out, 0);
    assert_eq!(routes(&s), before, "rolled back: every route exactly as before");
    assert!(group(&s.account, "web-v2").is_null(), "green torn down");
    assert_eq!(group(&s.account, "web")["Instances"], blue_before, "blue never stopped");
    // Nothing left to roll back.
    let again = rollback(&s, &j, "web");
    assert_code(&again, 2);
}

#[test]
fn a_firing_alarm_stops_a_canary_at_its_first_step_and_an_unknown_alarm_is_refused() {
    let s = site(2, 4, front());
    let alarm = json!({"AlarmName": "web-5xx", "MetricName": "HTTPCode_Target_5XX_Count", "Namespace": "AWS/ApplicationELB",
        "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 5.0, "ComparisonOperator": "GreaterThanThreshold"});
    aws(&s.account, "cloudwatch", "put_metric_alarm", alarm);
    aws(
        &s.account,
        "cloudwatch",
        "set_alarm_state",
        json!({"AlarmName": "web-5xx", "StateValue": "ALARM", "StateReason": "test"}),
    );
    let before = routes(&s);
    let (_dir, j) = journal();
    let unknown = deploy(&s, &j, "canary", &["--alarm", "nosuch"]);
    assert!(one_line_error(&unknown).contains("CloudWatch alarm nosuch"));
    let out = deploy(&s, &j, "canary", &["--alarm", "web-5xx"]);
    assert_code(&out, 1);
    let d = json(&out);
    assert!(d["reason"].as_str().unwrap().contains("alarm web-5xx"), "{d}");
    assert_eq!(routes(&s), before, "the traffic went back to blue, every route as before");
    assert_eq!(images_of(&s.account, "web"), [(s.old.clone(), 2)].into());
    assert!(group(&s.account, "web-v2").is_null(), "green torn down");
}

#[test]
fn a_route_the_plan_did_not_know_stops_a_resumed_blue_green() {
    let s = site(2, 4, Front { balanced: true, ..Front::default() });
    let (_dir, j) = journal();
    killed_at_25_percent(&s, &j);
    // Someone points another listener at blue meanwhile.
    let lb = s.load_balancer.clone().unwrap();
    aws(
        &s.account,
        "elbv2",
        "create_listener",
        json!({"LoadBalancerArn": lb, "Protocol": "HTTP", "Port": 9090,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": s.target_groups[0]}]}),
    );
    let before: Value = routes(&s);
    let out = amictl_in(&s.account).args(["deploy", "--resume", "--journal", &j]).output().unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("did not when the deployment began"), "{err}");
    assert_eq!(routes(&s), before);
}

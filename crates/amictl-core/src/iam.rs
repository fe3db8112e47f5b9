//! The least-privilege IAM policy of each command, and the trust policy of the cross-account
//! read role. Pure data: `tests/iam_policy.rs` runs every command against the emulator and
//! fails when a command asks for an action its policy lacks, or a policy grants an action no
//! command asked for.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// What a command does with AWS, in groups of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Connecting: who am I, which regions exist.
    Connect,
    /// Reading the estate: images, snapshots, instances, templates, groups, fleets, parameters.
    Read,
    /// Launch permissions, one image at a time.
    ReadSharing,
    Retire,
    /// Taking an image back from accounts that do not use it.
    Unshare,
    /// Image capture, channels, revocation.
    Catalog,
    /// What instance refreshes are doing (`status`).
    Rollouts,
    /// Throw-away instances and SSM Run Command (bake, validate, scan).
    Instances,
    Bake,
    /// Copies to other regions and sharing with accounts (`bake --copy-to`, `--share-with`).
    Distribute,
    Deploy,
    /// Blue-green and canary: a green group and target group, listeners switched.
    Traffic,
    /// The CloudWatch alarms a rollout watches.
    Alarms,
    Patch,
    Metrics,
    Alerts,
    Organizations,
    /// Cross-account roles.
    AssumeRole,
    /// The team journal on DynamoDB.
    TeamJournal,
    /// CloudTrail's event history: which kept sharing readings still stand (optional: without
    /// it every image's sharing is read afresh).
    SharingHistory,
}

/// The actions of each need.
pub fn actions(need: Need) -> &'static [&'static str] {
    match need {
        Need::Connect => &["sts:GetCallerIdentity", "ec2:DescribeRegions"],
        Need::Read => &[
            "ec2:DescribeImages",
            "ec2:DescribeSnapshots",
            "ec2:DescribeInstances",
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeFleets",
            "ec2:DescribeSpotFleetRequests",
            "ec2:DescribeSpotInstanceRequests",
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeLaunchConfigurations",
            "ssm:GetParametersByPath",
            "ssm:GetParameterHistory",
            "ssm:GetParameters",
        ],
        Need::ReadSharing => &["ec2:DescribeImageAttribute"],
        Need::SharingHistory => &["cloudtrail:LookupEvents"],
        Need::Retire => &[
            "ec2:CreateTags",
            "ec2:DeleteTags",
            "ec2:EnableImageDeprecation",
            "ec2:DisableImageDeprecation",
            "ec2:DisableImage",
            "ec2:EnableImage",
            "ec2:DeregisterImage",
            "ec2:DescribeSnapshotAttribute",
            "ec2:DeleteSnapshot",
        ],
        Need::Unshare => &["ec2:ModifyImageAttribute"],
        Need::Catalog => {
            &["ec2:CreateImage", "ec2:CreateTags", "ec2:EnableImageDeprecation", "ssm:PutParameter", "ssm:GetParameter"]
        }
        Need::Rollouts => &["autoscaling:DescribeInstanceRefreshes"],
        Need::Instances => &[
            "ec2:DescribeImages",
            "ec2:DescribeInstances",
            "ec2:RunInstances",
            "ec2:CreateTags",
            "ec2:TerminateInstances",
            "ec2:DescribeInstanceTypeOfferings",
            "ec2:DescribeInstanceStatus",
            "iam:PassRole",
            "ssm:DescribeInstanceInformation",
            "ssm:SendCommand",
            "ssm:ListCommandInvocations",
            "ssm:GetCommandInvocation",
        ],
        Need::Bake => &["ec2:CreateImage"],
        Need::Distribute => &["ec2:CopyImage", "ec2:ModifyImageAttribute"],
        Need::Deploy => &[
            "ec2:CreateLaunchTemplateVersion",
            "autoscaling:UpdateAutoScalingGroup",
            "autoscaling:SetDesiredCapacity",
            "autoscaling:StartInstanceRefresh",
            "autoscaling:DescribeInstanceRefreshes",
            "autoscaling:RollbackInstanceRefresh",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetHealth",
            "ec2:CreateTags",
        ],
        Need::Traffic => &[
            "autoscaling:CreateAutoScalingGroup",
            // Tags and lifecycle hooks given to CreateAutoScalingGroup need their own actions.
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:DeleteAutoScalingGroup",
            // Blue's alarm and schedule processes are parked while it is scaled in.
            "autoscaling:SuspendProcesses",
            "autoscaling:ResumeProcesses",
            "autoscaling:DescribeLifecycleHooks",
            "autoscaling:DescribePolicies",
            "autoscaling:PutScalingPolicy",
            "autoscaling:DescribeScheduledActions",
            "autoscaling:PutScheduledUpdateGroupAction",
            "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:AddTags",
            "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
            "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:DescribeRules",
            "elasticloadbalancing:ModifyRule",
        ],
        Need::Alarms => &["cloudwatch:DescribeAlarms"],
        Need::Patch => &[
            "ec2:DescribeInstances",
            "autoscaling:DescribeAutoScalingGroups",
            "ssm:DescribeInstanceInformation",
            "ssm:SendCommand",
            "ssm:ListCommands",
            "ssm:ListCommandInvocations",
            "ssm:GetCommandInvocation",
            "ec2:CreateTags",
        ],
        Need::Metrics => &["cloudwatch:PutMetricData", "cloudwatch:PutDashboard"],
        Need::Alerts => &["sns:Publish"],
        Need::Organizations => &["organizations:ListAccounts"],
        Need::AssumeRole => &["sts:AssumeRole"],
        Need::TeamJournal => &[
            "dynamodb:DescribeTable",
            "dynamodb:CreateTable",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            // Sharing readings, 25 a request.
            "dynamodb:BatchWriteItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
        ],
    }
}

/// The commands `amictl iam-policy --for` knows, and what each needs.
pub const COMMANDS: &[(&str, &[Need])] = &[
    ("audit", &[Need::Connect, Need::Read, Need::ReadSharing, Need::SharingHistory, Need::Rollouts]),
    ("retire", &[Need::Connect, Need::Read, Need::ReadSharing, Need::SharingHistory, Need::Retire, Need::Unshare]),
    ("catalog", &[Need::Connect, Need::Read, Need::Catalog]),
    ("bake", &[Need::Connect, Need::Instances, Need::Bake, Need::Distribute, Need::ReadSharing]),
    ("validate", &[Need::Connect, Need::Instances]),
    ("scan", &[Need::Connect, Need::Instances]),
    ("deploy", &[Need::Connect, Need::Read, Need::Deploy, Need::Traffic, Need::Alarms]),
    ("patch", &[Need::Connect, Need::Patch]),
    (
        "emergency",
        &[
            Need::Connect,
            Need::Read,
            Need::Instances,
            Need::Bake,
            Need::Catalog,
            Need::Deploy,
            Need::Patch,
            Need::Retire,
        ],
    ),
    ("metrics", &[Need::Connect, Need::Read, Need::ReadSharing, Need::SharingHistory, Need::Metrics]),
    ("alerts", &[Need::Alerts]),
    ("accounts", &[Need::AssumeRole, Need::Organizations]),
    ("team", &[Need::TeamJournal]),
];

/// The command names, `all` included.
pub fn command_names() -> Vec<&'static str> {
    COMMANDS.iter().map(|(c, _)| *c).chain(["all"]).collect()
}

/// Every action `commands` need (`all`: every command), sorted.
pub fn actions_for(commands: &[&str]) -> Result<BTreeSet<&'static str>, String> {
    let mut out = BTreeSet::new();
    for c in commands {
        let needs: Vec<Need> = match *c {
            "all" => COMMANDS.iter().flat_map(|(_, n)| n.iter().copied()).collect(),
            c => COMMANDS
                .iter()
                .find(|(name, _)| *name == c)
                .map(|(_, n)| n.to_vec())
                .ok_or_else(|| format!("no command {c:?} (one of {})", command_names().join(", ")))?,
        };
        out.extend(needs.into_iter().flat_map(|n| actions(n).iter().copied()));
    }
    Ok(out)
}

/// The identity policy: one statement per service, every resource (EC2, SSM Run Command and
/// Auto Scaling describe calls cannot be scoped to resources).
pub fn policy(commands: &[&str]) -> Result<Value, String> {
    let all = actions_for(commands)?;
    let mut by_service: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for a in &all {
        by_service.entry(a.split(':').next().unwrap_or_default()).or_default().push(a);
    }
    let statements: Vec<Value> = by_service
        .into_iter()
        .map(|(service, actions)| {
            json!({"Sid": format!("Amictl{}", sid(service)), "Effect": "Allow", "Action": actions, "Resource": "*"})
        })
        .collect();
    Ok(json!({"Version": "2012-10-17", "Statement": statements}))
}

fn sid(service: &str) -> String {
    service.split(|c: char| !c.is_ascii_alphanumeric()).map(capitalise).collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// The trust policy of the read role in each account: only `principal` (an account id or an
/// IAM ARN) may assume it, with `external_id` when given.
pub fn trust_policy(principal: &str, external_id: Option<&str>) -> Value {
    let principal = if principal.bytes().all(|b| b.is_ascii_digit()) {
        format!("arn:aws:iam::{principal}:root")
    } else {
        principal.to_string()
    };
    let mut statement = json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"});
    if let Some(id) = external_id {
        statement["Condition"] = json!({"StringEquals": {"sts:ExternalId": id}});
    }
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_the_union_and_each_service_is_one_statement() {
        let all = actions_for(&["all"]).unwrap();
        for (c, _) in COMMANDS {
            assert!(actions_for(&[c]).unwrap().is_subset(&all));
        }
        let p = policy(&["audit"]).unwrap();
        let sids: Vec<&str> = p["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap()).collect();
        assert_eq!(sids, vec!["AmictlAutoscaling", "AmictlCloudtrail", "AmictlEc2", "AmictlSsm", "AmictlSts"]);
        assert!(!p.to_string().contains("DeregisterImage"), "audit only reads");
        assert!(actions_for(&["nosuch"]).unwrap_err().contains("one of audit"));
    }

    #[test]
    fn the_trust_policy_names_the_principal_and_the_external_id() {
        let t = trust_policy("111122223333", Some("x-1"));
        assert_eq!(t["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
        assert_eq!(t["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"], "x-1");
        assert!(trust_policy("arn:aws:iam::1:role/ci", None)["Statement"][0].get("Condition").is_none());
    }
}

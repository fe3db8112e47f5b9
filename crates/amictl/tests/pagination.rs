//! Every list call amictl makes crosses a page boundary: this binary's emulator cuts every
//! paginated answer into pages of 3, and each kind of resource exists at least 7 times, so a
//! call that read only its first page would miss most of them.

mod common;

use common::*;
use serde_json::{json, Value};

const R: &str = "us-east-1";
const N: usize = 7;

fn call(account: &str, service: &str, op: &str, params: Value) -> Value {
    emulator().control.aws(account, R, service, op, params).unwrap_or_else(|e| panic!("{op}: {e}"))
}

fn count(v: &Value) -> usize {
    v.as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn every_list_call_reads_every_page() {
    let (account, ids) = demo_account_with(&[R], 30);
    let image = ids[R]["web-1.6.0"].as_str().unwrap();
    let fleet_lt = call(
        &account,
        "ec2",
        "create_launch_template",
        json!({"LaunchTemplateName": "fleet-base",
        "LaunchTemplateData": {"ImageId": image}}),
    )["LaunchTemplate"]["LaunchTemplateId"]
        .clone();
    for k in 0..N {
        let lt = call(
            &account,
            "ec2",
            "create_launch_template",
            json!({"LaunchTemplateName": format!("p{k}"),
            "LaunchTemplateData": {"ImageId": format!("resolve:ssm:/paged/p{k}")}}),
        )["LaunchTemplate"]["LaunchTemplateId"]
            .clone();
        for v in 0..3 {
            call(
                &account,
                "ssm",
                "put_parameter",
                json!({"Name": format!("/paged/p{k}"), "Value": image,
                "Type": "String", "DataType": "aws:ec2:image", "Overwrite": true}),
            );
            if v > 0 {
                call(
                    &account,
                    "ec2",
                    "create_launch_template_version",
                    json!({"LaunchTemplateId": lt,
                    "LaunchTemplateData": {"ImageId": image}}),
                );
            }
        }
        call(
            &account,
            "ssm",
            "put_parameter",
            json!({"Name": format!("/amictl/paged/c{k}"), "Value": image,
            "Type": "String", "DataType": "aws:ec2:image"}),
        );
        call(
            &account,
            "autoscaling",
            "create_launch_configuration",
            json!({"LaunchConfigurationName": format!("plc{k}"),
            "ImageId": image, "InstanceType": "t3.micro"}),
        );
        call(
            &account,
            "autoscaling",
            "create_auto_scaling_group",
            json!({"AutoScalingGroupName": format!("pasg{k}"),
            "LaunchConfigurationName": format!("plc{k}"), "MinSize": 0, "MaxSize": 1, "DesiredCapacity": 0,
            "AvailabilityZones": ["us-east-1a"]}),
        );
        call(&account, "ec2", "run_instances", json!({"ImageId": image, "MinCount": 1, "MaxCount": 1}));
        call(
            &account,
            "ec2",
            "request_spot_instances",
            json!({"Type": "persistent", "InstanceCount": 1,
            "LaunchSpecification": {"ImageId": image, "InstanceType": "t3.micro"}}),
        );
        call(
            &account,
            "ec2",
            "request_spot_fleet",
            json!({"SpotFleetRequestConfig": {
            "IamFleetRole": "arn:aws:iam::123456789012:role/fleet", "TargetCapacity": 1,
            "LaunchSpecifications": [{"ImageId": image, "InstanceType": "t3.micro"}]}}),
        );
        call(
            &account,
            "ec2",
            "create_fleet",
            json!({"Type": "maintain",
            "TargetCapacitySpecification": {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"},
            "LaunchTemplateConfigs": [{"LaunchTemplateSpecification": {"LaunchTemplateId": fleet_lt, "Version": "$Latest"},
                "Overrides": [{"InstanceType": "t3.micro"}]}]}),
        );
    }
    for _ in 0..4 {
        call(
            &account,
            "ssm",
            "put_parameter",
            json!({"Name": "/amictl/paged/c0", "Value": image,
            "Type": "String", "DataType": "aws:ec2:image", "Overwrite": true}),
        );
    }
    // What exists, read by the emulator's own unpaginated view (before the cap).
    let truth = |service: &str, op: &str, params: Value, key: &str| count(&call(&account, service, op, params)[key]);
    let images = truth("ec2", "describe_images", json!({"Owners": ["self"], "IncludeDisabled": true}), "Images");
    let templates = truth("ec2", "describe_launch_templates", json!({"MaxResults": 200}), "LaunchTemplates");
    let lcs =
        truth("autoscaling", "describe_launch_configurations", json!({"MaxRecords": 100}), "LaunchConfigurations");
    let asgs = truth("autoscaling", "describe_auto_scaling_groups", json!({"MaxRecords": 100}), "AutoScalingGroups");

    emulator().control.page_size(3).unwrap();
    let inv = inventory(&account, &[R]);
    emulator().control.page_size(0).unwrap();
    let s = &inv["scopes"][0];
    assert_eq!(count(&s["images"]), images);
    assert!(count(&s["snapshots"]) >= images, "one snapshot per image at least");
    assert!(count(&s["instances"]) >= N + 1);
    assert_eq!(count(&s["launch_templates"]), templates);
    for t in s["launch_templates"].as_array().unwrap().iter().filter(|t| t["name"].as_str().unwrap().starts_with('p')) {
        assert_eq!(count(&t["versions"]), 3, "{t}");
    }
    assert_eq!(count(&s["launch_configurations"]), lcs);
    assert_eq!(count(&s["auto_scaling_groups"]), asgs);
    let channels: Vec<&Value> = s["channels"].as_array().unwrap().iter().filter(|c| c["family"] == "paged").collect();
    assert_eq!(channels.len(), N, "GetParametersByPath reads every page");
    let c0 = channels.iter().find(|c| c["name"] == "c0").unwrap();
    assert_eq!(count(&c0["history"]), 5, "GetParameterHistory reads every page");
    let parameters = s["parameters"].as_object().unwrap();
    assert!((0..N).all(|k| parameters[&format!("/paged/p{k}")]["version"] == 3), "{parameters:?}");
    let fleets = s["fleets"].as_array().unwrap();
    for kind in ["ec2-fleet", "spot-fleet", "spot-request"] {
        assert!(fleets.iter().filter(|f| f["kind"] == kind).count() >= N, "{kind}: {}", fleets.len());
    }
}

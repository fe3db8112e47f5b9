//! Test harness: one emulator per test binary (or the one at AMICTL_TEST_ENDPOINT), a fresh
//! account per test (STS AssumeRole switches account; accounts never share state), and the
//! real `amictl` binary pointed at it.
#![allow(dead_code)]

pub mod sites;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// The CLI's own client of the emulator's control API (not part of any library API).
#[path = "../../src/emulator.rs"]
mod emulator_client;
use emulator_client::EmulatorControl;
use serde_json::Value;

pub struct Emulator {
    pub endpoint: String,
    pub control: EmulatorControl,
    _child: Option<Child>,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The emulator for this test binary, started on first use.
pub fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("AMICTL_TEST_ENDPOINT") {
            let control = EmulatorControl::new(&endpoint).unwrap();
            return Emulator { endpoint, control, _child: None };
        }
        let root = workspace_root();
        let python = std::env::var("AMICTL_EMULATOR_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".emulator/venv/bin/python"));
        assert!(
            python.exists(),
            "no emulator Python at {}: run `scripts/emulator install` (scripts/test does)",
            python.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&python)
            .arg(root.join("emulator/amictl_emulator.py"))
            .args(["--port", &port.to_string(), "--exit-with-parent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let endpoint = format!("http://127.0.0.1:{port}");
        let control = EmulatorControl::new(&endpoint).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while control.health().is_err() {
            assert!(Instant::now() < deadline, "emulator did not come up on {endpoint}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Emulator { endpoint, control, _child: Some(child) }
    })
}

/// A 12-digit account no other test (in this or another test binary) uses.
pub fn fresh_account() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst) as u64;
    let pid = std::process::id() as u64 % 1_000_000;
    format!("{:012}", 300_000_000_000 + pid * 1000 + n)
}

/// The region the tests' `amictl` runs in ([`test_env`]'s `AWS_REGION`).
pub const TEST_REGION: &str = "us-east-1";

/// One boto3 call in `account`, [`TEST_REGION`]; panics with the operation when it fails.
pub fn aws(account: &str, service: &str, op: &str, params: Value) -> Value {
    emulator().control.aws(account, TEST_REGION, service, op, params).unwrap_or_else(|e| panic!("{service}.{op}: {e}"))
}

/// An image made as a build makes one: CreateImage of a throwaway instance of the emulator's
/// `ami-00000001` (terminated after), named `name`, tagged `tags`; its id.
pub fn image_from_instance(account: &str, name: &str, tags: &[(&str, &str)]) -> String {
    let run = aws(
        account,
        "ec2",
        "run_instances",
        serde_json::json!({"ImageId": "ami-00000001", "MinCount": 1, "MaxCount": 1}),
    );
    let instance = run["Instances"][0]["InstanceId"].as_str().unwrap().to_string();
    let tags: Vec<Value> = tags.iter().map(|(k, v)| serde_json::json!({"Key": k, "Value": v})).collect();
    let mut params = serde_json::json!({"InstanceId": instance, "Name": name});
    if !tags.is_empty() {
        params["TagSpecifications"] = serde_json::json!([{"ResourceType": "image", "Tags": tags}]);
    }
    let made = aws(account, "ec2", "create_image", params);
    aws(account, "ec2", "terminate_instances", serde_json::json!({"InstanceIds": [instance]}));
    made["ImageId"].as_str().unwrap().to_string()
}

/// A VPC with a subnet in each of two zones and a load balancer `web` in them:
/// (VPC id, first subnet id, load balancer ARN).
pub fn load_balancer(account: &str) -> (String, String, String) {
    let vpc = aws(account, "ec2", "create_vpc", serde_json::json!({"CidrBlock": "10.0.0.0/16"}))["Vpc"]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let subnet = |cidr: &str, az: &str| {
        let params = serde_json::json!({"VpcId": vpc, "CidrBlock": cidr, "AvailabilityZone": az});
        aws(account, "ec2", "create_subnet", params)["Subnet"]["SubnetId"].as_str().unwrap().to_string()
    };
    let (a, b) = (subnet("10.0.1.0/24", "us-east-1a"), subnet("10.0.2.0/24", "us-east-1b"));
    let lb = aws(account, "elbv2", "create_load_balancer", serde_json::json!({"Name": "web", "Subnets": [a, b]}));
    let lb = lb["LoadBalancers"][0]["LoadBalancerArn"].as_str().unwrap().to_string();
    (vpc, a, lb)
}

/// An HTTP target group `name` in `vpc` (with the attributes of `extra` too) and a listener on
/// `port` of load balancer `lb` forwarding to it: (target group ARN, listener ARN).
pub fn forwarded_target_group(
    account: &str,
    vpc: &str,
    lb: &str,
    name: &str,
    port: u16,
    extra: Value,
) -> (String, String) {
    let mut params = serde_json::json!({"Name": name, "Protocol": "HTTP", "Port": 80, "VpcId": vpc});
    for (k, v) in extra.as_object().into_iter().flatten() {
        params[k] = v.clone();
    }
    let tg = aws(account, "elbv2", "create_target_group", params)["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let listener = aws(
        account,
        "elbv2",
        "create_listener",
        serde_json::json!({"LoadBalancerArn": lb, "Protocol": "HTTP", "Port": port,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": tg}]}),
    );
    (tg, listener["Listeners"][0]["ListenerArn"].as_str().unwrap().to_string())
}

pub fn role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/amictl")
}

/// A fresh account holding the demo estate in both regions; returns (account, ids by region).
pub fn demo_account() -> (String, Value) {
    let account = fresh_account();
    let seeded = emulator().control.seed(&account, &["us-east-1", "eu-west-1"], 0).expect("seed the demo estate");
    (account, seeded["regions"].clone())
}

/// The whole environment `amictl` runs with in tests: credentials for the emulator, isolated
/// from the machine's AWS files.
pub fn test_env() -> Vec<(&'static str, String)> {
    vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", std::env::temp_dir().display().to_string()),
        ("AWS_ENDPOINT_URL", emulator().endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// `amictl` with [`test_env`], run outside any directory holding an amictl.toml.
pub fn amictl() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("amictl").unwrap();
    cmd.current_dir(std::env::temp_dir()).env_clear().envs(test_env()).timeout(Duration::from_secs(300));
    cmd
}

/// `amictl` acting in `account` through `--role-arn`.
pub fn amictl_in(account: &str) -> assert_cmd::Command {
    let mut cmd = amictl();
    cmd.args(["--role-arn", &role_arn(account)]);
    cmd
}

pub fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A demo account grown to about `amis` AMIs in the given regions.
pub fn demo_account_with(regions: &[&str], amis: usize) -> (String, Value) {
    let account = fresh_account();
    let seeded = emulator().control.seed(&account, regions, amis).expect("seed the demo estate");
    (account, seeded["regions"].clone())
}

/// `amictl COMMAND --output json` for `account` in `regions`, which must succeed.
fn json_of(command: &str, account: &str, regions: &[&str]) -> Value {
    let mut cmd = amictl_in(account);
    cmd.args([command, "--output", "json"]);
    for r in regions {
        cmd.args(["--region", r]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json(&out)
}

/// `amictl inventory --output json` for `account` in `regions`.
pub fn inventory(account: &str, regions: &[&str]) -> Value {
    json_of("inventory", account, regions)
}

/// `amictl usage --output json` for `account` in `regions`: image id → in use.
pub fn in_use(account: &str, regions: &[&str]) -> std::collections::HashMap<String, bool> {
    json_of("usage", account, regions)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["image_id"].as_str().unwrap().to_string(), r["in_use"].as_bool().unwrap()))
        .collect()
}

/// The images a plan document deregisters, sorted.
pub fn deregister_targets(plan: &Value) -> Vec<String> {
    let mut out: Vec<String> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "deregister")
        .map(|a| a["image_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Asserts the exit code, showing both streams when it differs.
pub fn assert_code(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-line error and exit 2, never a panic; the error.
pub fn one_line_error(out: &std::process::Output) -> String {
    assert_code(out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

/// A run that failed after it began (exit 2, never a panic): its progress lines, then one
/// error line, the last; the error.
pub fn the_error(out: &std::process::Output) -> String {
    assert_code(out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.trim_end().lines().last(), Some(errors[0]), "the error comes last: {stderr}");
    errors[0].to_string()
}

/// An SNS topic `name` in `account` (us-east-1) with an SQS queue subscribed to it, to read
/// back what amictl publishes: `(topic ARN, queue URL)`.
pub fn topic_with_queue(account: &str, name: &str) -> (String, String) {
    let aws = |service: &str, op: &str, params: Value| {
        emulator()
            .control
            .aws(account, "us-east-1", service, op, params)
            .unwrap_or_else(|e| panic!("{service}.{op}: {e}"))
    };
    let topic = aws("sns", "create_topic", serde_json::json!({"Name": name}))["TopicArn"].as_str().unwrap().to_string();
    let queue =
        aws("sqs", "create_queue", serde_json::json!({"QueueName": name}))["QueueUrl"].as_str().unwrap().to_string();
    let attributes =
        aws("sqs", "get_queue_attributes", serde_json::json!({"QueueUrl": queue, "AttributeNames": ["QueueArn"]}));
    let arn = attributes["Attributes"]["QueueArn"].as_str().unwrap();
    aws("sns", "subscribe", serde_json::json!({"TopicArn": topic, "Protocol": "sqs", "Endpoint": arn}));
    (topic, queue)
}

/// The bodies of the messages waiting in `queue` of `account` (received: not seen again).
pub fn received(account: &str, queue: &str) -> Vec<String> {
    let out = emulator()
        .control
        .aws(
            account,
            "us-east-1",
            "sqs",
            "receive_message",
            serde_json::json!({"QueueUrl": queue, "MaxNumberOfMessages": 10}),
        )
        .unwrap();
    out["Messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["Body"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `amictl ARGS` in `account`, started in the background while the emulator holds back the
/// answers of `action` in that account; returns once one answer is held (the run is waiting
/// for it), so the test can kill it there. The caller releases the hold.
pub fn spawn_held(account: &str, action: &str, dir: &std::path::Path, args: &[&str]) -> Child {
    let control = &emulator().control;
    control.hold(account, &[action], 120.0).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("amictl"))
        .current_dir(dir)
        .env_clear()
        .envs(test_env())
        .args(["--role-arn", &role_arn(account)])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.holds().unwrap()["held"].as_u64().unwrap() == 0 {
        assert!(child.try_wait().unwrap().is_none(), "{action}: amictl ended before it was held");
        assert!(Instant::now() < deadline, "{action}: never held");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

//! A client for the control endpoints of amictl's local emulator (`emulator/amictl_emulator.py`):
//! seeding, backdating images, and reading its request statistics. Used by the benchmark and
//! the tests; it only ever talks to the loopback address it is given.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// The emulator at `endpoint` (e.g. `http://127.0.0.1:5000`).
#[derive(Debug, Clone)]
pub struct EmulatorControl {
    host_port: String,
}

impl EmulatorControl {
    /// Accepts only `http://127.0.0.1:PORT` or `http://localhost:PORT`: the control API is local.
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| format!("{endpoint}: not an http:// endpoint"))?;
        let host_port = rest.trim_end_matches('/').to_string();
        if !(host_port.starts_with("127.0.0.1:") || host_port.starts_with("localhost:")) {
            return Err(format!("{endpoint}: the emulator's control API is only reached on loopback"));
        }
        Ok(EmulatorControl { host_port })
    }

    pub fn health(&self) -> Result<Value, String> {
        self.call("GET", "/_amictl/health", &Value::Null)
    }

    /// Seeds the demo estate into `account` and returns its key ids by region and name.
    pub fn seed(&self, account: &str, regions: &[&str], amis: usize) -> Result<Value, String> {
        self.call("POST", "/_amictl/seed", &serde_json::json!({"account": account, "regions": regions, "amis": amis}))
    }

    /// Sets an image's creation date `days_ago` days back (moto has no API for it).
    pub fn backdate(&self, account: &str, region: &str, image_id: &str, days_ago: f64) -> Result<Value, String> {
        self.call(
            "POST",
            "/_amictl/backdate",
            &serde_json::json!({"account": account, "region": region, "image_id": image_id, "days_ago": days_ago}),
        )
    }

    /// One AWS call inside `account` (boto3 in the emulator; `operation` in snake_case), for
    /// tests that change the estate underneath amictl.
    pub fn aws(
        &self,
        account: &str,
        region: &str,
        service: &str,
        operation: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.call(
            "POST",
            "/_amictl/call",
            &serde_json::json!({"account": account, "region": region, "service": service, "operation": operation, "params": params}),
        )
    }

    /// `{"requests", "server_seconds", "request_seconds_summed", "by_action"}` since the last reset.
    pub fn stats(&self) -> Result<Value, String> {
        self.call("GET", "/_amictl/stats", &Value::Null)
    }

    /// Answers `fraction` of AWS requests from now on with the service's throttling error
    /// (deterministic for a `seed`); 0 turns it off.
    pub fn throttle(&self, fraction: f64, seed: u64) -> Result<Value, String> {
        self.call("POST", "/_amictl/throttle", &serde_json::json!({"fraction": fraction, "seed": seed}))
    }

    /// Throttles every request of `actions` made in `account` (only there), or stops with 0.
    pub fn throttle_in(&self, account: &str, actions: &[&str], fraction: f64) -> Result<Value, String> {
        let body = serde_json::json!({"fraction": fraction, "seed": 0, "actions": actions, "account": account});
        self.call("POST", "/_amictl/throttle", &body)
    }

    /// Caps every paginated list at `max` items a page (0: no cap), so pagination is crossed.
    pub fn page_size(&self, max: usize) -> Result<Value, String> {
        self.call("POST", "/_amictl/page-size", &serde_json::json!({"max": max}))
    }

    /// How the next matching SSM invocations end: `rule` as `/_amictl/ssm-outcomes` takes it
    /// (account, selectors, status, exit_code, stdout, stderr, polls, times).
    pub fn ssm_outcome(&self, rule: Value) -> Result<Value, String> {
        self.call("POST", "/_amictl/ssm-outcomes", &rule)
    }

    /// Holds back the answers of `actions` in `account` for `seconds` after they took effect
    /// (0 releases and clears every hold).
    pub fn hold(&self, account: &str, actions: &[&str], seconds: f64) -> Result<Value, String> {
        self.call(
            "POST",
            "/_amictl/hold",
            &serde_json::json!({"account": account, "actions": actions, "seconds": seconds}),
        )
    }

    /// `{"rules", "held"}`: `held` answers are being held now.
    pub fn holds(&self) -> Result<Value, String> {
        self.call("GET", "/_amictl/hold", &Value::Null)
    }

    /// Makes STS refuse (or, with `deny` false, accept again) AssumeRole of `role_arn`, as AWS
    /// does when the role's trust policy does not let the caller in.
    pub fn deny_role(&self, role_arn: &str, deny: bool) -> Result<Value, String> {
        self.call("POST", "/_amictl/deny-role", &serde_json::json!({"role_arn": role_arn, "deny": deny}))
    }

    /// Every IAM action (`ec2:DescribeImages`) requests in `account` asked for.
    pub fn actions(&self, account: &str) -> Result<Vec<String>, String> {
        let out = self.call("POST", "/_amictl/actions", &serde_json::json!({"account": account}))?;
        Ok(out["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect())
    }

    /// Any control endpoint (`/_amictl/unhealthy`, `/_amictl/refresh/record`, …) with `body`.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call("POST", path, body)
    }

    pub fn reset_stats(&self) -> Result<Value, String> {
        self.call("POST", "/_amictl/stats/reset", &Value::Null)
    }

    /// Every request carries `X-Amictl-Control: 1`: the emulator refuses control requests without it, so that
    /// a web page in a browser cannot drive it (a browser sends a custom header only after a CORS preflight).
    fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let mut s = TcpStream::connect(&self.host_port).map_err(|e| format!("emulator at {}: {e}", self.host_port))?;
        s.set_read_timeout(Some(Duration::from_secs(600))).ok();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-Amictl-Control: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.host_port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        let (head, payload) = resp.split_once("\r\n\r\n").ok_or("malformed emulator response")?;
        let value: Value = serde_json::from_str(payload).map_err(|e| format!("emulator said {payload:?}: {e}"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("emulator {path}: {}", value.get("error").unwrap_or(&value)));
        }
        Ok(value)
    }
}

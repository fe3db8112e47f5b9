//! The emulator's control API refuses what a web page in a browser on this machine could send: a
//! request without the `X-Amictl-Control: 1` header (a cross-site "simple" POST), with a foreign Host
//! (DNS rebinding), with an `Origin` header, or a CORS preflight; and a refused request changes nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

const R: &str = "us-east-1";
/// The key pair a refused `/_amictl/call` would have created.
const PROBE: &str = "csrf-probe";

/// `host:port` of the test emulator, as a loopback Host header names it.
fn host_port() -> String {
    emulator().endpoint.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// The emulator's port.
fn port() -> String {
    host_port().rsplit(':').next().unwrap().to_string()
}

/// One raw HTTP/1.1 request to the emulator with exactly `headers` (Host included) and `body`;
/// returns the status and the whole response.
fn send(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host_port()).expect("connect to the emulator");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok());
    (status.unwrap_or_else(|| panic!("no HTTP status in {response:?}")), response)
}

/// A `/_amictl/call` that creates key pair [`PROBE`] in `account`, sent as text/plain (what a web page
/// can POST cross-site without a preflight) with `headers` in addition.
fn post_probe(account: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (operation, params) = ("create_key_pair", json!({"KeyName": PROBE}));
    let body = json!({"account": account, "region": R, "service": "ec2", "operation": operation, "params": params});
    let mut all = vec![("Content-Type", "text/plain")];
    all.extend_from_slice(headers);
    send("POST", "/_amictl/call", &all, &body.to_string())
}

/// The names of the key pairs in `account`, read through the (authorized) control client.
fn key_pair_names(account: &str) -> Vec<String> {
    let out = emulator().control.aws(account, R, "ec2", "describe_key_pairs", json!({})).expect("describe_key_pairs");
    let pairs = out["KeyPairs"].as_array().cloned().unwrap_or_default();
    pairs.iter().filter_map(|k| k["KeyName"].as_str().map(String::from)).collect()
}

/// Sends the probe in a fresh account with `headers`, asserts it was refused with 403 and created
/// nothing, and returns the response.
fn assert_probe_refused(headers: &[(&str, &str)]) -> String {
    let account = fresh_account();
    let (status, response) = post_probe(&account, headers);
    assert_eq!(status, 403, "expected 403, got: {response}");
    let names = key_pair_names(&account);
    assert!(!names.contains(&PROBE.to_string()), "the refused call created {PROBE} ({names:?}); response: {response}");
    response
}

#[test]
fn a_request_without_the_control_header_is_refused_and_does_nothing() {
    let host = host_port();
    let response = assert_probe_refused(&[("Host", host.as_str())]);
    assert!(response.contains("X-Amictl-Control"), "the refusal should name the missing header: {response}");
}

#[test]
fn a_foreign_host_is_refused_even_with_the_header() {
    let host = format!("attacker.example:{}", port());
    let response = assert_probe_refused(&[("Host", host.as_str()), ("X-Amictl-Control", "1")]);
    assert!(response.contains("attacker.example"), "the refusal should name the Host: {response}");
}

#[test]
fn a_request_with_an_origin_is_refused_even_with_the_header() {
    let host = host_port();
    let headers = [("Host", host.as_str()), ("X-Amictl-Control", "1"), ("Origin", "http://attacker.example")];
    let response = assert_probe_refused(&headers);
    assert!(response.contains("Origin"), "the refusal should name the Origin header: {response}");
}

#[test]
fn a_cors_preflight_is_refused() {
    let host = host_port();
    let headers = [
        ("Host", host.as_str()),
        ("Origin", "http://attacker.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "x-amictl-control"),
    ];
    let (status, response) = send("OPTIONS", "/_amictl/call", &headers, "");
    assert_eq!(status, 403, "expected 403, got: {response}");
    assert!(!response.to_ascii_lowercase().contains("access-control-allow"), "a preflight was approved: {response}");
}

#[test]
fn health_with_the_header_and_a_loopback_host_is_served() {
    let host = host_port();
    let (status, response) = send("GET", "/_amictl/health", &[("Host", host.as_str()), ("X-Amictl-Control", "1")], "");
    assert_eq!(status, 200, "expected 200, got: {response}");
    assert!(response.contains("\"ok\": true"), "{response}");
}

/// The probe itself works when authorized, so the refusals above are not vacuous.
#[test]
fn the_probe_with_the_header_and_a_loopback_host_is_served() {
    let account = fresh_account();
    let host = host_port();
    let (status, response) = post_probe(&account, &[("Host", host.as_str()), ("X-Amictl-Control", "1")]);
    assert_eq!(status, 200, "expected 200, got: {response}");
    let names = key_pair_names(&account);
    assert!(names.contains(&PROBE.to_string()), "the authorized call did not create {PROBE} ({names:?}): {response}");
}

//! Named shell commands: how to patch an instance, and how to run a scanner on it. One shell
//! script per preset picks the package manager or scanner the instance has, so one preset
//! serves Debian/Ubuntu (apt), Amazon Linux/RHEL/Fedora (dnf, yum) and SUSE (zypper).

use serde::{Deserialize, Serialize};

use crate::scan::ReportFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchPreset {
    /// Security updates only.
    SecurityUpdates,
    /// Every available update.
    AllUpdates,
}

const NO_PACKAGE_MANAGER: &str =
    r#"echo "amictl: no supported package manager (apt-get, dnf, yum, zypper) on this instance" >&2; exit 3"#;

/// The shell commands of a patch preset (for `AWS-RunShellScript`).
pub fn patch_commands(preset: PatchPreset) -> Vec<String> {
    let (apt, dnf, yum, zypper) = match preset {
        PatchPreset::SecurityUpdates => (
            // unattended-upgrade applies the security origins only; without it, upgrade the
            // packages whose candidate comes from a security pocket.
            "if command -v unattended-upgrade >/dev/null 2>&1; then unattended-upgrade -v; else \
             apt-get -s dist-upgrade | awk '/^Inst/ && /[Ss]ecurity/ {print $2}' | xargs -r apt-get install -y --only-upgrade; fi",
            "dnf -y upgrade --security",
            "yum -y update --security",
            "zypper --non-interactive patch --category security",
        ),
        PatchPreset::AllUpdates => (
            "apt-get -y dist-upgrade",
            "dnf -y upgrade",
            "yum -y update",
            "zypper --non-interactive update",
        ),
    };
    vec![
        "set -eu".into(),
        format!(
            "if command -v apt-get >/dev/null 2>&1; then export DEBIAN_FRONTEND=noninteractive; apt-get update -q; {apt}; \
             elif command -v dnf >/dev/null 2>&1; then {dnf}; \
             elif command -v yum >/dev/null 2>&1; then {yum}; \
             elif command -v zypper >/dev/null 2>&1; then zypper --non-interactive refresh; {zypper}; \
             else {NO_PACKAGE_MANAGER}; fi"
        ),
    ]
}

/// Shell commands that list what a preset would install, changing nothing (`patch --scan-only`).
pub fn missing_updates_commands(preset: PatchPreset) -> Vec<String> {
    let security = preset == PatchPreset::SecurityUpdates;
    let (apt, dnf, yum, zypper) = if security {
        (
            "apt-get update -q >/dev/null && apt list --upgradable 2>/dev/null | grep -i security || true",
            "dnf -q updateinfo list --security",
            "yum -q updateinfo list security",
            "zypper --non-interactive list-patches --category security",
        )
    } else {
        (
            "apt-get update -q >/dev/null && apt list --upgradable 2>/dev/null | tail -n +2",
            // check-update exits 100 when there are updates: that is an answer, not a failure.
            "dnf -q check-update || [ $? -eq 100 ]",
            "yum -q check-update || [ $? -eq 100 ]",
            "zypper --non-interactive list-updates",
        )
    };
    vec![
        "set -eu".into(),
        format!(
            "if command -v apt-get >/dev/null 2>&1; then {apt}; \
             elif command -v dnf >/dev/null 2>&1; then {dnf}; \
             elif command -v yum >/dev/null 2>&1; then {yum}; \
             elif command -v zypper >/dev/null 2>&1; then {zypper}; \
             else {NO_PACKAGE_MANAGER}; fi"
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scanner {
    Trivy,
    Grype,
    Lynis,
}

/// The command a scanner preset runs, and the report format it prints. Reports go to stdout,
/// compact, so as much as possible fits in what SSM keeps of the output.
pub fn scanner_command(scanner: Scanner) -> (String, ReportFormat) {
    match scanner {
        Scanner::Trivy => (
            "trivy rootfs --quiet --format json --scanners vuln --skip-dirs /proc --skip-dirs /sys / | tr -d '\\n'"
                .into(),
            ReportFormat::Trivy,
        ),
        Scanner::Grype => {
            ("grype dir:/ -q -o json --exclude '/proc/**' --exclude '/sys/**'".into(), ReportFormat::Grype)
        }
        // A fresh report or none (never last run's), only the lines that matter.
        Scanner::Lynis => (
            "rm -f /var/log/lynis-report.dat; lynis audit system --quick --quiet --no-colors >/dev/null 2>&1; \
             test -s /var/log/lynis-report.dat && \
             grep -E '^(report_version|lynis_version|warning\\[\\]|suggestion\\[\\])' /var/log/lynis-report.dat"
                .into(),
            ReportFormat::Lynis,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_presets_ask_each_package_manager_for_security_updates_only() {
        let script = patch_commands(PatchPreset::SecurityUpdates).join("\n");
        for needle in
            ["dnf -y upgrade --security", "yum -y update --security", "--category security", "unattended-upgrade"]
        {
            assert!(script.contains(needle), "{needle} missing from {script}");
        }
        let scan = missing_updates_commands(PatchPreset::SecurityUpdates).join("\n");
        assert!(scan.contains("updateinfo list --security") && !scan.contains("upgrade --security"), "{scan}");
        let all = patch_commands(PatchPreset::AllUpdates).join("\n");
        assert!(!all.contains("--security"));
        assert!(all.contains("exit 3"), "an instance without a package manager fails the patch");
    }
}

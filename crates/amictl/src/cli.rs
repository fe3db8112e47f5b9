//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # Audit the default region of the default profile; exit 1 on high or critical findings
  amictl audit

  # Two regions, JSON for a pipeline, fail on anything medium or worse
  amictl audit --region us-east-1 --region eu-west-1 --output json --fail-on medium

  # What uses these AMIs?
  amictl usage ami-0abc1234def567890 ami-0fed9876cba543210

  # A critical CVE: affected images and what runs them, then everything patched
  amictl emergency --cve CVE-2026-1234 --dry-run
  amictl emergency --cve CVE-2026-1234 --yes --report-html cve.html

  # Against the local emulator (see README)
  AWS_ENDPOINT_URL=http://127.0.0.1:5000 amictl audit --region us-east-1

Exit codes: 0 clean, 1 findings at or above --fail-on, 2 error.
Configuration: ./amictl.toml (or --config FILE / AMICTL_CONFIG); every setting has a flag.";

/// Owns the life of Amazon Machine Images and keeps an EC2 fleet patched: inventory, what uses
/// each AMI, compliance audit, staged retirement, an image catalog, bake/validate/scan, deploy and
/// roll back, patch in place, the emergency CVE pipeline, alerts, metrics and an HTML report.
#[derive(Debug, Parser)]
#[command(name = "amictl", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Region to work in; repeat for several (default: the profile's or AWS_REGION).
    #[arg(long = "region", global = true, value_name = "REGION")]
    pub regions: Vec<String>,

    /// Named profile from ~/.aws/config (default: AWS_PROFILE or `default`).
    #[arg(long, global = true)]
    pub profile: Option<String>,

    /// Send every AWS call to this endpoint (e.g. a local emulator).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Work in the account of this role (repeatable); overrides `[[accounts]]` in amictl.toml.
    #[arg(long = "role-arn", global = true, value_name = "ARN")]
    pub role_arns: Vec<String>,

    /// Find the accounts in AWS Organizations (ListAccounts, from the management or a
    /// delegated administrator account) and read each through this role name
    /// (`arn:aws:iam::ACCOUNT:role/NAME`); also `[organization] role_name`.
    #[arg(long, global = true, value_name = "ROLE_NAME")]
    pub org_role: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Config file (default: ./amictl.toml when present).
    #[arg(long, short = 'c', global = true, env = "AMICTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Give up one attempt of an AWS call after this long (default 20s; a call with its retries
    /// gets three times that); a stalled connection fails with an error naming the endpoint.
    #[arg(long, global = true, env = "AMICTL_CALL_TIMEOUT", value_name = "DURATION")]
    pub call_timeout: Option<String>,

    /// The share of each AWS API's budget (EC2's token bucket per account, Region and action)
    /// amictl takes, from 0.1 to 1 (default 0.5; `api_share` in amictl.toml): requests are paced
    /// below that share of the bucket's refill, the rest is left to the account's other users.
    #[arg(long, global = true, env = "AMICTL_API_SHARE", value_name = "SHARE", value_parser = api_share)]
    pub api_share: Option<f64>,

    /// How long CloudTrail may take to deliver an event: launch-permission readings kept in the
    /// journal that are younger than this are read again (default 15m; `[sharing] delivery_delay`).
    #[arg(long, global = true, value_name = "DURATION")]
    pub sharing_delivery_delay: Option<String>,

    /// Read every image's launch permissions afresh: use no reading kept in the journal, keep none
    /// (`[sharing] cache = false`).
    #[arg(long, global = true)]
    pub no_sharing_cache: bool,

    /// More log output on stderr (-v, -vv); AMICTL_LOG takes a tracing filter. With -v, the
    /// requests sent and throttled per AWS action are listed at the end.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compliance findings for every AMI and what runs it.
    #[command(after_help = "\
Examples:
  amictl audit --region us-east-1 --max-age 180d --scan-tag SecurityScan
  amictl audit --output json > audit.json
  amictl audit --allow-account 210987654321 --fail-on critical

Exit codes: 0 no finding at or above --fail-on, 1 there are, 2 error (including a region that
could not be listed: the audit would be incomplete).")]
    Audit(AuditArgs),

    /// Which AMIs are in use and by what (instances, launch templates, launch configurations,
    /// Auto Scaling groups, sharing).
    #[command(
        visible_alias = "in-use",
        after_help = "\
Examples:
  amictl usage                          # every AMI, in use or not
  amictl usage ami-0abc1234def567890    # one AMI; exit 2 if it does not exist
  amictl usage --unused --output json   # what nothing uses"
    )]
    Usage(UsageArgs),

    /// Count what exists per account and region; `--output json` dumps the whole inventory.
    #[command(after_help = "\
Examples:
  amictl inventory --region us-east-1 --region eu-west-1
  amictl inventory --output json > inventory.json")]
    Inventory(ScanArgs),

    /// Retire AMIs nothing uses: keep the newest N per family, deprecate → disable →
    /// deregister → delete their snapshots, one stage per run as grace periods pass.
    /// Prints the plan; changes nothing without --apply.
    #[command(after_help = "\
Examples:
  amictl retire                                     # the plan, as a table; nothing changes
  amictl retire --keep 3 --min-age 90d --output json
  amictl retire --plan-out plan.json && amictl apply plan.json
  amictl retire --apply                             # asks before acting
  amictl retire --region us-east-1 --region eu-west-1 --keep 0 --min-age 90d \\
      --keep-tag DoNotDelete --orphans --now --apply --yes

Never retired: AMIs in use (instances, any launch template version, launch configurations,
Auto Scaling groups, shared, public), carrying a keep tag, the newest N of their family,
younger than --min-age, or the parent (SourceAMI) of a kept AMI.

Exit codes: 0 planned or applied in full, 1 some items were aborted or failed, 2 error.")]
    Retire(RetireArgs),

    /// Apply a saved plan after re-checking it against the estate, or resume an interrupted apply.
    #[command(after_help = "\
Examples:
  amictl apply plan.json          # re-planned now: only what a fresh plan also takes is done
  amictl apply --resume           # continue the newest interrupted apply from the journal")]
    Apply(ApplyArgs),

    /// The image catalog: capture an AMI from an instance, list versions, lineage, revoke.
    #[command(subcommand)]
    Image(ImageCommand),

    /// Channels: named pointers to image versions (SSM parameters /amictl/<family>/<channel>,
    /// which launch templates can use as resolve:ssm:), with history and rollback.
    #[command(subcommand)]
    Channel(ChannelCommand),

    /// Bake a patched image of a family: a builder from the base, patched through Systems
    /// Manager, imaged, tagged with its lineage; the builder is always terminated.
    #[command(after_help = "\
Examples:
  amictl bake --family webapp --base-family webapp          # newest validated webapp, patched
  amictl bake --family webapp --base ami-0abc1234 --version 2.0.0 --patch-preset all-updates
  amictl bake --family base-al2023 --base-filter 'name=al2023-ami-2023.*-x86_64,owner=amazon' \\
      --instance-profile ssm-builder --cve CVE-2024-3094 --copy-to eu-west-1 --share-with 210987654321
  amictl bake --family webapp --base-family webapp --patch-command 'dnf -y upgrade openssl' --output json

Tags on the image: Application, Version, SourceAMI, PatchDate, CVE, BuiltBy=amictl, amictl:run-id.
A bake interrupted after CreateImage is finished by the next bake of the family and base; any
instance a killed run left behind is terminated by the next command that launches one.
Exit codes: 0 baked, 2 error (bad input, a failed patch, AWS).")]
    Bake(BakeArgs),

    /// Prove an image on a throw-away instance: commands through SSM, EC2 status checks, an
    /// HTTP check; tags amictl:validation=passed|failed.
    #[command(after_help = "\
Examples:
  amictl validate ami-0abc1234 --check-command 'systemctl is-active nginx'
  amictl validate ami-0abc1234 --http-url 'http://{private_ip}:8080/health' --http-body ok
  amictl validate ami-0abc1234 --no-status-checks --check-command 'curl -fsS http://localhost/health'

Checks also come from [validate] in amictl.toml. Exit codes: 0 passed, 1 failed, 2 error
(including a check URL that could never be reached: nothing was proven).")]
    Validate(ValidateArgs),

    /// Scan an image for vulnerabilities on a throw-away instance (trivy, grype, lynis or any
    /// command printing their reports); tags amictl:scan=passed|failed.
    #[command(after_help = "\
Examples:
  amictl scan ami-0abc1234                          # trivy, fails on high and critical
  amictl scan ami-0abc1234 --scanner grype --fail-on critical
  amictl scan ami-0abc1234 --scanner-command '/opt/scan.sh' --report-format trivy
  amictl scan --show ami-0abc1234                   # the last report, from the journal

Exit codes: 0 passed, 1 findings at or above --fail-on, 2 error (including a report that does
not parse: never a pass).")]
    Scan(ScanImageArgs),

    /// Patch running instances in place through SSM Run Command: rate-controlled, batched so no
    /// Auto Scaling group drops below --min-healthy, every instance's result collected.
    #[command(after_help = "\
Examples:
  amictl patch --target Environment=production --target Role=web --dry-run   # the batches
  amictl patch --target Environment=production --max-concurrency 10% --max-errors 5% --yes
  amictl patch --asg web-prod --min-healthy 90 --baseline --reboot if-needed --yes
  amictl patch --instance i-0abc --command 'dnf -y upgrade openssl' --yes
  amictl patch --target Role=web --scan-only              # what is missing; changes nothing
  amictl patch --resume                                   # continue an interrupted run

Each patched instance is tagged amictl:patch-status (and amictl:patched-at on success), which
`amictl audit --max-patch-age 30d` reads. Exit codes: 0 every instance succeeded, 1 any failed,
timed out, was not managed by SSM or not run, 2 error.")]
    Patch(PatchArgs),

    /// Roll an Auto Scaling group to a new image without taking its service down: a new numbered
    /// launch template version (only the image changed), then an instance refresh, batches that
    /// grow the group before old instances go, or a green group that takes the traffic; the
    /// previous version becomes the group's last-known-good once the new one serves.
    #[command(after_help = "\
Examples:
  amictl deploy --asg web-prod --channel webapp/prod --yes
  amictl deploy --asg web-prod --image ami-0abc1234 --min-healthy 90 --checkpoints 20,50 --checkpoint-delay 10m --yes
  amictl deploy --asg web-prod --image ami-0abc1234 --strategy batched --batch-size 25% --yes
  amictl deploy --asg web-prod --channel webapp/prod --strategy blue-green --shift 10,50,100 \\
      --shift-pause 5m --alarm web-5xx --keep-blue 1h --yes
  amictl deploy --asg web-prod --image ami-0abc1234 --strategy canary --canary-steps 5,25,100 --yes
  amictl deploy --resume

Everything is checked before the first change, and a refusal changes nothing: an image that has
not passed validation and scan (--force overrides), a revoked image, an image of another region or
of another family (--allow-family-change), a group on a launch configuration, a batched deploy
with no room above --min-healthy, and for blue-green every listener and rule that reaches the
group's target groups (one green twin per target group; authentication, redirects, conditions and
stickiness kept). Only `healthy` targets pass a health gate. Exit codes: 0 deployed, 1 a health
gate failed and the group is back on its last-known-good, 2 error or refused.")]
    Deploy(DeployArgs),

    /// Return a group to its last-known-good version and image, by the same strategies.
    #[command(after_help = "\
Examples:
  amictl rollback --asg web-prod --yes")]
    Rollback(GroupRollbackArgs),

    /// What each Auto Scaling group runs: images by instance count, its template version (pinned
    /// or not), any instance refresh, its last-known-good.
    #[command(after_help = "\
Examples:
  amictl status
  amictl status --asg web-prod --output json")]
    Status(StatusArgs),

    /// A CVE to a patched fleet in one run: affected images and what runs them, patched images
    /// baked, validated and scanned, rolled out, standalone instances patched in place, the
    /// vulnerable images deprecated, a report and an SNS message.
    #[command(after_help = "\
Examples:
  amictl emergency --cve CVE-2026-1234 --dry-run            # the blast radius; nothing changes
  amictl emergency --cve CVE-2026-1234 --yes --report-html cve.html
  amictl emergency --cve CVE-2026-1234 --package openssl --fixed-version 3.0.13 --revoke --yes
  amictl emergency --cve CVE-2026-1234 --family webapp --strategy batched --yes
  amictl emergency --resume                                 # continue an interrupted run

Affected images come from stored scan reports (`amictl scan`) that name the CVE or list the
package below its fixed version; with --family, every image of those families. Each family is
baked from its newest validated image, validated, scanned (the CVE must be gone), promoted to the
channels that pointed at a vulnerable image, deployed to every affected group (rolling, 90 %
healthy, no checkpoints by default) and its standalone instances patched in place; then the
vulnerable images are deprecated (--revoke also revokes them). A failed family does not stop
the others. Exit codes: 0 everything patched, 1 some family or group is not, 2 error.")]
    Emergency(EmergencyArgs),

    /// One self-contained HTML page of the estate: AMI ages, fleet by image, findings with
    /// filters, lineage, channels, recent runs, the last emergency's timeline.
    #[command(after_help = "\
Examples:
  amictl report --html report.html
  amictl report --html cve.html --run 12       # with emergency run 12's timeline")]
    Report(ReportArgs),

    /// CloudWatch metrics of the estate (AMI count and age by family, non-compliant AMIs,
    /// instances on outdated or revoked images, the last result of each pipeline).
    #[command(subcommand)]
    Metrics(MetricsCommand),

    /// Create or update the CloudWatch dashboard of amictl's metrics.
    #[command(after_help = "\
Examples:
  amictl dashboard
  amictl dashboard --name amictl-prod --namespace amictl/prod")]
    Dashboard(DashboardArgs),

    /// The least-privilege IAM policy of commands (a policy document to attach to the identity
    /// amictl runs as, or to each account's role), or the trust policy of the cross-account
    /// read role.
    #[command(
        name = "iam-policy",
        after_help = "\
Examples:
  amictl iam-policy --for audit > read-role-policy.json       # what the read role in each account needs
  amictl iam-policy --for retire --for accounts
  amictl iam-policy --for all
  amictl iam-policy --trust 111122223333 --external-id amictl-prod > trust.json

Commands: audit (also usage, inventory, report, status), retire (and apply), catalog (image,
channel), bake, validate, scan, deploy (and rollback), patch, emergency, metrics (and
dashboard), alerts (SNS), accounts (AssumeRole, Organizations), team (the DynamoDB journal),
all. The table output is the bare policy document; --output json wraps it with its schema."
    )]
    IamPolicy(IamPolicyArgs),

    /// The journal itself: copy one into another (a SQLite file into a team journal on
    /// DynamoDB, or back).
    #[command(subcommand)]
    Journal(JournalCommand),

    /// Mutating runs recorded in the journal.
    #[command(after_help = "\
Examples:
  amictl history
  amictl history --run 7 --output json")]
    History(HistoryArgs),

    /// Measure a command on the current estate (wall time, API requests, emulator share).
    #[command(after_help = "\
Examples:
  # against the local emulator with a 10,000-AMI demo estate
  scripts/bench-audit
  AWS_ENDPOINT_URL=http://127.0.0.1:5000 amictl bench audit --iterations 3
  amictl bench plan --synthetic 1000000       # the planner alone, no AWS
  scripts/bench-retire                        # plan + apply on a 10,000-AMI emulated estate")]
    Bench(BenchArgs),
}

/// Settings that shape how the estate is read.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Reading")]
pub struct ScanArgs {
    /// Fetch launch permissions (one call per AMI) of every AMI (`all`; the default of audit and
    /// usage, which report every reference), or only of those nothing else uses (`unreferenced`,
    /// enough to tell used from unused; the default of inventory and retire).
    #[arg(long, value_enum)]
    pub check_sharing: Option<SharingArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SharingArg {
    Unreferenced,
    All,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub scan: ScanArgs,

    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_name = "SEVERITY", value_parser = ["info", "low", "medium", "high", "critical"])]
    pub fail_on: Option<String>,

    /// Send a summary of the findings at or above --notify-severity to the SNS topic of
    /// `[alerts] topic_arn` (or --topic-arn).
    #[arg(long)]
    pub notify: bool,

    /// The SNS topic for --notify.
    #[arg(long, value_name = "ARN")]
    pub topic_arn: Option<String>,

    /// The lowest severity --notify tells about (default `[alerts] min_severity`, high).
    #[arg(long, value_name = "SEVERITY", value_parser = ["info", "low", "medium", "high", "critical"])]
    pub notify_severity: Option<String>,

    /// Images older than this are findings (e.g. 90d, 12w).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,

    /// Running instances last patched (or launched) longer ago are findings (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub max_patch_age: Option<String>,

    /// The tag a security scan writes its verdict to.
    #[arg(long, value_name = "KEY")]
    pub scan_tag: Option<String>,

    /// A scan-tag value that means passed (repeatable).
    #[arg(long = "scan-passed-value", value_name = "VALUE")]
    pub scan_passed_values: Vec<String>,

    /// An account images may be shared with (repeatable).
    #[arg(long = "allow-account", value_name = "ACCOUNT")]
    pub allowed_accounts: Vec<String>,

    #[command(flatten)]
    pub families: FamilyArgs,

    /// In table output, list every finding rather than the first 50.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Families")]
pub struct FamilyArgs {
    /// Tag key whose value names an image's family (repeatable; replaces the configured keys).
    #[arg(long = "family-tag", value_name = "KEY")]
    pub family_tags: Vec<String>,

    /// Regex over AMI names whose `family` group names the family.
    #[arg(long, value_name = "REGEX")]
    pub family_pattern: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Policy")]
pub struct RetireArgs {
    /// Keep the newest N AMIs of each family (per account and region).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub keep: Option<usize>,

    /// Never retire AMIs younger than this (e.g. 90d).
    #[arg(long, value_name = "DURATION")]
    pub min_age: Option<String>,

    /// Keep AMIs carrying this tag, whatever its value (repeatable; `amictl:keep` always counts).
    #[arg(long = "keep-tag", value_name = "KEY")]
    pub keep_tags: Vec<String>,

    /// Refuse to apply more destructive steps than this (images disabled or deregistered,
    /// snapshots deleted; default 500).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub max_deletions: Option<usize>,

    /// Also delete orphaned AMI snapshots (from CreateImage/CopyImage; their AMI is gone).
    #[arg(long)]
    pub orphans: bool,

    /// An image shared with accounts amictl reads (`[[accounts]]`, --role-arn) that none of
    /// them uses is taken back from them (its launch permissions removed), then retired after
    /// the deprecation grace period. Without it, a shared image is kept.
    #[arg(long)]
    pub unshare_unused: bool,

    /// Collapse the stages: deregister and delete snapshots in this run.
    #[arg(long)]
    pub now: bool,

    /// AMIs that match no family: each its own family (`own-family`), or never retired (`keep`).
    #[arg(long, value_parser = ["own-family", "keep"])]
    pub unmatched: Option<String>,

    /// Grace period from deprecation to disabling.
    #[arg(long, value_name = "DURATION")]
    pub grace_deprecated: Option<String>,

    /// Grace period from disabling to deregistration.
    #[arg(long, value_name = "DURATION")]
    pub grace_disabled: Option<String>,

    /// Grace period from deregistration to deleting the snapshots.
    #[arg(long, value_name = "DURATION")]
    pub grace_deregistered: Option<String>,

    #[command(flatten)]
    pub families: FamilyArgs,

    /// Write the plan to FILE (JSON) for `amictl apply FILE`.
    #[arg(long, value_name = "FILE", help_heading = "Apply")]
    pub plan_out: Option<PathBuf>,

    /// Carry the plan out (default: only print it).
    #[arg(long, help_heading = "Apply")]
    pub apply: bool,

    #[command(flatten)]
    pub exec: ExecArgs,
}

/// How a plan is carried out.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Apply")]
pub struct ExecArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// AMIs worked on at once (1 to 256).
    #[arg(long, default_value_t = 8, value_name = "N", allow_negative_numbers = true, value_parser = concurrency)]
    pub concurrency: usize,

    /// At most this many changing calls per second (0.1 to 10000).
    #[arg(long, value_name = "PER_SECOND", allow_negative_numbers = true, value_parser = rate)]
    pub rate: Option<f64>,

    /// Apply although a sanity guard objects (incomplete inventory, 0 instances where the last
    /// run saw many, more deletions than max_deletions).
    #[arg(long)]
    pub force: bool,

    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,

    /// Judge ages and grace periods as of this time (RFC 3339) instead of now: for what-if
    /// plans and tests.
    #[arg(long, env = "AMICTL_AS_OF", value_name = "TIME")]
    pub as_of: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// A plan written by `amictl retire --plan-out FILE`.
    #[arg(value_name = "FILE", required_unless_present = "resume", conflicts_with = "resume")]
    pub plan: Option<PathBuf>,

    /// Continue the newest interrupted apply from the journal (or run --run ID).
    #[arg(long)]
    pub resume: bool,

    /// With --resume: the run to continue.
    #[arg(long = "run", value_name = "ID", requires = "resume")]
    pub run_id: Option<i64>,

    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Show the steps of this run.
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<i64>,

    /// How many runs to list.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = positive_number)]
    pub limit: usize,

    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Capture an AMI from an instance: named `{family}-{version}` (a retry of the same version
    /// finds its image), lineage tags, snapshots tagged, waits until available.
    #[command(after_help = "\
Examples:
  amictl image create --instance i-0abc1234 --family webapp                 # next patch version
  amictl image create --instance i-0abc1234 --family webapp --version 2.1.0
  amictl image create --instance i-0abc1234 --family webapp --bump minor --no-reboot")]
    Create(ImageCreateArgs),

    /// Versions newest first, with age, state, use, validation, scan and channels.
    #[command(after_help = "\
Examples:
  amictl image list
  amictl image list --family webapp --output json")]
    List(ImageListArgs),

    /// Which image each image was built from (SourceAMI), as a tree; flags images whose base
    /// family has a newer image (outdated: rebuild them).
    #[command(after_help = "\
Examples:
  amictl image lineage
  amictl image lineage --family webapp --output json")]
    Lineage(ImageListArgs),

    /// Mark an image (and optionally every image built from it) revoked: promotion and
    /// deployment refuse it, audit reports what still runs it.
    #[command(after_help = "\
Examples:
  amictl image revoke ami-0abc1234 --reason \"CVE-2026-1234 in openssl\"
  amictl image revoke ami-0abc1234 --descendants --deprecate --reason \"compromised base\"")]
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImageCreateArgs {
    /// The instance to capture.
    #[arg(long, value_name = "INSTANCE_ID")]
    pub instance: String,
    /// The image family (becomes the Application tag).
    #[arg(long)]
    pub family: String,
    /// Semantic version; default: the family's newest, bumped.
    #[arg(long)]
    pub version: Option<String>,
    /// Which part to bump when --version is not given.
    #[arg(long, value_parser = ["major", "minor", "patch"], default_value = "patch")]
    pub bump: String,
    /// Do not reboot the instance (the file system may be inconsistent in the image).
    #[arg(long)]
    pub no_reboot: bool,
    /// Give up waiting for the image after this long.
    #[arg(long, default_value = "60m", value_name = "DURATION")]
    pub timeout: String,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ImageListArgs {
    /// Only this family.
    #[arg(long)]
    pub family: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The AMI to revoke.
    #[arg(value_name = "AMI_ID")]
    pub image: String,
    /// Also revoke every image built from it (SourceAMI, transitively).
    #[arg(long)]
    pub descendants: bool,
    /// Why (recorded on the image).
    #[arg(long)]
    pub reason: String,
    /// Also deprecate the revoked images.
    #[arg(long)]
    pub deprecate: bool,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Point a channel at an image; refuses unvalidated, failed-scan or revoked images.
    #[command(after_help = "\
Examples:
  amictl channel promote --family webapp --channel prod --image ami-0abc1234
  amictl channel promote --family webapp --channel canary --image ami-0abc1234 --force")]
    Promote(PromoteArgs),
    /// Every value the channel had, with who and when.
    #[command(after_help = "\
Examples:
  amictl channel history --family webapp --channel prod")]
    History(ChannelArgs),
    /// Point the channel back at its previous image.
    #[command(after_help = "\
Examples:
  amictl channel rollback --family webapp --channel prod")]
    Rollback(RollbackArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ChannelArgs {
    /// The image family the channel belongs to (e.g. webapp).
    #[arg(long)]
    pub family: String,
    /// The channel's name (e.g. prod, canary); its parameter is /amictl/<family>/<channel>.
    #[arg(long)]
    pub channel: String,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// The image to point the channel at.
    #[arg(long, value_name = "AMI_ID")]
    pub image: String,
    /// Promote although the image is unvalidated, failed its scan or is revoked.
    #[arg(long)]
    pub force: bool,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Roll back although the previous image is revoked or gone.
    #[arg(long)]
    pub force: bool,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub scan: ScanArgs,

    /// AMI ids to report on (default: all self-owned AMIs).
    #[arg(value_name = "AMI_ID")]
    pub images: Vec<String>,

    /// Only AMIs nothing uses.
    #[arg(long, conflicts_with = "used")]
    pub unused: bool,

    /// Only AMIs something uses.
    #[arg(long)]
    pub used: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure: `audit` (collect + audit the estate), `plan` (the retirement planner
    /// alone, on --synthetic N generated AMIs, no AWS), `retire` (plan and apply `--now` on
    /// the estate: destructive, meant for the emulator).
    #[arg(value_parser = ["audit", "plan", "retire"])]
    pub what: String,

    /// Runs to make; each is timed on its own.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = positive_number)]
    pub iterations: usize,

    /// With `plan`: how many synthetic AMIs.
    #[arg(long, default_value_t = 1_000_000, allow_negative_numbers = true, value_parser = whole_number)]
    pub synthetic: usize,

    #[command(flatten)]
    pub audit: AuditArgs,
}

/// A count of 0 or more (`--keep`, `--max-deletions`).
fn whole_number(s: &str) -> Result<usize, String> {
    s.trim().parse::<usize>().map_err(|_| format!("expected a whole number, 0 or more (got {s:?})"))
}

/// A count of 1 or more.
fn positive_number(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number, 1 or more (got {s:?})")),
    }
}

fn concurrency(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to 256 (got {s:?})")),
    }
}

/// `--api-share`: a fraction of each API's budget.
pub fn api_share(s: &str) -> Result<f64, String> {
    let min = amictl_core::aws::pacing::MIN_API_SHARE;
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && (min..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a share of each API's budget from {min} to 1 (got {s:?})")),
    }
}

/// The slowest rate is one call every 10 s: below that a run of a few hundred calls would
/// take days, which is a typo, not a policy.
pub const MIN_RATE: f64 = 0.1;
pub const MAX_RATE: f64 = 10_000.0;

fn rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(format!("expected calls per second from {MIN_RATE} to {MAX_RATE} (got {s:?})")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn parse_error(args: &[&str]) -> String {
        let mut full = vec!["amictl"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap_err().to_string()
    }

    #[test]
    fn negative_counts_name_the_flag_and_what_it_accepts() {
        for args in [["retire", "--keep", "-1"], ["retire", "--keep=-1", ""]] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let e = parse_error(&args);
            assert!(e.contains("--keep") && e.contains("whole number, 0 or more"), "{e}");
        }
    }

    #[test]
    fn rates_are_bounded() {
        for bad in ["inf", "NaN", "0", "0.001", "-1", "10001"] {
            let e = parse_error(&["retire", "--rate", bad]);
            assert!(e.contains("--rate") && e.contains("calls per second"), "{bad}: {e}");
        }
        let ok = Cli::try_parse_from(["amictl", "retire", "--rate", "0.5"]).unwrap();
        match ok.command {
            Command::Retire(r) => assert_eq!(r.exec.rate, Some(0.5)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_flag_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str) {
            for a in cmd.get_arguments() {
                if a.is_positional() || a.get_id() == "help" || a.get_id() == "version" {
                    continue;
                }
                assert!(a.get_help().is_some(), "{path} --{} has no description", a.get_id());
            }
            for s in cmd.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()));
            }
        }
        walk(&Cli::command(), "amictl");
    }

    #[test]
    fn retire_help_groups_its_options() {
        let mut cli = Cli::command();
        cli.build(); // propagates the global options into the subcommands
        let help = cli.find_subcommand_mut("retire").unwrap().render_help().to_string();
        for heading in ["Policy:", "Apply:", "Global options:"] {
            assert!(help.contains(heading), "{heading} missing in:\n{help}");
        }
        let policy = help.find("Policy:").unwrap();
        let global = help.find("Global options:").unwrap();
        let keep = help.find("--keep <N>").unwrap();
        let region = help.find("--region <REGION>").unwrap();
        assert!(policy < keep && keep < global && global < region, "{help}");
    }

    #[test]
    fn top_level_description_promises_only_what_exists() {
        let about = Cli::command().get_about().map(|a| a.to_string()).unwrap_or_default();
        // Every capability it names has its command.
        for (word, command) in [
            ("audit", "audit"),
            ("retirement", "retire"),
            ("bake", "bake"),
            ("deploy", "deploy"),
            ("patch in place", "patch"),
            ("emergency", "emergency"),
            ("metrics", "metrics"),
            ("HTML report", "report"),
        ] {
            assert!(about.contains(word), "{about}");
            assert!(Cli::command().find_subcommand(command).is_some(), "{word}: no `{command}` command");
        }
    }
}

/// How bake, validate and scan launch their throw-away instance (also `[instances]`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Throw-away instance")]
pub struct InstanceArgs {
    /// Instance type (default t3.micro); refused before launch if the region lacks it.
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// The subnet to launch in (default: the default VPC's).
    #[arg(long, value_name = "SUBNET_ID")]
    pub subnet: Option<String>,
    /// Repeatable.
    #[arg(long = "security-group", value_name = "SG_ID")]
    pub security_groups: Vec<String>,
    /// Name or ARN of an instance profile that lets the SSM agent register.
    #[arg(long, value_name = "NAME|ARN")]
    pub instance_profile: Option<String>,
    /// How long the instance may take to run and pass status checks (default 10m).
    #[arg(long, value_name = "DURATION")]
    pub boot_timeout: Option<String>,
    /// How long its SSM agent may take to register (default 10m).
    #[arg(long, value_name = "DURATION")]
    pub ssm_timeout: Option<String>,
    /// How long one SSM command may run (default 60m).
    #[arg(long, value_name = "DURATION")]
    pub command_timeout: Option<String>,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatchPresetArg {
    SecurityUpdates,
    AllUpdates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScannerArg {
    Trivy,
    Grype,
    Lynis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    Auto,
    Trivy,
    Grype,
    Lynis,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("base_source").required(true).args(["base", "base_family", "base_filter"])))]
pub struct BakeArgs {
    /// The family of the new image (its Application tag and name).
    #[arg(long)]
    pub family: String,
    /// Bake from this AMI.
    #[arg(long, value_name = "AMI_ID")]
    pub base: Option<String>,
    /// Bake from the newest validated image of this family.
    #[arg(long, value_name = "FAMILY")]
    pub base_family: Option<String>,
    /// Bake from the most recent image matching `name=PATTERN[,owner=OWNER...]` (owner: self,
    /// amazon, an account id).
    #[arg(long, value_name = "name=…,owner=…")]
    pub base_filter: Option<String>,
    /// Semantic version; default: the family's newest, bumped.
    #[arg(long)]
    pub version: Option<String>,
    /// Which part of the newest version to bump when --version is not given.
    #[arg(long, value_parser = ["major", "minor", "patch"], default_value = "patch")]
    pub bump: String,
    /// Patch with a preset (apt, dnf/yum or zypper, picked on the instance); default
    /// security-updates, or [bake] patch_preset.
    #[arg(long, value_enum, conflicts_with_all = ["patch_command", "patch_document"])]
    pub patch_preset: Option<PatchPresetArg>,
    /// Patch with these shell commands instead (repeatable).
    #[arg(long, value_name = "COMMAND", conflicts_with = "patch_document")]
    pub patch_command: Vec<String>,
    /// Patch with this SSM document instead (e.g. AWS-RunPatchBaseline).
    #[arg(long, value_name = "NAME")]
    pub patch_document: Option<String>,
    /// A parameter of --patch-document, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", requires = "patch_document")]
    pub patch_parameter: Vec<String>,
    /// A CVE this bake fixes, recorded in the CVE tag (repeatable).
    #[arg(long, value_name = "CVE_ID")]
    pub cve: Vec<String>,
    /// Copy the image to this region too (repeatable).
    #[arg(long, value_name = "REGION")]
    pub copy_to: Vec<String>,
    /// Share the image (and its copies) with this account (repeatable).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub share_with: Vec<String>,
    /// How long the new image may take to become available (default 60m).
    #[arg(long, value_name = "DURATION")]
    pub image_timeout: Option<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The AMI to validate.
    #[arg(value_name = "AMI_ID")]
    pub image: String,
    /// A shell command run on the validator through SSM; must exit 0 (repeatable; replaces
    /// [validate] commands).
    #[arg(long, value_name = "COMMAND")]
    pub check_command: Vec<String>,
    /// Skip EC2's system and instance status checks.
    #[arg(long)]
    pub no_status_checks: bool,
    /// GET this URL from where amictl runs; may use {private_ip}, {public_ip}, {instance_id}.
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// The status the URL must answer (default 200).
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u16).range(100..600))]
    pub http_status: Option<u16>,
    /// A string the body must contain.
    #[arg(long, value_name = "TEXT")]
    pub http_body: Option<String>,
    /// Timeout of one request (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub http_timeout: Option<String>,
    /// Attempts after the first, 2 s apart (default 5).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub http_retries: Option<usize>,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ScanImageArgs {
    /// The AMI to scan.
    #[arg(value_name = "AMI_ID")]
    pub image: String,
    /// Print the last report the journal keeps for the image; scan nothing.
    #[arg(long)]
    pub show: bool,
    /// The scanner preset (default trivy, or [scan] scanner).
    #[arg(long, value_enum, conflicts_with = "scanner_command")]
    pub scanner: Option<ScannerArg>,
    /// Run this command instead; it must print a trivy or grype JSON report or a lynis report.
    #[arg(long, value_name = "COMMAND")]
    pub scanner_command: Option<String>,
    /// The format --scanner-command prints (default auto).
    #[arg(long, value_enum)]
    pub report_format: Option<ReportFormatArg>,
    /// The lowest severity that fails the scan (default high, or [scan] fail_on).
    #[arg(long, value_name = "SEVERITY", value_parser = ["info", "low", "medium", "high", "critical"])]
    pub fail_on: Option<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RebootArg {
    IfNeeded,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OperationArg {
    Scan,
    Install,
}

#[derive(Debug, Clone, Args)]
pub struct PatchArgs {
    /// Instances tagged KEY=VALUE (or KEY=V1,V2); repeatable, all must match.
    #[arg(long = "target", value_name = "KEY=VALUE")]
    pub targets: Vec<String>,
    /// This instance (repeatable).
    #[arg(long = "instance", value_name = "INSTANCE_ID")]
    pub instances: Vec<String>,
    /// The in-service instances of this Auto Scaling group (repeatable).
    #[arg(long = "asg", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Patch with a preset (apt, dnf/yum or zypper, picked on each instance; default
    /// security-updates).
    #[arg(long, value_enum, conflicts_with_all = ["command", "baseline"])]
    pub preset: Option<PatchPresetArg>,
    /// Run these shell commands instead (repeatable).
    #[arg(long, value_name = "COMMAND", conflicts_with = "baseline")]
    pub command: Vec<String>,
    /// Use the AWS-RunPatchBaseline document (Patch Manager's baselines); implied by --operation
    /// and --reboot.
    #[arg(long)]
    pub baseline: bool,
    /// AWS-RunPatchBaseline's operation: scan (what is missing, like --scan-only) or install
    /// (default).
    #[arg(long, value_enum, conflicts_with_all = ["preset", "command"])]
    pub operation: Option<OperationArg>,
    /// AWS-RunPatchBaseline's reboot option: when a patch needs it (default), or never.
    #[arg(long, value_enum, conflicts_with_all = ["preset", "command"])]
    pub reboot: Option<RebootArg>,
    /// Report what each instance is missing; change nothing.
    #[arg(long)]
    pub scan_only: bool,
    /// How many instances SSM runs the command on at once: N or N% (default 10%, or [patch]).
    #[arg(long, value_name = "N|N%")]
    pub max_concurrency: Option<String>,
    /// How many may fail before no further instance is sent the command: N or N% (default 5%).
    #[arg(long, value_name = "N|N%")]
    pub max_errors: Option<String>,
    /// The share of each Auto Scaling group's in-service instances that stays out of patching
    /// (default 90).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy: Option<u8>,
    /// How long the command may run on one instance (default 60m).
    #[arg(long, value_name = "DURATION")]
    pub command_timeout: Option<String>,
    /// Print the batches; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before patching.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Continue the newest interrupted patch run (or run RUN): reads the invocations it started,
    /// sends only the batches it had not sent.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "0",
          conflicts_with_all = ["targets", "instances", "groups", "dry_run"])]
    pub resume: Option<i64>,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    Rolling,
    Batched,
    BlueGreen,
    Canary,
}

/// How a group is rolled (deploy and rollback).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rollout")]
pub struct RolloutArgs {
    /// rolling (instance refresh; deploy's default), batched (the group grows by a batch, then old
    /// instances go), blue-green (a new group, traffic switched at the listeners) or canary
    /// (blue-green in small weighted steps). A rollback goes back the way its deployment came
    /// unless told otherwise.
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Blue-green: the green share of traffic after each step, e.g. 10,50,100 (default: 100 at
    /// once; canary: 5,25,100).
    #[arg(long, visible_alias = "canary-steps", value_name = "P,P", value_delimiter = ',',
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub shift: Vec<u8>,
    /// Blue-green and canary: how long each step is watched before its health gate.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub shift_pause: String,
    /// Blue-green and canary: how long blue stays at full size after the switch (for an instant
    /// way back) before it is scaled in.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub keep_blue: String,
    /// Blue-green and canary: the listener expected to carry the group's traffic. Every listener
    /// and rule forwarding to the group's target groups moves to green; this refuses the deploy
    /// when another one does too.
    #[arg(long, value_name = "ARN")]
    pub listener: Option<String>,
    /// Blue-green and canary: green's target group, for a group in one target group (default: a
    /// twin of each of blue's, made like it).
    #[arg(long, value_name = "ARN")]
    pub green_target_group: Option<String>,
    /// The share of the group that stays in service (default 90).
    #[arg(long, value_name = "PERCENT", default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy: u8,
    /// Rolling: how far above its desired capacity the group may grow while replacing (100–200).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u16).range(100..=200))]
    pub max_healthy: Option<u16>,
    /// Rolling: how long a new instance warms up before it counts as healthy.
    #[arg(long, value_name = "DURATION")]
    pub warmup: Option<String>,
    /// Rolling: pause at these percentages replaced (e.g. 20,50; 100 is added, as AWS ends a
    /// refresh at its last checkpoint); needs --checkpoint-delay.
    #[arg(long, value_name = "P,P", value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=100))]
    pub checkpoints: Vec<u8>,
    /// Rolling: how long each checkpoint pauses.
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_delay: Option<String>,
    /// Rolling: leave instances that already run the image.
    #[arg(long)]
    pub skip_matching: bool,
    /// Rolling: how long to watch after the last replacement before calling it done.
    #[arg(long, value_name = "DURATION")]
    pub bake_time: Option<String>,
    /// Rolling: a CloudWatch alarm that fails the refresh when it goes off (repeatable).
    #[arg(long = "alarm", value_name = "NAME")]
    pub alarms: Vec<String>,
    /// Batched: instances replaced at a time, N or N% (at least 1). The group grows by a batch,
    /// the new instances serve, then as many old ones go.
    #[arg(long, value_name = "N|N%", default_value = "25%")]
    pub batch_size: String,
    /// Batched: replace instances in place (never below --min-healthy) instead of growing the
    /// group by a batch first; a group at its max size is replaced in place anyway.
    #[arg(long)]
    pub no_surge: bool,
    /// How long each health gate waits for new instances to serve (in service, healthy to Auto
    /// Scaling and `healthy` in every target group that carries traffic).
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub health_timeout: String,
    /// Give up waiting after this long (the refresh goes on in AWS).
    #[arg(long, value_name = "DURATION", default_value = "60m")]
    pub timeout: String,
    /// The longest pause between two looks at the refresh or the group.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub poll_interval: String,
    /// Do not ask before changing the group.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("image_source").args(["image", "channel"])))]
pub struct DeployArgs {
    /// The Auto Scaling group.
    #[arg(long = "asg", value_name = "NAME", required_unless_present = "resume")]
    pub group: Option<String>,
    /// Continue the newest interrupted deployment (or run RUN) from the journal: the version it
    /// made and the refresh it started are followed, not made again.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "0", conflicts_with_all = ["group", "image", "channel"])]
    pub resume: Option<i64>,
    /// Deploy this AMI.
    #[arg(long, value_name = "AMI_ID")]
    pub image: Option<String>,
    /// Deploy what this channel points at, FAMILY/CHANNEL.
    #[arg(long, value_name = "FAMILY/CHANNEL")]
    pub channel: Option<String>,
    /// Deploy an image that has not passed validation or scan (never a revoked one).
    #[arg(long)]
    pub force: bool,
    /// Deploy an image of another family than the one the group runs.
    #[arg(long)]
    pub allow_family_change: bool,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GroupRollbackArgs {
    /// The Auto Scaling group.
    #[arg(long = "asg", value_name = "NAME")]
    pub group: String,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Only this group.
    #[arg(long = "asg", value_name = "NAME")]
    pub group: Option<String>,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct EmergencyArgs {
    /// The vulnerability (e.g. CVE-2026-1234).
    #[arg(long, value_name = "CVE", required_unless_present = "resume")]
    pub cve: Option<String>,
    /// The vulnerable package: images whose scan lists it below --fixed-version are affected.
    #[arg(long, value_name = "NAME", requires = "fixed_version")]
    pub package: Option<String>,
    /// The first version of --package that is not vulnerable.
    #[arg(long, value_name = "VERSION", requires = "package")]
    pub fixed_version: Option<String>,
    /// A family to patch whatever the scans say (repeatable).
    #[arg(long = "family", value_name = "FAMILY")]
    pub families: Vec<String>,
    /// A channel to promote the patched image to (repeatable; default: the family's channels
    /// that point at a vulnerable image).
    #[arg(long = "channel", value_name = "NAME")]
    pub channels: Vec<String>,
    /// Also revoke the vulnerable images (the catalog's revocation, besides deprecation).
    #[arg(long)]
    pub revoke: bool,
    /// Print the blast radius and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the newest interrupted emergency run (or run RUN).
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "0", conflicts_with_all = ["cve", "families", "package"])]
    pub resume: Option<i64>,
    /// Do not ask.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Write the HTML report of the run here.
    #[arg(long, value_name = "FILE")]
    pub report_html: Option<PathBuf>,
    /// The SNS topic told of the start, the end and a failure (default `[alerts] topic_arn`).
    #[arg(long, value_name = "ARN")]
    pub topic_arn: Option<String>,
    /// How groups are rolled: rolling (default), batched, blue-green, canary.
    #[arg(long, value_enum, default_value_t = StrategyArg::Rolling)]
    pub strategy: StrategyArg,
    /// The share of each group that stays in service.
    #[arg(long, value_name = "PERCENT", default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy: u8,
    /// Batched: instances replaced at a time.
    #[arg(long, value_name = "N|N%", default_value = "25%")]
    pub batch_size: String,
    /// How long each group's rollout may take.
    #[arg(long, value_name = "DURATION", default_value = "60m")]
    pub deploy_timeout: String,
    /// The longest pause between two looks at a rollout.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub poll_interval: String,
    /// A CloudWatch alarm that stops a rollout (repeatable).
    #[arg(long = "alarm", value_name = "NAME")]
    pub alarms: Vec<String>,
    /// A validation command run through SSM (repeatable; default `[validate] commands`).
    #[arg(long, value_name = "COMMAND")]
    pub check_command: Vec<String>,
    /// The scanner command (default `[scan]`).
    #[arg(long, value_name = "COMMAND")]
    pub scanner_command: Option<String>,
    #[command(flatten)]
    pub instance: InstanceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Write the page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// The emergency run whose timeline the page shows (default: the newest).
    #[arg(long, value_name = "RUN")]
    pub run: Option<i64>,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
    #[command(flatten)]
    pub scan: ScanArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MetricsCommand {
    /// Put the estate's metrics to CloudWatch (run it from cron, e.g. hourly).
    #[command(after_help = "\
Examples:
  amictl metrics publish
  amictl metrics publish --namespace amictl/prod --dry-run --output json   # the values only")]
    Publish(MetricsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// The CloudWatch namespace (default `[metrics] namespace`, amictl).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Print the values; put nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The journal database (default: ~/.local/share/amictl/journal.db).
    #[arg(long, env = "AMICTL_JOURNAL", value_name = "FILE")]
    pub journal: Option<PathBuf>,
    #[command(flatten)]
    pub scan: ScanArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// The dashboard's name (default `[metrics] dashboard`, amictl).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The namespace the metrics are in (default `[metrics] namespace`, amictl).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub scan: ScanArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IamPolicyArgs {
    /// The commands the policy is for (repeatable; default all).
    #[arg(long = "for", value_name = "COMMAND", value_parser = clap::builder::PossibleValuesParser::new(amictl_core::iam::command_names()))]
    pub commands: Vec<String>,
    /// Print the trust policy of the read role instead: who may assume it (an account id or
    /// an IAM ARN).
    #[arg(long, value_name = "ACCOUNT|ARN", conflicts_with = "commands")]
    pub trust: Option<String>,
    /// The external id the trust policy requires.
    #[arg(long, value_name = "ID", requires = "trust")]
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum JournalCommand {
    /// Copy every run, step and piece of evidence of one journal into another, which must hold
    /// no run yet; run ids are kept. Locks are not copied: they belong to live processes.
    #[command(after_help = "\
Examples:
  amictl journal migrate ~/.local/share/amictl/journal.db dynamodb://amictl-journal
  amictl journal migrate dynamodb://amictl-journal ./journal-backup.db")]
    Migrate {
        /// The journal to copy: a SQLite file or dynamodb://TABLE.
        #[arg(value_name = "FROM")]
        from: PathBuf,
        /// Where to: a SQLite file (created) or dynamodb://TABLE (created if missing).
        #[arg(value_name = "TO")]
        to: PathBuf,
    },
}

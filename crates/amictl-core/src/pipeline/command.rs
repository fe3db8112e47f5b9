//! The one SSM command runner every pipeline uses: send a command to instances, report the
//! ones SSM does not manage (never wait for them), and follow **every** invocation to its end,
//! reading ListCommandInvocations (with details, every page) with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aws::{CommandRequest, CommandTargets, Invocation, Machines};
use crate::engine::{poll, Look, Progress, SLOW_POLL};
use crate::error::Error;

/// SendCommand takes at most 50 instance ids: more are sent as several commands.
const INSTANCE_IDS_PER_COMMAND: usize = 50;

/// `AWS-RunShellScript` with `commands` and its execution timeout.
pub fn shell(commands: Vec<String>, timeout: Duration) -> (String, BTreeMap<String, Vec<String>>) {
    let parameters = BTreeMap::from([
        ("commands".to_string(), commands),
        ("executionTimeout".to_string(), vec![timeout.as_secs().max(1).to_string()]),
    ]);
    ("AWS-RunShellScript".into(), parameters)
}

/// A command for one pipeline instance (builder, validator, scanner): one target, no error
/// allowed, ten minutes to be delivered.
pub fn on_instance(
    instance_id: &str,
    (document, parameters): (String, BTreeMap<String, Vec<String>>),
    comment: String,
) -> CommandRequest {
    CommandRequest {
        targets: CommandTargets::Instances(vec![instance_id.to_string()]),
        document,
        parameters,
        max_concurrency: "1".into(),
        max_errors: "0".into(),
        delivery_timeout: Duration::from_secs(600),
        comment,
    }
}

/// What a command did on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub command_ids: Vec<String>,
    pub invocations: Vec<Invocation>,
    /// Targeted instances SSM does not manage (no agent, no instance profile, offline).
    pub not_managed: Vec<String>,
}

impl CommandOutcome {
    pub fn failed(&self) -> Vec<&Invocation> {
        self.invocations.iter().filter(|i| !i.succeeded()).collect()
    }

    /// Every targeted instance ran the command successfully.
    pub fn all_succeeded(&self) -> bool {
        self.not_managed.is_empty() && !self.invocations.is_empty() && self.failed().is_empty()
    }

    /// One line per invocation that did not succeed, for errors.
    pub fn failure_summary(&self) -> String {
        let mut parts: Vec<String> = self.failed().iter().map(|i| describe(i)).collect();
        parts.extend(self.not_managed.iter().map(|i| format!("{i}: not managed by Systems Manager")));
        parts.join("; ")
    }
}

/// `i-…: Failed (exit 3): last line of output`.
pub fn describe(i: &Invocation) -> String {
    let code = i.exit_code.map(|c| format!(" (exit {c})")).unwrap_or_default();
    let detail = if i.status_details.is_empty() || i.status_details == i.status {
        String::new()
    } else {
        format!(", {}", i.status_details)
    };
    let tail =
        i.output.lines().rev().find(|l| !l.trim().is_empty()).map(|l| format!(": {}", l.trim())).unwrap_or_default();
    format!("{}: {}{detail}{code}{tail}", i.instance_id, i.status)
}

/// Runs `request` and follows it until every invocation has ended or `timeout` (the
/// command's execution timeout plus delivery) has passed; invocations still running then are
/// reported `TimedOut` with details `amictl stopped waiting`.
pub async fn run<M: Machines>(
    m: &M,
    request: &CommandRequest,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<CommandOutcome, Error> {
    let (targets, not_managed) = match &request.targets {
        CommandTargets::Instances(ids) => {
            let managed = m.managed(ids).await?;
            let (yes, no): (Vec<String>, Vec<String>) = ids.iter().cloned().partition(|i| managed.contains(i));
            (yes.chunks(INSTANCE_IDS_PER_COMMAND).map(|c| CommandTargets::Instances(c.to_vec())).collect(), no)
        }
        tags @ CommandTargets::Tags(_) => (vec![tags.clone()], vec![]),
    };
    let mut command_ids = Vec::new();
    for t in targets {
        let r = CommandRequest { targets: t, ..request.clone() };
        command_ids.push(m.send_command(&r).await?);
    }
    let expected = match &request.targets {
        CommandTargets::Instances(ids) => Some(ids.len() - not_managed.len()),
        CommandTargets::Tags(_) => None,
    };
    let mut invocations = watch(m, &command_ids, expected, timeout, progress).await?;
    // A targeted instance SSM reported nothing for did not succeed.
    if let CommandTargets::Instances(ids) = &request.targets {
        let seen: std::collections::BTreeSet<String> = invocations.iter().map(|i| i.instance_id.clone()).collect();
        invocations.extend(ids.iter().filter(|i| !seen.contains(*i) && !not_managed.contains(i)).map(|i| Invocation {
            instance_id: i.clone(),
            status: "Failed".into(),
            status_details: "no invocation reported by SSM".into(),
            exit_code: None,
            output: String::new(),
        }));
    }
    Ok(CommandOutcome { command_ids, invocations, not_managed })
}

/// Follows commands already sent (a resumed run reads the commands it started instead of
/// sending them again) until every invocation has ended or `timeout` passes.
pub async fn watch<M: Machines>(
    m: &M,
    command_ids: &[String],
    expected: Option<usize>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Vec<Invocation>, Error> {
    let mut polls = 0;
    let look = async || {
        let mut all = Vec::new();
        for id in command_ids {
            all.extend(m.invocations(id).await?);
        }
        polls += 1;
        let done = all.iter().filter(|i| i.is_done()).count();
        // Tag targets are resolved by SSM over a few seconds: an empty list is final only later.
        let complete = match expected {
            Some(n) => all.len() >= n,
            None => !all.is_empty() || polls >= 5,
        };
        if complete && done == all.len() {
            return Ok(Look::Done(all));
        }
        let note = format!("{done} of {} invocations done", expected.unwrap_or(all.len()).max(all.len()));
        Ok(Look::NotYet(all, note))
    };
    Ok(poll(timeout, SLOW_POLL, progress, look).await?.unwrap_or_else(|all| all.into_iter().map(gave_up).collect()))
}

fn gave_up(i: Invocation) -> Invocation {
    if i.is_done() {
        return i;
    }
    Invocation { status: "TimedOut".into(), status_details: "amictl stopped waiting".into(), ..i }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(id: &str, status: &str, code: Option<i64>, output: &str) -> Invocation {
        Invocation {
            instance_id: id.into(),
            status: status.into(),
            status_details: status.into(),
            exit_code: code,
            output: output.into(),
        }
    }

    #[test]
    fn a_failure_is_described_with_its_exit_code_and_last_output_line() {
        let i = inv("i-1", "Failed", Some(3), "Loaded plugins\nE: broken packages\n\n");
        assert_eq!(describe(&i), "i-1: Failed (exit 3): E: broken packages");
    }

    #[test]
    fn an_outcome_with_an_unmanaged_target_has_not_all_succeeded() {
        let o = CommandOutcome {
            command_ids: vec!["c".into()],
            invocations: vec![inv("i-1", "Success", Some(0), "")],
            not_managed: vec!["i-2".into()],
        };
        assert!(!o.all_succeeded());
        assert!(o.failure_summary().contains("i-2: not managed"));
        let none = CommandOutcome { command_ids: vec![], invocations: vec![], not_managed: vec![] };
        assert!(!none.all_succeeded(), "no invocation at all is not a success");
    }

    #[test]
    fn invocations_still_running_at_the_deadline_are_reported_timed_out() {
        let i = gave_up(inv("i-1", "InProgress", None, ""));
        assert_eq!((i.status.as_str(), i.status_details.as_str()), ("TimedOut", "amictl stopped waiting"));
        assert_eq!(gave_up(inv("i-2", "Success", Some(0), "")).status, "Success");
    }
}

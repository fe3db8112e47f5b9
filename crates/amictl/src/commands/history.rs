use amictl_core::config::Config;
use amictl_core::Error;

use super::execute;
use crate::cli::{GlobalArgs, HistoryArgs, Output};
use crate::exit;
use crate::render;

pub fn run(g: &GlobalArgs, c: Config, a: &HistoryArgs) -> Result<u8, Error> {
    let journal = execute::open_journal(&c, a.journal.as_deref())?;
    match a.run_id {
        Some(id) => {
            let mut steps: Vec<_> = journal.steps(id)?.into_values().collect();
            if steps.is_empty() && journal.run_plan(id)?.is_none() {
                return Err(Error::NotFound {
                    what: format!("run {id}"),
                    looked_in: journal.path().display().to_string(),
                });
            }
            steps.sort_by(|x, y| x.started_at.cmp(&y.started_at).then_with(|| x.action_id.cmp(&y.action_id)));
            // What the run did on each instance (patch): kept in the journal with the steps.
            let instances: Vec<serde_json::Value> = journal
                .instance_results(id)?
                .into_iter()
                .map(|(_, r)| serde_json::from_str(&r).unwrap_or(serde_json::Value::Null))
                .collect();
            match g.output {
                Output::Json => render::json(
                    "amictl.run/v1",
                    &serde_json::json!({ "run_id": id, "steps": steps, "instances": instances }),
                )?,
                Output::Table => {
                    render::print(&render::steps_table(&steps, render::width()));
                    if !instances.is_empty() {
                        let mut by_status = std::collections::BTreeMap::<String, usize>::new();
                        for i in &instances {
                            *by_status.entry(i["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
                        }
                        let counts: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
                        crate::out::outln!(
                            "{} instances: {} (each one's result: --output json)",
                            instances.len(),
                            counts.join(", ")
                        );
                    }
                }
            }
        }
        None => {
            let runs = journal.runs(a.limit)?;
            match g.output {
                Output::Json => render::json("amictl.history/v1", &serde_json::json!({ "runs": runs }))?,
                Output::Table => render::print(&render::runs_table(&runs, journal.path(), render::width())),
            }
        }
    }
    Ok(exit::OK)
}

/// `amictl journal migrate FROM TO`.
pub fn migrate(c: &Config, from: &std::path::Path, to: &std::path::Path) -> Result<u8, Error> {
    if from == to {
        return Err(Error::Usage(format!("journal migrate: {} is both the source and the target", from.display())));
    }
    let team = |p: &std::path::Path| p.to_str().is_some_and(|p| p.starts_with(amictl_core::journal::DYNAMODB_SCHEME));
    if !team(from) && !from.exists() {
        return Err(Error::NotFound {
            what: format!("the journal {}", from.display()),
            looked_in: "the file system".into(),
        });
    }
    let source = execute::open_journal(c, Some(from))?;
    let dump = source.dump()?;
    let mut target = execute::open_journal(c, Some(to))?;
    target.load(&dump)?;
    crate::out::eprint_line(&format!(
        "copied {} run(s), {} step(s), {} scan report(s), {} retired-snapshot record(s) from {} to {}",
        dump.runs.len(),
        dump.steps.len(),
        dump.scans.len(),
        dump.retired_snapshots.len(),
        from.display(),
        to.display()
    ));
    Ok(crate::exit::OK)
}

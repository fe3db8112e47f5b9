use amictl_core::config::{Config, SharingScope};
use amictl_core::plan::{self, Plan};
use amictl_core::Error;

use super::execute;
use crate::cli::{ApplyArgs, GlobalArgs, Output, ScanArgs};
use crate::render;

fn read_plan(text: &str, origin: &str) -> Result<Plan, Error> {
    let plan: Plan =
        serde_json::from_str(text).map_err(|e| Error::Usage(format!("{origin} is not an amictl plan: {e}")))?;
    if plan.schema != plan::SCHEMA {
        return Err(Error::Usage(format!(
            "{origin} has schema {:?}; this amictl reads {:?}",
            plan.schema,
            plan::SCHEMA
        )));
    }
    Ok(plan)
}

/// A run whose process is alive is not resumed: two processes would act on one plan.
fn still_running(journal: &amictl_core::journal::Journal, id: i64) -> Result<Error, Error> {
    let (pid, host) = journal.live_holder(id)?.unwrap_or_default();
    Ok(Error::Usage(format!(
        "run {id} is still being applied by process {pid} on {host}: wait for it to finish, or stop it (Ctrl-C) and resume"
    )))
}

pub async fn run(g: &GlobalArgs, mut c: Config, a: &ApplyArgs) -> Result<u8, Error> {
    execute::refuse_as_of(&a.exec)?;
    let (saved, resume) = if a.resume {
        let journal = execute::open_journal(&c, a.exec.journal.as_deref())?;
        let (id, text) = match a.run_id {
            Some(id) if journal.live_holder(id)?.is_some() => return Err(still_running(&journal, id)?),
            Some(id) => match journal.run_plan(id)? {
                Some((status, text)) if status == "running" || status == "interrupted" => (id, text),
                Some((status, _)) => {
                    return Err(Error::Usage(format!("run {id} is {status}, not interrupted: nothing to resume")))
                }
                None => {
                    return Err(Error::NotFound {
                        what: format!("run {id}"),
                        looked_in: journal.path().display().to_string(),
                    })
                }
            },
            None => journal.unfinished_run()?.ok_or_else(|| Error::NotFound {
                what: "an interrupted apply".into(),
                looked_in: journal.path().display().to_string(),
            })?,
        };
        if journal.live_holder(id)?.is_some() {
            return Err(still_running(&journal, id)?);
        }
        (read_plan(&text, &format!("run {id} in the journal"))?, Some(id))
    } else {
        let path = a.plan.as_ref().expect("clap requires a plan unless --resume");
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("cannot read the plan {}: {e}", path.display())))?;
        (read_plan(&text, &path.display().to_string())?, None)
    };

    // The plan's regions unless the command line names others.
    if g.regions.is_empty() {
        let mut regions: Vec<String> = saved.scopes.iter().map(|s| s.region.clone()).collect();
        regions.dedup();
        regions.sort();
        regions.dedup();
        c.regions = regions;
    }
    let (conn, mut inv) = super::load_estate(&c, &ScanArgs { check_sharing: None }, SharingScope::Deferred).await?;
    execute::add_journal_evidence(&c, &a.exec, &mut inv)?;
    let reached: Vec<String> = conn.clouds.iter().map(|cl| amictl_core::aws::Cloud::scope(cl).to_string()).collect();
    for s in &saved.scopes {
        let scope = format!("{}/{}", s.account, s.region);
        if !reached.contains(&scope) {
            return Err(Error::Usage(format!(
                "the plan covers {scope}, which this invocation does not reach (it reaches {}): pass the same --region and --role-arn as when planning",
                reached.join(", ")
            )));
        }
    }

    if g.output == Output::Table {
        render::print(&render::plan_table(&saved, render::width()));
    }
    let (executed, report) = execute::run_plan(&c, &a.exec, &saved, &conn, &inv, resume, "apply").await?;
    execute::finish(g, Some(&executed), report)
}

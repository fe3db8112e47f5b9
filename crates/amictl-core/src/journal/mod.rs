//! The journal: an embedded SQLite database recording every mutating run, each step before
//! and after its call, so an interrupted run can be resumed without repeating or skipping work.
//! `dynamodb://TABLE` instead of a file keeps the same records in DynamoDB ([`dynamo`]): team
//! mode, where several machines share runs and the run lock.

pub mod dynamo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::Error;

/// A journal named `dynamodb://TABLE` lives in that DynamoDB table.
pub const DYNAMODB_SCHEME: &str = "dynamodb://";

/// The default journal path: `$XDG_DATA_HOME/amictl/journal.db` or `~/.local/share/amictl/journal.db`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("amictl").join("journal.db")
}

pub struct Journal {
    /// The SQLite database; with a team journal, an empty in-memory one nothing reads.
    conn: Connection,
    /// Set for `dynamodb://TABLE`: every record goes there.
    dynamo: Option<dynamo::Dynamo>,
    path: PathBuf,
    /// The run this journal's new runs belong to ([`Journal::within`]).
    parent: Option<i64>,
}

/// A step's state. `Started` with no end means the process died during the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Started,
    Done,
    /// The re-check before the call found a change; nothing was done.
    Aborted,
    Failed,
    /// A step it depends on did not succeed.
    Skipped,
}

impl StepStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Done => "done",
            StepStatus::Aborted => "aborted",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
    pub(crate) fn parse(s: &str) -> StepStatus {
        match s {
            "done" => StepStatus::Done,
            "aborted" => StepStatus::Aborted,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            _ => StepStatus::Started,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub actions: i64,
    pub done: i64,
    pub failed: i64,
    pub aborted: i64,
    /// The process that ran it (absent in journals from before amictl recorded it).
    pub pid: Option<i64>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    pub action_id: String,
    pub status: StepStatus,
    pub detail: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Other(format!("journal {}: {e}", path.display()))
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`: a SQLite file, or `dynamodb://TABLE`.
    pub fn open(path: &Path) -> Result<Journal, Error> {
        if let Some(table) = path.to_str().and_then(|p| p.strip_prefix(DYNAMODB_SCHEME)) {
            let conn = Connection::open_in_memory().map_err(db_err(path))?;
            let dynamo = Some(dynamo::Dynamo::open(table)?);
            return Ok(Journal { conn, dynamo, path: path.to_path_buf(), parent: None });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Other(format!("journal {}: cannot create {}: {e}", path.display(), dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db_err(path))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 10000;
             CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 command TEXT NOT NULL,
                 started_at TEXT NOT NULL,
                 finished_at TEXT,
                 status TEXT NOT NULL,
                 plan TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS steps (
                 run_id INTEGER NOT NULL REFERENCES runs(id),
                 action_id TEXT NOT NULL,
                 status TEXT NOT NULL,
                 detail TEXT,
                 started_at TEXT NOT NULL,
                 finished_at TEXT,
                 PRIMARY KEY (run_id, action_id)
             );
             CREATE TABLE IF NOT EXISTS locks (
                 account TEXT NOT NULL,
                 region TEXT NOT NULL,
                 run_id INTEGER NOT NULL,
                 command TEXT NOT NULL,
                 host TEXT NOT NULL,
                 pid INTEGER NOT NULL,
                 since TEXT NOT NULL,
                 lease_until TEXT NOT NULL,
                 PRIMARY KEY (account, region)
             );
             CREATE TABLE IF NOT EXISTS retired_snapshots (
                 account TEXT NOT NULL,
                 region TEXT NOT NULL,
                 snapshot_id TEXT NOT NULL,
                 image_id TEXT NOT NULL,
                 run_id INTEGER NOT NULL,
                 recorded_at TEXT NOT NULL,
                 PRIMARY KEY (account, region, snapshot_id)
             );
             CREATE TABLE IF NOT EXISTS instance_results (
                 run_id INTEGER NOT NULL REFERENCES runs(id),
                 instance_id TEXT NOT NULL,
                 result TEXT NOT NULL,
                 PRIMARY KEY (run_id, instance_id)
             );
             CREATE TABLE IF NOT EXISTS scan_reports (
                 image_id TEXT NOT NULL,
                 run_id INTEGER NOT NULL,
                 scanned_at TEXT NOT NULL,
                 verdict TEXT NOT NULL,
                 report TEXT NOT NULL,
                 PRIMARY KEY (image_id, run_id)
             );
             CREATE TABLE IF NOT EXISTS sharing_readings (
                 account TEXT NOT NULL,
                 region TEXT NOT NULL,
                 image_id TEXT NOT NULL,
                 permissions TEXT NOT NULL,
                 read_at TEXT NOT NULL,
                 PRIMARY KEY (account, region, image_id)
             );
             CREATE TABLE IF NOT EXISTS scope_stats (
                 run_id INTEGER NOT NULL REFERENCES runs(id),
                 account TEXT NOT NULL,
                 region TEXT NOT NULL,
                 live_instances INTEGER NOT NULL,
                 images INTEGER NOT NULL
             );",
        )
        .map_err(db_err(path))?;
        add_column(&conn, path, "runs", "pid", "INTEGER")?;
        add_column(&conn, path, "runs", "host", "TEXT")?;
        add_column(&conn, path, "runs", "parent", "INTEGER")?;
        Ok(Journal { conn, dynamo: None, path: path.to_path_buf(), parent: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This journal's runs are part of run `parent` (an emergency run's bakes and
    /// deployments): they are recorded as its children and work under its locks.
    pub fn within(mut self, parent: i64) -> Journal {
        self.parent = Some(parent);
        self
    }

    /// `(id, command, status, plan)` of every run started within `parent`, oldest first; a
    /// `running` run whose process is gone reads `interrupted`.
    pub fn children(&self, parent: i64) -> Result<Vec<(i64, String, String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.children(parent);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id, command, status, plan, pid, host FROM runs WHERE parent = ?1 ORDER BY id")
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![parent], |r| {
                let status: String = r.get(2)?;
                let status = effective_status(&status, r.get(4)?, r.get::<_, Option<String>>(5)?.as_deref());
                Ok((r.get(0)?, r.get(1)?, status, r.get(3)?))
            })
            .map_err(db_err(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(db_err(&self.path))
    }

    fn now() -> String {
        crate::time::rfc3339(Utc::now())
    }

    /// Records a new run with the plan it executes, and which process runs it; returns its id.
    pub fn start_run(&self, command: &str, plan_json: &str) -> Result<i64, Error> {
        if let Some(d) = &self.dynamo {
            return d.start_run(command, plan_json, self.parent);
        }
        self.conn
            .execute(
                "INSERT INTO runs (command, started_at, status, plan, pid, host, parent)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
                params![command, Self::now(), plan_json, std::process::id() as i64, crate::host::name(), self.parent],
            )
            .map_err(db_err(&self.path))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run_id: i64, status: &str) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.finish_run(run_id, status);
        }
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
                params![run_id, status, Self::now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Before the call.
    pub fn step_started(&self, run_id: i64, action_id: &str) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.step_started(run_id, action_id);
        }
        self.conn
            .execute(
                "INSERT INTO steps (run_id, action_id, status, started_at) VALUES (?1, ?2, 'started', ?3)
                 ON CONFLICT (run_id, action_id) DO UPDATE SET status = 'started', started_at = ?3, finished_at = NULL",
                params![run_id, action_id, Self::now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// After the call (or instead of it, for aborted and skipped steps).
    pub fn step_finished(&self, run_id: i64, action_id: &str, status: StepStatus, detail: &str) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.step_finished(run_id, action_id, status, detail);
        }
        self.conn
            .execute(
                "INSERT INTO steps (run_id, action_id, status, detail, started_at, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (run_id, action_id) DO UPDATE SET status = ?3, detail = ?4, finished_at = ?5",
                params![run_id, action_id, status.as_str(), detail, Self::now()],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    pub fn steps(&self, run_id: i64) -> Result<HashMap<String, StepRecord>, Error> {
        if let Some(d) = &self.dynamo {
            return d.steps(run_id);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT action_id, status, detail, started_at, finished_at FROM steps WHERE run_id = ?1")
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(StepRecord {
                    action_id: r.get(0)?,
                    status: StepStatus::parse(&r.get::<_, String>(1)?),
                    detail: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                })
            })
            .map_err(db_err(&self.path))?;
        let mut out = HashMap::new();
        for row in rows {
            let row = row.map_err(db_err(&self.path))?;
            out.insert(row.action_id.clone(), row);
        }
        Ok(out)
    }

    /// The newest run that did not finish (status `running` or `interrupted`): what
    /// `apply --resume` continues.
    pub fn unfinished_run(&self) -> Result<Option<(i64, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.unfinished_run();
        }
        self.conn
            .query_row(
                "SELECT id, plan FROM runs WHERE status IN ('running', 'interrupted') ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err(&self.path))
    }

    /// `(id, status, plan)` of every run of `command`, newest first.
    pub fn runs_of(&self, command: &str) -> Result<Vec<(i64, String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.runs_of(command);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id, status, plan FROM runs WHERE command = ?1 ORDER BY id DESC")
            .map_err(db_err(&self.path))?;
        let rows =
            stmt.query_map(params![command], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err(&self.path))
    }

    /// The newest unfinished run of `command` (a `running` run whose process is gone, or an
    /// `interrupted` one): `(id, plan)`.
    pub fn unfinished_run_of(&self, command: &str) -> Result<Option<(i64, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.unfinished_run_of(command);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, plan, status, pid, host FROM runs WHERE command = ?1 AND status IN ('running', 'interrupted')
                 ORDER BY id DESC",
            )
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![command], |r| {
                let status: String = r.get(2)?;
                let effective = effective_status(&status, r.get(3)?, r.get::<_, Option<String>>(4)?.as_deref());
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, effective))
            })
            .map_err(db_err(&self.path))?;
        for row in rows {
            let (id, plan, status) = row.map_err(db_err(&self.path))?;
            if status == "interrupted" {
                return Ok(Some((id, plan)));
            }
        }
        Ok(None)
    }

    /// The run a `--resume` continues: run `id` when its status is one of `resumable`, or the
    /// newest interrupted run of `command`; `(id, plan)`. Anything else says what it found.
    pub fn resumable_run(&self, command: &str, id: Option<i64>, resumable: &[&str]) -> Result<(i64, String), Error> {
        let looked_in = || self.path.display().to_string();
        match id {
            Some(id) => match self.run_plan(id)? {
                Some((status, plan)) if resumable.contains(&status.as_str()) => Ok((id, plan)),
                Some((status, _)) => {
                    Err(Error::Usage(format!("run {id} is {status}: only an {} run resumes", resumable.join(" or "))))
                }
                None => Err(Error::NotFound { what: format!("run {id}"), looked_in: looked_in() }),
            },
            None => self.unfinished_run_of(command)?.ok_or_else(|| Error::NotFound {
                what: format!("an interrupted {command} run"),
                looked_in: looked_in(),
            }),
        }
    }

    /// `(status, plan)` of a run; a `running` run whose process is gone reads `interrupted`.
    pub fn run_plan(&self, run_id: i64) -> Result<Option<(String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.run_plan(run_id);
        }
        self.conn
            .query_row("SELECT status, plan, pid, host FROM runs WHERE id = ?1", params![run_id], |r| {
                let status: String = r.get(0)?;
                Ok((effective_status(&status, r.get(2)?, r.get::<_, Option<String>>(3)?.as_deref()), r.get(1)?))
            })
            .optional()
            .map_err(db_err(&self.path))
    }

    /// Keeps what a command did on each instance (JSON per instance), for the run's report.
    pub fn record_instance_results(&self, run_id: i64, results: &[(String, String)]) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.record_instance_results(run_id, results);
        }
        let tx = self.conn.unchecked_transaction().map_err(db_err(&self.path))?;
        for (instance, json) in results {
            tx.execute(
                "INSERT OR REPLACE INTO instance_results (run_id, instance_id, result) VALUES (?1, ?2, ?3)",
                params![run_id, instance, json],
            )
            .map_err(db_err(&self.path))?;
        }
        tx.commit().map_err(db_err(&self.path))
    }

    /// `(instance id, result JSON)` of every instance a run recorded.
    pub fn instance_results(&self, run_id: i64) -> Result<Vec<(String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.instance_results(run_id);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT instance_id, result FROM instance_results WHERE run_id = ?1 ORDER BY instance_id")
            .map_err(db_err(&self.path))?;
        let rows = stmt.query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err(&self.path))
    }

    /// Keeps a scan's report (JSON) with its verdict, for `amictl scan --show`.
    pub fn record_scan(&self, image_id: &str, run_id: i64, verdict: &str, report_json: &str) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.record_scan(image_id, run_id, verdict, report_json);
        }
        self.conn
            .execute(
                "INSERT OR REPLACE INTO scan_reports (image_id, run_id, scanned_at, verdict, report) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![image_id, run_id, Self::now(), verdict, report_json],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// The newest scan report of `image_id`: `(run id, scanned at, verdict, report JSON)`.
    pub fn last_scan(&self, image_id: &str) -> Result<Option<(i64, String, String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.last_scan(image_id);
        }
        self.conn
            .query_row(
                "SELECT run_id, scanned_at, verdict, report FROM scan_reports WHERE image_id = ?1 ORDER BY run_id DESC LIMIT 1",
                params![image_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(db_err(&self.path))
    }

    /// `(image id, report)` of the newest stored scan of every image.
    pub fn latest_scans(&self) -> Result<Vec<(String, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.latest_scans();
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT image_id, report FROM scan_reports s WHERE run_id =
                   (SELECT MAX(run_id) FROM scan_reports t WHERE t.image_id = s.image_id)",
            )
            .map_err(db_err(&self.path))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(db_err(&self.path))
    }

    /// The process that holds a `running` run, when it is alive: `(pid, host)`.
    pub fn live_holder(&self, run_id: i64) -> Result<Option<(i64, String)>, Error> {
        if let Some(d) = &self.dynamo {
            return d.live_holder(run_id);
        }
        let row: Option<(String, Option<i64>, Option<String>)> = self
            .conn
            .query_row("SELECT status, pid, host FROM runs WHERE id = ?1", params![run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db_err(&self.path))?;
        Ok(match row {
            Some((status, Some(pid), Some(host))) if effective_status(&status, Some(pid), Some(&host)) == "running" => {
                Some((pid, host))
            }
            _ => None,
        })
    }

    /// The newest run in which step `action_id` was done.
    pub fn applied_in(&self, action_id: &str) -> Result<Option<i64>, Error> {
        if let Some(d) = &self.dynamo {
            return d.applied_in(action_id);
        }
        self.conn
            .query_row(
                "SELECT run_id FROM steps WHERE action_id = ?1 AND status = 'done' ORDER BY run_id DESC LIMIT 1",
                params![action_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err(&self.path))
    }

    /// Before an image is deregistered: the snapshots its block-device mapping holds, the
    /// evidence that later lets their deletion go ahead.
    pub fn record_image_snapshots(
        &self,
        scope: &crate::inventory::Scope,
        image_id: &str,
        snapshot_ids: &[String],
        run_id: i64,
    ) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.record_image_snapshots(scope, image_id, snapshot_ids, run_id);
        }
        for s in snapshot_ids {
            self.conn
                .execute(
                    "INSERT INTO retired_snapshots (account, region, snapshot_id, image_id, run_id, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (account, region, snapshot_id) DO UPDATE SET image_id = ?4, run_id = ?5, recorded_at = ?6",
                    params![scope.account, scope.region, s, image_id, run_id, Self::now()],
                )
                .map_err(db_err(&self.path))?;
        }
        Ok(())
    }

    /// Fills each scope's `retired_snapshots` from what earlier deregistrations recorded.
    pub fn add_retired_snapshots(&self, inv: &mut crate::inventory::Inventory) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.add_retired_snapshots(inv);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT snapshot_id, image_id FROM retired_snapshots WHERE account = ?1 AND region = ?2")
            .map_err(db_err(&self.path))?;
        for scope in &mut inv.scopes {
            let rows = stmt
                .query_map(params![scope.account, scope.region], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err(&self.path))?;
            for row in rows {
                let (snap, image) = row.map_err(db_err(&self.path))?;
                scope.retired_snapshots.insert(snap, image);
            }
        }
        Ok(())
    }

    /// The launch-permission readings kept for `scope` (see [`crate::sharing`]).
    pub fn sharing_readings(&self, scope: &crate::inventory::Scope) -> Result<Vec<crate::sharing::Reading>, Error> {
        if let Some(d) = &self.dynamo {
            return d.sharing_readings(scope);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT image_id, permissions, read_at FROM sharing_readings WHERE account = ?1 AND region = ?2")
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![scope.account, scope.region], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(db_err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (image_id, permissions, read_at) = row.map_err(db_err(&self.path))?;
            out.extend(sharing_reading(image_id, &permissions, &read_at));
        }
        Ok(out)
    }

    /// Keeps `readings` of `scope`, each replacing an older one of its image.
    pub fn record_sharing(
        &self,
        scope: &crate::inventory::Scope,
        readings: &[crate::sharing::Reading],
    ) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.record_sharing(scope, readings);
        }
        let e = db_err(&self.path);
        let tx = self.conn.unchecked_transaction().map_err(&e)?;
        for r in readings {
            let permissions = serde_json::to_string(&r.permissions).map_err(|x| Error::Other(x.to_string()))?;
            tx.execute(
                "INSERT INTO sharing_readings (account, region, image_id, permissions, read_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, region, image_id) DO UPDATE SET permissions = ?4, read_at = ?5
                 WHERE ?5 >= sharing_readings.read_at",
                params![scope.account, scope.region, r.image_id, permissions, crate::time::rfc3339(r.read_at)],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    pub fn record_scope(
        &self,
        run_id: i64,
        account: &str,
        region: &str,
        live: usize,
        images: usize,
    ) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.record_scope(run_id, account, region, live, images);
        }
        self.conn
            .execute(
                "INSERT INTO scope_stats (run_id, account, region, live_instances, images) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, account, region, live as i64, images as i64],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Live instances each scope had at its most recent recorded run.
    pub fn last_live_instances(&self) -> Result<HashMap<(String, String), usize>, Error> {
        if let Some(d) = &self.dynamo {
            return d.last_live_instances();
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT account, region, live_instances FROM scope_stats s
                 WHERE run_id = (SELECT MAX(run_id) FROM scope_stats t WHERE t.account = s.account AND t.region = s.region)",
            )
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map([], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, i64>(2)? as usize)))
            .map_err(db_err(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(db_err(&self.path))
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, Error> {
        if let Some(d) = &self.dynamo {
            return d.runs(limit);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.id, r.command, r.started_at, r.finished_at, r.status,
                        CASE WHEN json_valid(r.plan) AND json_type(r.plan, '$.actions') = 'array'
                             THEN (SELECT COUNT(*) FROM json_each(r.plan, '$.actions'))
                             ELSE (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id) END,
                        (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'done'),
                        (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'failed'),
                        (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.id AND s.status = 'aborted'),
                        r.pid, r.host
                 FROM runs r ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(RunSummary {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    status: effective_status(
                        &r.get::<_, String>(4)?,
                        r.get(9)?,
                        r.get::<_, Option<String>>(10)?.as_deref(),
                    ),
                    actions: r.get(5)?,
                    done: r.get(6)?,
                    failed: r.get(7)?,
                    aborted: r.get(8)?,
                    pid: r.get(9)?,
                    host: r.get(10)?,
                })
            })
            .map_err(db_err(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(db_err(&self.path))
    }
}

/// One run as recorded, for [`Dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub plan: String,
    pub pid: Option<i64>,
    pub host: Option<String>,
    pub parent: Option<i64>,
}

/// Everything a journal holds (not its locks, which belong to live processes), to copy one
/// journal into another: `amictl journal migrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub runs: Vec<RunRecord>,
    /// `(run, step)`.
    pub steps: Vec<(i64, StepRecord)>,
    /// `(run, instance, result JSON)`.
    pub instance_results: Vec<(i64, String, String)>,
    /// `(image, run, scanned at, verdict, report JSON)`.
    pub scans: Vec<(String, i64, String, String, String)>,
    /// `(account, region, snapshot, image, run, recorded at)`.
    pub retired_snapshots: Vec<(String, String, String, String, i64, String)>,
    /// `(run, account, region, live instances, images)`.
    pub scope_stats: Vec<(i64, String, String, i64, i64)>,
}

impl Dump {
    /// Sorted, so that two journals holding the same records compare equal.
    pub fn sorted(mut self) -> Dump {
        self.runs.sort_by_key(|r| r.id);
        self.steps.sort_by(|a, b| (a.0, &a.1.action_id).cmp(&(b.0, &b.1.action_id)));
        self.instance_results.sort();
        self.scans.sort();
        self.retired_snapshots.sort();
        self.scope_stats.sort();
        self
    }
}

impl Journal {
    /// Everything this journal holds.
    pub fn dump(&self) -> Result<Dump, Error> {
        if let Some(d) = &self.dynamo {
            return Ok(d.dump()?.sorted());
        }
        let e = db_err(&self.path);
        let c = &self.conn;
        let mut out = Dump::default();
        let mut q = c
            .prepare("SELECT id, command, started_at, finished_at, status, plan, pid, host, parent FROM runs")
            .map_err(&e)?;
        out.runs = q
            .query_map([], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    status: r.get(4)?,
                    plan: r.get(5)?,
                    pid: r.get(6)?,
                    host: r.get(7)?,
                    parent: r.get(8)?,
                })
            })
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut q =
            c.prepare("SELECT run_id, action_id, status, detail, started_at, finished_at FROM steps").map_err(&e)?;
        out.steps = q
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    StepRecord {
                        action_id: r.get(1)?,
                        status: StepStatus::parse(&r.get::<_, String>(2)?),
                        detail: r.get(3)?,
                        started_at: r.get(4)?,
                        finished_at: r.get(5)?,
                    },
                ))
            })
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut q = c.prepare("SELECT run_id, instance_id, result FROM instance_results").map_err(&e)?;
        out.instance_results = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut q = c.prepare("SELECT image_id, run_id, scanned_at, verdict, report FROM scan_reports").map_err(&e)?;
        out.scans = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut q = c
            .prepare("SELECT account, region, snapshot_id, image_id, run_id, recorded_at FROM retired_snapshots")
            .map_err(&e)?;
        out.retired_snapshots = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        let mut q = c.prepare("SELECT run_id, account, region, live_instances, images FROM scope_stats").map_err(&e)?;
        out.scope_stats = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(&e)?
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        Ok(out.sorted())
    }

    /// Copies `dump` in, run ids kept. Refused unless this journal holds no run (ids would mix).
    pub fn load(&mut self, dump: &Dump) -> Result<(), Error> {
        if !self.runs(1)?.is_empty() {
            return Err(Error::Usage(format!(
                "the journal {} already holds runs: migrate into an empty one",
                self.path.display()
            )));
        }
        if let Some(d) = &self.dynamo {
            return d.load(dump);
        }
        let path = self.path.clone();
        let e = db_err(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        for r in &dump.runs {
            tx.execute(
                "INSERT INTO runs (id, command, started_at, finished_at, status, plan, pid, host, parent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![r.id, r.command, r.started_at, r.finished_at, r.status, r.plan, r.pid, r.host, r.parent],
            )
            .map_err(&e)?;
        }
        for (run, st) in &dump.steps {
            tx.execute(
                "INSERT INTO steps (run_id, action_id, status, detail, started_at, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run, st.action_id, st.status.as_str(), st.detail, st.started_at, st.finished_at],
            )
            .map_err(&e)?;
        }
        for (run, instance, result) in &dump.instance_results {
            tx.execute(
                "INSERT INTO instance_results (run_id, instance_id, result) VALUES (?1, ?2, ?3)",
                params![run, instance, result],
            )
            .map_err(&e)?;
        }
        for (image, run, at, verdict, report) in &dump.scans {
            tx.execute(
                "INSERT INTO scan_reports (image_id, run_id, scanned_at, verdict, report) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![image, run, at, verdict, report],
            )
            .map_err(&e)?;
        }
        for (account, region, snap, image, run, at) in &dump.retired_snapshots {
            tx.execute(
                "INSERT INTO retired_snapshots (account, region, snapshot_id, image_id, run_id, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![account, region, snap, image, run, at],
            )
            .map_err(&e)?;
        }
        for (run, account, region, live, images) in &dump.scope_stats {
            tx.execute(
                "INSERT INTO scope_stats (run_id, account, region, live_instances, images) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, account, region, live, images],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }
}

/// Who holds the lock of one account and region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub account: String,
    pub region: String,
    pub run_id: i64,
    pub command: String,
    pub host: String,
    pub pid: i64,
    pub since: String,
    pub lease_until: String,
}

impl LockHolder {
    /// Alive: its lease runs and, on this host, its process exists.
    pub(crate) fn alive(&self, now: DateTime<Utc>) -> bool {
        let leased = parse_time(&self.lease_until).is_some_and(|t| t > now);
        let here = self.host == crate::host::name();
        leased && !(here && !crate::host::process_alive(self.pid))
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} is held by run {} (`{}`, process {} on {}) since {}",
            self.account, self.region, self.run_id, self.command, self.pid, self.host, self.since
        )
    }
}

/// How long a lock lasts without renewal: a holder that stops renewing (a frozen machine, a
/// host that went away) loses it after this long.
pub const LOCK_LEASE: chrono::Duration = chrono::Duration::minutes(2);

impl Journal {
    /// Takes the lock of every `(account, region)` for `run_id`, all or none. A live holder
    /// makes it fail with who holds it; a dead one (its process gone on this host, or its
    /// lease expired) is taken over, and returned so the caller can say so.
    pub fn lock_scopes(
        &mut self,
        scopes: &[(String, String)],
        run_id: i64,
        command: &str,
    ) -> Result<Vec<LockHolder>, Error> {
        if let Some(d) = &self.dynamo {
            return d.lock_scopes(scopes, run_id, command, self.parent);
        }
        let now = Utc::now();
        let path = self.path.clone();
        let tx =
            self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_err(&path))?;
        let mut taken_over = Vec::new();
        for (account, region) in scopes {
            let holder = lock_holder(&tx, &path, account, region)?;
            match holder {
                Some(h) if h.run_id == run_id => {}
                // A child works under its parent's lock, which stays the parent's.
                Some(h) if Some(h.run_id) == self.parent => continue,
                Some(h) if h.alive(now) => {
                    return Err(Error::Usage(format!("refusing to apply: {h}; one run at a time per scope")));
                }
                Some(h) => taken_over.push(h),
                None => {}
            }
            tx.execute(
                "INSERT INTO locks (account, region, run_id, command, host, pid, since, lease_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (account, region) DO UPDATE SET run_id = ?3, command = ?4, host = ?5, pid = ?6,
                     since = ?7, lease_until = ?8",
                params![
                    account,
                    region,
                    run_id,
                    command,
                    crate::host::name(),
                    std::process::id() as i64,
                    crate::time::rfc3339(now),
                    crate::time::rfc3339(now + LOCK_LEASE)
                ],
            )
            .map_err(db_err(&path))?;
        }
        tx.commit().map_err(db_err(&path))?;
        Ok(taken_over)
    }

    /// Extends the lease of every lock `run_id` holds.
    pub fn renew_locks(&self, run_id: i64) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.renew_locks(run_id);
        }
        let until = crate::time::rfc3339(Utc::now() + LOCK_LEASE);
        self.conn
            .execute("UPDATE locks SET lease_until = ?2 WHERE run_id = ?1", params![run_id, until])
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Releases every lock `run_id` holds.
    pub fn unlock(&self, run_id: i64) -> Result<(), Error> {
        if let Some(d) = &self.dynamo {
            return d.unlock(run_id);
        }
        self.conn.execute("DELETE FROM locks WHERE run_id = ?1", params![run_id]).map_err(db_err(&self.path))?;
        Ok(())
    }
}

fn lock_holder(conn: &Connection, path: &Path, account: &str, region: &str) -> Result<Option<LockHolder>, Error> {
    conn.query_row(
        "SELECT account, region, run_id, command, host, pid, since, lease_until FROM locks
         WHERE account = ?1 AND region = ?2",
        params![account, region],
        |r| {
            Ok(LockHolder {
                account: r.get(0)?,
                region: r.get(1)?,
                run_id: r.get(2)?,
                command: r.get(3)?,
                host: r.get(4)?,
                pid: r.get(5)?,
                since: r.get(6)?,
                lease_until: r.get(7)?,
            })
        },
    )
    .optional()
    .map_err(db_err(path))
}

/// A run recorded as `running` whose process is known to be gone (same host, no such pid) is
/// `interrupted`: killed, crashed, or the machine restarted. On another host it cannot be told.
fn effective_status(status: &str, pid: Option<i64>, host: Option<&str>) -> String {
    match (status, pid, host) {
        ("running", Some(pid), Some(h)) if h == crate::host::name() && !crate::host::process_alive(pid) => {
            "interrupted".into()
        }
        _ => status.to_string(),
    }
}

/// Adds a column to a journal made by an older amictl.
fn add_column(conn: &Connection, path: &Path, table: &str, column: &str, kind: &str) -> Result<(), Error> {
    let exists: bool = conn
        .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))
        .and_then(|mut s| s.exists(params![column]))
        .map_err(db_err(path))?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}")).map_err(db_err(path))?;
    }
    Ok(())
}

/// When a step's record says it was done.
/// A stored reading; None when it does not parse (it is then read again, never trusted).
pub(crate) fn sharing_reading(image_id: String, permissions: &str, read_at: &str) -> Option<crate::sharing::Reading> {
    Some(crate::sharing::Reading {
        image_id,
        permissions: serde_json::from_str(permissions).ok()?,
        read_at: parse_time(read_at)?,
    })
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{LaunchPermission, Scope};
    use crate::sharing::Reading;

    #[test]
    fn sharing_readings_are_kept_per_scope_and_a_newer_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let scope = Scope { account: "111111111111".into(), region: "us-east-1".into() };
        let other = Scope { region: "eu-west-1".into(), ..scope.clone() };
        let at = |s: &str| parse_time(s).unwrap();
        let reading = |perm: &[&str], t: &str| Reading {
            image_id: "ami-1".into(),
            permissions: perm.iter().map(|a| LaunchPermission::Account(a.to_string())).collect(),
            read_at: at(t),
        };
        j.record_sharing(&scope, &[reading(&["222222222222"], "2026-11-29T14:05:00Z")]).unwrap();
        j.record_sharing(&scope, &[reading(&[], "2026-11-29T15:00:00Z")]).unwrap();
        // An older reading arriving late (another run) does not replace the newer one.
        j.record_sharing(&scope, &[reading(&["333333333333"], "2026-11-29T14:30:00Z")]).unwrap();
        assert_eq!(j.sharing_readings(&scope).unwrap(), vec![reading(&[], "2026-11-29T15:00:00Z")]);
        assert!(j.sharing_readings(&other).unwrap().is_empty());
    }
}

//! The journal in a DynamoDB table (`journal = "dynamodb://TABLE"`): team mode. The same
//! records as the SQLite journal, so several people and CI jobs share runs, steps, evidence and
//! the run lock. The lock is a lease taken with conditional writes: of two applies to the same
//! account and region, exactly one gets it; the other is told who holds it and since when.
//!
//! One table, key `pk` (S) + `sk` (S), created on first use (on-demand capacity):
//!
//! | pk | sk | what |
//! |---|---|---|
//! | `meta` | `run-counter` | the last run id (atomic `ADD`) |
//! | `runs` | run id (12 digits) | command, status, times, pid, host, parent, action count |
//! | `plan#RUN` | chunk number | the run's plan, in chunks under DynamoDB's 400 KB item limit |
//! | `steps#RUN` | action id | status, detail, times |
//! | `done#ACTION` | run id | the runs in which the action was done |
//! | `locks` | `ACCOUNT/REGION` | holder run, command, host, pid, since, lease |
//! | `retired#ACCOUNT/REGION` | snapshot id | the image whose mapping held it |
//! | `results#RUN` | instance id | the instance's result |
//! | `scans#IMAGE` | run id | a scan report; `scans-latest` / image: the newest |
//! | `scopes#RUN` | `ACCOUNT/REGION` | live instances and images a retirement saw |
//! | `sharing#ACCOUNT/REGION` | image id | a launch-permission reading and when it was read |
//!
//! The journal's interface is synchronous (SQLite's); calls to DynamoDB run on the journal's
//! own one-thread runtime, the SDK's retries and timeouts included, while the caller waits.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use chrono::Utc;

use super::{effective_status, Dump, LockHolder, RunRecord, RunSummary, StepRecord, StepStatus, LOCK_LEASE};
use crate::error::Error;

type Item = HashMap<String, AttributeValue>;

/// Plans are cut into chunks this long (DynamoDB items are at most 400 KB).
const CHUNK: usize = 300_000;

/// Runs a future to its end from synchronous code, on the journal's own runtime.
///
/// The journal is called from the command's async code. Nesting `Handle::block_on` in
/// `block_in_place` there stalled the command's other requests (an apply sat idle with its
/// answers unread until the operation timeout), so the call runs on another thread and
/// runtime, and the caller waits for it as it waits for SQLite's disk.
fn block<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("amictl-journal")
            .enable_all()
            .build()
            .expect("the journal's runtime starts")
    });
    std::thread::scope(|scope| {
        scope.spawn(|| runtime.block_on(f)).join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, key: &str) -> Option<String> {
    item.get(key).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn run_key(id: i64) -> String {
    format!("{id:012}")
}

fn now() -> String {
    crate::time::rfc3339(Utc::now())
}

/// How the journal reaches DynamoDB: set once by the command line (profile, endpoint,
/// region), else the SDK's defaults.
static CONFIG: std::sync::OnceLock<aws_types::SdkConfig> = std::sync::OnceLock::new();

/// The SDK configuration team-mode journals use (call before opening one).
pub fn configure(config: aws_types::SdkConfig) {
    let _ = CONFIG.set(config);
}

pub struct Dynamo {
    client: Client,
    table: String,
    /// The scopes this journal's run locked: renewed, and a renewal that finds one taken by
    /// another run is an error (the run must stop), not a quiet loss.
    held: std::sync::Mutex<Vec<String>>,
}

/// What `renew_locks` says when another run holds a scope this run had locked.
pub const LOST: &str = "lost the run lock";

impl Dynamo {
    /// Opens `TABLE` or `REGION/TABLE` (the region the table is in; default: that of amictl's
    /// own profile or environment, never `--region`, so that every invocation finds the same
    /// table), creating it (on-demand, `pk`/`sk` strings) when it does not exist.
    pub fn open(name: &str) -> Result<Dynamo, Error> {
        let (region, table) = match name.split_once('/') {
            Some((r, t)) => (Some(r), t),
            None => (None, name),
        };
        if table.is_empty() || region.is_some_and(str::is_empty) {
            return Err(Error::Usage(format!(
                "journal dynamodb://{name}: not dynamodb://TABLE or dynamodb://REGION/TABLE"
            )));
        }
        let mut config = match CONFIG.get() {
            Some(c) => c.clone(),
            None => block(aws_config::load_defaults(aws_config::BehaviorVersion::latest())),
        };
        if let Some(r) = region {
            config = config.to_builder().region(aws_types::region::Region::new(r.to_string())).build();
        }
        if config.region().is_none() {
            return Err(Error::Usage(format!(
                "journal dynamodb://{name}: no region for the table: name it (dynamodb://REGION/{table}) or set AWS_REGION"
            )));
        }
        let d = Dynamo { client: Client::new(&config), table: table.to_string(), held: Default::default() };
        block(d.ensure_table())?;
        Ok(d)
    }

    fn err(&self, op: &str, e: impl std::fmt::Display) -> Error {
        Error::Other(format!("journal dynamodb://{}: {op}: {e}", self.table))
    }

    async fn ensure_table(&self) -> Result<(), Error> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
            Err(e) => return Err(self.err("DescribeTable", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        let key = |name: &str, t: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(t).build();
        let made = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr("pk").map_err(|e| self.err("CreateTable", e))?)
            .attribute_definitions(attr("sk").map_err(|e| self.err("CreateTable", e))?)
            .key_schema(key("pk", KeyType::Hash).map_err(|e| self.err("CreateTable", e))?)
            .key_schema(key("sk", KeyType::Range).map_err(|e| self.err("CreateTable", e))?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match made {
            Ok(_) => tracing::warn!("created the team journal table {} (on-demand capacity)", self.table),
            // Another amictl made it meanwhile.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(self.err("CreateTable", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
        Ok(())
    }

    fn put(&self, pk: &str, sk: &str, mut attrs: Item) -> Result<(), Error> {
        attrs.insert("pk".into(), s(pk));
        attrs.insert("sk".into(), s(sk));
        block(self.client.put_item().table_name(&self.table).set_item(Some(attrs)).send())
            .map_err(|e| self.err("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, Error> {
        let out = block(
            self.client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .consistent_read(true)
                .send(),
        )
        .map_err(|e| self.err("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(out.item)
    }

    /// Every item of partition `pk`, in key order (newest run first with `newest_first`).
    fn query(&self, pk: &str, newest_first: bool) -> Result<Vec<Item>, Error> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = block(
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk))
                    .scan_index_forward(!newest_first)
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send(),
            )
            .map_err(|e| self.err("Query", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    fn update(&self, pk: &str, sk: &str, expression: &str, values: Item) -> Result<Item, Error> {
        let out = block(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .update_expression(expression)
                .set_expression_attribute_values(Some(values))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                .send(),
        )
        .map_err(|e| self.err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(out.attributes.unwrap_or_default())
    }

    // --- runs --------------------------------------------------------------------------------

    pub fn start_run(&self, command: &str, plan_json: &str, parent: Option<i64>) -> Result<i64, Error> {
        let counter = self.update("meta", "run-counter", "ADD n :one", HashMap::from([(":one".into(), n(1))]))?;
        let id = get_n(&counter, "n").ok_or_else(|| self.err("UpdateItem", "the run counter has no value"))?;
        for (i, c) in char_chunks(plan_json).iter().enumerate() {
            self.put(
                &format!("plan#{}", run_key(id)),
                &format!("{i:06}"),
                HashMap::from([("text".into(), s(c.clone()))]),
            )?;
        }
        let actions = serde_json::from_str::<serde_json::Value>(plan_json)
            .ok()
            .and_then(|v| v.get("actions").and_then(|a| a.as_array()).map(|a| a.len() as i64));
        let mut item = HashMap::from([
            ("id".into(), n(id)),
            ("command".into(), s(command)),
            ("started_at".into(), s(now())),
            ("status".into(), s("running")),
            ("pid".into(), n(std::process::id() as i64)),
            ("host".into(), s(crate::host::name())),
        ]);
        if let Some(p) = parent {
            item.insert("parent".into(), n(p));
        }
        if let Some(a) = actions {
            item.insert("actions".into(), n(a));
        }
        self.put("runs", &run_key(id), item)?;
        Ok(id)
    }

    pub fn finish_run(&self, run_id: i64, status: &str) -> Result<(), Error> {
        // `status` is a reserved word in expressions: named through an alias.
        let up = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s("runs"))
            .key("sk", s(run_key(run_id)))
            .update_expression("SET #s = :s, finished_at = :t")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status))
            .expression_attribute_values(":t", s(now()));
        block(up.send()).map_err(|e| self.err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    fn plan_of(&self, run_id: i64) -> Result<String, Error> {
        let chunks = self.query(&format!("plan#{}", run_key(run_id)), false)?;
        Ok(chunks.iter().filter_map(|c| get_s(c, "text")).collect())
    }

    fn run_items(&self) -> Result<Vec<Item>, Error> {
        self.query("runs", true)
    }

    fn status_of(item: &Item) -> String {
        effective_status(&get_s(item, "status").unwrap_or_default(), get_n(item, "pid"), get_s(item, "host").as_deref())
    }

    pub fn children(&self, parent: i64) -> Result<Vec<(i64, String, String, String)>, Error> {
        let mut out = Vec::new();
        for r in self.run_items()?.iter().rev().filter(|r| get_n(r, "parent") == Some(parent)) {
            let id = get_n(r, "id").unwrap_or_default();
            out.push((id, get_s(r, "command").unwrap_or_default(), Self::status_of(r), self.plan_of(id)?));
        }
        Ok(out)
    }

    pub fn unfinished_run(&self) -> Result<Option<(i64, String)>, Error> {
        let found = self
            .run_items()?
            .into_iter()
            .find(|r| matches!(get_s(r, "status").as_deref(), Some("running") | Some("interrupted")));
        match found.and_then(|r| get_n(&r, "id")) {
            Some(id) => Ok(Some((id, self.plan_of(id)?))),
            None => Ok(None),
        }
    }

    pub fn runs_of(&self, command: &str) -> Result<Vec<(i64, String, String)>, Error> {
        let mut out = Vec::new();
        for r in self.run_items()?.iter().filter(|r| get_s(r, "command").as_deref() == Some(command)) {
            let id = get_n(r, "id").unwrap_or_default();
            out.push((id, get_s(r, "status").unwrap_or_default(), self.plan_of(id)?));
        }
        Ok(out)
    }

    pub fn unfinished_run_of(&self, command: &str) -> Result<Option<(i64, String)>, Error> {
        let found = self
            .run_items()?
            .into_iter()
            .filter(|r| get_s(r, "command").as_deref() == Some(command))
            .find(|r| Self::status_of(r) == "interrupted");
        match found.and_then(|r| get_n(&r, "id")) {
            Some(id) => Ok(Some((id, self.plan_of(id)?))),
            None => Ok(None),
        }
    }

    pub fn run_plan(&self, run_id: i64) -> Result<Option<(String, String)>, Error> {
        match self.get("runs", &run_key(run_id))? {
            Some(r) => Ok(Some((Self::status_of(&r), self.plan_of(run_id)?))),
            None => Ok(None),
        }
    }

    pub fn live_holder(&self, run_id: i64) -> Result<Option<(i64, String)>, Error> {
        Ok(self.get("runs", &run_key(run_id))?.and_then(|r| {
            let (pid, host) = (get_n(&r, "pid")?, get_s(&r, "host")?);
            (Self::status_of(&r) == "running").then_some((pid, host))
        }))
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, Error> {
        let mut out = Vec::new();
        for r in self.run_items()?.into_iter().take(limit) {
            let id = get_n(&r, "id").unwrap_or_default();
            let steps = self.steps(id)?;
            let count = |st: StepStatus| steps.values().filter(|s| s.status == st).count() as i64;
            out.push(RunSummary {
                id,
                command: get_s(&r, "command").unwrap_or_default(),
                started_at: get_s(&r, "started_at").unwrap_or_default(),
                finished_at: get_s(&r, "finished_at"),
                status: Self::status_of(&r),
                actions: get_n(&r, "actions").unwrap_or(steps.len() as i64),
                done: count(StepStatus::Done),
                failed: count(StepStatus::Failed),
                aborted: count(StepStatus::Aborted),
                pid: get_n(&r, "pid"),
                host: get_s(&r, "host"),
            });
        }
        Ok(out)
    }

    // --- steps -------------------------------------------------------------------------------

    pub fn step_started(&self, run_id: i64, action_id: &str) -> Result<(), Error> {
        let item = HashMap::from([("status".into(), s("started")), ("started_at".into(), s(now()))]);
        self.put(&format!("steps#{}", run_key(run_id)), action_id, item)
    }

    pub fn step_finished(&self, run_id: i64, action_id: &str, status: StepStatus, detail: &str) -> Result<(), Error> {
        let pk = format!("steps#{}", run_key(run_id));
        let started = self.get(&pk, action_id)?.and_then(|i| get_s(&i, "started_at")).unwrap_or_else(now);
        let item = HashMap::from([
            ("status".into(), s(status.as_str())),
            ("detail".into(), s(detail)),
            ("started_at".into(), s(started)),
            ("finished_at".into(), s(now())),
        ]);
        self.put(&pk, action_id, item)?;
        if status == StepStatus::Done {
            self.put(&format!("done#{action_id}"), &run_key(run_id), HashMap::new())?;
        }
        Ok(())
    }

    pub fn steps(&self, run_id: i64) -> Result<HashMap<String, StepRecord>, Error> {
        let items = self.query(&format!("steps#{}", run_key(run_id)), false)?;
        Ok(items
            .iter()
            .map(|i| {
                let action_id = get_s(i, "sk").unwrap_or_default();
                let record = StepRecord {
                    action_id: action_id.clone(),
                    status: StepStatus::parse(&get_s(i, "status").unwrap_or_default()),
                    detail: get_s(i, "detail"),
                    started_at: get_s(i, "started_at").unwrap_or_default(),
                    finished_at: get_s(i, "finished_at"),
                };
                (action_id, record)
            })
            .collect())
    }

    pub fn applied_in(&self, action_id: &str) -> Result<Option<i64>, Error> {
        let runs = self.query(&format!("done#{action_id}"), true)?;
        Ok(runs.first().and_then(|r| get_s(r, "sk")).and_then(|k| k.parse().ok()))
    }

    // --- evidence ----------------------------------------------------------------------------

    pub fn record_instance_results(&self, run_id: i64, results: &[(String, String)]) -> Result<(), Error> {
        for (instance, json) in results {
            self.put(
                &format!("results#{}", run_key(run_id)),
                instance,
                HashMap::from([("result".into(), s(json.clone()))]),
            )?;
        }
        Ok(())
    }

    pub fn instance_results(&self, run_id: i64) -> Result<Vec<(String, String)>, Error> {
        let items = self.query(&format!("results#{}", run_key(run_id)), false)?;
        Ok(items.iter().filter_map(|i| Some((get_s(i, "sk")?, get_s(i, "result")?))).collect())
    }

    pub fn record_scan(&self, image_id: &str, run_id: i64, verdict: &str, report_json: &str) -> Result<(), Error> {
        let item = HashMap::from([
            ("run_id".into(), n(run_id)),
            ("scanned_at".into(), s(now())),
            ("verdict".into(), s(verdict)),
            ("report".into(), s(report_json)),
        ]);
        self.put(&format!("scans#{image_id}"), &run_key(run_id), item.clone())?;
        self.put("scans-latest", image_id, item)
    }

    pub fn last_scan(&self, image_id: &str) -> Result<Option<(i64, String, String, String)>, Error> {
        let items = self.query(&format!("scans#{image_id}"), true)?;
        Ok(items.first().and_then(|i| {
            Some((get_n(i, "run_id")?, get_s(i, "scanned_at")?, get_s(i, "verdict")?, get_s(i, "report")?))
        }))
    }

    pub fn latest_scans(&self) -> Result<Vec<(String, String)>, Error> {
        let items = self.query("scans-latest", false)?;
        Ok(items.iter().filter_map(|i| Some((get_s(i, "sk")?, get_s(i, "report")?))).collect())
    }

    pub fn record_image_snapshots(
        &self,
        scope: &crate::inventory::Scope,
        image_id: &str,
        snapshot_ids: &[String],
        run_id: i64,
    ) -> Result<(), Error> {
        let key = format!("{}/{}", scope.account, scope.region);
        self.put("retired-scopes", &key, HashMap::new())?;
        for snap in snapshot_ids {
            let item = HashMap::from([
                ("image_id".into(), s(image_id)),
                ("run_id".into(), n(run_id)),
                ("recorded_at".into(), s(now())),
            ]);
            self.put(&format!("retired#{}/{}", scope.account, scope.region), snap, item)?;
        }
        Ok(())
    }

    pub fn add_retired_snapshots(&self, inv: &mut crate::inventory::Inventory) -> Result<(), Error> {
        for scope in &mut inv.scopes {
            for i in self.query(&format!("retired#{}/{}", scope.account, scope.region), false)? {
                if let (Some(snap), Some(image)) = (get_s(&i, "sk"), get_s(&i, "image_id")) {
                    scope.retired_snapshots.insert(snap, image);
                }
            }
        }
        Ok(())
    }

    /// Partition `sharing#ACCOUNT/REGION`, one item per image: a query reads them all.
    pub fn sharing_readings(&self, scope: &crate::inventory::Scope) -> Result<Vec<crate::sharing::Reading>, Error> {
        let items = self.query(&format!("sharing#{}/{}", scope.account, scope.region), false)?;
        Ok(items
            .into_iter()
            .filter_map(|i| {
                super::sharing_reading(get_s(&i, "sk")?, &get_s(&i, "permissions")?, &get_s(&i, "read_at")?)
            })
            .collect())
    }

    /// BatchWriteItem, 25 items a request. Items DynamoDB leaves unprocessed are not kept: the
    /// next run reads those images again, which is all a missing reading costs.
    pub fn record_sharing(
        &self,
        scope: &crate::inventory::Scope,
        readings: &[crate::sharing::Reading],
    ) -> Result<(), Error> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let pk = format!("sharing#{}/{}", scope.account, scope.region);
        for chunk in readings.chunks(25) {
            let mut writes = Vec::new();
            for r in chunk {
                let permissions = serde_json::to_string(&r.permissions).map_err(|e| self.err("BatchWriteItem", e))?;
                let item = HashMap::from([
                    ("pk".to_string(), s(&pk)),
                    ("sk".to_string(), s(&r.image_id)),
                    ("permissions".to_string(), s(permissions)),
                    ("read_at".to_string(), s(crate::time::rfc3339(r.read_at))),
                ]);
                let put =
                    PutRequest::builder().set_item(Some(item)).build().map_err(|e| self.err("BatchWriteItem", e))?;
                writes.push(WriteRequest::builder().put_request(put).build());
            }
            let out = block(self.client.batch_write_item().request_items(&self.table, writes).send())
                .map_err(|e| self.err("BatchWriteItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            let left = out.unprocessed_items().map(|u| u.values().map(Vec::len).sum::<usize>()).unwrap_or(0);
            if left > 0 {
                tracing::debug!("{left} sharing reading(s) not kept: DynamoDB left them unprocessed");
            }
        }
        Ok(())
    }

    pub fn record_scope(
        &self,
        run_id: i64,
        account: &str,
        region: &str,
        live: usize,
        images: usize,
    ) -> Result<(), Error> {
        let item = HashMap::from([
            ("run_id".into(), n(run_id)),
            ("live_instances".into(), n(live as i64)),
            ("images".into(), n(images as i64)),
        ]);
        self.put(&format!("scopes#{}", run_key(run_id)), &format!("{account}/{region}"), item.clone())?;
        // The newest per scope, read by the zero-instances guard.
        self.put("scopes-latest", &format!("{account}/{region}"), item)
    }

    pub fn last_live_instances(&self) -> Result<HashMap<(String, String), usize>, Error> {
        let items = self.query("scopes-latest", false)?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let key = get_s(i, "sk")?;
                let (account, region) = key.split_once('/')?;
                Some(((account.to_string(), region.to_string()), get_n(i, "live_instances")? as usize))
            })
            .collect())
    }

    // --- the run lock ------------------------------------------------------------------------

    fn holder(item: &Item) -> LockHolder {
        let key = get_s(item, "sk").unwrap_or_default();
        let (account, region) = key.split_once('/').unwrap_or((&key, ""));
        LockHolder {
            account: account.to_string(),
            region: region.to_string(),
            run_id: get_n(item, "run_id").unwrap_or_default(),
            command: get_s(item, "command").unwrap_or_default(),
            host: get_s(item, "host").unwrap_or_default(),
            pid: get_n(item, "pid").unwrap_or_default(),
            since: get_s(item, "since").unwrap_or_default(),
            lease_until: get_s(item, "lease_until").unwrap_or_default(),
        }
    }

    /// Takes one scope's lease: a conditional put that succeeds only when no one holds it, or
    /// when the holder seen is still the one there (a dead holder being taken over). `None`:
    /// another writer came first.
    fn take(&self, key: &str, run_id: i64, command: &str, seen: Option<&LockHolder>) -> Result<bool, Error> {
        let t = Utc::now();
        let item = HashMap::from([
            ("pk".into(), s("locks")),
            ("sk".into(), s(key)),
            ("run_id".into(), n(run_id)),
            ("command".into(), s(command)),
            ("host".into(), s(crate::host::name())),
            ("pid".into(), n(std::process::id() as i64)),
            ("since".into(), s(crate::time::rfc3339(t))),
            ("lease_until".into(), s(crate::time::rfc3339(t + LOCK_LEASE))),
        ]);
        let mut put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        put = match seen {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(h) => put
                .condition_expression("run_id = :r AND lease_until = :l")
                .expression_attribute_values(":r", n(h.run_id))
                .expression_attribute_values(":l", s(h.lease_until.clone())),
        };
        match block(put.send()) {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(self.err("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    /// As [`super::Journal::lock_scopes`]: all or none, a live holder refuses, a dead one is
    /// taken over and returned.
    pub fn lock_scopes(
        &self,
        scopes: &[(String, String)],
        run_id: i64,
        command: &str,
        parent: Option<i64>,
    ) -> Result<Vec<LockHolder>, Error> {
        let mut taken: Vec<String> = Vec::new();
        let mut taken_over = Vec::new();
        let outcome = (|| {
            for (account, region) in scopes {
                let key = format!("{account}/{region}");
                let holder = self.get("locks", &key)?.map(|i| Self::holder(&i));
                let got = match &holder {
                    Some(h) if Some(h.run_id) == parent => continue,
                    // A resumed run: its own record, rewritten with this process and a fresh lease.
                    Some(h) if h.run_id == run_id => self.take(&key, run_id, command, Some(h))?,
                    Some(h) if h.alive(Utc::now()) => false,
                    Some(h) => {
                        let ok = self.take(&key, run_id, command, Some(h))?;
                        if ok {
                            taken_over.push(h.clone());
                        }
                        ok
                    }
                    None => self.take(&key, run_id, command, None)?,
                };
                if !got {
                    // A live holder, or another writer that took it between our read and write.
                    let now_held = self.get("locks", &key)?.map(|i| Self::holder(&i));
                    let who = now_held.map(|h| h.to_string()).unwrap_or_else(|| format!("{key} was just taken"));
                    return Err(Error::Usage(format!("refusing to apply: {who}; one run at a time per scope")));
                }
                taken.push(key);
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            for key in &taken {
                let _ = self.release(key, run_id);
            }
            return Err(e);
        }
        self.held.lock().unwrap().extend(taken);
        Ok(taken_over)
    }

    fn release(&self, key: &str, run_id: i64) -> Result<(), Error> {
        let del = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s("locks"))
            .key("sk", s(key))
            .condition_expression("run_id = :r")
            .expression_attribute_values(":r", n(run_id));
        match block(del.send()) {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(self.err("DeleteItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    fn held_by(&self, run_id: i64) -> Result<Vec<String>, Error> {
        Ok(self
            .query("locks", false)?
            .iter()
            .filter(|i| get_n(i, "run_id") == Some(run_id))
            .filter_map(|i| get_s(i, "sk"))
            .collect())
    }

    pub fn renew_locks(&self, run_id: i64) -> Result<(), Error> {
        let until = crate::time::rfc3339(Utc::now() + LOCK_LEASE);
        let held = self.held.lock().unwrap().clone();
        for key in held {
            let up = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s("locks"))
                .key("sk", s(&key))
                .update_expression("SET lease_until = :u")
                .condition_expression("run_id = :r")
                .expression_attribute_values(":u", s(until.clone()))
                .expression_attribute_values(":r", n(run_id));
            match block(up.send()) {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    return Err(Error::Other(format!("{LOST} of {key}: another run took it over (its lease lapsed)")));
                }
                Err(e) => return Err(self.err("UpdateItem", aws_sdk_dynamodb::error::DisplayErrorContext(e))),
            }
        }
        Ok(())
    }

    pub fn unlock(&self, run_id: i64) -> Result<(), Error> {
        for key in self.held_by(run_id)? {
            self.release(&key, run_id)?;
        }
        self.held.lock().unwrap().clear();
        Ok(())
    }
}

impl Dynamo {
    /// Everything the table holds (see [`super::Journal::dump`]).
    pub fn dump(&self) -> Result<Dump, Error> {
        let mut out = Dump::default();
        for r in self.run_items()? {
            let id = get_n(&r, "id").unwrap_or_default();
            out.runs.push(RunRecord {
                id,
                command: get_s(&r, "command").unwrap_or_default(),
                started_at: get_s(&r, "started_at").unwrap_or_default(),
                finished_at: get_s(&r, "finished_at"),
                status: get_s(&r, "status").unwrap_or_default(),
                plan: self.plan_of(id)?,
                pid: get_n(&r, "pid"),
                host: get_s(&r, "host"),
                parent: get_n(&r, "parent"),
            });
            out.steps.extend(self.steps(id)?.into_values().map(|st| (id, st)));
            out.instance_results.extend(self.instance_results(id)?.into_iter().map(|(i, r)| (id, i, r)));
            for i in self.query(&format!("scopes#{}", run_key(id)), false)? {
                let key = get_s(&i, "sk").unwrap_or_default();
                let (account, region) = key.split_once('/').unwrap_or((&key, ""));
                out.scope_stats.push((
                    id,
                    account.to_string(),
                    region.to_string(),
                    get_n(&i, "live_instances").unwrap_or_default(),
                    get_n(&i, "images").unwrap_or_default(),
                ));
            }
        }
        for latest in self.query("scans-latest", false)? {
            let image = get_s(&latest, "sk").unwrap_or_default();
            for i in self.query(&format!("scans#{image}"), false)? {
                out.scans.push((
                    image.clone(),
                    get_n(&i, "run_id").unwrap_or_default(),
                    get_s(&i, "scanned_at").unwrap_or_default(),
                    get_s(&i, "verdict").unwrap_or_default(),
                    get_s(&i, "report").unwrap_or_default(),
                ));
            }
        }
        for scope in self.query("retired-scopes", false)? {
            let key = get_s(&scope, "sk").unwrap_or_default();
            let (account, region) = key.split_once('/').unwrap_or((&key, ""));
            for i in self.query(&format!("retired#{key}"), false)? {
                out.retired_snapshots.push((
                    account.to_string(),
                    region.to_string(),
                    get_s(&i, "sk").unwrap_or_default(),
                    get_s(&i, "image_id").unwrap_or_default(),
                    get_n(&i, "run_id").unwrap_or_default(),
                    get_s(&i, "recorded_at").unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    }

    /// Copies `dump` in, run ids kept, the run counter moved past them.
    pub fn load(&self, dump: &Dump) -> Result<(), Error> {
        // The counter first: a run started while (or after) this copy fails gets a new id.
        let last = dump.runs.iter().map(|r| r.id).max().unwrap_or(0);
        self.put("meta", "run-counter", HashMap::from([("n".into(), n(last))]))?;
        for r in &dump.runs {
            for (i, c) in char_chunks(&r.plan).iter().enumerate() {
                self.put(
                    &format!("plan#{}", run_key(r.id)),
                    &format!("{i:06}"),
                    HashMap::from([("text".into(), s(c.clone()))]),
                )?;
            }
            let mut item = HashMap::from([
                ("id".into(), n(r.id)),
                ("command".into(), s(r.command.clone())),
                ("started_at".into(), s(r.started_at.clone())),
                ("status".into(), s(r.status.clone())),
            ]);
            let optional = [
                ("finished_at", r.finished_at.clone().map(s)),
                ("pid", r.pid.map(n)),
                ("host", r.host.clone().map(s)),
                ("parent", r.parent.map(n)),
            ];
            item.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))));
            if let Some(a) = serde_json::from_str::<serde_json::Value>(&r.plan)
                .ok()
                .and_then(|v| v.get("actions").and_then(|a| a.as_array()).map(|a| a.len() as i64))
            {
                item.insert("actions".into(), n(a));
            }
            self.put("runs", &run_key(r.id), item)?;
        }
        for (run, st) in &dump.steps {
            let mut item = HashMap::from([
                ("status".into(), s(st.status.as_str())),
                ("started_at".into(), s(st.started_at.clone())),
            ]);
            item.extend(st.detail.clone().map(|d| ("detail".to_string(), s(d))));
            item.extend(st.finished_at.clone().map(|f| ("finished_at".to_string(), s(f))));
            self.put(&format!("steps#{}", run_key(*run)), &st.action_id, item)?;
            if st.status == StepStatus::Done {
                self.put(&format!("done#{}", st.action_id), &run_key(*run), HashMap::new())?;
            }
        }
        for (run, instance, result) in &dump.instance_results {
            self.record_instance_results(*run, &[(instance.clone(), result.clone())])?;
        }
        for (image, run, at, verdict, report) in &dump.scans {
            let item = HashMap::from([
                ("run_id".into(), n(*run)),
                ("scanned_at".into(), s(at.clone())),
                ("verdict".into(), s(verdict.clone())),
                ("report".into(), s(report.clone())),
            ]);
            self.put(&format!("scans#{image}"), &run_key(*run), item.clone())?;
            let newest = dump.scans.iter().filter(|x| &x.0 == image).map(|x| x.1).max() == Some(*run);
            if newest {
                self.put("scans-latest", image, item)?;
            }
        }
        for (account, region, snap, image, run, at) in &dump.retired_snapshots {
            let key = format!("{account}/{region}");
            self.put("retired-scopes", &key, HashMap::new())?;
            let item = HashMap::from([
                ("image_id".into(), s(image.clone())),
                ("run_id".into(), n(*run)),
                ("recorded_at".into(), s(at.clone())),
            ]);
            self.put(&format!("retired#{key}"), snap, item)?;
        }
        let mut newest: HashMap<(String, String), (i64, i64, i64)> = HashMap::new();
        for (run, account, region, live, images) in &dump.scope_stats {
            let item = HashMap::from([
                ("run_id".into(), n(*run)),
                ("live_instances".into(), n(*live)),
                ("images".into(), n(*images)),
            ]);
            self.put(&format!("scopes#{}", run_key(*run)), &format!("{account}/{region}"), item)?;
            let e = newest.entry((account.clone(), region.clone())).or_insert((*run, *live, *images));
            if *run >= e.0 {
                *e = (*run, *live, *images);
            }
        }
        for ((account, region), (run, live, images)) in newest {
            let item = HashMap::from([
                ("run_id".into(), n(run)),
                ("live_instances".into(), n(live)),
                ("images".into(), n(images)),
            ]);
            self.put("scopes-latest", &format!("{account}/{region}"), item)?;
        }
        Ok(())
    }
}

/// `text` in chunks of at most [`CHUNK`] bytes, cut between characters.
fn char_chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > CHUNK {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

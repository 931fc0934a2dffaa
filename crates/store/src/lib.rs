//! coval's state: the sled store and how a stage finds the project a message names
//! (`projects`: a local path, a stored iteration, or a snapshot in the JetStream object store).
//! It must never import the bus, the sandbox or a stage crate.
//!
//! The sled store owns every tree; nothing else opens the database.
//!
//! Trees: `repairs` (RepairId → RepairRecord), `iterations` (u32 big-endian → IterationRecord),
//! `history` (category/engine/repair → HistoryRecord), `processed` (stage/message → the outputs
//! a handler published, for idempotent redelivery), `meta` (schema version, counters),
//! `generations` (u32 big-endian → GenerationRecord: how `coval generate` made an iteration),
//! `deployments` (container name → DeploymentRecord: what `coval run` started).
//! Writes that span trees go through one transaction, so a crash leaves all or none of them.
//! sled writes to disk in the background; callers that must not lose a write before acking a
//! message call [`Store::flush`]. Every state here can be rebuilt from messages and files.

pub mod projects;

use std::path::Path;
use std::sync::{Arc, Mutex};

use proto::messages::{Category, RepairOutcome};
use proto::{Envelope, IterationId, Message, MessageId, Outgoing, RepairId, Stage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

const SCHEMA_VERSION: u32 = 1;
const NEXT_ITERATION: &[u8] = b"next_iteration";
const SCHEMA: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the store at {path}: {reason}; is another coval process using this workspace?"
    )]
    Open { path: String, reason: String },
    #[error(
        "store at {path} has schema version {found}, this build reads {expected}; use a newer coval or another workspace"
    )]
    Schema {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("store IO failed: {0}")]
    Io(#[from] sled::Error),
    #[error("corrupt `{tree}` record `{key}`: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("iteration {0} does not exist")]
    NoIteration(IterationId),
    #[error("store flush failed: {0}")]
    Flush(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Io(_) | StoreError::Flush(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStatus {
    InFlight,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairRecord {
    pub id: RepairId,
    pub status: RepairStatus,
    #[serde(default)]
    pub outcome: Option<RepairOutcome>,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub source_iteration: Option<IterationId>,
    #[serde(default)]
    pub new_iteration: Option<IterationId>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IterationOrigin {
    Import { path: String },
    Repair { repair: RepairId },
    Generate { description: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub id: IterationId,
    #[serde(default)]
    pub parent: Option<IterationId>,
    pub origin: IterationOrigin,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub repair: RepairId,
    pub category: Category,
    /// `search` or the model alias.
    pub engine: String,
    pub success: bool,
    /// The decision model's features at decision time, for refitting.
    #[serde(default)]
    pub features: Vec<f64>,
    pub at_ms: u64,
    /// The search operator whose candidate was validated, for the engine's learned priors.
    #[serde(default)]
    pub operator: Option<String>,
}

/// The end of a repair, written atomically with its new iteration and history record.
#[derive(Debug, Clone)]
pub struct Completion {
    pub repair: RepairId,
    pub outcome: RepairOutcome,
    pub summary: String,
    /// Create a new iteration with this parent (`Some(None)`: a root iteration).
    pub new_iteration_parent: Option<Option<IterationId>>,
    pub history: Option<HistoryRecord>,
}

/// A message a handler published, kept to republish it unchanged on redelivery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct StoredOutput {
    headers: Vec<(String, String)>,
    kind: String,
    version: u16,
    #[serde(with = "bytes_as_bin")]
    body: Vec<u8>,
}

/// [`StoredOutput`] as written: borrowed from the output's wire form, so the record holds
/// the very headers and body the bus sends. The same MessagePack as the owned form.
#[derive(Serialize)]
struct StoredOutputRef<'a> {
    headers: &'a [(&'static str, String)],
    kind: &'a str,
    version: u16,
    #[serde(with = "bytes_as_bin")]
    body: &'a [u8],
}

mod bytes_as_bin {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(<serde_bytes_buf::Buf>::deserialize(d)?.0)
    }
    mod serde_bytes_buf {
        pub struct Buf(pub Vec<u8>);
        impl<'de> serde::Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Buf, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Buf, E> {
                        Ok(Buf(v.to_vec()))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    group: Arc<GroupFlush>,
    repairs: sled::Tree,
    iterations: sled::Tree,
    history: sled::Tree,
    processed: sled::Tree,
    meta: sled::Tree,
    generations: sled::Tree,
    deployments: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(rmp_serde::to_vec_named(v)?)
}

fn dec<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn processed_key(stage: Stage, id: &MessageId) -> Vec<u8> {
    format!("{}/{}", stage.as_str(), id).into_bytes()
}

fn history_key(h: &HistoryRecord) -> Vec<u8> {
    format!("{}/{}/{}", h.category.as_str(), h.engine, h.repair).into_bytes()
}

fn abort<E: std::fmt::Display>(e: E) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

/// The state of [`Store::flush_grouped`]: flushes are numbered (epochs); `done` carries the
/// last finished one and its result (a later success covers an earlier failure: flushes are
/// cumulative).
struct GroupFlush {
    state: Mutex<GroupState>,
    done: tokio::sync::watch::Sender<(u64, Result<(), String>)>,
}

#[derive(Default)]
struct GroupState {
    /// The epoch of the last flush started.
    started: u64,
    /// The highest epoch a caller waits for.
    wanted: u64,
    /// Whether a flusher thread runs.
    running: bool,
}

impl Default for GroupFlush {
    fn default() -> Self {
        GroupFlush {
            state: Mutex::default(),
            done: tokio::sync::watch::Sender::new((0, Ok(()))),
        }
    }
}

impl GroupFlush {
    /// The flusher thread: flushes until no caller waits for a later epoch.
    fn flush_while_wanted(&self, db: &sled::Db) {
        loop {
            let epoch = {
                let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if g.wanted <= g.started {
                    g.running = false;
                    return;
                }
                g.started += 1;
                g.started
            };
            let r = db.flush().map(|_| ()).map_err(|e| e.to_string());
            let _previous = self.done.send_replace((epoch, r));
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let store = Store {
            group: Arc::default(),
            repairs: db.open_tree("repairs")?,
            iterations: db.open_tree("iterations")?,
            history: db.open_tree("history")?,
            processed: db.open_tree("processed")?,
            meta: db.open_tree("meta")?,
            generations: db.open_tree("generations")?,
            deployments: db.open_tree("deployments")?,
            db,
        };
        match store.meta.get(SCHEMA)? {
            None => {
                store.meta.insert(SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path: path.display().to_string(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    /// Wait until everything written so far is on disk (one flush of its own).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// How many grouped flushes have started (for benches and tests: records per flush).
    pub fn grouped_flushes(&self) -> u64 {
        self.group
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started
    }

    /// Wait until everything written so far is on disk, sharing flushes with every other
    /// caller (a group commit): at most one flush runs at a time, and all who ask while it
    /// runs are served together by the next one, which starts after their writes. Many
    /// handlers' records thus cost one fsync, however many messages are in flight.
    pub async fn flush_grouped(&self) -> Result<(), StoreError> {
        let mut done = self.group.done.subscribe();
        let ticket = {
            let mut g = self.group.state.lock().unwrap_or_else(|e| e.into_inner());
            // A flush already running may have started before this caller's writes: only
            // the next one to start is sure to cover them.
            let ticket = g.started + 1;
            g.wanted = g.wanted.max(ticket);
            if !g.running {
                g.running = true;
                let (db, group) = (self.db.clone(), self.group.clone());
                let spawned = std::thread::Builder::new()
                    .name("store-flush".into())
                    .spawn(move || group.flush_while_wanted(&db));
                if let Err(e) = spawned {
                    g.running = false;
                    return Err(StoreError::Flush(format!("cannot start the flusher: {e}")));
                }
            }
            ticket
        };
        let seen = done
            .wait_for(|(epoch, _)| *epoch >= ticket)
            .await
            .map_err(|_| StoreError::Flush("the flusher went away".into()))?;
        match &seen.1 {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Flush(e.clone())),
        }
    }

    // ---- processed messages -------------------------------------------------------------

    /// The outputs recorded when `stage` handled message `id`, if it did.
    pub fn processed(
        &self,
        stage: Stage,
        id: &MessageId,
    ) -> Result<Option<Vec<(Envelope, Message)>>, StoreError> {
        let key = processed_key(stage, id);
        let Some(bytes) = self.processed.get(&key)? else {
            return Ok(None);
        };
        let outputs: Vec<StoredOutput> = dec("processed", &key, &bytes)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            tree: "processed",
            key: String::from_utf8_lossy(&key).into_owned(),
            reason,
        };
        outputs
            .into_iter()
            .map(|o| {
                let env = Envelope::from_headers(|n| {
                    o.headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.as_str())
                })
                .map_err(|e| corrupt(e.to_string()))?;
                let msg = Message::decode(&o.kind, o.version, &o.body)
                    .map_err(|e| corrupt(e.to_string()))?;
                Ok((env, msg))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Record that `stage` handled `id` by publishing `outputs` (their wire forms, made here
    /// if not yet made, and then shared with the publish).
    pub fn record_processed(
        &self,
        stage: Stage,
        id: &MessageId,
        outputs: &[Outgoing],
    ) -> Result<(), StoreError> {
        let stored = outputs
            .iter()
            .map(|o| {
                let wire = o.wire().map_err(|err| StoreError::Corrupt {
                    tree: "processed",
                    key: o.envelope.message_id.to_string(),
                    reason: err.to_string(),
                })?;
                Ok(StoredOutputRef {
                    headers: &wire.headers,
                    kind: o.envelope.kind.as_str(),
                    version: o.envelope.version,
                    body: &wire.body,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.processed
            .insert(processed_key(stage, id), enc(&stored)?)?;
        Ok(())
    }

    // ---- repairs, iterations, history ---------------------------------------------------

    /// Register a repair as in flight; an existing record is left as it is.
    pub fn begin_repair(
        &self,
        id: RepairId,
        source_iteration: Option<IterationId>,
    ) -> Result<RepairRecord, StoreError> {
        let now = vocab::now_ms();
        let rec = RepairRecord {
            id,
            status: RepairStatus::InFlight,
            outcome: None,
            summary: String::new(),
            source_iteration,
            new_iteration: None,
            created_ms: now,
            updated_ms: now,
        };
        let key = id.to_string();
        match self
            .repairs
            .compare_and_swap(&key, None as Option<&[u8]>, Some(enc(&rec)?))?
        {
            Ok(()) => Ok(rec),
            Err(cur) => match cur.current {
                Some(bytes) => dec("repairs", key.as_bytes(), &bytes),
                None => Ok(rec),
            },
        }
    }

    pub fn repair(&self, id: &RepairId) -> Result<Option<RepairRecord>, StoreError> {
        let key = id.to_string();
        self.repairs
            .get(&key)?
            .map(|b| dec("repairs", key.as_bytes(), &b))
            .transpose()
    }

    pub fn repairs(&self) -> Result<Vec<RepairRecord>, StoreError> {
        self.repairs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                dec("repairs", &k, &v)
            })
            .collect()
    }

    /// Complete a repair: its record, its new iteration and its history entry in one
    /// transaction. Completing an already completed repair changes nothing and returns the
    /// record as it was, with `false`.
    pub fn complete_repair(&self, c: &Completion) -> Result<(RepairRecord, bool), StoreError> {
        let key = c.repair.to_string();
        let history_kv = match &c.history {
            Some(h) => Some((history_key(h), enc(h)?)),
            None => None,
        };
        let result = (&self.repairs, &self.iterations, &self.history, &self.meta).transaction(
            |(repairs, iterations, history, meta)| {
                let now = vocab::now_ms();
                let existing: Option<RepairRecord> = match repairs.get(&key)? {
                    Some(b) => Some(rmp_serde::from_slice(&b).map_err(abort)?),
                    None => None,
                };
                if let Some(r) = &existing
                    && r.status == RepairStatus::Completed
                {
                    return Ok((r.clone(), false));
                }
                let mut rec = existing.unwrap_or(RepairRecord {
                    id: c.repair,
                    status: RepairStatus::InFlight,
                    outcome: None,
                    summary: String::new(),
                    source_iteration: None,
                    new_iteration: None,
                    created_ms: now,
                    updated_ms: now,
                });
                if let Some(parent) = c.new_iteration_parent {
                    if let Some(p) = parent
                        && iterations.get(p.0.to_be_bytes())?.is_none()
                    {
                        return Err(abort(StoreError::NoIteration(p)));
                    }
                    let next = match meta.get(NEXT_ITERATION)? {
                        Some(b) => <[u8; 4]>::try_from(b.as_ref())
                            .map(u32::from_be_bytes)
                            .map_err(abort)?,
                        None => 1,
                    };
                    let it = IterationRecord {
                        id: IterationId(next),
                        parent,
                        origin: IterationOrigin::Repair { repair: c.repair },
                        created_ms: now,
                    };
                    iterations.insert(&next.to_be_bytes(), enc(&it).map_err(abort)?)?;
                    meta.insert(NEXT_ITERATION, &(next + 1).to_be_bytes())?;
                    rec.new_iteration = Some(IterationId(next));
                }
                if let Some((hk, hv)) = &history_kv {
                    history.insert(hk.as_slice(), hv.as_slice())?;
                }
                rec.status = RepairStatus::Completed;
                rec.outcome = Some(c.outcome);
                rec.summary = c.summary.clone();
                rec.updated_ms = now;
                repairs.insert(key.as_bytes(), enc(&rec).map_err(abort)?)?;
                Ok((rec, true))
            },
        );
        result.map_err(|e| match e {
            TransactionError::Abort(reason) => StoreError::Corrupt {
                tree: "repairs",
                key: key.clone(),
                reason,
            },
            TransactionError::Storage(e) => StoreError::Io(e),
        })
    }

    /// Add an iteration that does not come from a repair (an import or a generation).
    pub fn add_iteration(
        &self,
        parent: Option<IterationId>,
        origin: IterationOrigin,
    ) -> Result<IterationRecord, StoreError> {
        let result = (&self.iterations, &self.meta).transaction(|(iterations, meta)| {
            if let Some(p) = parent
                && iterations.get(p.0.to_be_bytes())?.is_none()
            {
                return Err(abort(StoreError::NoIteration(p)));
            }
            let next = match meta.get(NEXT_ITERATION)? {
                Some(b) => <[u8; 4]>::try_from(b.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(abort)?,
                None => 1,
            };
            let it = IterationRecord {
                id: IterationId(next),
                parent,
                origin: origin.clone(),
                created_ms: vocab::now_ms(),
            };
            iterations.insert(&next.to_be_bytes(), enc(&it).map_err(abort)?)?;
            meta.insert(NEXT_ITERATION, &(next + 1).to_be_bytes())?;
            Ok(it)
        });
        result.map_err(|e| match e {
            TransactionError::Abort(reason) => StoreError::Corrupt {
                tree: "iterations",
                key: String::new(),
                reason,
            },
            TransactionError::Storage(e) => StoreError::Io(e),
        })
    }

    /// Forget an iteration (its files are the caller's to delete). Children keep their
    /// record of the parent id.
    pub fn remove_iteration(&self, id: IterationId) -> Result<bool, StoreError> {
        Ok(self.iterations.remove(id.0.to_be_bytes())?.is_some())
    }

    /// The iterations retention would remove to keep the newest `keep`: never a deployed
    /// one, nor one in `protected` (the one just made), oldest last in the list.
    pub fn retention_plan(
        &self,
        keep: usize,
        protected: &[IterationId],
    ) -> Result<Vec<IterationId>, StoreError> {
        let deployed: Vec<IterationId> = self
            .deployments()?
            .into_iter()
            .map(|d| d.iteration)
            .collect();
        let mut ids: Vec<IterationId> = self.iterations()?.into_iter().map(|i| i.id).collect();
        ids.sort_by_key(|i| std::cmp::Reverse(*i));
        Ok(ids
            .into_iter()
            .skip(keep)
            .filter(|i| !protected.contains(i) && !deployed.contains(i))
            .collect())
    }

    pub fn iterations(&self) -> Result<Vec<IterationRecord>, StoreError> {
        self.iterations
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                dec("iterations", &k, &v)
            })
            .collect()
    }

    /// The id the next iteration will get.
    pub fn next_iteration(&self) -> Result<IterationId, StoreError> {
        Ok(IterationId(match self.meta.get(NEXT_ITERATION)? {
            Some(b) => <[u8; 4]>::try_from(b.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|e| StoreError::Corrupt {
                    tree: "meta",
                    key: "next_iteration".into(),
                    reason: e.to_string(),
                })?,
            None => 1,
        }))
    }

    /// Recorded outcomes, optionally of one category.
    pub fn history(&self, category: Option<Category>) -> Result<Vec<HistoryRecord>, StoreError> {
        let prefix = category
            .map(|c| format!("{}/", c.as_str()))
            .unwrap_or_default();
        self.history
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                dec("history", &k, &v)
            })
            .collect()
    }
}

/// Recorded outcomes of past repairs, by category: the store in the embedded mode and in the
/// worker that owns the ledger, nothing where no history is reachable.
pub trait HistorySource: Send + Sync + 'static {
    fn outcomes(&self, category: Category) -> Result<Vec<HistoryRecord>, StoreError>;
}

impl HistorySource for Store {
    fn outcomes(&self, category: Category) -> Result<Vec<HistoryRecord>, StoreError> {
        self.history(Some(category))
    }
}

/// No history: every estimate uses the configured priors.
pub struct NoHistory;

impl HistorySource for NoHistory {
    fn outcomes(&self, _: Category) -> Result<Vec<HistoryRecord>, StoreError> {
        Ok(vec![])
    }
}

/// How `coval generate` made an iteration, and whether its own tests passed in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub iteration: IterationId,
    pub framework: String,
    pub language: String,
    #[serde(default)]
    pub features: Vec<String>,
    /// The model alias that wrote the features; `None`: the template alone.
    #[serde(default)]
    pub model: Option<String>,
    /// `Some(true)` once the app's tests passed in the sandbox; `None`: not run.
    #[serde(default)]
    pub tests_passed: Option<bool>,
    #[serde(default)]
    pub test_summary: String,
    pub created_ms: u64,
}

/// One container `coval run` started and that has not been stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// `coval-<project>-<iteration>`: the key.
    pub container: String,
    pub project: String,
    pub iteration: IterationId,
    pub image: String,
    /// overlay, copy or symlink.
    pub strategy: String,
    /// host or bridge.
    pub network: String,
    /// Where the proxy sends traffic for this version (`127.0.0.1:PORT`, or `NAME:PORT`).
    pub backend: String,
    /// The port users connect to; the proxy container owns it.
    pub stable_port: u16,
    pub proxy: String,
    pub started_ms: u64,
}

impl Store {
    pub fn put_generation(&self, g: &GenerationRecord) -> Result<(), StoreError> {
        self.generations
            .insert(g.iteration.0.to_be_bytes(), enc(g)?)?;
        Ok(())
    }

    pub fn generation(&self, id: IterationId) -> Result<Option<GenerationRecord>, StoreError> {
        let key = id.0.to_be_bytes();
        self.generations
            .get(key)?
            .map(|b| dec("generations", &key, &b))
            .transpose()
    }

    pub fn put_deployment(&self, d: &DeploymentRecord) -> Result<(), StoreError> {
        self.deployments.insert(d.container.as_bytes(), enc(d)?)?;
        Ok(())
    }

    pub fn remove_deployment(&self, container: &str) -> Result<bool, StoreError> {
        Ok(self.deployments.remove(container.as_bytes())?.is_some())
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.deployments
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                dec("deployments", &k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_newest_the_protected_and_the_deployed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ids: Vec<IterationId> = (0..6)
            .map(|_| {
                store
                    .add_iteration(None, IterationOrigin::Import { path: "p".into() })
                    .unwrap()
                    .id
            })
            .collect();
        store
            .put_deployment(&DeploymentRecord {
                container: "coval-p-iter-002".into(),
                project: "p".into(),
                iteration: ids[1],
                image: "i".into(),
                strategy: "copy".into(),
                network: "host".into(),
                backend: "127.0.0.1:8001".into(),
                stable_port: 8000,
                proxy: "coval-p-proxy-8000".into(),
                started_ms: 0,
            })
            .unwrap();
        let plan = store.retention_plan(2, &[ids[0]]).unwrap();
        // Newest two (6, 5) kept; 1 protected; 2 deployed; 4 and 3 go, newest first.
        assert_eq!(plan, vec![ids[3], ids[2]]);
        assert!(store.retention_plan(10, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_recorded_output_is_read_back_as_it_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = RepairId::new();
        let input = Envelope::origin(proto::Kind::RepairRequested, r);
        let msg = Message::RepairCompleted(proto::messages::RepairCompleted {
            repair_id: r,
            outcome: RepairOutcome::Fixed,
            summary: "fixed app/calc.py:3".into(),
            new_iteration: Some(IterationId(4)),
            report_dir: None,
            completed_at_ms: 1_764_000_005_000,
            report: None,
            blocked: None,
        });
        let mut env = Envelope::derived(&input, Stage::Integrate, 0, msg.kind(), r, None);
        env.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let out = Outgoing::new(env.clone(), std::sync::Arc::new(msg.clone()));
        store
            .record_processed(
                Stage::Integrate,
                &input.message_id,
                std::slice::from_ref(&out),
            )
            .unwrap();
        assert_eq!(
            store
                .processed(Stage::Integrate, &input.message_id)
                .unwrap(),
            Some(vec![(env, msg)])
        );
        // The record holds the wire form the publish then sends, in the owned layout that
        // records of earlier releases have.
        let bytes = store
            .processed
            .get(processed_key(Stage::Integrate, &input.message_id))
            .unwrap()
            .unwrap();
        let stored: Vec<StoredOutput> = dec("processed", b"k", &bytes).unwrap();
        let wire = out.into_wire().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].body, wire.body);
        let sent: Vec<(String, String)> = wire
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(stored[0].headers, sent);
        assert_eq!(
            (stored[0].kind.as_str(), stored[0].version),
            (
                "repair_completed",
                proto::Kind::RepairCompleted.current_version()
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_flushes_serve_many_writers_with_few_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writers = 200;
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = MessageId::new();
                    store.record_processed(Stage::Fix, &id, &[]).unwrap();
                    store.flush_grouped().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushes = store.grouped_flushes();
        assert!(
            (1..writers / 2).contains(&(flushes as usize)),
            "{flushes} flushes for {writers} writers"
        );
        // A lone caller after the burst still gets a flush of its own.
        store.flush_grouped().await.unwrap();
        assert_eq!(store.grouped_flushes(), flushes + 1);
    }
}

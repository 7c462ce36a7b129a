//! Checkpoints in PostgreSQL: one row per checkpoint holding the sealed
//! document, with the columns listings and lineage walks need. Listing and
//! `latest` use the `(workflow, id)` index; UUIDv7 ids sort by time, so
//! newest first is `ORDER BY id DESC`.

use super::{Cached, Db, PgAudit, TxResult};
use crate::checkpoint::{
    Chain, ChainLink, ChainStop, Checkpoint, CheckpointBackend, FindQuery, IndexRepair,
    ListContent, ListEntry, ListQuery, NewCheckpoint, ParentChoice, PendingWrite, PrunePolicy,
    Pruned, Removal, StateSnapshot, WriteRule, decode_writes, encode_writes, fold_writes,
    only_holder, parent_may_be_gone, require_rule, same_checkpoint_again, select_for_pruning,
    validate_id, validate_writes, writes_to_store,
};
use crate::clock;
use crate::error::{Error, Result, Size};
use crate::id;
use crate::name::validate_name;
use postgres::GenericClient;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct PgCheckpoints {
    db: Arc<Db>,
    audit: PgAudit,
    max_bytes: u64,
    lock_timeout: Option<Duration>,
}

impl PgCheckpoints {
    pub(crate) fn new(
        db: Arc<Db>,
        audit: PgAudit,
        max_bytes: u64,
        lock_timeout: Option<Duration>,
    ) -> Self {
        PgCheckpoints {
            db,
            audit,
            max_bytes,
            lock_timeout,
        }
    }

    fn decode(&self, id: &str, workflow: &str, document: &str) -> Result<Checkpoint> {
        Checkpoint::decode(
            document.as_bytes(),
            &self.db.row_path("wfstate_checkpoints", id),
            id,
            workflow,
        )
    }

    fn workflows_of(&self, workflow: Option<&str>) -> Result<Vec<String>> {
        match workflow {
            Some(w) => {
                validate_name(w)?;
                Ok(vec![w.to_string()])
            }
            None => self.workflows(),
        }
    }

    fn prune_workflow(&self, workflow: &str, policy: &PrunePolicy) -> Result<Vec<Pruned>> {
        self.db
            .transaction("prune checkpoints", self.lock_timeout, |tx| {
                self.db.xact_lock(tx, "checkpoint", workflow)?;
                let rows = tx.query(
                    "SELECT id, created_at FROM wfstate_checkpoints WHERE workflow = $1 ORDER BY id",
                    &[&workflow],
                )?;
                let records: Vec<(String, String)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                let ages: Vec<u64> = records
                    .iter()
                    .map(|(_, created)| clock::parse_rfc3339_micros(created).unwrap_or(0))
                    .collect();
                let pruned: Vec<Pruned> = records
                    .into_iter()
                    .zip(select_for_pruning(&ages, policy))
                    .filter(|(_, prune)| *prune)
                    .map(|((id, created_at), _)| Pruned {
                        workflow: workflow.to_string(),
                        id,
                        created_at,
                    })
                    .collect();
                if policy.dry_run || pruned.is_empty() {
                    return Ok(pruned);
                }
                let ids: Vec<&str> = pruned.iter().map(|p| p.id.as_str()).collect();
                tx.execute(
                    "DELETE FROM wfstate_checkpoints WHERE workflow = $1 AND id = ANY($2)",
                    &[&workflow, &ids],
                )?;
                self.audit.append_one_in(
                    tx,
                    "checkpoint_prune",
                    serde_json::json!({"workflow": workflow, "ids": ids}),
                )?;
                Ok(pruned)
            })
    }
}

impl PgCheckpoints {
    /// The writes stored against checkpoint `id`, verified, in the order
    /// they were stored.
    fn stored_writes<C: GenericClient>(
        &self,
        c: &mut Cached<'_, C>,
        workflow: &str,
        id: &str,
    ) -> TxResult<Vec<PendingWrite>> {
        let rows = c.query(
            "SELECT seq::text, document FROM wfstate_checkpoint_writes \
             WHERE workflow = $1 AND checkpoint = $2 ORDER BY seq",
            &[&workflow, &id],
        )?;
        let mut writes = Vec::new();
        for row in &rows {
            let path = self.db.row_path("wfstate_checkpoint_writes", row.get(0));
            let document: &str = row.get(1);
            writes.extend(decode_writes(document.as_bytes(), &path, workflow, id)?);
        }
        Ok(writes)
    }
}

impl CheckpointBackend for PgCheckpoints {
    fn create(&self, new: NewCheckpoint, state: Option<StateSnapshot>) -> Result<Checkpoint> {
        let workflow = new.workflow.clone();
        validate_name(&workflow)?;
        if let ParentChoice::Id(parent) = &new.parent {
            validate_id(parent)?;
        }
        self.db
            .transaction("create checkpoint", self.lock_timeout, |tx| {
                // Creators of one workflow's checkpoints queue here, so ids
                // and "latest" parents are assigned in order.
                self.db.xact_lock(tx, "checkpoint", &workflow)?;
                let newest: Option<String> = tx
                    .query_opt(
                        "SELECT id FROM wfstate_checkpoints WHERE workflow = $1 \
                         ORDER BY id DESC LIMIT 1",
                        &[&workflow],
                    )?
                    .map(|r| r.get(0));
                let parent = match &new.parent {
                    ParentChoice::Root => None,
                    ParentChoice::Latest => newest.clone(),
                    ParentChoice::Id(parent) if parent_may_be_gone(&new) => Some(parent.clone()),
                    ParentChoice::Id(parent) => {
                        let exists = tx
                            .query_opt(
                                "SELECT 1 FROM wfstate_checkpoints WHERE workflow = $1 AND id = $2",
                                &[&workflow, parent],
                            )?
                            .is_some();
                        if !exists {
                            return Err(Error::NotFound {
                                what: format!(
                                    "parent checkpoint {parent} in workflow {workflow:?}"
                                ),
                                path: None,
                            }
                            .into());
                        }
                        Some(parent.clone())
                    }
                };
                let id = match &new.id {
                    None => id::next_after(newest.as_deref()),
                    Some(given) => {
                        validate_id(given)?;
                        let existing: Option<String> = tx
                            .query_opt(
                                "SELECT document FROM wfstate_checkpoints \
                                 WHERE workflow = $1 AND id = $2",
                                &[&workflow, given],
                            )?
                            .map(|r| r.get(0));
                        if let Some(document) = existing {
                            let existing = self.decode(given, &workflow, &document)?;
                            return Ok(same_checkpoint_again(existing, &new, parent.as_deref())?);
                        }
                        given.clone()
                    }
                };
                let checkpoint = Checkpoint::assemble(
                    new.clone(),
                    id.clone(),
                    parent,
                    clock::now_rfc3339(),
                    state.clone(),
                );
                let bytes = checkpoint.to_bytes();
                if bytes.len() as u64 > self.max_bytes {
                    return Err(Error::TooLarge {
                        what: format!("checkpoint of workflow {workflow:?}"),
                        size: Size::Exactly(bytes.len() as u64),
                        limit: self.max_bytes,
                    }
                    .into());
                }
                let text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
                let metadata = checkpoint
                    .metadata
                    .as_ref()
                    .map(|m| serde_json::to_string(m).expect("metadata serializes"));
                tx.execute(
                    "INSERT INTO wfstate_checkpoints \
                     (id, workflow, parent, created_at, phase, document, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)",
                    &[
                        &checkpoint.id,
                        &workflow,
                        &checkpoint.parent,
                        &checkpoint.created_at,
                        &checkpoint.phase,
                        &text,
                        &metadata,
                    ],
                )?;
                self.audit.append_one_in(
                    tx,
                    "checkpoint_create",
                    serde_json::json!({"workflow": workflow, "id": id,
                                       "parent": checkpoint.parent,
                                       "checksum": checkpoint.checksum}),
                )?;
                Ok(checkpoint)
            })
    }

    fn get(&self, id: &str) -> Result<Checkpoint> {
        let workflow = self.workflow_of(id)?;
        self.get_in(&workflow, id)?.ok_or_else(|| Error::NotFound {
            what: format!("checkpoint {id}"),
            path: None,
        })
    }

    fn latest(&self, workflow: &str) -> Result<Option<Checkpoint>> {
        validate_name(workflow)?;
        let row = self.db.with("read checkpoint", |c| {
            Ok(c.query_opt(
                "SELECT id, document FROM wfstate_checkpoints WHERE workflow = $1 \
                 ORDER BY id DESC LIMIT 1",
                &[&workflow],
            )?
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
        })?;
        row.map(|(id, document)| self.decode(&id, workflow, &document))
            .transpose()
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<ListEntry>> {
        if let Some(before) = &query.before {
            validate_id(before)?;
        }
        if let Some(workflow) = &query.workflow {
            validate_name(workflow)?;
        }
        let limit = query.limit.min(i64::MAX as usize) as i64;
        let rows = self.db.with("list checkpoints", |c| {
            Ok(c.query(
                "SELECT id, workflow, created_at, parent, document FROM wfstate_checkpoints \
                 WHERE ($1::text IS NULL OR workflow = $1) \
                   AND ($2::text IS NULL OR phase = $2) \
                   AND ($3::text IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4",
                &[&query.workflow, &query.phase, &query.before, &limit],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let workflow: String = r.get(1);
                let content = match self.decode(&id, &workflow, r.get(4)) {
                    Ok(cp) => ListContent::Ok {
                        phase: cp.phase,
                        item: cp.item,
                        message: cp.message,
                    },
                    Err(e) => ListContent::Corrupt {
                        error: e.to_string(),
                    },
                };
                ListEntry {
                    id,
                    workflow,
                    created_at: r.get(2),
                    parent: r.get(3),
                    content,
                }
            })
            .collect())
    }

    fn workflow_of(&self, id: &str) -> Result<String> {
        validate_id(id)?;
        let holders: Vec<String> = self.db.with("find a checkpoint", |c| {
            Ok(c.query(
                "SELECT workflow FROM wfstate_checkpoints WHERE id = $1 ORDER BY workflow",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })?;
        only_holder(id, holders)
    }

    fn chain_in(&self, workflow: &str, id: &str, max_depth: usize) -> Result<Chain> {
        validate_name(workflow)?;
        validate_id(id)?;
        // One recursive query walks parent links within the workflow. It is
        // bounded by depth rather than by cycle tracking (which costs the
        // chain's length per step); a cycle shows up below as a repeat.
        let depth_bound = max_depth.saturating_add(1).min(i32::MAX as usize) as i32;
        let rows = self.db.with("walk a checkpoint lineage", |c| {
            Ok(c.query(
                "WITH RECURSIVE lineage(id, workflow, parent, created_at, depth) AS ( \
                   SELECT id, workflow, parent, created_at, 1 FROM wfstate_checkpoints \
                    WHERE workflow = $3 AND id = $1 \
                   UNION ALL \
                   SELECT p.id, p.workflow, p.parent, p.created_at, l.depth + 1 \
                   FROM lineage l JOIN wfstate_checkpoints p \
                     ON p.id = l.parent AND p.workflow = l.workflow \
                   WHERE l.depth < $2) \
                 SELECT id, parent, created_at FROM lineage ORDER BY depth",
                &[&id, &depth_bound, &workflow],
            )?)
        })?;
        if rows.is_empty() {
            return Err(Error::NotFound {
                what: format!("checkpoint {id}"),
                path: None,
            });
        }
        let mut links: Vec<ChainLink> = Vec::new();
        let mut seen = HashSet::new();
        let mut rows = rows.iter();
        let stopped = loop {
            if links.len() == max_depth {
                break Some(ChainStop::MaxDepth { depth: max_depth });
            }
            let Some(row) = rows.next() else {
                let last = links.last().expect("the first row exists");
                break Some(ChainStop::MissingParent {
                    at: last.id.clone(),
                    missing: last
                        .parent
                        .clone()
                        .expect("walk continues only with a parent"),
                });
            };
            let link = ChainLink {
                id: row.get(0),
                parent: row.get(1),
                created_at: row.get(2),
            };
            seen.insert(link.id.clone());
            let parent = link.parent.clone();
            links.push(link);
            match parent {
                None => break None,
                Some(p) if seen.contains(&p) => {
                    let at = links.last().expect("just pushed").id.clone();
                    break Some(ChainStop::Cycle { at, repeats: p });
                }
                Some(_) => {}
            }
        };
        Ok(Chain { links, stopped })
    }

    fn prune(&self, policy: &PrunePolicy) -> Result<Vec<Pruned>> {
        require_rule(policy)?;
        let mut pruned = Vec::new();
        for workflow in self.workflows_of(policy.workflow.as_deref())? {
            pruned.extend(self.prune_workflow(&workflow, policy)?);
        }
        Ok(pruned)
    }

    fn workflows(&self) -> Result<Vec<String>> {
        self.db.with("list checkpoint workflows", |c| {
            Ok(c.query(
                "SELECT DISTINCT workflow FROM wfstate_checkpoints ORDER BY workflow",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn get_in(&self, workflow: &str, id: &str) -> Result<Option<Checkpoint>> {
        validate_name(workflow)?;
        validate_id(id)?;
        let document: Option<String> = self.db.with("read checkpoint", |c| {
            Ok(c.query_opt(
                "SELECT document FROM wfstate_checkpoints WHERE workflow = $1 AND id = $2",
                &[&workflow, &id],
            )?
            .map(|r| r.get(0)))
        })?;
        document.map(|d| self.decode(id, workflow, &d)).transpose()
    }

    fn find(&self, query: &FindQuery) -> Result<Vec<Checkpoint>> {
        let workflow = query.workflow.as_str();
        validate_name(workflow)?;
        for id in query.before.iter().chain(&query.id) {
            validate_id(id)?;
        }
        let filter = (!query.metadata.is_empty())
            .then(|| serde_json::to_string(&query.metadata).expect("metadata serializes"));
        let limit = query.limit.map(|l| l.min(i64::MAX as usize) as i64);
        let rows = self.db.with("find checkpoints", |c| {
            Ok(c.query(
                "SELECT id, document FROM wfstate_checkpoints \
                 WHERE workflow = $1 \
                   AND ($2::text IS NULL OR id < $2) \
                   AND ($3::text IS NULL OR id = $3) \
                   AND ($4::text IS NULL OR metadata @> $4::text::jsonb) \
                   AND (NOT $6 OR metadata IS NOT NULL) \
                 ORDER BY id DESC LIMIT $5",
                &[
                    &workflow,
                    &query.before,
                    &query.id,
                    &filter,
                    &limit,
                    &query.recorded_only,
                ],
            )?)
        })?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let cp = self.decode(row.get(0), workflow, row.get(1))?;
            // Containment is looser than equality for nested values.
            if query.matches(&cp) {
                found.push(cp);
            }
        }
        Ok(found)
    }

    fn put_writes(
        &self,
        workflow: &str,
        id: &str,
        batch: &[PendingWrite],
        rule: WriteRule,
    ) -> Result<usize> {
        validate_name(workflow)?;
        validate_id(id)?;
        validate_writes(batch)?;
        self.db
            .transaction("store pending writes", self.lock_timeout, |tx| {
                // The checkpoint need not exist yet (see the file store).
                self.db.xact_lock(tx, "checkpoint", workflow)?;
                let stored = self.stored_writes(tx, workflow, id)?;
                let new = writes_to_store(&stored, batch, rule);
                if !new.is_empty() {
                    let document = String::from_utf8(encode_writes(workflow, id, &new))
                        .expect("serde_json writes UTF-8");
                    tx.execute(
                        "INSERT INTO wfstate_checkpoint_writes (workflow, checkpoint, document) \
                         VALUES ($1, $2, $3)",
                        &[&workflow, &id, &document],
                    )?;
                }
                Ok(new.len())
            })
    }

    fn writes(&self, workflow: &str, id: &str) -> Result<Vec<PendingWrite>> {
        validate_name(workflow)?;
        validate_id(id)?;
        let stored = self.db.with("read pending writes", |c| {
            self.stored_writes(c, workflow, id)
        })?;
        Ok(fold_writes(stored))
    }

    fn remove(&self, workflow: &str, which: &Removal) -> Result<Vec<Pruned>> {
        validate_name(workflow)?;
        self.db
            .transaction("remove checkpoints", self.lock_timeout, |tx| {
                self.db.xact_lock(tx, "checkpoint", workflow)?;
                let rows = tx.query(
                    "SELECT id, created_at, metadata::text FROM wfstate_checkpoints \
                     WHERE workflow = $1 ORDER BY id",
                    &[&workflow],
                )?;
                let described: Vec<(String, Option<serde_json::Map<String, serde_json::Value>>)> =
                    rows.iter()
                        .map(|r| {
                            let metadata: Option<String> = r.get(2);
                            let metadata = metadata.and_then(|m| serde_json::from_str(&m).ok());
                            (r.get(0), metadata)
                        })
                        .collect();
                let removed: Vec<Pruned> = rows
                    .iter()
                    .zip(which.selects(&described))
                    .filter(|(_, remove)| *remove)
                    .map(|(r, _)| Pruned {
                        workflow: workflow.to_string(),
                        id: r.get(0),
                        created_at: r.get(1),
                    })
                    .collect();
                if removed.is_empty() {
                    return Ok(removed);
                }
                let ids: Vec<&str> = removed.iter().map(|p| p.id.as_str()).collect();
                tx.execute(
                    "DELETE FROM wfstate_checkpoints WHERE workflow = $1 AND id = ANY($2)",
                    &[&workflow, &ids],
                )?;
                if removed.len() == rows.len() {
                    // Nothing is left that writes could belong to: writes
                    // stored before a checkpoint that never came go too.
                    tx.execute(
                        "DELETE FROM wfstate_checkpoint_writes WHERE workflow = $1",
                        &[&workflow],
                    )?;
                } else {
                    tx.execute(
                        "DELETE FROM wfstate_checkpoint_writes \
                         WHERE workflow = $1 AND checkpoint = ANY($2)",
                        &[&workflow, &ids],
                    )?;
                }
                self.audit.append_one_in(
                    tx,
                    "checkpoint_remove",
                    serde_json::json!({"workflow": workflow, "ids": ids}),
                )?;
                Ok(removed)
            })
    }

    fn take_repairs(&self) -> Vec<IndexRepair> {
        // The database maintains its own indexes: there is nothing to repair.
        Vec::new()
    }

    fn rebuild_index(&self, workflow: &str, _reason: &str) -> Result<usize> {
        validate_name(workflow)?;
        let count: i64 = self.db.with("count checkpoints", |c| {
            Ok(c.query_one(
                "SELECT count(*) FROM wfstate_checkpoints WHERE workflow = $1",
                &[&workflow],
            )?
            .get(0))
        })?;
        Ok(count as usize)
    }
}

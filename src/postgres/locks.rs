//! Named locks in PostgreSQL: session-level advisory locks, each held on a
//! connection of its own.
//!
//! The server holds an advisory lock for as long as the session that took it
//! lives, and drops it the moment that session ends: the holder's process
//! exits or is killed (its socket closes), its machine vanishes (TCP
//! keepalive, about a minute), or an administrator terminates the backend.
//! Nothing is ever stale and no pid is ever checked, as with the file
//! store's flocks. What the server cannot do is tell a holder that it lost
//! its lock; that is what fencing (the generation a state write carries) and
//! [`LockHold::still_held`] are for.
//!
//! Holders record who they are in `wfstate_lock_holders` (for display);
//! `status` takes the truth from `pg_locks`.

use super::{Db, advisory_key, db_error};
use crate::error::{Error, Result};
use crate::lock::holder::HolderRecord;
use crate::lock::{
    Held, LockHold, LockMode, LockRequest, LockStatus, NamedLocks, Recording, WaitNotice,
    status::RecordView,
};
use crate::name::validate_name;
use postgres::Client;
use postgres::error::SqlState;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest wait PostgreSQL's `lock_timeout` can express (its maximum,
/// `INT_MAX` milliseconds, about 24.8 days); longer waits are made of
/// several.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

pub(crate) struct PgLocks {
    db: Arc<Db>,
}

/// A lock this thread holds: the connection that holds it, and how many
/// guards share it (locks are reentrant within a thread).
struct Holding {
    mode: LockMode,
    count: usize,
    key: i64,
    client: Client,
}

thread_local! {
    /// Keyed by (store location, lock name).
    static HELD: RefCell<HashMap<(String, String), Holding>> = RefCell::new(HashMap::new());
}

/// Holds a PostgreSQL lock until dropped. Not `Send`, like the file
/// store's guard: reentrancy is tracked per thread.
struct PgGuard {
    slot: (String, String),
    mode: LockMode,
    location: String,
    _not_send: PhantomData<*const ()>,
}

impl LockHold for PgGuard {
    fn name(&self) -> &str {
        &self.slot.1
    }

    fn mode(&self) -> LockMode {
        self.mode
    }

    fn share_with_children(&self) -> Result<bool> {
        Ok(false)
    }

    fn still_held(&self) -> Result<()> {
        let held = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let entry = held
                .get_mut(&self.slot)
                .expect("a live guard is registered");
            entry.client.query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND pid = pg_backend_pid() AND objsubid = 1 \
                 AND classid::bigint = $1 AND objid::bigint = $2",
                &[&key_high(entry.key), &key_low(entry.key)],
            )
        });
        match held {
            Ok(row) if row.get::<_, i64>(0) > 0 => Ok(()),
            Ok(_) => Err(lost(
                &self.slot.1,
                &self.location,
                "the server no longer lists it",
            )),
            Err(e) => Err(lost(
                &self.slot.1,
                &self.location,
                &db_error("check the lock", &self.location, &e).to_string(),
            )),
        }
    }
}

fn lost(name: &str, location: &str, why: &str) -> Error {
    Error::Database {
        op: "hold lock",
        location: location.to_string(),
        message: format!(
            "lock {name:?} was lost (its session ended, e.g. a server restart or \
             pg_terminate_backend): {why}"
        ),
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let released = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            let entry = held.get_mut(&self.slot)?;
            entry.count -= 1;
            if entry.count == 0 {
                held.remove(&self.slot)
            } else {
                None
            }
        });
        if let Ok(Some(mut entry)) = released {
            // Unlock explicitly rather than only closing the connection:
            // the server ends a closed session asynchronously, and the lock
            // must be free when the guard's drop returns. Failures are
            // ignored: closing the connection below releases it anyway.
            let unlock = match entry.mode {
                LockMode::Shared => "SELECT pg_advisory_unlock_shared($1)",
                LockMode::Exclusive => "SELECT pg_advisory_unlock($1)",
            };
            let _ = entry.client.execute(
                "DELETE FROM wfstate_lock_holders WHERE backend_pid = pg_backend_pid() AND name = $1",
                &[&self.slot.1],
            );
            let _ = entry.client.execute(unlock, &[&entry.key]);
        }
    }
}

/// The two 32-bit halves `pg_locks` shows a bigint advisory key as.
fn key_high(key: i64) -> i64 {
    ((key as u64) >> 32) as i64
}

fn key_low(key: i64) -> i64 {
    ((key as u64) & 0xFFFF_FFFF) as i64
}

impl PgLocks {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        PgLocks { db }
    }

    fn key(&self, name: &str) -> i64 {
        advisory_key(self.db.schema(), "lock", name)
    }

    fn slot(&self, name: &str) -> (String, String) {
        (self.db.location().to_string(), name.to_string())
    }

    fn guard(&self, name: &str, mode: LockMode) -> Box<dyn LockHold> {
        Box::new(PgGuard {
            slot: self.slot(name),
            mode,
            location: self.db.location().to_string(),
            _not_send: PhantomData,
        })
    }

    /// The reentrant path: the thread already holds `name`.
    fn reenter(&self, name: &str, mode: LockMode) -> Result<Option<Box<dyn LockHold>>> {
        let slot = self.slot(name);
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            let Some(entry) = held.get_mut(&slot) else {
                return Ok(None);
            };
            if entry.mode == LockMode::Shared && mode == LockMode::Exclusive {
                return Err(Error::LockMisuse {
                    lock: name.to_string(),
                    problem: "this thread holds it shared and asked for it exclusive; \
                              release the shared lock first"
                        .into(),
                });
            }
            entry.count += 1;
            Ok(Some(()))
        })
        .map(|reentered| reentered.map(|()| self.guard(name, mode)))
    }

    /// Tries once; `Ok(true)` if acquired.
    fn try_once(&self, client: &mut Client, key: i64, mode: LockMode) -> Result<bool> {
        let sql = match mode {
            LockMode::Shared => "SELECT pg_try_advisory_lock_shared($1)",
            LockMode::Exclusive => "SELECT pg_try_advisory_lock($1)",
        };
        client
            .query_one(sql, &[&key])
            .map(|r| r.get(0))
            .map_err(|e| db_error("acquire lock", self.db.location(), &e))
    }

    /// Waits at most `limit` (forever with `None`); `Ok(false)` on timeout.
    fn wait(
        &self,
        client: &mut Client,
        key: i64,
        mode: LockMode,
        limit: Option<Duration>,
    ) -> Result<bool> {
        let mut left = limit;
        loop {
            let this_wait = left.map(|l| l.min(MAX_LOCK_TIMEOUT));
            if self.wait_once(client, key, mode, this_wait)? {
                return Ok(true);
            }
            left = left.map(|l| l.saturating_sub(this_wait.expect("a limit was set")));
            if left.is_none_or(|l| l.is_zero()) {
                return Ok(false);
            }
        }
    }

    /// One wait of at most `limit`, which `lock_timeout` can hold.
    fn wait_once(
        &self,
        client: &mut Client,
        key: i64,
        mode: LockMode,
        limit: Option<Duration>,
    ) -> Result<bool> {
        // 0 turns the timeout off: wait until the lock is granted.
        let ms = limit.map_or(0, |l| l.as_millis().max(1));
        let sql = match mode {
            LockMode::Shared => "SELECT pg_advisory_lock_shared($1)",
            LockMode::Exclusive => "SELECT pg_advisory_lock($1)",
        };
        let waited = client
            .batch_execute(&format!("SET lock_timeout = {ms}"))
            .and_then(|()| client.execute(sql, &[&key]));
        match waited {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
            Err(e) => Err(db_error("acquire lock", self.db.location(), &e)),
        }
    }

    fn timed_out(&self, name: &str, waited: Duration) -> Error {
        Error::LockTimeout {
            lock: name.to_string(),
            waited,
            holder: self.status(name).ok().map(|s| s.describe()),
        }
    }
}

impl NamedLocks for PgLocks {
    fn acquire(&self, name: &str, request: LockRequest<'_>) -> Result<Box<dyn LockHold>> {
        validate_name(name)?;
        if let Some(guard) = self.reenter(name, request.mode)? {
            return Ok(guard);
        }
        let started = Instant::now();
        let key = self.key(name);
        let mut client = self.db.dedicated_connection()?;
        client
            .execute(
                "INSERT INTO wfstate_lock_names (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .map_err(|e| db_error("register lock", self.db.location(), &e))?;
        let mut acquired = self.try_once(&mut client, key, request.mode)?;
        if !acquired && request.timeout != Some(Duration::ZERO) {
            let mut remaining = request.timeout;
            if let Some(notice) = &request.notice {
                if !notice.after.is_zero() {
                    let first = remaining.map_or(notice.after, |r| r.min(notice.after));
                    acquired = self.wait(&mut client, key, request.mode, Some(first))?;
                    remaining = remaining.map(|r| r.saturating_sub(first));
                }
                if !acquired && remaining != Some(Duration::ZERO) {
                    (notice.notify)(&WaitNotice {
                        lock: name.to_string(),
                        mode: request.mode,
                        status: self.status(name).ok(),
                    });
                }
            }
            if !acquired && remaining != Some(Duration::ZERO) {
                acquired = self.wait(&mut client, key, request.mode, remaining)?;
            }
        }
        if !acquired {
            return Err(self.timed_out(name, started.elapsed()));
        }
        if request.recording == Recording::Durable {
            let record = HolderRecord::for_current_process(name, request.mode, request.purpose);
            let text = serde_json::to_string(&record).expect("a record serializes");
            // Records of sessions that have ended are display-only leftovers;
            // the new holder's record supersedes them.
            client
                .execute(
                    "DELETE FROM wfstate_lock_holders WHERE name = $1 \
                     AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity)",
                    &[&name],
                )
                .and_then(|_| {
                    client.execute(
                        "INSERT INTO wfstate_lock_holders (backend_pid, name, record) \
                         VALUES (pg_backend_pid(), $1, $2) \
                         ON CONFLICT (backend_pid, name) DO UPDATE SET record = EXCLUDED.record",
                        &[&name, &text],
                    )
                })
                .map_err(|e| db_error("record lock holder", self.db.location(), &e))?;
        }
        HELD.with(|held| {
            held.borrow_mut().insert(
                self.slot(name),
                Holding {
                    mode: request.mode,
                    count: 1,
                    key,
                    client,
                },
            )
        });
        Ok(self.guard(name, request.mode))
    }

    fn status(&self, name: &str) -> Result<LockStatus> {
        validate_name(name)?;
        let key = self.key(name);
        let (locks, records) = self.db.with("read lock status", |c| {
            let locks = c.query(
                "SELECT pid, mode, granted FROM pg_locks \
                 WHERE locktype = 'advisory' AND objsubid = 1 \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND classid::bigint = $1 AND objid::bigint = $2",
                &[&key_high(key), &key_low(key)],
            )?;
            let records = c.query(
                "SELECT backend_pid, record FROM wfstate_lock_holders WHERE name = $1 \
                 ORDER BY backend_pid",
                &[&name],
            )?;
            Ok((locks, records))
        })?;
        let mut exclusive = false;
        let mut shared = 0;
        let mut waiters = 0;
        let mut holding_pids = Vec::new();
        for row in &locks {
            let pid: i32 = row.get(0);
            let mode: &str = row.get(1);
            let granted: bool = row.get(2);
            if !granted {
                waiters += 1;
                continue;
            }
            holding_pids.push(pid);
            match mode {
                "ExclusiveLock" => exclusive = true,
                _ => shared += 1,
            }
        }
        let held = if exclusive {
            Held::Exclusive
        } else if shared > 0 {
            Held::Shared {
                holders: Some(shared),
            }
        } else {
            Held::Free
        };
        let records = records
            .iter()
            .filter_map(|row| {
                let backend_pid: i32 = row.get(0);
                let record: HolderRecord = serde_json::from_str(row.get(1)).ok()?;
                Some(RecordView {
                    record,
                    holding: Some(holding_pids.contains(&backend_pid)),
                })
            })
            .collect();
        Ok(LockStatus {
            name: name.to_string(),
            held,
            // The server's sessions hold these locks, not client processes;
            // who they are is in the records.
            kernel_pids: None,
            waiters: Some(waiters),
            records,
        })
    }

    fn list(&self) -> Result<Vec<LockStatus>> {
        let names: Vec<String> = self.db.with("list locks", |c| {
            Ok(
                c.query("SELECT name FROM wfstate_lock_names ORDER BY name", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            )
        })?;
        names.iter().map(|n| self.status(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_the_halves_pg_locks_shows() {
        let key = -2i64; // 0xFFFF_FFFF_FFFF_FFFE
        assert_eq!(key_high(key), 0xFFFF_FFFF);
        assert_eq!(key_low(key), 0xFFFF_FFFE);
        assert_eq!(key_high(1 << 32), 1);
        assert_eq!(key_low(1 << 32), 0);
    }
}

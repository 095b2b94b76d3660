//! WebDAV write locks (RFC 4918, 6 and 9.10), kept in SQLite so they
//! survive a restart. Locks belong to URL paths, not inodes: a lock may
//! name a path that does not exist yet (RFC 4918, 7.3).
//!
//! Conflict rules: an exclusive lock conflicts with every other lock on
//! the same resources; shared locks coexist. A lock covers its own path,
//! and with depth infinity everything below it. Expired locks are
//! ignored everywhere and purged when a new lock is taken.

use super::{Caller, Fs, FsError, FsResult, now_ns};
use crate::meta::{Db, PathLock};

/// Lifetime of a lock whose client asked for none; an unbounded lock left
/// by a crashed client would block its resource forever.
pub const DEFAULT_LOCK_TIMEOUT_S: u64 = 3600;

/// A lock to take.
#[derive(Clone, Debug)]
pub struct LockRequest {
    /// The path, as in [`PathLock::path`].
    pub path: Vec<u8>,
    /// Who asks, if principals are known.
    pub principal: Option<String>,
    /// The client's `DAV:owner` element, as XML.
    pub owner_xml: Option<Vec<u8>>,
    /// Seconds until it lapses (`None`: [`DEFAULT_LOCK_TIMEOUT_S`]).
    pub timeout_s: Option<u64>,
    /// Shared rather than exclusive.
    pub shared: bool,
    /// Depth infinity.
    pub deep: bool,
}

/// Who is asking in [`Fs::check_locks`], and with which tokens.
#[derive(Clone, Copy, Debug)]
pub struct LockHolder<'a> {
    /// The requester's principal.
    pub principal: Option<&'a str>,
    /// Accept a submitted token whatever principal took the lock.
    pub any_principal: bool,
    /// Lock tokens the request submitted (its `If` header).
    pub tokens: &'a [String],
}

impl LockHolder<'_> {
    const NOBODY: LockHolder<'static> = LockHolder { principal: None, any_principal: true, tokens: &[] };

    fn holds(&self, lock: &PathLock) -> bool {
        self.tokens.contains(&lock.token)
            && (self.any_principal || self.principal == lock.principal.as_deref())
    }
}

/// A path without trailing slashes: the key locks are stored under.
pub fn lock_key(path: &[u8]) -> &[u8] {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &path[..end]
}

/// `key` and each of its ancestors, root (`""`) first.
fn ancestors_and_self(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let cuts = key.iter().enumerate().filter(|&(_, &b)| b == b'/').map(|(i, _)| i);
    cuts.chain(std::iter::once(key.len())).map(|end| &key[..end])
}

fn expiry(now: i64, timeout_s: Option<u64>) -> (Option<i64>, Option<u64>) {
    let timeout = timeout_s.unwrap_or(DEFAULT_LOCK_TIMEOUT_S);
    let ns = i64::try_from(timeout).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
    (Some(now.saturating_add(ns)), Some(timeout))
}

/// Locks on `key` and its ancestors that stand in the way of `holder`.
/// With `shared_ok`, shared locks do not (taking another shared lock).
fn conflict_on_path(
    db: &Db<'_>,
    key: &[u8],
    now: i64,
    holder: &LockHolder<'_>,
    shared_ok: bool,
) -> FsResult<Option<PathLock>> {
    let mut holds_one = false;
    let mut shared_seen = None;
    for prefix in ancestors_and_self(key) {
        for lock in db.locks_at(prefix, now)? {
            // A depth-0 lock on an ancestor covers only that ancestor.
            if prefix.len() < key.len() && !lock.deep {
                continue;
            }
            if holder.holds(&lock) {
                holds_one = true;
            } else if !lock.shared {
                return Ok(Some(lock));
            } else if !shared_ok {
                shared_seen.get_or_insert(lock);
            }
        }
    }
    // Shared locks give way to the holder of any one of them.
    Ok(if holds_one { None } else { shared_seen })
}

/// Locks on `key` or below it that stand in the way of `holder`.
fn conflict_below(
    db: &Db<'_>,
    key: &[u8],
    now: i64,
    holder: &LockHolder<'_>,
    shared_ok: bool,
) -> FsResult<Option<PathLock>> {
    let mut locks = db.locks_at(key, now)?;
    locks.extend(db.locks_below(key, now)?);
    Ok(locks.into_iter().find(|lock| (!lock.shared || !shared_ok) && !holder.holds(lock)))
}

/// Locks in force at once, in the whole tree, by default: each is a row
/// and is checked on every change below it, so clients may not pile them
/// up (see [`super::FsOptions::max_locks`]).
pub const MAX_LOCKS: u64 = 100_000;

impl Fs {
    /// How many locks are in force.
    pub fn active_locks(&self) -> FsResult<u64> {
        let now = now_ns();
        Ok(self.meta.read(|db| db.active_locks(now))?)
    }

    /// Take a lock, unless one in force conflicts: then `Ok(Err(that))`.
    /// Fails with [`FsError::LimitReached`] at the limit of locks.
    pub fn lock_path(&self, request: &LockRequest, caller: &Caller) -> FsResult<Result<PathLock, PathLock>> {
        self.transact(caller.origin, |tx| {
            let key = lock_key(&request.path);
            let nobody = LockHolder::NOBODY;
            if let Some(conflict) = conflict_on_path(tx.db, key, tx.now, &nobody, request.shared)? {
                return Ok(Err(conflict));
            }
            if request.deep
                && let Some(conflict) = conflict_below(tx.db, key, tx.now, &nobody, request.shared)?
            {
                return Ok(Err(conflict));
            }
            if tx.db.active_locks(tx.now)? >= self.max_locks {
                return Err(FsError::LimitReached("too many locks"));
            }
            let (expires_ns, timeout_s) = expiry(tx.now, request.timeout_s);
            let lock = PathLock {
                token: uuid::Uuid::new_v4().urn().to_string(),
                path: key.to_vec(),
                principal: request.principal.clone(),
                owner_xml: request.owner_xml.clone(),
                deep: request.deep,
                shared: request.shared,
                expires_ns,
                timeout_s,
            };
            tx.db.insert_lock(&lock, tx.now)?;
            Ok(Ok(lock))
        })
    }

    /// The lock with `token` on `path` or an ancestor of it.
    fn find_lock(db: &Db<'_>, path: &[u8], token: &str, now: i64) -> FsResult<Option<PathLock>> {
        for prefix in ancestors_and_self(lock_key(path)) {
            if let Some(lock) = db.locks_at(prefix, now)?.into_iter().find(|l| l.token == token) {
                return Ok(Some(lock));
            }
        }
        Ok(None)
    }

    /// Release the lock `token` that covers `path`; whether there was one.
    pub fn unlock_path(&self, path: &[u8], token: &str, caller: &Caller) -> FsResult<bool> {
        self.transact(caller.origin, |tx| match Self::find_lock(tx.db, path, token, tx.now)? {
            Some(lock) => Ok(tx.db.delete_lock(&lock.token, &lock.path)?),
            None => Ok(false),
        })
    }

    /// Give the lock `token` that covers `path` a new lifetime (`None`:
    /// the one it was granted); `None` if there is no such lock.
    pub fn refresh_lock(
        &self,
        path: &[u8],
        token: &str,
        timeout_s: Option<u64>,
        caller: &Caller,
    ) -> FsResult<Option<PathLock>> {
        self.transact(caller.origin, |tx| {
            let Some(mut lock) = Self::find_lock(tx.db, path, token, tx.now)? else {
                return Ok(None);
            };
            (lock.expires_ns, lock.timeout_s) = expiry(tx.now, timeout_s.or(lock.timeout_s));
            tx.db.refresh_lock(&lock)?;
            Ok(Some(lock))
        })
    }

    /// Whether `holder` may change `path` (and, with `deep`, everything
    /// below it): `Ok(Err(lock))` names a lock in the way.
    pub fn check_locks(
        &self,
        path: &[u8],
        deep: bool,
        holder: &LockHolder<'_>,
    ) -> FsResult<Result<(), PathLock>> {
        let now = now_ns();
        self.meta.read(|db| {
            let key = lock_key(path);
            if let Some(conflict) = conflict_on_path(db, key, now, holder, false)? {
                return Ok(Err(conflict));
            }
            if deep && let Some(conflict) = conflict_below(db, key, now, holder, false)? {
                return Ok(Err(conflict));
            }
            Ok(Ok(()))
        })
    }

    /// The locks in force on `path`: its own and its ancestors' deep ones.
    pub fn locks_covering(&self, path: &[u8]) -> FsResult<Vec<PathLock>> {
        let now = now_ns();
        self.meta.read(|db| {
            let key = lock_key(path);
            let mut found = Vec::new();
            for prefix in ancestors_and_self(key) {
                let own = prefix.len() == key.len();
                found.extend(db.locks_at(prefix, now)?.into_iter().filter(|lock| own || lock.deep));
            }
            Ok(found)
        })
    }

    /// The locks in force strictly below `path`, for listings: with
    /// [`Fs::locks_covering`] of the directory, they give every entry's
    /// locks without a query per entry.
    pub fn locks_below(&self, path: &[u8]) -> FsResult<Vec<PathLock>> {
        let now = now_ns();
        Ok(self.meta.read(|db| db.locks_below(lock_key(path), now))?)
    }

    /// Drop every lock on `path` and below (the resources are gone).
    pub fn remove_locks_under(&self, path: &[u8], caller: &Caller) -> FsResult<()> {
        self.transact(caller.origin, |tx| Ok(tx.db.delete_locks_under(lock_key(path))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_trailing_slashes_and_ancestors_start_at_the_root() {
        assert_eq!(lock_key(b"/a/b/"), b"/a/b");
        assert_eq!(lock_key(b"/"), b"");
        let all: Vec<&[u8]> = ancestors_and_self(b"/a/bc").collect();
        assert_eq!(all, [&b""[..], b"/a", b"/a/bc"]);
        let root: Vec<&[u8]> = ancestors_and_self(b"").collect();
        assert_eq!(root, [&b""[..]]);
    }
}

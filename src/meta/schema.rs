//! The SQLite schema and its migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each
//! migration runs in its own transaction; a data dir written by a newer
//! tsmfs (higher version than we know) is refused rather than guessed at.

use rusqlite::Connection;

use super::MetaError;

/// Migrations in order; index + 1 is the schema version after applying.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE contents (
        id          INTEGER PRIMARY KEY,
        lo          BLOB    NOT NULL CHECK (length(lo) = 20),
        hi          INTEGER NOT NULL CHECK (hi >= 0),
        size        INTEGER NOT NULL CHECK (size >= 0),
        blake3      BLOB    NOT NULL CHECK (length(blake3) = 32),
        refcount    INTEGER NOT NULL CHECK (refcount >= 0),
        created_ns  INTEGER NOT NULL,
        UNIQUE (lo, hi)
    );

    CREATE TABLE inodes (
        ino         INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        INTEGER NOT NULL,
        perm        INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        gid         INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        atime_ns    INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        btime_ns    INTEGER NOT NULL,
        nlink       INTEGER NOT NULL,
        rdev        INTEGER NOT NULL DEFAULT 0,
        content     INTEGER REFERENCES contents (id),
        symlink     BLOB,
        generation  INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX inodes_by_content ON inodes (content) WHERE content IS NOT NULL;
    CREATE INDEX inodes_orphaned ON inodes (ino) WHERE nlink = 0;

    -- id is the readdir cursor: it only grows, so a listing resumed after
    -- concurrent inserts and deletes never repeats or skips a survivor.
    CREATE TABLE dirents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        parent      INTEGER NOT NULL REFERENCES inodes (ino),
        name        BLOB    NOT NULL,
        child       INTEGER NOT NULL REFERENCES inodes (ino),
        UNIQUE (parent, name)
    );
    CREATE INDEX dirents_by_parent ON dirents (parent, id);
    CREATE INDEX dirents_by_child ON dirents (child);

    CREATE TABLE xattrs (
        ino         INTEGER NOT NULL REFERENCES inodes (ino) ON DELETE CASCADE,
        name        BLOB    NOT NULL,
        value       BLOB    NOT NULL,
        PRIMARY KEY (ino, name)
    ) WITHOUT ROWID;

    -- WebDAV dead properties: name in Clark notation "{namespace}local",
    -- value the raw XML of the property element.
    CREATE TABLE dead_props (
        ino         INTEGER NOT NULL REFERENCES inodes (ino) ON DELETE CASCADE,
        name        TEXT    NOT NULL,
        value       BLOB    NOT NULL,
        PRIMARY KEY (ino, name)
    ) WITHOUT ROWID;

    -- WebDAV locks are on paths (RFC 4918 locks the resource at a URL,
    -- and lock-null resources have no inode yet).
    CREATE TABLE locks (
        token       TEXT    PRIMARY KEY,
        path        BLOB    NOT NULL,
        principal   TEXT,
        owner_xml   BLOB,
        deep        INTEGER NOT NULL,
        shared      INTEGER NOT NULL,
        expires_ns  INTEGER,
        created_ns  INTEGER NOT NULL
    );
    CREATE INDEX locks_by_path ON locks (path);

    -- Every change, appended in the transaction that makes it.
    CREATE TABLE changes (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ns       INTEGER NOT NULL,
        origin      TEXT    NOT NULL,
        op          TEXT    NOT NULL,
        ino         INTEGER NOT NULL,
        parent      INTEGER,
        name        BLOB,
        new_parent  INTEGER,
        new_name    BLOB,
        content     TEXT
    );

    CREATE TABLE settings (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: a lock's requested timeout, for refreshes that name none.
    r#"
    ALTER TABLE locks ADD COLUMN timeout_s INTEGER;
    "#,
];

/// The SQL of migration `index` (to version `index + 1`).
#[cfg(test)]
pub(super) fn migration(index: usize) -> &'static str {
    MIGRATIONS[index]
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring `conn` up to [`SCHEMA_VERSION`]; returns the version found.
pub fn migrate(conn: &mut Connection) -> Result<u32, MetaError> {
    let found: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(MetaError::sql("read schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(MetaError::SchemaTooNew { found, known: SCHEMA_VERSION });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .map_err(MetaError::sql("begin migration"))?;
        tx.execute_batch(sql).map_err(MetaError::sql("apply migration"))?;
        tx.pragma_update(None, "user_version", version).map_err(MetaError::sql("record schema version"))?;
        tx.commit().map_err(MetaError::sql("commit migration"))?;
    }
    Ok(found)
}

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
    // 3: chunked content. A file is a list of extents, each a range of a
    // chunk object; `contents` holds both chunks (objects, counted by
    // `chunk_refs`) and whole-file identities (ETags, counted by
    // `refcount`). Every existing object becomes the one chunk of the
    // files that held it: no object moves.
    r#"
    ALTER TABLE contents ADD COLUMN chunk_refs INTEGER NOT NULL DEFAULT 0 CHECK (chunk_refs >= 0);
    UPDATE contents SET chunk_refs = refcount;
    ALTER TABLE inodes ADD COLUMN data_seq INTEGER NOT NULL DEFAULT 0;

    -- The live extents of each file: bytes [off, off + len) of the file
    -- are bytes [chunk_off, chunk_off + len) of the chunk. Gaps are zeros.
    -- added_seq: the change that wrote the row.
    CREATE TABLE extents (
        ino         INTEGER NOT NULL REFERENCES inodes (ino),
        off         INTEGER NOT NULL CHECK (off >= 0),
        len         INTEGER NOT NULL CHECK (len > 0),
        chunk       INTEGER NOT NULL REFERENCES contents (id),
        chunk_off   INTEGER NOT NULL CHECK (chunk_off >= 0),
        added_seq   INTEGER NOT NULL,
        PRIMARY KEY (ino, off)
    ) WITHOUT ROWID;
    INSERT INTO extents (ino, off, len, chunk, chunk_off, added_seq)
        SELECT ino, 0, size, content, 0, 0 FROM inodes WHERE content IS NOT NULL AND size > 0;

    -- Extents replaced or removed by change `seq`. They keep their chunk
    -- referenced until every change up to `seq` is durable (a power cut
    -- may need them to roll a file back) and no open version reads them.
    CREATE TABLE retired_extents (
        seq         INTEGER NOT NULL,
        ino         INTEGER NOT NULL,
        off         INTEGER NOT NULL,
        len         INTEGER NOT NULL,
        chunk       INTEGER NOT NULL REFERENCES contents (id),
        chunk_off   INTEGER NOT NULL,
        added_seq   INTEGER NOT NULL
    );
    CREATE INDEX retired_by_seq ON retired_extents (seq);
    CREATE INDEX retired_by_ino ON retired_extents (ino, seq);

    -- A file's size and times before change `seq` wrote its content (or
    -- that the change created it): what a roll-back after a power cut
    -- restores. Kept until `seq` is durable.
    CREATE TABLE write_undo (
        seq         INTEGER NOT NULL,
        ino         INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        created     INTEGER NOT NULL,
        PRIMARY KEY (ino, seq)
    ) WITHOUT ROWID;

    -- Chunk objects written since the last filesystem sync: what recovery
    -- verifies after an unclean stop.
    CREATE TABLE unsynced_chunks (
        chunk       INTEGER PRIMARY KEY REFERENCES contents (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL
    );

    INSERT OR REPLACE INTO settings (key, value)
        SELECT 'durable_seq', CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM changes;
    "#,
    // 4: extents by chunk. Deleting a chunk's row checks that no extent
    // names it (foreign keys), and recovery finds the files reading a lost
    // chunk: without these, each is a scan of every extent.
    r#"
    CREATE INDEX extents_by_chunk ON extents (chunk);
    CREATE INDEX retired_by_chunk ON retired_extents (chunk);
    "#,
    // 5: MD5s of whole contents, computed when first asked for (clients
    // that compare MD5, with `--md5`); they go with their content.
    r#"
    CREATE TABLE content_md5 (
        content     INTEGER PRIMARY KEY REFERENCES contents (id) ON DELETE CASCADE,
        md5         BLOB NOT NULL
    );
    "#,
    // 6: small chunks kept in the database itself, written by the
    // transaction that first names them and durable with it (no object
    // file, no filesystem sync). Read in place of an object file.
    // And the change log without AUTOINCREMENT: no row of it is ever
    // deleted, so its rowid already counts on from the newest, and the
    // counter kept beside it cost every transaction one more page.
    r#"
    CREATE TABLE chunk_bytes (
        chunk       INTEGER PRIMARY KEY REFERENCES contents (id) ON DELETE CASCADE,
        bytes       BLOB NOT NULL
    );

    CREATE TABLE changes_rowid (
        seq         INTEGER PRIMARY KEY,
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
    INSERT INTO changes_rowid SELECT seq, at_ns, origin, op, ino, parent, name, new_parent, new_name, content FROM changes;
    DROP TABLE changes;
    ALTER TABLE changes_rowid RENAME TO changes;
    DELETE FROM sqlite_sequence WHERE name = 'changes';
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

//! Typed queries. Every SQL statement of tsmfs lives in this file.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    ChangeRecord, ContentRecord, DirRow, ExtentRow, FileKind, Inode, MetaError, PathLock, RetiredRow, Totals,
    WriteUndo,
};
use crate::id::{ContentId, Ino};

/// Columns of [`Inode`], in the order [`inode_from_row`] reads them.
macro_rules! inode_columns {
    () => {
        "i.ino, i.kind, i.perm, i.uid, i.gid, i.size, i.atime_ns, i.mtime_ns, i.ctime_ns, \
         i.btime_ns, i.nlink, i.rdev, i.generation, i.data_seq, c.hi, c.lo"
    };
}

// ---- SQL ----------------------------------------------------------------
//
// Every statement in one place. Equality terms in joins and ORDER BY
// queries compare with `+?N`, not `?N`: SQLite 3.54 re-prepares such a
// statement on every execution after `sqlite3_clear_bindings` (which
// rusqlite's statement cache calls) when the right-hand side is a bare
// parameter; the unary plus keeps the index and the cached plan. The test
// `no_statement_is_re_prepared` guards this.

const INODE_BY_INO: &str = concat!(
    "SELECT ",
    inode_columns!(),
    " FROM inodes i LEFT JOIN contents c ON c.id = i.content WHERE i.ino = +?1"
);
const ORPHANED_INODES: &str = concat!(
    "SELECT ",
    inode_columns!(),
    " FROM inodes i LEFT JOIN contents c ON c.id = i.content WHERE i.nlink = 0"
);
const LOOKUP: &str = concat!(
    "SELECT ",
    inode_columns!(),
    " FROM dirents d JOIN inodes i ON i.ino = d.child LEFT JOIN contents c ON c.id = i.content WHERE d.parent = +?1 AND d.name = +?2"
);
// The parent's kind, and the entry's inode if there is one: a failed
// lookup tells "no such entry" from "not a directory" in one statement.
const LOOKUP_IN: &str = concat!(
    "SELECT p.kind, ",
    inode_columns!(),
    " FROM inodes p LEFT JOIN dirents d ON d.parent = p.ino AND d.name = +?2 LEFT JOIN inodes i ON i.ino = d.child \
     LEFT JOIN contents c ON c.id = i.content WHERE p.ino = +?1"
);
const LIST_DIR: &str = concat!(
    "SELECT d.id, d.name, ",
    inode_columns!(),
    " FROM dirents d JOIN inodes i ON i.ino = d.child LEFT JOIN contents c ON c.id = i.content WHERE d.parent = +?1 AND d.id > +?2 ORDER BY d.id LIMIT +?3"
);
const INSERT_INODE: &str = "INSERT INTO inodes (kind, perm, uid, gid, size, atime_ns, mtime_ns, ctime_ns, btime_ns, nlink, rdev, content, symlink) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?6, ?7, ?8, (SELECT id FROM contents WHERE lo = ?9 AND hi = ?10), ?11)";
const UPDATE_INODE: &str = "UPDATE inodes SET perm = ?2, uid = ?3, gid = ?4, size = ?5, atime_ns = ?6, mtime_ns = ?7, ctime_ns = ?8, nlink = ?9, rdev = ?10, content = (SELECT id FROM contents WHERE lo = ?11 AND hi = ?12), data_seq = ?13, btime_ns = ?14 WHERE ino = ?1";
const SET_CONTENT_IF_VERSION: &str = "UPDATE inodes SET content = (SELECT id FROM contents WHERE lo = ?3 AND hi = ?4) WHERE ino = ?1 AND data_seq = ?2 AND content IS NULL";
const TOUCH_DIR: &str = "UPDATE inodes SET mtime_ns = ?2, ctime_ns = ?2 WHERE ino = ?1";
const ADD_LINKS: &str = "UPDATE inodes SET nlink = nlink + ?2, ctime_ns = ?3 WHERE ino = ?1";
const DELETE_INODE: &str = "DELETE FROM inodes WHERE ino = ?1";
const SYMLINK_TARGET: &str = "SELECT symlink FROM inodes WHERE ino = ?1";
const HAS_ENTRIES: &str = "SELECT EXISTS (SELECT 1 FROM dirents WHERE parent = ?1)";
const PARENT_OF_DIR: &str = "SELECT parent, name FROM dirents WHERE child = ?1 LIMIT 1";
const INSERT_DIRENT: &str = "INSERT INTO dirents (parent, name, child) VALUES (?1, ?2, ?3)";
const DELETE_DIRENT: &str = "DELETE FROM dirents WHERE parent = ?1 AND name = ?2";
const MOVE_DIRENT: &str = "UPDATE dirents SET parent = ?3, name = ?4 WHERE parent = ?1 AND name = ?2";
const RETARGET_DIRENT: &str = "UPDATE dirents SET child = ?3 WHERE parent = ?1 AND name = ?2";
const CONTENTS_WITH_SHA1: &str =
    "SELECT hi, lo, size, blake3, refcount, chunk_refs FROM contents WHERE lo = +?1 ORDER BY hi";
const CONTENT_BY_ID: &str =
    "SELECT hi, lo, size, blake3, refcount, chunk_refs FROM contents WHERE lo = ?1 AND hi = ?2";
const INSERT_CONTENT: &str =
    "INSERT INTO contents (lo, hi, size, blake3, refcount, created_ns) VALUES (?1, ?2, ?3, ?4, 0, ?5)";
const ADD_CONTENT_REFS: &str =
    "UPDATE contents SET refcount = refcount + ?3 WHERE lo = ?1 AND hi = ?2 RETURNING refcount";
const DELETE_CONTENT: &str = "DELETE FROM contents WHERE lo = ?1 AND hi = ?2";
const HOLDERS_OF_CONTENT: &str = concat!(
    "SELECT d.name, ",
    inode_columns!(),
    " FROM inodes i JOIN contents c ON c.id = i.content JOIN dirents d ON d.child = i.ino \
     WHERE c.lo = +?1 AND c.hi = +?2 LIMIT ?3"
);
const ADD_CHUNK_REFS: &str = "UPDATE contents SET chunk_refs = chunk_refs + ?3 WHERE lo = ?1 AND hi = ?2 RETURNING chunk_refs, refcount";
const DELETE_CONTENT_IF_UNUSED: &str =
    "DELETE FROM contents WHERE lo = ?1 AND hi = ?2 AND refcount = 0 AND chunk_refs = 0";
const EXTENTS_OF: &str = "SELECT e.off, e.len, c.hi, c.lo, e.chunk_off FROM extents e JOIN contents c ON c.id = e.chunk WHERE e.ino = +?1 ORDER BY e.off";
const EXTENTS_AS_OF: &str = "SELECT e.off, e.len, c.hi, c.lo, e.chunk_off FROM extents e JOIN contents c ON c.id = e.chunk WHERE e.ino = +?1 AND e.added_seq <= +?2 UNION ALL SELECT r.off, r.len, c.hi, c.lo, r.chunk_off FROM retired_extents r JOIN contents c ON c.id = r.chunk WHERE r.ino = +?1 AND r.added_seq <= +?2 AND r.seq > +?2 ORDER BY 1";
const EXTENT_AT_OR_BEFORE: &str = "SELECT e.off, e.len, c.hi, c.lo, e.chunk_off FROM extents e JOIN contents c ON c.id = e.chunk WHERE e.ino = +?1 AND e.off <= +?2 ORDER BY e.off DESC LIMIT 1";
const EXTENTS_INSIDE: &str = "SELECT e.off, e.len, c.hi, c.lo, e.chunk_off FROM extents e JOIN contents c ON c.id = e.chunk WHERE e.ino = +?1 AND e.off > +?2 AND e.off < +?3 ORDER BY e.off";
const INSERT_EXTENT: &str = "INSERT INTO extents (ino, off, len, chunk, chunk_off, added_seq) VALUES (?1, ?2, ?3, (SELECT id FROM contents WHERE lo = ?4 AND hi = ?5), ?6, ?7)";
const RETIRE_EXTENT: &str = "INSERT INTO retired_extents (seq, ino, off, len, chunk, chunk_off, added_seq) SELECT ?3, ino, off, len, chunk, chunk_off, added_seq FROM extents WHERE ino = ?1 AND off = ?2";
const DELETE_EXTENT: &str = "DELETE FROM extents WHERE ino = ?1 AND off = ?2";
const RETIRE_ALL_EXTENTS: &str = "INSERT INTO retired_extents (seq, ino, off, len, chunk, chunk_off, added_seq) SELECT ?2, ino, off, len, chunk, chunk_off, added_seq FROM extents WHERE ino = ?1";
const DELETE_ALL_EXTENTS: &str = "DELETE FROM extents WHERE ino = ?1";
const RETIRED_UP_TO: &str = "SELECT r.rowid, r.seq, r.ino, c.hi, c.lo FROM retired_extents r JOIN contents c ON c.id = r.chunk WHERE r.seq <= +?1 AND r.rowid > +?2 ORDER BY r.rowid LIMIT +?3";
const DELETE_RETIRED: &str = "DELETE FROM retired_extents WHERE rowid = ?1";
const INSERT_UNDO: &str = "INSERT OR IGNORE INTO write_undo (seq, ino, size, mtime_ns, ctime_ns, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const PRUNE_UNDO: &str = "DELETE FROM write_undo WHERE seq <= ?1";
const FIRST_UNDO_FROM: &str = "SELECT seq, size, mtime_ns, ctime_ns, created FROM write_undo WHERE ino = +?1 AND seq >= +?2 ORDER BY seq LIMIT 1";
const MARK_UNSYNCED: &str = "INSERT OR REPLACE INTO unsynced_chunks (chunk, seq) VALUES ((SELECT id FROM contents WHERE lo = ?1 AND hi = ?2), ?3)";
const UNSYNCED_CHUNKS: &str = "SELECT c.hi, c.lo, c.size, c.blake3, c.refcount, c.chunk_refs FROM unsynced_chunks u JOIN contents c ON c.id = u.chunk ORDER BY c.lo";
const PRUNE_UNSYNCED: &str = "DELETE FROM unsynced_chunks WHERE seq <= ?1";
// The few unsynced chunks first, each looked up by chunk: a file under
// random writes has hundreds of thousands of extents. Marks of changes a
// sync has covered stay until the next prune round; they do not count.
const READS_UNSYNCED: &str = "SELECT EXISTS (SELECT 1 FROM unsynced_chunks u CROSS JOIN extents e ON e.chunk = u.chunk WHERE u.seq > ?2 AND e.ino = +?1)";
const ANY_UNSYNCED: &str = "SELECT EXISTS (SELECT 1 FROM unsynced_chunks WHERE seq > ?1)";
const ANY_XATTR_NAMED: &str = "SELECT EXISTS (SELECT 1 FROM xattrs WHERE name = ?1)";
const PUT_CHUNK_BYTES: &str = "INSERT OR REPLACE INTO chunk_bytes (chunk, bytes) VALUES ((SELECT id FROM contents WHERE lo = ?1 AND hi = ?2), ?3)";
const CHUNK_BYTES: &str =
    "SELECT bytes FROM chunk_bytes WHERE chunk = (SELECT id FROM contents WHERE lo = ?1 AND hi = ?2)";
const HAS_CHUNK_BYTES: &str = "SELECT EXISTS (SELECT 1 FROM chunk_bytes WHERE chunk = (SELECT id FROM contents WHERE lo = ?1 AND hi = ?2))";
const DELETE_CHUNK_BYTES: &str =
    "DELETE FROM chunk_bytes WHERE chunk = (SELECT id FROM contents WHERE lo = ?1 AND hi = ?2)";
const INLINE_BYTES: &str = "SELECT COALESCE(SUM(length(bytes)), 0) FROM chunk_bytes";
const INLINE_CHUNK_SIZES: &str =
    "SELECT c.hi, c.lo, length(b.bytes) FROM chunk_bytes b JOIN contents c ON c.id = b.chunk";
const LIVE_EXTENT_USERS: &str = "SELECT e.ino, MIN(e.added_seq) FROM extents e JOIN contents c ON c.id = e.chunk WHERE c.lo = +?1 AND c.hi = +?2 GROUP BY e.ino";
const RETIRE_LIVE_SINCE: &str = "INSERT INTO retired_extents (seq, ino, off, len, chunk, chunk_off, added_seq) SELECT ?3, ino, off, len, chunk, chunk_off, added_seq FROM extents WHERE ino = ?1 AND added_seq >= ?2";
const DELETE_LIVE_SINCE: &str = "DELETE FROM extents WHERE ino = ?1 AND added_seq >= ?2";
const RESTORE_RETIRED_SINCE: &str = "INSERT INTO extents (ino, off, len, chunk, chunk_off, added_seq) SELECT ino, off, len, chunk, chunk_off, added_seq FROM retired_extents WHERE ino = ?1 AND seq >= ?2 AND added_seq < ?2";
const DELETE_RESTORED_SINCE: &str =
    "DELETE FROM retired_extents WHERE ino = ?1 AND seq >= ?2 AND added_seq < ?2";
const NAMES_OF: &str = "SELECT parent, name FROM dirents WHERE child = ?1";
const SETTING: &str = "SELECT value FROM settings WHERE key = ?1";
const SET_SETTING: &str = "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)";
const INODE_WITH_CONTENT: &str = concat!(
    "SELECT ",
    inode_columns!(),
    " FROM inodes i JOIN contents c ON c.id = i.content WHERE c.lo = +?1 AND c.hi = +?2 LIMIT 1"
);
const XATTR: &str = "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2";
const XATTR_NAMES: &str = "SELECT name FROM xattrs WHERE ino = +?1 ORDER BY name";
const SET_XATTR: &str = "INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)";
const REMOVE_XATTR: &str = "DELETE FROM xattrs WHERE ino = ?1 AND name = ?2";
const DEAD_PROPS: &str = "SELECT name, value FROM dead_props WHERE ino = +?1 ORDER BY name";
const DEAD_PROPS_OF_ENTRIES: &str = "SELECT p.ino, p.name, p.value FROM dirents d JOIN dead_props p ON p.ino = d.child WHERE d.parent = +?1 AND d.id > ?2 AND d.id <= ?3 ORDER BY p.ino, p.name";
const HAS_DEAD_PROPS: &str = "SELECT EXISTS (SELECT 1 FROM dead_props WHERE ino = +?1)";
const SET_DEAD_PROP: &str = "INSERT OR REPLACE INTO dead_props (ino, name, value) VALUES (?1, ?2, ?3)";
const REMOVE_DEAD_PROP: &str = "DELETE FROM dead_props WHERE ino = ?1 AND name = ?2";
const COPY_DEAD_PROPS: &str = "INSERT OR REPLACE INTO dead_props (ino, name, value) SELECT ?2, name, value FROM dead_props WHERE ino = +?1";
const CLEAR_DEAD_PROPS: &str = "DELETE FROM dead_props WHERE ino = ?1";
const LOCKS_AT: &str = "SELECT token, path, principal, owner_xml, deep, shared, expires_ns, timeout_s FROM locks WHERE path = ?1 AND (expires_ns IS NULL OR expires_ns > ?2)";
const LOCKS_BELOW: &str = "SELECT token, path, principal, owner_xml, deep, shared, expires_ns, timeout_s FROM locks WHERE path > ?1 AND path < ?2 AND (expires_ns IS NULL OR expires_ns > ?3)";
const INSERT_LOCK: &str = "INSERT INTO locks (token, path, principal, owner_xml, deep, shared, expires_ns, timeout_s, created_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const REFRESH_LOCK: &str = "UPDATE locks SET expires_ns = ?3, timeout_s = ?4 WHERE token = ?1 AND path = ?2";
const DELETE_LOCK: &str = "DELETE FROM locks WHERE token = ?1 AND path = ?2";
const DELETE_LOCKS_UNDER: &str = "DELETE FROM locks WHERE path = ?1 OR (path > ?2 AND path < ?3)";
const ACTIVE_LOCKS: &str = "SELECT COUNT(*) FROM locks WHERE expires_ns IS NULL OR expires_ns > ?1";
const DELETE_EXPIRED_LOCKS: &str = "DELETE FROM locks WHERE expires_ns <= ?1";
const CONTENT_REFERENCES: &str =
    "SELECT c.lo, c.hi, c.refcount, (SELECT COUNT(*) FROM inodes i WHERE i.content = c.id) FROM contents c";
const LINK_COUNTS: &str = "SELECT i.ino, i.kind = +?1, i.nlink, (SELECT COUNT(*) FROM dirents d WHERE d.child = i.ino), (SELECT COUNT(*) FROM dirents d JOIN inodes c ON c.ino = d.child WHERE d.parent = i.ino AND c.kind = +?1) FROM inodes i";
const DANGLING_ENTRIES: &str = "SELECT d.parent, d.name, d.child FROM dirents d WHERE NOT EXISTS (SELECT 1 FROM inodes i WHERE i.ino = d.child) OR NOT EXISTS (SELECT 1 FROM inodes p WHERE p.ino = d.parent)";
const LIVE_CONTENTS: &str = "SELECT hi, lo, size, blake3, refcount, chunk_refs FROM contents WHERE refcount > 0 OR chunk_refs > 0 ORDER BY lo";
const CHUNK_USES: &str = "SELECT c.hi, c.lo, c.chunk_refs, COALESCE(u.n, 0) FROM contents c LEFT JOIN (SELECT chunk, COUNT(*) AS n FROM (SELECT chunk FROM extents UNION ALL SELECT chunk FROM retired_extents) GROUP BY chunk) u ON u.chunk = c.id";
const ALL_EXTENTS: &str = "SELECT e.ino, e.off, e.len, e.chunk_off, c.size, i.size, i.kind FROM extents e JOIN contents c ON c.id = e.chunk LEFT JOIN inodes i ON i.ino = e.ino ORDER BY e.ino, e.off";
const SET_CHUNK_REFS: &str = "UPDATE contents SET chunk_refs = ?3 WHERE lo = ?1 AND hi = ?2";
const SET_REFCOUNT: &str = "UPDATE contents SET refcount = ?3 WHERE lo = ?1 AND hi = ?2";
const SET_NLINK: &str = "UPDATE inodes SET nlink = ?2 WHERE ino = ?1";
const NEXT_CHANGE_SEQ: &str = "SELECT MAX(seq) FROM changes";
const LOG_CHANGE: &str = "INSERT INTO changes (at_ns, origin, op, ino, parent, name, new_parent, new_name, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Every statement, for the re-prepare test.
#[cfg(test)]
const ALL_STATEMENTS: &[&str] = &[
    INODE_BY_INO,
    ORPHANED_INODES,
    LOOKUP,
    LOOKUP_IN,
    LIST_DIR,
    INSERT_INODE,
    UPDATE_INODE,
    TOUCH_DIR,
    ADD_LINKS,
    DELETE_INODE,
    SYMLINK_TARGET,
    HAS_ENTRIES,
    PARENT_OF_DIR,
    INSERT_DIRENT,
    DELETE_DIRENT,
    MOVE_DIRENT,
    RETARGET_DIRENT,
    CONTENTS_WITH_SHA1,
    CONTENT_BY_ID,
    INSERT_CONTENT,
    ADD_CONTENT_REFS,
    DELETE_CONTENT,
    ADD_CHUNK_REFS,
    DELETE_CONTENT_IF_UNUSED,
    EXTENTS_OF,
    EXTENTS_AS_OF,
    EXTENT_AT_OR_BEFORE,
    EXTENTS_INSIDE,
    INSERT_EXTENT,
    RETIRE_EXTENT,
    DELETE_EXTENT,
    RETIRE_ALL_EXTENTS,
    DELETE_ALL_EXTENTS,
    RETIRED_UP_TO,
    DELETE_RETIRED,
    INSERT_UNDO,
    PRUNE_UNDO,
    FIRST_UNDO_FROM,
    MARK_UNSYNCED,
    UNSYNCED_CHUNKS,
    READS_UNSYNCED,
    ANY_UNSYNCED,
    PUT_CHUNK_BYTES,
    CHUNK_BYTES,
    HAS_CHUNK_BYTES,
    DELETE_CHUNK_BYTES,
    INLINE_CHUNK_SIZES,
    INLINE_BYTES,
    PRUNE_UNSYNCED,
    LIVE_EXTENT_USERS,
    RETIRE_LIVE_SINCE,
    DELETE_LIVE_SINCE,
    RESTORE_RETIRED_SINCE,
    DELETE_RESTORED_SINCE,
    NAMES_OF,
    SETTING,
    SET_SETTING,
    INODE_WITH_CONTENT,
    SET_CONTENT_IF_VERSION,
    XATTR,
    XATTR_NAMES,
    SET_XATTR,
    REMOVE_XATTR,
    DEAD_PROPS,
    DEAD_PROPS_OF_ENTRIES,
    HAS_DEAD_PROPS,
    SET_DEAD_PROP,
    REMOVE_DEAD_PROP,
    COPY_DEAD_PROPS,
    CLEAR_DEAD_PROPS,
    LOCKS_AT,
    LOCKS_BELOW,
    INSERT_LOCK,
    REFRESH_LOCK,
    DELETE_LOCK,
    DELETE_LOCKS_UNDER,
    DELETE_EXPIRED_LOCKS,
    ACTIVE_LOCKS,
    CONTENT_REFERENCES,
    LINK_COUNTS,
    DANGLING_ENTRIES,
    LIVE_CONTENTS,
    CHUNK_USES,
    ALL_EXTENTS,
    SET_CHUNK_REFS,
    SET_REFCOUNT,
    SET_NLINK,
    LOG_CHANGE,
    NEXT_CHANGE_SEQ,
];

/// The key range `(low, high)` of every path strictly below `path` (in
/// byte order, `path/` < below < `path0`, as `0` follows `/`).
fn path_descendants(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut low = path.to_vec();
    low.push(b'/');
    let mut high = path.to_vec();
    high.push(b'0');
    (low, high)
}

fn lock_from_row(r: &Row<'_>) -> rusqlite::Result<PathLock> {
    Ok(PathLock {
        token: r.get(0)?,
        path: r.get(1)?,
        principal: r.get(2)?,
        owner_xml: r.get(3)?,
        deep: r.get(4)?,
        shared: r.get(5)?,
        expires_ns: r.get(6)?,
        timeout_s: r.get::<_, Option<i64>>(7)?.map(|s| s.max(0) as u64),
    })
}

/// Query access to the database, inside a transaction or not.
pub struct Db<'c> {
    conn: &'c Connection,
}

/// Fields of a new inode; the number is assigned on insert.
#[derive(Clone, Debug)]
pub struct NewInode<'a> {
    /// File type.
    pub kind: FileKind,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// All four timestamps start at this time.
    pub now_ns: i64,
    /// Initial link count.
    pub nlink: u32,
    /// Device number.
    pub rdev: u32,
    /// Content of a regular file.
    pub content: Option<ContentId>,
    /// Target of a symlink.
    pub symlink: Option<&'a [u8]>,
}

impl NewInode<'_> {
    /// The attributes the inode has once inserted as `ino`.
    pub fn attr(&self, ino: Ino) -> Inode {
        Inode {
            ino,
            kind: self.kind,
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime_ns: self.now_ns,
            mtime_ns: self.now_ns,
            ctime_ns: self.now_ns,
            btime_ns: self.now_ns,
            nlink: self.nlink,
            rdev: self.rdev,
            generation: 1,
            data_seq: 0,
            content: self.content,
        }
    }
}

fn inode_from_row(row: &Row<'_>) -> rusqlite::Result<Inode> {
    inode_at(row, 0)
}

/// Read the [`inode_columns`] of a row, starting at column `base`.
fn kind_from_row(row: &Row<'_>, col: usize) -> rusqlite::Result<FileKind> {
    let kind_bits: u32 = row.get(col)?;
    FileKind::from_mode(kind_bits).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Integer,
            format!("unknown file kind {kind_bits:o}").into(),
        )
    })
}

fn inode_at(row: &Row<'_>, base: usize) -> rusqlite::Result<Inode> {
    let col = |i: usize| base + i;
    let kind = kind_from_row(row, col(1))?;
    let hi: Option<i64> = row.get(col(14))?;
    let lo: Option<[u8; 20]> = row.get(col(15))?;
    Ok(Inode {
        ino: Ino::from_sql(row.get(col(0))?),
        kind,
        perm: row.get(col(2))?,
        uid: row.get(col(3))?,
        gid: row.get(col(4))?,
        size: row.get::<_, i64>(col(5))? as u64,
        atime_ns: row.get(col(6))?,
        mtime_ns: row.get(col(7))?,
        ctime_ns: row.get(col(8))?,
        btime_ns: row.get(col(9))?,
        nlink: row.get(col(10))?,
        rdev: row.get(col(11))?,
        generation: row.get::<_, i64>(col(12))? as u64,
        data_seq: row.get::<_, i64>(col(13))? as u64,
        content: match (hi, lo) {
            (Some(hi), Some(lo)) => Some(ContentId::new(hi as u64, lo)),
            _ => None,
        },
    })
}

fn extent_from_row(row: &Row<'_>) -> rusqlite::Result<ExtentRow> {
    Ok(ExtentRow {
        off: row.get::<_, i64>(0)? as u64,
        len: row.get::<_, i64>(1)? as u64,
        chunk: ContentId::new(row.get::<_, i64>(2)? as u64, row.get(3)?),
        chunk_off: row.get::<_, i64>(4)? as u64,
    })
}

fn content_from_row(row: &Row<'_>) -> rusqlite::Result<ContentRecord> {
    Ok(ContentRecord {
        id: ContentId::new(row.get::<_, i64>(0)? as u64, row.get(1)?),
        size: row.get::<_, i64>(2)? as u64,
        blake3: row.get(3)?,
        refcount: row.get::<_, i64>(4)? as u64,
        chunk_refs: row.get::<_, i64>(5)? as u64,
    })
}

impl<'c> Db<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Db { conn }
    }

    // ---- Inodes ---------------------------------------------------------

    /// The inode `ino`, if it exists.
    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>, MetaError> {
        self.conn
            .prepare_cached(INODE_BY_INO)
            .and_then(|mut st| st.query_row([ino.as_sql()], inode_from_row).optional())
            .map_err(MetaError::sql("read inode"))
    }

    /// Insert an inode; returns its new number.
    pub fn insert_inode(&self, new: &NewInode<'_>) -> Result<Ino, MetaError> {
        self.conn
            .prepare_cached(INSERT_INODE)
            .and_then(|mut st| {
                st.execute(params![
                    new.kind.mode_bits(),
                    new.perm,
                    new.uid,
                    new.gid,
                    new.size as i64,
                    new.now_ns,
                    new.nlink,
                    new.rdev,
                    new.content.map(|c| c.lo),
                    new.content.map(|c| c.hi as i64),
                    new.symlink,
                ])
            })
            .map_err(MetaError::sql("insert inode"))?;
        Ok(Ino::from_sql(self.conn.last_insert_rowid()))
    }

    /// Store every mutable attribute of `inode` (all but its kind; the
    /// birth time changes only when asked, as Windows clients do).
    pub fn update_inode(&self, inode: &Inode) -> Result<(), MetaError> {
        let changed = self
            .conn
            .prepare_cached(UPDATE_INODE)
            .and_then(|mut st| {
                st.execute(params![
                    inode.ino.as_sql(),
                    inode.perm,
                    inode.uid,
                    inode.gid,
                    inode.size as i64,
                    inode.atime_ns,
                    inode.mtime_ns,
                    inode.ctime_ns,
                    inode.nlink,
                    inode.rdev,
                    inode.content.map(|c| c.lo),
                    inode.content.map(|c| c.hi as i64),
                    inode.data_seq as i64,
                    inode.btime_ns,
                ])
            })
            .map_err(MetaError::sql("update inode"))?;
        if changed == 1 {
            Ok(())
        } else {
            Err(MetaError::Corrupt(format!("inode {} vanished during update", inode.ino)))
        }
    }

    /// Set a directory's mtime and ctime (its entries changed).
    pub fn touch_dir(&self, ino: Ino, now_ns: i64) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(TOUCH_DIR)
            .and_then(|mut st| st.execute(params![ino.as_sql(), now_ns]))
            .map_err(MetaError::sql("update directory times"))?;
        Ok(())
    }

    /// Add `delta` to an inode's link count and set its ctime.
    pub fn add_links(&self, ino: Ino, delta: i64, now_ns: i64) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(ADD_LINKS)
            .and_then(|mut st| st.execute(params![ino.as_sql(), delta, now_ns]))
            .map_err(MetaError::sql("update link count"))?;
        Ok(())
    }

    /// Delete an inode row (its xattrs and dead properties go with it).
    pub fn delete_inode(&self, ino: Ino) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(DELETE_INODE)
            .and_then(|mut st| st.execute([ino.as_sql()]))
            .map_err(MetaError::sql("delete inode"))?;
        Ok(())
    }

    /// A symlink's target.
    pub fn symlink_target(&self, ino: Ino) -> Result<Option<Vec<u8>>, MetaError> {
        self.conn
            .prepare_cached(SYMLINK_TARGET)
            .and_then(|mut st| st.query_row([ino.as_sql()], |r| r.get(0)).optional())
            .map(Option::flatten)
            .map_err(MetaError::sql("read symlink"))
    }

    /// Inodes with no names left (open-unlinked at a crash).
    pub fn orphaned_inodes(&self) -> Result<Vec<Inode>, MetaError> {
        self.collect(ORPHANED_INODES, [], inode_from_row, "list orphaned inodes")
    }

    // ---- Directory entries ----------------------------------------------

    /// The child named `name` in `parent`, with its attributes.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<Inode>, MetaError> {
        self.conn
            .prepare_cached(LOOKUP)
            .and_then(|mut st| st.query_row(params![parent.as_sql(), name], inode_from_row).optional())
            .map_err(MetaError::sql("look up name"))
    }

    /// Entry `name` of directory `parent`, with the parent's kind: `None`
    /// if `parent` does not exist, `Some((kind, None))` if it has no such
    /// entry (or is no directory).
    pub fn lookup_in(
        &self,
        parent: Ino,
        name: &[u8],
    ) -> Result<Option<(FileKind, Option<Inode>)>, MetaError> {
        self.conn
            .prepare_cached(LOOKUP_IN)
            .and_then(|mut st| {
                st.query_row(params![parent.as_sql(), name], |row| {
                    let parent_kind = kind_from_row(row, 0)?;
                    let child = match row.get::<_, Option<i64>>(1)? {
                        Some(_) => Some(inode_at(row, 1)?),
                        None => None,
                    };
                    Ok((parent_kind, child))
                })
                .optional()
            })
            .map_err(MetaError::sql("look up name"))
    }

    /// Up to `limit` entries of `dir` after cursor `after`, with their
    /// children's attributes: one query, no per-child lookups.
    pub fn list_dir(&self, dir: Ino, after: u64, limit: u32) -> Result<Vec<DirRow>, MetaError> {
        let mut stmt = self.conn.prepare_cached(LIST_DIR).map_err(MetaError::sql("list directory"))?;
        let rows = stmt
            .query_map(params![dir.as_sql(), after as i64, limit], |row| {
                Ok(DirRow {
                    cursor: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    inode: inode_at(row, 2)?,
                })
            })
            .map_err(MetaError::sql("list directory"))?;
        rows.collect::<Result<_, _>>().map_err(MetaError::sql("list directory"))
    }

    /// Whether `dir` has any entry.
    pub fn has_entries(&self, dir: Ino) -> Result<bool, MetaError> {
        self.conn
            .prepare_cached(HAS_ENTRIES)
            .and_then(|mut st| st.query_row([dir.as_sql()], |r| r.get(0)))
            .map_err(MetaError::sql("check directory entries"))
    }

    /// The directory holding directory `dir` and its name there (`None`
    /// for the root).
    pub fn parent_of_dir(&self, dir: Ino) -> Result<Option<(Ino, Vec<u8>)>, MetaError> {
        self.conn
            .prepare_cached(PARENT_OF_DIR)
            .and_then(|mut st| {
                st.query_row([dir.as_sql()], |r| Ok((Ino::from_sql(r.get(0)?), r.get(1)?))).optional()
            })
            .map_err(MetaError::sql("find parent directory"))
    }

    /// Add entry `name` in `parent` for `child`.
    pub fn insert_dirent(&self, parent: Ino, name: &[u8], child: Ino) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(INSERT_DIRENT)
            .and_then(|mut st| st.execute(params![parent.as_sql(), name, child.as_sql()]))
            .map_err(MetaError::sql("insert directory entry"))?;
        Ok(())
    }

    /// Remove entry `name` from `parent`.
    pub fn delete_dirent(&self, parent: Ino, name: &[u8]) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(DELETE_DIRENT)
            .and_then(|mut st| st.execute(params![parent.as_sql(), name]))
            .map_err(MetaError::sql("delete directory entry"))?;
        Ok(())
    }

    /// Move an entry to a new parent and name, keeping its cursor.
    pub fn move_dirent(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
    ) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(MOVE_DIRENT)
            .and_then(|mut st| st.execute(params![parent.as_sql(), name, new_parent.as_sql(), new_name]))
            .map_err(MetaError::sql("move directory entry"))?;
        Ok(())
    }

    /// Point an existing entry at another child (RENAME_EXCHANGE).
    pub fn retarget_dirent(&self, parent: Ino, name: &[u8], child: Ino) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(RETARGET_DIRENT)
            .and_then(|mut st| st.execute(params![parent.as_sql(), name, child.as_sql()]))
            .map_err(MetaError::sql("retarget directory entry"))?;
        Ok(())
    }

    // ---- Contents -------------------------------------------------------

    /// Every stored content whose SHA-1 is `lo` (normally zero or one).
    pub fn contents_with_sha1(&self, lo: &[u8; 20]) -> Result<Vec<ContentRecord>, MetaError> {
        self.collect(CONTENTS_WITH_SHA1, [lo.as_slice()], content_from_row, "find contents by SHA-1")
    }

    /// The MD5 of content `id`, if it was computed.
    pub fn content_md5(&self, id: &ContentId) -> Result<Option<[u8; 16]>, MetaError> {
        self.conn
            .prepare_cached(
                "SELECT m.md5 FROM content_md5 m JOIN contents c ON c.id = m.content WHERE c.lo = ?1 AND c.hi = ?2",
            )
            .and_then(|mut st| st.query_row(params![id.lo, id.hi as i64], |row| row.get::<_, [u8; 16]>(0)).optional())
            .map_err(MetaError::sql("read an MD5"))
    }

    /// Record the MD5 of content `id` (nothing if the content is gone).
    pub fn set_content_md5(&self, id: &ContentId, md5: &[u8; 16]) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO content_md5 (content, md5) SELECT id, ?3 FROM contents WHERE lo = ?1 AND hi = ?2",
            )
            .and_then(|mut st| st.execute(params![id.lo, id.hi as i64, md5.as_slice()]))
            .map(drop)
            .map_err(MetaError::sql("record an MD5"))
    }

    /// The record of content `id`.
    pub fn content(&self, id: &ContentId) -> Result<Option<ContentRecord>, MetaError> {
        self.conn
            .prepare_cached(CONTENT_BY_ID)
            .and_then(|mut st| st.query_row(params![id.lo, id.hi as i64], content_from_row).optional())
            .map_err(MetaError::sql("read content"))
    }

    /// Up to `limit` files whose whole content is `id`, each with a name.
    pub fn holders_of_content(
        &self,
        id: &ContentId,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Inode)>, MetaError> {
        self.conn
            .prepare_cached(HOLDERS_OF_CONTENT)
            .and_then(|mut st| {
                st.query_map(params![id.lo, id.hi as i64, limit as i64], |row| {
                    Ok((row.get(0)?, inode_at(row, 1)?))
                })?
                .collect()
            })
            .map_err(MetaError::sql("read the holders of a content"))
    }

    /// Record a newly published content with reference count 0.
    pub fn insert_content(
        &self,
        id: &ContentId,
        size: u64,
        blake3: &[u8; 32],
        now_ns: i64,
    ) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(INSERT_CONTENT)
            .and_then(|mut st| st.execute(params![id.lo, id.hi as i64, size as i64, blake3, now_ns]))
            .map_err(MetaError::sql("insert content"))?;
        Ok(())
    }

    /// Add `delta` to a content's reference count; returns the new count.
    pub fn add_content_refs(&self, id: &ContentId, delta: i64) -> Result<u64, MetaError> {
        self.conn
            .prepare_cached(ADD_CONTENT_REFS)
            .and_then(|mut st| st.query_row(params![id.lo, id.hi as i64, delta], |r| r.get::<_, i64>(0)))
            .optional()
            .map_err(MetaError::sql("update content reference count"))?
            .map(|n| n as u64)
            .ok_or_else(|| MetaError::Corrupt(format!("content {id} is referenced but not recorded")))
    }

    /// Delete a content record.
    pub fn delete_content(&self, id: &ContentId) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(DELETE_CONTENT)
            .and_then(|mut st| st.execute(params![id.lo, id.hi as i64]))
            .map_err(MetaError::sql("delete content"))?;
        Ok(())
    }

    /// Add `delta` to a chunk's reference count; returns (chunk_refs,
    /// refcount) after.
    pub fn add_chunk_refs(&self, id: &ContentId, delta: i64) -> Result<(u64, u64), MetaError> {
        self.conn
            .prepare_cached(ADD_CHUNK_REFS)
            .and_then(|mut st| {
                st.query_row(params![id.lo, id.hi as i64, delta], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })
            })
            .optional()
            .map_err(MetaError::sql("update chunk reference count"))?
            .ok_or_else(|| MetaError::Corrupt(format!("chunk {id} is referenced but not recorded")))
    }

    /// Delete content `id` if nothing refers to it any more; whether it was.
    pub fn delete_content_if_unused(&self, id: &ContentId) -> Result<bool, MetaError> {
        Ok(self.execute(DELETE_CONTENT_IF_UNUSED, params![id.lo, id.hi as i64], "delete content")? > 0)
    }

    /// Some inode whose whole content is `id`, if any.
    pub fn inode_with_content(&self, id: &ContentId) -> Result<Option<Inode>, MetaError> {
        self.conn
            .prepare_cached(INODE_WITH_CONTENT)
            .and_then(|mut st| st.query_row(params![id.lo, id.hi as i64], inode_from_row).optional())
            .map_err(MetaError::sql("find a file by content"))
    }

    /// Record `id` as the whole content of `ino` if its bytes are still
    /// those of change `data_seq` and no id is recorded yet; whether it was.
    pub fn set_content_if_version(&self, ino: Ino, data_seq: u64, id: &ContentId) -> Result<bool, MetaError> {
        let n = self.execute(
            SET_CONTENT_IF_VERSION,
            params![ino.as_sql(), data_seq as i64, id.lo, id.hi as i64],
            "record a content id",
        )?;
        Ok(n > 0)
    }

    // ---- Extents --------------------------------------------------------

    /// The live extents of `ino`, by offset.
    pub fn extents(&self, ino: Ino) -> Result<Vec<ExtentRow>, MetaError> {
        self.collect(EXTENTS_OF, [ino.as_sql()], extent_from_row, "list extents")
    }

    /// The extents of `ino` as they were after change `seq` (retired rows
    /// included), by offset.
    pub fn extents_as_of(&self, ino: Ino, seq: u64) -> Result<Vec<ExtentRow>, MetaError> {
        self.collect(EXTENTS_AS_OF, params![ino.as_sql(), seq as i64], extent_from_row, "list extents")
    }

    /// The live extents of `ino` that overlap `[start, end)`, by offset.
    pub fn extents_overlapping(&self, ino: Ino, start: u64, end: u64) -> Result<Vec<ExtentRow>, MetaError> {
        let mut found: Vec<ExtentRow> = self
            .conn
            .prepare_cached(EXTENT_AT_OR_BEFORE)
            .and_then(|mut st| st.query_row(params![ino.as_sql(), start as i64], extent_from_row).optional())
            .map_err(MetaError::sql("find extents"))?
            .filter(|e| e.off + e.len > start)
            .into_iter()
            .collect();
        if end > start {
            let end = end.min(i64::MAX as u64) as i64;
            found.extend(self.collect(
                EXTENTS_INSIDE,
                params![ino.as_sql(), start as i64, end],
                extent_from_row,
                "find extents",
            )?);
        }
        Ok(found)
    }

    /// Add a live extent written by change `seq`, referencing its chunk.
    pub fn insert_extent(&self, ino: Ino, extent: &ExtentRow, seq: u64) -> Result<(), MetaError> {
        self.execute(
            INSERT_EXTENT,
            params![
                ino.as_sql(),
                extent.off as i64,
                extent.len as i64,
                extent.chunk.lo,
                extent.chunk.hi as i64,
                extent.chunk_off as i64,
                seq as i64
            ],
            "insert extent",
        )?;
        self.add_chunk_refs(&extent.chunk, 1)?;
        Ok(())
    }

    /// Move the live extent of `ino` at `off` to the retired ones, as
    /// retired by change `seq` (its chunk stays referenced).
    pub fn retire_extent(&self, ino: Ino, off: u64, seq: u64) -> Result<(), MetaError> {
        self.execute(RETIRE_EXTENT, params![ino.as_sql(), off as i64, seq as i64], "retire extent")?;
        self.execute(DELETE_EXTENT, params![ino.as_sql(), off as i64], "retire extent")?;
        Ok(())
    }

    /// Retire every live extent of `ino` (change `seq`).
    pub fn retire_all_extents(&self, ino: Ino, seq: u64) -> Result<(), MetaError> {
        self.execute(RETIRE_ALL_EXTENTS, params![ino.as_sql(), seq as i64], "retire extents")?;
        self.execute(DELETE_ALL_EXTENTS, [ino.as_sql()], "retire extents")?;
        Ok(())
    }

    /// Up to `limit` retired extents of changes up to `seq`, in row order
    /// after row `after`.
    pub fn retired_up_to(&self, seq: u64, after: i64, limit: u32) -> Result<Vec<RetiredRow>, MetaError> {
        self.collect(
            RETIRED_UP_TO,
            params![seq as i64, after, limit],
            |r| {
                Ok(RetiredRow {
                    rowid: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    ino: Ino::from_sql(r.get(2)?),
                    chunk: ContentId::new(r.get::<_, i64>(3)? as u64, r.get(4)?),
                })
            },
            "list retired extents",
        )
    }

    /// Delete one retired extent (the caller drops its chunk reference).
    pub fn delete_retired(&self, rowid: i64) -> Result<(), MetaError> {
        self.execute(DELETE_RETIRED, [rowid], "delete retired extent")?;
        Ok(())
    }

    /// Remember `ino`'s size and times before change `seq` wrote it (the
    /// first record per change wins).
    pub fn record_undo(&self, ino: Ino, undo: &WriteUndo) -> Result<(), MetaError> {
        self.execute(
            INSERT_UNDO,
            params![
                undo.seq as i64,
                ino.as_sql(),
                undo.size as i64,
                undo.mtime_ns,
                undo.ctime_ns,
                undo.created
            ],
            "record undo",
        )?;
        Ok(())
    }

    /// The earliest undo record of `ino` at or after change `seq`.
    pub fn first_undo_from(&self, ino: Ino, seq: u64) -> Result<Option<WriteUndo>, MetaError> {
        self.conn
            .prepare_cached(FIRST_UNDO_FROM)
            .and_then(|mut st| {
                st.query_row(params![ino.as_sql(), seq as i64], |r| {
                    Ok(WriteUndo {
                        seq: r.get::<_, i64>(0)? as u64,
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        ctime_ns: r.get(3)?,
                        created: r.get(4)?,
                    })
                })
                .optional()
            })
            .map_err(MetaError::sql("read undo record"))
    }

    /// Forget the undo records and unsynced-chunk marks of changes up to
    /// `seq`: they are durable.
    pub fn prune_durable(&self, seq: u64) -> Result<(), MetaError> {
        self.execute(PRUNE_UNDO, [seq as i64], "prune undo records")?;
        self.execute(PRUNE_UNSYNCED, [seq as i64], "prune unsynced chunks")?;
        Ok(())
    }

    /// Note that chunk `id`'s object was written by change `seq` and is
    /// not yet known to be on disk.
    pub fn mark_unsynced(&self, id: &ContentId, seq: u64) -> Result<(), MetaError> {
        self.execute(MARK_UNSYNCED, params![id.lo, id.hi as i64, seq as i64], "mark chunk unsynced")?;
        Ok(())
    }

    /// Chunks written since the last sync.
    pub fn unsynced_chunks(&self) -> Result<Vec<ContentRecord>, MetaError> {
        self.collect(UNSYNCED_CHUNKS, [], content_from_row, "list unsynced chunks")
    }

    /// Whether a live extent of `ino` reads a chunk whose object was
    /// written by a change after `durable` (the newest one a sync covered).
    pub fn reads_unsynced_chunk(&self, ino: Ino, durable: u64) -> Result<bool, MetaError> {
        self.flag(READS_UNSYNCED, [ino.0 as i64, durable as i64], "look for unsynced chunks of a file")
    }

    /// Whether any chunk object was written by a change after `durable`.
    pub fn any_unsynced_chunk(&self, durable: u64) -> Result<bool, MetaError> {
        self.flag(ANY_UNSYNCED, [durable as i64], "look for unsynced chunks")
    }

    /// Keep the bytes of chunk `id` (recorded) in the database.
    pub fn put_chunk_bytes(&self, id: &ContentId, bytes: &[u8]) -> Result<(), MetaError> {
        self.execute(PUT_CHUNK_BYTES, params![id.lo, id.hi as i64, bytes], "store chunk bytes")?;
        Ok(())
    }

    /// The bytes of chunk `id` if the database keeps them.
    pub fn chunk_bytes(&self, id: &ContentId) -> Result<Option<Vec<u8>>, MetaError> {
        self.conn
            .prepare_cached(CHUNK_BYTES)
            .and_then(|mut st| st.query_row(params![id.lo, id.hi as i64], |r| r.get(0)).optional())
            .map_err(MetaError::sql("read chunk bytes"))
    }

    /// Whether the database keeps the bytes of chunk `id`.
    pub fn has_chunk_bytes(&self, id: &ContentId) -> Result<bool, MetaError> {
        self.flag(HAS_CHUNK_BYTES, params![id.lo, id.hi as i64], "look for chunk bytes")
    }

    /// Drop the bytes of chunk `id` kept in the database, if any.
    pub fn delete_chunk_bytes(&self, id: &ContentId) -> Result<(), MetaError> {
        self.execute(DELETE_CHUNK_BYTES, params![id.lo, id.hi as i64], "delete chunk bytes")?;
        Ok(())
    }

    /// Bytes of the chunks kept in the database.
    pub fn inline_bytes(&self) -> Result<u64, MetaError> {
        self.conn
            .prepare_cached(INLINE_BYTES)
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(MetaError::sql("sum chunks kept in the database"))
    }

    /// Every chunk kept in the database, with the length of its bytes.
    pub fn inline_chunk_sizes(&self) -> Result<Vec<(ContentId, u64)>, MetaError> {
        self.collect(
            INLINE_CHUNK_SIZES,
            [],
            |row| {
                Ok((ContentId::new(row.get::<_, i64>(0)? as u64, row.get(1)?), row.get::<_, i64>(2)? as u64))
            },
            "list chunks kept in the database",
        )
    }

    /// The files whose live extents read chunk `id`, with the earliest
    /// change that wrote such an extent (recovery).
    pub fn live_extent_users(&self, id: &ContentId) -> Result<Vec<(Ino, u64)>, MetaError> {
        self.collect(
            LIVE_EXTENT_USERS,
            params![id.lo, id.hi as i64],
            |r| Ok((Ino::from_sql(r.get(0)?), r.get::<_, i64>(1)? as u64)),
            "find the users of a chunk",
        )
    }

    /// Every name of `ino`: (directory, name).
    pub fn names_of(&self, ino: Ino) -> Result<Vec<(Ino, Vec<u8>)>, MetaError> {
        self.collect(NAMES_OF, [ino.as_sql()], |r| Ok((Ino::from_sql(r.get(0)?), r.get(1)?)), "list names")
    }

    /// Retire every live extent of `ino` written by change `since` or
    /// later (as change `seq`).
    pub fn retire_live_since(&self, ino: Ino, since: u64, seq: u64) -> Result<(), MetaError> {
        self.execute(RETIRE_LIVE_SINCE, params![ino.as_sql(), since as i64, seq as i64], "retire extents")?;
        self.execute(DELETE_LIVE_SINCE, params![ino.as_sql(), since as i64], "retire extents")?;
        Ok(())
    }

    /// Make live again the extents of `ino` that were written before
    /// change `since` and retired by it or later.
    pub fn restore_retired_since(&self, ino: Ino, since: u64) -> Result<(), MetaError> {
        self.execute(RESTORE_RETIRED_SINCE, params![ino.as_sql(), since as i64], "restore extents")?;
        self.execute(DELETE_RESTORED_SINCE, params![ino.as_sql(), since as i64], "restore extents")?;
        Ok(())
    }

    // ---- Settings -------------------------------------------------------

    /// A setting's value.
    pub fn setting(&self, key: &str) -> Result<Option<String>, MetaError> {
        self.conn
            .prepare_cached(SETTING)
            .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
            .map_err(MetaError::sql("read setting"))
    }

    /// Set a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), MetaError> {
        self.execute(SET_SETTING, params![key, value], "write setting")?;
        Ok(())
    }

    // ---- Extended attributes --------------------------------------------

    /// Value of xattr `name` on `ino`.
    pub fn xattr(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.conn
            .prepare_cached(XATTR)
            .and_then(|mut st| st.query_row(params![ino.as_sql(), name], |r| r.get(0)).optional())
            .map_err(MetaError::sql("read xattr"))
    }

    /// Whether any inode has an xattr called `name`.
    pub fn any_xattr_named(&self, name: &[u8]) -> Result<bool, MetaError> {
        self.flag(ANY_XATTR_NAMED, [name], "look for an xattr")
    }

    /// Names of all xattrs on `ino`.
    pub fn xattr_names(&self, ino: Ino) -> Result<Vec<Vec<u8>>, MetaError> {
        self.collect(XATTR_NAMES, [ino.as_sql()], |r| r.get(0), "list xattrs")
    }

    /// Set xattr `name` on `ino`.
    pub fn set_xattr(&self, ino: Ino, name: &[u8], value: &[u8]) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(SET_XATTR)
            .and_then(|mut st| st.execute(params![ino.as_sql(), name, value]))
            .map_err(MetaError::sql("write xattr"))?;
        Ok(())
    }

    /// Remove xattr `name`; returns whether it existed.
    pub fn remove_xattr(&self, ino: Ino, name: &[u8]) -> Result<bool, MetaError> {
        self.conn
            .prepare_cached(REMOVE_XATTR)
            .and_then(|mut st| st.execute(params![ino.as_sql(), name]))
            .map(|n| n > 0)
            .map_err(MetaError::sql("remove xattr"))
    }

    // ---- WebDAV dead properties ------------------------------------------

    /// Dead properties of `ino`: (Clark-notation name, raw XML), by name.
    pub fn dead_props(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        self.collect(DEAD_PROPS, [ino.as_sql()], |r| Ok((r.get(0)?, r.get(1)?)), "list dead properties")
    }

    /// Dead properties of the entries of `dir` with cursors in
    /// `(after, upto]`, as (inode, name, value).
    pub fn dead_props_of_entries(
        &self,
        dir: Ino,
        after: u64,
        upto: u64,
    ) -> Result<Vec<(Ino, String, Vec<u8>)>, MetaError> {
        self.collect(
            DEAD_PROPS_OF_ENTRIES,
            params![dir.as_sql(), after as i64, upto as i64],
            |r| Ok((Ino::from_sql(r.get(0)?), r.get(1)?, r.get(2)?)),
            "list dead properties of directory entries",
        )
    }

    /// Whether `ino` has any dead property.
    pub fn has_dead_props(&self, ino: Ino) -> Result<bool, MetaError> {
        self.conn
            .prepare_cached(HAS_DEAD_PROPS)
            .and_then(|mut st| st.query_row([ino.as_sql()], |r| r.get(0)))
            .map_err(MetaError::sql("check dead properties"))
    }

    /// Set dead property `name` of `ino` to `value` (raw XML).
    pub fn set_dead_prop(&self, ino: Ino, name: &str, value: &[u8]) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(SET_DEAD_PROP)
            .and_then(|mut st| st.execute(params![ino.as_sql(), name, value]))
            .map_err(MetaError::sql("write dead property"))?;
        Ok(())
    }

    /// Remove dead property `name` of `ino`, if set.
    pub fn remove_dead_prop(&self, ino: Ino, name: &str) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(REMOVE_DEAD_PROP)
            .and_then(|mut st| st.execute(params![ino.as_sql(), name]))
            .map_err(MetaError::sql("remove dead property"))?;
        Ok(())
    }

    /// Give `to` exactly the dead properties of `from` (COPY; over an
    /// existing resource, RFC 4918 wants its old ones gone).
    pub fn copy_dead_props(&self, from: Ino, to: Ino) -> Result<(), MetaError> {
        self.conn
            .prepare_cached(CLEAR_DEAD_PROPS)
            .and_then(|mut st| st.execute(params![to.as_sql()]))
            .map_err(MetaError::sql("clear dead properties"))?;
        self.conn
            .prepare_cached(COPY_DEAD_PROPS)
            .and_then(|mut st| st.execute(params![from.as_sql(), to.as_sql()]))
            .map_err(MetaError::sql("copy dead properties"))?;
        Ok(())
    }

    // ---- WebDAV locks ----------------------------------------------------

    /// Unexpired locks on exactly `path`.
    pub fn locks_at(&self, path: &[u8], now_ns: i64) -> Result<Vec<PathLock>, MetaError> {
        self.collect(LOCKS_AT, params![path, now_ns], lock_from_row, "list locks")
    }

    /// Unexpired locks strictly below `path`.
    pub fn locks_below(&self, path: &[u8], now_ns: i64) -> Result<Vec<PathLock>, MetaError> {
        let (low, high) = path_descendants(path);
        self.collect(LOCKS_BELOW, params![low, high, now_ns], lock_from_row, "list locks below a path")
    }

    /// How many locks are in force.
    pub fn active_locks(&self, now_ns: i64) -> Result<u64, MetaError> {
        self.conn
            .prepare_cached(ACTIVE_LOCKS)
            .and_then(|mut st| st.query_row([now_ns], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(MetaError::sql("count locks"))
    }

    /// Record a new lock, first dropping expired ones.
    pub fn insert_lock(&self, lock: &PathLock, now_ns: i64) -> Result<(), MetaError> {
        self.execute(DELETE_EXPIRED_LOCKS, params![now_ns], "drop expired locks")?;
        self.execute(
            INSERT_LOCK,
            params![
                lock.token,
                lock.path,
                lock.principal,
                lock.owner_xml,
                lock.deep,
                lock.shared,
                lock.expires_ns,
                lock.timeout_s.map(|s| s.min(i64::MAX as u64) as i64),
                now_ns
            ],
            "record a lock",
        )?;
        Ok(())
    }

    /// Set a lock's expiry and timeout; whether it existed.
    pub fn refresh_lock(&self, lock: &PathLock) -> Result<bool, MetaError> {
        let timeout = lock.timeout_s.map(|s| s.min(i64::MAX as u64) as i64);
        let n = self.execute(
            REFRESH_LOCK,
            params![lock.token, lock.path, lock.expires_ns, timeout],
            "refresh a lock",
        )?;
        Ok(n > 0)
    }

    /// Remove one lock; whether it existed.
    pub fn delete_lock(&self, token: &str, path: &[u8]) -> Result<bool, MetaError> {
        Ok(self.execute(DELETE_LOCK, params![token, path], "remove a lock")? > 0)
    }

    /// Remove every lock on `path` and below it.
    pub fn delete_locks_under(&self, path: &[u8]) -> Result<(), MetaError> {
        let (low, high) = path_descendants(path);
        self.execute(DELETE_LOCKS_UNDER, params![path, low, high], "remove locks under a path")?;
        Ok(())
    }

    // ---- Consistency checks (fsck, scrub) --------------------------------

    /// Every content with its recorded reference count and the number of
    /// inodes that actually name it.
    pub fn content_references(&self) -> Result<Vec<(ContentId, u64, u64)>, MetaError> {
        self.collect(
            CONTENT_REFERENCES,
            [],
            |r| {
                let id = ContentId::new(r.get::<_, i64>(1)? as u64, r.get(0)?);
                Ok((id, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64))
            },
            "count content references",
        )
    }

    /// Every inode with its recorded link count and the count its entries
    /// imply (directories: 2 + subdirectories; the root has no entry).
    pub fn link_counts(&self) -> Result<Vec<(Ino, u32, u32)>, MetaError> {
        self.collect(
            LINK_COUNTS,
            params![FileKind::Dir.mode_bits()],
            |r| {
                let ino = Ino::from_sql(r.get(0)?);
                let is_dir: bool = r.get(1)?;
                let (entries, subdirs): (u32, u32) = (r.get(3)?, r.get(4)?);
                let expected = if is_dir { 2 + subdirs } else { entries };
                Ok((ino, r.get(2)?, expected))
            },
            "count links",
        )
    }

    /// Entries whose parent or child inode does not exist.
    pub fn dangling_entries(&self) -> Result<Vec<(Ino, Vec<u8>, Ino)>, MetaError> {
        self.collect(
            DANGLING_ENTRIES,
            [],
            |r| Ok((Ino::from_sql(r.get(0)?), r.get(1)?, Ino::from_sql(r.get(2)?))),
            "find dangling entries",
        )
    }

    /// Every content some inode holds (by SHA-1).
    pub fn live_contents(&self) -> Result<Vec<ContentRecord>, MetaError> {
        self.collect(LIVE_CONTENTS, [], content_from_row, "list contents")
    }

    /// Every content with its recorded chunk reference count and the
    /// number of extents (live and retired) that read it.
    pub fn chunk_uses(&self) -> Result<Vec<(ContentId, u64, u64)>, MetaError> {
        self.collect(
            CHUNK_USES,
            [],
            |r| {
                let id = ContentId::new(r.get::<_, i64>(0)? as u64, r.get(1)?);
                Ok((id, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64))
            },
            "count chunk references",
        )
    }

    /// Every live extent as (inode, offset, length, offset in its chunk,
    /// chunk size, the inode's size and kind if it exists), by inode and offset.
    #[allow(clippy::type_complexity)]
    pub fn all_extents(&self) -> Result<Vec<(Ino, u64, u64, u64, u64, Option<(u64, u32)>)>, MetaError> {
        self.collect(
            ALL_EXTENTS,
            [],
            |r| {
                let inode = match r.get::<_, Option<i64>>(5)? {
                    Some(size) => Some((size as u64, r.get::<_, u32>(6)?)),
                    None => None,
                };
                Ok((
                    Ino::from_sql(r.get(0)?),
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, i64>(4)? as u64,
                    inode,
                ))
            },
            "list extents",
        )
    }

    /// Set a chunk's reference count.
    pub fn set_chunk_refs(&self, id: &ContentId, chunk_refs: u64) -> Result<(), MetaError> {
        self.execute(SET_CHUNK_REFS, params![id.lo, id.hi as i64, chunk_refs as i64], "set a chunk count")?;
        Ok(())
    }

    /// Set a content's reference count.
    pub fn set_refcount(&self, id: &ContentId, refcount: u64) -> Result<(), MetaError> {
        self.execute(SET_REFCOUNT, params![id.lo, id.hi as i64, refcount as i64], "set a reference count")?;
        Ok(())
    }

    /// Set an inode's link count.
    pub fn set_nlink(&self, ino: Ino, nlink: u32) -> Result<(), MetaError> {
        self.execute(SET_NLINK, params![ino.as_sql(), nlink], "set a link count")?;
        Ok(())
    }

    // ---- Change log and totals ------------------------------------------

    /// Append to the change log; returns the sequence number.
    pub fn log_change(&self, change: &ChangeRecord<'_>, now_ns: i64) -> Result<u64, MetaError> {
        self.conn
            .prepare_cached(LOG_CHANGE)
            .and_then(|mut st| {
                st.execute(params![
                    now_ns,
                    change.origin,
                    change.op,
                    change.ino.as_sql(),
                    change.entry.map(|e| e.0.as_sql()),
                    change.entry.map(|e| e.1),
                    change.new_entry.map(|e| e.0.as_sql()),
                    change.new_entry.map(|e| e.1),
                    change.content.map(|c| c.to_string()),
                ])
            })
            .map_err(MetaError::sql("append to change log"))?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// The sequence number the next change-log entry gets: one past the
    /// newest, as SQLite numbers a new row. No entry is ever deleted, so
    /// none is reused.
    pub fn next_change_seq(&self) -> Result<u64, MetaError> {
        self.conn
            .prepare_cached(NEXT_CHANGE_SEQ)
            .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
            .map(|n| n.unwrap_or(0) as u64 + 1)
            .map_err(MetaError::sql("read the change log's counter"))
    }

    /// The newest change-log sequence number (0 when empty).
    pub fn last_change(&self) -> Result<u64, MetaError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(MetaError::sql("read change log"))
    }

    /// Totals over the tree.
    pub fn totals(&self) -> Result<Totals, MetaError> {
        let q = |sql: &str| -> Result<u64, MetaError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(MetaError::sql("compute totals"))
        };
        Ok(Totals {
            files: q(&format!("SELECT COUNT(*) FROM inodes WHERE kind = {}", libc::S_IFREG))?,
            dirs: q(&format!("SELECT COUNT(*) FROM inodes WHERE kind = {}", libc::S_IFDIR))?,
            others: q(&format!(
                "SELECT COUNT(*) FROM inodes WHERE kind NOT IN ({}, {})",
                libc::S_IFREG,
                libc::S_IFDIR
            ))?,
            logical_bytes: q(&format!(
                "SELECT COALESCE(SUM(size), 0) FROM inodes WHERE kind = {}",
                libc::S_IFREG
            ))?,
            logical_bytes_by_name: q(&format!(
                "SELECT COALESCE(SUM(i.size), 0) FROM dirents d JOIN inodes i ON i.ino = d.child WHERE i.kind = {}",
                libc::S_IFREG
            ))?,
            contents: q("SELECT COUNT(*) FROM contents WHERE refcount > 0")?,
            content_bytes: q("SELECT COALESCE(SUM(size), 0) FROM contents WHERE refcount > 0")?,
            chunks: q("SELECT COUNT(*) FROM contents WHERE chunk_refs > 0")?,
            chunk_bytes: q("SELECT COALESCE(SUM(size), 0) FROM contents WHERE chunk_refs > 0")?,
            changes: q("SELECT COUNT(*) FROM changes")?,
        })
    }

    fn execute<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        action: &'static str,
    ) -> Result<usize, MetaError> {
        self.conn.prepare_cached(sql).and_then(|mut st| st.execute(params)).map_err(MetaError::sql(action))
    }

    fn flag<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        action: &'static str,
    ) -> Result<bool, MetaError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(params, |r| r.get::<_, bool>(0)))
            .map_err(MetaError::sql(action))
    }

    fn collect<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        action: &'static str,
    ) -> Result<Vec<T>, MetaError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(MetaError::sql(action))?;
        let rows = stmt.query_map(params, map).map_err(MetaError::sql(action))?;
        rows.collect::<Result<_, _>>().map_err(MetaError::sql(action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite 3.54 re-prepares a cached statement on every execution when a
    /// join or ORDER BY compares a column with a bare `?N` (see the SQL
    /// section). A re-prepare costs more than most of our statements, so
    /// none may do it.
    #[test]
    fn no_statement_is_re_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let meta = super::super::Meta::open(dir.path()).unwrap();
        let mut conn = meta.writer.lock();
        let tx = conn.transaction().unwrap();
        for sql in ALL_STATEMENTS {
            for round in 2..6i64 {
                let mut stmt = tx.prepare_cached(sql).unwrap();
                for index in 1..=stmt.parameter_count() {
                    stmt.raw_bind_parameter(index, round).unwrap();
                }
                // Values of the wrong type may fail constraints; only the
                // planning matters here.
                let mut rows = stmt.raw_query();
                while let Ok(Some(_)) = rows.next() {}
            }
            let stmt = tx.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "re-prepared: {sql}");
        }
    }
}

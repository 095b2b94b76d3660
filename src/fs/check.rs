//! Self-checks: `check` (fsck: metadata against the store), `scrub`
//! (every object hashed again) and `gc` (what nothing refers to).
//!
//! Each runs on an `Fs` opened for writing, so it holds the data
//! directory's lock: nothing else changes the tree meanwhile.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{FileKind, Fs, FsResult, Origin};
use crate::id::{ContentId, Ino};
use crate::meta::ContentRecord;
use crate::store::{ContentDigest, ObjectFile, StoreError};

/// One inconsistency. (Fields are named for what they hold.)
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A content's reference count is not the number of inodes naming it.
    RefcountWrong { id: ContentId, recorded: u64, actual: u64 },
    /// A chunk's reference count is not the number of extents reading it.
    ChunkRefsWrong { id: ContentId, recorded: u64, actual: u64 },
    /// An extent that does not fit its file or its chunk, or overlaps
    /// the one before it, or belongs to no inode.
    ExtentWrong { ino: Ino, off: u64, detail: &'static str },
    /// An inode's link count is not what its entries make it.
    LinkCountWrong { ino: Ino, recorded: u32, expected: u32 },
    /// A directory entry whose parent or child inode is gone.
    DanglingEntry { parent: Ino, name: Vec<u8>, child: Ino },
    /// A content some file holds has no object: its bytes are lost.
    MissingObject { id: ContentId },
    /// An object's length is not its content's.
    ObjectSizeWrong { id: ContentId, expected: u64, found: u64 },
    /// An object no content row names (left by a crash): garbage.
    UnreferencedObject { id: ContentId },
    /// A file in the object area that is no object.
    StrayFile { path: PathBuf },
    /// A file or directory in the data directory that its group or other
    /// users may use (made by an older tsmfs, or changed since): they
    /// could read every name, xattr, dead property and file.
    LooseMode { path: PathBuf, mode: u32 },
}

impl Problem {
    /// Whether `--repair` can fix it without losing anything.
    pub fn repairable(&self) -> bool {
        !matches!(
            self,
            Problem::MissingObject { .. } | Problem::ObjectSizeWrong { .. } | Problem::ExtentWrong { .. }
        )
    }

    /// Whether it is only garbage, not an inconsistency: an object that a
    /// crash left between the commit that released it and its removal
    /// (docs/architecture.md, Durability). `tsmfs gc` removes it.
    pub fn is_garbage(&self) -> bool {
        matches!(self, Problem::UnreferencedObject { .. })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::RefcountWrong { id, recorded, actual } => {
                write!(
                    f,
                    "content {}: reference count {recorded}, but {actual} inodes hold it",
                    id.etag_tag()
                )
            }
            Problem::ChunkRefsWrong { id, recorded, actual } => {
                write!(f, "chunk {}: reference count {recorded}, but {actual} extents read it", id.etag_tag())
            }
            Problem::ExtentWrong { ino, off, detail } => {
                write!(f, "inode {}: the extent at offset {off} {detail}", ino.0)
            }
            Problem::LinkCountWrong { ino, recorded, expected } => {
                write!(f, "inode {}: link count {recorded}, its entries make {expected}", ino.0)
            }
            Problem::DanglingEntry { parent, name, child } => write!(
                f,
                "entry {:?} in directory {} names inode {}, which does not exist (or its directory does not)",
                String::from_utf8_lossy(name),
                parent.0,
                child.0
            ),
            Problem::MissingObject { id } => {
                write!(f, "chunk {}: its object file is missing", id.etag_tag())
            }
            Problem::ObjectSizeWrong { id, expected, found } => {
                write!(f, "content {}: object has {found} bytes, not {expected} (run scrub)", id.etag_tag())
            }
            Problem::UnreferencedObject { id } => write!(f, "object {}: nothing refers to it", id.etag_tag()),
            Problem::StrayFile { path } => write!(f, "{}: not an object", path.display()),
            Problem::LooseMode { path, mode } => write!(
                f,
                "{}: mode {mode:04o} lets group or others in (should be {:04o})",
                path.display(),
                private_mode(*mode)
            ),
        }
    }
}

/// What [`Fs::check`] found (and fixed).
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// How many of them were repaired.
    pub repaired: usize,
    /// Contents looked at.
    pub contents: usize,
    /// Inodes looked at.
    pub inodes: usize,
    /// Chunks looked at: object files and chunks kept in the database.
    pub objects: usize,
}

/// What [`Fs::scrub`] found.
#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Objects hashed.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects whose bytes do not hash to their id: moved to quarantine.
    pub corrupt: Vec<(ContentId, String, PathBuf)>,
    /// Contents whose object file is missing.
    pub missing: Vec<ContentId>,
    /// Compressed variants checked against the blake3 they carry.
    pub variants: u64,
    /// Variants that failed: removed (they are made again when asked for).
    pub corrupt_variants: Vec<PathBuf>,
}

/// What [`Fs::gc`] removed.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Objects removed (with their variants).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Compressed variants removed whose object was already gone.
    pub orphan_variants: u64,
    /// Their bytes.
    pub orphan_variant_bytes: u64,
    /// Outboards removed whose object was already gone.
    pub orphan_outboards: u64,
}

impl Fs {
    /// Check metadata against the store; with `repair`, fix what can be
    /// fixed without losing data. `progress(done, total)` follows the
    /// object files.
    pub fn check(&self, repair: bool, progress: &dyn Fn(u64, u64)) -> FsResult<CheckReport> {
        let mut report = CheckReport::default();
        let (references, chunk_uses, links, dangling, live, extents, inline) = self.meta.read(|db| {
            Ok::<_, crate::meta::MetaError>((
                db.content_references()?,
                db.chunk_uses()?,
                db.link_counts()?,
                db.dangling_entries()?,
                db.live_contents()?,
                db.all_extents()?,
                db.inline_chunk_sizes()?,
            ))
        })?;
        report.contents = references.len();
        report.inodes = links.len();
        for (id, recorded, actual) in &references {
            if recorded != actual {
                report.problems.push(Problem::RefcountWrong {
                    id: *id,
                    recorded: *recorded,
                    actual: *actual,
                });
            }
        }
        for (id, recorded, actual) in &chunk_uses {
            if recorded != actual {
                report.problems.push(Problem::ChunkRefsWrong {
                    id: *id,
                    recorded: *recorded,
                    actual: *actual,
                });
            }
        }
        for (ino, recorded, expected) in links {
            if recorded != expected {
                report.problems.push(Problem::LinkCountWrong { ino, recorded, expected });
            }
        }
        for (parent, name, child) in dangling {
            report.problems.push(Problem::DanglingEntry { parent, name, child });
        }
        let mut previous: Option<(Ino, u64)> = None;
        for (ino, off, len, chunk_off, chunk_size, inode) in extents {
            let wrong = match inode {
                None => Some("belongs to no inode"),
                Some((_, kind)) if FileKind::from_mode(kind) != Some(FileKind::File) => {
                    Some("belongs to no regular file")
                }
                Some((size, _)) if off + len > size => Some("reaches past the end of the file"),
                _ if chunk_off + len > chunk_size => Some("reaches past the end of its chunk"),
                _ if previous.is_some_and(|(p, end)| p == ino && end > off) => {
                    Some("overlaps the one before it")
                }
                _ => None,
            };
            if let Some(detail) = wrong {
                report.problems.push(Problem::ExtentWrong { ino, off, detail });
            }
            previous = Some((ino, off + len));
        }

        let objects = self.store.list_objects()?;
        report.objects = objects.len();
        let named: HashMap<ContentId, u64> =
            chunk_uses.iter().filter(|(_, _, actual)| *actual > 0).map(|(id, _, _)| (*id, 0)).collect();
        let sizes: HashMap<ContentId, u64> = live.iter().map(|c| (c.id, c.size)).collect();
        let mut on_disk: HashMap<ContentId, u64> = HashMap::new();
        // Chunks kept in the database are checked as object files are.
        let objects: Vec<ObjectFile> =
            inline.into_iter().map(|(id, len)| ObjectFile::Object { id, len }).chain(objects).collect();
        let total = objects.len() as u64;
        for (done, object) in objects.into_iter().enumerate() {
            progress(done as u64, total);
            match object {
                ObjectFile::Object { id, len } => {
                    on_disk.insert(id, len);
                    if !named.contains_key(&id) {
                        report.problems.push(Problem::UnreferencedObject { id });
                    } else if let Some(&expected) = sizes.get(&id)
                        && expected != len
                    {
                        report.problems.push(Problem::ObjectSizeWrong { id, expected, found: len });
                    }
                }
                ObjectFile::Stray(path) => report.problems.push(Problem::StrayFile { path }),
            }
        }
        progress(total, total);
        for id in named.keys() {
            if !on_disk.contains_key(id) {
                report.problems.push(Problem::MissingObject { id: *id });
            }
        }
        report.problems.extend(loose_modes(&self.data_dir)?);
        if repair {
            report.repaired = self.repair(&report.problems)?;
        }
        Ok(report)
    }

    /// Garbage collection beside a running server (this `Fs` is open
    /// read-only): remove objects no content row names, and variants
    /// whose object is gone. Candidates are listed without locks; each is
    /// removed only after a re-check under SQLite's write lock, with every
    /// commit durable, so neither a transaction that is publishing an
    /// object nor a release that a power cut could undo can lose data.
    /// Staging files and counts are left to `gc` without a server.
    pub fn gc_beside_server(&self, progress: &dyn Fn(u64, u64)) -> FsResult<GcReport> {
        let objects = self.store.list_objects()?;
        let live: std::collections::HashSet<ContentId> = self
            .meta
            .read(|db| db.live_contents())?
            .into_iter()
            .filter(|c| c.chunk_refs > 0)
            .map(|c| c.id)
            .collect();
        let candidates: Vec<(ContentId, u64)> = objects
            .into_iter()
            .filter_map(|object| match object {
                ObjectFile::Object { id, len } if !live.contains(&id) => Some((id, len)),
                _ => None,
            })
            .collect();
        let total = candidates.len() as u64;
        let mut gc = GcReport::default();
        let removed = self.meta.under_write_lock(|db| -> FsResult<()> {
            for (done, (id, len)) in candidates.iter().enumerate() {
                progress(done as u64, total);
                if db.content(id)?.is_none_or(|c| c.chunk_refs == 0) {
                    self.store.remove_object_file(id)?;
                    gc.objects += 1;
                    gc.bytes += len;
                }
            }
            Ok(())
        })?;
        removed?;
        progress(total, total);
        (gc.orphan_variants, gc.orphan_variant_bytes) = self.store.remove_orphan_variants()?;
        gc.orphan_outboards = self.store.remove_orphan_outboards()?;
        Ok(gc)
    }

    /// Fix the repairable `problems`; returns how many were fixed.
    fn repair(&self, problems: &[Problem]) -> FsResult<usize> {
        let fixable: Vec<&Problem> = problems.iter().filter(|p| p.repairable()).collect();
        let mut unneeded: Vec<ContentId> = Vec::new();
        self.transact(Origin::Internal, |tx| {
            for problem in &fixable {
                match problem {
                    Problem::RefcountWrong { id, actual, .. } => {
                        tx.db.set_refcount(id, *actual)?;
                        if tx.db.delete_content_if_unused(id)? {
                            unneeded.push(*id);
                        }
                    }
                    Problem::ChunkRefsWrong { id, actual, .. } => {
                        tx.db.set_chunk_refs(id, *actual)?;
                        if *actual == 0 {
                            unneeded.push(*id);
                        }
                        tx.db.delete_content_if_unused(id)?;
                    }
                    Problem::LinkCountWrong { ino, expected, .. } => tx.db.set_nlink(*ino, *expected)?,
                    Problem::DanglingEntry { parent, name, .. } => tx.db.delete_dirent(*parent, name)?,
                    _ => {}
                }
            }
            Ok(())
        })?;
        for problem in &fixable {
            match problem {
                Problem::UnreferencedObject { id } => unneeded.push(*id),
                Problem::StrayFile { path } => self.store.remove_stray(path)?,
                _ => {}
            }
        }
        self.remove_unused(&unneeded);
        for problem in &fixable {
            if let Problem::LooseMode { path, mode } = problem {
                make_private(path, *mode)?;
            }
        }
        Ok(fixable.len())
    }

    /// Hash every object again (SHA-1 and blake3) and compare with its id
    /// and record. A corrupt object goes to quarantine: reads of its
    /// files then fail (EIO, HTTP 500) instead of returning bad bytes.
    /// `progress(bytes_done, bytes_total)`.
    pub fn scrub(&self, progress: &dyn Fn(u64, u64)) -> FsResult<ScrubReport> {
        let live: Vec<_> =
            self.meta.read(|db| db.live_contents())?.into_iter().filter(|c| c.chunk_refs > 0).collect();
        let total: u64 = live.iter().map(|c| c.size).sum();
        let mut report = ScrubReport::default();
        for record in live {
            progress(report.bytes, total);
            if let Some(bytes) = self.meta.read(|db| db.chunk_bytes(&record.id))? {
                report.objects += 1;
                report.bytes += bytes.len() as u64;
                if let Some(reason) = wrong_bytes(&record, &ContentDigest::of(&bytes)) {
                    let moved = self.quarantine_inline(&record.id, &bytes)?;
                    tracing::error!(
                        "scrub: chunk {} in the database is corrupt ({reason}); its bytes moved to {}",
                        record.id.etag_tag(),
                        moved.display()
                    );
                    report.corrupt.push((record.id, reason, moved));
                }
                continue;
            }
            // Also makes the object's outboard good, when its bytes are.
            let digest = match self.store.digest_of_object(&record.id) {
                Ok(digest) => digest,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    report.missing.push(record.id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            report.objects += 1;
            report.bytes += digest.size;
            if let Some(reason) = wrong_bytes(&record, &digest) {
                let moved = self.store.quarantine(&record.id)?;
                tracing::error!(
                    "scrub: object {} is corrupt ({reason}); moved to {}",
                    record.id.etag_tag(),
                    moved.display()
                );
                report.corrupt.push((record.id, reason, moved));
            }
        }
        (report.variants, report.corrupt_variants) = self.store.scrub_variants()?;
        progress(total, total);
        Ok(report)
    }

    /// Remove objects (and their variants) that no content row holds,
    /// and content rows no inode holds: what a crash between a commit
    /// and its cleanup leaves behind.
    pub fn gc(&self, progress: &dyn Fn(u64, u64)) -> FsResult<GcReport> {
        let report = self.check(false, progress)?;
        let mut gc = GcReport::default();
        let garbage: Vec<Problem> = report
            .problems
            .into_iter()
            .filter(|p| {
                matches!(
                    p,
                    Problem::UnreferencedObject { .. }
                        | Problem::RefcountWrong { actual: 0, .. }
                        | Problem::ChunkRefsWrong { actual: 0, .. }
                )
            })
            .collect();
        for problem in &garbage {
            if let Problem::UnreferencedObject { id } | Problem::ChunkRefsWrong { id, .. } = problem {
                let len = match self.store.open_object(id) {
                    Ok(file) => file.metadata().map(|m| m.len()).ok(),
                    Err(_) => self.meta.read(|db| db.chunk_bytes(id))?.map(|bytes| bytes.len() as u64),
                };
                if let Some(len) = len {
                    gc.objects += 1;
                    gc.bytes += len;
                }
            }
        }
        self.repair(&garbage)?;
        (gc.orphan_variants, gc.orphan_variant_bytes) = self.store.remove_orphan_variants()?;
        gc.orphan_outboards = self.store.remove_orphan_outboards()?;
        Ok(gc)
    }
}

/// What is wrong with bytes hashed as `digest` for content `record`.
fn wrong_bytes(record: &ContentRecord, digest: &ContentDigest) -> Option<String> {
    if digest.size != record.size {
        Some(format!("{} bytes, not {}", digest.size, record.size))
    } else if digest.sha1 != record.id.lo {
        Some("SHA-1 differs from its id".to_owned())
    } else if digest.blake3 != record.blake3 {
        Some("blake3 differs from the record".to_owned())
    } else {
        None
    }
}

/// Everything in `data_dir` (itself included) that its group or others
/// may use. Symbolic links are not followed (their own mode means
/// nothing), nor are other file systems mounted inside.
fn loose_modes(data_dir: &Path) -> FsResult<Vec<Problem>> {
    let mut loose = Vec::new();
    for entry in walkdir::WalkDir::new(data_dir).same_file_system(true) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(data_dir).to_path_buf();
            StoreError::Io { action: "walk", path, source: e.into() }
        })?;
        if entry.file_type().is_symlink() {
            continue;
        }
        let metadata = entry.metadata().map_err(|e| StoreError::io("stat", entry.path())(e.into()))?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            loose.push(Problem::LooseMode { path: entry.into_path(), mode });
        }
    }
    Ok(loose)
}

/// `mode` with only its owner's permissions left.
fn private_mode(mode: u32) -> u32 {
    mode & 0o700
}

/// Take group and others' permissions off `path`. Gone meanwhile (a stray
/// file or an unreferenced object that this repair removed) is fine.
fn make_private(path: &Path, mode: u32) -> FsResult<()> {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(private_mode(mode))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io("set the mode of", path)(e).into())
        }
        _ => Ok(()),
    }
}

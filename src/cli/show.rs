//! Read-only commands: get, ls, stat, stats.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::HumanBytes;
use tsmfs::fs::{Attr, FileKind, Fs, OpenFlags, Origin};

/// Entries fetched per readdir call.
const LIST_BATCH: u32 = 1024;
/// Bytes per read when copying a file out.
const READ_CHUNK: u32 = 1024 * 1024;

pub fn get(fs: &Fs, path: &str, dest: Option<&Path>) -> Result<ExitCode> {
    let attr = resolve(fs, path)?;
    if attr.kind != FileKind::File {
        bail!("{path} is not a regular file");
    }
    let opened = fs
        .open_file(attr.ino, OpenFlags { read: true, ..OpenFlags::default() })
        .with_context(|| format!("could not open {path}"))?;
    let mut out: Box<dyn Write> = match dest {
        None => Box::new(std::io::stdout().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdout().lock()),
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("could not create {}", p.display()))?)
        }
    };
    let mut offset = 0u64;
    let copied = loop {
        let chunk = fs.read(opened.handle, offset, READ_CHUNK)?;
        if chunk.is_empty() {
            break Ok(());
        }
        if let Err(e) = out.write_all(&chunk) {
            break Err(e);
        }
        offset += chunk.len() as u64;
    };
    fs.release(opened.handle, Origin::Cli)?;
    copied.and_then(|()| out.flush()).context("could not write output")?;
    Ok(ExitCode::SUCCESS)
}

pub fn ls(fs: &Fs, path: &str, long: bool) -> Result<ExitCode> {
    let attr = resolve(fs, path)?;
    let mut out = std::io::stdout().lock();
    if attr.kind != FileKind::Dir {
        print_entry(&mut out, path.rsplit('/').next().unwrap_or(path).as_bytes(), &attr, long)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut cursor = 0;
    loop {
        let rows = fs.readdir(attr.ino, cursor, LIST_BATCH)?;
        let Some(last) = rows.last() else { break };
        cursor = last.cursor;
        for row in rows {
            let attr = if long { fs.with_content_id(row.inode)? } else { row.inode };
            print_entry(&mut out, &row.name, &attr, long)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entry(out: &mut impl Write, name: &[u8], attr: &Attr, long: bool) -> Result<()> {
    let name = String::from_utf8_lossy(name);
    let suffix = if attr.kind == FileKind::Dir { "/" } else { "" };
    if long {
        writeln!(
            out,
            "{} {:>3} {:>5} {:>5} {:>12} {} {}{suffix}\t{}",
            mode_string(attr),
            attr.nlink,
            attr.uid,
            attr.gid,
            attr.size,
            format_time(attr.mtime_ns, false),
            name,
            attr.content_id().map(|id| id.etag()).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "{name}{suffix}")?;
    }
    Ok(())
}

pub fn stat(fs: &Fs, path: &str) -> Result<ExitCode> {
    let attr = resolve(fs, path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "path:    {path}")?;
    writeln!(out, "inode:   {}", attr.ino)?;
    writeln!(out, "kind:    {}", kind_name(attr.kind))?;
    writeln!(out, "mode:    {:04o} ({})", attr.perm, mode_string(&attr))?;
    writeln!(out, "owner:   {}:{}", attr.uid, attr.gid)?;
    writeln!(out, "size:    {}", attr.size)?;
    writeln!(out, "links:   {}", attr.nlink)?;
    if let Some(id) = attr.content_id() {
        writeln!(out, "content: {id}")?;
        writeln!(out, "etag:    {}", id.etag())?;
    }
    if attr.kind == FileKind::Symlink {
        let target = fs.readlink(attr.ino)?;
        writeln!(out, "target:  {}", String::from_utf8_lossy(&target))?;
    }
    for (label, ns) in [
        ("atime", attr.atime_ns),
        ("mtime", attr.mtime_ns),
        ("ctime", attr.ctime_ns),
        ("btime", attr.btime_ns),
    ] {
        writeln!(out, "{label}:   {}", format_time(ns, true))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(fs: &Fs) -> Result<ExitCode> {
    let totals = fs.totals()?;
    let stored = fs.stored_bytes()?;
    let ratio = |num: u64, den: u64| if den == 0 { 1.0 } else { num as f64 / den as f64 };
    let mut out = std::io::stdout().lock();
    writeln!(out, "files:            {}", totals.files)?;
    writeln!(out, "directories:      {}", totals.dirs)?;
    writeln!(out, "other inodes:     {}", totals.others)?;
    writeln!(
        out,
        "logical bytes:    {} ({})",
        totals.logical_bytes_by_name,
        HumanBytes(totals.logical_bytes_by_name)
    )?;
    writeln!(out, "distinct contents: {}", totals.contents)?;
    writeln!(out, "content bytes:    {} ({})", totals.content_bytes, HumanBytes(totals.content_bytes))?;
    writeln!(out, "chunks:           {}", totals.chunks)?;
    writeln!(out, "chunk bytes:      {} ({})", totals.chunk_bytes, HumanBytes(totals.chunk_bytes))?;
    writeln!(out, "stored bytes:     {} ({}, on disk)", stored, HumanBytes(stored))?;
    writeln!(
        out,
        "dedup ratio:      {:.2} (logical / chunk bytes)",
        ratio(totals.logical_bytes_by_name, totals.chunk_bytes)
    )?;
    writeln!(out, "changes logged:   {}", totals.changes)?;
    Ok(ExitCode::SUCCESS)
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "regular file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symbolic link",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "character device",
        FileKind::BlockDevice => "block device",
    }
}

fn mode_string(attr: &Attr) -> String {
    let kind = match attr.kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let p = attr.perm;
    for (shift, special, special_char) in
        [(6, libc::S_ISUID, 's'), (3, libc::S_ISGID, 's'), (0, libc::S_ISVTX, 't')]
    {
        let bits = (p >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (p & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn format_time(ns: i64, precise: bool) -> String {
    let Ok(ns) = u64::try_from(ns) else {
        return format!("{ns} ns before the epoch");
    };
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    if precise {
        humantime::format_rfc3339_nanos(t).to_string()
    } else {
        humantime::format_rfc3339_seconds(t).to_string()
    }
}

/// The attributes at `path`, a file's content id (its ETag) included.
fn resolve(fs: &Fs, path: &str) -> Result<Attr> {
    fs.resolve(path.as_bytes()).and_then(|attr| fs.with_content_id(attr)).with_context(|| path.to_string())
}

//! Timed file-system micro-operations for `scripts/bench-fs`; prints the
//! elapsed seconds of one run. Works on any directory, so the same code
//! measures a native directory and a tsmfs mount.
//!
//!   fsbench seqread FILE        read FILE front to back, 1 MiB at a time
//!   fsbench seqwrite SRC DST    copy SRC to a new DST, 1 MiB writes, fsync
//!   fsbench create DIR N        create N empty files in DIR
//!   fsbench stat DIR N          stat the N files `create` made
//!   fsbench unlink DIR N        remove the N files `create` made
//!   fsbench patch FILE N        N times: open FILE, write 4 KiB at a
//!                               pseudo-random 4 KiB-aligned offset, close
//!   fsbench save DIR N          N editor-style saves of DIR/doc.txt: write
//!                               a temporary file, fsync it, rename it over

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

const CHUNK: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["seqread", file] => seqread(Path::new(file)),
        ["seqwrite", src, dst] => seqwrite(Path::new(src), Path::new(dst)),
        ["create", dir, n] => create(Path::new(dir), n.parse().unwrap_or(0)),
        ["stat", dir, n] => stat(Path::new(dir), n.parse().unwrap_or(0)),
        ["unlink", dir, n] => unlink(Path::new(dir), n.parse().unwrap_or(0)),
        ["patch", file, n] => patch(Path::new(file), n.parse().unwrap_or(0)),
        ["save", dir, n] => save(Path::new(dir), n.parse().unwrap_or(0)),
        _ => Err(std::io::Error::other("usage: fsbench seqread|seqwrite|create|stat|unlink|patch|save ...")),
    };
    match result {
        Ok(()) => println!("{:.6}", started.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("fsbench: {e}");
            std::process::exit(1);
        }
    }
}

fn seqread(file: &Path) -> std::io::Result<()> {
    let mut f = File::open(file)?;
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

fn seqwrite(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut input = File::open(src)?;
    let mut out = OpenOptions::new().write(true).create_new(true).open(dst)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.sync_all()
}

fn create(dir: &Path, n: usize) -> std::io::Result<()> {
    for i in 0..n {
        OpenOptions::new().write(true).create_new(true).open(dir.join(format!("f{i}")))?;
    }
    Ok(())
}

fn stat(dir: &Path, n: usize) -> std::io::Result<()> {
    for i in 0..n {
        std::fs::metadata(dir.join(format!("f{i}")))?;
    }
    Ok(())
}

fn unlink(dir: &Path, n: usize) -> std::io::Result<()> {
    for i in 0..n {
        std::fs::remove_file(dir.join(format!("f{i}")))?;
    }
    Ok(())
}

fn patch(file: &Path, n: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let blocks = (std::fs::metadata(file)?.len() / 4096).max(1);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let block = [(i % 251) as u8; 4096];
        let f = OpenOptions::new().write(true).open(file)?;
        f.write_all_at(&block, seed % blocks * 4096)?;
    }
    Ok(())
}

fn save(dir: &Path, n: usize) -> std::io::Result<()> {
    let (doc, tmp) = (dir.join("doc.txt"), dir.join(".doc.txt.swp"));
    for i in 0..n {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        writeln!(f, "revision {i}")?;
        f.write_all(&[b'x'; 4000])?;
        f.sync_all()?;
        std::fs::rename(&tmp, &doc)?;
    }
    Ok(())
}

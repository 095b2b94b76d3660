//! Randomized operation sequences run on the FUSE mount and on a native
//! directory side by side: every call must succeed or fail alike (same
//! errno), and the two trees must end up identical.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;

use crate::util::TestMount;

const PATHS: [&str; 7] = ["a", "b", "d0", "d0/a", "d0/b", "d1", "d1/a"];

#[derive(Clone, Debug)]
enum Op {
    Write(usize, Vec<u8>),
    WriteAt(usize, u64, Vec<u8>),
    Append(usize, Vec<u8>),
    Truncate(usize, u64),
    Unlink(usize),
    Mkdir(usize),
    Rmdir(usize),
    Rename(usize, usize),
    Link(usize, usize),
    Symlink(usize, usize),
    Chmod(usize, u32),
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    let bytes = prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        4 => (p.clone(), bytes.clone()).prop_map(|(p, b)| Op::Write(p, b)),
        2 => (p.clone(), 0..400u64, bytes.clone()).prop_map(|(p, o, b)| Op::WriteAt(p, o, b)),
        1 => (p.clone(), bytes).prop_map(|(p, b)| Op::Append(p, b)),
        1 => (p.clone(), 0..500u64).prop_map(|(p, s)| Op::Truncate(p, s)),
        2 => p.clone().prop_map(Op::Unlink),
        3 => p.clone().prop_map(Op::Mkdir),
        1 => p.clone().prop_map(Op::Rmdir),
        2 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Symlink(a, b)),
        1 => (p.clone(), prop::sample::select(vec![0o600u32, 0o644, 0o755, 0o4755, 0o1777])).prop_map(|(p, m)| Op::Chmod(p, m)),
        2 => p.prop_map(Op::Read),
    ]
}

fn code<T>(r: std::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Apply one operation under `root`; the outcome to compare.
fn apply(root: &Path, op: &Op) -> Result<Vec<u8>, i32> {
    let at = |i: usize| root.join(PATHS[i]);
    match op {
        Op::Write(p, b) => code(fs::write(at(*p), b)).map(|_| vec![]),
        Op::WriteAt(p, o, b) => {
            let f = code(OpenOptions::new().write(true).open(at(*p)))?;
            code(f.write_all_at(b, *o)).map(|_| vec![])
        }
        Op::Append(p, b) => {
            let mut f = code(OpenOptions::new().append(true).open(at(*p)))?;
            code(std::io::Write::write_all(&mut f, b)).map(|_| vec![])
        }
        Op::Truncate(p, s) => {
            let f = code(OpenOptions::new().write(true).open(at(*p)))?;
            code(f.set_len(*s)).map(|_| vec![])
        }
        Op::Unlink(p) => code(fs::remove_file(at(*p))).map(|_| vec![]),
        Op::Mkdir(p) => code(fs::create_dir(at(*p))).map(|_| vec![]),
        Op::Rmdir(p) => code(fs::remove_dir(at(*p))).map(|_| vec![]),
        Op::Rename(a, b) => code(fs::rename(at(*a), at(*b))).map(|_| vec![]),
        Op::Link(a, b) => code(fs::hard_link(at(*a), at(*b))).map(|_| vec![]),
        Op::Symlink(a, b) => code(std::os::unix::fs::symlink(PATHS[*a], at(*b))).map(|_| vec![]),
        Op::Chmod(p, m) => code(fs::set_permissions(at(*p), fs::Permissions::from_mode(*m))).map(|_| vec![]),
        Op::Read(p) => code(fs::read(at(*p))),
    }
}

/// Everything observable about a tree: per path, kind, mode, links, size,
/// and bytes or link target.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, u64, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = entry.path().symlink_metadata().unwrap();
        let body = if meta.file_type().is_file() {
            fs::read(entry.path()).unwrap()
        } else if meta.file_type().is_symlink() {
            fs::read_link(entry.path()).unwrap().into_os_string().into_encoded_bytes()
        } else {
            vec![]
        };
        let size = if meta.is_dir() { 0 } else { meta.len() };
        out.insert(rel, (meta.mode(), meta.nlink(), size, body));
    }
    out
}

#[test]
fn the_mount_behaves_like_a_native_directory() {
    // One mount for all cases (each in its own subdirectory): mounting per
    // case would dominate the run time.
    let mount = TestMount::new();
    let native = tempfile::tempdir().expect("native temp dir");
    let case = std::cell::Cell::new(0);
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 200, ..ProptestConfig::default() });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        case.set(case.get() + 1);
        let ours = mount.path(&format!("case{}", case.get()));
        let theirs = native.path().join(format!("case{}", case.get()));
        fs::create_dir(&ours).unwrap();
        fs::create_dir(&theirs).unwrap();
        for (i, op) in ops.iter().enumerate() {
            let got = apply(&ours, op);
            let want = apply(&theirs, op);
            prop_assert_eq!(&got, &want, "step {} {:?}", i, op);
        }
        prop_assert_eq!(snapshot(&ours), snapshot(&theirs));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(case.get() >= 200, "ran {} cases", case.get());
}

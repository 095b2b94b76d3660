//! Randomized operation sequences against a simple in-memory model: the
//! same results, the same bytes, and store invariants after every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tsmfs::fs::{FsError, OpenFlags, Origin, RenameFlags, SetAttr};
use tsmfs::id::Ino;

use crate::util::{TestFs, caller, rw, sha1_id};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Op {
    Put(usize, Vec<u8>),
    Unlink(usize),
    Rename(usize, usize),
    Link(usize, usize),
    Truncate(usize, u64),
    Write(usize, u64, Vec<u8>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let bytes = prop::collection::vec(prop::sample::select(vec![b'x', b'y', b'z']), 0..20);
    prop_oneof![
        3 => (name.clone(), bytes.clone()).prop_map(|(n, b)| Op::Put(n, b)),
        1 => name.clone().prop_map(Op::Unlink),
        2 => (name.clone(), name.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (name.clone(), name.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (name.clone(), 0..30u64).prop_map(|(n, s)| Op::Truncate(n, s)),
        2 => (name, 0..25u64, bytes).prop_map(|(n, o, b)| Op::Write(n, o, b)),
        1 => Just(Op::Reopen),
    ]
}

/// names -> inode key; inode key -> bytes.
#[derive(Default)]
struct Model {
    names: BTreeMap<usize, u32>,
    files: BTreeMap<u32, Vec<u8>>,
    next: u32,
}

impl Model {
    fn gc(&mut self) {
        let live: BTreeSet<u32> = self.names.values().copied().collect();
        self.files.retain(|k, _| live.contains(k));
    }
}

fn apply(t: TestFs, m: &mut Model, op: &Op) -> TestFs {
    let c = caller();
    let name = |i: usize| NAMES[i].as_bytes();
    match op {
        Op::Put(n, bytes) => {
            t.put(Ino::ROOT, NAMES[*n], bytes);
            let key = *m.names.entry(*n).or_insert_with(|| {
                m.next += 1;
                m.next
            });
            m.files.insert(key, bytes.clone());
        }
        Op::Unlink(n) => {
            let got = t.fs.unlink(Ino::ROOT, name(*n), &c);
            assert_eq!(got.is_ok(), m.names.remove(n).is_some(), "{op:?}: {got:?}");
            m.gc();
        }
        Op::Rename(a, b) => {
            let got = t.fs.rename(Ino::ROOT, name(*a), Ino::ROOT, name(*b), RenameFlags::default(), &c);
            match m.names.get(a).copied() {
                None => assert!(matches!(got, Err(FsError::NotFound)), "{op:?}: {got:?}"),
                Some(key) => {
                    got.unwrap();
                    if m.names.get(b) != Some(&key) {
                        m.names.remove(a);
                        m.names.insert(*b, key);
                    }
                    m.gc();
                }
            }
        }
        Op::Link(a, b) => {
            let target = t.fs.lookup(Ino::ROOT, name(*a));
            let got = target.and_then(|f| t.fs.link(f.ino, Ino::ROOT, name(*b), &c));
            match (m.names.get(a).copied(), m.names.contains_key(b)) {
                (None, _) => assert!(matches!(got, Err(FsError::NotFound)), "{op:?}: {got:?}"),
                (Some(_), true) => assert!(matches!(got, Err(FsError::Exists)), "{op:?}: {got:?}"),
                (Some(key), false) => {
                    got.unwrap();
                    m.names.insert(*b, key);
                }
            }
        }
        Op::Truncate(n, size) => {
            let got = t
                .fs
                .lookup(Ino::ROOT, name(*n))
                .and_then(|f| t.fs.setattr(f.ino, &SetAttr { size: Some(*size), ..Default::default() }, &c));
            match m.names.get(n) {
                None => assert!(got.is_err()),
                Some(key) => {
                    assert_eq!(got.unwrap().size, *size);
                    m.files.get_mut(key).unwrap().resize(*size as usize, 0);
                }
            }
        }
        Op::Write(n, offset, bytes) => {
            let Some(key) = m.names.get(n).copied() else { return t };
            let f = t.fs.lookup(Ino::ROOT, name(*n)).unwrap();
            let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
            t.fs.write(h, *offset, bytes).unwrap();
            t.fs.release(h, Origin::Fuse).unwrap();
            let file = m.files.get_mut(&key).unwrap();
            let end = *offset as usize + bytes.len();
            if !bytes.is_empty() {
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[*offset as usize..end].copy_from_slice(bytes);
            }
        }
        Op::Reopen => return t.reopen(),
    }
    t
}

fn check(t: &TestFs, m: &Model) {
    for (i, n) in NAMES.iter().enumerate() {
        match m.names.get(&i) {
            None => assert!(matches!(t.fs.lookup(Ino::ROOT, n.as_bytes()), Err(FsError::NotFound))),
            Some(key) => {
                let attr = t.fs.lookup(Ino::ROOT, n.as_bytes()).unwrap();
                let want = &m.files[key];
                let links = m.names.values().filter(|k| *k == key).count() as u32;
                assert_eq!(attr.nlink, links, "{n}");
                assert_eq!(attr.size, want.len() as u64, "{n}");
                assert_eq!(attr.content_id(), Some(sha1_id(want)), "{n}");
                assert_eq!(&t.read_all(attr.ino), want, "{n}");
            }
        }
    }
    // Store invariants, once what replaced contents held is let go (at a
    // durable point): one object per distinct non-empty content (these
    // files are small: one chunk each), and the contents table agrees.
    let distinct: BTreeSet<&Vec<u8>> = m.files.values().filter(|b| !b.is_empty()).collect();
    assert_eq!(t.stored_chunks(), distinct.len());
    let totals = t.fs.totals().unwrap();
    assert_eq!(totals.contents as usize, distinct.len());
    assert_eq!(totals.files as usize, m.files.len());
    let _ = OpenFlags::default();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut t = TestFs::new();
        let mut m = Model::default();
        for op in &ops {
            t = apply(t, &mut m, op);
            check(&t, &m);
        }
    }
}

//! WebDAV locks in the core: conflicts, coverage, expiry, persistence.

use tsmfs::fs::{LockHolder, LockRequest, PathLock};

use crate::util::{TestFs, caller};

fn request(path: &str, shared: bool, deep: bool) -> LockRequest {
    LockRequest { path: path.into(), principal: None, owner_xml: None, timeout_s: Some(600), shared, deep }
}

/// Take a lock; the error is the token of the lock in the way.
fn take(t: &TestFs, path: &str, shared: bool, deep: bool) -> Result<PathLock, String> {
    t.fs.lock_path(&request(path, shared, deep), &caller()).expect("lock call").map_err(|lock| lock.token)
}

fn may_change(t: &TestFs, path: &str, deep: bool, tokens: &[String]) -> bool {
    let holder = LockHolder { principal: None, any_principal: true, tokens };
    t.fs.check_locks(path.as_bytes(), deep, &holder).expect("check call").is_ok()
}

#[test]
fn exclusive_and_shared_locks_conflict_as_rfc_4918_says() {
    let t = TestFs::new();
    let a = take(&t, "/a/", false, true).expect("first exclusive lock");
    assert_eq!(a.path, b"/a", "trailing slashes are not part of the key");
    assert!(a.token.starts_with("urn:uuid:"));
    let in_the_way = take(&t, "/a/b/c", false, false).expect_err("below a deep exclusive lock");
    assert_eq!(in_the_way, a.token);
    assert!(take(&t, "/a", true, false).is_err(), "shared against exclusive");
    assert!(take(&t, "/", false, true).is_err(), "a deep lock above one that exists");
    assert!(take(&t, "/ab", false, false).is_ok(), "a sibling that shares a prefix is not covered");

    // Shared locks coexist; an exclusive one waits for all of them.
    let s1 = take(&t, "/s", true, false).expect("shared");
    let s2 = take(&t, "/s", true, false).expect("second shared");
    assert!(take(&t, "/s", false, false).is_err());
    assert!(!may_change(&t, "/s", false, &[]));
    assert!(may_change(&t, "/s", false, std::slice::from_ref(&s2.token)), "one shared token is enough");

    // A depth-0 lock covers its own resource only.
    take(&t, "/d", false, false).expect("depth 0");
    assert!(may_change(&t, "/d/child", false, &[]));
    assert!(!may_change(&t, "/d", false, &[]));
    assert!(!may_change(&t, "/", true, &[]), "a deep change of the root meets the locks below");

    // Coverage, release through a covered path, and removal of a subtree.
    let covering: Vec<String> =
        t.fs.locks_covering(b"/a/b/c").unwrap().into_iter().map(|l| l.token).collect();
    assert_eq!(covering, vec![a.token.clone()]);
    assert!(
        t.fs.unlock_path(b"/a/b", &a.token, &caller()).unwrap(),
        "a deep lock is released via a path it covers"
    );
    assert!(!t.fs.unlock_path(b"/a", &a.token, &caller()).unwrap(), "only once");
    assert!(may_change(&t, "/a/b/c", false, &[]));
    t.fs.remove_locks_under(b"/s", &caller()).unwrap();
    assert!(may_change(&t, "/s", false, &[]));
    assert!(!t.fs.unlock_path(b"/s", &s1.token, &caller()).unwrap());
}

#[test]
fn locks_survive_a_restart_and_lapse_at_their_timeout() {
    let t = TestFs::new();
    let kept = take(&t, "/kept", false, false).unwrap();
    let mut short = request("/short", false, false);
    short.timeout_s = Some(1);
    short.owner_xml = Some(b"<D:owner xmlns:D=\"DAV:\">me</D:owner>".to_vec());
    let short = t.fs.lock_path(&short, &caller()).unwrap().unwrap();
    assert_eq!(short.timeout_s, Some(1));

    let t = t.reopen();
    let found = t.fs.locks_covering(b"/kept").unwrap();
    assert_eq!(found, vec![kept.clone()], "the same lock, every field, after a restart");
    assert_eq!(t.fs.locks_covering(b"/short").unwrap()[0].owner_xml.as_deref(), short.owner_xml.as_deref());

    // A refresh without a timeout keeps the one granted.
    let refreshed = t.fs.refresh_lock(b"/short", &short.token, None, &caller()).unwrap().expect("refreshed");
    assert_eq!(refreshed.timeout_s, Some(1));
    assert!(refreshed.expires_ns >= short.expires_ns);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(t.fs.locks_covering(b"/short").unwrap().is_empty(), "lapsed");
    assert!(may_change(&t, "/short", false, &[]));
    assert!(t.fs.refresh_lock(b"/short", &short.token, Some(60), &caller()).unwrap().is_none());
    take(&t, "/short", false, false).expect("a lapsed lock is in nobody's way");

    // No timeout asked: the server's default, never unbounded.
    let mut open_ended = request("/open", false, false);
    open_ended.timeout_s = None;
    let open_ended = t.fs.lock_path(&open_ended, &caller()).unwrap().unwrap();
    assert_eq!(open_ended.timeout_s, Some(tsmfs::fs::DEFAULT_LOCK_TIMEOUT_S));
}

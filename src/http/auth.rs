//! HTTP Basic authentication against a file of argon2 password hashes.
//!
//! The file has one `user:hash` line per user (PHC strings, as
//! `tsmfs passwd` writes them), or `user:hash:uid:gid` to give the user
//! the identity its requests act as; without one, a user acts as the
//! system account of that name, or as `nobody`. `#` starts a comment. Clients send their
//! credentials with every request and argon2 is slow on purpose, so a
//! successful check is remembered (by user and the password's blake3,
//! never the password) for the life of the server.
//!
//! A check that is not remembered costs one argon2 hash whoever it names:
//! an unknown user is checked against a decoy hash made with the first
//! user's parameters, so the time of a refusal tells no user names. At
//! most [`MAX_CHECKS_AT_ONCE`] hashes run at once, each in memory kept
//! for the next one (argon2 needs `m_cost` KiB per hash; allocating it per
//! check left the allocator holding gigabytes after an attack); the rest
//! wait their turn. A client address that keeps failing is refused
//! without a check for a while (`throttle`). Remembered credentials
//! never wait.

mod throttle;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, Block};
use base64::Engine;
use http::HeaderValue;
use parking_lot::Mutex;
use rand_core::{OsRng, RngCore};

/// Argon2 hashes computed at once, at most (fewer on fewer cores). Each
/// holds `m_cost` KiB: 19 MiB with the parameters `tsmfs passwd` uses.
pub const MAX_CHECKS_AT_ONCE: usize = 4;

/// Checks remembered before the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// Why a password file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unreadable or unwritable.
    #[error("password file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not `user:hash`.
    #[error("password file {}, line {line}: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Group or others may read or write the file: anyone who can read
    /// it can try passwords offline, anyone who can write it can add a
    /// user. Refused, as ssh refuses such a key.
    #[error(
        "password file {} has mode {mode:04o}: other users may read or change it. \
         Make it private with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Hashing failed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// The users who may use the server.
pub struct Users {
    hashes: HashMap<String, String>,
    /// Whom each user's requests act as (`None`: root, unchecked).
    identities: HashMap<String, Option<Arc<crate::fs::Identity>>>,
    /// What an unknown user is checked against: a hash of a random
    /// password, with the first user's parameters.
    decoy: String,
    verified: Mutex<HashSet<(String, [u8; 32])>>,
    /// One permit per hash that may run at once.
    checks: Arc<tokio::sync::Semaphore>,
    /// Argon2 memory, kept between checks: one per permit, at most.
    memories: Mutex<Vec<Vec<Block>>>,
    throttle: Arc<throttle::Throttle>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("users", &self.hashes.len()).finish_non_exhaustive()
    }
}

/// What to do with a request, by its credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Good credentials.
    Allowed,
    /// None, or wrong ones (401).
    Refused,
    /// Not checked: the client's address failed too often lately (429,
    /// with Retry-After).
    Throttled {
        /// When a check will be made again.
        retry_after: Duration,
    },
}

impl Users {
    /// Read a password file, which must be private (no permission for
    /// group or others).
    pub fn load(path: &Path) -> Result<Users, AuthError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let io = |source| AuthError::Io { path: path.to_owned(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The mode of the file read, not of whatever the name means later.
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AuthError::NotPrivate { path: path.to_owned(), mode });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let (mut hashes, mut identities) = (HashMap::new(), HashMap::new());
        let mut decoy = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |reason: &str| AuthError::Syntax {
                path: path.to_owned(),
                line: index + 1,
                reason: reason.into(),
            };
            let (user, rest) = line.split_once(':').ok_or_else(|| syntax("expected user:hash"))?;
            if user.is_empty() {
                return Err(syntax("empty user name"));
            }
            // A PHC string has no ':', so two more fields are the ids.
            let (hash, ids) = match rest.splitn(3, ':').collect::<Vec<_>>()[..] {
                [hash] => (hash, None),
                [hash, uid, gid] => {
                    let id =
                        |text: &str| text.parse::<u32>().map_err(|_| syntax("expected user:hash:uid:gid"));
                    (hash, Some((id(uid)?, id(gid)?)))
                }
                _ => return Err(syntax("expected user:hash or user:hash:uid:gid")),
            };
            let parsed =
                PasswordHash::new(hash).map_err(|e| syntax(&format!("not a password hash ({e})")))?;
            let hasher = hasher_of(&parsed).map_err(|e| syntax(&format!("not an argon2 hash ({e})")))?;
            if decoy.is_none() {
                decoy = Some(decoy_hash(&hasher)?);
            }
            hashes.insert(user.to_owned(), hash.to_owned());
            identities.insert(user.to_owned(), identity_of(user, ids));
        }
        let Some(decoy) = decoy else {
            return Err(AuthError::Syntax { path: path.to_owned(), line: 0, reason: "no users".into() });
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Users {
            hashes,
            identities,
            decoy,
            verified: Mutex::new(HashSet::new()),
            checks: Arc::new(tokio::sync::Semaphore::new(cores.min(MAX_CHECKS_AT_ONCE))),
            memories: Mutex::new(Vec::new()),
            throttle: Arc::default(),
        })
    }

    /// Whether the credentials of a request from `client` are good.
    /// Remembered ones are answered at once; others wait for a turn to
    /// run argon2 (on the blocking pool), unless `client` failed too
    /// often lately.
    pub async fn authorize(self: &Arc<Self>, authorization: Option<&HeaderValue>, client: IpAddr) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Refused;
        };
        let digest = *blake3::hash(password.as_bytes()).as_bytes();
        let key = (user, digest);
        if self.verified.lock().contains(&key) {
            return Verdict::Allowed;
        }
        let admitted = match self.throttle.admit(client) {
            Ok(admitted) => admitted,
            Err(retry_after) => return Verdict::Throttled { retry_after },
        };
        let Ok(permit) = self.checks.clone().acquire_owned().await else { return Verdict::Refused };
        let users = self.clone();
        // The permit and the throttle's count go with the check itself: a
        // client that disconnects does not end a hash that is running.
        let checked = tokio::task::spawn_blocking(move || {
            let (user, digest) = key;
            let good = users.verify(&user, password.as_bytes());
            admitted.finish(!good);
            drop(permit);
            if good {
                users.remember(user, digest);
            }
            good
        });
        if checked.await.unwrap_or(false) { Verdict::Allowed } else { Verdict::Refused }
    }

    /// Whether `password` is `user`'s: one argon2 hash, also for users
    /// that do not exist. Blocking; the caller holds a permit.
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, exists) = match self.hashes.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        let mut memory = self.memories.lock().pop().unwrap_or_default();
        let matches = verify_in(hash, password, &mut memory);
        self.memories.lock().push(memory);
        matches && exists
    }

    /// Whom the requests of the user an `Authorization` header names act
    /// as (`None`: root, unchecked). Call once the header checked good.
    pub fn identity(&self, authorization: Option<&HeaderValue>) -> Option<Arc<crate::fs::Identity>> {
        let (user, _) = authorization.and_then(basic_credentials)?;
        self.identities.get(&user).cloned().unwrap_or_else(|| Some(Arc::new(crate::fs::Identity::nobody())))
    }

    fn remember(&self, user: String, digest: [u8; 32]) {
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert((user, digest));
    }
}

/// The argon2 instance (algorithm, version, parameters) `hash` was made
/// with.
fn hasher_of(hash: &PasswordHash<'_>) -> Result<Argon2<'static>, argon2::password_hash::Error> {
    let algorithm = argon2::Algorithm::try_from(hash.algorithm)?;
    let version = hash.version.map(argon2::Version::try_from).transpose()?.unwrap_or_default();
    Ok(Argon2::new(algorithm, version, argon2::Params::try_from(hash)?))
}

/// A hash of a random password nobody knows, made by `hasher`.
fn decoy_hash(hasher: &Argon2<'_>) -> Result<String, AuthError> {
    let mut password = [0u8; 32];
    OsRng.fill_bytes(&mut password);
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(&password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` hashes to the PHC string `phc`, computed in
/// `memory` (grown as the hash's parameters need, and kept).
fn verify_in(phc: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected), Ok(hasher)) = (hash.salt, hash.hash, hasher_of(&hash)) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let Ok(params) = argon2::Params::try_from(&hash) else { return false };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    if hasher.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..]).is_err() {
        return false;
    }
    // Output compares in constant time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// The identity of `user`, given `ids` (uid, gid) from the password file:
/// those, else the system account of that name, else `nobody`.
fn identity_of(user: &str, ids: Option<(u32, u32)>) -> Option<Arc<crate::fs::Identity>> {
    use crate::fs::Identity;
    let identity = match ids {
        Some((uid, gid)) => Identity { gid, ..Identity::of_user(uid) },
        None => match nix::unistd::User::from_name(user) {
            Ok(Some(account)) => Identity::of_user(account.uid.as_raw()),
            _ => {
                tracing::warn!(
                    "http: user {user} has no uid in the password file and no system account: it acts as nobody \
                     (give one with `tsmfs passwd FILE {user} --uid N --gid N`)"
                );
                Identity::nobody()
            }
        },
    };
    (identity.uid != 0).then(|| Arc::new(identity))
}

/// User and password of a `Basic` Authorization header.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// An argon2id hash of `password` with a fresh salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Add `user` to the password file at `path` (created, mode 0600), or
/// give them a new password.
pub fn set_password(
    path: &Path,
    user: &str,
    password: &str,
    ids: Option<(u32, u32)>,
) -> Result<(), AuthError> {
    use std::io::Write;
    let io = |source| AuthError::Io { path: path.to_owned(), source };
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(AuthError::Syntax {
            path: path.to_owned(),
            line: 0,
            reason: format!("invalid user name {user:?}"),
        });
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| line.trim().split_once(':').is_none_or(|(name, _)| name != user))
        .map(str::to_owned)
        .collect();
    let hash = hash_password(password)?;
    lines.push(match ids {
        Some((uid, gid)) => format!("{user}:{hash}:{uid}:{gid}"),
        None => format!("{user}:{hash}"),
    });
    // Written aside and renamed: a crash leaves the old file or the new.
    let (aside, mut file) = create_aside(path).map_err(io)?;
    let written = file
        .write_all((lines.join("\n") + "\n").as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&aside, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(io(e));
    }
    // The rename itself survives a crash once the directory is synced.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A new private file beside `path`, under a name nobody can have
/// guessed, for the new contents. The directory may be shared: another
/// user may have put anything (a link to a file of ours, a file of
/// theirs) under any name they could predict, so the file must be new
/// (`O_EXCL`), and a link in its place is never followed (`O_NOFOLLOW`).
fn create_aside(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut attempts = 0;
    loop {
        let suffix = OsRng.next_u64();
        let aside = path.with_file_name(format!(".{name}.{}.{suffix:016x}.tmp", std::process::id()));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&aside);
        match created {
            Ok(file) => {
                // 0600 whatever the umask took away.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                return Ok((aside, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap()
    }

    #[test]
    fn passwords_are_checked_against_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        set_password(&file, "ann", "correct horse", None).unwrap();
        set_password(&file, "bob", "first", None).unwrap();
        set_password(&file, "bob", "second", Some((1000, 100))).unwrap();
        let users = Arc::new(Users::load(&file).unwrap());
        let check = |header: Option<HeaderValue>| runtime().block_on(users.authorize(header.as_ref(), HERE));
        assert_eq!(check(Some(basic("ann", "correct horse"))), Verdict::Allowed);
        assert!(users.verified.lock().contains(&("ann".into(), *blake3::hash(b"correct horse").as_bytes())));
        assert_eq!(check(Some(basic("ann", "wrong"))), Verdict::Refused);
        assert_eq!(check(Some(basic("bob", "first"))), Verdict::Refused, "replaced");
        assert_eq!(check(Some(basic("bob", "second"))), Verdict::Allowed);
        let bob = users.identity(Some(&basic("bob", "second"))).expect("not root");
        assert_eq!((bob.uid, bob.gid), (1000, 100), "the ids the file gives");
        let ann = users.identity(Some(&basic("ann", "correct horse"))).expect("not root");
        assert_eq!(ann.uid, 65534, "no ids and no account named ann: nobody");
        assert_eq!(check(Some(basic("eve", "second"))), Verdict::Refused);
        assert_eq!(check(None), Verdict::Refused);
        assert_eq!(check(Some(HeaderValue::from_static("Bearer x"))), Verdict::Refused);
        assert!(!std::fs::read_to_string(&file).unwrap().contains("correct horse"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace(":1000:100", ":1000:x")).unwrap();
        assert!(Users::load(&file).unwrap_err().to_string().contains("uid:gid"));
        std::fs::write(&file, "# users\nann\n").unwrap();
        let err = Users::load(&file).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(set_password(&file, "a:b", "x", None).is_err());
    }

    /// The decoy for unknown users has the first user's parameters, so
    /// it costs what their check costs; and no password matches it.
    #[test]
    fn unknown_users_are_checked_against_a_decoy_of_the_same_cost() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        let params = argon2::Params::new(8 * 1024, 3, 1, None).unwrap();
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let ann = hasher.hash_password(b"pw", &salt).unwrap().to_string();
        std::fs::write(&file, format!("ann:{ann}\n")).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let users = Users::load(&file).unwrap();
        let decoy = PasswordHash::new(&users.decoy).unwrap();
        assert_eq!(decoy.params.to_string(), "m=8192,t=3,p=1");
        assert_eq!(decoy.algorithm.as_str(), "argon2id");
        assert!(users.verify("ann", b"pw"));
        assert!(!users.verify("ann", b"px"));
        assert!(!users.verify("nobody", b"pw"));
        assert_eq!(users.memories.lock()[0].len(), 8 * 1024, "the memory is kept for the next check");
    }
}

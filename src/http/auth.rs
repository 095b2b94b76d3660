//! HTTP Basic authentication against a file of argon2 password hashes.
//!
//! The file has one `user:hash` line per user (PHC strings, as
//! `tsmfs passwd` writes them), or `user:hash:uid:gid` to give the user
//! the identity its requests act as; without one, a user acts as the
//! system account of that name, or as `nobody`. `#` starts a comment. Clients send their
//! credentials with every request and argon2 is slow on purpose, so a
//! successful check is remembered (by user and the password's blake3,
//! never the password) for the life of the server.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use http::HeaderValue;
use parking_lot::Mutex;

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
#[derive(Debug)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// Whom each user's requests act as (`None`: root, unchecked).
    identities: HashMap<String, Option<std::sync::Arc<crate::fs::Identity>>>,
    verified: Mutex<HashSet<(String, [u8; 32])>>,
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
            PasswordHash::new(hash).map_err(|e| syntax(&format!("not a password hash ({e})")))?;
            hashes.insert(user.to_owned(), hash.to_owned());
            identities.insert(user.to_owned(), identity_of(user, ids));
        }
        if hashes.is_empty() {
            return Err(AuthError::Syntax { path: path.to_owned(), line: 0, reason: "no users".into() });
        }
        Ok(Users { hashes, identities, verified: Mutex::new(HashSet::new()) })
    }

    /// Whether an `Authorization` header names a user with the right
    /// password. Blocking (argon2): call off the async workers.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return false };
        let Some(hash) = self.hashes.get(&user) else { return false };
        let key = (user, *blake3::hash(password.as_bytes()).as_bytes());
        if self.verified.lock().contains(&key) {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        if argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_err() {
            return false;
        }
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(key);
        true
    }

    /// Whom the requests of the user an `Authorization` header names act
    /// as (`None`: root, unchecked). Call once the header checked good.
    pub fn identity(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Option<std::sync::Arc<crate::fs::Identity>> {
        let (user, _) = authorization.and_then(basic_credentials)?;
        self.identities
            .get(&user)
            .cloned()
            .unwrap_or_else(|| Some(std::sync::Arc::new(crate::fs::Identity::nobody())))
    }

    /// Whether this header was checked good before (no argon2 needed).
    pub fn known_good(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return false };
        self.verified.lock().contains(&(user, *blake3::hash(password.as_bytes()).as_bytes()))
    }
}

/// The identity of `user`, given `ids` (uid, gid) from the password file:
/// those, else the system account of that name, else `nobody`.
fn identity_of(user: &str, ids: Option<(u32, u32)>) -> Option<std::sync::Arc<crate::fs::Identity>> {
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
    (identity.uid != 0).then(|| std::sync::Arc::new(identity))
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
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
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
    use rand_core::RngCore;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut attempts = 0;
    loop {
        let suffix = rand_core::OsRng.next_u64();
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

    #[test]
    fn passwords_are_checked_against_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        set_password(&file, "ann", "correct horse", None).unwrap();
        set_password(&file, "bob", "first", None).unwrap();
        set_password(&file, "bob", "second", Some((1000, 100))).unwrap();
        let users = Users::load(&file).unwrap();
        assert!(users.check(Some(&basic("ann", "correct horse"))));
        assert!(users.known_good(Some(&basic("ann", "correct horse"))));
        assert!(!users.check(Some(&basic("ann", "wrong"))));
        assert!(!users.check(Some(&basic("bob", "first"))), "replaced");
        assert!(users.check(Some(&basic("bob", "second"))));
        let bob = users.identity(Some(&basic("bob", "second"))).expect("not root");
        assert_eq!((bob.uid, bob.gid), (1000, 100), "the ids the file gives");
        let ann = users.identity(Some(&basic("ann", "correct horse"))).expect("not root");
        assert_eq!(ann.uid, 65534, "no ids and no account named ann: nobody");
        assert!(!users.check(Some(&basic("eve", "second"))));
        assert!(!users.check(None));
        assert!(!users.check(Some(&HeaderValue::from_static("Bearer x"))));
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
}

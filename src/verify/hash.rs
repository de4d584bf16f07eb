//! Argon2id verifiers keyed with a pepper.
//!
//! A verifier is a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$tag`, 16-byte random salt,
//! 32-byte tag) computed with the pepper as Argon2's secret input, stored beside the id of the
//! pepper it was made with. The pepper lives in its own file outside the database: a copy of
//! the database alone does not allow guessing codes offline.
//!
//! Every check computes exactly one Argon2id hash, also when there is nothing to check against
//! (no code, an unknown contact, a pepper that is gone): then a dummy hash of the same cost.
//! [`Hasher::computations`] counts them so tests can prove the work is the same in every case
//! without timing anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, Version};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::codes::Code;
use crate::keyfile::KeyFileError;

/// Salt length of new verifiers.
pub const SALT_LEN: usize = 16;
/// Tag length of new verifiers.
pub const TAG_LEN: usize = 32;
/// Pepper length.
pub const PEPPER_LEN: usize = 32;
/// Stored parameters above these are refused (a tampered database must not make us allocate
/// without bound): 1 GiB, 64 passes, 64 lanes.
pub const MAX_COST: Cost = Cost {
    memory_kib: 1024 * 1024,
    iterations: 64,
    parallelism: 64,
};

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Cost {
    /// The floor (OWASP Password Storage Cheat Sheet minimum for Argon2id).
    pub const FLOOR: Cost = Cost {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };

    /// From the `[codes]` configuration.
    pub fn from_config(c: &crate::config::CodesConfig) -> Cost {
        Cost {
            memory_kib: c.argon2_memory_kib,
            iterations: c.argon2_iterations,
            parallelism: c.argon2_parallelism,
        }
    }

    fn params(&self) -> Result<Params, HashError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, Some(TAG_LEN)).map_err(|_| HashError::Params)
    }

    /// Weaker than `policy` in memory or passes: re-hash on the next success.
    pub fn below(&self, policy: &Cost) -> bool {
        self.memory_kib < policy.memory_kib || self.iterations < policy.iterations
    }

    fn within(&self, max: &Cost) -> bool {
        self.memory_kib <= max.memory_kib && self.iterations <= max.iterations && self.parallelism <= max.parallelism
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m={},t={},p={}", self.memory_kib, self.iterations, self.parallelism)
    }
}

/// Hashing failures. Never contain a code, a pepper or a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The parameters are not usable.
    #[error("Argon2id parameters are not usable")]
    Params,
    /// The operating system's random generator failed.
    #[error("no randomness from the operating system")]
    Random,
    /// Argon2 refused (input too long, out of memory).
    #[error("Argon2id computation failed")]
    Compute,
}

/// The pepper file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PepperError {
    /// Reading or creating failed.
    #[error("pepper file {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("pepper file {path} has permissions {mode:04o}: it must be readable by its owner only (chmod 600 or 400)")]
    Permissions {
        /// File.
        path: PathBuf,
        /// The mode bits found.
        mode: u32,
    },
    /// Not a regular file.
    #[error("pepper file {path} is not a regular file")]
    NotAFile {
        /// File.
        path: PathBuf,
    },
    /// Not 64 hex digits.
    #[error("pepper file {path} does not hold 64 hex digits (32 bytes)")]
    Format {
        /// File.
        path: PathBuf,
    },
}

/// A pepper: 32 secret bytes and their public id. No `Debug`, `Display` or `Clone`; zeroed
/// when dropped.
pub struct Pepper {
    id: String,
    key: Zeroizing<[u8; PEPPER_LEN]>,
}

impl Pepper {
    /// A pepper from its bytes. The id is derived (the first 8 bytes of a domain-separated
    /// SHA-256, hex), so a pepper file needs no metadata and the id tells nothing of the key.
    pub fn from_bytes(key: [u8; PEPPER_LEN]) -> Pepper {
        let key = Zeroizing::new(key);
        let mut h = Sha256::new();
        h.update(b"meldkamer pepper id v1\0");
        h.update(key.as_slice());
        let id = hex::encode(&h.finalize()[..8]);
        Pepper { id, key }
    }

    /// The id stored beside each verifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Read a pepper file; refuse one that group or others may access.
    pub fn load(path: &Path) -> Result<Pepper, PepperError> {
        Ok(Pepper::from_bytes(*crate::keyfile::read(WHAT, path)?))
    }

    /// Read the pepper file, creating it (owner-only, 32 random bytes) when it does not exist.
    /// Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Pepper, bool), PepperError> {
        let (key, created) = crate::keyfile::read_or_create(WHAT, path)?;
        Ok((Pepper::from_bytes(*key), created))
    }
}

/// How errors name the pepper file.
const WHAT: &str = "pepper file";

impl From<KeyFileError> for PepperError {
    fn from(e: KeyFileError) -> PepperError {
        match e {
            KeyFileError::Io { path, source, .. } => PepperError::Io { path, source },
            KeyFileError::Permissions { path, mode, .. } => PepperError::Permissions { path, mode },
            KeyFileError::NotAFile { path, .. } => PepperError::NotAFile { path },
            KeyFileError::Format { path, .. } => PepperError::Format { path },
        }
    }
}

/// The current pepper and the retired ones still accepted after a rotation.
pub struct PepperRing {
    current: Pepper,
    retired: Vec<Pepper>,
}

impl PepperRing {
    /// A ring with one pepper.
    pub fn new(current: Pepper) -> PepperRing {
        PepperRing {
            current,
            retired: Vec::new(),
        }
    }

    /// Add a retired pepper.
    pub fn with_retired(mut self, p: Pepper) -> PepperRing {
        if p.id != self.current.id && !self.retired.iter().any(|r| r.id == p.id) {
            self.retired.push(p);
        }
        self
    }

    /// The pepper new verifiers are made with.
    pub fn current(&self) -> &Pepper {
        &self.current
    }

    /// The pepper with this id.
    pub fn get(&self, id: &str) -> Option<&Pepper> {
        std::iter::once(&self.current)
            .chain(self.retired.iter())
            .find(|p| p.id == id)
    }
}

/// A new verifier, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVerifier {
    /// The PHC string.
    pub phc: String,
    /// The pepper it was made with.
    pub pepper_id: String,
}

/// A stored verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The PHC string.
    pub phc: String,
    /// The pepper it was made with.
    pub pepper_id: String,
}

/// The result of checking a candidate against one verifier slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It matches; re-hash it when its cost is below policy or its pepper is retired.
    Match {
        /// Re-hash with the current policy and pepper.
        rehash: bool,
    },
    /// It does not match.
    NoMatch,
    /// There was nothing to check against (a dummy hash was computed).
    Absent,
    /// The verifier cannot be used: its pepper is not loaded, or it is malformed (a dummy hash
    /// was computed).
    Unusable,
}

impl Check {
    /// A match.
    pub fn matched(&self) -> bool {
        matches!(self, Check::Match { .. })
    }
}

/// Computes and checks verifiers under one policy, counting every Argon2id computation.
pub struct Hasher {
    peppers: PepperRing,
    policy: Cost,
    computations: AtomicU64,
}

/// The cost of operators' password verifiers: the OWASP minimum for Argon2id (m=19456 KiB, t=2,
/// p=1), as before passwords were peppered.
pub const PASSWORD_COST: Cost = Cost {
    memory_kib: 19456,
    iterations: 2,
    parallelism: 1,
};

/// The fixed salt of dummy computations (their output is thrown away).
const DUMMY_SALT: &[u8; SALT_LEN] = b"meldkamer-dummy!";

impl Hasher {
    /// A hasher for new verifiers at `policy`.
    pub fn new(peppers: PepperRing, policy: Cost) -> Result<Hasher, HashError> {
        policy.params()?;
        if !policy.within(&MAX_COST) {
            return Err(HashError::Params);
        }
        Ok(Hasher {
            peppers,
            policy,
            computations: AtomicU64::new(0),
        })
    }

    /// Argon2id computations made so far by this hasher.
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }

    /// The cost of new verifiers.
    pub fn policy(&self) -> Cost {
        self.policy
    }

    /// The id of the current pepper.
    pub fn current_pepper_id(&self) -> &str {
        self.peppers.current().id()
    }

    fn argon2<'k>(pepper: &'k Pepper, cost: &Cost) -> Result<Argon2<'k>, HashError> {
        Argon2::new_with_secret(
            pepper.key.as_slice(),
            Algorithm::Argon2id,
            Version::V0x13,
            cost.params()?,
        )
        .map_err(|_| HashError::Params)
    }

    /// A new verifier for `code`: fresh random salt, the current pepper, the policy's cost.
    pub fn hash(&self, code: &Code) -> Result<NewVerifier, HashError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| HashError::Random)?;
        let pepper = self.peppers.current();
        let a = Self::argon2(pepper, &self.policy)?;
        self.computations.fetch_add(1, Ordering::Relaxed);
        let phc = a
            .hash_password_with_salt(code.expose().as_bytes(), &salt)
            .map_err(|_| HashError::Compute)?;
        Ok(NewVerifier {
            phc: phc.to_string(),
            pepper_id: pepper.id().to_string(),
        })
    }

    /// One Argon2id computation whose result is thrown away, at the policy's cost.
    fn dummy(&self, code: &Code) {
        let pepper = self.peppers.current();
        let mut out = Zeroizing::new([0u8; TAG_LEN]);
        if let Ok(a) = Self::argon2(pepper, &self.policy) {
            self.computations.fetch_add(1, Ordering::Relaxed);
            let _ = a.hash_password_into(code.expose().as_bytes(), DUMMY_SALT, out.as_mut_slice());
        }
    }

    /// Check `candidate` against a stored verifier (or against nothing). Always exactly one
    /// Argon2id computation; the tag is compared in constant time.
    pub fn check(&self, stored: Option<&Stored>, candidate: &Code) -> Check {
        let Some(stored) = stored else {
            self.dummy(candidate);
            return Check::Absent;
        };
        match self.check_stored(stored, candidate) {
            Some(c) => c,
            None => {
                self.dummy(candidate);
                Check::Unusable
            }
        }
    }

    /// None: unusable (nothing computed yet).
    fn check_stored(&self, stored: &Stored, candidate: &Code) -> Option<Check> {
        self.check_secret(stored, candidate.expose().as_bytes(), &self.policy)
    }

    /// An operator's password as a verifier: Argon2id at [`PASSWORD_COST`] (logins are rare; the
    /// daemon bounds how many run at once), keyed with the current pepper like the codes, so a
    /// copy of the database alone does not allow guessing passwords offline either.
    pub fn hash_password(&self, password: &str) -> Result<NewVerifier, HashError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| HashError::Random)?;
        let pepper = self.peppers.current();
        let a = Self::argon2(pepper, &PASSWORD_COST)?;
        self.computations.fetch_add(1, Ordering::Relaxed);
        let phc = a
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|_| HashError::Compute)?;
        Ok(NewVerifier {
            phc: phc.to_string(),
            pepper_id: pepper.id().to_string(),
        })
    }

    /// Check an operator's password: one Argon2id computation, whatever the outcome. A verifier
    /// without a pepper id was made before passwords were peppered: checked unkeyed, and a
    /// match asks for a re-hash (as does a retired pepper). One whose pepper is not loaded is
    /// [`Check::Unusable`] (a dummy computation keeps the time alike).
    pub fn check_password(&self, stored: &Stored, password: &str) -> Check {
        if stored.pepper_id.is_empty() {
            use argon2::password_hash::PasswordVerifier;
            self.computations.fetch_add(1, Ordering::Relaxed);
            return match PasswordHash::new(&stored.phc) {
                Ok(h) if Argon2::default().verify_password(password.as_bytes(), &h).is_ok() => {
                    Check::Match { rehash: true }
                }
                _ => Check::NoMatch,
            };
        }
        match self.check_secret(stored, password.as_bytes(), &PASSWORD_COST) {
            Some(c) => c,
            None => {
                let mut out = Zeroizing::new([0u8; TAG_LEN]);
                if let Ok(a) = Self::argon2(self.peppers.current(), &PASSWORD_COST) {
                    self.computations.fetch_add(1, Ordering::Relaxed);
                    let _ = a.hash_password_into(password.as_bytes(), DUMMY_SALT, out.as_mut_slice());
                }
                Check::Unusable
            }
        }
    }

    /// Whether a pepper id is loaded (current or retired).
    pub fn knows_pepper(&self, id: &str) -> bool {
        self.peppers.get(id).is_some()
    }

    /// None: unusable (nothing computed yet).
    fn check_secret(&self, stored: &Stored, secret: &[u8], policy: &Cost) -> Option<Check> {
        let pepper = self.peppers.get(&stored.pepper_id)?;
        let parsed = PasswordHash::new(&stored.phc).ok()?;
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(Version::V0x13.into()) {
            return None;
        }
        let params = Params::try_from(&parsed).ok()?;
        let cost = Cost {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        };
        if !cost.within(&MAX_COST) {
            return None;
        }
        let salt = parsed.salt?;
        let tag = parsed.hash?;
        let a = Argon2::new_with_secret(pepper.key.as_slice(), Algorithm::Argon2id, Version::V0x13, params).ok()?;
        let mut out = Zeroizing::new(vec![0u8; tag.len()]);
        self.computations.fetch_add(1, Ordering::Relaxed);
        if a.hash_password_into(secret, &salt, &mut out).is_err() {
            return Some(Check::NoMatch);
        }
        if bool::from(out.as_slice().ct_eq(tag.as_bytes())) {
            let rehash = cost.below(policy) || stored.pepper_id != self.current_pepper_id();
            Some(Check::Match { rehash })
        } else {
            Some(Check::NoMatch)
        }
    }

    /// The cost recorded in a stored verifier, if it parses.
    pub fn cost_of(phc: &str) -> Option<Cost> {
        let parsed = PasswordHash::new(phc).ok()?;
        let params = Params::try_from(&parsed).ok()?;
        Some(Cost {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap cost for unit tests (below the production floor on purpose).
    const TEST_COST: Cost = Cost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn hasher(cost: Cost) -> Hasher {
        Hasher::new(PepperRing::new(Pepper::from_bytes([7; 32])), cost).expect("hasher")
    }

    #[test]
    fn verifier_is_an_argon2id_phc_string_with_salt_and_tag() {
        let h = hasher(TEST_COST);
        let v = h.hash(&Code::new("583947")).expect("hash");
        assert!(v.phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{}", v.phc);
        let parsed = PasswordHash::new(&v.phc).expect("parses");
        assert_eq!(parsed.salt.expect("salt").len(), SALT_LEN);
        assert_eq!(parsed.hash.expect("tag").len(), TAG_LEN);
        assert!(!v.phc.contains("583947"));
        // A fresh salt every time.
        let w = h.hash(&Code::new("583947")).expect("hash");
        assert_ne!(v.phc, w.phc);
        assert_eq!(h.computations(), 2);
    }

    #[test]
    fn check_matches_only_the_right_code_and_always_computes_once() {
        let h = hasher(TEST_COST);
        let v = h.hash(&Code::new("583947")).expect("hash");
        let s = Stored {
            phc: v.phc,
            pepper_id: v.pepper_id,
        };
        let before = h.computations();
        assert_eq!(h.check(Some(&s), &Code::new("583947")), Check::Match { rehash: false });
        assert_eq!(h.check(Some(&s), &Code::new("583948")), Check::NoMatch);
        assert_eq!(h.check(None, &Code::new("583947")), Check::Absent);
        let unknown = Stored {
            pepper_id: "0000000000000000".into(),
            ..s.clone()
        };
        assert_eq!(h.check(Some(&unknown), &Code::new("583947")), Check::Unusable);
        let garbage = Stored {
            phc: "$argon2id$nonsense".into(),
            ..s.clone()
        };
        assert_eq!(h.check(Some(&garbage), &Code::new("583947")), Check::Unusable);
        assert_eq!(
            h.computations() - before,
            5,
            "one computation per check, whatever the case"
        );
    }

    #[test]
    fn a_different_pepper_does_not_verify() {
        let a = hasher(TEST_COST);
        let v = a.hash(&Code::new("583947")).expect("hash");
        // Same id claimed, other key: the tag does not match.
        let other = Hasher::new(
            PepperRing::new(Pepper::from_bytes([8; 32])).with_retired(Pepper::from_bytes([9; 32])),
            TEST_COST,
        )
        .expect("hasher");
        let forged = Stored {
            phc: v.phc,
            pepper_id: other.current_pepper_id().to_string(),
        };
        assert_eq!(other.check(Some(&forged), &Code::new("583947")), Check::NoMatch);
    }

    #[test]
    fn weaker_cost_or_retired_pepper_asks_for_a_rehash() {
        let old = hasher(TEST_COST);
        let v = old.hash(&Code::new("583947")).expect("hash");
        let s = Stored {
            phc: v.phc.clone(),
            pepper_id: v.pepper_id.clone(),
        };
        let raised = hasher(Cost {
            memory_kib: 128,
            ..TEST_COST
        });
        assert_eq!(
            raised.check(Some(&s), &Code::new("583947")),
            Check::Match { rehash: true }
        );
        let rotated = Hasher::new(
            PepperRing::new(Pepper::from_bytes([1; 32])).with_retired(Pepper::from_bytes([7; 32])),
            TEST_COST,
        )
        .expect("hasher");
        assert_eq!(
            rotated.check(Some(&s), &Code::new("583947")),
            Check::Match { rehash: true }
        );
        assert_eq!(Hasher::cost_of(&v.phc), Some(TEST_COST));
    }

    #[test]
    fn absurd_stored_cost_is_refused_without_allocating() {
        let h = hasher(TEST_COST);
        let s = Stored {
            phc:
                "$argon2id$v=19$m=4294967295,t=1,p=1$bWVsZGthbWVyLWR1bW15IQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                    .into(),
            pepper_id: h.current_pepper_id().to_string(),
        };
        assert_eq!(h.check(Some(&s), &Code::new("583947")), Check::Unusable);
    }

    #[test]
    fn pepper_file_is_created_owner_only_and_loaded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pepper");
        let (p, created) = Pepper::load_or_create(&path).expect("create");
        assert!(created);
        let (q, created) = Pepper::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(p.id(), q.id());
        assert_eq!(p.id().len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
            let e = Pepper::load(&path).err().expect("refused");
            assert!(matches!(e, PepperError::Permissions { mode: 0o640, .. }), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
            Pepper::load(&path).expect("0400 is fine");
        }
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not hex").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let e = Pepper::load(&bad).err().expect("refused");
        assert!(matches!(e, PepperError::Format { .. }));
        assert!(!e.to_string().contains("not hex"));
    }
}

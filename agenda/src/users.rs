//! Accounts and sessions (the users shard): register, log in, log out, profiles.
//!
//! A password is stored only as its Argon2id hash (a PHC string carrying its own parameters, so
//! that stronger settings apply to new hashes while old ones still verify). A session token is
//! `<user>.<64 hex digits>`: 256 random bits after the user's name, which says where the session
//! record lives; only the token's SHA-256 is stored, so a copy of the store lets nobody log in.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::AgendaError;
use crate::keys;
use crate::store::{ATTEMPTS_MAX, Env, Store, Tx, hex};
use crate::{Agenda, schedule};

/// The shortest password accepted.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// The longest password accepted (hashing cost is linear in it only at the first block, but a
/// bound keeps requests small).
pub const PASSWORD_BYTES_MAX: usize = 256;
/// The most open sessions of one user: a new login beyond it closes the oldest.
pub const SESSIONS_MAX: usize = 100;
/// The most expired sessions one login removes.
const SESSIONS_REMOVED_PER_LOGIN_MAX: usize = 100;
/// The longest display name.
pub const DISPLAY_NAME_CHARS_MAX: usize = 100;

/// An account as stored at `us/<user>/account`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// The user name (the key's, repeated so that a record read alone says whose it is).
    pub name: String,
    /// The name people see.
    pub display_name: String,
    /// The user's IANA time zone: the agenda is shown in it.
    #[serde(rename = "time_zone", alias = "zone")]
    pub zone: String,
    /// When the user works, in their zone (for "find a time").
    pub working_hours: schedule::WorkingHours,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// When the account was made (ms since the epoch).
    pub created_ms: i64,
}

/// What anyone logged in may see of a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Profile {
    /// The user name.
    pub name: String,
    /// The name people see.
    pub display_name: String,
    /// The user's IANA time zone.
    #[serde(rename = "time_zone", alias = "zone")]
    pub zone: String,
    /// When the user works, in their zone.
    pub working_hours: schedule::WorkingHours,
}

impl From<&Account> for Profile {
    fn from(account: &Account) -> Profile {
        Profile {
            name: account.name.clone(),
            display_name: account.display_name.clone(),
            zone: account.zone.clone(),
            working_hours: account.working_hours.clone(),
        }
    }
}

/// A session as stored at `us/<user>/session/<sha-256 of the token>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    /// When it was opened.
    pub created_ms: i64,
    /// When it stops being valid.
    pub expires_ms: i64,
}

/// A new session: the token to present, once (it is not stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The bearer token.
    pub token: String,
    /// Whose session it is.
    pub user: String,
    /// When it stops being valid (ms since the epoch).
    pub expires_ms: i64,
}

/// What registration asks for. An unknown field is refused (a misspelt `time_zone` must not
/// register the user in UTC silently).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The user name: 3–32 of `a`–`z`, `0`–`9`, `-`.
    pub name: String,
    /// At least [`PASSWORD_CHARS_MIN`] characters.
    pub password: String,
    /// Defaults to the name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// An IANA zone; defaults to `UTC`.
    #[serde(default, rename = "time_zone", alias = "zone")]
    pub zone: Option<String>,
    /// Defaults to Monday–Friday, 09:00–17:00.
    #[serde(default)]
    pub working_hours: Option<schedule::WorkingHours>,
}

/// A change of profile: the fields given are replaced; an unknown field is refused (a
/// misspelt one must not answer 200 having changed nothing).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    /// A new display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A new zone.
    #[serde(default, rename = "time_zone", alias = "zone")]
    pub zone: Option<String>,
    /// New working hours.
    #[serde(default)]
    pub working_hours: Option<schedule::WorkingHours>,
    /// A new password; needs `current_password`. Every session of the user is closed (log in
    /// again with the new one).
    #[serde(default)]
    pub password: Option<String>,
    /// The current password, required to set a new one (a stolen session alone cannot).
    #[serde(default)]
    pub current_password: Option<String>,
}

fn check_password(password: &str) -> Result<(), AgendaError> {
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(AgendaError::invalid(
            "password",
            format!("at least {PASSWORD_CHARS_MIN} characters"),
        ));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AgendaError::invalid(
            "password",
            format!("at most {PASSWORD_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

fn check_display_name(display_name: &str) -> Result<(), AgendaError> {
    if display_name.trim().is_empty() || display_name.chars().count() > DISPLAY_NAME_CHARS_MAX {
        return Err(AgendaError::invalid(
            "display name",
            format!("1 to {DISPLAY_NAME_CHARS_MAX} characters, not blank"),
        ));
    }
    if display_name.chars().any(char::is_control) {
        return Err(AgendaError::invalid(
            "display name",
            "no control characters",
        ));
    }
    Ok(())
}

fn check_zone(zone: &str) -> Result<(), AgendaError> {
    schedule::parse_zone(zone)
        .map(|_| ())
        .map_err(|error| AgendaError::invalid("zone", error.to_string()))
}

/// The SHA-256 of a token, hex: the key of its session record.
fn token_hash(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// The user a token names, if it has a token's shape.
fn token_user(token: &str) -> Option<&str> {
    let (user, secret) = token.split_once('.')?;
    let well_formed = keys::check_name("user", user).is_ok()
        && secret.len() == 64
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(user)
}

impl<S: Store, E: Env> Agenda<S, E> {
    fn hasher(&self) -> argon2::Argon2<'static> {
        let params = argon2::Params::new(
            self.config.password_memory_kib,
            self.config.password_iterations,
            1,
            None,
        )
        .expect("Config::validate checked the hashing parameters");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    }

    /// The PHC string of `password` with a fresh salt (run by [`Env::password_work`]).
    async fn hash_password(&self, password: &str) -> Result<String, AgendaError> {
        let salt_bytes = self.env.random();
        let hasher = self.hasher();
        let password = password.to_owned();
        self.env
            .password_work(move || {
                let salt =
                    SaltString::encode_b64(&salt_bytes[..16]).expect("16 bytes make a valid salt");
                hasher
                    .hash_password(password.as_bytes(), &salt)
                    .expect("checked parameters and a valid salt always hash")
                    .to_string()
            })
            .await
    }

    /// Creates an account. The name must be free.
    pub async fn register(&self, registration: Registration) -> Result<Profile, AgendaError> {
        keys::check_name("user", &registration.name)?;
        check_password(&registration.password)?;
        let display_name = registration
            .display_name
            .unwrap_or_else(|| registration.name.clone());
        check_display_name(&display_name)?;
        let zone = registration.zone.unwrap_or_else(|| "UTC".to_owned());
        check_zone(&zone)?;
        let working_hours = registration.working_hours.unwrap_or_default();
        working_hours
            .validate()
            .map_err(|error| AgendaError::invalid("working hours", error.to_string()))?;
        let account = Account {
            password_hash: self.hash_password(&registration.password).await?,
            name: registration.name,
            display_name,
            zone,
            working_hours,
            created_ms: self.env.now_ms(),
        };
        let key = keys::account(&account.name);
        let mut tx = Tx::new(&self.store);
        if tx.get(key.clone()).await?.is_some() {
            return Err(AgendaError::AlreadyExists(format!("user {}", account.name)));
        }
        tx.put_record(key, &account);
        match tx.commit().await? {
            Some(_) => Ok(Profile::from(&account)),
            // Someone registered the name between the read and the commit.
            None => Err(AgendaError::AlreadyExists(format!("user {}", account.name))),
        }
    }

    /// Checks a password and opens a session. Expired sessions of the user are removed in the
    /// same transaction, so they do not pile up.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session, AgendaError> {
        const WRONG: &str = "unknown user or wrong password";
        if keys::check_name("user", user).is_err() || password.len() > PASSWORD_BYTES_MAX {
            return Err(AgendaError::Unauthenticated(WRONG));
        }
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let Some(account) = tx.get_record::<Account>(keys::account(user)).await? else {
                // Hash anyway, so that the answer's timing does not tell which names exist.
                let _ = self.hash_password(password).await;
                return Err(AgendaError::Unauthenticated(WRONG));
            };
            if !self.password_matches(&account, password).await? {
                return Err(AgendaError::Unauthenticated(WRONG));
            }
            let now_ms = self.env.now_ms();
            // Expired sessions go (a bounded number per login, so the transaction stays
            // small), and beyond SESSIONS_MAX open ones the oldest are closed: a script that
            // logs in on every call cannot grow a user's records without bound.
            let mut open = Vec::new();
            let mut removed = 0;
            for (key, versioned) in tx.scan_prefix(&keys::sessions(user)).await? {
                let session = crate::store::decode::<SessionRecord>(&key, &versioned.value);
                match session {
                    Ok(session) if session.expires_ms > now_ms => {
                        open.push((session.created_ms, key))
                    }
                    _ if removed < SESSIONS_REMOVED_PER_LOGIN_MAX => {
                        tx.delete(key);
                        removed += 1;
                    }
                    _ => {}
                }
            }
            open.sort();
            let excess = (open.len() + 1).saturating_sub(SESSIONS_MAX);
            for (_, key) in open.into_iter().take(excess) {
                tx.delete(key);
            }
            let token = format!("{user}.{}", hex(&self.env.random()));
            let record = SessionRecord {
                created_ms: now_ms,
                expires_ms: now_ms + self.config.session_ttl_ms,
            };
            tx.put_record(keys::session(user, &token_hash(&token)), &record);
            if tx.commit().await?.is_some() {
                return Ok(Session {
                    token,
                    user: user.to_owned(),
                    expires_ms: record.expires_ms,
                });
            }
        }
        Err(AgendaError::Contended(format!("user {user}")))
    }

    /// Whether `password` is the account's (checked by [`Env::password_work`]).
    async fn password_matches(
        &self,
        account: &Account,
        password: &str,
    ) -> Result<bool, AgendaError> {
        let stored = account.password_hash.clone();
        let key = format!("us/{}/account", account.name);
        let hasher = self.hasher();
        let password = password.to_owned();
        self.env
            .password_work(move || {
                let parsed = PasswordHash::new(&stored).map_err(|error| AgendaError::Corrupt {
                    key,
                    reason: error.to_string(),
                })?;
                Ok(hasher.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?
    }

    /// The user a session token belongs to, if the session is open and unexpired.
    pub async fn authenticate(&self, token: &str) -> Result<String, AgendaError> {
        const INVALID: &str = "invalid or expired session";
        let user = token_user(token).ok_or(AgendaError::Unauthenticated(INVALID))?;
        let key = keys::session(user, &token_hash(token));
        let Some(found) = self.store.get(key.clone()).await? else {
            return Err(AgendaError::Unauthenticated(INVALID));
        };
        let session: SessionRecord = crate::store::decode(&key, &found.value)?;
        if session.expires_ms <= self.env.now_ms() {
            return Err(AgendaError::Unauthenticated(INVALID));
        }
        Ok(user.to_owned())
    }

    /// Ends a session (its token stops working at once, on every server).
    pub async fn logout(&self, token: &str) -> Result<(), AgendaError> {
        let user = self.authenticate(token).await?;
        let mut tx = Tx::new(&self.store);
        tx.delete(keys::session(&user, &token_hash(token)));
        tx.commit().await?;
        Ok(())
    }

    /// A user's profile.
    pub async fn profile(&self, user: &str) -> Result<Profile, AgendaError> {
        Ok(Profile::from(&self.account(user).await?))
    }

    pub(crate) async fn account(&self, user: &str) -> Result<Account, AgendaError> {
        keys::check_name("user", user)?;
        let key = keys::account(user);
        match self.store.get(key.clone()).await? {
            Some(found) => crate::store::decode(&key, &found.value),
            None => Err(AgendaError::NotFound(format!("user {user}"))),
        }
    }

    /// Changes the caller's own profile.
    pub async fn update_profile(
        &self,
        user: &str,
        change: ProfileChange,
    ) -> Result<Profile, AgendaError> {
        if let Some(display_name) = &change.display_name {
            check_display_name(display_name)?;
        }
        if let Some(zone) = &change.zone {
            check_zone(zone)?;
        }
        if let Some(hours) = &change.working_hours {
            hours
                .validate()
                .map_err(|error| AgendaError::invalid("working hours", error.to_string()))?;
        }
        if let Some(password) = &change.password {
            check_password(password)?;
        }
        let password_hash = match change.password.as_deref() {
            Some(password) => Some(self.hash_password(password).await?),
            None => None,
        };
        for _ in 0..ATTEMPTS_MAX {
            let mut tx = Tx::new(&self.store);
            let key = keys::account(user);
            let Some(mut account) = tx.get_record::<Account>(key.clone()).await? else {
                return Err(AgendaError::NotFound(format!("user {user}")));
            };
            if let Some(display_name) = &change.display_name {
                account.display_name = display_name.clone();
            }
            if let Some(zone) = &change.zone {
                account.zone = zone.clone();
            }
            if let Some(hours) = &change.working_hours {
                account.working_hours = hours.clone();
            }
            if let Some(hash) = &password_hash {
                let current = change.current_password.as_deref().unwrap_or_default();
                if current.len() > PASSWORD_BYTES_MAX
                    || !self.password_matches(&account, current).await?
                {
                    return Err(AgendaError::Unauthenticated(
                        "the current password is wrong",
                    ));
                }
                account.password_hash = hash.clone();
                for (session, _) in tx.scan_prefix(&keys::sessions(user)).await? {
                    tx.delete(session);
                }
                // The feed's secret URL too: whoever had a session may have made one.
                tx.delete(keys::feed(user));
            }
            tx.put_record(key, &account);
            if tx.commit().await?.is_some() {
                return Ok(Profile::from(&account));
            }
        }
        Err(AgendaError::Contended(format!("user {user}")))
    }
}

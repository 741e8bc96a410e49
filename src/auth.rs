//! Access control: `[auth]` users, each a viewer or an admin, with argon2 password hashes.
//!
//! Browsers log in once at `/login` and get a session cookie (HttpOnly, SameSite=Strict),
//! which also rides on the WebSocket upgrade. Tools (Home Assistant, VLC, Prometheus, curl)
//! send HTTP Basic credentials instead; a verified header is remembered for a few minutes
//! so a snapshot poller does not cost an argon2 hash per request. Sessions live in memory:
//! a restart asks browsers to log in again, and nothing secret is ever written to disk.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, password_hash::phc::PasswordHash};
use serde::{Deserialize, Deserializer, Serialize};

/// The session cookie's name.
pub const COOKIE: &str = "croissant_session";
/// Sessions kept at most; the oldest goes first beyond this, so logins cannot grow memory.
const MAX_SESSIONS: usize = 1024;
/// Remembered Basic credentials at most, and for how long.
const MAX_BASIC: usize = 64;
const BASIC_TTL: Duration = Duration::from_secs(300);
/// How long a failed login takes at least: slows guessing without locking anyone out.
const FAILURE_DELAY: Duration = Duration::from_millis(700);

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Pages, live video, recordings, snapshots, metrics.
    Viewer,
    /// Everything a viewer may do, and switching the mode.
    Admin,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[auth.users.<name>]`
    #[serde(deserialize_with = "some_users")]
    pub users: BTreeMap<String, UserConfig>,
    /// How long a browser stays logged in.
    #[serde(
        default = "default_session_hours",
        deserialize_with = "crate::config::count::<_, 1, 8760>"
    )]
    pub session_hours: usize,
}

fn default_session_hours() -> usize {
    24 * 30
}

/// `[auth.users.<name>]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// `viewer` or `admin`.
    pub role: Role,
    /// An argon2 PHC string, as `croissant hash-password` prints it.
    #[serde(deserialize_with = "argon2_hash")]
    pub password_hash: String,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn some_users<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, UserConfig>, D::Error> {
    let users = BTreeMap::<String, UserConfig>::deserialize(d)?;
    if users.is_empty() {
        return Err(serde::de::Error::custom(
            "no users: add one as [auth.users.<name>] with `role` and `password_hash`",
        ));
    }
    if let Some(bad) = users.keys().find(|name| name.is_empty() || name.contains(':')) {
        return Err(serde::de::Error::custom(format!(
            "user name `{bad}` must be non-empty and contain no `:`"
        )));
    }
    Ok(users)
}

fn argon2_hash<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    match PasswordHash::new(&text) {
        Ok(hash) if hash.algorithm.as_str().starts_with("argon2") => Ok(text),
        _ => Err(serde::de::Error::custom(
            "not an argon2 hash; make one with `croissant hash-password` (never put the password itself here)",
        )),
    }
}

/// Hashes a password for the config file.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The user's name.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

struct Session {
    identity: Identity,
    expires: Instant,
}

/// The users, their sessions, and the verified Basic credentials.
pub struct Auth {
    config: AuthConfig,
    sessions: Mutex<HashMap<String, Session>>,
    basic: Mutex<HashMap<String, (Identity, Instant)>>,
    /// Argon2 needs ~19 MB and tens of milliseconds per check: two at a time at most.
    hashing: smol::lock::Semaphore,
    /// Compared against for unknown users, so their failures take as long as wrong passwords.
    decoy: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.config.users.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Ready to check requests against `config`.
    pub fn new(config: AuthConfig) -> Auth {
        let decoy = hash_password("decoy").unwrap_or_default();
        Auth {
            config,
            sessions: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashMap::new()),
            hashing: smol::lock::Semaphore::new(2),
            decoy,
        }
    }

    /// How long a new session lasts.
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.session_hours as u64 * 3600)
    }

    /// Checks a name and password; on success, a new session token for the cookie.
    pub async fn login(&self, name: &str, password: &str) -> Option<(String, Identity)> {
        let identity = self.verify(name, password).await?;
        let token = new_token()?;
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token.clone(),
            Session {
                identity: identity.clone(),
                expires: now + self.session_lifetime(),
            },
        );
        Some((token, identity))
    }

    /// Ends the session in `cookie_header`, if any.
    pub fn logout(&self, cookie_header: Option<&str>) {
        if let Some(token) = cookie_header.and_then(session_token) {
            lock(&self.sessions).remove(token);
        }
    }

    /// Who sent a request with these `Cookie` and `Authorization` headers, if anyone valid.
    pub async fn identify(&self, cookie: Option<&str>, authorization: Option<&str>) -> Option<Identity> {
        if let Some(token) = cookie.and_then(session_token) {
            let sessions = lock(&self.sessions);
            if let Some(session) = sessions.get(token).filter(|s| s.expires > Instant::now()) {
                return Some(session.identity.clone());
            }
        }
        let header = authorization?.trim();
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))?;
        if let Some((identity, at)) = lock(&self.basic).get(header)
            && at.elapsed() < BASIC_TTL
        {
            return Some(identity.clone());
        }
        let decoded = decode_base64(encoded.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let identity = self.verify(name, password).await?;
        let mut basic = lock(&self.basic);
        basic.retain(|_, (_, at)| at.elapsed() < BASIC_TTL);
        if basic.len() < MAX_BASIC {
            basic.insert(header.to_owned(), (identity.clone(), Instant::now()));
        }
        Some(identity)
    }

    async fn verify(&self, name: &str, password: &str) -> Option<Identity> {
        let started = Instant::now();
        let user = self.config.users.get(name);
        let hash = user.map_or_else(|| self.decoy.clone(), |u| u.password_hash.clone());
        let password = password.to_owned();
        let matches = {
            let _permit = self.hashing.acquire().await;
            smol::unblock(move || {
                Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await
        };
        match user {
            Some(user) if matches => Some(Identity {
                name: name.to_owned(),
                role: user.role,
            }),
            _ => {
                if let Some(rest) = FAILURE_DELAY.checked_sub(started.elapsed()) {
                    smol::Timer::after(rest).await;
                }
                tracing::warn!(user = %name.chars().take(64).collect::<String>(), "failed login");
                None
            }
        }
    }
}

/// The session token in a `Cookie` header.
fn session_token(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// 32 random bytes, hex-encoded.
fn new_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Standard base64 with padding, as in `Authorization: Basic`.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64ct::{Base64, Encoding};
    if text.len() > 1024 {
        return None;
    }
    Base64::decode_vec(text).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let hash = hash_password("s3cret").expect("hash");
        let config: AuthConfig = toml::from_str(&format!(
            "[users.ada]\nrole = \"admin\"\npassword_hash = \"{hash}\"\n[users.vic]\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n"
        ))
        .expect("config");
        Auth::new(config)
    }

    #[test]
    fn sessions_and_basic_identify_users_and_nothing_else_does() {
        let auth = auth();
        smol::block_on(async {
            let (token, who) = auth.login("ada", "s3cret").await.expect("login");
            assert_eq!(who.role, Role::Admin);
            let cookie = format!("other=1; {COOKIE}={token}");
            assert_eq!(auth.identify(Some(&cookie), None).await, Some(who));
            assert!(auth.login("ada", "wrong").await.is_none());
            assert!(auth.login("nobody", "s3cret").await.is_none());
            assert!(
                auth.identify(Some(&format!("{COOKIE}=forged")), None)
                    .await
                    .is_none()
            );
            // "vic:s3cret", "vic:nope", and garbage.
            let vic = auth
                .identify(None, Some("Basic dmljOnMzY3JldA=="))
                .await
                .expect("basic");
            assert_eq!(vic.role, Role::Viewer);
            assert!(auth.identify(None, Some("Basic dmljOm5vcGU=")).await.is_none());
            assert!(auth.identify(None, Some("Basic %%%")).await.is_none());
            auth.logout(Some(&cookie));
            assert!(auth.identify(Some(&cookie), None).await.is_none());
        });
    }

    #[test]
    fn plain_passwords_and_empty_user_lists_are_refused() {
        for bad in [
            "[users.a]\nrole = \"admin\"\npassword_hash = \"hunter2\"",
            "[users.a]\nrole = \"root\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"",
            "users = {}",
        ] {
            assert!(toml::from_str::<AuthConfig>(bad).is_err(), "{bad}");
        }
    }
}

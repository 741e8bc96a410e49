//! Access control: `[auth]` users, each a viewer or an admin, with argon2 password hashes.
//!
//! Browsers log in once at `/login` and get a session cookie (HttpOnly, SameSite=Strict),
//! which also rides on the WebSocket upgrade. Tools (Home Assistant, VLC, Prometheus, curl)
//! send HTTP Basic credentials instead; verified credentials are remembered for a few minutes
//! so a snapshot poller does not cost an argon2 hash per request. Sessions live in memory:
//! a restart asks browsers to log in again, and nothing secret is ever written to disk.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::net::IpAddr;

use argon2::password_hash::PasswordHasher;
use argon2::{Argon2, password_hash::phc::PasswordHash};
use serde::{Deserialize, Deserializer, Serialize};

use crate::passwords::{Checker, Lane};
use crate::shutdown::{Ending, Signal, Trigger};
use crate::sync::lock;
use crate::throttle::{Failures, Throttle};

/// The session cookie's name.
pub const COOKIE: &str = "croissant_session";
/// Sessions kept at most; the oldest goes first beyond this, so logins cannot grow memory.
const MAX_SESSIONS: usize = 1024;
/// Sessions one user may hold; beyond it their own oldest goes.
const MAX_SESSIONS_PER_USER: usize = 32;
/// Password checks one client address may have at once before it is held to one a second.
const CLIENT_BURST: u32 = 5;
/// Failed checks for one user (from anywhere) before addresses that failed lately are held
/// to one a second for that user.
const USER_BURST: u32 = 10;
/// How long an address's failed logins are remembered (after its last one).
const SUSPECT_FOR: Duration = Duration::from_secs(600);
/// Failed logins an address may have lately and still not count as a guesser: the owner's
/// typo or two. So each address gets this many wrong checks, and one more, past the per-user
/// limit (per [`SUSPECT_FOR`]); a guesser with many addresses gains that, and no more.
const FORGIVEN_FAILURES: u32 = 2;
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[auth.users.<name>]`
    #[serde(default, deserialize_with = "user_names")]
    pub users: BTreeMap<String, UserConfig>,
    /// More users, as `[users.<name>]` tables, in a file of their own: the package makes
    /// one with a generated admin password, so the config file itself holds no secret
    /// and stays the owner's to edit.
    #[serde(default)]
    pub users_file: Option<toml::Spanned<std::path::PathBuf>>,
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
#[derive(Clone, PartialEq, Deserialize)]
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

/// What `[auth] users_file` holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// `[users.<name>]`
    #[serde(default, deserialize_with = "user_names")]
    pub users: BTreeMap<String, UserConfig>,
}

/// Said when `[auth]` ends up with nobody in it.
pub const NO_USERS: &str =
    "[auth] has no users: add one as [auth.users.<name>] with `role` and `password_hash`, or a users_file";

fn user_names<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, UserConfig>, D::Error> {
    let users = BTreeMap::<String, UserConfig>::deserialize(d)?;
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
    /// Fired at logout (or when the session is pushed out), ending its streams.
    end: Trigger,
    ended: Signal,
}

/// Why a login or a credential was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Wrong name or password.
    Wrong,
    /// Too many checks from this address or for this user; try again after this long.
    Throttled(Duration),
}

/// Who sent a request, and, for a login session, when what it opened must stop.
pub type Verified = (Identity, Option<Ending>);

/// The users, their sessions, and the verified Basic credentials.
pub struct Auth {
    config: AuthConfig,
    sessions: Mutex<HashMap<String, Session>>,
    basic: Mutex<HashMap<String, (Identity, Instant)>>,
    /// Basic credentials being checked right now, and the event that says one check ended.
    checking: Mutex<std::collections::HashSet<String>>,
    checked: event_listener::Event,
    /// Password checks: one at a time, in one reusable block of memory.
    checker: Checker,
    /// Checks per client address: a few at once, then one a second.
    clients: Throttle<IpAddr>,
    /// Failed checks per user name, however many addresses they come from.
    users: Throttle<String>,
    /// Failed logins per address (checks under way count until they succeed).
    failed: Failures<IpAddr>,
    /// The same, per address and user name: what a right password forgives.
    failed_as: Failures<(IpAddr, String)>,
}

/// Checked against for unknown users, so their failures take as long as wrong passwords.
/// (The hash of a random password nobody knows, with `hash-password`'s parameters.)
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$8gSDovlim0H5pHibZ3j6YQ$T6UQQ7cPily9PGA10Irr2WKYe+1Hlz5ydWZptm3hEHM";

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.config.users.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Ready to check requests against `config`; starts the password-checking thread.
    pub fn new(config: AuthConfig) -> Result<Auth, String> {
        let max_m_cost = config
            .users
            .values()
            .filter_map(|user| crate::passwords::memory_cost(&user.password_hash))
            .chain(crate::passwords::memory_cost(DECOY))
            .max()
            .unwrap_or(0);
        let checker = Checker::start(max_m_cost)
            .map_err(|e| format!("cannot start the password-checking thread: {e}"))?;
        Ok(Auth {
            config,
            sessions: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashMap::new()),
            checking: Mutex::new(std::collections::HashSet::new()),
            checked: event_listener::Event::new(),
            checker,
            clients: Throttle::new(CLIENT_BURST, 1.0),
            users: Throttle::new(USER_BURST, 1.0),
            failed: Failures::new(SUSPECT_FOR),
            failed_as: Failures::new(SUSPECT_FOR),
        })
    }

    /// How long a new session lasts.
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.config.session_hours as u64 * 3600)
    }

    /// Checks a name and password from `client`; on success, a new session token for the
    /// cookie.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<(String, Identity), Denied> {
        let identity = self.verify(name, password, client).await?;
        let token = new_token().ok_or(Denied::Wrong)?;
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        // A user's own oldest session makes room first, so no one (a viewer logging in over
        // and over) can push everyone else out.
        let theirs = sessions
            .values()
            .filter(|s| s.identity.name == identity.name)
            .count();
        let full = sessions.len() >= MAX_SESSIONS || theirs >= MAX_SESSIONS_PER_USER;
        if full
            && let Some(oldest) = sessions
                .iter()
                .filter(|(_, s)| theirs < MAX_SESSIONS_PER_USER || s.identity.name == identity.name)
                .min_by_key(|(_, s)| s.expires)
                .map(|(t, _)| t.clone())
            && let Some(pushed_out) = sessions.remove(&oldest)
        {
            pushed_out.end.fire();
        }
        let (end, ended) = crate::shutdown::signal();
        sessions.insert(
            token.clone(),
            Session {
                identity: identity.clone(),
                expires: now + self.session_lifetime(),
                end,
                ended,
            },
        );
        Ok((token, identity))
    }

    /// Ends the session in `cookie_header`, if any, and every stream opened with it.
    pub fn logout(&self, cookie_header: Option<&str>) {
        if let Some(token) = cookie_header.and_then(session_token)
            && let Some(session) = lock(&self.sessions).remove(token)
        {
            session.end.fire();
        }
    }

    /// Who sent a request from `client` with these `Cookie` and `Authorization` headers:
    /// `Ok(None)` when nobody valid, `Err` when the client must wait before its
    /// credentials are checked again.
    pub async fn identify(
        &self,
        cookie: Option<&str>,
        authorization: Option<&str>,
        client: IpAddr,
    ) -> Result<Option<Verified>, Duration> {
        if let Some(token) = cookie.and_then(session_token) {
            let sessions = lock(&self.sessions);
            if let Some(session) = sessions.get(token).filter(|s| s.expires > Instant::now()) {
                let ending = Ending::new(session.ended.clone(), session.expires);
                return Ok(Some((session.identity.clone(), Some(ending))));
            }
        }
        let Some(header) = authorization.map(str::trim) else {
            return Ok(None);
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some(encoded) = header
            .get(..6)
            .filter(|scheme| scheme.eq_ignore_ascii_case("basic "))
            .and_then(|_| header.get(6..))
        else {
            return Ok(None);
        };
        // Remembered by what they say, not how they are spelled (blanks, the scheme's
        // case), so one password cannot fill the table with spellings of itself.
        let Some(credentials) =
            decode_base64(encoded.trim()).and_then(|decoded| String::from_utf8(decoded).ok())
        else {
            return Ok(None);
        };
        let Some((name, password)) = credentials.split_once(':') else {
            return Ok(None);
        };
        // Requests that bring the same new credentials at once (a browser's parallel
        // requests right after its password prompt) wait for one check of them, rather
        // than each take a check from the address's limit.
        let _checking = loop {
            if let Some((identity, at)) = lock(&self.basic).get(&credentials)
                && at.elapsed() < BASIC_TTL
            {
                return Ok(Some((identity.clone(), None)));
            }
            let waiting = {
                let mut checking = lock(&self.checking);
                if checking.contains(&credentials) {
                    Some(self.checked.listen())
                } else {
                    checking.insert(credentials.clone());
                    None
                }
            };
            match waiting {
                Some(checked) => checked.await,
                None => {
                    break Checking {
                        auth: self,
                        credentials: &credentials,
                    };
                }
            }
        };
        let identity = match self.verify(name, password, client).await {
            Ok(identity) => identity,
            Err(Denied::Wrong) => return Ok(None),
            Err(Denied::Throttled(wait)) => return Err(wait),
        };
        let mut basic = lock(&self.basic);
        basic.retain(|_, (_, at)| at.elapsed() < BASIC_TTL);
        // The oldest makes room: now that right passwords are throttled too, a full table
        // must not leave a tool's every request to the checker.
        if basic.len() >= MAX_BASIC
            && let Some(oldest) = basic
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(h, _)| h.clone())
        {
            basic.remove(&oldest);
        }
        basic.insert(credentials.clone(), (identity.clone(), Instant::now()));
        Ok(Some((identity, None)))
    }

    async fn verify(&self, name: &str, password: &str, client: IpAddr) -> Result<Identity, Denied> {
        let shown_name: String = name.chars().take(64).collect();
        // The log names the client; the limits count its address's network (see
        // `address_key`).
        let client = client.to_canonical();
        let key = address_key(client);
        let user = self.config.users.get(name);
        // Every check takes from the address's bucket, right or wrong: a right password
        // costs the checker as much as a wrong one, and someone who knows one account's
        // password must not keep it busy for the others.
        self.clients
            .take(&key)
            .map_err(|wait| self.throttled(client, &shown_name, wait))?;
        // An address that has (almost) not failed lately is never held back by what others
        // try: the per-user limit does not apply to it and its check goes ahead of theirs.
        // A check counts as a failure from the moment it starts until it succeeds, so a
        // burst from one new address gets no more such checks than a typing owner.
        let suspect = self.failed.add(&key) > FORGIVEN_FAILURES;
        let as_user = (key, shown_name.clone());
        self.failed_as.add(&as_user);
        // Names nobody has are limited like real ones, so the answers do not tell which
        // accounts exist.
        let took_user = match self.users.take(&shown_name) {
            Ok(()) => true,
            Err(wait) if suspect => {
                self.failed_as.take_back(&as_user, 1);
                return Err(self.throttled(client, &shown_name, wait));
            }
            Err(_) => false,
        };
        let lane = if suspect { Lane::Rest } else { Lane::First };
        let started = Instant::now();
        let hash = user.map_or(DECOY, |u| u.password_hash.as_str());
        let matches = match self.checker.check(password, hash, lane).await {
            Ok(matches) => matches,
            Err(crate::passwords::Busy::Queue) => {
                // Nothing was checked: nothing counts, and the address is what it was.
                self.clients.give_back(&key);
                if took_user {
                    self.users.give_back(&shown_name);
                }
                self.failed.take_back(&key, 1);
                self.failed_as.take_back(&as_user, 1);
                return Err(self.throttled(client, &shown_name, Duration::from_secs(1)));
            }
        };
        match user {
            Some(user) if matches => {
                // Only failures count against the user's limit, and the right password
                // forgives this address its typos for this user, and only those: a right
                // password for one account does not wash out guesses at another.
                if took_user {
                    self.users.give_back(&shown_name);
                }
                let typos = self.failed_as.forget(&as_user);
                self.failed.take_back(&key, typos);
                Ok(Identity {
                    name: name.to_owned(),
                    role: user.role,
                })
            }
            _ => {
                // One line per failed check, in a shape fail2ban matches (see
                // packaging/fail2ban/); written before the wait, so a guesser who hangs up
                // rather than wait for the answer is logged all the same.
                tracing::warn!(client = %client, user = ?shown_name, "login failed");
                if let Some(rest) = FAILURE_DELAY.checked_sub(started.elapsed()) {
                    smol::Timer::after(rest).await;
                }
                Err(Denied::Wrong)
            }
        }
    }

    fn throttled(&self, client: IpAddr, user: &str, wait: Duration) -> Denied {
        tracing::debug!(client = %client, user = ?user, retry_in_ms = wait.as_millis() as u64, "login throttled");
        Denied::Throttled(wait)
    }
}

/// Basic credentials under check; when it ends (or is given up), requests waiting with the
/// same credentials look again.
struct Checking<'a> {
    auth: &'a Auth,
    credentials: &'a str,
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        lock(&self.auth.checking).remove(self.credentials);
        self.auth.checked.notify(usize::MAX);
    }
}

/// The address logins are counted by: an IPv6 client's /64 (one host or LAN gets a whole
/// /64 and can pick any address in it), an IPv4 one's own address.
fn address_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let hash = hash_password("s3cret").expect("hash");
        let config: AuthConfig = toml::from_str(&format!(
            "[users.ada]\nrole = \"admin\"\npassword_hash = \"{hash}\"\n[users.vic]\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n"
        ))
        .expect("config");
        Auth::new(config).expect("auth")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn sessions_and_basic_identify_users_and_nothing_else_does() {
        let auth = auth();
        smol::block_on(async {
            let (token, who) = auth.login("ada", "s3cret", ip(1)).await.expect("login");
            assert_eq!(who.role, Role::Admin);
            let cookie = format!("other=1; {COOKIE}={token}");
            let (found, ending) = auth
                .identify(Some(&cookie), None, ip(1))
                .await
                .expect("not throttled")
                .expect("a session");
            assert_eq!(found, who);
            let ending = ending.expect("a session ends");
            assert_eq!(auth.login("ada", "wrong", ip(1)).await.err(), Some(Denied::Wrong));
            assert_eq!(
                auth.login("nobody", "s3cret", ip(1)).await.err(),
                Some(Denied::Wrong)
            );
            let forged = auth
                .identify(Some(&format!("{COOKIE}=forged")), None, ip(1))
                .await;
            assert!(matches!(forged, Ok(None)));
            // "vic:s3cret", "vic:nope", and garbage.
            let (vic, _) = auth
                .identify(None, Some("Basic dmljOnMzY3JldA=="), ip(2))
                .await
                .expect("not throttled")
                .expect("basic");
            assert_eq!(vic.role, Role::Viewer);
            assert!(matches!(
                auth.identify(None, Some("Basic dmljOm5vcGU="), ip(2)).await,
                Ok(None)
            ));
            assert!(matches!(
                auth.identify(None, Some("Basic %%%"), ip(2)).await,
                Ok(None)
            ));
            assert!(!ending.ended());
            auth.logout(Some(&cookie));
            assert!(ending.ended(), "logging out ends what the session opened");
            assert!(matches!(
                auth.identify(Some(&cookie), None, ip(1)).await,
                Ok(None)
            ));
        });
    }

    #[test]
    fn guessing_is_throttled_per_address_and_the_right_password_still_works() {
        let auth = std::sync::Arc::new(auth());
        smol::block_on(async {
            let guesses: Vec<_> = (0..(CLIENT_BURST + 3))
                .map(|_| {
                    let auth = auth.clone();
                    smol::spawn(async move { auth.login("ada", "guess", ip(9)).await })
                })
                .collect();
            let mut throttled = 0;
            for guess in guesses {
                if let Err(Denied::Throttled(_)) = guess.await {
                    throttled += 1;
                }
            }
            assert_eq!(throttled, 3, "a burst, then refused");
            assert!(
                auth.login("ada", "s3cret", ip(10)).await.is_ok(),
                "from elsewhere"
            );
        });
    }

    #[test]
    fn right_passwords_are_throttled_per_address_too() {
        let auth = auth();
        smol::block_on(async {
            for _ in 0..CLIENT_BURST {
                assert!(auth.login("vic", "s3cret", ip(30)).await.is_ok());
            }
            assert!(
                matches!(
                    auth.login("vic", "s3cret", ip(30)).await,
                    Err(Denied::Throttled(_))
                ),
                "a right password costs the checker as much as a wrong one"
            );
            assert!(
                auth.login("ada", "s3cret", ip(31)).await.is_ok(),
                "from elsewhere"
            );
        });
    }

    #[test]
    fn parallel_requests_with_the_same_new_credentials_share_one_check() {
        let auth = std::sync::Arc::new(auth());
        smol::block_on(async {
            // "vic:s3cret", 8 at once from one address (more than its 5 checks at once).
            let requests: Vec<_> = (0..8)
                .map(|_| {
                    let auth = auth.clone();
                    smol::spawn(
                        async move { auth.identify(None, Some("Basic dmljOnMzY3JldA=="), ip(60)).await },
                    )
                })
                .collect();
            for request in requests {
                let (who, _) = request.await.expect("not throttled").expect("vic");
                assert_eq!(who.name, "vic");
            }
            // Spelled otherwise, the same credentials are the remembered ones: no check.
            for spelling in [
                "BASIC dmljOnMzY3JldA==",
                "basic   dmljOnMzY3JldA== ",
                "Basic dmljOnMzY3JldA==",
            ]
            .iter()
            .cycle()
            .take(12)
            {
                let found = auth.identify(None, Some(spelling), ip(60)).await;
                assert!(matches!(found, Ok(Some(_))), "{spelling}: {found:?}");
            }
        });
    }

    #[test]
    fn a_right_password_forgives_typos_for_its_own_account_only() {
        let auth = auth();
        smol::block_on(async {
            let owner = ip(40);
            for _ in 0..2 {
                assert_eq!(auth.login("ada", "typo", owner).await.err(), Some(Denied::Wrong));
            }
            assert!(auth.login("ada", "s3cret", owner).await.is_ok());
            assert_eq!(auth.failed.forget(&owner), 0, "the owner's typos are forgiven");
            // Two guesses at ada, then vic's right password, twice over: the guesses stay.
            let guesser = ip(41);
            for round in 0..2 {
                for _ in 0..2 {
                    assert_eq!(
                        auth.login("ada", "guess", guesser).await.err(),
                        Some(Denied::Wrong)
                    );
                }
                if round == 0 {
                    assert!(auth.login("vic", "s3cret", guesser).await.is_ok());
                }
            }
            assert_eq!(auth.failed.forget(&guesser), 4, "a guesser stays one");
        });
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("mapped");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key(mapped), ip(1));
        assert_eq!(address_key(ip(1)), ip(1));
    }

    #[test]
    fn guessers_from_many_addresses_never_hold_back_an_address_that_has_not_failed() {
        guessers_are_held_to_the_user_limit("ada");
    }

    #[test]
    fn names_nobody_has_are_limited_as_real_ones_are() {
        // Otherwise the limit would tell a guesser which accounts exist.
        guessers_are_held_to_the_user_limit("nobody");
    }

    fn guessers_are_held_to_the_user_limit(name: &'static str) {
        let auth = std::sync::Arc::new(auth());
        smol::block_on(async {
            // Enough failures for the name, from several addresses, to spend its limit.
            let mut held = 0;
            for _ in 0..5 {
                let guesses: Vec<_> = (0..6u8)
                    .map(|n| {
                        let auth = auth.clone();
                        smol::spawn(async move { auth.login(name, "guess", ip(20 + n)).await })
                    })
                    .collect();
                for guess in guesses {
                    held += usize::from(matches!(guess.await, Err(Denied::Throttled(_))));
                }
            }
            // 30 guesses against a limit of 10 (refilling at one a second): once they have
            // failed three times, the guessers' addresses are held to it.
            assert!(held >= 4, "{held} guesses held back");
            // A burst from a new address gets three checks past the limit (as many as an
            // owner with two typos), not five.
            let burst: Vec<_> = (0..5)
                .map(|_| {
                    let auth = auth.clone();
                    smol::spawn(async move { auth.login(name, "guess", ip(50)).await })
                })
                .collect();
            let mut checked = 0;
            for guess in burst {
                checked += usize::from(guess.await == Err(Denied::Wrong));
            }
            assert!(checked <= 3, "{checked} of a new address's burst checked");
            assert!(
                auth.login("ada", "s3cret", ip(1)).await.is_ok(),
                "the owner, from an address that has not failed, gets in"
            );
        });
    }

    #[test]
    fn a_user_pushes_out_only_their_own_oldest_session() {
        let auth = auth();
        smol::block_on(async {
            let (admin, _) = auth.login("ada", "s3cret", ip(1)).await.expect("admin");
            let admin_cookie = format!("{COOKIE}={admin}");
            let mut first = None;
            for n in 0..=MAX_SESSIONS_PER_USER {
                // From many addresses, as a patient attacker with a viewer's password would.
                let (token, _) = auth
                    .login("vic", "s3cret", ip(10 + n as u8))
                    .await
                    .expect("viewer");
                if n == 0 {
                    let cookie = format!("{COOKIE}={token}");
                    let (_, ending) = auth
                        .identify(Some(&cookie), None, ip(1))
                        .await
                        .expect("not throttled")
                        .expect("a session");
                    first = ending;
                }
            }
            assert!(
                first.expect("an ending").ended(),
                "the viewer's oldest session went"
            );
            assert!(
                matches!(auth.identify(Some(&admin_cookie), None, ip(1)).await, Ok(Some(_))),
                "the admin's session stays"
            );
        });
    }

    #[test]
    fn plain_passwords_and_empty_user_lists_are_refused() {
        for bad in [
            "[users.a]\nrole = \"admin\"\npassword_hash = \"hunter2\"",
            "[users.a]\nrole = \"root\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"",
        ] {
            assert!(toml::from_str::<AuthConfig>(bad).is_err(), "{bad}");
        }
        // An empty list is refused once the users file is read (see config's tests).
        assert!(
            toml::from_str::<AuthConfig>("users = {}")
                .expect("parses")
                .users
                .is_empty()
        );
    }
}

//! Access to the dashboard and the read API: users from the collector's config (argon2
//! password hashes), server-side sessions in an HttpOnly, SameSite=Strict cookie, a read-only
//! `viewer` role, and bearer read tokens for scripts. Ingest tokens are not handled here.
//!
//! Sessions live in PostgreSQL when the dashboard is served by the collector (shared by every
//! collector on the database, kept across restarts), and in memory for the stand-alone
//! dashboard, which only reads its database. Either way a session names only its user: the
//! role comes from the configured users at every request, and a removed user is signed out.
//!
//! With no users configured the dashboard is open; the collector only allows that on a
//! loopback address (or with `--insecure-no-auth`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stormwatch_store::{Store, StoreError};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::login_limit::LoginLimiter;

/// Name of the session cookie.
pub const COOKIE: &str = "sw_session";
/// A session ends this long after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3_600);
/// Most sessions kept in memory at once; beyond it the oldest are dropped (bounds memory).
pub const MAX_SESSIONS: usize = 10_000;

/// What a signed-in user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including future write actions (acknowledging alerts...).
    Admin,
    /// Read-only: every page, no state-changing request.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// One configured user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// PHC string, `$argon2id$v=19$...`, as printed by `stormwatch-collector --hash-password`.
    pub password_hash: String,
    pub role: Role,
}

/// Access settings, built by the collector from its config.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    pub users: Vec<User>,
    /// Bearer tokens accepted by the read API (`/api/v1/*` except ingest).
    pub read_tokens: Vec<String>,
    /// Mark the cookie `Secure` (set when served behind TLS). Also set per request when a
    /// proxy says `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
}

/// Who is looking at a page; every dashboard request carries one (an extension).
#[derive(Debug, Clone)]
pub struct Viewer {
    /// `None` when the dashboard is open (no users configured).
    pub user: Option<String>,
    pub role: Role,
}

struct Session {
    user: String,
    expires: Instant,
}

/// Where sessions are kept.
enum Sessions {
    /// This process only: the stand-alone dashboard, and tests.
    Memory(Mutex<HashMap<String, Session>>),
    /// `sw_sessions`, shared by every collector on the database.
    Database(Arc<Store>),
}

/// Password verifications running at once in the whole process; sign-ins beyond wait for
/// none and are answered 429. An argon2id verification (default parameters) holds 19 MiB
/// for its duration: 150 concurrent sign-ins from 30 addresses (each within its rate limit)
/// took a collector from 1 GB to 3.9 GB, and the allocator kept it. Two keep that near 40 MB
/// (four measured +79 MB); argon2 is CPU-bound, so more than the cores would not sign anyone
/// in sooner.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// Users, tokens and live sessions.
pub struct Auth {
    /// Replaced whole by [`Auth::set_options`] (the collector's config reload).
    opts: std::sync::RwLock<Arc<AuthOptions>>,
    /// Permits for [`MAX_CONCURRENT_VERIFICATIONS`].
    verifying: Arc<tokio::sync::Semaphore>,
    /// Verified when the user is unknown, so that timing does not reveal user names; made
    /// once there are users.
    dummy_hash: std::sync::OnceLock<String>,
    sessions: Sessions,
    /// Failed sign-ins per client address and user (see [`crate::login_limit`]).
    limiter: LoginLimiter,
}

/// Hashes a password with argon2id and a random salt: the PHC string to put in the config.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that a configured hash is a PHC string argon2 can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash).map(|_| ()).map_err(|e| {
        format!(
            "not an argon2 PHC string ({e}); make one with `stormwatch-collector --hash-password`"
        )
    })
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Sessions kept in this process's memory: a restart signs everyone out.
    pub fn new(opts: AuthOptions) -> Auth {
        Auth::with_sessions(opts, Sessions::Memory(Mutex::new(HashMap::new())))
    }

    /// Sessions kept in the database, shared by every process on it.
    pub fn shared(opts: AuthOptions, store: Arc<Store>) -> Auth {
        Auth::with_sessions(opts, Sessions::Database(store))
    }

    fn with_sessions(opts: AuthOptions, sessions: Sessions) -> Auth {
        let auth = Auth {
            opts: std::sync::RwLock::new(Arc::new(AuthOptions::default())),
            verifying: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            dummy_hash: std::sync::OnceLock::new(),
            sessions,
            limiter: LoginLimiter::default(),
        };
        auth.set_options(opts);
        auth
    }

    /// Replaces users, read tokens and the cookie setting (a config reload). Sessions stay:
    /// a session of a removed user stops working, a changed role applies at once.
    pub fn set_options(&self, opts: AuthOptions) {
        if !opts.users.is_empty() {
            self.dummy_hash
                .get_or_init(|| hash_password("no such user").unwrap_or_default());
        }
        *self.opts.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(opts);
    }

    /// The access settings in force.
    fn opts(&self) -> Arc<AuthOptions> {
        self.opts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Is `name` a configured user?
    pub fn is_user(&self, name: &str) -> bool {
        self.opts().users.iter().any(|u| u.name == name)
    }

    /// A permit to verify a password now, if fewer than [`MAX_CONCURRENT_VERIFICATIONS`] are
    /// running; held until the verification ends.
    pub fn verification_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.verifying.clone().try_acquire_owned().ok()
    }

    /// The sign-in rate limit.
    pub fn limiter(&self) -> &LoginLimiter {
        &self.limiter
    }

    /// True when no users are configured: the dashboard needs no login.
    pub fn is_open(&self) -> bool {
        self.opts().users.is_empty()
    }

    /// Verifies a user's password (argon2: tens of milliseconds of CPU, so call it off the
    /// async workers); the user's role when it is right.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let opts = self.opts();
        let user = opts.users.iter().find(|u| u.name == name);
        let hash = user
            .map(|u| u.password_hash.as_str())
            .or(self.dummy_hash.get().map(String::as_str))
            .unwrap_or_default();
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        user.filter(|_| ok).map(|u| u.role)
    }

    /// Starts a session for a verified user; its token, for the cookie.
    pub async fn start_session(&self, user: &str) -> Result<String, StoreError> {
        let token = random_token();
        match &self.sessions {
            Sessions::Database(store) => store.session_create(&token, user, SESSION_TTL).await?,
            Sessions::Memory(map) => {
                let mut sessions = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                sessions.retain(|_, s| s.expires > now);
                if sessions.len() >= MAX_SESSIONS {
                    if let Some(oldest) = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.expires)
                        .map(|(k, _)| k.clone())
                    {
                        sessions.remove(&oldest);
                    }
                }
                sessions.insert(
                    token.clone(),
                    Session {
                        user: user.to_owned(),
                        expires: now + SESSION_TTL,
                    },
                );
            }
        }
        Ok(token)
    }

    /// The signed-in viewer of a session token: `None` when the session is unknown, expired,
    /// or its user is no longer configured. The role is the user's role in the config now.
    pub async fn session(&self, token: &str) -> Result<Option<Viewer>, StoreError> {
        let user = match &self.sessions {
            Sessions::Database(store) => store.session_user(token).await?,
            Sessions::Memory(map) => map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
                .filter(|s| s.expires > Instant::now())
                .map(|s| s.user.clone()),
        };
        let opts = self.opts();
        Ok(user.and_then(|name| {
            let user = opts.users.iter().find(|u| u.name == name)?;
            Some(Viewer {
                user: Some(name),
                role: user.role,
            })
        }))
    }

    /// Ends a session.
    pub async fn logout(&self, token: &str) -> Result<(), StoreError> {
        match &self.sessions {
            Sessions::Database(store) => store.session_delete(token).await,
            Sessions::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
                Ok(())
            }
        }
    }

    /// Is this a configured read token?
    pub fn read_token_ok(&self, token: &str) -> bool {
        self.opts()
            .read_tokens
            .iter()
            .any(|t| same(t.as_bytes(), token.as_bytes()))
    }

    /// Whether the request reached us over HTTPS: `secure_cookies` says the dashboard is only
    /// served so, or a reverse proxy sent `X-Forwarded-Proto: https`.
    fn is_https(&self, headers: &HeaderMap) -> bool {
        self.opts().secure_cookies
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }

    /// Whether a state-changing request comes from the dashboard's own pages: its `Origin`
    /// (or, without one, its `Referer`) must be this very origin, scheme included, so neither
    /// another site nor a plain-HTTP page on the same host can post to an HTTPS dashboard.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(host) = header("host").filter(|h| !h.is_empty()) else {
            return false;
        };
        let scheme = if self.is_https(headers) {
            "https"
        } else {
            "http"
        };
        let expected = format!("{scheme}://{host}");
        match (header("origin"), header("referer")) {
            (Some(origin), _) => origin.eq_ignore_ascii_case(&expected),
            (None, Some(referer)) => {
                referer
                    .get(..expected.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(&expected))
                    && matches!(referer.as_bytes().get(expected.len()), None | Some(b'/'))
            }
            (None, None) => false,
        }
    }

    /// The `Set-Cookie` value for a session (`None`: clear it).
    pub fn cookie(&self, token: Option<&str>, headers: &HeaderMap) -> String {
        let secure = if self.is_https(headers) {
            "; Secure"
        } else {
            ""
        };
        match token {
            Some(t) => format!(
                "{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_TTL.as_secs()
            ),
            None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        }
    }

    async fn viewer_of(&self, headers: &HeaderMap) -> Result<Option<Viewer>, StoreError> {
        match session_cookie(headers) {
            Some(t) => self.session(t).await,
            None => Ok(None),
        }
    }
}

/// The session token in a request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Paths anyone may load: the login form and the static assets it needs.
fn public(path: &str) -> bool {
    path == "/login" || path == "/favicon.ico" || path.starts_with("/static/")
}

/// Dashboard middleware: attaches the [`Viewer`]; without a session, pages redirect to the
/// login form and other requests get 401; a viewer may not send state-changing requests.
pub async fn require_login(
    State(auth): State<Arc<Auth>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let viewer = if auth.is_open() {
        Some(Viewer {
            user: None,
            role: Role::Admin,
        })
    } else {
        match auth.viewer_of(req.headers()).await {
            Ok(v) => v,
            Err(e) => return session_store_down(e),
        }
    };
    match viewer {
        Some(v) => {
            let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
            if writes && v.role == Role::Viewer && path != "/logout" && path != "/login" {
                return (StatusCode::FORBIDDEN, "the viewer role is read-only").into_response();
            }
            req.extensions_mut().insert(v);
            next.run(req).await
        }
        None if public(&path) => {
            req.extensions_mut().insert(Viewer {
                user: None,
                role: Role::Viewer,
            });
            next.run(req).await
        }
        None if req.method() == Method::GET => {
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Redirect::to(&format!("/login?next={}", crate::input::urlencode(target)))
                .into_response()
        }
        None => (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
    }
}

/// The answer when sessions cannot be checked: the database is down, so is every page.
fn session_store_down(error: StoreError) -> Response {
    tracing::warn!(%error, "cannot check the session");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "the session store (PostgreSQL) is unavailable; retry in a few seconds",
    )
        .into_response()
}

/// Read-API middleware (for the collector's `/api/v1/*` read routes): a read token
/// (`Authorization: Bearer`) or a dashboard session. Open when neither users nor read tokens
/// are configured.
pub async fn require_read_access(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    if auth.is_open() && auth.opts().read_tokens.is_empty() {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match bearer {
        Some(t) => auth.read_token_ok(t.trim()),
        None => match auth.viewer_of(req.headers()).await {
            Ok(v) => v.is_some(),
            Err(e) => return session_store_down(e),
        },
    };
    if ok {
        return next.run(req).await;
    }
    let (status, reason) = if bearer.is_some() {
        (StatusCode::FORBIDDEN, "unknown read token")
    } else {
        (
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <read token>",
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"error\":\"unauthorized\",\"reason\":\"{reason}\"}}"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_sessions() {
        let hash = hash_password("correct horse").unwrap();
        check_hash(&hash).unwrap();
        assert!(check_hash("plain").is_err());
        let auth = Auth::new(AuthOptions {
            users: vec![User {
                name: "ana".into(),
                password_hash: hash,
                role: Role::Viewer,
            }],
            read_tokens: vec!["read-token-0123456789".into()],
            secure_cookies: false,
        });
        assert!(auth.verify("ana", "wrong").is_none());
        assert!(auth.verify("bob", "correct horse").is_none());
        assert_eq!(auth.verify("ana", "correct horse"), Some(Role::Viewer));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let token = rt.block_on(auth.start_session("ana")).unwrap();
        let viewer = rt.block_on(auth.session(&token)).unwrap().unwrap();
        assert_eq!(viewer.user.as_deref(), Some("ana"));
        assert_eq!(viewer.role, Role::Viewer);
        rt.block_on(auth.logout(&token)).unwrap();
        assert!(rt.block_on(auth.session(&token)).unwrap().is_none());
        // A session of a user who is no longer configured is not honoured.
        let token = rt.block_on(auth.start_session("bob")).unwrap();
        assert!(rt.block_on(auth.session(&token)).unwrap().is_none());
        assert!(auth.read_token_ok("read-token-0123456789"));
        assert!(!auth.read_token_ok("read-token-012345678"));
        let c = auth.cookie(Some("abc"), &HeaderMap::new());
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(auth.cookie(Some("abc"), &h).ends_with("; Secure"));
    }

    #[test]
    fn new_options_apply_to_existing_sessions() {
        let hash = hash_password("pw").unwrap();
        let user = |role| User {
            name: "ana".into(),
            password_hash: hash.clone(),
            role,
        };
        let auth = Auth::new(AuthOptions::default());
        assert!(auth.is_open());
        assert!(auth.verify("ana", "pw").is_none());
        auth.set_options(AuthOptions {
            users: vec![user(Role::Viewer)],
            read_tokens: vec!["read-token-0123456789".into()],
            secure_cookies: true,
        });
        assert!(!auth.is_open());
        assert_eq!(auth.verify("ana", "pw"), Some(Role::Viewer));
        assert!(auth.verify("bob", "pw").is_none());
        assert!(auth.read_token_ok("read-token-0123456789"));
        assert!(auth
            .cookie(Some("abc"), &HeaderMap::new())
            .ends_with("; Secure"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let token = rt.block_on(auth.start_session("ana")).unwrap();
        auth.set_options(AuthOptions {
            users: vec![user(Role::Admin)],
            ..Default::default()
        });
        let viewer = rt.block_on(auth.session(&token)).unwrap().unwrap();
        assert_eq!(viewer.role, Role::Admin, "a changed role applies at once");
        assert!(!auth.read_token_ok("read-token-0123456789"));
        auth.set_options(AuthOptions::default());
        assert!(rt.block_on(auth.session(&token)).unwrap().is_none());
    }
}

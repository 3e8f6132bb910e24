//! Sign-in and sign-out. Sessions live in memory ([`crate::auth::Auth`]); the cookie carries
//! only a random token. Failed sign-ins are rate-limited per client address and user
//! ([`crate::login_limit`]): past the limit, 429 with `Retry-After`.

use std::net::SocketAddr;
use std::time::Instant;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use crate::auth::session_cookie;
use crate::login_limit::Client;
use crate::WebState;

#[derive(Template, WebTemplate)]
#[template(path = "login/login.html")]
pub struct LoginPage {
    pub error: Option<String>,
    pub next: String,
    pub open: bool,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

/// Only same-site paths: `/scatter?...`, never `//evil.example` or `https://...`. Control
/// characters are refused too: browsers drop tabs and newlines from a `Location`, so
/// `/\t/evil.example/` would become `//evil.example/`, and a newline cannot be sent in a header.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub async fn form(State(app): State<WebState>, Query(q): Query<NextQuery>) -> LoginPage {
    LoginPage {
        error: None,
        next: safe_next(q.next.as_deref()),
        open: app.auth.is_open(),
    }
}

pub async fn login(
    State(app): State<WebState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    // Before the rate limit: a sign-in turned away for lack of a slot is not a failure.
    let Some(slot) = app.auth.verification_slot() else {
        tracing::warn!(user = %f.user, "sign-in refused: too many password checks at once");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            LoginPage {
                error: Some("Too many sign-ins at this moment. Try again in a second.".into()),
                next,
                open: app.auth.is_open(),
            },
        )
            .into_response();
    };
    let client = Client::of(peer.map(|Extension(ConnectInfo(a))| a.ip()));
    let known = app.auth.is_user(&f.user).then_some(f.user.as_str());
    let attempt = match app.auth.limiter().attempt(client, known, Instant::now()) {
        Ok(a) => a,
        Err(wait) => {
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            tracing::warn!(user = %f.user, ?client, retry_after_s = secs, "sign-in rate-limited");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                LoginPage {
                    error: Some(format!("Too many failed sign-ins. Try again in {secs} s.")),
                    next,
                    open: app.auth.is_open(),
                },
            )
                .into_response();
        }
    };
    let auth = app.auth.clone();
    let (user, password) = (f.user.clone(), f.password);
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let verified = tokio::task::spawn_blocking(move || {
        let verified = auth.verify(&user, &password);
        drop(slot);
        verified
    })
    .await
    .ok()
    .flatten();
    let result = match verified {
        Some(_) => match app.auth.start_session(&f.user).await {
            Ok(token) => Some(token),
            Err(error) => {
                tracing::error!(user = %f.user, %error, "cannot record the session");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "5")],
                    LoginPage {
                        error: Some(
                            "Signed in, but the session could not be recorded: the database is unavailable. Try again in a few seconds."
                                .into(),
                        ),
                        next,
                        open: app.auth.is_open(),
                    },
                )
                    .into_response();
            }
        },
        None => None,
    };
    match result {
        Some(token) => {
            app.auth.limiter().succeeded(attempt);
            tracing::info!(user = %f.user, "signed in");
            (
                [(header::SET_COOKIE, app.auth.cookie(Some(&token), &headers))],
                Redirect::to(&next),
            )
                .into_response()
        }
        None => {
            tracing::info!(user = %f.user, "sign-in refused");
            (
                StatusCode::UNAUTHORIZED,
                LoginPage {
                    error: Some("Unknown user or wrong password.".into()),
                    next,
                    open: app.auth.is_open(),
                },
            )
                .into_response()
        }
    }
}

pub async fn logout(State(app): State<WebState>, headers: HeaderMap) -> Response {
    // Another site must not sign users out (a nuisance, and a step of session fixation).
    if !app.auth.same_origin(&headers) {
        return crate::error::WebError::forbidden("cross-site request refused").into_response();
    }
    if let Some(t) = session_cookie(&headers) {
        if let Err(error) = app.auth.logout(t).await {
            // The cookie is cleared below anyway; the session row expires with its TTL.
            tracing::warn!(%error, "cannot end the session in the database");
        }
    }
    (
        [(header::SET_COOKIE, app.auth.cookie(None, &headers))],
        Redirect::to("/login"),
    )
        .into_response()
}

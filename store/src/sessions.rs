//! Dashboard sign-in sessions (`sw_sessions`), shared by every collector on the database.
//! Tokens are looked up and kept by their SHA-256, computed here: neither the table nor a
//! query parameter (which tokio-postgres writes to its debug log) ever holds a token that
//! would sign anyone in.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// What `sw_sessions.token_sha256` holds for `token`.
fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

use crate::{Store, StoreError};

impl Store {
    /// Records a new session of `user` for `ttl`, and forgets sessions that have expired.
    pub async fn session_create(
        &self,
        token: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM sw_sessions WHERE expires_at < now()", &[])
            .await?;
        client
            .execute(
                "INSERT INTO sw_sessions (token_sha256, user_name, expires_at)
                 VALUES ($1, $2,
                         now() + make_interval(secs => $3::float8))",
                &[&digest(token), &user, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// The user of a live session, `None` for an unknown or expired token.
    pub async fn session_user(&self, token: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT user_name FROM sw_sessions
                  WHERE token_sha256 = $1 AND expires_at > now()",
                &[&digest(token)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Ends a session (signing out); unknown tokens are ignored.
    pub async fn session_delete(&self, token: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM sw_sessions WHERE token_sha256 = $1",
                &[&digest(token)],
            )
            .await?;
        Ok(())
    }
}

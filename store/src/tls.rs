//! TLS for every connection to PostgreSQL, with libpq's `sslmode` and `sslrootcert`: the
//! [`stormwatch_pgtls`] crate (shared with the agent's PostgreSQL probe), re-exported here with
//! the store's error type.

pub use stormwatch_pgtls::{tls_failure, BadUrl, ConnectTarget, SslMode};

use crate::StoreError;

impl From<BadUrl> for StoreError {
    fn from(e: BadUrl) -> Self {
        StoreError::BadUrl(e.0)
    }
}

/// One connection to `url` with the store's TLS settings (see [`ConnectTarget::connect`]).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    Ok(ConnectTarget::parse(url)?.connect().await?)
}

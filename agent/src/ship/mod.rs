//! Shipping: batches go through a bounded disk spool ([`spool`]) to the collector
//! ([`shipper`]), encoded as [`body`] says.

pub mod body;
pub mod shipper;
pub mod spool;

//! The sign-in rate limit: failed sign-ins are counted over a sliding minute per client
//! address and per configured user name; past the limit, `POST /login` answers 429 with
//! `Retry-After` without checking the password (which also bounds the argon2 CPU a guesser can
//! make the server spend).
//!
//! - Per address: [`MAX_FAILURES_PER_ADDRESS`] in [`WINDOW`]. IPv6 clients are counted per /64
//!   (one host usually owns the whole /64); IPv4-mapped IPv6 addresses count as IPv4. Behind a
//!   reverse proxy every client has the proxy's address (`X-Forwarded-For` is not trusted: any
//!   client can set it), so the limit is then shared by everyone behind it.
//! - Per user name: [`MAX_FAILURES_PER_USER`] in [`WINDOW`], from any address, so that many
//!   addresses cannot guess one password together. Only configured users are counted (a
//!   sprayed list of made-up names cannot grow the table). The price: someone failing on
//!   purpose can keep that user out for as long as they keep failing from enough addresses.
//! - An attempt counts as a failure from the moment it is let through and is taken back when it
//!   succeeds, so parallel attempts cannot slip past the limit. A success also clears the
//!   user's count, never the address's.
//! - Memory is bounded: at most [`MAX_TRACKED_ADDRESSES`] addresses (the one failing least
//!   recently is forgotten first) and at most the limit's number of instants per key.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The sliding window failures are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failed sign-ins one client address may make per [`WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: usize = 5;
/// Failed sign-ins as one configured user, from all addresses together, per [`WINDOW`].
pub const MAX_FAILURES_PER_USER: usize = 20;
/// Client addresses tracked at once.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Whom an address limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
    /// The server was not given peer addresses (a router used without `ConnectInfo`): every
    /// client shares one count.
    Unknown,
}

impl Client {
    pub fn of(addr: Option<IpAddr>) -> Client {
        match addr {
            Some(IpAddr::V4(a)) => Client::V4(a),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4),
                None => Client::V6Net((u128::from(a) >> 64) as u64),
            },
            None => Client::Unknown,
        }
    }
}

/// An attempt let through; give it back to [`LoginLimiter::succeeded`] if it succeeds.
#[derive(Debug)]
pub struct Attempt {
    client: Client,
    user: Option<String>,
    at: Instant,
}

#[derive(Default)]
struct Failures {
    by_client: HashMap<Client, VecDeque<Instant>>,
    by_user: HashMap<String, VecDeque<Instant>>,
}

/// Drops instants that left the window; how long until the oldest left leaves it, if the
/// count is at `max`.
fn blocked(times: &mut VecDeque<Instant>, max: usize, now: Instant) -> Option<Duration> {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
    (times.len() >= max).then(|| {
        let oldest = *times.front().expect("max is at least 1");
        WINDOW.saturating_sub(now.saturating_duration_since(oldest))
    })
}

fn take_back(times: Option<&mut VecDeque<Instant>>, at: Instant) {
    if let Some(times) = times {
        if let Some(i) = times.iter().position(|t| *t == at) {
            times.remove(i);
        }
    }
}

/// Failed sign-ins per client address and per user name.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<Failures>,
}

impl LoginLimiter {
    /// Lets an attempt through (counting it as failed until [`Self::succeeded`]) or says how
    /// long to wait. `user` is the name tried when it is a configured user, else `None`.
    pub fn attempt(
        &self,
        client: Client,
        user: Option<&str>,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let by_client = f
            .by_client
            .get_mut(&client)
            .and_then(|t| blocked(t, MAX_FAILURES_PER_ADDRESS, now));
        let by_user = user.and_then(|u| {
            f.by_user
                .get_mut(u)
                .and_then(|t| blocked(t, MAX_FAILURES_PER_USER, now))
        });
        if let Some(wait) = by_client.max(by_user) {
            return Err(wait);
        }
        if !f.by_client.contains_key(&client) && f.by_client.len() >= MAX_TRACKED_ADDRESSES {
            f.by_client.retain(|_, t| {
                blocked(t, usize::MAX, now);
                !t.is_empty()
            });
            if f.by_client.len() >= MAX_TRACKED_ADDRESSES {
                let stalest = f
                    .by_client
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(c, _)| *c);
                if let Some(c) = stalest {
                    f.by_client.remove(&c);
                }
            }
        }
        f.by_client.entry(client).or_default().push_back(now);
        if let Some(u) = user {
            f.by_user.entry(u.to_owned()).or_default().push_back(now);
        }
        Ok(Attempt {
            client,
            user: user.map(str::to_owned),
            at: now,
        })
    }

    /// The attempt succeeded: it is not a failure, and its user starts afresh.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        take_back(f.by_client.get_mut(&attempt.client), attempt.at);
        if let Some(u) = &attempt.user {
            f.by_user.remove(u);
        }
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked_addresses(&self) -> usize {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.by_client.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Client {
        Client::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn an_address_is_held_back_after_five_failures_until_the_oldest_leaves_the_window() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_ADDRESS as u64 {
            l.attempt(v4(1), None, t0 + Duration::from_secs(i)).unwrap();
        }
        let wait = l
            .attempt(v4(1), None, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Another address is not affected.
        l.attempt(v4(2), None, t0 + Duration::from_secs(10))
            .unwrap();
        // A minute after the first failure, one more attempt is let through, and only one.
        let later = t0 + Duration::from_secs(60);
        l.attempt(v4(1), None, later).unwrap();
        assert_eq!(
            l.attempt(v4(1), None, later).unwrap_err(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_user_is_held_back_after_twenty_failures_from_any_addresses() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_USER {
            l.attempt(v4(i as u8), Some("admin"), t0).unwrap();
        }
        assert!(l.attempt(v4(200), Some("admin"), t0).is_err());
        // Other names from that address are fine; so is an unknown name (not counted).
        l.attempt(v4(200), Some("viewer"), t0).unwrap();
        l.attempt(v4(200), None, t0).unwrap();
    }

    #[test]
    fn a_success_is_not_a_failure_and_clears_the_user_not_the_address() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_ADDRESS - 1 {
            l.attempt(v4(1), Some("admin"), t0).unwrap();
        }
        let ok = l.attempt(v4(1), Some("admin"), t0).unwrap();
        l.succeeded(ok);
        // Four failures remain for the address: one more attempt, then held back.
        l.attempt(v4(1), Some("admin"), t0).unwrap();
        assert!(l.attempt(v4(1), Some("admin"), t0).is_err());
        // The user's count was cleared (one failure since): from elsewhere, nineteen more
        // failures are let through, then the user is held back.
        for i in 0..MAX_FAILURES_PER_USER - 1 {
            l.attempt(v4(10 + i as u8), Some("admin"), t0).unwrap();
        }
        assert!(l.attempt(v4(100), Some("admin"), t0).is_err());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(Some(a)), Client::of(Some(b)));
        assert_ne!(Client::of(Some(a)), Client::of(Some(c)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Client::of(Some(mapped)), v4(7));
        assert_eq!(Client::of(None), Client::Unknown);
    }

    #[test]
    fn the_address_table_is_bounded() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 50 {
            let client = Client::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.attempt(client, None, t0 + Duration::from_millis(u64::from(i)))
                .unwrap();
        }
        assert_eq!(l.tracked_addresses(), MAX_TRACKED_ADDRESSES);
        // Expired entries are dropped first when the table is full.
        let late = t0 + WINDOW * 2;
        l.attempt(v4(1), None, late).unwrap();
        assert_eq!(l.tracked_addresses(), 1);
    }
}

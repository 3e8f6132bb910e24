//! Named peers: the agent writes a peer it can name as `name (system, address)`
//! (`board-cache (redis, 10.0.0.3:6379)`); every reader splits it here, so the format has one
//! home.

/// `name (system, address)`.
pub fn named(name: &str, system: &str, address: &str) -> String {
    let mut s = String::with_capacity(name.len() + system.len() + address.len() + 5);
    s.push_str(name);
    s.push_str(" (");
    s.push_str(system);
    s.push_str(", ");
    s.push_str(address);
    s.push(')');
    s
}

/// `name` of a peer written `name (system, address)`, else the peer.
pub fn name(peer: &str) -> &str {
    peer.split_once(" (").map_or(peer, |(n, _)| n)
}

/// `(system, address)` of a peer written `name (system, address)`.
pub fn system_address(peer: &str) -> Option<(&str, &str)> {
    let inner = peer.split_once(" (")?.1.strip_suffix(')')?;
    inner.split_once(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_peer_splits_back_into_its_parts() {
        let p = named("board-cache", "redis", "10.0.0.3:6379");
        assert_eq!(p, "board-cache (redis, 10.0.0.3:6379)");
        assert_eq!(name(&p), "board-cache");
        assert_eq!(system_address(&p), Some(("redis", "10.0.0.3:6379")));
        assert_eq!(name("10.0.0.3:6379"), "10.0.0.3:6379");
        assert_eq!(system_address("10.0.0.3:6379"), None);
    }
}

//! Kafka's `max.connections.per.ip` and `max.connections.per.ip.overrides`: how many
//! connections one client address may hold open across every listener and every shard.
//!
//! The count is process-wide, so it is the one structure the shards share: a map from
//! address to open connections behind a mutex, taken once when a connection is accepted and
//! once when it closes, never per request. Without `--max-connections-per-ip` (the default)
//! there is no map and no lock at all. A connection over its address's cap is closed as soon
//! as it is accepted, as Kafka does; the client sees its connection closed and retries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::model::settings::canonical;
pub use crate::model::settings::ConnectionCaps;

/// The open connections per address, shared by the shards (see the module's text).
#[derive(Debug)]
pub struct PerIp {
    caps: ConnectionCaps,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// None when nothing is capped: then no connection counts.
    pub fn new(caps: ConnectionCaps) -> Option<Arc<PerIp>> {
        caps.is_capped().then(|| Arc::new(PerIp { caps, open: Mutex::new(HashMap::new()) }))
    }

    /// Counts a connection from `ip`, or refuses it with the cap it would exceed. The slot
    /// gives the connection back when dropped.
    pub fn admit(self: &Arc<PerIp>, ip: IpAddr) -> Result<Slot, u32> {
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip).or_insert(0);
        match self.caps.cap_of(ip) {
            Some(cap) if *count >= cap => {
                if *count == 0 {
                    open.remove(&ip);
                }
                Err(cap)
            }
            _ => {
                *count += 1;
                Ok(Slot { per_ip: self.clone(), ip })
            }
        }
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> u32 {
        self.open.lock().map(|open| open.get(&canonical(ip)).copied().unwrap_or(0)).unwrap_or(0)
    }
}

/// One admitted connection's place in its address's count.
#[derive(Debug)]
pub struct Slot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn no_cap_no_counting() {
        assert!(PerIp::new(ConnectionCaps::default()).is_none());
    }

    #[test]
    fn a_cap_refuses_the_connection_over_it_and_a_close_frees_a_place() {
        let per_ip = PerIp::new(ConnectionCaps { per_ip: Some(2), ..Default::default() }).unwrap();
        let a = ip("10.0.0.1");
        let first = per_ip.admit(a).unwrap();
        let second = per_ip.admit(a).unwrap();
        assert_eq!(per_ip.admit(a).unwrap_err(), 2);
        // Another address has its own count.
        let other = per_ip.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(per_ip.open_from(a), 2);
        drop(first);
        assert_eq!(per_ip.open_from(a), 1);
        let third = per_ip.admit(a).unwrap();
        drop((second, third, other));
        assert_eq!(per_ip.open_from(a), 0);
        assert!(per_ip.open.lock().unwrap().is_empty(), "closed addresses leave the map");
    }

    #[test]
    fn overrides_replace_the_default_and_zero_refuses() {
        let overrides = ConnectionCaps::parse_overrides("10.0.0.9:3, [::1]:1 ,10.0.0.8:0").unwrap();
        let caps = ConnectionCaps { per_ip: Some(1), overrides };
        assert_eq!(caps.cap_of(ip("10.0.0.9")), Some(3));
        assert_eq!(caps.cap_of(ip("::ffff:10.0.0.9")), Some(3), "IPv4-mapped is IPv4");
        assert_eq!(caps.cap_of(ip("::1")), Some(1));
        assert_eq!(caps.cap_of(ip("10.0.0.7")), Some(1));
        let per_ip = PerIp::new(caps).unwrap();
        assert_eq!(per_ip.admit(ip("10.0.0.8")).unwrap_err(), 0);
        assert!(per_ip.open.lock().unwrap().is_empty(), "a refusal leaves nothing behind");
        let held: Vec<Slot> = (0..3).map(|_| per_ip.admit(ip("10.0.0.9")).unwrap()).collect();
        assert!(per_ip.admit(ip("::ffff:10.0.0.9")).is_err());
        drop(held);
    }

    #[test]
    fn overrides_alone_cap_only_their_addresses() {
        let overrides = ConnectionCaps::parse_overrides("10.0.0.9:1").unwrap();
        let per_ip = PerIp::new(ConnectionCaps { per_ip: None, overrides }).unwrap();
        let held: Vec<Slot> = (0..100).map(|_| per_ip.admit(ip("10.0.0.1")).unwrap()).collect();
        let one = per_ip.admit(ip("10.0.0.9")).unwrap();
        assert!(per_ip.admit(ip("10.0.0.9")).is_err());
        drop((held, one));
    }

    #[test]
    fn bad_overrides_say_what_is_wrong() {
        for (text, says) in [
            ("10.0.0.1", "not address:count"),
            ("broker-1:10", "not an IP address"),
            ("10.0.0.1:many", "not a connection count"),
            ("10.0.0.1:-1", "not a connection count"),
            ("10.0.0.1:1,10.0.0.1:2", "twice"),
        ] {
            let error = ConnectionCaps::parse_overrides(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(ConnectionCaps::parse_overrides("").unwrap().is_empty());
    }
}

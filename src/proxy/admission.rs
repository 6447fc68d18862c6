//! Connection budget (issue 13, resource budgets): at most
//! `gateway.limits.max_connections` client connections at once, and at most
//! `max_connections_per_client` from one address, so a flood from one peer
//! (or many) cannot take every descriptor and task from the others. A
//! connection over budget is closed on accept, before any byte is read:
//! nothing has been parsed yet (in transparent mode it may be TLS), so
//! there is no answer to give, and closing costs the least.
//!
//! The limits are read from the policy in force at each accept, so a reload
//! changes them for new connections; connections already admitted stay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::policy::Limits;
use crate::vocab::unmap;

/// Live connections, in total and per client address.
#[derive(Default)]
pub struct ConnectionBudget {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: u64,
    per_client: HashMap<IpAddr, u64>,
}

/// Why a connection was not admitted (for the log line).
#[derive(Debug, PartialEq, Eq)]
pub enum OverBudget {
    Total(u64),
    PerClient(u64),
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            OverBudget::Total(n) => {
                write!(f, "{n} connections open (gateway.limits.max_connections)")
            }
            OverBudget::PerClient(n) => write!(
                f,
                "{n} connections open from this address (gateway.limits.max_connections_per_client)"
            ),
        }
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    budget: Arc<ConnectionBudget>,
    client: IpAddr,
}

impl ConnectionBudget {
    /// Admits a connection from `client` if both limits allow it.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        limits: &Limits,
    ) -> Result<Admitted, OverBudget> {
        // An IPv4 peer on a dual-stack listener counts as itself.
        let client = unmap(client);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.max_connections {
            return Err(OverBudget::Total(c.total));
        }
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_client {
            return Err(OverBudget::PerClient(mine));
        }
        c.total += 1;
        c.per_client.insert(client, mine + 1);
        Ok(Admitted {
            budget: self.clone(),
            client,
        })
    }

    /// Connections admitted and not yet closed.
    pub fn open(&self) -> u64 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.budget.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        // Forget addresses with nothing open, so the map stays as small as
        // the set of live clients.
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u64, per_client: u64) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_client: per_client,
            ..Limits::default()
        }
    }

    #[test]
    fn per_client_and_total_limits_and_release() {
        let b = Arc::new(ConnectionBudget::default());
        let l = limits(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let z: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = b.admit(a, &l).unwrap();
        let _a2 = b.admit(a, &l).unwrap();
        assert_eq!(b.admit(a, &l).err(), Some(OverBudget::PerClient(2)));
        let _z1 = b.admit(z, &l).unwrap();
        assert_eq!(b.admit(z, &l).err(), Some(OverBudget::Total(3)));
        drop(a1);
        assert_eq!(b.open(), 2);
        let _a3 = b.admit(a, &l).unwrap();
        assert_eq!(b.open(), 3);
    }

    #[test]
    fn mapped_ipv4_counts_as_the_same_client() {
        let b = Arc::new(ConnectionBudget::default());
        let l = limits(10, 1);
        let _v4 = b.admit("192.0.2.1".parse().unwrap(), &l).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(matches!(b.admit(mapped, &l), Err(OverBudget::PerClient(1))));
    }

    #[test]
    fn addresses_are_forgotten_when_their_connections_close() {
        let b = Arc::new(ConnectionBudget::default());
        let l = limits(10, 10);
        let held: Vec<_> = (1..=5u8)
            .map(|i| b.admit(IpAddr::from([10, 0, 0, i]), &l).unwrap())
            .collect();
        assert_eq!(b.counts.lock().unwrap().per_client.len(), 5);
        drop(held);
        assert_eq!(b.open(), 0);
        assert!(b.counts.lock().unwrap().per_client.is_empty());
    }
}

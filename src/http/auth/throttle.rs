//! Failed password checks per client address, and the limit on them.
//!
//! Each address has a count of recent failures that leaks away (one
//! forgotten every [`FORGET_ONE_FAILURE_EVERY`]). While its failures plus
//! its checks under way reach [`FAILURES_ALLOWED`], a new check from it is
//! refused with the time until one more is allowed: a guesser gets about
//! ten tries a minute, and the argon2 work it can cause is bounded. The
//! table is bounded too ([`MAX_CLIENTS`]): when full, addresses with
//! nothing left to remember go first, then the longest quiet.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures (and checks under way) an address may have before it waits.
pub(super) const FAILURES_ALLOWED: u32 = 10;
/// How fast failures are forgotten.
pub(super) const FORGET_ONE_FAILURE_EVERY: Duration = Duration::from_secs(6);
/// Addresses remembered at once.
const MAX_CLIENTS: usize = 10_000;

/// Who a client is, for counting: its IPv4 address, or the /64 network
/// of its IPv6 address (one host commonly holds a whole /64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ClientKey(IpAddr);

impl ClientKey {
    fn of(address: IpAddr) -> ClientKey {
        match address {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))),
            },
        }
    }
}

#[derive(Debug)]
struct Record {
    /// Failures not yet forgotten, as of `at` (fractional while leaking).
    failures: f64,
    at: Instant,
    /// Checks admitted and not finished.
    under_way: u32,
}

impl Record {
    /// Failures left at `now`.
    fn failures_at(&self, now: Instant) -> f64 {
        let forgotten =
            now.saturating_duration_since(self.at).as_secs_f64() / FORGET_ONE_FAILURE_EVERY.as_secs_f64();
        (self.failures - forgotten).max(0.0)
    }

    fn settle(&mut self, now: Instant) {
        self.failures = self.failures_at(now);
        self.at = now;
    }
}

/// The failure counts of every client address seen failing lately.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    clients: Mutex<HashMap<ClientKey, Record>>,
}

/// A check admitted for one address: counted as under way until
/// [`Admitted::finish`], or until dropped (a check that never ran).
#[derive(Debug)]
pub(super) struct Admitted {
    throttle: Arc<Throttle>,
    /// `None` once finished.
    key: Option<ClientKey>,
}

impl Throttle {
    /// Admit one password check from `address`, or say how long it must
    /// wait (at least a second).
    pub(super) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Duration> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, address: IpAddr, now: Instant) -> Result<Admitted, Duration> {
        let key = ClientKey::of(address);
        let mut clients = self.clients.lock();
        if !clients.contains_key(&key) && clients.len() >= MAX_CLIENTS {
            make_room(&mut clients, now);
        }
        let record = clients.entry(key).or_insert(Record { failures: 0.0, at: now, under_way: 0 });
        record.settle(now);
        let over = record.failures + f64::from(record.under_way) + 1.0 - f64::from(FAILURES_ALLOWED);
        if over > 0.0 {
            // Failures leak; checks under way end within a second or so.
            let wait = FORGET_ONE_FAILURE_EVERY.mul_f64(over.min(record.failures));
            return Err(wait.max(Duration::from_secs(1)));
        }
        record.under_way += 1;
        Ok(Admitted { throttle: self.clone(), key: Some(key) })
    }
}

/// Forget what is no longer worth keeping, or else the longest quiet
/// address.
fn make_room(clients: &mut HashMap<ClientKey, Record>, now: Instant) {
    clients.retain(|_, record| record.under_way > 0 || record.failures_at(now) > 0.0);
    if clients.len() >= MAX_CLIENTS
        && let Some(quietest) = clients.iter().min_by_key(|(_, record)| record.at).map(|(key, _)| *key)
    {
        clients.remove(&quietest);
    }
}

impl Admitted {
    /// The check is done; `failed`: the password was wrong.
    pub(super) fn finish(self, failed: bool) {
        self.finish_at(failed, Instant::now());
    }

    fn finish_at(mut self, failed: bool, now: Instant) {
        if let Some(key) = self.key.take() {
            self.throttle.end(key, Some(failed), now);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.end(key, None, Instant::now());
        }
    }
}

impl Throttle {
    /// A check from `key` ended: `Some(failed)` if it ran.
    fn end(&self, key: ClientKey, failed: Option<bool>, now: Instant) {
        let mut clients = self.clients.lock();
        // Gone if evicted meanwhile: then there is nothing to count on.
        let Some(record) = clients.get_mut(&key) else { return };
        record.under_way = record.under_way.saturating_sub(1);
        record.settle(now);
        if failed == Some(true) {
            record.failures += 1.0;
        }
        if record.failures == 0.0 && record.under_way == 0 {
            clients.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn fail_times(throttle: &Arc<Throttle>, address: IpAddr, times: u32, now: Instant) {
        for n in 0..times {
            let admitted = throttle.admit_at(address, now).unwrap_or_else(|_| panic!("check {n} admitted"));
            admitted.finish_at(true, now);
        }
    }

    #[test]
    fn ten_failures_then_a_wait_until_one_is_forgotten() {
        let throttle = Arc::new(Throttle::default());
        let start = Instant::now();
        fail_times(&throttle, HERE, FAILURES_ALLOWED, start);
        assert_eq!(throttle.admit_at(HERE, start).unwrap_err(), FORGET_ONE_FAILURE_EVERY);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert!(throttle.admit_at(other, start).is_ok(), "another address is not affected");
        let half = start + FORGET_ONE_FAILURE_EVERY / 2;
        assert_eq!(throttle.admit_at(HERE, half).unwrap_err(), FORGET_ONE_FAILURE_EVERY / 2);
        let later = start + FORGET_ONE_FAILURE_EVERY;
        throttle.admit_at(HERE, later).expect("one failure forgotten").finish_at(true, later);
        assert!(throttle.admit_at(HERE, later).is_err(), "and used again");
        let much_later = later + FORGET_ONE_FAILURE_EVERY * FAILURES_ALLOWED;
        fail_times(&throttle, HERE, FAILURES_ALLOWED, much_later);
    }

    #[test]
    fn checks_under_way_count_and_a_dropped_one_is_no_failure() {
        let throttle = Arc::new(Throttle::default());
        let now = Instant::now();
        let under_way: Vec<Admitted> =
            (0..FAILURES_ALLOWED).map(|_| throttle.admit_at(HERE, now).expect("admitted")).collect();
        assert_eq!(throttle.admit_at(HERE, now).unwrap_err(), Duration::from_secs(1));
        drop(under_way);
        fail_times(&throttle, HERE, FAILURES_ALLOWED, now);
        assert!(throttle.admit_at(HERE, now).is_err());
    }

    #[test]
    fn successes_leave_nothing_behind_and_the_table_stays_bounded() {
        let throttle = Arc::new(Throttle::default());
        let now = Instant::now();
        throttle.admit_at(HERE, now).expect("admitted").finish_at(false, now);
        assert!(throttle.clients.lock().is_empty());
        for n in 0..MAX_CLIENTS as u32 + 10 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + n));
            fail_times(&throttle, address, 1, now + Duration::from_micros(u64::from(n)));
        }
        let clients = throttle.clients.lock();
        assert_eq!(clients.len(), MAX_CLIENTS);
        assert!(
            !clients.contains_key(&ClientKey::of(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000))))
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), ClientKey::of(HERE));
    }
}

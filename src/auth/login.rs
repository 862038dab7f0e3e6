//! Admin login defences: failure throttling per client address and per user name, and a gate
//! that bounds how many password checks (argon2, 19 MiB each) run at once.
//!
//! Throttling: after `free_failures` failed logins an address or a name is locked for
//! `base_delay`, and every further failure doubles the lock, up to `address_max_delay` for an
//! address and the much shorter `user_max_delay` for a name (guesses from many addresses must
//! not keep the real admin out for long). A success clears both, and failures are forgotten
//! after `quiet_reset` without one. An address that has signed in as a name is not held back
//! by that name's lock (only by its own), so a distributed attack on the name cannot lock the
//! admin out of the places they sign in from. The state lives in bounded caches (TinyLFU
//! admission: a flood of one-off names or addresses cannot push out the ones under attack).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::auth::admin::{Credentials, check_credentials};
use crate::config::LoginLimits;
use crate::model::Admin;
use crate::store::Store;

/// Client addresses with failures kept at most (a few MiB at most).
const ADDRESS_CAPACITY: u64 = 10_000;
/// User names with failures kept at most.
const USER_CAPACITY: u64 = 10_000;
/// (address, name) pairs that signed in, kept at most, and for how long.
const TRUSTED_CAPACITY: u64 = 1_000;
const TRUSTED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The throttling key of a client address: IPv4 as is, IPv6 by its /64 (one host usually has
/// a whole /64 to pick from), IPv4-mapped IPv6 as IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The throttling key of a user name: fixed size whatever the client sends.
type UserKey = [u8; 32];

fn user_key(name: &str) -> UserKey {
    Sha256::digest(name.as_bytes()).into()
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Failures {
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// Failed-login state per client address and per user name.
pub struct Throttle {
    free_failures: u32,
    base_delay: Duration,
    address_max_delay: Duration,
    user_max_delay: Duration,
    quiet_reset: Duration,
    addresses: Cache<IpAddr, Failures>,
    users: Cache<UserKey, Failures>,
    trusted: Cache<(IpAddr, UserKey), ()>,
}

impl Throttle {
    pub fn new(limits: &LoginLimits) -> Self {
        Self::with_capacity(limits, ADDRESS_CAPACITY, USER_CAPACITY)
    }

    fn with_capacity(limits: &LoginLimits, addresses: u64, users: u64) -> Self {
        // Unused entries go after the quiet time (or the longest lock, if that is longer).
        let idle = |max: Duration| limits.quiet_reset.max(max).max(Duration::from_secs(1));
        Throttle {
            free_failures: limits.free_failures,
            base_delay: limits.base_delay,
            address_max_delay: limits.address_max_delay,
            user_max_delay: limits.user_max_delay,
            quiet_reset: limits.quiet_reset,
            addresses: Cache::builder()
                .max_capacity(addresses)
                .time_to_idle(idle(limits.address_max_delay))
                .build(),
            users: Cache::builder()
                .max_capacity(users)
                .time_to_idle(idle(limits.user_max_delay))
                .build(),
            trusted: Cache::builder()
                .max_capacity(TRUSTED_CAPACITY)
                .time_to_live(TRUSTED_TTL)
                .build(),
        }
    }

    /// How long a login from `client` as `username` must still wait, if either is locked.
    pub fn check(&self, client: IpAddr, username: &str, now: Instant) -> Option<Duration> {
        let addr = address_key(client);
        let user = user_key(username);
        let by_address = self.addresses.get(&addr).and_then(|f| f.remaining(now));
        let by_user = if self.trusted.contains_key(&(addr, user)) {
            None
        } else {
            self.users.get(&user).and_then(|f| f.remaining(now))
        };
        by_address.max(by_user)
    }

    /// Count a failed login. Returns the lock it starts, if it starts one (the longer of the
    /// address's and the name's).
    pub fn failure(&self, client: IpAddr, username: &str, now: Instant) -> Option<Duration> {
        let a = self
            .addresses
            .entry(address_key(client))
            .and_upsert_with(|e| self.bump(e.map(|e| e.into_value()), now, self.address_max_delay))
            .into_value();
        let u = self
            .users
            .entry(user_key(username))
            .and_upsert_with(|e| self.bump(e.map(|e| e.into_value()), now, self.user_max_delay))
            .into_value();
        a.remaining(now).max(u.remaining(now))
    }

    /// A successful login: the address's and the name's failures are cleared, and the
    /// address is trusted for the name from now on.
    pub fn success(&self, client: IpAddr, username: &str) {
        let addr = address_key(client);
        let user = user_key(username);
        self.addresses.invalidate(&addr);
        self.users.invalidate(&user);
        self.trusted.insert((addr, user), ());
    }

    fn bump(&self, prev: Option<Failures>, now: Instant, max_delay: Duration) -> Failures {
        let before = match prev {
            Some(f) if now.saturating_duration_since(f.last) < self.quiet_reset => f.count,
            _ => 0,
        };
        let count = before.saturating_add(1);
        let locked_until = (count >= self.free_failures).then(|| {
            let doublings = (count - self.free_failures).min(31);
            now + self
                .base_delay
                .saturating_mul(1u32 << doublings)
                .min(max_delay)
        });
        Failures {
            count,
            last: now,
            locked_until,
        }
    }

    #[cfg(test)]
    fn sizes(&self) -> (u64, u64) {
        self.addresses.run_pending_tasks();
        self.users.run_pending_tasks();
        (self.addresses.entry_count(), self.users.entry_count())
    }
}

/// Why the gate did not run a password check.
#[derive(Debug, PartialEq, Eq)]
pub enum GateError {
    /// Every permit is taken and the queue is full.
    Busy,
    /// The check's blocking task panicked.
    Failed,
}

/// Runs password checks (blocking, 19 MiB each) with at most `permits` at once and at most
/// `queue` callers waiting for a permit.
pub struct HashGate {
    permits: Arc<Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// Decrements a counter when dropped (also when the waiting future is cancelled, or the
/// check panics).
struct Count(Arc<AtomicUsize>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashGate {
    pub fn new(permits: usize, queue: usize) -> Self {
        HashGate {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            queue,
            waiting: AtomicUsize::new(0),
            running: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// Run `f` on the blocking pool once a permit is free. The permit stays with `f` until it
    /// returns, even if the caller goes away meanwhile, so abandoned logins cannot add checks.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(GateError::Busy);
                }
                let waiting = WaitingGuard(&self.waiting);
                let p = self.permits.clone().acquire_owned().await;
                drop(waiting);
                p.map_err(|_| GateError::Failed)?
            }
        };
        let running = self.running.clone();
        let peak = self.peak.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let n = running.fetch_add(1, Ordering::AcqRel) + 1;
            let _running = Count(running);
            peak.fetch_max(n, Ordering::AcqRel);
            f()
        })
        .await
        .map_err(|_| GateError::Failed)
    }

    /// The most checks that ran at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The outcome of a login attempt.
#[derive(Debug)]
pub enum Attempt {
    Valid(Admin),
    /// No admin has this name. `locked`: the lock this failure started, if any.
    UnknownUser {
        locked: Option<Duration>,
    },
    WrongPassword {
        locked: Option<Duration>,
    },
    /// The address or the name is locked for this long; the password was not checked.
    Throttled(Duration),
    /// Too many checks running and waiting; the password was not checked.
    Busy,
}

/// Admin logins: throttling and the password-check gate.
pub struct Logins {
    throttle: Arc<Throttle>,
    gate: HashGate,
}

impl Logins {
    pub fn new(limits: &LoginLimits) -> Self {
        Logins {
            throttle: Arc::new(Throttle::new(limits)),
            gate: HashGate::new(limits.hash_permits, limits.hash_queue),
        }
    }

    /// Try `username` / `password` from `client`.
    pub async fn attempt(
        &self,
        store: Arc<Store>,
        client: IpAddr,
        username: String,
        password: String,
    ) -> Result<Attempt> {
        if let Some(wait) = self.throttle.check(client, &username, Instant::now()) {
            return Ok(Attempt::Throttled(wait));
        }
        let throttle = self.throttle.clone();
        let checked = self
            .gate
            .run(move || -> Result<Attempt> {
                // Attempts that queued behind the failures which locked this address or name
                // are not checked either.
                if let Some(wait) = throttle.check(client, &username, Instant::now()) {
                    return Ok(Attempt::Throttled(wait));
                }
                Ok(match check_credentials(&store, &username, &password)? {
                    Credentials::Valid(admin) => {
                        throttle.success(client, &username);
                        Attempt::Valid(admin)
                    }
                    Credentials::UnknownUser => Attempt::UnknownUser {
                        locked: throttle.failure(client, &username, Instant::now()),
                    },
                    Credentials::WrongPassword => Attempt::WrongPassword {
                        locked: throttle.failure(client, &username, Instant::now()),
                    },
                })
            })
            .await;
        match checked {
            Ok(r) => r,
            Err(GateError::Busy) => Ok(Attempt::Busy),
            Err(GateError::Failed) => Err(anyhow::anyhow!("password check task failed")),
        }
    }

    /// Other password hashing work (a password change) through the same gate.
    pub async fn hash_work<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateError> {
        self.gate.run(f).await
    }

    /// The most password checks that ran at once so far.
    pub fn peak_checks(&self) -> usize {
        self.gate.peak()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits() -> LoginLimits {
        LoginLimits {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            address_max_delay: Duration::from_secs(60),
            user_max_delay: Duration::from_secs(10),
            quiet_reset: Duration::from_secs(600),
            hash_permits: 2,
            hash_queue: 2,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn locks_after_the_free_failures_and_doubles_up_to_the_cap() {
        let t = Throttle::new(&limits());
        let t0 = Instant::now();
        assert_eq!(t.failure(ip(1), "root", t0), None);
        assert_eq!(t.failure(ip(1), "root", t0), None);
        assert_eq!(t.check(ip(1), "root", t0), None);
        assert_eq!(t.failure(ip(1), "root", t0), Some(S(2)));
        assert_eq!(t.check(ip(1), "root", t0), Some(S(2)));
        assert_eq!(t.check(ip(1), "root", t0 + S(1)), Some(S(1)));
        assert_eq!(t.check(ip(1), "root", t0 + S(2)), None);
        // Each further failure doubles the lock: the address's reaches its 60 s cap.
        let mut at = t0 + S(2);
        for want in [4, 8, 16, 32, 60, 60] {
            assert_eq!(t.failure(ip(1), "root", at), Some(S(want)));
            at += S(want);
        }
    }

    #[test]
    fn a_name_is_locked_briefly_from_any_address() {
        let t = Throttle::new(&limits());
        let t0 = Instant::now();
        // Guesses at one name from many addresses: no address reaches its own limit.
        let mut at = t0;
        for i in 0..10 {
            t.failure(ip(i), "root", at);
            at += S(1);
        }
        let wait = t.check(ip(200), "root", at).expect("the name is locked");
        assert!(wait <= S(10), "the name's lock is capped: {wait:?}");
        // Other names from a fresh address are not affected.
        assert_eq!(t.check(ip(200), "other", at), None);
    }

    #[test]
    fn success_clears_and_trusts_the_address_for_the_name() {
        let t = Throttle::new(&limits());
        let t0 = Instant::now();
        for _ in 0..3 {
            t.failure(ip(1), "root", t0);
        }
        assert!(t.check(ip(1), "root", t0).is_some());
        t.success(ip(2), "root");
        // The name's failures are gone; the failing address stays locked.
        assert_eq!(t.check(ip(3), "root", t0), None);
        assert!(t.check(ip(1), "root", t0).is_some());
        // An attacker locks the name again from elsewhere: the address that signed in as it
        // is not held back, a new one is.
        for i in 10..13 {
            t.failure(ip(i), "root", t0);
        }
        assert!(t.check(ip(4), "root", t0).is_some());
        assert_eq!(t.check(ip(2), "root", t0), None);
    }

    #[test]
    fn failures_are_forgotten_after_quiet_time() {
        let t = Throttle::new(&limits());
        let t0 = Instant::now();
        t.failure(ip(1), "root", t0);
        t.failure(ip(1), "root", t0);
        // Ten minutes later the count starts again: two more failures lock nothing.
        let later = t0 + S(600);
        assert_eq!(t.failure(ip(1), "root", later), None);
        assert_eq!(t.failure(ip(1), "root", later), None);
        assert_eq!(t.failure(ip(1), "root", later), Some(S(2)));
    }

    #[test]
    fn ipv6_clients_are_throttled_by_their_64() {
        let t = Throttle::new(&limits());
        let t0 = Instant::now();
        for i in 0..3u16 {
            let a: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i).into();
            t.failure(a, &format!("user{i}"), t0);
        }
        let same_64: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9).into();
        let other_64: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1).into();
        assert!(t.check(same_64, "someone", t0).is_some());
        assert_eq!(t.check(other_64, "someone", t0), None);
        // An IPv4-mapped address is its IPv4 address.
        for _ in 0..3 {
            t.failure(ip(7), "x", t0);
        }
        let mapped: IpAddr = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped().into();
        assert!(t.check(mapped, "y", t0).is_some());
    }

    #[test]
    fn state_stays_bounded_whatever_is_sent() {
        let t = Throttle::with_capacity(&limits(), 100, 100);
        let t0 = Instant::now();
        for i in 0..5_000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            t.failure(a, &format!("random-name-{i}-{}", "x".repeat(1000)), t0);
        }
        let (addresses, users) = t.sizes();
        assert!(addresses <= 100 && users <= 100, "{addresses} {users}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gate_runs_at_most_its_permits_and_turns_away_a_full_queue() {
        let gate = Arc::new(HashGate::new(2, 2));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (g, w) = (gate.clone(), wait.clone());
            tasks.push(tokio::spawn(async move {
                g.run(move || w.lock().unwrap().recv().unwrap()).await
            }));
        }
        // Two run, two wait for a permit.
        while gate.running.load(Ordering::Acquire) < 2 || gate.waiting.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.run(|| ()).await, Err(GateError::Busy));
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(gate.peak(), 2);
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        assert_eq!(gate.run(|| 7).await, Ok(7));
    }
}

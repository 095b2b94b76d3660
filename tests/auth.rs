//! Password checks under attack (issue 15): an unknown user costs what a
//! known one with a wrong password costs; repeated failures from one
//! address get 429 without a hash being checked; and under a hundred
//! clients guessing at once the server stays small and serves the
//! clients it already knows.
//!
//! Clients connect from chosen loopback addresses (all of 127/8 is
//! local on Linux), so each test's addresses are its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::util::{stderr, tsmfs, tsmfs_stdin};
use crate::webdav::TestServer;

/// A server requiring passwords (users ann and bob), with a file to read.
fn server_with_users(dir: &std::path::Path) -> (TestServer, SocketAddr) {
    let (data, users) = (dir.join("data"), dir.join("users"));
    let d = data.to_str().unwrap();
    assert!(tsmfs(&["init", d]).status.success());
    assert!(tsmfs_stdin(&["put", d, "-", "/f.txt"], b"the file").status.success());
    for (user, password) in [("ann", "ann's password"), ("bob", "bob's password")] {
        let out = tsmfs_stdin(&["passwd", users.to_str().unwrap(), user], format!("{password}\n").as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let server = TestServer::start_with(&data, &["--auth-file", users.to_str().unwrap()]);
    let addr = server.base.trim_start_matches("http://").parse().expect("server address");
    (server, addr)
}

/// One HTTP/1.1 connection from a chosen local address, kept alive.
struct Client {
    reader: BufReader<TcpStream>,
}

/// What a response said.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
}

impl Client {
    fn connect(from: Ipv4Addr, to: SocketAddr) -> Client {
        let stream = connect_from(from, to);
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
        Client { reader: BufReader::new(stream) }
    }

    /// GET /f.txt as `user` with `password`.
    fn get(&mut self, user: &str, password: &str) -> Answer {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let request =
            format!("GET /f.txt HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).expect("send request");
        let mut status = 0;
        let mut length = 0;
        let mut retry_after = None;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.reader.read_line(&mut line).expect("read response") > 0, "connection closed");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(rest) = line.strip_prefix("HTTP/1.1 ") {
                status = rest[..3].parse().expect("status code");
            } else if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().expect("Content-Length");
                } else if name.eq_ignore_ascii_case("retry-after") {
                    retry_after = Some(value.parse().expect("Retry-After in seconds"));
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("read body");
        Answer { status, retry_after }
    }
}

/// A TCP connection to `to` from address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let sockaddr = |addr: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let SocketAddr::V4(to) = to else { panic!("an IPv4 server address") };
    let (local, remote) = (sockaddr(SocketAddrV4::new(from, 0)), sockaddr(to));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with
    // addresses that live across the calls; the descriptor goes to the
    // TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let bound = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(bound, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let connected = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(connected, 0, "connect {to} from {from}: {}", std::io::Error::last_os_error());
        stream
    }
}

/// The median time of `tries` requests, each on a fresh connection
/// from `from` (so no connection carries state).
fn median_time(from: Ipv4Addr, to: SocketAddr, user: &str, tries: usize) -> Duration {
    let mut times: Vec<Duration> = (0..tries)
        .map(|n| {
            let mut client = Client::connect(from, to);
            let started = Instant::now();
            let answer = client.get(user, &format!("wrong {n}"));
            let took = started.elapsed();
            assert_eq!(answer.status, 401, "{user}, try {n}");
            took
        })
        .collect();
    times.sort();
    times[tries / 2]
}

/// Issue 15: an unknown user was refused in 0.2 ms and a known one with
/// a wrong password in 47 ms, so user names could be told apart. Both
/// now run one argon2 check of the same cost.
#[test]
fn an_unknown_user_costs_what_a_wrong_password_costs() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = server_with_users(dir.path());
    // Interleaved rounds (the machine's load changes over time), each
    // side from its own address, under the failure limit.
    let (mut unknown, mut known) = (Duration::ZERO, Duration::ZERO);
    for round in 0..3u8 {
        unknown += median_time(Ipv4Addr::new(127, 0, 1, round), addr, "nobody-here", 3);
        known += median_time(Ipv4Addr::new(127, 0, 2, round), addr, "ann", 3);
    }
    let (unknown, known) = (unknown / 3, known / 3);
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    eprintln!("a 401 for an unknown user: {unknown:?}, for a wrong password: {known:?}; ratio {ratio:.2}");
    assert!((0.3..3.0).contains(&ratio), "unknown {unknown:?} against known {known:?}");
}

/// After ten failures from one address, further checks from there get
/// 429 with Retry-After, without a hash being checked, until failures
/// are forgotten (one every 6 s). Credentials the server verified before
/// still pass from that address; new ones wait, and other addresses are
/// not affected.
#[test]
fn repeated_failures_from_one_address_get_429_and_known_clients_still_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = server_with_users(dir.path());
    let here = Ipv4Addr::LOCALHOST;
    let mut client = Client::connect(here, addr);
    assert_eq!(client.get("ann", "ann's password").status, 200, "ann's credentials, now remembered");
    for n in 0..10 {
        assert_eq!(client.get("ann", &format!("guess {n}")).status, 401, "guess {n}");
    }
    let started = Instant::now();
    let throttled = client.get("ann", "guess 10");
    let took = started.elapsed();
    assert_eq!(throttled.status, 429);
    let retry_after = throttled.retry_after.expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    eprintln!("throttled in {took:?}, Retry-After: {retry_after}");
    assert_eq!(client.get("nobody-here", "x").status, 429, "unknown users alike");
    assert_eq!(client.get("ann", "ann's password").status, 200, "known credentials still pass");
    assert_eq!(client.get("bob", "bob's password").status, 429, "new credentials wait, even right ones");
    let mut elsewhere = Client::connect(Ipv4Addr::new(127, 0, 3, 1), addr);
    assert_eq!(elsewhere.get("bob", "bob's password").status, 200, "another address is not throttled");

    std::thread::sleep(Duration::from_secs(retry_after));
    let mut again = Client::connect(here, addr);
    assert_eq!(again.get("ann", "guess 11").status, 401, "after Retry-After, a check is made again");
    assert_eq!(again.get("ann", "guess 12").status, 429, "and the next waits again");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Issue 15: 30 clients sending wrong passwords drove the server to
/// 4.8 GB resident, still held afterwards. A hundred clients, each from
/// its own address, guess for a while (TSMFS_AUTH_LOAD_SECONDS, 15 by
/// default); the server must stay under 200 MiB and answer a client it
/// knows within seconds all along.
#[test]
fn a_hundred_clients_guessing_passwords_leave_the_server_small_and_answering() {
    const CLIENTS: u8 = 100;
    let seconds = crate::util::count_from_env("TSMFS_AUTH_LOAD_SECONDS", 15u64);
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = server_with_users(dir.path());
    let pid = server.pid();
    let mut known = Client::connect(Ipv4Addr::LOCALHOST, addr);
    assert_eq!(known.get("ann", "ann's password").status, 200);
    let idle_kib = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, guesses) = (stop.clone(), guesses.clone());
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 1, 0, n + 1);
                let mut client = Client::connect(from, addr);
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                for guess in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let user = if guess % 2 == 0 { "ann" } else { "nobody-here" };
                    let answer = client.get(user, &format!("guess {n}-{guess}"));
                    *statuses.entry(answer.status).or_default() += 1;
                    guesses.fetch_add(1, Ordering::Relaxed);
                    if answer.status == 429 {
                        // A client that honours no Retry-After, but does
                        // not spin either.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                statuses
            })
        })
        .collect();

    let started = Instant::now();
    let (mut peak_kib, mut slowest) = (idle_kib, Duration::ZERO);
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(250));
        peak_kib = peak_kib.max(rss_kib(pid));
        let asked = Instant::now();
        assert_eq!(known.get("ann", "ann's password").status, 200, "a known client during the attack");
        slowest = slowest.max(asked.elapsed());
        peak_kib = peak_kib.max(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for attacker in attackers {
        for (status, count) in attacker.join().expect("attacker") {
            *statuses.entry(status).or_default() += count;
        }
    }
    let after_kib = rss_kib(pid);
    eprintln!(
        "{CLIENTS} clients, {seconds} s: {} guesses {statuses:?}; RSS idle {idle_kib} KiB, peak {peak_kib} KiB, \
         after {after_kib} KiB; slowest known-client request {slowest:?}",
        guesses.load(Ordering::Relaxed)
    );
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    assert!(slowest < Duration::from_secs(3), "a known client waited {slowest:?}");
    assert!(statuses.get(&401).is_some_and(|&n| n > 0), "the guesses were checked: {statuses:?}");
    // Credentials never seen, from an address that did not guess, are
    // checked once the queue has drained.
    let mut fresh = Client::connect(Ipv4Addr::new(127, 0, 4, 1), addr);
    assert_eq!(fresh.get("bob", "bob's password").status, 200);
}

/// The metrics are guarded like every other URL.
#[test]
fn metrics_need_a_password_like_everything_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _) = server_with_users(dir.path());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let anonymous = agent.get(server.url("/.tsmfs/metrics")).call().expect("GET");
    assert_eq!(anonymous.status().as_u16(), 401);
    let credentials = base64::engine::general_purpose::STANDARD.encode("ann:ann's password");
    let mut known = agent
        .get(server.url("/.tsmfs/metrics"))
        .header("Authorization", format!("Basic {credentials}"))
        .call()
        .expect("GET");
    assert_eq!(known.status().as_u16(), 200);
    let text = known.body_mut().read_to_string().expect("body");
    assert!(text.contains("tsmfs_http_requests_total{method=\"GET\",status=\"401\"} 1"), "{text}");
}

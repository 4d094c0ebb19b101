//! `board::systemd` against a real unix datagram socket set as `$NOTIFY_SOCKET`.
//!
//! This binary holds a single test because it sets environment variables, which is only sound
//! while no other thread reads the environment.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use caer_board::systemd::{self, Watchdog};

/// Receives one datagram, waiting at most a second.
fn recv(sock: &UnixDatagram) -> String {
    sock.set_nonblocking(false).expect("blocking");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 1 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Every datagram already queued, without waiting.
fn drain(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return out,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn set_env(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // Single-threaded here: see the module docs.
    std::env::set_var(key, value);
}

#[test]
fn notifications_reach_the_socket_and_the_watchdog_pings_only_from_the_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");

    // Without NOTIFY_SOCKET every call is a no-op.
    std::env::remove_var("NOTIFY_SOCKET");
    systemd::ready().expect("no-op without NOTIFY_SOCKET");

    set_env("NOTIFY_SOCKET", &path);
    assert_eq!(systemd::notify_socket().as_deref(), Some(path.as_path()));

    systemd::ready().expect("ready");
    assert_eq!(recv(&sock), "READY=1\n");
    systemd::watchdog_ping().expect("ping");
    assert_eq!(recv(&sock), "WATCHDOG=1\n");
    // A newline in a status would inject another assignment: it becomes a space.
    systemd::status("loading model\nREADY=1").expect("status");
    assert_eq!(recv(&sock), "STATUS=loading model READY=1\n");
    systemd::extend_timeout(Duration::from_secs(90)).expect("extend");
    assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=90000000\n");

    // The watchdog from the environment systemd sets for WatchdogSec=: half the timeout.
    set_env("WATCHDOG_USEC", "200000");
    set_env("WATCHDOG_PID", std::process::id().to_string());
    let mut wd = Watchdog::from_env();
    assert_eq!(wd.interval(), Some(Duration::from_millis(100)));

    // With an explicit clock: first tick pings, then once per interval.
    let t0 = Instant::now();
    assert!(wd.tick_at(t0).expect("tick"));
    assert_eq!(recv(&sock), "WATCHDOG=1\n");
    assert!(!wd.tick_at(t0 + Duration::from_millis(60)).expect("tick"));
    assert!(drain(&sock).is_empty());
    assert!(wd.tick_at(t0 + Duration::from_millis(100)).expect("tick"));
    assert_eq!(recv(&sock), "WATCHDOG=1\n");

    // In real time: a loop iterating every 10 ms for 350 ms pings every 100 ms...
    let mut wd = Watchdog::from_env();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(350) {
        wd.tick().expect("tick");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pings = drain(&sock);
    assert!(
        (2..=4).contains(&pings.len()) && pings.iter().all(|p| p == "WATCHDOG=1\n"),
        "{pings:?}"
    );
    // ...and once the loop stalls, nothing pings on its behalf.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(
        drain(&sock),
        Vec::<String>::new(),
        "pinged while the loop stalled"
    );
    // The loop resumes: the overdue ping goes out on the first iteration.
    assert!(wd.tick().expect("tick"));
    assert_eq!(recv(&sock), "WATCHDOG=1\n");

    systemd::stopping().expect("stopping");
    assert_eq!(recv(&sock), "STOPPING=1\n");

    // A watchdog meant for another process (WATCHDOG_PID) is not ours.
    set_env("WATCHDOG_PID", "1");
    assert_eq!(Watchdog::from_env().interval(), None);

    // A socket nobody listens on: the error names it.
    let gone = dir.path().join("gone.sock");
    set_env("NOTIFY_SOCKET", &gone);
    let err = systemd::ready().expect_err("no listener");
    let message = err.to_string();
    assert!(message.contains("READY=1"), "{message}");
    assert!(message.contains(&gone.display().to_string()), "{message}");
    assert!(!Path::new(&gone).exists());
    std::env::remove_var("NOTIFY_SOCKET");
}

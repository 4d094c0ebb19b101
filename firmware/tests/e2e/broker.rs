#![allow(dead_code)]

//! A real `mosquitto` for one test, on a free loopback port, with its own config, data
//! (persistence on: a restart keeps sessions and queued messages) and log in a temporary
//! directory; stopped and restarted on the same port for outage tests. A missing `mosquitto`
//! binary fails the test with a message saying how to install it. Shared by the firmware's
//! end-to-end tests and the fleet tool's tests (`fleet/tests/support/`, through `#[path]`):
//! nothing here names a binary of one package.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds an executable on `PATH` or in the usual sbin directories (Debian puts mosquitto in
/// `/usr/sbin`, which is not on a normal user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The mosquitto binary (`$CAER_MOSQUITTO` overrides); panics with install instructions.
pub fn mosquitto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAER_MOSQUITTO") {
        return PathBuf::from(p);
    }
    find_program("mosquitto").unwrap_or_else(|| {
        panic!(
            "the end-to-end tests need the mosquitto MQTT broker, and no `mosquitto` binary was \
             found on PATH or in /usr/sbin. Install it (Debian/Ubuntu: `apt-get install -y \
             mosquitto`) or set CAER_MOSQUITTO to its path."
        )
    })
}

/// Whether the tests run as root (CI does).
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Waits until `ready` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mosquitto broker for one test.
pub struct Broker {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// A broker accepting anonymous clients.
    pub fn start() -> Broker {
        Broker::start_with("allow_anonymous true\n")
    }

    /// A broker with extra configuration lines (e.g. authentication).
    pub fn start_with(extra: &str) -> Broker {
        let mut broker = Broker::prepare(extra);
        broker.restart();
        broker
    }

    /// A broker configured but not yet started (`restart` starts it), so that a test can put
    /// files the configuration names (`{dir}` stands for the broker's directory) in place.
    pub fn prepare(extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nlog_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nmax_queued_messages 100000\n{extra}",
            dir.path().display()
        )
        .replace("{dir}", &dir.path().display().to_string());
        if running_as_root() {
            // Otherwise mosquitto drops to the `mosquitto` user, which cannot read the tempdir.
            conf.push_str("user root\n");
        }
        fs::write(dir.path().join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        Broker {
            dir,
            port,
            child: None,
        }
    }

    /// The broker's directory (config, persistence, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .expect("open broker log");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start mosquitto ({}): {e}",
                    mosquitto_bin().display()
                )
            });
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops the broker gracefully (SIGTERM: it saves its sessions) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal with `kill(1)` (no libc binding needed).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

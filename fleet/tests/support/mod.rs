#![allow(dead_code)]

//! What the fleet tests and the ingest bench start, each its own, nothing shared:
//!
//! - [`Postgres`]: Debian's PostgreSQL server (`/usr/lib/postgresql/<v>/bin`) in a
//!   temporary data directory on a free loopback port; stopped and started again on the same
//!   port for outage tests. As root it runs as the `postgres` user (it refuses root).
//! - [`Broker`]: mosquitto 2 (MQTT 5, shared subscriptions) on a free port, persistence on:
//!   the firmware's end-to-end broker helper (`firmware/tests/e2e/broker.rs`), shared.
//! - [`Device`]: the real `caerd` (the workspace's `target/<profile>/caerd`, which
//!   `cargo test --workspace` builds) on a generated classroom.
//! - [`fleet`]: the real `caer-fleet` binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "../../../firmware/tests/e2e/broker.rs"]
mod broker;
pub use broker::{free_port, running_as_root, signal, wait_until, Broker};
pub mod push;
#[path = "../../../firmware/tests/e2e/strace.rs"]
pub mod strace;

/// The fleet tool under test.
pub const FLEET: &str = env!("CARGO_BIN_EXE_caer-fleet");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The bin directory of Debian's newest PostgreSQL server.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("postgres").is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "the fleet tests need the PostgreSQL server and found none under /usr/lib/postgresql; \
             install it (Debian: `apt-get install -y postgresql`, as scripts/setup.sh does) or set \
             CAER_PG_BIN to its bin directory"
        )
    })
}

/// A PostgreSQL server for one test.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    durable: bool,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let path = postgres_bin().join(program);
        if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// fsync off: the tests need no durability against power loss, and run faster.
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// PostgreSQL's durable defaults (fsync, synchronous commit), for measurements.
    pub fn start_durable() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(durable: bool) -> Postgres {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut pg = Postgres {
            dir,
            port: free_port(),
            child: None,
            durable,
        };
        if running_as_root() {
            let _ = Command::new("chown")
                .arg("postgres:")
                .arg(pg.dir.path())
                .status();
        }
        let out = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "caer", "-E", "UTF8", "--no-sync", "-D"])
            .arg(pg.data())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.restart();
        pg
    }

    /// `postgres://caer@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://caer@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "postgres already running");
        let log = fs::File::create(self.dir.path().join(format!("postgres-{}.log", self.port)))
            .expect("postgres log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args([
                "-c",
                if self.durable {
                    "fsync=on"
                } else {
                    "fsync=off"
                },
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let url = self.url();
        wait_until(
            Duration::from_secs(30),
            "postgres to accept connections",
            || postgres::Client::connect(&url, postgres::NoTls).is_ok(),
        );
    }

    /// Fast shutdown (SIGINT): open transactions are rolled back, connections cut.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-m", "fast", "-w", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .expect("connect to the test database")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The workspace's `caerd`, built beside this test binary by `cargo test --workspace`.
pub fn caerd() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let caerd = profile_dir.join("caerd");
    assert!(
        caerd.is_file(),
        "{} is missing: these tests run the real daemon; build it first \
         (`cargo build -p caer-firmware`, or run `cargo test --workspace`)",
        caerd.display()
    );
    caerd
}

/// A running `caerd` on a generated classroom, presence profile (no model: records come
/// every report interval whatever the machine's speed).
pub struct Device {
    pub dir: tempfile::TempDir,
    pub site: String,
    pub id: String,
    /// Where `strace` writes, when the daemon runs under it.
    pub strace: Option<PathBuf>,
    child: Option<Child>,
}

impl Device {
    /// `extra` is appended to the configuration (e.g. a `[remote]` section).
    pub fn start(broker: &Broker, site: &str, room: &str, id: &str, extra: &str) -> Device {
        Device::start_sized(broker, site, room, id, (160, 120, 10.0), extra)
    }

    /// With frames of `width x height` at `fps`.
    pub fn start_sized(
        broker: &Broker,
        site: &str,
        room: &str,
        id: &str,
        size: (u32, u32, f64),
        extra: &str,
    ) -> Device {
        let bundle = repo_root().join("tests/golden/bundle");
        let model = (bundle.as_path(), "");
        Device::start_full(broker, (site, room, id), size, "presence", model, extra)
    }

    /// With this privacy `profile`, this bundle and `model_keys` added to `[model]` (e.g.
    /// `trusted_keys = [...]`).
    pub fn start_full(
        broker: &Broker,
        names: (&str, &str, &str),
        size: (u32, u32, f64),
        profile: &str,
        model: (&Path, &str),
        extra: &str,
    ) -> Device {
        let mut device = Device::configure(broker, names, size, profile, model, extra);
        device.restart();
        device
    }

    /// As [`Device::start_full`], not started yet.
    pub fn configure(
        broker: &Broker,
        (site, room, id): (&str, &str, &str),
        (width, height, fps): (u32, u32, f64),
        profile: &str,
        (bundle, model_keys): (&Path, &str),
        extra: &str,
    ) -> Device {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = format!(
            "state_dir = \"{state}\"\n\n[device]\nsite = \"{site}\"\nroom = \"{room}\"\nid = \"{id}\"\n\n\
             [source]\nkind = \"generated\"\nfps = {fps:?}\n[source.generated]\nwidth = {width}\nheight = {height}\nstudents = 4\n\n\
             [model]\nbundle = \"{bundle}\"\nthreads = 1\n{model_keys}\n\n[policy]\nprofile = \"{profile}\"\nmin_group_size = 2\n\n\
             [report]\ninterval_secs = 1\nstats_interval_secs = 2\n\n\
             [mqtt]\nurl = \"{url}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\nkeep_alive_secs = 5\n\n{extra}\n",
            state = dir.path().join("state").display(),
            bundle = bundle.display(),
            url = broker.url(),
        );
        fs::write(dir.path().join("caerd.toml"), config).unwrap();
        Device {
            dir,
            site: site.into(),
            id: id.into(),
            strace: None,
            child: None,
        }
    }

    pub fn restart(&mut self) {
        let log = fs::File::create(self.dir.path().join("caerd.log")).unwrap();
        let mut command = match &self.strace {
            Some(trace) => {
                let mut c = Command::new("strace");
                c.args(strace::strace_args(trace)).arg(caerd());
                c
            }
            None => Command::new(caerd()),
        };
        let child = command
            .arg("--config")
            .arg(self.dir.path().join("caerd.toml"))
            .env("CAER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start caerd");
        self.child = Some(child);
    }

    /// The next sequence number the outbox will give (its ledger: magic, then `next_seq`
    /// little-endian; `firmware/src/daemon/outbox.rs`).
    pub fn next_seq(&self) -> Option<i64> {
        let data = fs::read(self.dir.path().join("state/outbox/ledger")).ok()?;
        Some(i64::from_le_bytes(data.get(8..16)?.try_into().ok()?))
    }

    /// The outbox ledger's `(next_seq, acked_below)`.
    pub fn ledger(&self) -> Option<(i64, i64)> {
        let data = fs::read(self.dir.path().join("state/outbox/ledger")).ok()?;
        let next = i64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
        let acked = i64::from_le_bytes(data.get(16..24)?.try_into().ok()?);
        Some((next, acked))
    }

    /// The daemon's pid: the child, or under strace the child's child.
    fn daemon_pid(child: &Child) -> u32 {
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        fs::read_to_string(children)
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or(child.id())
    }

    /// SIGTERM, and wait for the exit (caerd publishes its `offline` status first; strace
    /// ends with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(Device::daemon_pid(&child), "TERM");
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("caerd.log")).unwrap_or_default()
    }

    /// SIGKILL: no clean shutdown, as a power cut or a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.strace.is_some() {
                signal(Device::daemon_pid(&child), "KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `caer-fleet` to completion.
pub fn fleet(args: &[&str]) -> Output {
    Command::new(FLEET)
        .args(args)
        .env("CAER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run caer-fleet")
}

/// A `caer-fleet ingest` process.
pub struct Ingester {
    pub client_id: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Ingester {
    pub fn start(broker: &Broker, database: &str, client_id: &str, log_dir: &Path) -> Ingester {
        let args = vec![
            "--broker".to_string(),
            broker.url(),
            "ingest".into(),
            "--database".into(),
            database.into(),
            "--group".into(),
            "test".into(),
            "--client-id".into(),
            client_id.into(),
        ];
        let mut ingester = Ingester {
            client_id: client_id.into(),
            args,
            log: log_dir.join(format!("{client_id}.log")),
            child: None,
        };
        ingester.restart();
        ingester
    }

    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(FLEET)
            .args(&self.args)
            .env("CAER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start caer-fleet ingest");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to store or ack anything pending.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingester {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stored records per device: (count, distinct seqs, min, max).
pub fn stored(db: &mut postgres::Client, site: &str, device: &str) -> (i64, Vec<i64>) {
    let rows = db
        .query(
            "SELECT seq FROM engagement WHERE site = $1 AND device = $2 ORDER BY seq",
            &[&site, &device],
        )
        .unwrap_or_default();
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    (seqs.len() as i64, seqs)
}

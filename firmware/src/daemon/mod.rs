//! The run loop of `caerd`: frames in, classroom aggregates out.
//!
//! Data flow, one thread per stage group, joined by bounded queues:
//!
//! ```text
//! capture thread   [privacy gate] source ──(pace)──▶ FrameQueue (drop-oldest)
//! inference thread   ──▶ detect ──▶ track ──▶ sample ──▶ crop ──▶ encode ──▶ window ──▶ classify
//!                    ──▶ aggregate ──(every report interval)──▶ outbox (on disk)
//! sink thread        outbox ──▶ MQTT broker  (or stdout)          ◀── config/set, cmd
//! main thread        supervisor: status, stats, control requests, safe mode, shutdown
//! ```
//!
//! Only [`crate::pipeline::aggregate`] output reaches the outbox; frames, crops, features and
//! per-student results stay in the inference thread's memory.
//!
//! **Privacy LED and switch** (`[privacy]`, feature `gpio`): the capture thread asks the
//! controller once per iteration whether the camera may be open. The source is then opened
//! only after the controller has lit the LED, and dropped (closed) as soon as the controller
//! denies it (switch engaged, paused, pin error); the LED goes off only at the next step,
//! after the close. Releasing the switch opens the source again (a new one: a frame
//! directory or the generated classroom start over). Without `[privacy]` the source is
//! opened once, when the pipeline is built.
//!
//! **Thermal guard** (`[thermal]`): the supervisor polls it every [`THERMAL_POLL`]; while
//! the board is hot, the per-track sampling rate is multiplied by its factor.
//!
//! **Supervisor** ([`run`]): builds the pipeline from the [`ValidatedConfig`]; if the
//! configuration is valid but cannot run (bundle or frame directory missing, model
//! unusable), the daemon enters **safe mode**: no pipeline, but the sink stays up so that
//! status (with the reason) and control keep working; a valid remote change or a retry every
//! [`SAFE_MODE_RETRY`] may bring it back. Remote changes are applied atomically: the new
//! pipeline is built first, the state file written, and only then is the old pipeline
//! replaced; on any failure the old configuration stays and the ack carries the error.
//!
//! Threads are supervised: a panicking stage thread makes [`run`] return an error (the
//! binary exits non-zero and systemd restarts it); a stage error puts the daemon into safe
//! mode. Every wait has a timeout well under the systemd watchdog interval.
//!
//! Modules: [`config`] (the one validated file, remote changes and their policy), `build`
//! (stages built once from it), `capture` and `inference` (the two stage threads; the stage
//! sequence reads top to bottom in `inference`), `running` and `supervisor` (the loop above),
//! [`publish`] (the sinks), [`outbox`], [`state`] and [`state_dir`] (what is kept on disk, no
//! links followed), [`fleet`] (payloads), `metrics` (stats by stage name), [`board`].

pub mod board;
pub mod config;
pub mod fleet;
pub mod outbox;
pub mod publish;
pub mod state_dir;
pub mod update;

pub mod state;

mod build;
mod capture;
mod error;
mod inference;
mod metrics;
mod pace;
mod running;
mod supervisor;

#[cfg(test)]
mod proptests;

pub use error::{BuildError, DaemonError, PipelineError};
pub use metrics::Metrics;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::daemon::config::ValidatedConfig;
use crate::daemon::fleet::ControlRequest;
use crate::daemon::outbox::Outbox;
use crate::daemon::publish::mqtt::{MqttSettings, MqttSink};
use crate::daemon::publish::stdout::StdoutSink;
use crate::daemon::publish::{SharedOutbox, SinkError, SinkMessage, SINK_CHANNEL_CAPACITY};
use crate::daemon::state::initial_config;
use crate::daemon::state_dir::StateDir;
use crate::daemon::supervisor::Supervisor;

/// How often safe mode tries to build the pipeline again.
pub const SAFE_MODE_RETRY: Duration = Duration::from_secs(30);
/// Longest wait of the supervisor loop (the systemd watchdog is pinged between waits).
const TICK: Duration = Duration::from_millis(200);
/// How often the supervisor polls the thermal guard.
pub const THERMAL_POLL: Duration = Duration::from_secs(5);

/// Control requests waiting for the supervisor; more are answered "busy".
const CONTROL_CAPACITY: usize = 8;

/// Name of the outbox directory under the state directory.
pub const OUTBOX_DIR: &str = "outbox";

/// Options of one run that do not belong in the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Stop after this long (flushing the current interval first).
    pub duration: Option<Duration>,
    /// Longest wait for the sink to deliver outstanding records at shutdown.
    pub drain: Duration,
    /// Path of the configuration file, for log and error messages.
    pub config_path: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            duration: None,
            drain: Duration::from_secs(10),
            config_path: None,
        }
    }
}

/// Why [`run`] returned normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
    /// `--duration` elapsed.
    Duration,
    /// The source ended (`source.max_frames`, or the last file of a frame directory).
    SourceEnded,
    /// stdout was closed by its reader.
    StdoutClosed,
}

/// Runs the daemon until a signal (`shutdown` set), `options.duration`, or the end of the
/// source. See the module docs.
pub fn run(
    config: ValidatedConfig,
    options: &RunOptions,
    shutdown: &AtomicBool,
) -> Result<Exit, DaemonError> {
    let started = Instant::now();
    let path = &config.config().state_dir;
    let state_dir = StateDir::open(path).map_err(|source| DaemonError::StateDir {
        path: path.clone(),
        source,
    })?;
    let (current, persistent, paused_reason) = initial_config(&config, &state_dir);
    let outbox = open_outbox(&state_dir, &current)?;
    let (sink_tx, sink_rx) = mpsc::sync_channel(SINK_CHANNEL_CAPACITY);
    let (control_tx, control_rx) = mpsc::sync_channel(CONTROL_CAPACITY);
    let mut supervisor = Supervisor::new(
        current,
        persistent,
        state_dir,
        outbox.clone(),
        sink_tx,
        started,
    )?;
    supervisor.paused_reason = paused_reason;
    supervisor.configured_bundle = config.config().model.bundle.clone();
    let sink = SinkThread::spawn(&mut supervisor, outbox, sink_rx, control_tx)?;

    supervisor.poll_thermal();
    supervisor.start_pipeline()?;
    supervisor.resume_update();
    if let Err(e) = caer_board::systemd::ready() {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let mut watchdog = caer_board::systemd::Watchdog::from_env();
    let deadline = options.duration.map(|d| started + d);
    let exit = loop {
        if let Err(e) = watchdog.tick() {
            tracing::warn!(error = %e, "cannot ping the systemd watchdog");
        }
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("signal received; stopping");
            break Exit::Signal;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!("duration elapsed; stopping");
            break Exit::Duration;
        }
        if sink.is_finished() {
            return sink.join(None);
        }
        if let Some(request) = control_rx_recv(&control_rx, TICK) {
            supervisor.handle_controls(request, &control_rx)?;
        }
        if let Some(exit) = supervisor.step()? {
            break exit;
        }
    };
    supervisor.shutdown(options.drain)?;
    drop(supervisor);
    sink.join(Some(exit))
}

/// Opens the outbox under the state directory, logging what it recovered.
fn open_outbox(
    state_dir: &StateDir,
    config: &ValidatedConfig,
) -> Result<SharedOutbox, DaemonError> {
    let outbox = Outbox::open(
        state_dir,
        OUTBOX_DIR,
        config.config().outbox.max_bytes.get(),
    )?;
    let stats = outbox.stats();
    if stats.recovered > 0 || stats.corrupt_total > 0 {
        tracing::info!(
            pending = stats.recovered,
            corrupt = stats.corrupt_total,
            next_seq = outbox.next_seq(),
            "outbox recovered"
        );
    }
    Ok(Arc::new(Mutex::new(outbox)))
}

/// The sink's thread: MQTT with a broker, else stdout.
struct SinkThread {
    kind: &'static str,
    thread: JoinHandle<Result<(), SinkError>>,
}

impl SinkThread {
    fn spawn(
        supervisor: &mut Supervisor,
        outbox: SharedOutbox,
        rx: Receiver<SinkMessage>,
        control: SyncSender<ControlRequest>,
    ) -> Result<SinkThread, DaemonError> {
        let config = supervisor.config.clone();
        let spawn = |name: &'static str, run: Box<dyn FnOnce() -> Result<(), SinkError> + Send>| {
            std::thread::Builder::new()
                .name(format!("caer-{name}"))
                .spawn(run)
                .map(|thread| SinkThread { kind: name, thread })
                .map_err(|source| DaemonError::Spawn { name, source })
        };
        if config.broker().is_none() {
            drop(control);
            tracing::info!("no broker configured: payloads go to stdout as JSON lines");
            let sink = StdoutSink::new(outbox, rx);
            return spawn("stdout", Box::new(move || sink.run()));
        }
        let settings = MqttSettings::resolve(&config, supervisor.offline_status())?;
        let connects = Arc::new(AtomicU64::new(0));
        supervisor.mqtt_connects = Some(connects.clone());
        let sink = MqttSink::new(
            settings,
            outbox,
            rx,
            supervisor.sink.clone(),
            control,
            connects,
        );
        tracing::info!(client_id = %config.client_id(), topics = %config.topics().prefix(), "publishing over MQTT");
        spawn("mqtt", Box::new(move || sink.run()))
    }

    fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Joins the sink: `exit` if it stopped as asked, the sink's failure otherwise (a sink
    /// that ends on its own, even cleanly, lost its way out).
    fn join(self, exit: Option<Exit>) -> Result<Exit, DaemonError> {
        let kind = self.kind;
        match (self.thread.join(), exit) {
            (Ok(Ok(())), Some(exit)) => Ok(exit),
            (Ok(Err(SinkError::BrokenPipe)), _) => Ok(Exit::StdoutClosed),
            (Ok(Err(source)), _) => Err(DaemonError::Sink { kind, source }),
            (Ok(Ok(())), None) => Err(DaemonError::Sink {
                kind,
                source: SinkError::Disconnected,
            }),
            (Err(_), _) => Err(DaemonError::Panicked(kind)),
        }
    }
}

/// Waits up to `timeout` for a control request (none in stdout mode: the sender is gone).
fn control_rx_recv(rx: &Receiver<ControlRequest>, timeout: Duration) -> Option<ControlRequest> {
    match rx.recv_timeout(timeout) {
        Ok(request) => Some(request),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(timeout);
            None
        }
    }
}

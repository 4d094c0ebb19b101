// `caerd`: the caer-edge daemon. Reads one TOML file, runs the pipeline, publishes
// classroom-level aggregates over MQTT (or prints them to stdout without a broker).
//
// ```text
// caerd [--config FILE]          run (default FILE: /etc/caer/caerd.toml)
// caerd --config FILE --check    validate FILE and exit
// caerd --demo [--duration 30s]  synthetic classroom, tiny fixture model, JSON lines on stdout
// ```
//
// Without a configuration file at the default path, `caerd` refuses to start (a sensor
// must never publish demo data by accident); `--demo` is the way to try it without one.
//
// (Plain `//` comments, not `//!`: the end-to-end test package builds this same file into
// its own binary with `include!`, where inner doc comments are not allowed.)
//
// Exit status: 0 after a clean stop (signal, `--duration`, end of a finite source, stdout
// closed); 1 when the daemon fails while running; 2 for an unusable command line or
// configuration. Logs go to stderr (`RUST_LOG` filters them; default `info`), so stdout
// carries only JSON payloads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use caer::daemon::config::{DaemonConfig, DEFAULT_CONFIG_PATH};
use caer::daemon::{self, Exit, RunOptions};
use clap::Parser;

/// The demo model committed with the sources (trained on the synthetic classroom by
/// `scripts/train-demo-model.sh`), used by `--demo`.
/// The demo model in the source tree this binary was built from.
const DEMO_BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../model-export/demo/bundle");
/// The demo model beside an installed binary: `<prefix>/share/caer/models/demo` for
/// `<prefix>/bin/caerd` (the Debian package: /usr/bin and /usr/share).
const DEMO_BUNDLE_INSTALLED: &str = "share/caer/models/demo";

/// The demo model: the installed one beside this binary, else the source tree's.
fn demo_bundle() -> PathBuf {
    let installed = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(DEMO_BUNDLE_INSTALLED)));
    match installed {
        Some(dir) if dir.join("manifest.json").is_file() => dir,
        _ => PathBuf::from(DEMO_BUNDLE),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "caerd",
    version,
    about = "caer-edge classroom engagement sensor daemon"
)]
struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Validate the configuration file and exit.
    #[arg(long, requires = "config")]
    check: bool,
    /// Run the built-in demo: a synthetic classroom, the annotated detector, the tiny
    /// fixture model, no broker (JSON lines on stdout), a 5 s report interval, state in a
    /// temporary directory.
    #[arg(long)]
    demo: bool,
    /// Model bundle for --demo (default: the committed demo model, model-export/demo/bundle,
    /// or /usr/share/caer/models/demo where the package installed it).
    #[arg(long, value_name = "DIR", requires = "demo")]
    bundle: Option<PathBuf>,
    /// Stop after this long, e.g. 30s or 2m (the current interval is recorded first).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many frames from the source.
    #[arg(long, value_name = "N")]
    frames: Option<std::num::NonZeroU64>,
    /// Analyse every frame, timed by the frame rate rather than the clock (sets
    /// `source.lockstep`): the figures then do not depend on the machine's speed.
    #[arg(long)]
    lockstep: bool,
    /// Longest wait at shutdown for the broker to acknowledge outstanding records.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    drain: Duration,
}

/// A failure with the exit status it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: error.into(),
    }
}

fn runtime(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 1,
        error: error.into(),
    }
}

fn run(args: Args) -> Result<Exit, Failure> {
    let (mut config, config_path, demo_dir) = if args.demo {
        let dir = std::env::temp_dir().join(format!("caerd-demo-{}", std::process::id()));
        let bundle = args.bundle.clone().unwrap_or_else(demo_bundle);
        (DaemonConfig::demo(bundle, dir.clone()), None, Some(dir))
    } else {
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        if args.config.is_none() && !path.exists() {
            return Err(usage(anyhow::anyhow!(
                "no configuration at {DEFAULT_CONFIG_PATH}; write one (every key is documented in \
                 caerd.example.toml) and pass it with --config, or try `caerd --demo`"
            )));
        }
        (DaemonConfig::load(&path).map_err(usage)?, Some(path), None)
    };
    if let Some(frames) = args.frames {
        config.source.max_frames = Some(frames);
    }
    if args.lockstep {
        config.source.lockstep = true;
    }
    let validated = config.validate().map_err(|errors| match &config_path {
        Some(path) => usage(anyhow::anyhow!("{}: {errors}", path.display())),
        None => usage(errors),
    })?;
    if args.check {
        if let Some(path) = &config_path {
            println!("{}: ok", path.display());
        }
        return Ok(Exit::Duration);
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("cannot install the signal handlers")
            .map_err(runtime)?;
    }
    let options = RunOptions {
        duration: args.duration,
        drain: args.drain,
        config_path,
    };
    let result = daemon::run(validated, &options, &shutdown);
    if let Some(dir) = demo_dir {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot remove the demo state directory");
        }
    }
    result.map_err(runtime)
}

fn main() -> ExitCode {
    caer::pipeline::model::backend::isolate_runtime_cache();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(exit) => {
            tracing::debug!(?exit, "stopped");
            ExitCode::SUCCESS
        }
        Err(Failure { code, error }) => {
            eprintln!("caerd: {error:#}");
            ExitCode::from(code)
        }
    }
}

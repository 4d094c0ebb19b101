//! `caer-fleet`: operate a fleet of caer devices over MQTT, and keep their records in
//! PostgreSQL. `caer-fleet --help` lists the commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use caer_fleet::broker::Broker;
use caer_fleet::control::{self, Outcome, Request, Targets};
use caer_fleet::devices::{self, DeviceRow};
use caer_fleet::ingest::{self, IngestOptions};
use caer_fleet::push::{self, Offered, PushOptions, PushOutcome};
use caer_fleet::store::Store;
use caer_fleet::view::Watch;
use caer_fleet::{report, signing, FleetError};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "caer-fleet",
    version,
    about = "Operate a fleet of caer devices over MQTT"
)]
struct Cli {
    /// The broker, mqtt://host[:port] or mqtts://host[:port] (overrides mqtt.url of --config).
    #[arg(long, global = true, env = "CAER_FLEET_BROKER")]
    broker: Option<String>,
    /// A TOML file with an [mqtt] section, with the keys of caerd.toml's (credentials, TLS).
    #[arg(long, global = true, env = "CAER_FLEET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Devices of this site.
    #[arg(long)]
    site: Option<String>,
    /// Devices in this room.
    #[arg(long)]
    room: Option<String>,
    /// This device (repeat for several).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Every device.
    #[arg(long)]
    all: bool,
    /// How long to wait for the acks.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One JSON object per device instead of lines.
    #[arg(long)]
    json: bool,
}

impl TargetArgs {
    fn targets(&self) -> Targets {
        Targets {
            site: self.site.clone(),
            room: self.room.clone(),
            devices: self.devices.clone(),
            all: self.all,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The fleet at a glance, from the retained status and the latest stats.
    Devices {
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// JSON (an array of devices) instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep the table live, redrawn every --wait.
        #[arg(long)]
        watch: bool,
        /// How long to listen before printing (stats come every report.stats_interval_secs).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Configuration changes.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Model updates: offer a signed bundle to the devices that match.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// A command (pause, resume, identify, rollback) to the devices that match.
    Cmd {
        /// pause, resume, identify or rollback (to the bundle before the last update).
        command: String,
        #[command(flatten)]
        targets: TargetArgs,
    },
    /// Stores every device's engagement records in PostgreSQL, exactly once.
    Ingest {
        /// postgres://user[:password]@host[:port]/database
        #[arg(long, env = "CAER_FLEET_DATABASE")]
        database: String,
        /// The shared-subscription group: ingesters of one group share the records.
        #[arg(long, default_value = "caer-ingest")]
        group: String,
        /// MQTT client id; keep it across restarts (the broker keeps the session by it).
        #[arg(long)]
        client_id: Option<String>,
        /// Most records per transaction (and unacknowledged at once).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
        batch_max: u16,
        /// Longest a record waits for its transaction.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        batch_wait: Duration,
    },
    /// Signed bundles and calibration files.
    Bundle {
        #[command(subcommand)]
        action: BundleAction,
    },
    /// Sequence numbers missing from the database, per device.
    Gaps {
        #[arg(long, env = "CAER_FLEET_DATABASE")]
        database: String,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
    },
    /// Engagement over time for a room (or a whole site), as CSV, SVG or PNG.
    Report {
        #[arg(long, env = "CAER_FLEET_DATABASE")]
        database: String,
        #[arg(long)]
        site: String,
        /// Only this room.
        #[arg(long)]
        room: Option<String>,
        /// From (RFC 3339, e.g. 2026-12-01T08:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        from: SystemTime,
        /// To (RFC 3339), exclusive.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        to: SystemTime,
        /// Output file, .csv, .svg or .png; none: CSV on stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BundleAction {
    /// A new Ed25519 signing key (private key file, mode 0600); prints the public key for
    /// the devices' model.trusted_keys.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Signs a bundle directory (its manifest.json) or a calibration file: writes <file>.sig.
    Sign {
        /// The private key file from `bundle keygen`.
        #[arg(long)]
        key: PathBuf,
        /// A bundle directory or a calibration.json.
        path: PathBuf,
    },
    /// Checks a bundle or a file as a device with these trusted keys would.
    Verify {
        /// A trusted public key (repeat for several).
        #[arg(long = "trusted", required = true)]
        trusted: Vec<String>,
        /// A bundle directory or a calibration.json.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Offers a signed bundle directory, serves its chunks and waits for each device's job
    /// to end (succeeded, failed or rejected).
    Push {
        /// The bundle directory, signed with `bundle sign`.
        bundle: PathBuf,
        /// Offer it to this many devices first; the rest only if they succeed (0: all at once).
        #[arg(long, default_value_t = 0)]
        canary: usize,
        /// Failures among the canary devices that still let the rest go on.
        #[arg(long, default_value_t = 0)]
        max_failures: usize,
        /// Most KiB served per second, all devices together (0: no limit).
        #[arg(long, default_value_t = 0)]
        rate_kib: u64,
        #[command(flatten)]
        targets: TargetArgs,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Sends a change (checked here by the device's rules first) and waits for each ack.
    Set {
        /// key=value, e.g. sampling.rate_hz=1.0 (the value is JSON, or else a string).
        #[arg(long = "set", required_unless_present = "change")]
        pairs: Vec<String>,
        /// The whole change as a JSON object, e.g. '{"sampling": {"rate_hz": 1.0}}'.
        #[arg(long, conflicts_with = "pairs")]
        change: Option<String>,
        #[command(flatten)]
        targets: TargetArgs,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caer-fleet: {e:#}");
            let usage = e
                .downcast_ref::<FleetError>()
                .is_some_and(|f| matches!(f, FleetError::Usage(_)));
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn broker(cli: &Cli) -> anyhow::Result<Broker> {
    Ok(Broker::load(cli.config.as_deref(), cli.broker.as_deref())?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Devices {
            site,
            json,
            watch,
            wait,
        } => {
            let mut view = Watch::open(&broker(&cli)?, false)?;
            loop {
                view.poll(*wait)?;
                let now = SystemTime::now();
                let rows: Vec<DeviceRow> = view
                    .devices
                    .values()
                    .filter(|v| site.as_deref().is_none_or(|s| s == v.site))
                    .map(|v| DeviceRow::of(v, now))
                    .collect();
                if *json {
                    println!("{}", serde_json::to_string(&rows)?);
                } else {
                    if *watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", devices::table(&rows));
                }
                if !*watch {
                    view.close();
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Command::Config {
            action:
                ConfigAction::Set {
                    pairs,
                    change,
                    targets,
                },
        } => {
            let change = match change {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| FleetError::Usage(format!("--change is not JSON: {e}")))?,
                None => control::change_from_pairs(pairs)?,
            };
            request(&cli, targets, &Request::Config(change))
        }
        Command::Model {
            action:
                ModelAction::Push {
                    bundle,
                    canary,
                    max_failures,
                    rate_kib,
                    targets,
                },
        } => {
            let offered = Offered::load(bundle, &push::job_id())?;
            eprintln!(
                "bundle {} ({} bytes), job {}",
                offered.bundle,
                offered.bytes_total(),
                offered.offer.job
            );
            let options = PushOptions {
                canary: *canary,
                max_failures: *max_failures,
                timeout: targets.timeout,
                rate_bytes_per_s: rate_kib.saturating_mul(1024),
            };
            let results = push::push(&broker(&cli)?, &targets.targets(), &offered, &options)?;
            if targets.json {
                for r in &results {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", push::lines(&results));
            }
            let all_ok = !results.is_empty()
                && results
                    .iter()
                    .all(|r| matches!(r.outcome, PushOutcome::Succeeded { .. }));
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Cmd { command, targets } => {
            request(&cli, targets, &Request::Command(command.clone()))
        }
        Command::Ingest {
            database,
            group,
            client_id,
            batch_max,
            batch_wait,
        } => {
            let broker = broker(&cli)?;
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("cannot install the signal handlers")?;
            }
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let options = IngestOptions {
                database: database.clone(),
                group: group.clone(),
                client_id: client_id
                    .clone()
                    .unwrap_or_else(|| format!("caer-ingest-{group}-{}", host.trim())),
                batch_max: *batch_max,
                batch_wait: *batch_wait,
            };
            let stored = ingest::run(&broker, &options, stop)?;
            println!(
                "{}",
                serde_json::json!({"records": stored.records, "duplicates": stored.duplicates,
                                   "rejected": stored.rejected, "updates": stored.updates})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle { action } => {
            match action {
                BundleAction::Keygen { out } => {
                    let public = signing::keygen(out)?;
                    println!("{public}");
                    eprintln!(
                        "private key: {}; model.trusted_keys = [\"{public}\"]",
                        out.display()
                    );
                }
                BundleAction::Sign { key, path } => {
                    let (written, public) = signing::sign(key, path)?;
                    println!("{}", written.display());
                    eprintln!("signed by {public}");
                }
                BundleAction::Verify { trusted, path } => {
                    signing::verify(trusted, path)?;
                    println!("ok");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gaps { database, site } => {
            let gaps = Store::connect(database)?.gaps(site.as_deref())?;
            for g in &gaps {
                println!(
                    "{}/{}: seq {}..={} missing",
                    g.site, g.device, g.first_missing, g.last_missing
                );
            }
            Ok(if gaps.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Report {
            database,
            site,
            room,
            from,
            to,
            out,
        } => {
            let rows = Store::connect(database)?.report_rows(site, room.as_deref(), *from, *to)?;
            let title = format!(
                "engaged ratio, {site}{}",
                room.as_ref().map(|r| format!(" / {r}")).unwrap_or_default()
            );
            let (text, path) = match out {
                Some(path) if path.extension().is_some_and(|e| e == "svg") => {
                    (report::svg(&rows, &title), Some(path))
                }
                Some(path) if path.extension().is_some_and(|e| e == "csv") => {
                    (report::csv(&rows), Some(path))
                }
                Some(path) if path.extension().is_some_and(|e| e == "png") => {
                    report::png(&rows, &title, path).map_err(|reason| FleetError::Write {
                        what: path.display().to_string(),
                        source: std::io::Error::other(reason),
                    })?;
                    eprintln!("{} records", rows.len());
                    return Ok(ExitCode::SUCCESS);
                }
                Some(path) => {
                    return Err(FleetError::Usage(format!(
                        "--out {}: the name must end in .csv, .svg or .png",
                        path.display()
                    ))
                    .into())
                }
                None => (report::csv(&rows), None),
            };
            match path {
                Some(path) => std::fs::write(path, text).map_err(|source| FleetError::Write {
                    what: path.display().to_string(),
                    source,
                })?,
                None => print!("{text}"),
            }
            eprintln!("{} records", rows.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn request(cli: &Cli, args: &TargetArgs, request: &Request) -> anyhow::Result<ExitCode> {
    let results = control::send(&broker(cli)?, &args.targets(), request, args.timeout)?;
    if args.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", control::lines(&results));
    }
    if results.is_empty() {
        eprintln!("caer-fleet: no device matches");
        return Ok(ExitCode::from(1));
    }
    let all_ok = results.iter().all(|r| r.outcome == Outcome::Ok);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

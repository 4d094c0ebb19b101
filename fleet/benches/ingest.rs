//! How many engagement records per second one `caer-fleet ingest` stores here: PostgreSQL
//! and mosquitto started as in the tests, the release `caer-fleet` binary, N records from
//! 30 simulated devices published as fast as the broker takes them (QoS 1), timed from the
//! first publish until the last record is committed. PostgreSQL runs with its durable
//! defaults here (fsync on, synchronous commit), unlike in the tests.
//!
//! `cargo bench -p caer-fleet --bench ingest -- [records] [ingesters]` (default 20000 1).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{wait_until, Broker, Ingester, Postgres};

fn record(device: usize, seq: usize) -> Vec<u8> {
    let minute = seq % 60;
    json!({
        "schema": "caer.engagement.v2", "seq": seq, "site": "bench", "room": format!("r{}", device % 10),
        "device": format!("dev-{device}"),
        "interval_start": format!("2026-12-01T{:02}:{minute:02}:00Z", 8 + (seq / 60) % 12),
        "interval_end": format!("2026-12-01T{:02}:{minute:02}:59Z", 8 + (seq / 60) % 12),
        "profile": "coarse", "model_id": "bench", "min_group_size": 5, "suppressed": false,
        "students": 28, "assessed": 26, "tracks_seen": 31, "frames_analysed": 600, "coverage": 1.0,
        "engagement": {"engaged": 20, "distracted": 6, "engaged_ratio": 0.7692,
            "distracted_ratio": 0.2308, "mean_engaged_probability": 0.71, "confidence": 0.83}
    })
    .to_string()
    .into_bytes()
}

fn count(db: &mut postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM engagement WHERE site = 'bench'", &[])
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let records = args.first().copied().unwrap_or(20_000);
    let ingesters = args.get(1).copied().unwrap_or(1);
    let devices = 30;
    let pg = Postgres::start_durable();
    let broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let _ingesters: Vec<Ingester> = (0..ingesters)
        .map(|i| Ingester::start(&broker, &pg.url(), &format!("bench-{i}"), logs.path()))
        .collect();
    let mut db = pg.client();

    let mut options = rumqttc::MqttOptions::new("bench-publisher", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(256);
    let (client, mut connection) = rumqttc::Client::new(options, 1024);
    let acked = Arc::new(AtomicUsize::new(0));
    let acked_by_broker = Arc::clone(&acked);
    thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked_by_broker.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                // The broker goes away at the end of the run.
                Err(_) => return,
            }
        }
    });
    // Probes until one is stored: then the shared subscription is in place.
    let mut probes = 0;
    wait_until(Duration::from_secs(30), "a probe stored", || {
        probes += 1;
        let probe = json!({"schema": "caer.engagement.v2", "seq": probes, "site": "probe",
            "room": "r", "device": "p", "interval_start": "2026-12-01T08:00:00Z",
            "interval_end": "2026-12-01T08:01:00Z", "profile": "presence", "min_group_size": 2,
            "suppressed": true, "suppression_reason": "below_min_group_size"});
        client
            .publish(
                "caer/probe/p/engagement",
                rumqttc::QoS::AtLeastOnce,
                false,
                probe.to_string(),
            )
            .unwrap();
        let stored: i64 = db
            .query_one("SELECT count(*) FROM engagement", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        stored > 0
    });
    wait_until(Duration::from_secs(30), "the probes acked", || {
        acked.load(Ordering::Relaxed) == probes
    });
    let start = Instant::now();
    for n in 0..records {
        let device = n % devices;
        let seq = n / devices;
        client
            .publish(
                format!("caer/bench/dev-{device}/engagement"),
                rumqttc::QoS::AtLeastOnce,
                false,
                record(device, seq),
            )
            .unwrap();
    }
    wait_until(Duration::from_secs(600), "the broker's acks", || {
        acked.load(Ordering::Relaxed) == probes + records
    });
    let published = start.elapsed();
    let target = records as i64;
    wait_until(Duration::from_secs(600), "every record stored", || {
        count(&mut db) >= target
    });
    let stored = start.elapsed();
    let dup: i64 = db
        .query_one(
            "SELECT count(*) - count(DISTINCT (device, seq)) FROM engagement WHERE site = 'bench'",
            &[],
        )
        .unwrap()
        .get(0);
    println!(
        "{records} records, {devices} devices, {ingesters} ingester(s): published (broker acks) in \
         {:.2} s = {:.0} records/s; all stored in {:.2} s = {:.0} records/s stored; duplicates {dup}",
        published.as_secs_f64(),
        records as f64 / published.as_secs_f64(),
        stored.as_secs_f64(),
        records as f64 / stored.as_secs_f64()
    );
}

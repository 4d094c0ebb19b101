//! Outages: the broker stopped mid-run and started again, and caerd killed with SIGKILL and
//! restarted. Every aggregate sequence number must arrive; duplicates (at-least-once) are
//! allowed and removed by `seq`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use caer_e2e::{config_toml, engagement_seqs, Broker, Daemon, Schemas, Subscriber};

const CAERD: &str = env!("CARGO_BIN_EXE_caerd-e2e");

/// An endless synthetic classroom; the presence profile (no model) keeps the records
/// coming every second whatever the machine's speed.
fn endless_config(dir: &Path, broker: &Broker) -> std::path::PathBuf {
    let source = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";
    let extra = "[policy]\nprofile = \"presence\"\nmin_group_size = 2\n\n[report]\ninterval_secs = 1\nstats_interval_secs = 5\n";
    let path = dir.join("caerd.toml");
    std::fs::write(
        &path,
        config_toml(&dir.join("state"), Some(&broker.url()), source, extra),
    )
    .unwrap();
    path
}

fn max_seq(subscriber: &Subscriber) -> Option<u64> {
    engagement_seqs(&subscriber.messages()).0.last().copied()
}

/// Checks that every recorded sequence number arrived, prints the figures.
fn report(name: &str, recorded: &BTreeSet<u64>, subscriber: &Subscriber, schemas: &Schemas) {
    let messages = subscriber.wait_for(Duration::from_secs(20), "every recorded record", |m| {
        recorded.is_subset(&engagement_seqs(m).0)
    });
    let (received, duplicates) = engagement_seqs(&messages);
    for m in messages.iter().filter(|m| m.topic.ends_with("/engagement")) {
        schemas.check(&m.json());
    }
    let lost: Vec<u64> = recorded.difference(&received).copied().collect();
    let sent = recorded.len();
    println!(
        "{name}: sent {sent}, received {} unique (+{duplicates} duplicates), lost {}",
        received.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "{name}: lost {lost:?}");
    // A fresh outbox numbers from the wall clock (ms); from there on, one per record.
    let first = *recorded.first().expect("records");
    let expected: BTreeSet<u64> = (first..first + sent as u64).collect();
    assert_eq!(
        recorded, &expected,
        "{name}: sequence numbers are consecutive, without gaps"
    );
}

#[test]
fn broker_outage_loses_no_record() {
    let schemas = Schemas::load();
    let mut broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = endless_config(dir.path(), &broker);
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    subscriber.wait_for(Duration::from_secs(30), "the first records", |m| {
        engagement_seqs(m).0.len() >= 2
    });

    broker.stop();
    let before = max_seq(&subscriber).unwrap();
    std::thread::sleep(Duration::from_secs(4)); // about 4 records go to the outbox only
    assert!(
        daemon.is_running(),
        "caerd must survive the outage:\n{}",
        daemon.stderr()
    );
    broker.restart();
    subscriber.wait_for(Duration::from_secs(30), "records after the outage", |m| {
        engagement_seqs(m)
            .0
            .last()
            .is_some_and(|s| *s >= before + 7)
    });
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    let recorded = daemon.recorded_seqs();
    assert!(recorded.len() >= 8, "{recorded:?}");
    assert!(
        daemon.stderr().contains("lost the broker connection"),
        "the outage was noticed"
    );
    report("broker outage", &recorded, &subscriber, &schemas);
}

#[test]
fn sigkill_and_restart_loses_no_record_and_keeps_counting() {
    let schemas = Schemas::load();
    let mut broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = endless_config(dir.path(), &broker);

    let mut first = Daemon::start(CAERD, dir.path(), &config, &[]);
    subscriber.wait_for(Duration::from_secs(30), "the first records", |m| {
        engagement_seqs(m).0.len() >= 2
    });
    // Take the broker away so that records pile up unacknowledged in the outbox, then
    // kill caerd without warning: only the disk remembers them.
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    first.kill9();
    let first_recorded = first.recorded_seqs();
    broker.restart();

    let mut second = Daemon::start(CAERD, dir.path(), &config, &[]);
    let last_first = *first_recorded.last().unwrap();
    subscriber.wait_for(Duration::from_secs(30), "records of the second run", |m| {
        engagement_seqs(m)
            .0
            .last()
            .is_some_and(|s| *s >= last_first + 3)
    });
    assert!(
        second.terminate(Duration::from_secs(30)).success(),
        "{}",
        second.stderr()
    );
    let second_recorded = second.recorded_seqs();
    assert!(
        second_recorded.first().is_some_and(|s| *s > last_first),
        "the sequence continues after a restart: first run ended at {last_first}, second started at {:?}",
        second_recorded.first()
    );
    assert!(
        second.stderr().contains("outbox recovered"),
        "{}",
        second.stderr()
    );
    let recorded: BTreeSet<u64> = first_recorded.union(&second_recorded).copied().collect();
    report("sigkill + restart", &recorded, &subscriber, &schemas);
}

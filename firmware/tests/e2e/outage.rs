//! Outages: the broker stopped mid-run and started again, and caerd killed with SIGKILL and
//! restarted. Every aggregate sequence number must arrive; duplicates (at-least-once) are
//! allowed and removed by `seq`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::util::{
    config_toml, engagement_seqs, ledger_next_seq, wait_for_ledger, wait_for_seq, Broker, Daemon,
    Schemas, Subscriber, CAERD,
};

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
    let state = dir.path().join("state");
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    let first = wait_for_ledger(&state);
    subscriber.wait_for(Duration::from_secs(30), "the first records", |m| {
        engagement_seqs(m).0.len() >= 2
    });

    broker.stop();
    let before = max_seq(&subscriber).unwrap();
    // About 4 records go to the outbox only.
    wait_for_seq(&state, before + 4, Duration::from_secs(30));
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
    // The outage was noticed: a second connection.
    subscriber.wait_for(Duration::from_secs(30), "stats after the outage", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/stats"))
            .any(|m| m.json()["mqtt_connects_total"].as_u64() >= Some(2))
    });
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.stderr());
    let recorded: BTreeSet<u64> = (first..ledger_next_seq(&state).unwrap()).collect();
    assert!(recorded.len() >= 8, "{recorded:?}");
    report("broker outage", &recorded, &subscriber, &schemas);
}

#[test]
fn sigkill_and_restart_loses_no_record_and_keeps_counting() {
    let schemas = Schemas::load();
    let mut broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = endless_config(dir.path(), &broker);

    let state = dir.path().join("state");
    let mut first = Daemon::start(CAERD, dir.path(), &config, &[]);
    let start = wait_for_ledger(&state);
    subscriber.wait_for(Duration::from_secs(30), "the first records", |m| {
        engagement_seqs(m).0.len() >= 2
    });
    // Take the broker away so that records pile up unacknowledged in the outbox, then
    // kill caerd without warning: only the disk remembers them.
    broker.stop();
    let before = max_seq(&subscriber).unwrap();
    wait_for_seq(&state, before + 3, Duration::from_secs(30));
    first.kill9();
    let first_recorded: BTreeSet<u64> = (start..ledger_next_seq(&state).unwrap()).collect();
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
    // The sequence continues after the restart, where the first run left it.
    let second_recorded: BTreeSet<u64> =
        (last_first + 1..ledger_next_seq(&state).unwrap()).collect();
    assert!(second_recorded.len() >= 3, "{second_recorded:?}");
    let recorded: BTreeSet<u64> = first_recorded.union(&second_recorded).copied().collect();
    report("sigkill + restart", &recorded, &subscriber, &schemas);
}

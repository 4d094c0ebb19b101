//! The PostgreSQL side: versioned migrations, and each batch of checked messages stored in
//! one transaction. Records are inserted (one statement per batch) with `ON CONFLICT DO
//! NOTHING` on their primary key
//! `(site, device, seq)`, so a record delivered twice (MQTT is at least once) is stored once.

use std::time::Duration;

use postgres::{Client, NoTls, Transaction};

use crate::check::{Incoming, Record};
use crate::error::FleetError;

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "engagement, rejected, device_latest, engagement_gaps",
    include_str!("../migrations/0001_records.sql"),
)];

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// New records.
    pub records: u64,
    /// Records already stored (redeliveries).
    pub duplicates: u64,
    /// Messages stored in `rejected`.
    pub rejected: u64,
    /// Status and stats updates.
    pub updates: u64,
}

impl std::ops::AddAssign for Stored {
    fn add_assign(&mut self, o: Stored) {
        self.records += o.records;
        self.duplicates += o.duplicates;
        self.rejected += o.rejected;
        self.updates += o.updates;
    }
}

/// A database connection with the schema in place.
pub struct Store {
    client: Client,
}

impl Store {
    /// Connects (with a 10 s timeout) and applies the migrations not yet applied.
    pub fn connect(url: &str) -> Result<Store, FleetError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| FleetError::Usage(format!("--database is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("caer-fleet");
        let client = config.connect(NoTls)?;
        let mut store = Store { client };
        store.migrate()?;
        Ok(store)
    }

    /// Whether the connection is gone (then a new [`Store::connect`] is needed).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies every migration not yet applied, under an advisory lock so that several
    /// ingesters starting together apply each once. Returns how many were applied.
    pub fn migrate(&mut self) -> Result<usize, FleetError> {
        let mut applied = 0;
        for (version, name, sql) in MIGRATIONS {
            let mut tx = self.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(727001)", &[])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS caer_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM caer_migrations WHERE version = $1",
                    &[version],
                )?
                .is_some();
            if !done {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO caer_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )?;
                applied += 1;
            }
            tx.commit()?;
        }
        Ok(applied)
    }

    /// Stores a batch in one transaction. When the database refuses one message (rather
    /// than the connection failing), the batch is stored message by message and the one it
    /// refuses goes to `rejected` with the database's reason, so that no message can block
    /// the others.
    pub fn store(&mut self, batch: &[&Incoming]) -> Result<Stored, postgres::Error> {
        match self.store_in_one(batch) {
            Ok(stored) => Ok(stored),
            Err(_) if !self.client.is_closed() && batch.len() > 1 => {
                let mut total = Stored::default();
                for item in batch {
                    total += self.store_one(item)?;
                }
                Ok(total)
            }
            Err(e) if !self.client.is_closed() => self.store_one_refused(batch[0], &e),
            Err(e) => Err(e),
        }
    }

    fn store_one(&mut self, item: &Incoming) -> Result<Stored, postgres::Error> {
        match self.store_in_one(&[item]) {
            Err(e) if !self.client.is_closed() => self.store_one_refused(item, &e),
            other => other,
        }
    }

    fn store_one_refused(
        &mut self,
        item: &Incoming,
        error: &postgres::Error,
    ) -> Result<Stored, postgres::Error> {
        let (topic, payload) = match item {
            Incoming::Record(r) => (
                crate::topic::device_topic(&r.site, &r.device, "engagement"),
                r.json.to_string().into_bytes(),
            ),
            Incoming::Status {
                site, device, json, ..
            } => (
                crate::topic::device_topic(site, device, "status"),
                json.to_string().into_bytes(),
            ),
            Incoming::Stats { site, device, json } => (
                crate::topic::device_topic(site, device, "stats"),
                json.to_string().into_bytes(),
            ),
            Incoming::Rejected { topic, payload, .. } => (topic.clone(), payload.clone()),
            Incoming::Ignored => return Ok(Stored::default()),
        };
        let refused = Incoming::Rejected {
            topic,
            payload,
            reason: format!("the database refused it: {error}"),
        };
        self.store_in_one(&[&refused])
    }

    fn store_in_one(&mut self, batch: &[&Incoming]) -> Result<Stored, postgres::Error> {
        let mut tx = self.client.transaction()?;
        let mut stored = Stored::default();
        let records: Vec<&Record> = batch
            .iter()
            .filter_map(|i| match i {
                Incoming::Record(r) => Some(r.as_ref()),
                _ => None,
            })
            .collect();
        if !records.is_empty() {
            let inserted = insert_records(&mut tx, &records)?;
            stored.records += inserted;
            stored.duplicates += records.len() as u64 - inserted;
        }
        for item in batch {
            store_other(&mut tx, item, &mut stored)?;
        }
        tx.commit()?;
        Ok(stored)
    }

    /// The sequence numbers missing between stored records, per device.
    pub fn gaps(&mut self, site: Option<&str>) -> Result<Vec<Gap>, FleetError> {
        let rows = self.client.query(
            "SELECT site, device, first_missing, last_missing FROM engagement_gaps
             WHERE $1::text IS NULL OR site = $1 ORDER BY site, device, first_missing",
            &[&site],
        )?;
        Ok(rows
            .iter()
            .map(|r| Gap {
                site: r.get(0),
                device: r.get(1),
                first_missing: r.get(2),
                last_missing: r.get(3),
            })
            .collect())
    }

    /// The records of a room (or a whole site) between two times, in time order.
    pub fn report_rows(
        &mut self,
        site: &str,
        room: Option<&str>,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
    ) -> Result<Vec<ReportRow>, FleetError> {
        let rows = self.client.query(
            "SELECT device, room, interval_start, interval_end, suppressed, students, assessed,
                    engaged_ratio, seq
             FROM engagement
             WHERE site = $1 AND ($2::text IS NULL OR room = $2)
               AND interval_start >= $3 AND interval_start < $4
             ORDER BY interval_start, device",
            &[&site, &room, &from, &to],
        )?;
        Ok(rows
            .iter()
            .map(|r| ReportRow {
                device: r.get(0),
                room: r.get(1),
                interval_start: r.get(2),
                interval_end: r.get(3),
                suppressed: r.get(4),
                students: r.get(5),
                assessed: r.get(6),
                engaged_ratio: r.get(7),
                seq: r.get(8),
            })
            .collect())
    }

    /// The client, for queries of the tests and the bench.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Inserts the records of a batch in one statement (one round trip: the columns as
/// arrays, `unnest`ed); returns how many were new.
fn insert_records(tx: &mut Transaction<'_>, records: &[&Record]) -> Result<u64, postgres::Error> {
    fn column<T: Clone>(records: &[&Record], f: impl Fn(&Record) -> T) -> Vec<T> {
        records.iter().map(|r| f(r)).collect()
    }
    tx.execute(
        "INSERT INTO engagement (site, device, seq, room, interval_start, interval_end,
             profile, suppressed, students, assessed, engaged_ratio, model_id, record)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[],
             $5::timestamptz[], $6::timestamptz[], $7::text[], $8::boolean[], $9::integer[],
             $10::integer[], $11::double precision[], $12::text[], $13::jsonb[])
         ON CONFLICT (site, device, seq) DO NOTHING",
        &[
            &column(records, |r| r.site.clone()),
            &column(records, |r| r.device.clone()),
            &column(records, |r| r.seq),
            &column(records, |r| r.room.clone()),
            &column(records, |r| r.interval_start),
            &column(records, |r| r.interval_end),
            &column(records, |r| r.profile.clone()),
            &column(records, |r| r.suppressed),
            &column(records, |r| r.students),
            &column(records, |r| r.assessed),
            &column(records, |r| r.engaged_ratio),
            &column(records, |r| r.model_id.clone()),
            &column(records, |r| r.json.clone()),
        ],
    )
}

/// Status, stats and rejected messages (records are in [`insert_records`]).
fn store_other(
    tx: &mut Transaction<'_>,
    item: &Incoming,
    stored: &mut Stored,
) -> Result<(), postgres::Error> {
    match item {
        Incoming::Status {
            site,
            device,
            room,
            json,
        } => {
            tx.execute(
                "INSERT INTO device_latest (site, device, room, status, status_at)
                 VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (site, device) DO UPDATE
                 SET room = EXCLUDED.room, status = EXCLUDED.status, status_at = now()",
                &[site, device, room, json],
            )?;
            stored.updates += 1;
        }
        Incoming::Stats { site, device, json } => {
            tx.execute(
                "INSERT INTO device_latest (site, device, stats, stats_at)
                 VALUES ($1, $2, $3, now())
                 ON CONFLICT (site, device) DO UPDATE
                 SET stats = EXCLUDED.stats, stats_at = now()",
                &[site, device, json],
            )?;
            stored.updates += 1;
        }
        Incoming::Rejected {
            topic,
            payload,
            reason,
        } => {
            tx.execute(
                "INSERT INTO rejected (topic, payload, reason) VALUES ($1, $2, $3)
                 ON CONFLICT (topic, md5(payload)) DO NOTHING",
                &[topic, payload, reason],
            )?;
            stored.rejected += 1;
        }
        Incoming::Record(_) | Incoming::Ignored => {}
    }
    Ok(())
}

/// Missing sequence numbers of one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// Site.
    pub site: String,
    /// Device.
    pub device: String,
    /// First missing `seq`.
    pub first_missing: i64,
    /// Last missing `seq`.
    pub last_missing: i64,
}

/// One stored record, as reports use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Device.
    pub device: String,
    /// Room.
    pub room: String,
    /// Interval start.
    pub interval_start: std::time::SystemTime,
    /// Interval end.
    pub interval_end: std::time::SystemTime,
    /// Whether the figures were suppressed.
    pub suppressed: bool,
    /// Headcount.
    pub students: Option<i32>,
    /// Assessed students.
    pub assessed: Option<i32>,
    /// Engaged ratio.
    pub engaged_ratio: Option<f64>,
    /// The device's `seq`.
    pub seq: i64,
}

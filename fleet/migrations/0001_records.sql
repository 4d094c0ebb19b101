-- Engagement records, exactly once: the primary key is the device's sequence number.
CREATE TABLE engagement (
    site            text        NOT NULL,
    device          text        NOT NULL,
    seq             bigint      NOT NULL,
    room            text        NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_end    timestamptz NOT NULL,
    profile         text        NOT NULL,
    suppressed      boolean     NOT NULL,
    students        integer,
    assessed        integer,
    engaged_ratio   double precision,
    model_id        text,
    record          jsonb       NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, device, seq)
);
CREATE INDEX engagement_by_room ON engagement (site, room, interval_start);

-- Messages that failed the checks: kept as received, with the reason, never in engagement.
CREATE TABLE rejected (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- A redelivered bad message is kept once.
CREATE UNIQUE INDEX rejected_once ON rejected (topic, md5(payload));

-- The latest status and stats of each device (the fleet view).
CREATE TABLE device_latest (
    site      text        NOT NULL,
    device    text        NOT NULL,
    room      text,
    status    jsonb,
    status_at timestamptz,
    stats     jsonb,
    stats_at  timestamptz,
    PRIMARY KEY (site, device)
);

-- Gaps in each device's sequence numbers: records never stored (yet).
CREATE VIEW engagement_gaps AS
SELECT site, device, previous + 1 AS first_missing, seq - 1 AS last_missing
FROM (
    SELECT site, device, seq, lag(seq) OVER (PARTITION BY site, device ORDER BY seq) AS previous
    FROM engagement
) AS ordered
WHERE previous IS NOT NULL AND seq > previous + 1;

//! Schema and migrations, keyed by `PRAGMA user_version`. Each step runs in its own
//! transaction; a database from a newer version is refused rather than guessed at.

use rusqlite::Connection;

use super::StoreError;

/// A migration step: SQL, or code where SQL alone cannot say it.
enum Step {
    Sql(&'static str),
    Code(fn(&Connection) -> Result<(), StoreError>),
}

/// The migrations, in order. Index + 1 is the version a step produces.
const MIGRATIONS: &[Step] = &[
    // 1: the receiver: accounts (transmitters) and every frame received.
    Step::Sql(
        r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('accounts_generation', '0');

    -- One row per transmitter account (panel path). receiver/line '' mean "any".
    CREATE TABLE accounts (
        id                    INTEGER PRIMARY KEY,
        account               TEXT NOT NULL,
        receiver              TEXT NOT NULL DEFAULT '',
        line                  TEXT NOT NULL DEFAULT '',
        dc09_key              BLOB,
        key_format            TEXT CHECK (key_format IN ('hex', 'ascii')),
        require_encryption    INTEGER NOT NULL DEFAULT 0,
        quirk_crc_binary      INTEGER NOT NULL DEFAULT 0,
        quirk_cr_in_crc       INTEGER NOT NULL DEFAULT 0,
        quirk_trailing_nul    INTEGER NOT NULL DEFAULT 0,
        check_plain_timestamp INTEGER NOT NULL DEFAULT 0,
        ack_separator         INTEGER NOT NULL DEFAULT 0,
        enabled               INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account, receiver, line),
        CHECK ((dc09_key IS NULL) = (key_format IS NULL)),
        CHECK (require_encryption = 0 OR dc09_key IS NOT NULL)
    );

    -- Last valid traffic per account (supervision).
    CREATE TABLE account_status (
        account_id    INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        last_seen_ms  INTEGER NOT NULL
    );

    -- Every frame (and every run of garbage) a panel sent, with what we answered.
    CREATE TABLE frames (
        id            INTEGER PRIMARY KEY,
        received_ms   INTEGER NOT NULL,
        transport     TEXT NOT NULL CHECK (transport IN ('tcp', 'udp')),
        peer          TEXT NOT NULL,
        raw           BLOB NOT NULL,
        outcome       TEXT NOT NULL CHECK (outcome IN ('accepted', 'retransmission', 'refused', 'silent', 'garbage')),
        reason        TEXT,
        detail        TEXT,
        token         TEXT,
        encrypted     INTEGER,
        account       TEXT,
        receiver      TEXT,
        line          TEXT,
        seq           INTEGER,
        account_id    INTEGER,
        skew_s        INTEGER,
        response      BLOB,
        response_kind TEXT,
        duplicate_of  INTEGER,
        dedupe_key    BLOB
    );

    -- Every event of every accepted frame.
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        frame_id      INTEGER NOT NULL REFERENCES frames(id),
        received_ms   INTEGER NOT NULL,
        account       TEXT NOT NULL,
        account_id    INTEGER,
        receiver      TEXT,
        line          TEXT,
        seq           INTEGER NOT NULL,
        code_format   TEXT NOT NULL CHECK (code_format IN ('sia', 'cid')),
        code          TEXT NOT NULL,
        qualifier     TEXT NOT NULL,
        category      TEXT,
        kind          TEXT,
        priority      INTEGER,
        description   TEXT NOT NULL,
        zone          TEXT,
        user_no       TEXT,
        area          TEXT,
        text          TEXT,
        occurred_ms   INTEGER,
        sent_ms       INTEGER,
        old           INTEGER NOT NULL DEFAULT 0,
        xdata         TEXT
    );
    CREATE INDEX events_by_account ON events (account, id);
    "#,
    ),
    // 2: customer records, alarms and supervision. No table here (or anywhere) has a place for
    // a panel's keypad code: the ARC never knows it.
    Step::Sql(
        r#"
    CREATE TABLE customers (
        id         INTEGER PRIMARY KEY,
        ref        TEXT NOT NULL UNIQUE,
        public_id  TEXT NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        notes      TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE sites (
        id               INTEGER PRIMARY KEY,
        ref              TEXT NOT NULL UNIQUE,
        public_id        TEXT NOT NULL UNIQUE,
        customer_id      INTEGER NOT NULL REFERENCES customers(id),
        name             TEXT NOT NULL DEFAULT '',
        address          TEXT NOT NULL,
        postcode         TEXT NOT NULL DEFAULT '',
        city             TEXT NOT NULL DEFAULT '',
        responder_notes  TEXT NOT NULL DEFAULT '',
        armed_state      TEXT NOT NULL DEFAULT 'unknown' CHECK (armed_state IN ('armed', 'disarmed', 'unknown')),
        armed_changed_ms INTEGER,
        armed_by_user    TEXT
    );
    CREATE INDEX sites_by_customer ON sites (customer_id);

    ALTER TABLE accounts ADD COLUMN site_id INTEGER REFERENCES sites(id);
    ALTER TABLE accounts ADD COLUMN path TEXT NOT NULL DEFAULT 'primary';
    ALTER TABLE accounts ADD COLUMN ats_category TEXT;
    ALTER TABLE accounts ADD COLUMN supervision_secs INTEGER CHECK (supervision_secs IS NULL OR supervision_secs > 0);
    ALTER TABLE accounts ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX accounts_by_site ON accounts (site_id);

    CREATE TABLE zones (
        site_id      INTEGER NOT NULL REFERENCES sites(id),
        number       TEXT NOT NULL,
        description  TEXT NOT NULL,
        zone_type    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (site_id, number)
    );

    -- Panel users: number, name and role only. The keypad code stays in the panel.
    CREATE TABLE panel_users (
        site_id  INTEGER NOT NULL REFERENCES sites(id),
        number   TEXT NOT NULL,
        name     TEXT NOT NULL,
        role     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (site_id, number)
    );

    CREATE TABLE contacts (
        id          INTEGER PRIMARY KEY,
        ref         TEXT NOT NULL UNIQUE,
        public_id   TEXT NOT NULL UNIQUE,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        name        TEXT NOT NULL,
        phones      TEXT NOT NULL DEFAULT '[]',
        call_order  INTEGER NOT NULL DEFAULT 1,
        may_cancel  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX contacts_by_customer ON contacts (customer_id, call_order);

    -- Procedure steps per event category; customer_id NULL is the default set.
    CREATE TABLE procedure_steps (
        customer_id  INTEGER REFERENCES customers(id),
        category     TEXT NOT NULL,
        step         INTEGER NOT NULL,
        instruction  TEXT NOT NULL
    );
    CREATE UNIQUE INDEX procedure_steps_key ON procedure_steps (ifnull(customer_id, 0), category, step);

    -- Priority per category; customer_id NULL is the global rule. Without a rule the code
    -- table's default priority applies.
    CREATE TABLE priority_rules (
        customer_id  INTEGER REFERENCES customers(id),
        category     TEXT NOT NULL,
        priority     INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 9)
    );
    CREATE UNIQUE INDEX priority_rules_key ON priority_rules (ifnull(customer_id, 0), category);

    CREATE TABLE alarms (
        id                 INTEGER PRIMARY KEY,
        public_id          TEXT NOT NULL UNIQUE,
        queue              TEXT NOT NULL CHECK (queue IN ('operator', 'supervisor')),
        site_id            INTEGER REFERENCES sites(id),
        account_id         INTEGER REFERENCES accounts(id),
        account            TEXT NOT NULL,
        join_key           TEXT NOT NULL,
        category           TEXT,
        priority           INTEGER NOT NULL,
        title              TEXT NOT NULL,
        zone               TEXT,
        area               TEXT,
        state              TEXT NOT NULL DEFAULT 'new'
                           CHECK (state IN ('new', 'acknowledged', 'in_progress', 'closed')),
        opened_ms          INTEGER NOT NULL,
        last_event_ms      INTEGER NOT NULL,
        event_count        INTEGER NOT NULL DEFAULT 0,
        restored_ms        INTEGER,
        escalated_ms       INTEGER,
        acknowledged_ms    INTEGER,
        acknowledged_by    TEXT,
        in_progress_ms     INTEGER,
        in_progress_by     TEXT,
        closed_ms          INTEGER,
        closed_by          TEXT,
        disposition        TEXT,
        keypad_factor_ms   INTEGER,
        keypad_factor_user TEXT,
        phone_factor_ms    INTEGER,
        phone_factor_contact INTEGER REFERENCES contacts(id),
        duress             INTEGER NOT NULL DEFAULT 0
    );
    -- At most one open alarm per site and zone (join_key): a flood of events joins it. Alarms
    -- without a site carry the account in their join_key.
    CREATE UNIQUE INDEX alarms_one_open ON alarms (ifnull(site_id, -1), join_key) WHERE state <> 'closed';
    CREATE INDEX alarms_open_by_queue ON alarms (state, queue, priority, opened_ms);
    CREATE INDEX alarms_by_site ON alarms (site_id, state);

    CREATE TABLE alarm_events (
        alarm_id  INTEGER NOT NULL REFERENCES alarms(id),
        event_id  INTEGER NOT NULL REFERENCES events(id),
        PRIMARY KEY (alarm_id, event_id)
    ) WITHOUT ROWID;

    -- Every change to an alarm: who, when, what.
    CREATE TABLE alarm_log (
        id        INTEGER PRIMARY KEY,
        alarm_id  INTEGER NOT NULL REFERENCES alarms(id),
        at_ms     INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        detail    TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alarm_log_by_alarm ON alarm_log (alarm_id, id);
    "#,
    ),
    // 3: phone cancellation codes (src/verify) and the audit log. A code is stored only as an
    // Argon2id PHC string keyed with a pepper that lives outside the database; there is no
    // column for a plaintext, masked or reversible code, nor for a panel's keypad code.
    Step::Sql(
        r#"
    -- The verifiers: at most one cancellation and one duress code per contact.
    CREATE TABLE code_verifiers (
        contact_id      INTEGER NOT NULL REFERENCES contacts(id),
        kind            TEXT NOT NULL CHECK (kind IN ('cancel', 'duress')),
        argon2_phc      TEXT NOT NULL CHECK (argon2_phc LIKE '$argon2id$%'),
        pepper_id       TEXT NOT NULL,
        set_ms          INTEGER NOT NULL,
        set_by          TEXT NOT NULL,
        -- Set by a bulk invalidation: the code answers "invalidated" until it is set again.
        invalidated_ms  INTEGER,
        PRIMARY KEY (contact_id, kind)
    ) WITHOUT ROWID;

    -- Consecutive rejected verifications per contact (persisted: a restart forgets nothing).
    CREATE TABLE code_failures (
        contact_id   INTEGER PRIMARY KEY REFERENCES contacts(id),
        consecutive  INTEGER NOT NULL DEFAULT 0,
        last_ms      INTEGER NOT NULL
    );

    -- Phone cancellation locked per customer, until a supervisor resets the code.
    CREATE TABLE code_lockouts (
        customer_id  INTEGER PRIMARY KEY REFERENCES customers(id),
        locked_ms    INTEGER NOT NULL,
        contact_id   INTEGER REFERENCES contacts(id)
    );

    -- Every verification attempt (never the candidate): the per-operator counters read it.
    CREATE TABLE code_attempts (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        operator    TEXT NOT NULL,
        alarm_id    INTEGER NOT NULL REFERENCES alarms(id),
        contact_id  INTEGER REFERENCES contacts(id),
        verdict     TEXT NOT NULL CHECK (verdict IN ('accepted', 'duress', 'rejected', 'locked', 'invalidated'))
    );
    CREATE INDEX code_attempts_by_operator ON code_attempts (operator, at_ms);

    -- The audit log: append-only, each row chained to the previous one by SHA-256.
    CREATE TABLE audit_log (
        id         INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        result     TEXT NOT NULL,
        failures   INTEGER,
        prev_hash  BLOB NOT NULL CHECK (length(prev_hash) = 32),
        row_hash   BLOB NOT NULL CHECK (length(row_hash) = 32)
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    "#,
    ),
    // 4: operators (the console's users) and procedure progress per alarm.
    Step::Sql(
        r#"
    CREATE TABLE operators (
        id               INTEGER PRIMARY KEY,
        public_id        TEXT NOT NULL UNIQUE,
        name             TEXT NOT NULL UNIQUE,
        role             TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
        password_phc     TEXT NOT NULL CHECK (password_phc LIKE '$argon2id$%'),
        disabled         INTEGER NOT NULL DEFAULT 0,
        failed_logins    INTEGER NOT NULL DEFAULT 0,
        locked_until_ms  INTEGER,
        created_ms       INTEGER NOT NULL
    );

    CREATE TABLE procedure_progress (
        alarm_id  INTEGER NOT NULL REFERENCES alarms(id),
        step      INTEGER NOT NULL,
        done_by   TEXT NOT NULL,
        done_ms   INTEGER NOT NULL,
        PRIMARY KEY (alarm_id, step)
    ) WITHOUT ROWID;

    -- The queue subscription looks for alarms with new events.
    CREATE INDEX alarms_by_last_event ON alarms (last_event_ms);
    "#,
    ),
    // 5: the outbox of the automation outputs (src/automation): one row per stored event,
    // written in the event's own transaction and rendered once; every output keeps a cursor
    // that moves only after the receiving side acknowledged. Rows are deleted once every
    // output has them and they are older than the retention.
    Step::Sql(
        r#"
    -- AUTOINCREMENT: pruning may empty the table, and an id must never be used twice (the
    -- cursors point at ids).
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id    INTEGER NOT NULL UNIQUE REFERENCES events(id),
        created_ms  INTEGER NOT NULL,
        -- The Sur-Gard line, DC4 included; NULL when the event has no Sur-Gard form.
        surgard     BLOB,
        -- The event as a JSON object (event stream schema version 1).
        json        TEXT NOT NULL,
        -- Why the Sur-Gard output passed over it ('nak', 'unrepresentable'); NULL: delivered
        -- or still to deliver.
        skipped     TEXT
    );

    -- How far each output got: rows up to delivered_id are acknowledged.
    CREATE TABLE outbox_cursors (
        sink          TEXT PRIMARY KEY,
        delivered_id  INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    );
    "#,
    ),
    // 6: indexes for correlation on the hot path (every valid frame looks for an open
    // communication-lost alarm of its account; profiling showed a full scan of open alarms).
    Step::Sql(
        r#"
    CREATE INDEX alarms_open_comm_by_account ON alarms (account_id)
        WHERE state <> 'closed' AND category = 'communication';
    "#,
    ),
    // 7: an event's alarm on the event row. An `alarm_events` row per joined event landed on a
    // random page (the table is clustered by alarm) in nearly every commit under a flood; the
    // event row is being written anyway. `alarm_prev` chains the events of one alarm, newest
    // first from `alarms.last_event_id`. `alarm_events` keeps the secondary links (a restore, a
    // panel-side opening recorded on several alarms) and every link written before version 7.
    Step::Sql(
        r#"
    ALTER TABLE events ADD COLUMN alarm_id INTEGER;
    ALTER TABLE events ADD COLUMN alarm_prev INTEGER;
    ALTER TABLE alarms ADD COLUMN last_event_id INTEGER;
    "#,
    ),
    // 8: a poll's durable trace, appended. A poll stores no frame row; its `account_status`
    // upsert landed on a random page of that table in nearly every commit. The writer now
    // appends the poll here (the table's last page) and folds the log into `account_status`
    // in bulk (`store::writer::StatusBacklog`), emptying it; a start after a crash folds in what is left.
    Step::Sql(
        r#"
    CREATE TABLE poll_log (
        account_id  INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL
    );
    "#,
    ),
    // 9: an event joining an alarm writes only its link on its own row; the writer counts the
    // links into the alarm's row about once a second (`correlate::alarms::fold_events`), and
    // readers count the rest from the event rows. Every event up to this id is counted (those
    // linked before this version were counted one by one).
    Step::Sql(
        r#"
    INSERT INTO meta (key, value) SELECT 'alarm_event_id', CAST(ifnull(max(id), 0) AS TEXT) FROM events;
    "#,
    ),
    // 10: an account's events as a chain instead of an index. `events_by_account` put every
    // event on a random leaf page (one page per account), so each commit group wrote about one
    // index page per event. Now each event row links the previous event of its account
    // (`account_prev`), and the newest event per account goes to `account_heads` in bulk
    // (`store::heads`): every event up to `heads_event_id` is there, readers find the rest
    // after it. The links of the events stored so far are filled in here, with the old index.
    Step::Sql(
        r#"
    ALTER TABLE events ADD COLUMN account_prev INTEGER;
    UPDATE events SET account_prev = (
        SELECT max(p.id) FROM events p WHERE p.account = events.account AND p.id < events.id);
    CREATE TABLE account_heads (
        account   TEXT PRIMARY KEY,
        event_id  INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO account_heads (account, event_id) SELECT account, max(id) FROM events GROUP BY account;
    INSERT INTO meta (key, value) SELECT 'heads_event_id', CAST(ifnull(max(id), 0) AS TEXT) FROM events;
    DROP INDEX events_by_account;
    "#,
    ),
    // 11: CHECK constraints without value lists on the tables written per frame or event.
    // SQLite checks `x IN ('a', 'b', 'c')` (three or more values) by building a temporary
    // table of the list for every row written: about a tenth of the writer's time at 64
    // connections (BENCHMARKS.md, series L). The same constraint as `x = 'a' OR x = 'b' OR …`
    // compares in place. The stored rows are untouched (they satisfy the same condition).
    Step::Code(checks_without_lists),
    // 12: the counting of linked events into their alarms' rows (`correlate::alarms`) goes in
    // slices of alarms, each in its own commit group: every event up to `alarm_event_id` is
    // counted, and also every event up to `alarm_fold_upto` of the alarms up to
    // `alarm_fold_done` (0: no slice done, the pair means nothing).
    Step::Sql(
        r#"
    INSERT INTO meta (key, value) VALUES ('alarm_fold_upto', '0'), ('alarm_fold_done', '0');
    "#,
    ),
    // 13: a keyed audit chain (`verify::audit`). Rows from now on carry an HMAC-SHA256 under the
    // audit key (a file outside the database) instead of a plain SHA-256, and the id of that key;
    // the rows written before keep their plain hashes and NULL here, and the first keyed row
    // chains to the last of them.
    Step::Sql(
        r#"
    ALTER TABLE audit_log ADD COLUMN key_id TEXT;
    "#,
    ),
    // 14: DC-09 account keys sealed at rest (`store::sealed`): `dc09_key` holds nonce ‖
    // AES-256-GCM ciphertext ‖ tag under the keys file when `key_sealed` is 1. Keys stored
    // before are plaintext (0) until the daemon's next start seals them (it needs the keys file,
    // which no migration has).
    Step::Sql(
        r#"
    ALTER TABLE accounts ADD COLUMN key_sealed INTEGER NOT NULL DEFAULT 0 CHECK (key_sealed IN (0, 1));
    "#,
    ),
    // 15: the operator's shift. Sessions live in the database (a restart logs nobody out; only
    // a token's SHA-256 is kept). One alarm has one handler (`owner`, and the session that
    // took it, so the alarm goes back to the queue when that session ends); an alarm can be put
    // aside until `recall_ms`. Calls to contacts and their outcomes; handover notes between
    // shifts; procedure steps that must be done (or the reason given) before a close. Wrong
    // phone codes given for a contact that is not the alarm customer's are counted per
    // customer, like a contact's. Operators' password verifiers carry their pepper.
    Step::Sql(
        r#"
    CREATE TABLE sessions (
        id           INTEGER PRIMARY KEY,
        token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        operator_id  INTEGER NOT NULL REFERENCES operators(id),
        role         TEXT NOT NULL,
        peer         TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        ended_ms     INTEGER,
        end_reason   TEXT
    );
    CREATE INDEX sessions_open ON sessions (operator_id) WHERE ended_ms IS NULL;
    ALTER TABLE alarms ADD COLUMN owner TEXT;
    ALTER TABLE alarms ADD COLUMN owner_session INTEGER REFERENCES sessions(id);
    ALTER TABLE alarms ADD COLUMN recall_ms INTEGER;
    ALTER TABLE alarms ADD COLUMN recall_note TEXT;
    ALTER TABLE alarms ADD COLUMN source_frame_id INTEGER;
    CREATE INDEX alarms_by_owner_session ON alarms (owner_session) WHERE owner_session IS NOT NULL;
    CREATE INDEX alarms_by_recall ON alarms (recall_ms) WHERE recall_ms IS NOT NULL;
    CREATE TABLE alarm_calls (
        id          INTEGER PRIMARY KEY,
        alarm_id    INTEGER NOT NULL REFERENCES alarms(id),
        contact_id  INTEGER NOT NULL REFERENCES contacts(id),
        phone       TEXT,
        outcome     TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        operator    TEXT NOT NULL
    );
    CREATE INDEX alarm_calls_by_alarm ON alarm_calls (alarm_id, id);
    CREATE TABLE handover_notes (
        id      INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        author  TEXT NOT NULL,
        text    TEXT NOT NULL
    );
    ALTER TABLE procedure_steps ADD COLUMN mandatory INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE code_failures_foreign (
        customer_id  INTEGER PRIMARY KEY REFERENCES customers(id),
        consecutive  INTEGER NOT NULL DEFAULT 0,
        last_ms      INTEGER NOT NULL
    );
    CREATE INDEX alarms_by_site_opened ON alarms (site_id, opened_ms);
    -- Operators' passwords are peppered like the codes; NULL: an unkeyed verifier from before,
    -- re-hashed with the pepper at the operator's next login.
    ALTER TABLE operators ADD COLUMN pepper_id TEXT;
    "#,
    ),
    // 16: restarts and mass loss (`correlate::supervision`, `correlate::mass_loss`).
    // `meta.receiving_ms`: the last moment the daemon was receiving (written about once a
    // second), so a start knows how long it was down. One row per account folded into a
    // mass-loss alarm (the alarm is the operators' one item; the rows are each account's own
    // record, restored one by one as the accounts report again). `route`: the transport,
    // receiver line and network the account last reported over, where known.
    Step::Sql(
        r#"
    CREATE TABLE mass_loss_accounts (
        alarm_id     INTEGER NOT NULL REFERENCES alarms(id),
        account_id   INTEGER NOT NULL,
        deadline_ms  INTEGER NOT NULL,
        lost_ms      INTEGER NOT NULL,
        route        TEXT NOT NULL DEFAULT '',
        restored_ms  INTEGER,
        PRIMARY KEY (alarm_id, account_id)
    ) WITHOUT ROWID;
    CREATE INDEX mass_loss_open_by_account ON mass_loss_accounts (account_id) WHERE restored_ms IS NULL;
    CREATE INDEX mass_loss_open_by_alarm ON mass_loss_accounts (alarm_id) WHERE restored_ms IS NULL;
    "#,
    ),
    // 17: retention and poll compaction (`store::retention`). A clean poll stores no row; each account counts its
    // polls (`polls`, folded in from `poll_log` with the last-seen times) and keeps the time
    // of the newest (`last_poll_ms`). Pruning deletes rows in small steps; the indexes below
    // let it (and SQLite's foreign-key checks on those deletes) find the rows that reference
    // a pruned one without a scan: `events_by_frame` is appended at its end like the events
    // themselves.
    Step::Sql(
        r#"
    ALTER TABLE account_status ADD COLUMN polls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE account_status ADD COLUMN last_poll_ms INTEGER;
    CREATE INDEX events_by_frame ON events (frame_id);
    CREATE INDEX alarm_events_by_event ON alarm_events (event_id);
    CREATE INDEX code_attempts_by_alarm ON code_attempts (alarm_id);
    CREATE INDEX alarms_by_source_frame ON alarms (source_frame_id) WHERE source_frame_id IS NOT NULL;
    CREATE INDEX alarms_closed ON alarms (closed_ms) WHERE state = 'closed';
    "#,
    ),
    // 18: schedules (`correlate::schedule`). Per site: its time zone, the holiday calendar it
    // follows, which lateness it is checked for; weekly windows (minutes after local midnight,
    // a close not after the open is on the next day); public holidays per calendar; one-off
    // exceptions (other hours, or '' for closed, on a range of dates); operators' extensions.
    // `schedule_state` holds the kinds raised for a site and not restored yet (what survives
    // a restart); `schedule_changes` tells the supervision task which sites to load again
    // (`site_id` NULL: all, after an import). Default procedures for the four new categories.
    Step::Sql(
        r#"
    CREATE TABLE schedules (
        site_id            INTEGER PRIMARY KEY REFERENCES sites(id),
        time_zone          TEXT NOT NULL,
        holidays           TEXT NOT NULL DEFAULT '',
        late_to_close      INTEGER NOT NULL DEFAULT 1,
        unexpected_opening INTEGER NOT NULL DEFAULT 1,
        late_to_open       INTEGER NOT NULL DEFAULT 0,
        early_close        INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE schedule_windows (
        site_id    INTEGER NOT NULL REFERENCES sites(id),
        days       INTEGER NOT NULL CHECK (days BETWEEN 1 AND 127),
        open_min   INTEGER NOT NULL CHECK (open_min BETWEEN 0 AND 1439),
        close_min  INTEGER NOT NULL CHECK (close_min BETWEEN 1 AND 1440),
        grace_min  INTEGER NOT NULL DEFAULT 0 CHECK (grace_min BETWEEN 0 AND 240)
    );
    CREATE INDEX schedule_windows_by_site ON schedule_windows (site_id);
    CREATE TABLE holidays (
        calendar  TEXT NOT NULL,
        date      TEXT NOT NULL,
        name      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (calendar, date)
    ) WITHOUT ROWID;
    CREATE TABLE schedule_exceptions (
        site_id    INTEGER NOT NULL REFERENCES sites(id),
        from_date  TEXT NOT NULL,
        to_date    TEXT NOT NULL,
        hours      TEXT NOT NULL DEFAULT '',
        grace_min  INTEGER NOT NULL DEFAULT 0 CHECK (grace_min BETWEEN 0 AND 240),
        reason     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (site_id, from_date)
    ) WITHOUT ROWID;
    CREATE TABLE schedule_extensions (
        id         INTEGER PRIMARY KEY,
        site_id    INTEGER NOT NULL REFERENCES sites(id),
        from_ms    INTEGER NOT NULL,
        until_ms   INTEGER NOT NULL CHECK (until_ms > from_ms),
        grace_min  INTEGER NOT NULL DEFAULT 0,
        set_by     TEXT NOT NULL,
        reason     TEXT NOT NULL
    );
    CREATE INDEX schedule_extensions_by_site ON schedule_extensions (site_id, until_ms);
    CREATE TABLE schedule_state (
        site_id   INTEGER NOT NULL REFERENCES sites(id),
        kind      TEXT NOT NULL,
        since_ms  INTEGER NOT NULL,
        alarm_id  INTEGER REFERENCES alarms(id),
        PRIMARY KEY (site_id, kind)
    ) WITHOUT ROWID;
    CREATE TABLE schedule_changes (
        id       INTEGER PRIMARY KEY,
        site_id  INTEGER,
        at_ms    INTEGER NOT NULL
    );
    INSERT INTO procedure_steps (customer_id, category, step, instruction, mandatory) VALUES
        (NULL, 'late_to_close', 1, 'Check the site''s schedule, extensions and who opened it last', 0),
        (NULL, 'late_to_close', 2, 'Call the contacts in call order: ask them to arm the site, or note until when they stay (extension)', 0),
        (NULL, 'late_to_close', 3, 'Nobody reached: dispatch a guard to check and lock the premises', 0),
        (NULL, 'unexpected_opening', 1, 'Check who opened (panel user) and whether an extension or exception explains it', 0),
        (NULL, 'unexpected_opening', 2, 'Call the site or the contacts and verify the caller (phone code)', 0),
        (NULL, 'unexpected_opening', 3, 'Not verified or nobody reached: dispatch a guard or the police', 0),
        (NULL, 'late_to_open', 1, 'Call the site: is it closed today (holiday, illness)?', 0),
        (NULL, 'late_to_open', 2, 'Nobody at the site: call the contacts in call order', 0),
        (NULL, 'early_close', 1, 'Check which user closed the site', 0),
        (NULL, 'early_close', 2, 'Call the first contact to confirm the early closing', 0);
    "#,
    ),
    // 19: service periods (`correlate::service`): a site or an account number on test (events
    // stored and listed, no alarm; a summary when it ends) or out of service (events to the
    // supervisor, no operator alarm), from a time until a time, with who and why; ended by
    // itself at `until_ms` or by hand. The events of a test, for its summary.
    Step::Sql(
        r#"
    CREATE TABLE service_periods (
        id                INTEGER PRIMARY KEY,
        mode              TEXT NOT NULL CHECK (mode = 'test' OR mode = 'out_of_service'),
        site_id           INTEGER REFERENCES sites(id),
        account           TEXT,
        from_ms           INTEGER NOT NULL,
        until_ms          INTEGER NOT NULL CHECK (until_ms > from_ms),
        set_by            TEXT NOT NULL,
        reason            TEXT NOT NULL,
        ended_ms          INTEGER,
        ended_by          TEXT,
        summary_alarm_id  INTEGER REFERENCES alarms(id),
        CHECK ((site_id IS NULL) <> (account IS NULL))
    );
    CREATE INDEX service_periods_open_by_site ON service_periods (site_id) WHERE ended_ms IS NULL;
    CREATE INDEX service_periods_open_by_account ON service_periods (account) WHERE ended_ms IS NULL;
    CREATE INDEX service_periods_by_end ON service_periods (ended_ms);
    CREATE TABLE service_period_events (
        period_id  INTEGER NOT NULL REFERENCES service_periods(id),
        event_id   INTEGER NOT NULL REFERENCES events(id),
        PRIMARY KEY (period_id, event_id)
    ) WITHOUT ROWID;
    -- An event's rows (shown "on test" in timelines and searches).
    CREATE INDEX service_period_events_by_event ON service_period_events (event_id);
    "#,
    ),
];

/// CHECK constraints of the form `column IN (list)` on tables written per frame or event, and
/// the same condition without a list (version 11).
const LIST_CHECKS: &[(&str, &str, &str)] = &[
    (
        "frames",
        "outcome IN ('accepted', 'retransmission', 'refused', 'silent', 'garbage')",
        "(outcome = 'accepted' OR outcome = 'retransmission' OR outcome = 'refused' OR outcome = 'silent' \
         OR outcome = 'garbage')",
    ),
    (
        "sites",
        "armed_state IN ('armed', 'disarmed', 'unknown')",
        "(armed_state = 'armed' OR armed_state = 'disarmed' OR armed_state = 'unknown')",
    ),
    (
        "alarms",
        "state IN ('new', 'acknowledged', 'in_progress', 'closed')",
        "(state = 'new' OR state = 'acknowledged' OR state = 'in_progress' OR state = 'closed')",
    ),
];

/// Replace each [`LIST_CHECKS`] constraint by its equivalent in the stored table definitions.
/// SQLite's documented way to change a constraint in place (ALTER TABLE, "other kinds of
/// table schema changes"): edit the definition in `sqlite_schema` and bump the schema version
/// so every connection re-reads it. The rows need no rewrite: both forms accept exactly the
/// same values. Runs inside the migration's transaction; a definition that does not read as
/// expected fails the step and rolls it back.
fn checks_without_lists(conn: &Connection) -> Result<(), StoreError> {
    let fail = |why: String| StoreError::Migration { version: 11, why };
    let version: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA writable_schema = ON")?;
    let edited = (|| -> Result<(), StoreError> {
        for (table, list, or) in LIST_CHECKS {
            let n = conn.execute(
                "UPDATE sqlite_schema SET sql = replace(sql, ?2, ?3)
                 WHERE type = 'table' AND name = ?1 AND instr(sql, ?2) > 0",
                [table, list, or],
            )?;
            if n != 1 {
                return Err(fail(format!("table {table}: constraint `{list}` not found")));
            }
        }
        conn.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))?;
        Ok(())
    })();
    conn.execute_batch("PRAGMA writable_schema = OFF")?;
    edited?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(fail(format!("after the edit: {check}")));
    }
    Ok(())
}

/// The schema version this program writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the schema up to the current version.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = current_version();
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let run = || -> Result<(), StoreError> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            match step {
                Step::Sql(sql) => conn.execute_batch(sql)?,
                Step::Code(f) => f(conn)?,
            }
            conn.execute_batch(&format!("PRAGMA user_version = {version}; COMMIT;"))?;
            Ok(())
        };
        run().inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps up to `version`, without recording the version.
    fn upto(conn: &Connection, version: usize) {
        for step in &MIGRATIONS[..version] {
            match step {
                Step::Sql(sql) => conn.execute_batch(sql).expect("step"),
                Step::Code(f) => f(conn).expect("step"),
            }
        }
    }

    #[test]
    fn migrates_from_empty_and_is_idempotent() {
        let conn = Connection::open_in_memory().expect("db");
        migrate(&conn).expect("migrate");
        migrate(&conn).expect("again");
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("v");
        assert_eq!(v, current_version());
    }

    /// Events linked to alarms before version 9 were counted in the alarm's row one by one:
    /// the upgrade marks them counted, so they are not counted a second time from their links.
    #[test]
    fn the_upgrade_to_counting_from_links_counts_nothing_twice() {
        let conn = Connection::open_in_memory().expect("db");
        upto(&conn, 8);
        conn.execute_batch(
            "PRAGMA user_version = 8;
             INSERT INTO frames (id, received_ms, transport, peer, raw, outcome) VALUES (1, 5, 'tcp', 'p', x'', 'accepted');
             INSERT INTO events (id, frame_id, received_ms, account, seq, code_format, code, qualifier, description, alarm_id)
                 VALUES (41, 1, 5, 'A1', 1, 'sia', 'BA', 'new', 'Burglary', 7);",
        )
        .expect("a version 8 database");
        migrate(&conn).expect("migrate");
        let mark: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'alarm_event_id'", [], |r| r.get(0))
            .expect("watermark");
        assert_eq!(mark, "41");
    }

    /// The upgrade to account chains links the events already stored (per account, each to
    /// the previous one), records each account's newest, and drops the index they replace.
    #[test]
    fn the_upgrade_to_account_chains_links_what_is_stored() {
        let conn = Connection::open_in_memory().expect("db");
        upto(&conn, 9);
        conn.execute_batch(
            "PRAGMA user_version = 9;
             INSERT INTO frames (id, received_ms, transport, peer, raw, outcome) VALUES (1, 5, 'tcp', 'p', x'', 'accepted');
             INSERT INTO events (id, frame_id, received_ms, account, seq, code_format, code, qualifier, description)
                 VALUES (3, 1, 5, 'A1', 1, 'sia', 'BA', 'new', 'x'), (4, 1, 5, 'B2', 1, 'sia', 'BA', 'new', 'x'),
                        (8, 1, 5, 'A1', 2, 'sia', 'BA', 'new', 'x'), (9, 1, 5, 'A1', 3, 'sia', 'BA', 'new', 'x');",
        )
        .expect("a version 9 database");
        migrate(&conn).expect("migrate");
        let links: Vec<(i64, Option<i64>)> = conn
            .prepare("SELECT id, account_prev FROM events ORDER BY id")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(links, vec![(3, None), (4, None), (8, Some(3)), (9, Some(8))]);
        let heads: String = conn
            .query_row(
                "SELECT group_concat(account || '=' || event_id, ' ') FROM account_heads",
                [],
                |r| r.get(0),
            )
            .expect("heads");
        assert_eq!(heads, "A1=9 B2=4");
        let (mark, index): (String, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'heads_event_id'),
                        (SELECT count(*) FROM sqlite_master WHERE name = 'events_by_account')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("watermark");
        assert_eq!((mark.as_str(), index), ("9", 0));
    }

    /// Version 11: no per-row temporary table for a CHECK on the tables written per frame or
    /// event, the same values refused as before, and a connection that was already open sees
    /// the new definitions too (the schema version moved).
    #[test]
    fn checks_without_lists_compare_in_place_and_refuse_the_same_values() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).expect("db");
        upto(&conn, 10);
        conn.execute_batch("PRAGMA user_version = 10").expect("version 10");
        let other = Connection::open(&path).expect("a second connection");
        let ephemeral = |c: &Connection, sql: &str| -> i64 {
            let mut stmt = c.prepare(&format!("EXPLAIN {sql}")).expect("explain");
            stmt.query_map([], |r| r.get::<_, String>(1))
                .expect("rows")
                .filter(|op| op.as_deref() == Ok("OpenEphemeral"))
                .count() as i64
        };
        let writes = [
            "INSERT INTO frames (received_ms, transport, peer, raw, outcome) VALUES (1, 'tcp', 'p', x'', 'silent')",
            "UPDATE sites SET armed_state = 'armed' WHERE id = 1",
            "UPDATE alarms SET state = 'closed' WHERE id = 1",
        ];
        assert!(ephemeral(&other, writes[0]) > 0, "version 10 builds a list per row");
        migrate(&conn).expect("migrate");
        // The other connection's next statement finds the schema version moved and re-reads
        // the definitions (EXPLAIN alone does not look).
        let _: i64 = other
            .query_row("SELECT count(*) FROM frames", [], |r| r.get(0))
            .expect("a read");
        for c in [&conn, &other] {
            for w in writes {
                assert_eq!(ephemeral(c, w), 0, "{w}");
            }
        }
        conn.execute(writes[0], []).expect("a valid outcome is stored");
        let refused = conn.execute(
            "INSERT INTO frames (received_ms, transport, peer, raw, outcome) VALUES (1, 'tcp', 'p', x'', 'maybe')",
            [],
        );
        assert!(refused.is_err(), "an outcome outside the list is still refused");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(check, "ok");
    }

    #[test]
    fn refuses_newer_schema() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("PRAGMA user_version = 999").expect("set");
        assert!(matches!(migrate(&conn), Err(StoreError::TooNew { found: 999, .. })));
    }
}

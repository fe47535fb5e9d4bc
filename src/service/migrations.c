/* migrations.c - the versioned schema of the evaluation store, one entry per
 * version, the same numbering for SQLite and PostgreSQL.
 *
 * Rules: a released migration is never edited, only followed by a new one;
 * each runs in one transaction together with its row in schema_migrations
 * (version, name, applied_ns), so a crash leaves it applied or not at all.
 * store.c's driver applies the pending ones in order and refuses a database
 * that has a version this binary does not know (a newer clearbox migrated it).
 *
 * Why the columns look as they do (docs/storage.md has the full story):
 *  - `pos` is the insertion order: FIFO within a priority and the list cursor.
 *    AUTOINCREMENT / IDENTITY never reuse a value, even after a purge.
 *  - code, stdin and the JSON columns are kept as the bytes given (BLOB /
 *    BYTEA), so NUL bytes and invalid UTF-8 come back exactly.
 *  - Partial indexes keep the hot queue queries (next queued, expired leases,
 *    one worker's rows) small however many finished rows there are; the
 *    queries spell the status literally so SQLite's planner can use them.
 *  - Version 2 makes webhook deliveries durable (store.h "the webhook
 *    outbox"): callback_state is NULL until a row with a callback_url
 *    finishes, then pending -> delivered / failed; the claim lease has its own
 *    columns so it never mixes with the evaluation's lease. Rows finished
 *    before the upgrade are settled from their recorded attempts (delivered
 *    if one was ok, else failed): what the old binary had in memory is not
 *    resumed, so an upgrade never sends a burst of stale webhooks. */
#include "service/store.h"

#define STATUS_CHECK                                                                       \
    "status IN ('queued','running','completed','timeout','cpu_time_limit','memory_limit'," \
    "'pids_limit','output_limit','killed','error','cancelled')"

#define INDEXES_V1                                                                         \
    "CREATE UNIQUE INDEX evaluations_idempotency ON evaluations (submitter, idempotency_key)" \
    " WHERE idempotency_key IS NOT NULL;\n"                                                \
    "CREATE INDEX evaluations_queue ON evaluations (priority DESC, pos)"                  \
    " WHERE status = 'queued';\n"                                                          \
    "CREATE INDEX evaluations_queued_submitter ON evaluations (submitter)"                \
    " WHERE status = 'queued';\n"                                                          \
    "CREATE INDEX evaluations_lease ON evaluations (lease_expires_ns)"                    \
    " WHERE status = 'running';\n"                                                         \
    "CREATE INDEX evaluations_worker ON evaluations (worker_id) WHERE status = 'running';\n" \
    "CREATE INDEX evaluations_status_pos ON evaluations (status, pos);\n"                 \
    "CREATE INDEX evaluations_submitter_pos ON evaluations (submitter, pos);\n"           \
    "CREATE INDEX evaluations_finished ON evaluations (finished_ns)"                      \
    " WHERE finished_ns IS NOT NULL;\n"

static const struct store_migration migrations[] = {
    {
        1,
        "create_evaluations",
        /* SQLite */
        "CREATE TABLE evaluations (\n"
        "  pos              INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "  id               TEXT    NOT NULL UNIQUE,\n"
        "  status           TEXT    NOT NULL CHECK (" STATUS_CHECK "),\n"
        "  language         TEXT    NOT NULL,\n"
        "  code             BLOB    NOT NULL,\n"
        "  stdin            BLOB,\n"
        "  args             BLOB,\n"
        "  files            BLOB,\n"
        "  limits           BLOB,\n"
        "  metadata         BLOB,\n"
        "  submitter        TEXT    NOT NULL DEFAULT '',\n"
        "  priority         INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),\n"
        "  idempotency_key  TEXT,\n"
        "  callback_url     TEXT,\n"
        "  traceparent      TEXT,\n"
        "  tracestate       TEXT,\n"
        "  created_ns       INTEGER NOT NULL,\n"
        "  queued_ns        INTEGER NOT NULL,\n"
        "  started_ns       INTEGER,\n"
        "  finished_ns      INTEGER,\n"
        "  attempts         INTEGER NOT NULL DEFAULT 0,\n"
        "  max_attempts     INTEGER NOT NULL DEFAULT 3,\n"
        "  worker_id        TEXT,\n"
        "  lease_expires_ns INTEGER,\n"
        "  result           BLOB,\n"
        "  error_reason     TEXT,\n"
        "  error_message    TEXT,\n"
        "  cancel_requested INTEGER NOT NULL DEFAULT 0,\n"
        "  callbacks        TEXT    NOT NULL DEFAULT '[]',\n"
        "  event_seq        INTEGER NOT NULL DEFAULT 0\n"
        ");\n" INDEXES_V1
        "CREATE TABLE evaluation_events (\n"
        "  eval_id TEXT    NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,\n"
        "  seq     INTEGER NOT NULL,\n"
        "  status  TEXT    NOT NULL CHECK (" STATUS_CHECK "),\n"
        "  ts_ns   INTEGER NOT NULL,\n"
        "  PRIMARY KEY (eval_id, seq)\n"
        ") WITHOUT ROWID;\n",
        /* PostgreSQL (store_pg.c) */
        "CREATE TABLE evaluations (\n"
        "  pos              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "  id               TEXT     NOT NULL UNIQUE,\n"
        "  status           TEXT     NOT NULL CHECK (" STATUS_CHECK "),\n"
        "  language         TEXT     NOT NULL,\n"
        "  code             BYTEA    NOT NULL,\n"
        "  stdin            BYTEA,\n"
        "  args             BYTEA,\n"
        "  files            BYTEA,\n"
        "  limits           BYTEA,\n"
        "  metadata         BYTEA,\n"
        "  submitter        TEXT     NOT NULL DEFAULT '',\n"
        "  priority         SMALLINT NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),\n"
        "  idempotency_key  TEXT,\n"
        "  callback_url     TEXT,\n"
        "  traceparent      TEXT,\n"
        "  tracestate       TEXT,\n"
        "  created_ns       BIGINT   NOT NULL,\n"
        "  queued_ns        BIGINT   NOT NULL,\n"
        "  started_ns       BIGINT,\n"
        "  finished_ns      BIGINT,\n"
        "  attempts         INTEGER  NOT NULL DEFAULT 0,\n"
        "  max_attempts     INTEGER  NOT NULL DEFAULT 3,\n"
        "  worker_id        TEXT,\n"
        "  lease_expires_ns BIGINT,\n"
        "  result           BYTEA,\n"
        "  error_reason     TEXT,\n"
        "  error_message    TEXT,\n"
        "  cancel_requested BOOLEAN  NOT NULL DEFAULT FALSE,\n"
        "  callbacks        JSONB    NOT NULL DEFAULT '[]',\n"
        "  event_seq        BIGINT   NOT NULL DEFAULT 0\n"
        ");\n" INDEXES_V1
        "CREATE TABLE evaluation_events (\n"
        "  eval_id TEXT   NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,\n"
        "  seq     BIGINT NOT NULL,\n"
        "  status  TEXT   NOT NULL CHECK (" STATUS_CHECK "),\n"
        "  ts_ns   BIGINT NOT NULL,\n"
        "  PRIMARY KEY (eval_id, seq)\n"
        ");\n",
    },
    {
        2,
        "durable_webhook_deliveries",
        /* SQLite */
        "ALTER TABLE evaluations ADD COLUMN callback_state TEXT\n"
        "  CHECK (callback_state IN ('pending','delivered','failed'));\n"
        "ALTER TABLE evaluations ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0;\n"
        "ALTER TABLE evaluations ADD COLUMN callback_next_ns INTEGER;\n"
        "ALTER TABLE evaluations ADD COLUMN callback_lease_ns INTEGER;\n"
        "ALTER TABLE evaluations ADD COLUMN callback_owner TEXT;\n"
        "UPDATE evaluations SET callback_attempts = json_array_length(callbacks),\n"
        "  callback_state = CASE WHEN EXISTS (SELECT 1 FROM json_each(evaluations.callbacks) j\n"
        "    WHERE json_extract(j.value, '$.ok') = 1) THEN 'delivered' ELSE 'failed' END\n"
        "  WHERE callback_url IS NOT NULL AND status NOT IN ('queued', 'running');\n"
        "CREATE INDEX evaluations_callback_due ON evaluations (callback_next_ns)"
        " WHERE callback_state = 'pending';\n",
        /* PostgreSQL */
        "ALTER TABLE evaluations\n"
        "  ADD COLUMN callback_state TEXT\n"
        "    CHECK (callback_state IN ('pending','delivered','failed')),\n"
        "  ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0,\n"
        "  ADD COLUMN callback_next_ns BIGINT,\n"
        "  ADD COLUMN callback_lease_ns BIGINT,\n"
        "  ADD COLUMN callback_owner TEXT;\n"
        "UPDATE evaluations SET callback_attempts = jsonb_array_length(callbacks),\n"
        "  callback_state = CASE WHEN callbacks @> '[{\"ok\": true}]'::jsonb\n"
        "    THEN 'delivered' ELSE 'failed' END\n"
        "  WHERE callback_url IS NOT NULL AND status NOT IN ('queued', 'running');\n"
        "CREATE INDEX evaluations_callback_due ON evaluations (callback_next_ns)"
        " WHERE callback_state = 'pending';\n",
    },
};

const struct store_migration *store_migrations(size_t *n)
{
    *n = sizeof migrations / sizeof migrations[0];
    return migrations;
}

int store_schema_latest(void)
{
    return migrations[sizeof migrations / sizeof migrations[0] - 1].version;
}

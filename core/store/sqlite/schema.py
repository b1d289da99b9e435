"""The SQLite schema, and the steps that bring a database made by an earlier version up to it."""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    identity TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL REFERENCES contacts(id)
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    address TEXT NOT NULL,
    thread TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (inbox, address, thread)
);
CREATE INDEX IF NOT EXISTS conversations_by_contact ON conversations (contact_id);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    inbox TEXT NOT NULL,
    direction TEXT NOT NULL,
    external_id TEXT,
    ticket_id TEXT,
    episode INTEGER NOT NULL,
    handled INTEGER NOT NULL DEFAULT 0,
    delivery TEXT,
    delivery_error TEXT,
    data TEXT NOT NULL,
    UNIQUE (channel, inbox, direction, external_id)
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, episode);
CREATE INDEX IF NOT EXISTS messages_by_ticket ON messages (ticket_id);
CREATE INDEX IF NOT EXISTS messages_unhandled ON messages (handled) WHERE handled = 0;
CREATE TABLE IF NOT EXISTS tickets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    number TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    contact_id TEXT,
    updated_us INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_by_update ON tickets (updated_us, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ticket_id TEXT,
    conversation_id TEXT,
    occurred_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    address TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (address, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    inbox TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_at TEXT NOT NULL,
    replayed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    holder TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_expiry ON claims (expires_at);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL  -- unix time; NULL: kept until overwritten
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    in_reply_to TEXT,
    due REAL NOT NULL  -- unix time from which another sender may take it
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox (due);
CREATE TABLE IF NOT EXISTS timers (
    key TEXT PRIMARY KEY,
    due REAL NOT NULL  -- unix time
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (due);
CREATE TABLE IF NOT EXISTS queue_turns (
    queue TEXT PRIMARY KEY,
    turn INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    subscription TEXT NOT NULL,
    data TEXT NOT NULL
);
"""


# Ticket columns the service rules filter and sort on (added to databases from before them).
RULE_COLUMNS = (
    ("queue", "TEXT"),
    ("category", "TEXT"),
    ("assignee", "TEXT"),
    ("due_us", "INTEGER"),
    ("sla_flag", "TEXT NOT NULL DEFAULT ''"),
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database created by an earlier version up to ``SCHEMA`` (which only creates what is missing).

    Each step checks what is there, so it runs on every open and changes nothing the second time.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(checkpoints)")}
    if "expires_at" not in columns:  # checkpoints had no expiry before they could be given a TTL
        db.execute("ALTER TABLE checkpoints ADD COLUMN expires_at REAL")
    ticket_columns = {row[1] for row in db.execute("PRAGMA table_info(tickets)")}
    if "contact_id" not in ticket_columns:  # tickets were found by contact only once customers could ask
        db.execute("ALTER TABLE tickets ADD COLUMN contact_id TEXT")
        db.execute("UPDATE tickets SET contact_id = json_extract(data, '$.contact_id') WHERE data != ''")
    db.execute("CREATE INDEX IF NOT EXISTS tickets_by_contact ON tickets (contact_id, seq)")
    for column, kind in RULE_COLUMNS:  # service rules: the list filters and the due-time order
        if column not in ticket_columns:
            db.execute(f"ALTER TABLE tickets ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS tickets_by_due ON tickets (sla_flag, due_us, seq) WHERE sla_flag != ''")
    db.execute("CREATE INDEX IF NOT EXISTS tickets_by_assignee ON tickets (queue, assignee, status)")
    # Partial: the many checkpoints kept for ever (IMAP UIDs, cursors) stay out of the sweeper's index.
    db.execute(
        "CREATE INDEX IF NOT EXISTS checkpoints_by_expiry ON checkpoints (expires_at) WHERE expires_at IS NOT NULL"
    )

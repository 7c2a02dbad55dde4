"""The mixed SQLite application workload of bench/run.py (`sqlite-mixed`): what an ordinary
program does with its database, one statement per transaction.

Two tables with secondary indexes,

    users(id, email UNIQUE, name, score)
    events(id, user_id indexed, kind, payload, ts indexed)

seeded with USERS users and EVENTS events (untimed), then a fixed-seed mix of statements in
autocommit mode (each its own transaction): inserts of events, upserts of users (INSERT ...
ON CONFLICT(email) DO UPDATE), updates, deletes, point reads and range reads. WARMUP
statements run untimed, then as many as fit in the given seconds. The worker keeps its own
books (live ids, row counts, the sum of the scores) and checks them against the database at
the end, with PRAGMA integrity_check.

A setting is JOURNAL-SYNCHRONOUS, e.g. wal-normal (the usual application setting),
wal-full, delete-full.
"""
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for lib

from lib import request_counts  # noqa: E402

JOURNALS = ("wal", "delete", "truncate", "persist")
SYNCHRONOUS = ("off", "normal", "full", "extra")
USERS = 2000
EVENTS = 10000
WARMUP = 300
SEED = 20261205

# The statement mix, by weight (out of 100).
MIX = [
    ("insert-event", 30),
    ("upsert-user", 12),
    ("update-score", 10),
    ("update-event", 6),
    ("delete-event", 8),
    ("delete-user", 2),
    ("read-user", 16),
    ("read-event", 6),
    ("range-user-events", 6),
    ("range-ts", 4),
]
WRITES = {"insert-event", "upsert-user", "update-score", "update-event", "delete-event", "delete-user"}


def parse_setting(text):
    """'wal-normal' -> ('wal', 'normal'); raises ValueError with the reason."""
    journal, _, sync = text.strip().lower().partition("-")
    if journal not in JOURNALS or sync not in SYNCHRONOUS:
        raise ValueError(f"bad setting {text!r}: JOURNAL-SYNCHRONOUS with JOURNAL one of "
                         f"{', '.join(JOURNALS)} and SYNCHRONOUS one of {', '.join(SYNCHRONOUS)}")
    return journal, sync


class Ids:
    """Live row ids, with O(1) add, remove and uniform random pick."""

    def __init__(self):
        self.items, self.where = [], {}

    def add(self, i):
        self.where[i] = len(self.items)
        self.items.append(i)

    def remove(self, i):
        pos = self.where.pop(i)
        last = self.items.pop()
        if pos < len(self.items):
            self.items[pos] = last
            self.where[last] = pos

    def pick(self, rng):
        return self.items[rng.randrange(len(self.items))] if self.items else None

    def __len__(self):
        return len(self.items)


class Books:
    """What the database must hold, kept by the worker itself."""

    def __init__(self):
        self.users = Ids()
        self.events = Ids()
        self.email_of = {}      # user id -> email
        self.id_of = {}         # email -> user id
        self.score_sum = 0
        self.next_email = 0     # emails user0..user{next_email-1} have been used
        self.ts = 0


def worker(db, setting, seconds, control):
    """Runs in a child process; prints one JSON object. control: the snapfs control file
    to read request counters from, or '-'."""
    journal, sync = parse_setting(setting)
    control = None if control == "-" else control
    rng = random.Random(SEED)
    con = sqlite3.connect(db, isolation_level=None)
    got = con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
    if got.lower() != journal:
        raise SystemExit(f"journal_mode={journal} not accepted (got {got})")
    con.execute(f"PRAGMA synchronous={sync}")
    books = Books()
    seed(con, rng, books)
    ops, weights = zip(*MIX)
    cum = []
    total = 0
    for w in weights:
        total += w
        cum.append(total)
    # The choices for the whole run are drawn as they go, from the one seeded generator:
    # every target runs the same sequence of statements (for as long as it keeps up).
    for _ in range(WARMUP):
        step(con, rng, books, ops[pick(rng, cum, total)])
    first = second = None
    if control:
        first = request_counts.read_line(control)
        second = request_counts.read_line(control)
    n = writes = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        op = ops[pick(rng, cum, total)]
        step(con, rng, books, op)
        n += 1
        writes += op in WRITES
        if n % 16 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    requests = request_counts.work(first, second, request_counts.read_line(control)) if control else None
    verify(con, books)
    con.close()
    print(json.dumps({"tx": n, "writes": writes, "seconds": elapsed, "requests": requests}))


def pick(rng, cum, total):
    r = rng.randrange(total)
    for i, c in enumerate(cum):
        if r < c:
            return i
    return len(cum) - 1


def new_email(books):
    e = f"user{books.next_email}@example.com"
    books.next_email += 1
    return e


def seed(con, rng, books):
    """Untimed: the schema and the first rows, in one transaction."""
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, "
                "name TEXT NOT NULL, score INTEGER NOT NULL)")
    con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, "
                "kind TEXT NOT NULL, payload TEXT NOT NULL, ts INTEGER NOT NULL)")
    con.execute("CREATE INDEX events_user ON events(user_id)")
    con.execute("CREATE INDEX events_ts ON events(ts)")
    con.execute("BEGIN")
    for _ in range(USERS):
        email = new_email(books)
        score = rng.randrange(1000)
        uid = con.execute("INSERT INTO users (email, name, score) VALUES (?, ?, ?)",
                          (email, "name " + email, score)).lastrowid
        books.users.add(uid)
        books.email_of[uid], books.id_of[email] = email, uid
        books.score_sum += score
    for _ in range(EVENTS):
        insert_event(con, rng, books)
    con.execute("COMMIT")


KINDS = ("click", "view", "buy", "login", "logout")


def insert_event(con, rng, books):
    books.ts += 1
    uid = books.users.pick(rng) or 0
    payload = "%032x" % rng.getrandbits(128) * rng.randrange(1, 6)   # 32-160 bytes
    eid = con.execute("INSERT INTO events (user_id, kind, payload, ts) VALUES (?, ?, ?, ?)",
                      (uid, KINDS[rng.randrange(len(KINDS))], payload, books.ts)).lastrowid
    books.events.add(eid)


def step(con, rng, books, op):
    """One statement, its own transaction (autocommit)."""
    if op == "insert-event":
        insert_event(con, rng, books)
    elif op == "upsert-user":
        # Mostly an existing address (an update), sometimes a new one (an insert).
        if rng.random() < 0.7 and books.users:
            email = books.email_of[books.users.pick(rng)]
        else:
            email = new_email(books)
        add = rng.randrange(100)
        cur = con.execute("INSERT INTO users (email, name, score) VALUES (?, ?, ?) "
                          "ON CONFLICT(email) DO UPDATE SET score = score + excluded.score, name = excluded.name",
                          (email, "renamed " + email, add))
        if email not in books.id_of:
            uid = cur.lastrowid
            books.users.add(uid)
            books.email_of[uid], books.id_of[email] = email, uid
        books.score_sum += add
    elif op == "update-score":
        uid = books.users.pick(rng)
        if uid is not None:
            con.execute("UPDATE users SET score = score + 1 WHERE id = ?", (uid,))
            books.score_sum += 1
    elif op == "update-event":
        eid = books.events.pick(rng)
        if eid is not None:
            con.execute("UPDATE events SET payload = ? WHERE id = ?", ("%032x" % rng.getrandbits(128), eid))
    elif op == "delete-event":
        eid = books.events.pick(rng)
        if eid is not None:
            con.execute("DELETE FROM events WHERE id = ?", (eid,))
            books.events.remove(eid)
    elif op == "delete-user":
        uid = books.users.pick(rng)
        if uid is not None:
            score = con.execute("DELETE FROM users WHERE id = ? RETURNING score", (uid,)).fetchone()[0]
            books.users.remove(uid)
            del books.id_of[books.email_of.pop(uid)]
            books.score_sum -= score
    elif op == "read-user":
        uid = books.users.pick(rng)
        if uid is not None:
            row = con.execute("SELECT id, name, score FROM users WHERE email = ?", (books.email_of[uid],)).fetchone()
            if row is None or row[0] != uid:
                raise SystemExit(f"user {uid} ({books.email_of[uid]}) not found by email: {row}")
    elif op == "read-event":
        eid = books.events.pick(rng)
        if eid is not None and con.execute("SELECT payload FROM events WHERE id = ?", (eid,)).fetchone() is None:
            raise SystemExit(f"event {eid} not found")
    elif op == "range-user-events":
        uid = books.users.pick(rng)
        con.execute("SELECT id, kind, ts FROM events WHERE user_id = ? ORDER BY ts DESC LIMIT 10", (uid,)).fetchall()
    elif op == "range-ts":
        lo = rng.randrange(max(1, books.ts))
        con.execute("SELECT count(*), max(ts) FROM events WHERE ts BETWEEN ? AND ?", (lo, lo + 200)).fetchone()


def verify(con, books):
    """The database holds what the worker's books say, and is intact."""
    users, score = con.execute("SELECT count(*), coalesce(sum(score), 0) FROM users").fetchone()
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    want = (len(books.users), books.score_sum, len(books.events))
    if (users, score, events) != want:
        raise SystemExit(f"database holds users={users} score sum={score} events={events}, "
                         f"expected users={want[0]} score sum={want[1]} events={want[2]}")
    check = con.execute("PRAGMA integrity_check").fetchall()
    if check != [("ok",)]:
        raise SystemExit(f"integrity_check: {check[:5]}")


if __name__ == "__main__":
    db, setting, seconds, control = sys.argv[1:5]
    worker(db, setting, float(seconds), control)

"""The SQLite store of jobs, their step metrics and their events (WAL: the service reads while
workers write, each process with its own connection)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from workbench.files import make_private
from workbench.training import dbfile
from workbench.training.record import (
    TERMINAL,
    JobEvent,
    JobRecord,
    StepMetrics,
    column,
    json_fields,
    table,
)

# The tables follow the job record's declaration (workbench/training/record.py).
_SCHEMA = "\n".join([
    table("jobs", JobRecord, tail=("PRIMARY KEY (job_id)",)),
    "CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (experiment_name, created_at);",
    table("metrics", StepMetrics, head=("job_id TEXT NOT NULL",), tail=("PRIMARY KEY (job_id, step)",)),
    table("events", JobEvent, head=("id INTEGER PRIMARY KEY AUTOINCREMENT",), skip=("id",)),
    "CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id);",
])
_KEYS = {"jobs": JobRecord, "metrics": StepMetrics}
_JOB_FIELDS = set(JobRecord.model_fields) - {"job_id", "experiment_name", "config", "created_at",
                                              "updated_at", "run_dir", "request_id"}
_JSON_FIELDS = json_fields(JobRecord)


class JobStore:
    """`check=True` (the service at start): a damaged database is moved aside and a new one started,
    its name kept in `moved_aside`; `check=False` (workers): opened as it is."""

    def __init__(self, path: Path, check: bool = False):
        self.path = path
        self.moved_aside: dict | None = None
        self._lock = threading.Lock()
        if check:
            self.moved_aside = dbfile.check(path)
        if not path.exists():
            dbfile.create(path, _SCHEMA)
        # Owner-only, as an older workbench may have left them: worker log tails, judge answers.
        for suffix in ("", *dbfile.SIDE_FILES):
            make_private(Path(f"{path}{suffix}"))
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL's own recommended setting: no fsync at each commit (a training step writes three),
        # still never corrupt; a power cut may lose the last commits, an application crash none.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        if self._db.execute("PRAGMA user_version").fetchone()[0] != dbfile.MARKER:
            self._db.execute(f"PRAGMA user_version={dbfile.MARKER}")  # a store from before the marker

    def _migrate(self) -> None:
        # A store written by an older workbench gets the fields declared since.
        for name, model in _KEYS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({name})")}
            for field in model.model_fields:
                if field not in present:
                    self._db.execute(f"ALTER TABLE {name} ADD COLUMN {column(model, field)}")
        # One job per client request id: a retried start finds the job instead of making another.
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_request ON jobs (request_id)"
                         " WHERE request_id IS NOT NULL")

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # Jobs ---------------------------------------------------------------------------------------

    def create(self, experiment_name: str, config: dict, run_dir: Path, model_path: str,
               status: str = "queued", request_id: str | None = None, kind: str = "train") -> dict:
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        now = time.time()
        self._run(
            "INSERT INTO jobs (job_id, experiment_name, config, status, phase, created_at, updated_at,"
            " run_dir, model_path, request_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, experiment_name, json.dumps(config), status, status, now, now, str(run_dir / job_id),
             model_path, request_id, kind),
        )
        what = "experiment" if kind == "train" else "evaluation"
        self.event(job_id, "message", f"job created for {what} {experiment_name}")
        return self.get(job_id)

    def update(self, job_id: str, **fields) -> None:
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        for name in _JSON_FIELDS:
            if isinstance(fields.get(name), dict):
                fields[name] = json.dumps(fields[name])
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._run(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> dict | None:
        rows = self._run("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def by_request(self, request_id: str) -> dict | None:
        rows = self._run("SELECT * FROM jobs WHERE request_id = ?", (request_id,))
        return _job(rows[0]) if rows else None

    def latest(self, experiment_name: str, kind: str = "train") -> dict | None:
        rows = self._run(
            "SELECT * FROM jobs WHERE experiment_name = ? AND kind = ? ORDER BY created_at DESC LIMIT 1",
            (experiment_name, kind),
        )
        return _job(rows[0]) if rows else None

    def latest_completed(self, experiment_name: str) -> dict | None:
        rows = self._run(
            "SELECT * FROM jobs WHERE experiment_name = ? AND kind = 'train' AND status = 'completed'"
            " AND adapter_path IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            (experiment_name,),
        )
        return _job(rows[0]) if rows else None

    def jobs(self, status: tuple[str, ...] | None = None, kind: str | None = None) -> list[dict]:
        """Jobs of any kind or one, in these states (oldest first: the queue's order) or in all
        (newest first)."""
        where, args = ["1"], []
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += status
        if kind:
            where.append("kind = ?")
            args.append(kind)
        order = "created_at" if status else "created_at DESC"
        rows = self._run(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY {order}", tuple(args))
        return [_job(r) for r in rows]

    def set_status(self, job_id: str, status: str, message: str, level: str = "info", **fields) -> None:
        if status in TERMINAL:
            fields.setdefault("finished_at", time.time())
        self.update(job_id, status=status, **fields)
        self.event(job_id, "state", message, level=level, data={"status": status, **_plain(fields)})

    # Metrics and events -------------------------------------------------------------------------

    def metric(self, job_id: str, step: int, **values) -> None:
        unknown = set(values) - set(StepMetrics.model_fields)
        if unknown:
            raise ValueError(f"not step metrics: {sorted(unknown)}")
        names = ", ".join(values)
        marks = ", ".join("?" * len(values))
        updates = ", ".join(f"{n} = COALESCE(excluded.{n}, {n})" for n in values)
        self._run(
            f"INSERT INTO metrics (job_id, step, time, {names}) VALUES (?, ?, ?, {marks})"
            f" ON CONFLICT (job_id, step) DO UPDATE SET {updates}",
            (job_id, step, time.time(), *values.values()),
        )

    def metrics(self, job_id: str) -> list[dict]:
        rows = self._run("SELECT * FROM metrics WHERE job_id = ? ORDER BY step", (job_id,))
        return [{k: r[k] for k in r.keys() if k != "job_id"} for r in rows]

    def event(
        self, job_id: str, type: str, message: str, level: str = "info", data: dict | None = None
    ) -> None:
        self._run(
            "INSERT INTO events (job_id, time, level, type, message, data) VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, time.time(), level, type, message, json.dumps(data) if data is not None else None),
        )

    def events(self, job_id: str, after: int = 0) -> list[dict]:
        """The job's events after the one numbered `after`, oldest first."""
        rows = self._run("SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id", (job_id, after))
        return [{k: (json.loads(r[k]) if k == "data" and r[k] else r[k]) for k in r.keys()} for r in rows]

    def backup(self, dest: Path) -> dict:
        """A consistent copy while jobs go on writing: path, bytes, jobs."""
        return dbfile.backup(self.path, dest)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _plain(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if isinstance(v, (str, int, float, type(None)))}


def _job(row: sqlite3.Row) -> dict:
    job = {k: row[k] for k in row.keys()}
    for name in _JSON_FIELDS:
        job[name] = json.loads(job[name]) if job[name] else None
    job["resume"] = bool(job["resume"])
    return job

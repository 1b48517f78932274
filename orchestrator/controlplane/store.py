"""Persistence in SQLite (stdlib `sqlite3`): plans, decisions, per-second history, settings.

One connection guarded by a lock, so the API threads and the controller share it safely.
Plans are stored as JSON (`Plan.to_dict()`); the newest *applied* plan is what a restarted
control plane resumes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from orchestrator.plan import Plan

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    version     INTEGER PRIMARY KEY,
    created_at  TEXT NOT NULL,
    policy      TEXT NOT NULL,
    applied     INTEGER NOT NULL DEFAULT 0,
    plan        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    kind        TEXT NOT NULL,      -- replan | apply | rollback | hold | load | unload | reconcile | settings
    reason      TEXT NOT NULL,
    plan_version INTEGER,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS history (
    second      INTEGER NOT NULL,
    family      TEXT NOT NULL,
    arrivals    INTEGER NOT NULL,
    estimate    REAL NOT NULL,
    capacity    REAL NOT NULL,
    completions INTEGER NOT NULL,
    met         INTEGER NOT NULL,
    misses      INTEGER NOT NULL,
    effective_accuracy REAL NOT NULL,
    plan_version INTEGER,
    mix         TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (second, family)
);
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
"""


class Store:
    """The control plane's durable state. `path` may be ":memory:"."""

    def __init__(self, path: str | os.PathLike = ":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if not Path(self.path).exists():  # it holds the embedded servers' control keys: the owner's only
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA journal_mode=MEMORY")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- plans -----------------------------------------------------------------------------
    def next_plan_version(self) -> int:
        row = self._exec("SELECT COALESCE(MAX(version), 0) AS v FROM plans")
        return int(row[0]["v"]) + 1

    def save_plan(self, plan: Plan, applied: bool) -> None:
        self._exec("INSERT OR REPLACE INTO plans (version, created_at, policy, applied, plan) VALUES (?,?,?,?,?)",
                   (plan.version, plan.created_at, plan.policy, int(applied), json.dumps(plan.to_dict())))

    def plan(self, version: int) -> Plan | None:
        """The stored plan `version`, or None (also for a number no SQLite integer can hold)."""
        if not -2**63 <= version < 2**63:
            return None
        rows = self._exec("SELECT plan FROM plans WHERE version = ?", (version,))
        return Plan.from_dict(json.loads(rows[0]["plan"])) if rows else None

    def last_applied_plan(self) -> Plan | None:
        rows = self._exec("SELECT plan FROM plans WHERE applied = 1 ORDER BY version DESC LIMIT 1")
        return Plan.from_dict(json.loads(rows[0]["plan"])) if rows else None

    def plan_history(self, limit: int = 50) -> list[dict]:
        rows = self._exec("SELECT version, created_at, policy, applied, plan FROM plans ORDER BY version DESC LIMIT ?",
                          (limit,))
        out = []
        for r in rows:
            p = Plan.from_dict(json.loads(r["plan"]))
            out.append({"version": r["version"], "created_at": r["created_at"], "policy": r["policy"],
                        "applied": bool(r["applied"]), "effective_accuracy": round(p.effective_accuracy, 3),
                        "placements": [f"{x.device_id}:{x.variant}" for x in p.placements]})
        return out

    # -- decisions -------------------------------------------------------------------------
    def record_decision(self, kind: str, reason: str, plan_version: int | None = None,
                        detail: dict | None = None, ts: float | None = None) -> dict:
        ts = time.time() if ts is None else ts
        self._exec("INSERT INTO decisions (ts, kind, reason, plan_version, detail) VALUES (?,?,?,?,?)",
                   (ts, kind, reason, plan_version, json.dumps(detail or {})))
        return {"ts": ts, "kind": kind, "reason": reason, "plan_version": plan_version, "detail": detail or {}}

    def decisions(self, limit: int = 100, since: float | None = None) -> list[dict]:
        rows = self._exec("SELECT ts, kind, reason, plan_version, detail FROM decisions WHERE ts >= ? "
                          "ORDER BY id DESC LIMIT ?", (since or 0.0, limit))
        return [{"ts": r["ts"], "kind": r["kind"], "reason": r["reason"], "plan_version": r["plan_version"],
                 "detail": json.loads(r["detail"])} for r in rows]

    # -- history ---------------------------------------------------------------------------
    def record_history(self, rows: list[dict]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO history (second, family, arrivals, estimate, capacity, completions, met, "
                "misses, effective_accuracy, plan_version, mix) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(r["second"], r["family"], r["arrivals"], r["estimate"], r["capacity"], r["completions"], r["met"],
                  r["misses"], r["effective_accuracy"], r.get("plan_version"), json.dumps(r.get("mix", {})))
                 for r in rows])

    def history(self, since: int = 0, family: str | None = None, limit: int = 3600) -> list[dict]:
        sql = "SELECT * FROM history WHERE second >= ?"
        args: tuple = (since,)
        if family:
            sql += " AND family = ?"
            args += (family,)
        rows = self._exec(f"SELECT * FROM ({sql} ORDER BY second DESC LIMIT ?) ORDER BY second", args + (limit,))
        return [{**dict(r), "mix": json.loads(r["mix"])} for r in rows]

    # -- settings (SLOs, floors, demand override) ------------------------------------------
    def get_setting(self, key: str, default=None):
        rows = self._exec("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_setting(self, key: str, value) -> None:
        self._exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

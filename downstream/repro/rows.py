"""A table's rows and their steps, and what a row's folder says about its state.

A :class:`Row` is one line of a table: a folder and a short chain of :class:`Step` subprocess calls.
A row remembers the scale it was started with (``<row>/repro_row.json``) and refuses to mix scales;
a failed step leaves ``<row>/repro_failed.json``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import ReproError
from .scaling import fmt_scale


@dataclass
class Step:
    """One subprocess call of a row.

    ``done()`` says its results exist (then it is skipped); ``partial()`` that an interrupted run
    left a resumable state (then ``resume_argv`` runs instead of ``argv``).
    """

    name: str
    argv: List[str]
    done: Callable[[], bool]
    env: Dict[str, str] = field(default_factory=dict)
    partial: Callable[[], bool] = lambda: False
    resume_argv: Optional[List[str]] = None
    before: Optional[Callable[[], None]] = None  # prepares inputs (e.g. writes a class list) at run time

    def command(self, resume: bool = False) -> str:
        argv = self.resume_argv if resume and self.resume_argv else self.argv
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(argv)


@dataclass
class Row:
    """One row of a table: an id (for ``--only``), a label in the paper's form, its folder, steps,
    the files it needs from other tables (``requires``: path -> how to make it), and what the dry-run plan
    shows of it: ``recipe`` (the values its run uses, :mod:`.recipe`) and ``notes`` (e.g. how scaling changed
    the schedule)."""

    id: str
    label: str
    dir: str
    steps: List[Step]
    requires: Dict[str, str] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    recipe: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def select_rows(rows: Sequence[Row], only: Optional[Sequence[str]]) -> List[Row]:
    """Rows whose id matches any ``--only`` pattern (exact id or shell glob); all without it."""
    if not only:
        return list(rows)
    ids = [r.id for r in rows]
    for pat in only:
        if not any(fnmatch.fnmatchcase(i, pat) for i in ids):
            raise ReproError(f"--only {pat}: no such row (rows: {', '.join(ids)})")
    return [r for r in rows if any(fnmatch.fnmatchcase(r.id, p) for p in only)]


def meta_path(row: Row) -> str:
    return os.path.join(row.dir, "repro_row.json")


def failed_path(row: Row) -> str:
    return os.path.join(row.dir, "repro_failed.json")


def row_meta(row_dir: str) -> Optional[Dict[str, Any]]:
    """The row's ``repro_row.json`` (scale, synthetic, commands), or None before it was started."""
    p = os.path.join(row_dir, "repro_row.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)


def check_row_scale(row: Row, args) -> None:
    """Refuse to run into a row folder started at another scale (or on the other data)."""
    meta = row_meta(row.dir)
    if meta is not None and (float(meta.get("scale", -1)) != float(args.scale)
                             or bool(meta.get("synthetic")) != bool(args.synthetic)):
        raise ReproError(f"{row.dir} holds a run started at scale {meta.get('scale')}"
                         f"{' (synthetic)' if meta.get('synthetic') else ''}; this request is scale "
                         f"{fmt_scale(args.scale)}{' (synthetic)' if args.synthetic else ''}. "
                         "Use another --out, or remove that folder to start over")


def row_missing_reason(row: Row) -> str:
    """Why a row has no result: never started, failed (with the log), or unfinished."""
    failed = failed_path(row)
    if os.path.isfile(failed):
        with open(failed) as f:
            return "failed: " + json.load(f).get("reason", "see the logs")
    if not os.path.isdir(row.dir):
        missing = [p for p in row.requires if not os.path.exists(p)]
        return "not run" + (f" (needs {missing[0]})" if missing else "")
    todo = [s.name for s in row.steps if not s.done()]
    return f"unfinished ({', '.join(todo)} not done; rerun the same command to resume)" if todo else "no result"

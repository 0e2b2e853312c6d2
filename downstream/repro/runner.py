"""What every table does with its rows: list them, print the dry-run plan, or run the steps not done
yet (a finished step is never re-run, an interrupted one resumes, every step logs to
``<row>/logs/<step>.log``), then build and write the table."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ReproError
from .paths import REPO
from .recipe import recipe_lines
from .rows import Row, check_row_scale, failed_path, meta_path, row_meta, select_rows
from .scaling import fmt_scale
from .table import Table


def print_plan(rows: Sequence[Row], args, out=None) -> None:
    """The exact commands of each row, its recipe values (``# recipe:`` lines) and notes, and which steps are
    done (skipped) or would resume."""
    out = out or sys.stdout
    print(f"# {args.table}: {len(rows)} row(s), scale {fmt_scale(args.scale)}"
          f"{' (synthetic)' if args.synthetic else ''}, output {args.out}", file=out)
    for row in rows:
        print(f"\n# --- {row.id}: {row.label}", file=out)
        for line in recipe_lines(row.recipe):
            print(line, file=out)
        for note in row.notes:
            print(f"# note: {note}", file=out)
        for path, how in row.requires.items():
            state = "present" if os.path.exists(path) else "MISSING"
            print(f"#   needs {path} ({state}; {how})", file=out)
        for s in row.steps:
            if s.done():
                print(f"# [{s.name}] done, would be skipped:", file=out)
                print("#   " + s.command(), file=out)
            elif s.partial() and s.resume_argv:
                print(f"# [{s.name}] interrupted, would resume:", file=out)
                print(s.command(resume=True), file=out)
            else:
                print(f"# [{s.name}]", file=out)
                print(s.command(), file=out)


def tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError:
        return ""
    return "".join("    | " + x for x in lines)


def _step_env() -> Dict[str, str]:
    """The environment of every step: this interpreter's bin/ first on PATH (``mim``, ``torchrun``) and
    this checkout first on PYTHONPATH, so the subprocesses run the same code as the table."""
    path = os.environ.get("PATH", "")
    venv_bin = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=venv_bin + os.pathsep + path,
                PYTHONPATH=REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))


def run_rows(rows: Sequence[Row], args) -> Dict[str, str]:
    """Run every step not done yet; returns ``{row id: failure reason}`` for rows that failed."""
    failures: Dict[str, str] = {}
    for row in rows:
        check_row_scale(row, args)
    env_base = _step_env()
    for row in rows:
        missing = [f"{p} ({how})" for p, how in row.requires.items() if not os.path.exists(p)]
        if missing:
            failures[row.id] = "needs " + "; ".join(missing)
            print(f"[{args.table}] {row.id}: skipped, needs {'; '.join(missing)}", flush=True)
            continue
        os.makedirs(os.path.join(row.dir, "logs"), exist_ok=True)
        meta = row_meta(row.dir) or {"row": row.id, "label": row.label, "scale": args.scale,
                                     "synthetic": bool(args.synthetic),
                                     "started": datetime.datetime.now().isoformat(timespec="seconds")}
        meta["commands"] = {s.name: s.command() for s in row.steps}
        meta.update(row.info)
        with open(meta_path(row), "w") as f:
            json.dump(meta, f, indent=2)
        failed_marker = failed_path(row)
        for s in row.steps:
            if s.done():
                print(f"[{args.table}] {row.id} / {s.name}: done, skipped", flush=True)
                continue
            resume = bool(s.partial() and s.resume_argv)
            if s.before is not None:
                try:
                    s.before()
                except (OSError, ValueError, ReproError) as e:
                    failures[row.id] = f"{s.name}: could not prepare its inputs: {e}"
                    print(f"[{args.table}] {row.id}: FAILED: {failures[row.id]}", flush=True)
                    break
            log = os.path.join(row.dir, "logs", f"{s.name}.log")
            print(f"[{args.table}] {row.id} / {s.name}: {'resuming' if resume else 'running'} "
                  f"(log {log})\n    {s.command(resume)}", flush=True)
            with open(log, "a") as f:
                f.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')} {s.command(resume)}\n")
                f.flush()
                rc = subprocess.call(s.resume_argv if resume else s.argv, cwd=REPO, env={**env_base, **s.env},
                                     stdout=f, stderr=subprocess.STDOUT)
            if rc != 0 or not s.done():
                reason = (f"{s.name} exited with status {rc}" if rc != 0
                          else f"{s.name} exited 0 but its results are not there") + f" (log {log})"
                failures[row.id] = reason
                with open(failed_marker, "w") as f:
                    json.dump({"step": s.name, "rc": rc, "log": log, "reason": reason}, f, indent=2)
                print(f"[{args.table}] {row.id}: FAILED: {reason}\n" + tail(log), flush=True)
                break
        else:
            if os.path.exists(failed_marker):
                os.remove(failed_marker)
    return failures


def main_flow(args, rows: List[Row], build_table: Callable[[List[Row]], Table]) -> int:
    """What every table does after building its rows: list / dry-run / run, then the table."""
    if args.list:
        for r in rows:
            print(f"{r.id:32s} {r.label}")
        return 0
    picked = select_rows(rows, args.only)
    if args.dry_run:
        print_plan(picked, args)
        return 0
    failures: Dict[str, str] = {}
    if not args.collect:
        failures = run_rows(picked, args)
    table = build_table(picked)
    md, js = table.write()
    print()
    print(table.markdown())
    print(f"table: {md}\n       {js}")
    if failures:
        print(f"{len(failures)} row(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()),
              file=sys.stderr)
        return 1
    return 0


def run_main(parse: Callable[..., Tuple[Any, List[Row], Callable]], argv: Optional[Sequence[str]] = None,
             prog: Optional[str] = None) -> int:
    """A table's ``main``: parse (building the rows), then :func:`main_flow`; a :class:`ReproError` is
    printed as ``error: ...`` with exit status 2."""
    try:
        args, rows, build_table = parse(argv, prog=prog)
        return main_flow(args, rows, build_table)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

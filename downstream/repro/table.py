"""A results table: our number next to the paper's (a value, a range or n/a, with its source) and the
difference, written as markdown and JSON with the scale and a smoke/synthetic warning in the header."""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .errors import Missing, NoDetections
from .papers import PaperRef
from .rows import Row, row_meta, row_missing_reason
from .scaling import fmt_scale

MISSING = "—"
Number = Union[float, Tuple[float, float], None]


@dataclass
class Paper:
    """A number from a paper: a value, a ``(low, high)`` range, or None (n/a), and where it is from."""

    value: Number = None
    source: str = ""

    def text(self, digits: int = 1) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, tuple):
            return f"{self.value[0]:.{digits}f}–{self.value[1]:.{digits}f}"
        return f"{self.value:.{digits}f}"

    def diff(self, ours: Optional[float]) -> Optional[float]:
        """ours − paper; for a range, the distance to its nearest end (0 inside)."""
        if ours is None or self.value is None:
            return None
        if isinstance(self.value, tuple):
            lo, hi = self.value
            return 0.0 if lo <= ours <= hi else (ours - lo if ours < lo else ours - hi)
        return ours - self.value


NA = Paper(None, "no paper number quoted for this row")


@dataclass
class Entry:
    row: str          # label in the paper's form
    metric: str
    ours: Optional[float]
    paper: Paper = field(default_factory=lambda: NA)
    missing: str = ""  # why ours is absent
    row_id: str = ""
    unit: str = "%"
    digits: int = 1


@dataclass
class Table:
    """A results table: entries (our number next to the paper's), gains (a difference between two
    of our rows next to the paper's stated difference), notes, extra markdown blocks and the papers cited."""

    key: str
    title: str
    args: Any
    entries: List[Entry] = field(default_factory=list)
    gains: List[Entry] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    blocks: List[str] = field(default_factory=list)
    context: Dict[str, Any] = field(default_factory=dict)
    stem: str = "table"  # <out>/<stem>.md and <stem>.json
    papers: List[PaperRef] = field(default_factory=list)

    def lookup(self, row_id: str, metric: str) -> Optional[float]:
        for e in self.entries:
            if e.row_id == row_id and e.metric == metric:
                return e.ours
        return None

    def add_gain(self, label: str, metric: str, row_b: str, row_a: str, paper: Paper, digits: int = 1) -> None:
        """Our ``row_b − row_a`` for ``metric`` next to the paper's stated gain."""
        b, a = self.lookup(row_b, metric), self.lookup(row_a, metric)
        ours = None if a is None or b is None else b - a
        miss = "" if ours is not None else f"needs both {row_b} and {row_a}"
        self.gains.append(Entry(label, metric, ours, paper, miss, digits=digits))

    # ---- header
    def header(self) -> List[str]:
        a = self.args
        smoke = float(a.scale) != 1.0
        lines = [f"# {self.title}", ""]
        lines.append(f"- scale: **{fmt_scale(a.scale)}**"
                     + (" — **SMOKE RUN: a shortened schedule, not a reproduction; do not compare with the paper**"
                        if smoke else " (the paper's schedule)"))
        if a.synthetic:
            lines.append("- data: **SYNTHETIC** (tools/make_synthetic.py or tools/make_synthetic_small.py) — "
                         "exercises the chain only; the numbers say nothing about the paper's datasets")
        else:
            lines.append(f"- data: {a.data}")
        for k, v in self.context.items():
            lines.append(f"- {k}: {v}")
        lines.append(f"- runs: {a.out}")
        lines.append(f"- written: {datetime.datetime.now().isoformat(timespec='seconds')}")
        return lines

    def _cell(self, v: Optional[float], digits: int) -> str:
        return MISSING if v is None else f"{v:.{digits}f}"

    def _diff(self, d: Optional[float], digits: int) -> str:
        return MISSING if d is None else f"{d:+.{digits}f}"

    def markdown(self) -> str:
        lines = self.header() + ["", "| row | metric | ours | paper | Δ (ours − paper) | paper source |",
                                 "|---|---|---:|---:|---:|---|"]
        for e in self.entries:
            ours = self._cell(e.ours, e.digits) if e.ours is not None else f"{MISSING} ({e.missing})"
            lines.append(f"| {e.row} | {e.metric} | {ours} | {e.paper.text(e.digits)} | "
                         f"{self._diff(e.paper.diff(e.ours), e.digits)} | {e.paper.source} |")
        if self.gains:
            lines += ["", "Differences between rows (the papers state some results only as gains):", "",
                      "| comparison | metric | ours | paper | Δ (ours − paper) | paper source |",
                      "|---|---|---:|---:|---:|---|"]
            for e in self.gains:
                ours = f"{e.ours:+.{e.digits}f}" if e.ours is not None else f"{MISSING} ({e.missing})"
                p = e.paper
                ptxt = "n/a" if p.value is None else (p.text(e.digits) if isinstance(p.value, tuple)
                                                      else f"{p.value:+.{e.digits}f}")
                lines.append(f"| {e.row} | {e.metric} | {ours} | {ptxt} | "
                             f"{self._diff(p.diff(e.ours), e.digits)} | {p.source} |")
        for b in self.blocks:
            lines += ["", b]
        if self.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        if self.papers:
            lines += ["", "Papers:"] + [f"- {p.reference()}" for p in self.papers]
        return "\n".join(lines) + "\n"

    def to_json(self) -> Dict[str, Any]:
        a = self.args

        def ent(e: Entry) -> Dict[str, Any]:
            return {"row": e.row, "row_id": e.row_id, "metric": e.metric, "ours": e.ours,
                    "paper": list(e.paper.value) if isinstance(e.paper.value, tuple) else e.paper.value,
                    "paper_source": e.paper.source, "diff": e.paper.diff(e.ours), "missing": e.missing or None}

        return {"table": self.key, "title": self.title, "scale": a.scale, "smoke": float(a.scale) != 1.0,
                "synthetic": bool(a.synthetic), "data": a.data, "out": a.out, "context": self.context,
                "entries": [ent(e) for e in self.entries], "gains": [ent(e) for e in self.gains],
                "notes": self.notes, "papers": [p.reference() for p in self.papers]}

    def write(self) -> Tuple[str, str]:
        os.makedirs(self.args.out, exist_ok=True)
        md = os.path.join(self.args.out, f"{self.stem}.md")
        js = os.path.join(self.args.out, f"{self.stem}.json")
        with open(md, "w") as f:
            f.write(self.markdown())
        with open(js, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        return md, js


def row_value(row: Row, args, read: Callable[[], Dict[str, Any]]) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(numbers, "")`` from a finished row, or ``(None, reason)``: wrong scale, failed, missing."""
    meta = row_meta(row.dir)
    if meta is not None and (float(meta.get("scale", -1)) != float(args.scale)
                             or bool(meta.get("synthetic")) != bool(args.synthetic)):
        return None, (f"run made at scale {meta.get('scale')}{' (synthetic)' if meta.get('synthetic') else ''};"
                      f" collect it with --scale {meta.get('scale')}{' --synthetic' if meta.get('synthetic') else ''}")
    try:
        return read(), ""
    except NoDetections as e:  # the test ran: say what it found
        return None, str(e)
    except Missing as e:
        reason = row_missing_reason(row)
        return None, reason if reason != "no result" else str(e)

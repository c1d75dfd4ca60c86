"""Experiment results: per-pair records, per-method summaries, and their JSON, CSV, table and progress bar."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import numpy as np

# The summary keys, in table order, with their column titles and formats.
SUMMARY_COLUMNS = {
    "pairs": ("pairs", "{:d}"),
    "md_before": ("MD before", "{:.2f}"),
    "md_after": ("MD after", "{:.2f}"),
    "found_after": ("found", "{:.0%}"),
    "success_rate": ("success", "{:.0%}"),
    "mse_before": ("MSEx100 I1", "{:.3f}"),
    "mse": ("MSEx100", "{:.3f}"),
    "lpips_before": ("LPIPSx10 I1", "{:.3f}"),
    "lpips": ("LPIPSx10", "{:.3f}"),
    "md_ratio_final": ("MD(T)/MD(0)", "{:.3f}"),
    "seconds_to_half": ("s to 1/2", "{:.2f}"),
    "outside_change": ("outside Δ", "{:.2f}"),
    "latent_outside_change": ("latent's outside Δ", "{:.2f}"),
    "steps": ("steps", "{:.1f}"),
    "seconds_per_edit": ("s/edit", "{:.3f}"),
    "fid": ("FID", "{:.2f}"),
}

Progress = Callable[[str], None]  # called once per finished job with a label


@dataclasses.dataclass
class ExperimentResult:
    """What a protocol returns."""
    protocol: str                     # 'landmarks', 'reconstruction', 'decay' or 'nearest'
    settings: dict[str, Any]          # everything needed to run it again
    methods: dict[str, dict[str, Any]]  # method (or variant) -> summary numbers (SUMMARY_COLUMNS keys)
    pairs: list[dict[str, Any]]       # one record per (method, pair)
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. "FID unavailable: ..."

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form: protocol, settings, methods, pairs (and notes)."""
        return _clean({"protocol": self.protocol, "settings": self.settings, "methods": self.methods,
                       "pairs": self.pairs, "notes": self.notes})

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    def write_csv(self, path: str | Path) -> None:
        """One row per method: the method, then every summary key any method has."""
        keys = [k for k in SUMMARY_COLUMNS if any(k in s for s in self.methods.values())]
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["method", *keys])
            for name, s in self.methods.items():
                out.writerow([name, *("" if _missing(s.get(k)) else s[k] for k in keys)])

    def table(self) -> str:
        """The summary as an aligned text table, one row per method."""
        keys = [k for k in SUMMARY_COLUMNS if any(k in s for s in self.methods.values())]
        rows = [["method", *(SUMMARY_COLUMNS[k][0] for k in keys)]]
        for name, s in self.methods.items():
            rows.append([name, *("n/a" if _missing(s.get(k)) else SUMMARY_COLUMNS[k][1].format(s[k]) for k in keys)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        return "\n".join(lines + self.notes)


class Interrupted(Exception):
    """Raised by a progress callback to stop a protocol between two edits. The protocol attaches what it
    finished: `records` (the per-pair records so far) and, where it can summarize them, `result`."""
    records: list[dict[str, Any]] = []
    result: "ExperimentResult | None" = None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and inf become null, numpy scalars plain numbers; keys starting '_' (images) dropped."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items() if not str(k).startswith("_")}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


class ProgressBar:
    """A one-line progress bar with ETA on a stream (stderr): redrawn in place on a terminal, else every 10%."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28):
        self.total, self.stream, self.width = max(total, 1), stream or sys.stderr, width
        self.done = 0
        self.t0 = time.perf_counter()
        self.tty = self.stream.isatty()

    def __call__(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        fill = int(self.width * self.done / self.total)
        line = (f"[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} "
                f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}  {label}")
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120) + ("\n" if self.done >= self.total else ""))
        elif self.done == self.total or self.done % max(self.total // 10, 1) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"

#!/usr/bin/env python
"""A small mutation pass: plant one bug at a time, run the tests that should catch it, restore the file.

Usage: python tools/mutate.py [--repo DIR] [--only ID[,ID...]] [--json OUT.json] [--table OUT.md]
       python tools/mutate.py --from-json A.json,B.json --table OUT.md   (the table of saved passes, in list order)
Each mutant is (id, file, exact original snippet, replacement, pytest arguments, description). The snippet
must occur exactly once. The file is always restored with `git checkout -- FILE`, so run it on a clean tree.
A mutant is caught when a test fails (pytest exit 1, or a named failure followed by an abort at exit) or the run
hangs past --timeout (exit 124); a collection error (exit 2-4, retried) or no test collected (5) is not counted.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTEST = "HF_HUB_OFFLINE=1 timeout {t} python -m pytest -x -q -p no:cacheprovider"


KEYS = ("id", "file", "old", "new", "tests", "desc")


def load_mutants(path: Path) -> list[dict]:
    """The MUTANTS list of `path` (a Python file of data: tuples in the order of KEYS, optionally a 7th, why a
    survivor is harmless)."""
    space: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), space)
    return [{**dict(zip(KEYS, m[:6])), **({"harmless": m[6]} if len(m) > 6 else {})} for m in space["MUTANTS"]]


def plant(repo: Path, m: dict) -> int:
    """Apply mutant `m`; returns the 1-based line of the snippet."""
    f = repo / m["file"]
    text = f.read_text()
    n = text.count(m["old"])
    if n != 1:
        raise SystemExit(f"{m['id']}: snippet found {n} times in {m['file']}")
    line = text[:text.index(m["old"])].count("\n") + 1
    f.write_text(text.replace(m["old"], m["new"]))
    return line


def run_one(repo: Path, m: dict, timeout: int) -> dict:
    subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "--", m["file"]], check=True)  # clean before
    try:
        line = plant(repo, m)
        cmd = PYTEST.format(t=timeout) + " " + m["tests"]
        t0 = time.time()
        for attempt in range(6):  # a collection error (exit 2-4) may be a shared environment being updated: retry
            p = subprocess.run(cmd, shell=True, cwd=repo, capture_output=True, text=True)
            if p.returncode not in (2, 3, 4):
                break
            time.sleep(30)
        failed = [l.split(" ")[1] for l in p.stdout.splitlines() if l.startswith("FAILED ")]
        caught = is_caught(p.returncode, failed)
        if not caught and p.returncode != 0:  # 2-4: collection or usage error, 5: no tests collected
            print(f"  {m['id']}: pytest exit {p.returncode} (not counted as caught):\n{p.stdout[-800:]}", file=sys.stderr)
        return {**m, "line": line, "caught": caught, "rc": p.returncode, "seconds": round(time.time() - t0, 1),
                "failed": failed[:1] or (["timeout"] if p.returncode == 124 else [])}
    finally:
        subprocess.run(["git", "-C", str(repo), "checkout", "--", m["file"]], check=True)


def is_caught(rc: int, failed: list[str]) -> bool:
    """A test failed (exit 1; or a named failure, then an abort at exit: 134), or the run hung (124)."""
    return rc in (1, 124) or (rc not in (0, 5) and bool(failed))


def table(results: list[dict]) -> str:
    rows = ["| id | where | mutant | caught by |", "|---|---|---|---|"]
    for r in results:
        by = (r["failed"][0] if r["failed"] else "(failed)") if r["caught"] else "survived: " + r.get("harmless", "?")
        rows.append(f"| {r['id']} | {r['file']}:{r['line']} | {r['desc']} | {by} |")
    caught = sum(r["caught"] for r in results)
    return "\n".join(rows) + f"\n\nCaught {caught} of {len(results)} ({100 * caught / max(len(results), 1):.0f}%).\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(HERE.parent))
    ap.add_argument("--mutants", default=str(HERE / "mutants.py"))
    ap.add_argument("--only", default="")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--json", default="")
    ap.add_argument("--table", default="", help="write the markdown table here")
    ap.add_argument("--from-json", default="", help="no run: the table of these saved passes")
    args = ap.parse_args()
    repo = Path(args.repo).resolve()
    mutants = load_mutants(Path(args.mutants))
    if args.from_json:
        saved = {r["id"]: r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())}
        results = [{**saved[m["id"]], **m} for m in mutants if m["id"] in saved]  # today's descriptions and notes
        for r in results:
            r["caught"] = is_caught(r["rc"], r["failed"]) if "rc" in r else r["caught"]
        Path(args.table).write_text(table(results)) if args.table else print(table(results))
        return
    if args.only:
        by_id = {m["id"]: m for m in mutants}
        mutants = [by_id[i] for i in args.only.split(",")]  # in the order asked
    results = []
    for m in mutants:
        r = run_one(repo, m, args.timeout)
        results.append(r)
        if args.json:  # after every mutant, so an interrupted pass keeps what it measured
            Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"{r['id']:5} {'CAUGHT  ' if r['caught'] else 'SURVIVED'} {r['seconds']:6.1f}s {r['file']}:{r['line']} "
              f"{r['desc']}  {r['failed'][0] if r['failed'] else ''}", flush=True)
    print(table(results))
    if args.table:
        Path(args.table).write_text(table(results))


if __name__ == "__main__":
    main()

"""Rows lost when a store is read while a run writes it, and the run is then killed (-9).

    python benchmarks/reader_kill.py [--src CHECKOUT] [--before 2] [--after 3]

A writer process (qbench's RunWriter, from --src) journals `--before` rows, a reader process
loads the store (as `qbench report`, `compare` or `dashboard` do), the writer journals
`--after` more rows and is killed with SIGKILL. A fresh reader then loads the store (after the
writer-side recovery where the checkout has one) and the script prints how many of the rows
the writer journalled it finds. Run it with --src pointing at an older checkout for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WRITER = """
import sys
from datetime import UTC, datetime
from qbench.store.parquet import RunWriter

def row(i):
    return {"cell_id": f"cell{i}", "suite": "s", "model": "m", "method": "fp32",
            "backend": "b", "device": "d", "batch": 1, "threads": 1, "status": "ok",
            "latency_p50_ms": float(i), "started_at": datetime.now(UTC), "duration_s": 0.1}

writer = RunWriter(sys.argv[1], {"run_id": "r1", "suite": "s", "started_at": datetime.now(UTC)})
before, after = int(sys.argv[2]), int(sys.argv[3])
for i in range(before):
    writer.append(row(i))
print("ready", flush=True)
sys.stdin.readline()
for i in range(before, before + after):
    writer.append(row(i))
print("done", flush=True)
sys.stdin.readline()
"""

READER = """
import sys
from qbench.store import parquet
if sys.argv[2] == "recover" and "warn" in parquet.recover_journals.__code__.co_varnames:
    parquet.recover_journals(sys.argv[1])  # the next run's first step (writer-side)
runs, results = parquet.load(sys.argv[1])
print(len(results))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(REPO), help="qbench checkout to test")
    parser.add_argument("--before", type=int, default=2, help="rows journalled before the read")
    parser.add_argument("--after", type=int, default=3, help="rows journalled after the read")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=args.src)
    with tempfile.TemporaryDirectory() as store:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, store, str(args.before), str(args.after)],
            env=env,
            cwd=store,  # not this checkout's folder: `python -c` puts the cwd first on sys.path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdin is not None and writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        read = subprocess.run([sys.executable, "-c", READER, store, "read"], env=env, cwd=store,
                              capture_output=True, text=True, check=True)  # fmt: skip
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "done"
        writer.kill()
        writer.wait()
        after = subprocess.run([sys.executable, "-c", READER, store, "recover"], env=env, cwd=store,
                               capture_output=True, text=True, check=True)  # fmt: skip
    journalled = args.before + args.after
    found = int(after.stdout.strip())
    print(f"qbench source: {args.src}")
    seen = read.stdout.strip()
    print(f"rows journalled {journalled}, seen by the reader during the run {seen}, "
          f"found after kill -9 {found}, lost {journalled - found}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a LiteRT cell's measure process, and which other runtimes it imported.

    python benchmarks/measure_isolation.py [--src PATH] [--models digits_cnn,mobilenet_v2]

Runs `qbench run` on LiteRT fp32 cells (1 thread, batch 1) into a throw-away store and prints
each cell's `peak_rss_mb` (the measure process's VmHWM), then runs one measure stage under a
probe that lists the heavy modules (onnxruntime, onnx, torch) present in that process at its
end. `--src` measures another checkout of qbench (e.g. a worktree of an older commit) with this
script, for a before/after comparison on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CELL = """
import json, sys
from qbench.plan import build_plan
from qbench.suite.loader import load_suite
cell = build_plan(*load_suite(sys.argv[1])).runnable[0]
open(sys.argv[2], "w").write(json.dumps(cell.to_json()))
"""

PROBE = """
import json, sys
from qbench import agent
code = agent.main(["measure", sys.argv[1], sys.argv[2]])
tops = {m.split(".")[0] for m in sys.modules}
print(json.dumps(sorted(tops & {"onnxruntime", "onnx", "torch", "tensorflow"})))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(REPO), help="qbench checkout to measure")
    parser.add_argument("--models", default="digits_cnn,mobilenet_v2")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=args.src)
    env.pop("QBENCH_PLUGINS", None)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "iso.yaml").write_text(
            f"name: iso\nmodels: [{', '.join(models)}]\nmethods: [fp32]\nbackends: [litert]\n"
            "measurement: {warmup: 5, min_iters: 20, min_seconds: 0.2}\n"
            "accuracy: {samples: 50}\npower: 'off'\n"
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "qbench.cli",
                "run",
                "iso.yaml",
                "--store",
                "store",
                "--no-report",
                "--json",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:  # 4: no cell ok; the JSON's rows say why
            print(run.stderr, run.stdout[-3000:], file=sys.stderr)
            return 1
        rows = json.loads(run.stdout)["rows"]
        print(f"qbench source: {args.src}")
        for row in rows:
            print(f"{row['cell_id']:<45} {row['status']:<7} peak RSS {row['peak_rss_mb']:.1f} MB")
        # One measure stage again, under the probe: which runtimes did that process import?
        cell_dir = work / "cell"
        cell_dir.mkdir()
        subprocess.run([sys.executable, "-c", CELL, "iso.yaml", "cell/cell.json"], cwd=work,
                       env=env, check=True)  # fmt: skip
        cell_id = json.loads((cell_dir / "cell.json").read_text())["cell_id"]
        agent = [sys.executable, "-m", "qbench.agent"]
        subprocess.run([*agent, "prepare", "cell/cell.json", "cell/prepared.json"], cwd=work,
                       env=env, check=True, capture_output=True)  # fmt: skip
        probe_args = [sys.executable, "-c", PROBE, "cell/cell.json", "cell/m.json"]
        probe = subprocess.run(probe_args, cwd=work, env=env, capture_output=True, text=True,
                               check=True)  # fmt: skip
        heavy = json.loads(probe.stdout.strip().splitlines()[-1])
        print(f"{cell_id}: other runtimes in its measure process: {heavy or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

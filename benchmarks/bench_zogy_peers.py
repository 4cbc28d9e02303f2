"""Run the shared ZOGY peer harness with AstrID's ZOGY added, print and save its table.

The harness (``../shared/bench/zogy_peers.py`` next to the repository) runs each peer
and ours in its own child process on one synthetic pair per size, and reports time,
memory, the FFT floor measured in the same run and score quality. This script calls
it with ``--ours zogy_peer_adapter:zogy_for_bench`` and ``PYTHONPATH`` set to the
repository and this folder, then writes the markdown table to
``benchmarks/results/zogy_peers_cpu.md`` (the full JSON goes to a temporary folder,
or to ``--json``).

The peers live in their own virtual environment, never in AstrID's dependencies
(versions as in ``../shared/bench/README.md``; numpy < 2.4 for sfft)::

    python3.11 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install -U pip wheel "setuptools<70"
    /work/peer-venv/bin/pip install "numpy<2.4" scipy astropy photutils
    /work/peer-venv/bin/pip install --no-build-isolation tinynpydb
    /work/peer-venv/bin/pip install properimage sfft
    /work/peer-venv/bin/pip install -e /work/main --no-deps   # AstrID needs numpy+scipy only

Run (a few minutes; properimage and sfft dominate)::

    /work/peer-venv/bin/python benchmarks/bench_zogy_peers.py \\
        --sizes 512,1024,2048 --peers properimage-truepsf,sfft-core-p0

Any extra arguments after ``--`` go to the harness unchanged.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--peers", default="properimage-truepsf,sfft-core-p0")
    p.add_argument("--ours", default="zogy_peer_adapter:zogy_for_bench")
    p.add_argument("--python", default=sys.executable, help="interpreter of the peer venv")
    p.add_argument("--harness", default=str(ROOT.parent / "shared" / "bench" / "zogy_peers.py"))
    p.add_argument("--out", default=str(HERE / "results" / "zogy_peers_cpu.md"))
    p.add_argument("--json", default=None, help="harness JSON (default: a temporary file)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("extra", nargs="*", help="more harness arguments (after --)")
    args = p.parse_args(argv)

    out_md = Path(args.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json = (Path(args.json) if args.json
                else Path(tempfile.mkdtemp(prefix="zogy_peers_")) / "results.json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    cmd = [args.python, args.harness, "--sizes", args.sizes, "--peers", args.peers,
           "--ours", args.ours, "--repeats", str(args.repeats), "--out", str(out_json),
           *args.extra]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        return done.returncode
    table = done.stdout.split("\nJSON written")[0].rstrip() + "\n"
    print(table)
    out_md.write_text(f"<!-- {' '.join(cmd[1:])} -->\n\n{table}")
    print(f"table written to {out_md} (JSON: {out_json})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

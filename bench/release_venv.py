"""``python -m bench.release_venv uv|pip [--cache DIR]``: build one release's venv the way the
deploy agent does on a VPS (``deploy.agent.build_venv``: uv, ``--no-index --no-deps`` from the
wheelhouse), or — the anchor — the same wheels with pip alone (run from its wheel, then the
project editable, then ``pip check``), then remove it. Timed from outside, side by side:

    farm-bench -n 5 --vs ".venv/bin/python -m bench.release_venv pip" -- \\
        .venv/bin/python -m bench.release_venv uv

The wheelhouse is the deploy's own (built from requirements.lock on first use, cached);
``--cache`` is uv's cache, standing for the target's ``shared/uv-cache`` (warm after a run).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

from deploy import agent, wheelhouse

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.release_venv", description=__doc__)
    parser.add_argument("installer", choices=("uv", "pip"))
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "bdt-bench-uv-cache")
    args = parser.parse_args()
    lock = ROOT / "requirements.lock"
    wh = wheelhouse.ensure(lock, hashlib.sha256(lock.read_bytes()).hexdigest())
    names = wheelhouse.resolve(wh, ROOT)
    venv = Path(tempfile.mkdtemp(prefix="bdt-bench-venv-")) / ".venv"
    try:
        if args.installer == "pip":
            pip_build(venv, wh, [n for n in names if not n.startswith("uv-")])
        else:
            failed = agent.build_venv(
                types.SimpleNamespace(wheelhouse=wh.path, uv_cache=args.cache), ROOT, venv,
                argparse.Namespace(wheels=base64.b64encode(json.dumps(names).encode()),
                                   pip_wheel=wh.pip_wheel))
            if failed:
                raise SystemExit(f"the venv was not built: {failed}")
    finally:
        shutil.rmtree(venv.parent, ignore_errors=True)


def pip_build(venv: Path, wh: wheelhouse.Wheelhouse, names: list[str]) -> None:
    """The anchor: pip alone, as the agent did before uv (same wheels, same flags)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    for argv in ([py, wh.path / wh.pip_wheel / "pip", "install", *agent.PIP_OPTS,
                  *(wh.path / n for n in names)],
                 [py, "-m", "pip", "install", *agent.PIP_OPTS, "--no-build-isolation", "-e", "."],
                 [py, "-m", "pip", "check"]):
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)


if __name__ == "__main__":
    main()

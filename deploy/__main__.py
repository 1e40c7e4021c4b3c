"""``python -m deploy deploy|rollback|status|logs --vps USER@HOST [options]`` (the Makefile's
``deploy``, ``rollback``, and ``status``/``logs`` with ``VPS=…``)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from deploy.deployer import Options, deploy, rollback, run_checked
from deploy.remote import Target

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    p.add_argument("command", choices=("deploy", "rollback", "status", "logs"))
    p.add_argument("--vps", required=True, metavar="USER@HOST")
    p.add_argument("--port", type=int, help="ssh port")
    p.add_argument("--identity", help="ssh private key")
    p.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to ssh as -o KEY=VALUE (repeatable)")
    p.add_argument("--base", default="/opt/bitdaytrader", help="install directory on the target")
    p.add_argument("--source", type=Path, default=ROOT, help="the git checkout to deploy")
    p.add_argument("--keep", type=int, default=3, help="releases kept on the target")
    p.add_argument("--extras", default="", help="project extras for the venv, e.g. live")
    p.add_argument("--config", type=Path, help="TOML config installed as shared/config.toml")
    p.add_argument("--health-timeout", type=float, default=300.0)
    p.add_argument("--allow-dirty", action="store_true",
                   help="deploy uncommitted changes (the release id says so)")
    p.add_argument("--min-free-mib", type=int, default=512)
    p.add_argument("--lines", type=int, default=50, help="logs: lines of each log")
    p.add_argument("--no-follow", action="store_true", help="logs: print and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    user = args.vps.split("@", 1)[0] if "@" in args.vps else getpass.getuser()
    target = Target(args.vps, base=args.base.rstrip("/"), port=args.port,
                    identity=args.identity, options=tuple(args.ssh_option),
                    sudo=user != "root")
    if args.command == "status":
        return target.interactive("status")
    if args.command == "logs":
        return target.interactive("logs", "--lines", str(args.lines),
                                  *(() if args.no_follow else ("--follow",)))
    opts = Options(keep=args.keep, extras=args.extras, config=args.config,
                   health_timeout=args.health_timeout, allow_dirty=args.allow_dirty,
                   min_free_mib=args.min_free_mib)
    if args.command == "deploy":
        return run_checked(deploy, target, args.source, opts)
    return run_checked(rollback, target, opts)


if __name__ == "__main__":
    sys.exit(main())

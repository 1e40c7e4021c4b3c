"""``bdt config show`` and ``bdt keys``: configuration and CURVE keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared.bus.endpoints import generate_curve_keys
from shared.cli.render import print_json
from shared.cli.verbs import JSON, opt, verb
from shared.config import Config


@verb("config show", "the merged configuration and where each part came from",
      JSON)
def cmd_config_show(cfg: Config, args: argparse.Namespace) -> int:
    if args.json:
        print_json({"sources": cfg.sources, "config": cfg.as_dict()})
        return 0
    print("# sources: " + ", ".join(cfg.sources))
    for section, values in cfg.as_dict().items():
        print(f"\n[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}")
    return 0


@verb("keys", "write CURVE server and client keypairs for bus.transport = 'tcp'",
      opt("directory", type=Path, help="where to write them (then set bus.curve_keys_dir)"))
def cmd_keys(cfg: Config, args: argparse.Namespace) -> int:
    for path in generate_curve_keys(args.directory):
        print(path)
    print(f"set bus.curve_keys_dir = {str(args.directory.absolute())!r} (secret files are 0600)")
    return 0

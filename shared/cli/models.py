"""``bdt train``, ``bdt predict``, ``bdt models reload``: the model set."""

from __future__ import annotations

import argparse
import sys

from shared.cli.render import parse_when, print_json
from shared.cli.verbs import op_verb, opt, send, verb
from shared.config import Config
from shared.protocol import predictor


@verb("train", "train a model set from the stored bars and promote it",
      opt("--from", dest="start", type=parse_when, help="epoch ms or ISO date (UTC)"),
      opt("--to", dest="end", type=parse_when, help="epoch ms or ISO date (UTC), exclusive"),
      opt("--if-missing", action="store_true", help="only when none is promoted yet"),
      opt("--json", action="store_true"))
def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    from shared.models.training import TrainingError, train  # heavy imports only here

    try:
        result = train(cfg, args.start, args.end, if_missing=args.if_missing)
    except TrainingError as exc:
        print(f"bdt train: {exc}", file=sys.stderr)
        if args.if_missing:      # `make run` on too little data: start anyway, without a model
            print("bdt train: starting without a model: the predictor says so and the bot "
                  "trades nothing new until `bdt train` succeeds", file=sys.stderr)
            return 0
        return 1
    if args.json:
        print_json(result)
    elif not result["trained"]:
        print(f"model {result['version']} already promoted; nothing to do")
    else:
        print(f"trained and promoted {result['version']} on {result['source']}")
        for key, value in result["metrics"].items():
            print(f"  {key}: {value}")
    return 0


@op_verb(predictor.OPS, "reload")
def cmd_reload(cfg: Config, args: argparse.Namespace) -> int:
    reply = send(cfg, args)
    if reply["ok"]:
        print(f"predictor runs model {reply['model_version']}")
        return 0
    print(f"predictor kept model {reply['model_version']}: {reply['error']}", file=sys.stderr)
    return 1

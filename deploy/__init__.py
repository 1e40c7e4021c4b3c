"""Deploy bitdaytrader to a VPS over ssh: releases, a systemd unit with delegated cgroup v2,
a health check and rollback (``python -m deploy``; ``make deploy|rollback|status|logs VPS=…``).

Runs here: __main__ (the command line), deployer (the steps), source (release id and files),
wheelhouse (wheels from requirements.lock, cached), preflight, remote (ssh, rsync).
Runs on the target: agent (stdlib only, sent over ssh for each step), start-stack (the
launcher the unit runs), unit and migrate (in the release's own venv).
"""

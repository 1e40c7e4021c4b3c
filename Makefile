# bitdaytrader — the operator's front door. `make run` and `make test` install what is missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PIP     := $(PY) -m pip --disable-pip-version-check -q
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test bench status logs lint lock clean deploy rollback

install: $(STAMP)

# Exact versions from requirements.lock, so the VPS runs what CI tested; quick when done.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Foreground supervisord with the whole stack; Ctrl-C stops every program, then supervisord.
# The first run trains a model set (in the batch slice) so the predictor has one to load.
run: install
	@mkdir -p var/log && install -d -m 0700 var/run
	BDT_VAR=$(CURDIR)/var bdt cgexec batch -- bdt train --if-missing
	supervisord -c supervisord.conf

test: install
	$(VENV)/bin/pytest

bench: install
	$(PY) -m bench

status: install
ifdef VPS
	@$(DEPLOY) status $(DEPLOY_ARGS)
else
	@bdt status
endif

logs: $(if $(VPS),install)
ifdef VPS
	@$(DEPLOY) logs $(DEPLOY_ARGS) $(if $(filter 0,$(FOLLOW)),--no-follow)
else
	tail -n 50 -F var/log/*.log
endif

# The stack on a VPS over ssh (docs/deploy.md): releases, a systemd unit with delegated cgroup v2,
# a health check, rollback. `make status VPS=…` and `make logs VPS=… [FOLLOW=0]` run there.
#   make deploy VPS=user@host [PORT=22] [SSH_KEY=~/.ssh/id] [SSH_OPTS="Key=Value …"]
#        [BASE=/opt/bitdaytrader] [KEEP=3] [CONFIG=prod.toml] [EXTRAS=live] [SOURCE=checkout]
#        [ALLOW_DIRTY=1] [HEALTH_TIMEOUT=300]
#   make rollback VPS=user@host [PORT=…]
DEPLOY      = $(PY) -m deploy
DEPLOY_ARGS = --vps $(VPS) $(if $(PORT),--port $(PORT)) $(if $(SSH_KEY),--identity $(SSH_KEY)) \
	$(foreach o,$(SSH_OPTS),--ssh-option $(o)) $(if $(BASE),--base $(BASE)) \
	$(if $(KEEP),--keep $(KEEP)) $(if $(CONFIG),--config $(CONFIG)) \
	$(if $(EXTRAS),--extras $(EXTRAS)) $(if $(SOURCE),--source $(SOURCE)) \
	$(if $(ALLOW_DIRTY),--allow-dirty) $(if $(HEALTH_TIMEOUT),--health-timeout $(HEALTH_TIMEOUT))

deploy rollback: install
	@test -n "$(VPS)" || { echo "usage: make $@ VPS=user@host [PORT=…] (docs/deploy.md)" >&2; exit 2; }
	$(DEPLOY) $@ $(DEPLOY_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Re-resolve the lock from pyproject.toml (then commit requirements.lock).
lock:
	rm -rf build/lockvenv && python3 -m venv build/lockvenv
	build/lockvenv/bin/pip install -q --disable-pip-version-check ".[dev,live,bench,dask,dashboard]"
	build/lockvenv/bin/pip freeze --all --exclude-editable | grep -v -E '^(pip|bitdaytrader)[= ]' \
		> requirements.lock
	rm -rf build/lockvenv

clean:
	rm -rf $(VENV) build *.egg-info

# bitdaytrader — the operator's front door. `make run` and `make test` install what is missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PIP     := $(PY) -m pip --disable-pip-version-check -q
UV      := $(VENV)/bin/uv
LOCK    := requirements.lock
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test bench status logs lint lock clean deploy rollback

install: $(STAMP)

# Exact versions and hashes from requirements.lock, so the VPS runs what CI tested; quick when
# done. uv (itself pinned and hashed in the lock) installs it; pip does when uv cannot be had,
# or with NO_UV=1. Bytecode is compiled at install (uv does not by default, and a process that
# imports uncompiled modules compiles ~1,000 of them at every start: the predictor took 9.4 s
# to import instead of 3.6 s), the project's own modules too.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) or sys.platform != "linux")' \
	    || { echo "make install: $(LOCK) is for CPython 3.11 on Linux; $(PY) is $$($(PY) -V)" >&2; \
	         exit 2; }
	@awk '/^uv==/{p=1} p{print} p && !/\\$$/{exit}' $(LOCK) > $(VENV)/uv.lock.txt
	@if [ -z "$(NO_UV)" ] && $(PIP) install --require-hashes --no-deps -r $(VENV)/uv.lock.txt \
	    && test -x $(UV); then \
	    $(UV) pip sync -q --compile-bytecode --python $(PY) --require-hashes $(LOCK) && \
	    $(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .; \
	else \
	    echo "make install: pip installs the lock$(if $(NO_UV),, (uv could not be installed))" >&2 && \
	    $(PIP) install --require-hashes -r $(LOCK) && \
	    $(PIP) install --no-deps --no-build-isolation -e .; \
	fi
	@$(PY) -m compileall -q shared services scheduler deploy bench >/dev/null
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

# Re-resolve the lock from pyproject.toml with uv (pins kept where still allowed; then commit it).
lock: install
	@test -x $(UV) || { echo "make lock: needs uv, which make install could not install" >&2; exit 2; }
	$(UV) pip compile -q pyproject.toml --all-extras --universal --generate-hashes \
		--custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) build *.egg-info

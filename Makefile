# bitdaytrader — the operator's front door. `make run` and `make test` install what is missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PIP     := $(PY) -m pip --disable-pip-version-check -q
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install run test bench status logs lint lock clean

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
	@bdt status

logs:
	tail -n 50 -F var/log/*.log

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

# trio-things: `make serve` and `make test` work on a fresh machine (they set up .venv first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup nodewot browser iproute mosquitto bench-mqtt screenshots serve test lint typecheck pytest docs bench bench-quick bench-fastpath bench-profile bench-mjpeg soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs,bench]'
	touch $(STAMP)

setup: $(STAMP)

NODEWOT := tests/interop/nodewot

$(NODEWOT)/node_modules: $(NODEWOT)/package-lock.json
	command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)
	npm ci --prefix $(NODEWOT) --quiet --no-audit --no-fund
	touch $@

## Node.js (Debian's, when `npm` is missing) and the pinned node-wot, for the interop test.
nodewot: $(NODEWOT)/node_modules

## Debian's chromium, when /usr/bin/chromium is missing, for the dashboard's browser tests
## (Playwright drives it; it never downloads a browser of its own).
browser:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

## iproute2's `ip`, when missing: the DNS-SD tests (tests/test_dns_sd.py) announce and
## browse only inside network namespaces they create with it.
iproute:
	command -v ip >/dev/null || (apt-get update && apt-get install -y iproute2)

## Debian's mosquitto broker and its clients (mosquitto_sub, mosquitto_pub), when
## missing: the MQTT tests start a broker of their own on a free loopback port.
mosquitto:
	test -x /usr/sbin/mosquitto -a -x /usr/bin/mosquitto_sub || (apt-get update && apt-get install -y mosquitto mosquitto-clients)

## Screenshots of the dashboard for the docs (docs/images/dashboard-*.png).
screenshots: setup browser
	$(BIN)/python -m tests.browser.screenshots

## Serve the built-in demo Things (or CONFIG=path/to/config.toml) on 127.0.0.1:8000.
serve: setup
	$(BIN)/trio-things serve $(CONFIG)

## Lint, type-check, build the docs (warnings are errors) and run every test.
test: lint typecheck docs pytest

lint: setup
	$(BIN)/ruff check trio_things tests

typecheck: setup
	$(BIN)/mypy --strict trio_things

pytest: setup nodewot browser iproute mosquitto
	$(BIN)/pytest -q

docs: setup
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

## Fan-out benchmark beside the reference servers, and trio-things' SSE beside its
## WebSocket (several minutes); writes
## docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks.jsonl. ARGS=... passes options.
bench: setup
	$(BIN)/python -m benchmarks.fanout $(ARGS)

## The same, small and under a minute; prints its tables and writes nothing. Both measure
## the two limits too (pure Python, and C when a compiler is present: benchmarks/servers/).
bench-quick: setup
	$(BIN)/python -m benchmarks.fanout --quick $(ARGS)

## What trio-things' own code adds to each delivery on the fan-out fast path, layer by
## layer, with the kernel's write taken out (seconds; prints a table, writes nothing).
bench-fastpath: setup
	$(BIN)/python -m benchmarks.fastpath $(ARGS)

## Where a delivery's time goes on the real path: trio-things at full speed with 100 and
## 1,000 observers, under py-spy (the bench extra); prints a table per C (a little over a
## minute; writes nothing).
bench-profile: setup
	$(BIN)/python -m benchmarks.profile_fanout $(ARGS)

## MJPEG fan-out: 640x480 JPEG at 30 frames/s to 1, 10 and 50 viewers (frames/s each,
## server CPU), and beside one viewer that never reads (about 2 minutes); writes its
## section of docs/benchmarks.md.
bench-mjpeg: setup
	$(BIN)/python -m benchmarks.mjpeg --write docs/benchmarks.md $(ARGS)

## MQTT fan-out: property changes at 10 Hz published once through a Mosquitto of its own
## to 100, 1,000 and 5,000 subscribers, beside the server's own WebSocket fan-out to as
## many observers (server CPU per update, deliveries/s; about 3 minutes); writes its
## section of docs/benchmarks.md.
bench-mqtt: setup mosquitto
	$(BIN)/python -m benchmarks.mqtt --write docs/benchmarks.md $(ARGS)

## Soak: thousands of connect/disconnect cycles on loopback, then check that they
## left no memory, object, task or observer behind (a few minutes at most).
soak: setup
	$(BIN)/pytest -q -m soak tests/soak

clean:
	rm -rf $(VENV) docs/_build .mypy_cache .pytest_cache .ruff_cache .hypothesis

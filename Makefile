# The two commands: `make run` starts Nestor on its embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test check routes routes-golden openapi-golden config clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,redis,uvloop,orjson,dev]'
	touch $(STAMP)

run: $(STAMP)  ## serve on http://127.0.0.1:8080 (SQLite under var/, in-process bus)
	$(BIN)/nestor serve

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/nestor check

routes: $(STAMP)
	$(BIN)/nestor routes

routes-golden: $(STAMP)  ## refresh tests/routes.golden.json after a deliberate URL change
	$(BIN)/nestor routes --json --fields method,path,name > tests/routes.golden.json

openapi-golden: $(STAMP)  ## refresh tests/openapi/ after a deliberate API change
	mkdir -p tests/openapi
	$(BIN)/nestor openapi > tests/openapi/nestor.json
	for level in polls.api chat.api monitor.api hello.api; do $(BIN)/nestor openapi $$level > tests/openapi/$$level.json; done

config: $(STAMP)
	$(BIN)/nestor config

bench: $(STAMP)  ## load benchmarks against bare aiohttp and its peers (a few minutes; wrk from apt if present)
	$(BIN)/python -m pip install --quiet -e '.[bench,uvloop,orjson]'
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var/*.sqlite3*

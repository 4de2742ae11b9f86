# Two entry points for a new user (see README):
#   make serve   install into .venv and start the service on its embedded starter data
#   make test    install into .venv (with the test extra) and run the whole test suite
# and `make demo`: installs the test extra (it holds the FHIR server), starts a FHIR server with
# the example patient and the service, sends every request of examples/ and prints the cards
# (KEEP=600 keeps both running 10 minutes).
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8080
KEEP   ?= 0

.PHONY: serve serve-deps test demo install install-test test-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e .

install-test: $(PY)
	$(PY) -m pip install --quiet -e '.[test]'

serve-deps:
	tools/serve-deps.sh

serve: install serve-deps
	$(VENV)/bin/fluoro-cds serve --host $(HOST) --port $(PORT)

demo: install-test serve-deps
	$(PY) examples/demo.py --port $(PORT) --keep $(KEEP)

test-deps:
	tools/test-deps.sh

test: install-test test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

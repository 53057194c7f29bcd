# The two commands of the README. Both create ./.venv if it is missing and
# install what is missing into it (tools/install.sh: seconds when everything
# is already there; the one-off mmcv build is cached outside the clone).
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: install test test-fast demo

install:
	bash tools/install.sh $(VENV)

# The whole suite, the slow end-to-end tests included (this is what CI runs).
test: install
	$(PYTHON) -m pytest tests

# Everything but the tests marked slow, for quick iterations.
test-fast: install
	$(PYTHON) -m pytest tests -m "not slow"

demo: install
	bash tools/demo.sh $(VENV)

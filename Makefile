# botstack.deploy: one entry point for setup, tests and the demo.
SHELL := /bin/bash
VENV  := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections:$(CURDIR)
export NO_COLOR := 1

.PHONY: help setup test lint unit sanity molecule demo build clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## Host packages, Docker engine, venv, collections, test image (idempotent)
	@scripts/setup.sh

test: setup  ## Lint, unit tests, sanity, build, molecule scenarios; prints "N passed, N failed"
	@scripts/test.sh

lint: setup  ## yamllint + ansible-lint (production profile)
	@scripts/test.sh lint

unit: setup  ## pytest unit tests for plugins/
	@scripts/test.sh unit

molecule: setup  ## Every molecule scenario (SCENARIOS="base ..." to pick)
	@scripts/test.sh molecule

demo: setup  ## Converge the stack onto a throwaway local systemd container and report
	@scripts/demo.sh

build: setup  ## Build the collection tarball and install it offline into a scratch path
	@scripts/test.sh build

clean:  ## Remove containers left by molecule and the demo (keeps caches)
	-@docker ps -aq --filter label=botstack.test | xargs -r docker rm -f
	-@for s in molecule/*/molecule.yml; do s=$${s#molecule/}; molecule destroy -s $${s%/molecule.yml} >/dev/null 2>&1; done

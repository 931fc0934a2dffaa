# Common tasks; `make` alone lists them. The one test command is ./scripts/test.sh.
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help setup services-down fmt lint test build docker-build

help: ## list targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-14s %s\n", $$1, $$2 }'

setup: ## install and start local nats-server and Docker (scripts/dev-services.sh up)
	./scripts/dev-services.sh up

services-down: ## stop the services that setup started
	./scripts/dev-services.sh down

fmt: ## format all code
	$(CARGO) fmt --all

lint: ## clippy on everything, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: ## services, fmt check, clippy, all tests (./scripts/test.sh)
	./scripts/test.sh

build: ## release build of all binaries
	$(CARGO) build --workspace --release

docker-build: ## the fleet's worker and NATS images from the built binaries (scripts/fleet.sh images)
	./scripts/fleet.sh images

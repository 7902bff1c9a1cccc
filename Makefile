# dromos: the two commands a user needs are `make run` and `make test`.

CARGO ?= cargo

.PHONY: run test deps bench lint build

## Run dromos with the embedded SQLite store on 127.0.0.1:8080 (data in ./dromos-data).
run:
	$(CARGO) run --release -- serve

## Install what the tests need (idempotent), then run every test: the Helm chart's
## lint and render check, unit, integration (real processes, real SQLite, PostgreSQL
## and etcd), the OpenAPI/router check.
test: deps
	bash scripts/check-chart.sh
	$(CARGO) test --lib --bins --tests

deps:
	bash scripts/install-deps.sh

## Benchmarks (never timed tests): placement, persistence, agents, cluster, jobs, HAProxy
## render and runtime updates, the event bus (`cargo bench --bench core -- <name>` runs one).
bench:
	$(CARGO) bench --bench core

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

build:
	$(CARGO) build --release

# The two commands: `make run` (the whole pipeline locally) and `make test` (every test).
# Both install what they need into .local/ on first use (see infra/local/README.md).

STACK := python3 infra/local/stack.py

.PHONY: run test install fmt lint lint-infra build-arm64 load load-private bench-burst bench-release bench-cost bench-sdk-call bench-coldstart sam-build

run:
	python3 infra/local/run.py

test:
	$(STACK) exec --with-api -- cargo test --workspace --locked --no-fail-fast

# Load benchmark (not part of `make test`): USERS users, CLIENTS at a time, every report
# waited for. `make load` runs against the stack `make run` leaves up; `make load-private`
# against a private stack of its own (free ports). See tests/load/README.md.
USERS ?= 1000
CLIENTS ?= 32
load:
	cargo run --quiet --locked -p load-bench --bin load-bench -- --users $(USERS) --clients $(CLIENTS)

load-private:
	cargo build --quiet --locked -p load-bench
	$(STACK) exec --with-api -- cargo run --quiet --locked -p load-bench --bin load-bench -- --users $(USERS) --clients $(CLIENTS)

# The same burst with release builds of the functions (`stack.py --release`), as Lambda
# runs them: queries/s and CPU per process, and our functions' CPU per query with and
# without the payment-password hash (goal ≤ 30 ms without). A first release build of
# every function takes ~10 minutes on 2 cores.
bench-release:
	cargo build --quiet --locked -p load-bench
	$(STACK) exec --with-api --release -- cargo run --quiet --locked -p load-bench --bin load-bench -- --users $(USERS) --clients $(CLIENTS)

# What one DynamoDB call costs our process in CPU (not part of `make test`): sequential
# GetItem, conditional PutItem and Query calls with the client the functions build, a
# release build on a current-thread runtime, against a private DynamoDB Local; the floor
# under bench-release's CPU per query.
bench-sdk-call:
	cargo build --quiet --locked --release -p load-bench --bin sdk-call-bench
	$(STACK) exec -- target/release/sdk-call-bench --compare-stall-protection-off

# Cost per query (not part of `make test`): QUERIES 16-bank queries, CLIENTS_COST at a
# time, through a private stack of release builds whose functions meter every AWS call
# (AWS_CALL_METERING=1: ReturnConsumedCapacity, a log line per call and per invocation);
# prints calls, units and billed ms per function and operation, and USD per million
# queries at the list prices in tests/load/src/cost/prices.rs. No scheduled sweeps
# (--schedule-every 0): theirs is a cost per hour, not per query.
QUERIES ?= 20
CLIENTS_COST ?= 2
bench-cost:
	cargo build --quiet --locked -p load-bench
	AWS_CALL_METERING=1 $(STACK) exec --with-api --release --schedule-every 0 -- \
		cargo run --quiet --locked -p load-bench --bin cost-bench -- --queries $(QUERIES) --clients $(CLIENTS_COST)

# Burst benchmark (not part of `make test`): queries at BURST_FACTOR x the lowest
# configured per-bank rate (bank_limits in the service configuration) for BURST_SECONDS,
# against a private stack of its own; prints what each bank saw (the simulator's
# /_admin/traffic) against its limits, submit→report p50/p99, lost and late reports.
# See tests/load/README.md.
BURST_FACTOR ?= 10
BURST_SECONDS ?= 60
bench-burst:
	cargo build --quiet --locked -p load-bench --bin burst-bench
	$(STACK) exec --with-api -- cargo run --quiet --locked -p load-bench --bin burst-bench -- \
		--factor $(BURST_FACTOR) --seconds $(BURST_SECONDS)

install:
	$(STACK) install

fmt:
	cargo fmt --all

lint:
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# The SAM template's checks on their own (tests/api/infra/ runs them too, under `make test`).
lint-infra: install
	.local/venv/bin/cfn-lint infra/template.yaml
	.local/venv-checkov/bin/checkov -f infra/template.yaml --framework cloudformation --skip-download --compact --quiet
	$(SAM_ENV) $(SAM) validate --lint --template-file infra/template.yaml --region us-east-1

# Deployable arm64 builds of every function (not part of `make test`: a release build
# takes ~10 minutes on 2 cores). cargo-lambda (pinned in .local/venv) cross-links with
# zig from the `ziglang` package in the same venv (cargo-zigbuild runs `python3 -m
# ziglang`), so that venv's bin/ goes first on PATH. Writes
# <target>/lambda/<function>/bootstrap.zip and fails if one is not under 6 MB.
VENV_BIN := $(CURDIR)/.local/venv/bin
FUNCTIONS := $(patsubst functions/%/Cargo.toml,%,$(wildcard functions/*/Cargo.toml))
ZIP_LIMIT_BYTES := 6000000
TARGET_DIR = $(shell cargo metadata --format-version 1 --no-deps --offline | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

build-arm64: install
	@rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
		|| rustup target add aarch64-unknown-linux-gnu
	PATH="$(VENV_BIN):$$PATH" CARGO_ZIGBUILD_PYTHON_PATH="$(VENV_BIN)/python3" \
		cargo lambda build --release --arm64 --locked --output-format zip \
		$(addprefix --package ,$(FUNCTIONS))
	@status=0; for f in $(FUNCTIONS); do \
		zip="$(TARGET_DIR)/lambda/$$f/bootstrap.zip"; \
		size=$$(stat -c %s "$$zip") || exit 1; \
		printf '%-18s %9d bytes  %s\n' "$$f" "$$size" "$$zip"; \
		if [ "$$size" -ge $(ZIP_LIMIT_BYTES) ]; then \
			echo "$$f: bootstrap.zip is over the $(ZIP_LIMIT_BYTES)-byte budget" >&2; status=1; \
		fi; \
	done; exit $$status

# Cold-start benchmark (not part of `make test`): release builds of every function and a
# Python + boto3 peer (awslambdaric, pinned in tests/coldstart/peer/requirements.txt,
# in .local/venv-peer) under the Runtime API emulator (infra/local/runtime-api) on a
# private local stack; prints the table and the goals, exits 1 if one is missed.
# RUNS cold starts per function, WARM warm calls after each. See tests/coldstart/README.md.
RUNS ?= 5
WARM ?= 100
PEER_VENV := .local/venv-peer
PEER_REQUIREMENTS := tests/coldstart/peer/requirements.txt

$(PEER_VENV)/installed: $(PEER_REQUIREMENTS)
	test -x $(PEER_VENV)/bin/python || python3 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check --only-binary :all: -r $(PEER_REQUIREMENTS)
	touch $@

bench-coldstart: install $(PEER_VENV)/installed
	cargo build --quiet --release --locked $(addprefix -p ,$(FUNCTIONS))
	cargo build --quiet --locked -p devtools -p coldstart-bench
	$(STACK) exec -- "$(TARGET_DIR)/debug/coldstart" --runs $(RUNS) --warm $(WARM) \
		--bin-dir "$(TARGET_DIR)/release" --devtools "$(TARGET_DIR)/debug/devtools" \
		--python "$(PEER_VENV)/bin/python"

# `sam build` of infra/template.yaml (not part of `make test`: a release arm64 build of
# every function). aws-sam-cli is pinned in its own venv (it pins boto3, click and Flask
# exactly, which would move moto's in .local/venv); the template's `BuildMethod: rust-cargolambda` needs
# `--beta-features` and finds cargo-lambda and zig (ziglang) in .local/venv/bin, first on
# PATH; no container. Fails if a function's zipped bootstrap is not under 6 MB. Output
# in .local/sam (docs/deploy.md deploys .local/sam/template.yaml).
SAM_VENV := .local/venv-sam
SAM_VERSION := 1.170.0
SAM := $(SAM_VENV)/bin/sam

$(SAM_VENV)/installed-$(SAM_VERSION):
	test -x $(SAM_VENV)/bin/python || python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_VERSION)
	touch $@

lint-infra: $(SAM_VENV)/installed-$(SAM_VERSION)

# Offline: no telemetry, no version check, no EC2 metadata probe for credentials (it
# waits on a timeout where there is no instance).
SAM_ENV := SAM_CLI_TELEMETRY=0 SAM_CLI_DISABLE_VERSION_CHECK=1 AWS_EC2_METADATA_DISABLED=true \
	PATH="$(VENV_BIN):$$PATH" CARGO_ZIGBUILD_PYTHON_PATH="$(VENV_BIN)/python3"

sam-build: install $(SAM_VENV)/installed-$(SAM_VERSION)
	@rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
		|| rustup target add aarch64-unknown-linux-gnu
	$(SAM_ENV) $(SAM) build --beta-features --template-file infra/template.yaml \
		--build-dir .local/sam
	python3 infra/local/sam_sizes.py .local/sam $(ZIP_LIMIT_BYTES)

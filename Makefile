# The two commands: `make run` (the whole pipeline locally) and `make test` (every test).
# Both install what they need into .local/ on first use (see infra/local/README.md).

STACK := python3 infra/local/stack.py

.PHONY: run test install fmt lint lint-infra build-arm64 load load-private

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
	cargo run --quiet --locked -p load-bench -- --users $(USERS) --clients $(CLIENTS)

load-private:
	cargo build --quiet --locked -p load-bench
	$(STACK) exec --with-api -- cargo run --quiet --locked -p load-bench -- --users $(USERS) --clients $(CLIENTS)

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

# The two commands: `make run` (the whole pipeline locally) and `make test` (every test).
# Both install what they need into .local/ on first use (see tools/local/README.md).

STACK := python3 tools/local/stack.py

.PHONY: run test install fmt lint

run:
	python3 tools/local/run.py

test:
	$(STACK) exec --with-api -- cargo test --workspace --locked

install:
	$(STACK) install

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

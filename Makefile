# The two commands a newcomer needs: `make demo` and `make test`.
# Both bootstrap .venv on first use (and again whenever pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
EXTRAS ?= test,trio,anyio,redis,uvloop,docs

.PHONY: demo test lint typecheck matrix conformance docs bench fuzz soak compiled clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python 3.10+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# The page speaks Socket.IO once socket.io-client is installed from npm (into the git-ignored
# examples/chat/node_modules); without npm it uses a plain WebSocket, and the demo still runs.
CHAT_CLIENT = examples/chat/node_modules/socket.io-client/dist/socket.io.min.js

demo: $(STAMP)
	@test -f $(CHAT_CLIENT) || { command -v npm >/dev/null \
		&& npm install --prefix examples/chat --no-audit --no-fund --silent \
		|| echo "demo: socket.io-client not installed (no npm?): the page uses a plain WebSocket"; }
	$(BIN)/python -m ikisocket_adapters demo --host 127.0.0.1 --port 3000

test: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy
	$(BIN)/python -m pytest --cov=ikisocket_core --cov-branch --cov-fail-under=100 \
		--cov-report=term-missing:skip-covered $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite on the oldest and the newest supported Python (pyenv versions on these machines).
matrix: $(STAMP)
	$(BIN)/python -m pip install --quiet 'nox>=2024.4'
	$(BIN)/nox

# Side by side with websockets, aiohttp and picows, then our Socket.IO server beside
# python-socketio's; ratios to ours (see bench/README.md).
SIO_BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/socketio.py $(SIO_BENCH_ARGS)

docs: $(STAMP)
	$(BIN)/sphinx-build -W -n --keep-going -b html docs docs/_build/html

# Fuzz the engine's byte entry with atheris for SECONDS (see tests/fuzz/fuzz_engine.py). New
# inputs go to the git-ignored tests/fuzz/corpus; the committed seeds are read, never written.
SECONDS ?= 60
FUZZ_CORPUS = tests/fuzz/corpus
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet atheris
	@mkdir -p $(FUZZ_CORPUS)
	$(BIN)/python tests/fuzz/fuzz_engine.py $(FUZZ_CORPUS) tests/fuzz/seeds \
		-dict=tests/fuzz/engine.dict -max_total_time=$(SECONDS) -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_CORPUS)/ $(FUZZ_ARGS)

# Soak: 2,000 clients churn against one ADAPTER's server for MINUTES, then the server must be
# back where it started (see tests/soak/soak.py); samples and a plot go to tests/soak/results.
MINUTES ?= 2
ADAPTER ?= asyncio
soak: $(STAMP)
	$(BIN)/python -m pip install --quiet matplotlib
	$(BIN)/python tests/soak/soak.py --adapter $(ADAPTER) --minutes $(MINUTES) $(SOAK_ARGS)

# RFC 6455 conformance: Autobahn|Testsuite (Python 2.7 env built once under ~/.cache/ikisocket).
conformance: $(STAMP)
	$(BIN)/python tests/conformance/matrix.py --adapters all --cases all

# The optional compiled build (docs/howto/compiled.md): a wheel whose hot engine modules mypyc
# compiled, in dist/. Needs a C compiler and Python's headers; the .venv stays pure Python.
# Built from the sdist, in a temporary directory: nothing is written in src/.
compiled: $(STAMP)
	$(BIN)/python -m pip install --quiet build
	HATCH_BUILD_HOOK_ENABLE_MYPYC=1 $(BIN)/python -m build --outdir dist . >/dev/null
	@ls -1t dist/ikisocket-*.whl | head -1

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/fuzz/corpus tests/soak/results

# Set-up and entry points. `make demo` and `make test` each do all the set-up a fresh machine needs
# (python3, pip, make and apt-get as root are assumed; nothing else).

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch first and pinned, as a pair with the torchvision built against it: an unpinned torch requirement would
# pull a multi-GB CUDA build from the network, and PyPI's torchvision does not import beside torch 2.13.0's CPU
# file. This pair installs from the machine's local package store (a CUDA build that runs on the CPU).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup graphviz node editor-deps vscode demo test lint typecheck unit bench clean playground chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory graphviz
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,onnx]"
	touch $(STAMP)

# Graphviz's `dot` renders svg/png/pdf; without it `cnndsl draw` still writes .dot and mermaid.
graphviz:
	@command -v dot >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq graphviz >/dev/null; } \
		|| echo "warning: could not install graphviz; cnndsl draw will only write .dot and mermaid"

# The VS Code extension's npm tools (esbuild, vsce, and vscode-textmate for the grammar tests), pinned by
# editors/vscode/package-lock.json. Node comes from Debian when missing; without node or the npm registry the
# grammar tests skip and `make unit` still runs.
EXT := editors/vscode

node:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; } \
		|| echo "warning: could not install node and npm; the TextMate grammar tests will skip"

$(EXT)/node_modules/.package-lock.json: $(EXT)/package-lock.json
	cd $(EXT) && npm ci --no-audit --no-fund

editor-deps: node
	@$(MAKE) --no-print-directory $(EXT)/node_modules/.package-lock.json \
		|| echo "warning: npm ci failed in $(EXT); the TextMate grammar tests will skip"

# The VS Code extension: editors/vscode/cnndsl.vsix (install: code --install-extension editors/vscode/cnndsl.vsix).
vscode: node $(EXT)/node_modules/.package-lock.json
	cd $(EXT) && npm run package

# The main job: train LeNet-5 on the built-in digits and print its summary and final accuracy.
demo: setup
	$(VENV)/bin/cnndsl train specs/lenet5.cnn

lint: setup
	$(VENV)/bin/ruff check cnndsl tests bench
	$(VENV)/bin/ruff format --check cnndsl tests bench

typecheck: setup
	$(VENV)/bin/mypy

unit: setup playground chromium editor-deps
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# The whole test suite: lint, format, types, then every test (CUDA tests skip without a GPU).
test: lint typecheck unit

# The browser playground (docs/playground.md): a static site in build/playground/, built from npm and PyPI packages
# only (Pyodide, CodeMirror, viz-js, esbuild; wheels of cnndsl, lark and graphviz). The unit tests drive it.
playground: setup
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	cd playground && npm ci --no-audit --no-fund --loglevel=error
	PYTHON=$(abspath $(PY)) node playground/build.mjs

# Debian's Chromium, which the playground's browser tests drive through Playwright (never `playwright install`).
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; } \
		|| echo "warning: could not install chromium; the playground's browser tests will skip"

bench: setup
	$(PY) bench/bench_check.py

clean:
	rm -rf $(VENV) build dist *.egg-info $(EXT)/node_modules $(EXT)/dist $(EXT)/*.vsix

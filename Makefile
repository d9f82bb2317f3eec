# Two entry points on a fresh Debian/Ubuntu machine (see README):
#   make demo   - set up, then run the agent in emulation mode on the default bundle
#   make test   - set up everything (Python extras + Debian tools), then run the whole suite
# Both are idempotent; stamps in the venv skip work already done.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests drive for real: the broker, the shell linter, systemd-analyze; and
# mosquitto_sub (mosquitto-clients), which the README uses to watch events.
APT_TEST := mosquitto mosquitto-clients shellcheck systemd openssl
PYTEST_ARGS ?=

.PHONY: demo test test-fast setup-agent setup-dev system-deps bench e2e-accuracy train export clean

demo: setup-agent
	$(BIN)/fer-agent demo

test: setup-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

setup-agent: $(VENV)/.stamp-agent
setup-dev: $(VENV)/.stamp-dev

$(VENV)/bin/python:
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.stamp-agent: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e ".[emulation]"
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e ".[emulation,host,test]"
	touch $@ $(VENV)/.stamp-agent

# Installs what is missing; a system broker the mosquitto package starts is stopped and disabled again.
system-deps:
	@SUDO="$(SUDO)" .ci/system-deps.sh $(APT_TEST)

# Measurements shown in the README (see "Performance").
bench: setup-agent
	$(BIN)/fer-agent bench

# End-to-end accuracy on camera-like clips of PublicTest faces, with the `fer` package as the peer (about 25 min,
# real time). fer's declared dependencies would replace OpenCV and pull PyTorch, hence --no-deps.
e2e-accuracy: setup-dev system-deps
	$(BIN)/python -m pip install -q --no-deps "fer==25.10.3" && $(BIN)/python -m pip install -q pandas
	nice $(BIN)/python benchmarks/e2e_accuracy.py

# The default recipe (about an hour on 2 CPU cores) and the export of the default bundle.
DATA ?= ../shared/datasets/fer2013/fer2013_train_publictest.csv.gz
VERSION ?= 1.3.0
train: setup-dev
	$(BIN)/fer-host train --data $(DATA) --out runs/default
export: setup-dev
	$(BIN)/fer-host export runs/default --out agent/models/default --data $(DATA) --no-saved-model --flip-average --version $(VERSION)

# metrics.accuracy_htp of the default bundle: model_qdq.onnx through the QNN HTP backend, CPU fallback off,
# on all of PublicTest, recorded in its manifest. On x86_64 the HTP is simulated (0.1-0.3 s per face, so
# 5-20 minutes for 3589 faces at nice); the timing it reports is the simulator's, never NPU time.
.PHONY: accuracy-htp
accuracy-htp: setup-dev
	nice $(BIN)/fer-host evaluate agent/models/default --backend qnn --data $(DATA) --record

# The installer's whole flow (push.sh, install, start under real systemd, an event on a loopback broker, upgrade,
# automatic rollback of a broken release, uninstall) on an emulated arm64 Debian 12 board under
# qemu-system-aarch64: see docs/deploy.md, "An emulated board". Runs as root; the board image is built once
# with mmdebstrap and cached in BOARD_CACHE, keyed by its recipe.
BOARD_CACHE ?= /var/cache/fer-agent-board
APT_BOARD := qemu-system-arm qemu-utils qemu-user-static binfmt-support mmdebstrap e2fsprogs openssh-client \
	mosquitto mosquitto-clients
.PHONY: board-test
board-test: setup-agent
	@SUDO="$(SUDO)" .ci/system-deps.sh $(APT_BOARD)
	$(SUDO) env FER_BOARD_CACHE=$(BOARD_CACHE) PYTHON=$(abspath $(BIN)/python) deploy/board-test/run.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

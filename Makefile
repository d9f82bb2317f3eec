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

.PHONY: demo test test-fast component-test setup-agent setup-dev system-deps bench e2e-accuracy accuracy-photos train export clean

demo: setup-agent
	$(BIN)/fer-agent demo

test: setup-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not component" $(PYTEST_ARGS)

# The real-component checks that take 10 s or more each (broker outages through the real agent and mosquitto,
# a real Ansible run): outside `make test` to keep it under 10 minutes on 2 cores; .ci/run runs both.
component-test: setup-dev system-deps
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -m component $(PYTEST_ARGS); \
	rc=$$?; echo "make component-test: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

test-fast: setup-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not component" $(PYTEST_ARGS)

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

# Accuracy on real photographs (../shared/datasets/realphotos-dev, evaluation only): the agent's own detector ->
# crop -> classifier and the `fer` peer on every photo placed on a 640x480 frame, per source and origin; then
# 100 photos per source held 1 s each through the real `fer-agent run` and mosquitto (--e2e; real time).
PHOTOS_ARGS ?= --e2e
accuracy-photos: setup-dev system-deps
	$(BIN)/python -m pip install -q --no-deps "fer==25.10.3" && $(BIN)/python -m pip install -q pandas
	nice $(BIN)/python benchmarks/real_photos.py $(PHOTOS_ARGS)

# The default bundle's recipe: the from-scratch run (about an hour on 2 CPU cores; fer-vgg 1.2.0's weights), then
# 5 epochs of fine-tuning with camera augmentation (about 25 min), exported flip-averaged (docs/experiments.md).
DATA ?= ../shared/datasets/fer2013/fer2013_train_publictest.csv.gz
VERSION ?= 1.4.0
train: setup-dev
	$(BIN)/fer-host train --data $(DATA) --out runs/default
	$(BIN)/fer-host train --data $(DATA) --out runs/camera --init-from runs/default/best.keras --camera \
		--epochs 5 --lr 2e-4 --warmup-epochs 0.3 --precision mixed_bfloat16
export: setup-dev
	$(BIN)/fer-host export runs/camera --out agent/models/default --data $(DATA) --no-saved-model --flip-average --version $(VERSION)
	$(BIN)/fer-host compile --soc qcs6490,qcs8550 agent/models/default

# metrics.accuracy_htp of the default bundle: model_qdq.onnx through the QNN HTP backend, CPU fallback off,
# on all of PublicTest, recorded in its manifest. On x86_64 the HTP is simulated (0.1-0.3 s per face, so
# 5-20 minutes for 3589 faces at nice); the timing it reports is the simulator's, never NPU time.
.PHONY: accuracy-htp
accuracy-htp: setup-dev
	nice $(BIN)/fer-host evaluate agent/models/default --backend qnn --data $(DATA) --record

# A real Home Assistant (the newest that runs on Debian 12's Python 3.11: 2024.3.3) against mosquitto and the
# agent: discovery, device block, live states, unavailable after kill -9, no HA warnings
# (tests/mqtt/test_home_assistant.py). Installed once, pinned, into $(HA_DIR); about a minute when cached.
HA_VERSION ?= 2024.3.3
HA_DIR ?= $(HOME)/.cache/fer-agent/ha-$(HA_VERSION)
.PHONY: ha-test
ha-test: setup-dev system-deps
	@start=$$(date +%s); \
	HA_VERSION=$(HA_VERSION) HA_DIR=$(HA_DIR) SUDO="$(SUDO)" timeout 1800 .ci/ha-install.sh \
	  && FER_HA_DIR=$(HA_DIR) timeout 600 $(BIN)/python -m pytest -s -p no:cacheprovider tests/mqtt/test_home_assistant.py; \
	rc=$$?; echo "make ha-test: $$(( $$(date +%s) - start )) s (Home Assistant $(HA_VERSION)), exit $$rc"; exit $$rc
# The installer's whole flow (push.sh, install, start under real systemd, an event on a loopback broker, upgrade,
# automatic rollback of a broken release, uninstall) on an emulated arm64 Debian 12 board under
# qemu-system-aarch64: see docs/deploy.md, "An emulated board". Runs as root; the board image is built once
# with mmdebstrap and cached in BOARD_CACHE, keyed by its recipe. board-test-broken is the test of the test:
# a unit that cannot start must fail the run, with the board's journal shown. Each prints its time.
BOARD_CACHE ?= /var/cache/fer-agent-board
APT_BOARD := qemu-system-arm qemu-utils qemu-user-static binfmt-support mmdebstrap e2fsprogs openssh-client \
	mosquitto mosquitto-clients
BOARD_ENV = $(SUDO) env FER_BOARD_CACHE=$(BOARD_CACHE) PYTHON=$(abspath $(BIN)/python)
.PHONY: board-test board-test-broken
board-test board-test-broken: setup-agent
	@SUDO="$(SUDO)" .ci/system-deps.sh $(APT_BOARD)
	@start=$$(date +%s); \
	$(BOARD_ENV) deploy/board-test/$(if $(filter board-test-broken,$@),broken.sh,run.sh); \
	rc=$$?; echo "make $@: $$(( $$(date +%s) - start )) s, exit $$rc"; exit $$rc

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

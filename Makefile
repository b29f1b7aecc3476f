# Everything runs in a venv and a pinned ComfyUI host built outside the repo (see scripts/setup_host.sh).
CACHE ?= $(HOME)/.cache/comfyui-facesnap
PY := $(CACHE)/venv/bin/python
COMFYUI_PATH ?= $(CACHE)/comfyui
export COMFYUI_PATH
export FACESNAP_CACHE := $(CACHE)

.PHONY: setup test demo clean-host

setup:
	bash scripts/setup_host.sh

test: setup
	$(PY) -m pytest -c tests/pytest.ini tests $(PYTEST_ARGS)

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

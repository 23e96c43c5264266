# Two commands do everything on a fresh machine (Python 3.11, CPU only):
#   make demo   install, then the whole pipeline on the embedded digits data set: teacher, HTA-KL
#               student, export (NIR/ONNX/Lava), Lava + emulator simulation, energy, report
#   make test   install, then run the test suite (the command CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
LOG     = $(VENV)/install.log
EXTRAS  = test,docs
# extra pip arguments for the torch step: empty = pip's configured sources (the CPU build on the
# project's machines); a CUDA build or the CPU build elsewhere: docs/INSTALL.md
TORCH_PIP_ARGS ?=

# one install step: a line saying what it installs, pip's output appended to $(LOG); on failure the
# log's last lines and its path, and make stops
step = echo "  $(1)"; $(2) >> $(LOG) 2>&1 || { echo "install failed at: $(1); the end of $(LOG):"; tail -n 15 $(LOG); echo "whole log: $(LOG)"; exit 1; }

.PHONY: install demo test docs bench clean

install: $(STAMP)

# torch is pinned to 2.13.0; which build (CPU or CUDA) comes from pip's sources and TORCH_PIP_ARGS;
# spikingjelly goes in with --no-deps because it declares torchvision/torchaudio, whose PyPI wheels
# cannot load against a CPU torch; its real run-time dependencies are in pyproject.toml.
# lava-nc 0.10 declares Python <3.11 and numpy<2 but runs here: --no-deps --ignore-requires-python,
# plus its two small deps; hw/lava_compat.py fixes its one Python-3.11 import error at import time.
# snntorch/nirtorch/norse (--no-deps: they run on the pins above) are the third-party NIR importers
# tests/test_nir_interop.py reads our NIR files with, and whose exporters tests/test_third_party.py deploys.
# lava-dl 0.6.0 (netx: tests/test_netx.py runs our netx HDF5 in Lava with it) declares Python <3.11
# like lava-nc: --no-deps --ignore-requires-python; its import chain needs cv2 (opencv-python-headless,
# real) and torchvision (not installable against the CPU torch; the test says how it stands in).
# tonic (with its dependencies; none pulls torch) reads event recordings for --input (an optional
# dependency of the package: the 'events' extra; tests/test_inputs.py needs it). sinabs 3.1.3 (declares
# nir<=1.0.4 and samna, the Speck driver, neither needed for its NIR export) and rockpool 3.1.0 go in with
# --no-deps: their own NIR exporters write the Sinabs and Rockpool graphs tests/test_wild.py deploys.
$(STAMP): pyproject.toml Makefile
	@echo "installing into $(VENV); pip's output goes to $(LOG)"
	@$(PYTHON) -m venv $(VENV) && : > $(LOG)
	@$(call step,pip,$(PY) -m pip install --upgrade pip)
	@$(call step,torch 2.13.0$(if $(TORCH_PIP_ARGS), ($(TORCH_PIP_ARGS))),$(PY) -m pip install $(TORCH_PIP_ARGS) torch==2.13.0)
	@$(call step,htakl-deploy (editable) + its dependencies + test and docs tools,$(PY) -m pip install -e '.[$(EXTRAS)]')
	@$(call step,spikingjelly 2.0.0 (--no-deps),$(PY) -m pip install --no-deps spikingjelly==2.0.0)
	@$(call step,lava-nc 0.10.0 + asteval + networkx (--no-deps),$(PY) -m pip install --no-deps --ignore-requires-python lava-nc==0.10.0 asteval==1.0.10 networkx==2.8.7)
	@$(call step,snntorch 1.0.0 + nirtorch 2.6 + norse 1.1.0 (--no-deps),$(PY) -m pip install --no-deps snntorch==1.0.0 nirtorch==2.6 norse==1.1.0)
	@$(call step,lava-dl 0.6.0 + opencv-python-headless (--no-deps),$(PY) -m pip install --no-deps --ignore-requires-python lava-dl==0.6.0 opencv-python-headless==4.14.0.94)
	@$(call step,tonic 1.7.0 (event recordings),$(PY) -m pip install tonic==1.7.0)
	@$(call step,sinabs 3.1.3 + rockpool 3.1.0 + pbr (--no-deps),$(PY) -m pip install --no-deps sinabs==3.1.3 rockpool==3.1.0 pbr==7.1.3)
	@$(call step,check: torch + spikingjelly + htakl_deploy import,$(PY) -c "import torch; import spikingjelly.activation_based; import htakl_deploy")
	@$(call step,check: lava-nc imports on Python 3.11,$(PY) -c "from htakl_deploy.hw.lava_compat import ensure_lava; ensure_lava(); import lava.proc.lif.models")
	@touch $(STAMP)
	@echo "installed: $$($(PY) -c 'import torch; print("torch", torch.__version__)'), htakl-deploy $$($(PY) -c 'import importlib.metadata as m; print(m.version("htakl-deploy"))') in $(VENV)"

# the run is runs/demo, the directory every example in README.md and docs/ uses; a previous one is
# kept, renamed after the time it was last written
demo: install
	@if [ -e runs/demo ]; then old=runs/demo-$$(date -r runs/demo +%Y%m%d-%H%M%S); mv runs/demo $$old; \
	  echo "the previous runs/demo is now $$old"; fi
	$(VENV)/bin/htakl-deploy run --run-name demo

test: install
	$(PY) -m pytest -q

# the documentation site (mkdocs-material, API reference by mkdocstrings) into site/; --strict: a
# broken link, a missing page or a page left out of the nav fails the build
docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: install
	$(PY) bench/loss_step.py
	$(PY) bench/method_step.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache

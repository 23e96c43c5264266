# Two commands do everything on a fresh machine (Python 3.11, CPU only):
#   make demo   install, then the whole pipeline on the embedded digits data set: teacher, HTA-KL
#               student, export (NIR/ONNX/Lava), Lava + emulator simulation, energy, report
#   make test   install, then run the test suite (the command CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# torch is pinned to the CPU build (an unpinned torch pulls ~5 GB of CUDA wheels);
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
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps spikingjelly==2.0.0
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python lava-nc==0.10.0
	$(PY) -m pip install --quiet --no-deps asteval==1.0.10 networkx==2.8.7
	$(PY) -m pip install --quiet --no-deps snntorch==1.0.0 nirtorch==2.6 norse==1.1.0
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python lava-dl==0.6.0
	$(PY) -m pip install --quiet --no-deps opencv-python-headless==4.14.0.94
	$(PY) -m pip install --quiet tonic==1.7.0
	$(PY) -m pip install --quiet --no-deps sinabs==3.1.3 rockpool==3.1.0 pbr==7.1.3
	$(PY) -c "import torch, spikingjelly.activation_based, htakl_deploy; print('installed torch', torch.__version__)"
	$(PY) -c "from htakl_deploy.hw.lava_compat import ensure_lava; ensure_lava(); import lava.proc.lif.models; print('lava-nc imports on Python 3.11')"
	touch $(STAMP)

demo: install
	$(VENV)/bin/htakl-deploy run --run-name demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/loss_step.py
	$(PY) bench/method_step.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

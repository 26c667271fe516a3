# Every target is idempotent: re-running it when nothing changed is a fast no-op.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install data test test-slow test-all run fid-table calibrate gpu-check wandb-sync lint bench clean

install: $(STAMP) data

# torch/torchvision are installed first and pinned: the CUDA build of 2.14.1 comes from this machine's local
# wheel index and must never be replaced by a newer release pulled in by some other requirement.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q 'pip>=25.1'  # a pip that shows the licence (License-Expression) in `pip show`
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,xgboost]'
	touch $(STAMP)

data: $(STAMP)
	$(VENV)/bin/sarnet data --root $(DATA)

# The fast suite on every core (pytest-xdist workers; worksteal: an idle worker takes queued tests from the other),
# in a random order (pytest-randomly prints its seed; --randomly-seed=N repeats an order, -p no:randomly keeps none).
test: install
	$(PY) -m pytest -q -m "not slow" -n auto --dist worksteal

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q

run: install
	$(PY) train.py

# The thesis' FID table: SarNET-VAE and VAE at L = 8..128 plus simple SarNET, reference epochs, training seeds
# 1234-1236 (33 jobs); the sweep ends with the Markdown tables, plot and JSON in $(SWEEP)/fid_table.* (the sweep's
# Hydra callback runs sarnet.table). Jobs run JOBS at a time with one thread each (default: one per
# core); a re-run into the same SWEEP resumes. Extra Hydra overrides: make fid-table ARGS="...".
SWEEP ?= multirun/fid_table
JOBS  ?= $(shell nproc)
fid-table: install
	OMP_NUM_THREADS=1 $(PY) train.py -m experiment=fid_table hydra.sweep.dir=$(SWEEP) \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) $(ARGS)

# The FID feature network's anchors beside the thesis' (N = 5,000 vs 5,000 MNIST fives, ~1 min).
calibrate: install
	$(VENV)/bin/sarnet calibrate

# On a CUDA machine: smoke training, fast == naive sampling on the device, timings; JSON lines.
gpu-check: install
	$(VENV)/bin/sarnet gpu-check
# Upload every offline W&B run under a sweep (or run) dir, the sweep's fid_table run and resumed runs included:
# make wandb-sync SWEEP=multirun/<date>/<time>. Needs a key (`wandb login`); WANDB_MODE=offline is dropped here.
wandb-sync: $(STAMP)
	find $(SWEEP) -type d -path '*/wandb/offline-run-*' -prune | sort | xargs -r env -u WANDB_MODE $(VENV)/bin/wandb sync

lint: $(STAMP)
	$(VENV)/bin/ruff check sarnet scripts tests train.py

bench: install  # every case, one run: docs/results/bench.jsonl and the speed table on stdout
	$(VENV)/bin/sarnet bench --out docs/results/bench.jsonl
	$(VENV)/bin/sarnet bench --markdown docs/results/bench.jsonl

clean:
	rm -rf outputs multirun/*/ wandb .pytest_cache

# `make test` and `make demo` do all set-up themselves: a venv in .venv with requirements.txt.
PY := .venv/bin/python
SHARED := ../shared/data
# offline fallback: use the copies in ../shared when present, otherwise prepare.py downloads
SHAKESPEARE := $(wildcard $(SHARED)/tinyshakespeare/input.txt)

.venv/ok: requirements.txt
	python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: .venv/ok
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

data/shakespeare_char/train.bin: .venv/ok
	$(PY) data/shakespeare_char/prepare.py $(if $(SHAKESPEARE),--input=$(SHAKESPEARE))

# the main demo: path-star datasets (pathstar.py), 3 trainings two at a time, one table
# (README "Two commands"); DEMO_ITERS shortens or lengthens every run
DEMO_ITERS ?= 1500
demo: .venv/ok
	WANDB_MODE=disabled $(PY) bench/pathstar_demo.py --max_iters=$(DEMO_ITERS)

# the rest of the path-star results: also G(5,5) and the multi-token-prediction runs
demo-full: .venv/ok
	WANDB_MODE=disabled $(PY) bench/pathstar_demo.py --max_iters=$(DEMO_ITERS) --runs=all

demo-shakespeare: .venv/ok data/shakespeare_char/train.bin
	WANDB_MODE=disabled $(PY) train.py config/train_shakespeare_char.py
	$(PY) sample.py --out_dir=out-shakespeare-char --num_samples=1 --max_new_tokens=300

.PHONY: test demo demo-full demo-shakespeare

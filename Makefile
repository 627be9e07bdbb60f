# Two commands do everything on a fresh Debian/Ubuntu machine:
#   make train   set-up, data, a short real training run on CPU (default config)
#   make test    set-up, then the whole test suite
PY      := .venv/bin/python
ACCEL   := .venv/bin/accelerate
INFOGAN := .venv/bin/infogan
FASHION ?= /usr/share/datasets/fashion-mnist
MNIST10K ?= ../shared/data/mnist
CONFIG  ?= configs/fashion_mnist.yaml
STEPS   ?= 300
LAUNCH  ?= launch/cpu.yaml
ARGS    ?=

# torchrun forwards SIGUSR1 to the workers only when told to (see infogan_dist/stop.py).
export TORCHELASTIC_SIGNALS_TO_HANDLE := SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
# torch >= 2.14 reads PET_SIGNALS_TO_HANDLE and overwrites the one above with it.
export PET_SIGNALS_TO_HANDLE := $(TORCHELASTIC_SIGNALS_TO_HANDLE)
export WANDB_SILENT := true

.PHONY: setup data train test lint bench clean gpu-check docs docs-reference

setup:
	launch/setup.sh

data: setup data/fashion_mnist/train/index.json data/fashion_mnist/test/index.json

data/fashion_mnist/%/index.json:
	$(INFOGAN) prepare-data --out data/fashion_mnist/$* \
	  --images $(FASHION)/$(if $(filter test,$*),t10k,train)-images-idx3-ubyte.gz \
	  --labels $(FASHION)/$(if $(filter test,$*),t10k,train)-labels-idx1-ubyte.gz

# The 10k real MNIST test digits (no internet needed): data.shards=data/mnist/test10k
data/mnist/test10k/index.json: | setup
	$(INFOGAN) prepare-data --out data/mnist/test10k --shard-size 1000 \
	  --images $(MNIST10K)/t10k-images-idx3-ubyte.gz --labels $(MNIST10K)/t10k-labels-idx1-ubyte.gz

# Full MNIST (60k) through torchvision; needs the internet once.
data/mnist/train/index.json: | setup
	$(INFOGAN) prepare-data --out data/mnist/train --torchvision MNIST --root data/raw --download

train: data
	$(ACCEL) launch --config_file $(LAUNCH) train.py --config $(CONFIG) \
	  run.name=quickstart train.max_steps=$(STEPS) checkpoint.every=100 log.images_every=100 \
	  train.resume=auto $(ARGS)
	@echo "run directory: runs/quickstart (checkpoints/, metrics.jsonl, samples/, wandb/)"
	@ls runs/quickstart/checkpoints runs/quickstart/samples | tail -n 4

test: setup
	$(PY) -m pytest -q

# The documentation site (mkdocs.yml), strict: a broken link, anchor or missing page fails.
# tests/unit/test_docs.py runs the same build, so `make test` checks it too.
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d build/site

# docs/reference/config.md's tables, generated from the schema (test_docs.py fails when stale)
docs-reference: setup
	$(PY) -m infogan_dist.reference --write docs/reference/config.md

# The whole GPU verification (issue 15; docs/gpu-check.md): at most 8 minutes on one
# CUDA GPU, report in $(OUT)/gpu-check.{json,md}; without CUDA a CPU self-test, exit 0.
# Python: .venv's where it exists, else a python3 that has torch and accelerate (the GPU
# machine), else launch/setup.sh makes .venv first (a fresh clone here; no apt packages).
OUT    ?= runs/gpu-check
WHEELS ?=
MNIST  ?=
GPU_CHECK_ARGS ?=
gpu-check:
	@py=.venv/bin/python; \
	if [ ! -x "$$py" ]; then \
	  if python3 -c "import torch, accelerate" 2>/dev/null; then py=python3; \
	  else SKIP_APT=1 launch/setup.sh && py=.venv/bin/python || exit 1; fi; \
	fi; \
	echo "PYTHONPATH=. $$py benchmarks/gpu_check.py --out $(OUT) $(if $(WHEELS),--wheels $(WHEELS)) $(if $(MNIST),--mnist $(MNIST)) $(GPU_CHECK_ARGS)"; \
	PYTHONPATH=. $$py benchmarks/gpu_check.py --out $(OUT) $(if $(WHEELS),--wheels $(WHEELS)) \
	  $(if $(MNIST),--mnist $(MNIST)) $(GPU_CHECK_ARGS)

lint: setup
	.venv/bin/ruff check infogan_dist tests benchmarks train.py docs/hooks

clean:
	rm -rf runs data .pytest_cache

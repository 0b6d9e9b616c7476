"""The parts the pipeline's scripts share. The scripts at the repository's root import from here, never from
each other; nothing here reads the command line. By the step that uses it:

  every step
    cli.py           settings from arguments, the entry wrapper (errors as one line), --max-seq-length, logging
    files.py         JSONL streaming and appending, atomic writes, where each step's files live
    personas.py      personas.toml as typed data: prompts, answer format, checks (a new persona goes in the TOML)
    tokens.py        token budgets, tokenizers, and counting whole conversations with the chat template
    blas.py          a fast BLAS for mlx on Linux, only where this CPU can run it
  step 1, paperExtractor.py
    arxiv_client.py  arXiv search and PDF downloads
    records.py       one record per paper, kept while current, finished from its extraction
    extraction.py    PDF extraction, one paper in a worker process, many in a pool
    ray_extraction.py  the same extraction as Ray tasks (--ray)
    sections.py      markdown in, sections out (pure)
    store.py         the one-file-per-paper store, papers.json, and its check
  step 2, sdg.py
    units.py         sections chunked to the token budget, and their keys
    generation.py    requests under a rate limit, retried, gated: where a request is retried
    replies.py       reading a teacher's reply (step 2 and the judge)
    quality.py       the gate every answer passes before it becomes a row
    rows.py          rows written as units finish, reconciled with papers.json: where a row is written
    ledger.py        counts and cost, the cost ledger
    teachers/        one module per teacher behind one interface; gemini_batch.py runs Gemini's Batch API
  steps 3 and 4, trim_jsonl.py and split_data.py
    trimming.py      what makes a row trainable, and making it fit
    splits.py        groups by paper, near-duplicates joined, seeded assignment, the leak check
  step 5, make train and make export
    training.py      mlx_lm.lora watched: the base model checked, the best checkpoint kept
    hosts.py         training across machines (mlx.launch)
    export.py        fused model, GGUF and Ollama Modelfile
  analyze.py and evaluate.py
    models.py        the base model once, each adapter swapped in, batched generation
    journal.py       answers kept as they are made, so a rerun makes none twice
    systems.py       the compared systems: base, prompted base, adapter
    metrics.py       what is measured on one answer: where a metric is computed
    statistics.py    bootstrap intervals, paired differences, the verdict
    judge.py         the optional LLM judge
    held_out.py      held-out rows and answers files
    evaluation.py    evaluate.py's settings and report
"""

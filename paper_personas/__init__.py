"""The parts the pipeline's scripts share. The scripts at the repository's root import from here, never from
each other; nothing here reads the command line.

    cli.py           settings from arguments, errors shown without a traceback, logging
    files.py         JSONL streaming, atomic writes, where each step's files live
    tokens.py        token budgets, the chat-template margin, tokenizers
    personas.py      personas.toml as typed data: prompts, answer schema, checks (a new persona goes in the TOML)
    sections.py      step 1's section splitting: markdown in, sections out, no I/O
    arxiv_client.py  step 1's arXiv search and PDF downloads
    extraction.py    step 1's PDF extraction, in worker processes
    store.py         step 1's one-file-per-paper store and papers.json
    units.py         step 2's units: sections chunked to the token budget, and their keys
    teachers/        step 2's teachers and evaluate.py's judge, one module each behind one interface
    models.py        the base model and the trained adapters, for analyze.py and evaluate.py
"""

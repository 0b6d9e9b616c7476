"""Do the adapters earn their keep? Compare each adapter with the base model and with the base model *prompted*
with the persona's instructions, on held-out rows, with metrics that see content.

Run simply as:
    $ python evaluate.py                                    # base, prompted base and adapter; 50 rows per persona
    $ python evaluate.py --answers theirs.jsonl             # also score answers made elsewhere (a hosted model, ...)
    $ python evaluate.py --systems --answers a.jsonl b.jsonl  # score only the given answers; no model is loaded
    $ python evaluate.py --limit 10 --judge gemini          # plus a pairwise LLM judge (asks before spending)

Reads:  data/{persona}_2048/test.jsonl (or valid.jsonl), the base model, adapters/{persona}/.
Writes: reports/eval.md (a verdict line per persona, then the tables), reports/eval.json, reports/answers.jsonl
        (every generated answer, in the --answers format) and one PNG chart per metric in reports/.

Systems, each answering every held-out prompt with greedy decoding:
  base        the base model, given the training prompt as it is
  prompted    the base model with the persona's instructions and answer format as a system message: the honest
              baseline; training is justified only if the adapter beats it
  adapter     the base model with the persona's LoRA adapter
  <name>      answers from --answers FILE, one JSON object a line: {"system", "persona", "key", "answer"}, where
              key is the held-out row's meta.key, or "#<n>" for the n-th row (0-based) of a row without one;
              a key met again (a section held out twice, with two references) is followed by "~2", "~3", ...

Metrics per answer; every mean comes with a 95% bootstrap interval and its sample size:
  topical     BM25 (bm25s) ranks the answer's own section first among the persona's held-out sections
  copy_share  share of the answer's words inside runs of 8 or more words copied verbatim from the prompt
  degenerate  empty, under half the words the persona asks of its fields, mostly repeated 3-grams, the same
              answer for different sections, or cut off at --max-tokens
  format      the persona's labelled fields, in order
  rouge_l     ROUGE-L F1 against the reference answer
  style       the checks personas.toml asks for (reading grade, forbidden words, first field short, length),
              on non-degenerate answers only: an empty answer has no reading grade, not the best one
  loss        masked loss per token of the reference answer, per row (the adapter should lower it)
  judge       with --judge gemini|openai|mlx: adapter against prompted base, both orders, accuracy to the section
              and style judged separately, through the same teacher interface as step 2 (paper_personas/teachers/)
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from paper_personas.cli import (
    InputError,
    add_budget_flag,
    die,
    run,
    start,
)
from paper_personas.evaluation import Settings, render_markdown, report, write_charts
from paper_personas.files import atomic_writer, unwritable, write_json, write_jsonl
from paper_personas.held_out import answers_file_rows, held_out_rows, read_answers
from paper_personas.journal import AnswerJournal
from paper_personas.judge import prepare_judge, run_judge
from paper_personas.models import default_model, default_model_help
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import load_personas, select
from paper_personas.systems import MODEL_SYSTEMS, model_answers
from paper_personas.teachers import TEACHERS
from paper_personas.teachers.base import FatalAPIError
from paper_personas.tokens import MAX_TOKENS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=default_model_help())
    p.add_argument(
        "--adapters",
        type=Path,
        default=Path("adapters"),
        help="folder with one trained adapter per persona, adapters/<persona>/ (default: %(default)s)",
    )
    p.add_argument("--data", type=Path, default=Path("data"), help="folder of split data (default: %(default)s)")
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    p.add_argument("--personas", nargs="+", metavar="NAME", help="which personas (default: all in the personas file)")
    p.add_argument(
        "--systems",
        nargs="*",
        choices=MODEL_SYSTEMS,
        default=list(MODEL_SYSTEMS),
        help="model systems to generate answers with; none with --answers scores only the files (default: all)",
    )
    p.add_argument("--answers", nargs="+", type=Path, default=[], metavar="FILE", help="answers made elsewhere")
    p.add_argument("--limit", type=int, default=50, help="held-out rows per persona; 0 = all (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per generated answer (default: %(default)s)")
    trimmed_to = "the token budget the data was trimmed to: reads data/{persona}_N/, bounds the loss"
    add_budget_flag(p, MAX_TOKENS, trimmed_to, old_name=None)  # --max-tokens is the answer length here
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="answers decoded together; greedy answers are the same at any size (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="folder for eval.md, eval.json, answers.jsonl and the charts (default: %(default)s)",
    )
    p.add_argument(
        "--judge",
        choices=sorted(TEACHERS),
        help="also ask a teacher (as in sdg.py --teacher) which answer is more accurate and in style",
    )
    p.add_argument("--judge-model", help="the judge's model (default: gemini-2.5-flash for gemini)")
    p.add_argument(
        "--base-url",
        help="the judge's endpoint: Gemini-compatible (env GEMINI_BASE_URL) or OpenAI-compatible (env OPENAI_BASE_URL)",
    )
    p.add_argument("--yes", action="store_true", help="run the judge without asking to confirm its cost")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = start(parser, Settings, argv)
    if not settings.systems and not settings.answers:
        parser.error("nothing to evaluate: give --systems, or --answers FILE")
    if settings.judge and not settings.yes and not sys.stdin.isatty():
        parser.error("--judge asks before it spends, and there is no terminal to ask: add --yes to confirm the cost")
    if problem := unwritable(settings.out, "--out", folder=True):
        raise InputError(problem)
    started = time.monotonic()
    # Kept across runs: a later run with other systems or personas reuses what the same settings made before.
    journal = AnswerJournal(settings.out / "answers.journal.jsonl")
    personas = select(load_personas(settings.personas_file), settings.personas, settings.personas_file)
    model = settings.model or (default_model() if settings.systems else "-")
    settings = dataclasses.replace(settings, model=model, personas=[p.name for p in personas])
    sources = {p.name: held_out_rows(settings.data, p.name, settings.limit, settings.max_seq_length) for p in personas}
    held_out = {name: rows for name, (_, rows) in sources.items()}
    outside, outside_losses = read_answers(settings.answers, held_out, settings.systems)
    judge = prepare_judge(held_out, personas, settings) if settings.judge else None
    try:
        answers, losses = model_answers(settings, personas, held_out, journal)
    except KeyboardInterrupt:
        die(f"interrupted: the answers made so far are kept in {journal.path}; rerun the same command to resume")
    answers |= outside
    losses |= outside_losses
    try:
        judged = run_judge(judge, answers, held_out, personas) if judge else {}
    except FatalAPIError as e:
        die(f"the judge: {e}; the answers are kept in {journal.path}, and a rerun does not generate them again")
    results = report(settings, personas, sources, answers, losses, judged)
    write_json(settings.out / "eval.json", results)
    write_jsonl(settings.out / "answers.jsonl", answers_file_rows(answers, losses, held_out))
    with atomic_writer(settings.out / "eval.md") as f:
        f.write(render_markdown(results))
    charts = write_charts(results, settings.out)
    for line in results["verdicts"]:
        print(line)
    total = sum(len(rows) for rows in held_out.values())
    reused = f", {journal.reused:,} answers from an earlier run" if journal.reused else ""
    print(
        f"done: {len(personas)} personas x {len(answers)} systems, {total:,} held-out rows{reused}, {len(charts)} "
        f"charts in {time.monotonic() - started:,.1f} s -> {settings.out}/eval.md, eval.json, answers.jsonl"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

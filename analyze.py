"""Explain a paper once per persona with the trained adapters: the product the adapters power.

Run simply as:
    $ python analyze.py --id 1706.03762                 # fetch from arXiv
    $ python analyze.py --pdf ~/papers/paper.pdf        # a local PDF
    $ python analyze.py --paper 2401.00001              # a paper already in papers.json

Reads:  the base model (--model, default: the one in adapter_config.json) and adapters/{persona}/.
Writes: reports/<id>.md, each section followed by one perspective per persona, and the same content as
        reports/<id>.json (--out moves both).

Fetching, extraction and sectioning run paperExtractor.py itself, and chunks and prompts come from
paper_personas.units and paper_personas.personas as in step 2, so a persona sees exactly the prompt it was trained
on. The base model is loaded once; personas are switched by swapping LoRA weights, which all adapters share
the shape of.
"""

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import (
    InputError,
    add_budget_flag,
    die,
    run,
    start,
)
from paper_personas.files import atomic_writer, read_json, safe_filename, unwritable, write_json
from paper_personas.journal import AnswerJournal, file_identity, fingerprint
from paper_personas.models import (
    ADAPTER_FILE,
    PersonaModel,
    adapter_configs,
    default_model,
    default_model_help,
    kept_step,
    model_identity,
)
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, load_personas, select
from paper_personas.store import read_papers
from paper_personas.tokens import MAX_TOKENS, count_tokens, load_tokenizer
from paper_personas.units import Unit, build_units, chunk_budget

log = logging.getLogger("analyze")

STEP1 = Path(__file__).resolve().parent / "paperExtractor.py"
DEFAULT_API_URL = "https://export.arxiv.org/api/query"  # paperExtractor.py's own default, for --help
DEFAULT_OUT_DIR = Path("reports")


@dataclass(frozen=True)
class Settings:
    id: str | None
    pdf: Path | None
    paper: str | None
    model: str | None  # None: adapter_config.json's
    adapters: Path
    personas_file: Path
    personas: list[str] | None  # None: all in the personas file
    out: Path | None
    max_tokens: int
    temperature: float
    batch_size: int
    tokenizer: str
    max_seq_length: int
    papers: Path
    papers_dir: Path
    api_url: str
    api_delay: float
    verbose: bool


# ----------------------------------------------------------------------------- the paper


def paper_from_json(papers_json: Path, paper_id: str) -> dict:
    papers, _ = read_papers(papers_json, "pass --papers the file paperExtractor.py wrote, or use --id / --pdf")
    paper = next((p for p in papers if p["id"] == paper_id), None)
    if paper is None:
        raise InputError(f"paper {paper_id!r} is not in {papers_json}; use --id to fetch it from arXiv")
    if not paper.get("sections"):
        raise InputError(f"{papers_json}: paper {paper_id!r} has no sections; rerun step 1 on it")
    return paper


def run_step1(step1_args: list[str], papers_dir: Path) -> dict:
    """Fetch and extract one paper by running paperExtractor.py as a user would, into a papers.json of our own
    (the training set's papers.json is never touched), and return its record: the paper is sectioned by
    exactly the code that sectioned the training papers."""
    with tempfile.TemporaryDirectory(prefix="analyze-") as tmp:
        out = Path(tmp) / "papers.json"
        cmd = [sys.executable, str(STEP1), *step1_args, "--out", str(out), "--papers-dir", str(papers_dir)]
        log.info("fetching and extracting with paperExtractor.py %s", " ".join(step1_args))
        result = subprocess.run(cmd, capture_output=True, text=True)
        data = read_json(out, "papers.json", "see paperExtractor.py's message above") if out.exists() else {}
    papers, failures = data.get("papers", []), data.get("failures", [])
    if papers:
        return papers[0]
    reason = failures[0]["reason"] if failures else _last_error(result.stderr)
    raise InputError(f"paperExtractor.py could not get the paper: {reason}")


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None) or (
        lines[-1] if lines else "it printed nothing"
    )


def paper_from_pdf(pdf: Path, papers_dir: Path) -> dict:
    if pdf.is_dir():
        raise InputError(f"--pdf {pdf} is a folder: give one PDF file (paperExtractor.py --pdf-dir reads folders)")
    if not pdf.is_file():
        raise InputError(f"--pdf {pdf}: no such file")
    with tempfile.TemporaryDirectory(prefix="analyze-pdf-") as folder:
        # Step 1 reads folders of *.pdf: a file named otherwise is linked under a .pdf name, so that a file
        # that is no PDF at all gets step 1's own reason rather than "no papers found".
        name = pdf.name if pdf.suffix.lower() == ".pdf" else f"{pdf.name}.pdf"
        link = Path(folder) / name
        os.symlink(pdf.resolve(), link)
        try:
            return run_step1(["--pdf-dir", folder], papers_dir)
        except InputError as e:  # step 1's reason names the link; the user knows the file
            raise InputError(str(e).replace(str(link), str(pdf))) from None


def paper_from_arxiv(settings: Settings) -> dict:
    return run_step1(
        ["--ids", settings.id, "--api-url", settings.api_url, "--api-delay", str(settings.api_delay)],
        settings.papers_dir,
    )


# ----------------------------------------------------------------------------- the report


def paper_units(paper: dict, personas: tuple[Persona, ...], tokenizer_spec: str, max_tokens: int) -> list[Unit]:
    """Step 2's units for this paper: same skipping, same chunking, same keys."""
    tokenizer = load_tokenizer(tokenizer_spec)
    budget = chunk_budget(max_tokens, personas)
    units, _ = build_units([paper], budget, lambda t: count_tokens(tokenizer, t))
    return units


def render_markdown(report: dict) -> str:
    lines = [
        f"# {report['title']}",
        "",
        f"*{report['paper_id']}: {len(report['sections'])} sections, "
        f"personas {', '.join(report['personas'])}, model {report['model']}*",
        "",
    ]
    for section in report["sections"]:
        chunk = f" (part {section['chunk'] + 1})" if section["chunk"] else ""
        lines += [f"## {section['heading']}{chunk}", "", section["text"], ""]
        for persona, answer in section["perspectives"].items():
            lines += [f"### {persona}", "", answer["text"], ""]
    return "\n".join(lines)


def analyze(paper: dict, units: list[Unit], persona_model: PersonaModel, personas, settings: Settings, journal):
    """Every unit through every persona, one adapter swap per persona; return the report and tokens generated.
    Each answer is journaled as it is made, and one the journal holds for the same inputs is not made again."""
    from tqdm import tqdm

    sections = [
        {"heading": u.heading, "section": u.section, "chunk": u.chunk, "key": u.key, "text": u.text, "perspectives": {}}
        for u in units
    ]
    generated, model = 0, model_identity(settings.model)
    with tqdm(total=len(units) * len(personas), desc="analyze", unit="answer") as progress:
        for persona in personas:
            persona_model.use(persona.name)
            log.info("adapter %s: %s", persona.name, kept_step(settings.adapters / persona.name))
            adapter = file_identity(settings.adapters / persona.name / ADAPTER_FILE)
            prompts = [persona.user_message(unit.text) for unit in units]
            keys = [
                fingerprint(
                    model=model,
                    adapter=adapter,
                    prompt=prompt,
                    max_tokens=settings.max_tokens,
                    temperature=settings.temperature,
                )
                for prompt in prompts
            ]
            made = {i: found for i, key in enumerate(keys) if (found := journal.get(key)) is not None}
            progress.update(len(made))
            todo = [i for i in range(len(units)) if i not in made]

            def keep(j: int, text: str, tokens: int, todo=todo, keys=keys, made=made) -> None:
                made[todo[j]] = {"text": text, "tokens": tokens}
                journal.add(keys[todo[j]], made[todo[j]])
                progress.update(1)

            conversations = [[{"role": "user", "content": prompts[i]}] for i in todo]
            persona_model.generate_batch(
                conversations, settings.max_tokens, settings.batch_size, settings.temperature, on_answer=keep
            )
            generated += sum(made[i]["tokens"] for i in todo)
            for i, section in enumerate(sections):
                section["perspectives"][persona.name] = {"prompt": prompts[i], **made[i]}
    report = {
        "paper_id": paper["id"],
        "title": paper.get("title") or paper["id"],
        "model": settings.model,
        "personas": [p.name for p in personas],
        "sections": sections,
    }
    return report, generated


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--id", help="an arXiv id to fetch, e.g. 1706.03762")
    src.add_argument("--pdf", type=Path, help="a local PDF")
    src.add_argument("--paper", help="the id of a paper already in --papers")
    p.add_argument("--model", help=default_model_help())
    p.add_argument(
        "--adapters", type=Path, default=Path("adapters"), help="folder of persona adapters (default: %(default)s)"
    )
    p.add_argument(
        "--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="persona definitions (default: personas.toml)"
    )
    p.add_argument("--personas", nargs="+", metavar="NAME", help="which personas (default: all in the personas file)")
    p.add_argument("--out", type=Path, help="markdown report path; JSON beside it (default: reports/<id>.md)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens generated per answer (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="sections answered together per persona (default: %(default)s)"
    )
    p.add_argument(
        "--tokenizer", default="cl100k_base", help="chunk sizing, as sdg.py --tokenizer (default: %(default)s)"
    )
    add_budget_flag(
        p,
        MAX_TOKENS,
        "the row budget the adapters were trained at: sections are chunked to fit it, as sdg.py does",
        old_name="--chunk-max-tokens",
    )
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="for --paper (default: %(default)s)")
    p.add_argument("--papers-dir", type=Path, default=Path("papers"), help="downloads (default: %(default)s)")
    p.add_argument(
        "--api-url",
        default=os.environ.get("ARXIV_API_URL", DEFAULT_API_URL),
        help="arXiv API endpoint, passed to paperExtractor.py (env ARXIV_API_URL; default: %(default)s)",
    )
    p.add_argument("--api-delay", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def load_paper(settings: Settings) -> dict:
    if settings.paper:
        return paper_from_json(settings.papers, settings.paper)
    if settings.pdf:
        return paper_from_pdf(settings.pdf, settings.papers_dir)
    return paper_from_arxiv(settings)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = start(parser, Settings, argv)
    if problem := unwritable(settings.out or DEFAULT_OUT_DIR, "--out", folder=settings.out is None):
        raise InputError(problem)
    started = time.monotonic()
    personas = select(load_personas(settings.personas_file), settings.personas, settings.personas_file)
    settings = dataclasses.replace(
        settings, model=settings.model or default_model(), personas=[p.name for p in personas]
    )
    configs = adapter_configs(settings.adapters, settings.personas, settings.model)
    paper = load_paper(settings)
    units = paper_units(paper, personas, settings.tokenizer, settings.max_seq_length)
    if not units:
        raise InputError(f"{paper['id']}: no section has enough text to analyze")
    persona_model = PersonaModel(settings.model, settings.adapters, configs)
    out = settings.out or DEFAULT_OUT_DIR / f"{safe_filename(paper['id'])}.md"
    journal = AnswerJournal(out.with_suffix(".partial.jsonl"))
    try:
        report, generated = analyze(paper, units, persona_model, personas, settings, journal)
    except KeyboardInterrupt:
        die(f"interrupted: {len(journal.known):,} answers are kept in {journal.path}; rerun the same command to resume")
    with atomic_writer(out) as f:
        f.write(render_markdown(report))
    write_json(out.with_suffix(".json"), report)
    journal.remove()  # every answer is in the report now
    seconds = time.monotonic() - started
    reused = f", {journal.reused:,} answers from an earlier run" if journal.reused else ""
    print(
        f"done: {len(units):,} sections x {len(personas)} personas, {generated:,} tokens generated{reused}, "
        f"{generated / seconds:,.1f} tokens/s overall in {seconds:,.1f} s -> {out}, {out.with_suffix('.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

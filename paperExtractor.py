"""Step 1: fetch research papers and turn each into clean, sectioned markdown.

Run simply as:
    $ python paperExtractor.py                                   # 7 newest papers in each default category
    $ python paperExtractor.py --ids 1706.03762 cs/0112017       # specific arXiv papers
    $ python paperExtractor.py --pdf-dir ~/papers                # local PDFs, no arXiv involved
    $ python paperExtractor.py --pdf-dir ~/papers --ray [ADDRESS]  # as Ray tasks (pip install -r requirements-ray.txt)

Reads:  the arXiv API (or --pdf-dir and its subfolders), then each paper's PDF.
Writes: papers/<id>.pdf, papers/images/<id>/*.png, papers.records/<id>.json (one file per finished paper, the
        resumable store) and, at the end of a run or on Ctrl-C, papers.json assembled from the store:
        {"papers": [{id, version, title, authors, abstract, categories, primary_category, published,
                     pdf_url, pdf_path, markdown, sections: [{heading, text}], images, pages, pages_total,
                     source_sha256, options}],
         "failures": [{id, stage, reason}]}
A rerun keeps the papers already stored and skips them, unless their PDF's bytes or the options that shape a
record (--max-pages, --keep-appendix) changed, or --force; earlier failures are retried. Ctrl-C or SIGTERM stops
within seconds, keeping every finished paper. A run in which nothing succeeded exits 1.
"""

import argparse
import difflib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from paper_personas import ray_extraction
from paper_personas.arxiv_client import (
    ARXIV_CATEGORIES,
    ARXIV_MIN_DELAY_S,
    DEFAULT_API_URL,
    DEFAULT_CATEGORIES,
    bad_ids,
    fetch_all,
    make_arxiv_client,
    search_arxiv,
    unknown_categories,
    versionless_id,
)
from paper_personas.cli import InputError, counted, die, run, start
from paper_personas.extraction import extract_all
from paper_personas.files import unwritable
from paper_personas.records import is_current, local_pdf, local_records
from paper_personas.store import Store, import_legacy, write_papers_json

log = logging.getLogger("paperExtractor")


# ----------------------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class Settings:
    categories: list[str]
    per_category: int
    ids: list[str]
    pdf_dir: Path | None
    api_url: str
    api_delay: float
    out: Path
    papers_dir: Path
    workers: int
    ray: str | None  # None: the process pool; "": a local Ray instance (or RAY_ADDRESS's); else a cluster address
    max_pages: int
    timeout: float
    download_timeout: float
    max_pdf_mb: float
    keep_appendix: bool
    force: bool
    verbose: bool

    @property
    def options(self) -> dict:
        """The settings that shape a record: changing one re-extracts the papers made with another."""
        return {"max_pages": self.max_pages, "keep_appendix": self.keep_appendix}


def positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to fetch")
    src.add_argument(
        "--categories",
        nargs="+",
        default=DEFAULT_CATEGORIES,
        metavar="CAT",
        help="arXiv categories to search, newest submissions first (default: %(default)s)",
    )
    src.add_argument(
        "--per-category",
        type=int,
        default=7,
        metavar="N",
        help="papers per category; cross-listed papers are kept once (default: %(default)s)",
    )
    src.add_argument(
        "--ids",
        nargs="+",
        default=[],
        metavar="ID",
        help="specific arXiv ids (e.g. 1706.03762 cs/0112017); skips the category search",
    )
    src.add_argument(
        "--pdf-dir", type=Path, help="ingest local PDFs from this folder and its subfolders instead of arXiv"
    )
    src.add_argument(
        "--api-url",
        default=os.environ.get("ARXIV_API_URL", DEFAULT_API_URL),
        help="arXiv API query endpoint, for mirrors and tests (env ARXIV_API_URL; default: %(default)s)",
    )
    src.add_argument(
        "--api-delay",
        type=float,
        default=ARXIV_MIN_DELAY_S,
        metavar="SECONDS",
        help="pause between API requests; arXiv's terms ask for >= 3 (default: %(default)s)",
    )
    out = p.add_argument_group("where to write")
    out.add_argument(
        "--out",
        type=Path,
        default=Path("papers.json"),
        help="output JSON; finished papers are kept one file each in <out stem>.records/ (default: %(default)s)",
    )
    out.add_argument(
        "--papers-dir",
        type=Path,
        default=Path("papers"),
        help="PDFs and papers/images/<id>/ figures (default: %(default)s)",
    )
    work = p.add_argument_group("download and extraction")
    work.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="extraction processes, or a local Ray instance's CPUs (default: number of CPUs, %(default)s)",
    )
    work.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="extract as Ray tasks: on a local Ray instance, or on the cluster at ADDRESS (or $RAY_ADDRESS), e.g. "
        "ray://head:10001 or head:6379; PDFs travel with the tasks, the store stays here. Needs "
        "pip install -r requirements-ray.txt",
    )
    work.add_argument(
        "--max-pages", type=int, default=60, help="page cap per PDF; logged when hit (default: %(default)s)"
    )
    work.add_argument(
        "--timeout",
        type=positive,
        default=300,
        help="seconds to extract one PDF; a slower PDF is recorded as failed (default: %(default)s)",
    )
    work.add_argument(
        "--download-timeout",
        type=positive,
        default=300,
        help="seconds to download one PDF, connecting, every read and retries included (default: %(default)s)",
    )
    work.add_argument(
        "--max-pdf-mb", type=positive, default=100, help="largest PDF to download, MB (default: %(default)s)"
    )
    work.add_argument("--keep-appendix", action="store_true", help="keep appendix sections (default: dropped)")
    work.add_argument("--force", action="store_true", help="extract every paper again, even unchanged ones")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def collect_records(settings: Settings) -> tuple[dict[str, dict], list[dict]]:
    """The papers this run is about, and the queries or ids that failed before any paper was fetched."""
    if settings.pdf_dir is not None:
        return local_records(settings.pdf_dir), []
    malformed = bad_ids(settings.ids)
    failures = [
        {"id": i, "stage": "id", "reason": "not an arXiv id (new style 2309.13541 or 2309.13541v2, old cs/0112017)"}
        for i in malformed
    ]
    for failure in failures:
        log.error("%s: %s", failure["id"], failure["reason"])
    ids = [i for i in settings.ids if i not in malformed]
    if settings.ids and not ids:
        return {}, failures
    categories = [] if settings.ids else settings.categories
    page_size = len(ids) if ids else settings.per_category  # ask for no more than is used
    client = make_arxiv_client(settings.api_url, settings.api_delay, page_size)
    records, search_failures = search_arxiv(client, categories, settings.per_category, ids, settings.api_url)
    missing = [i for i in ids if versionless_id(i)[0] not in records]
    if missing and not search_failures:
        log.warning("not found on arXiv, skipped: %s", ", ".join(missing))
        failures += [{"id": i, "stage": "id", "reason": "arXiv has no paper with this id"} for i in missing]
    return records, failures + search_failures


def kept(record: dict, stored: dict, settings: Settings) -> bool:
    pdf = local_pdf(record, settings.papers_dir)
    return is_current(stored.get(record["id"]), pdf, settings.options, settings.force)


def check_settings(settings: Settings, parser) -> None:
    if settings.workers < 1 or settings.per_category < 1 or settings.max_pages < 1:
        parser.error("--workers, --per-category and --max-pages must be at least 1")
    if settings.pdf_dir is not None and not settings.pdf_dir.is_dir():
        parser.error(f"--pdf-dir {settings.pdf_dir}: no such folder; pass a folder that holds .pdf files")
    if settings.out.is_dir():
        parser.error(f"--out {settings.out} is a folder; pass a file name such as {settings.out / 'papers.json'}")
    bad = [] if (settings.ids or settings.pdf_dir) else unknown_categories(settings.categories)
    if bad:
        by_lower = {c.lower(): c for c in ARXIV_CATEGORIES}
        hints = {c: [by_lower[m] for m in difflib.get_close_matches(c.lower(), by_lower, n=1)] for c in bad}
        parser.error(
            "unknown arXiv categories: "
            + ", ".join(f"{c}" + (f" (did you mean {h[0]}?)" if h else "") for c, h in hints.items())
            + "; see https://arxiv.org/category_taxonomy"
        )
    if settings.ray is not None and (problem := ray_extraction.preflight(settings.ray)):
        die(problem)
    outputs = [(settings.out, False), (Store(settings.out).dir, True)]
    for path, folder in outputs:
        if problem := unwritable(path, "--out", folder):
            die(problem)
    if problem := unwritable(settings.papers_dir, "--papers-dir", folder=True):
        die(problem)


def shown_settings(settings: Settings) -> dict:
    """What this run really uses: arXiv settings only when it talks to arXiv."""
    arxiv_only = {"categories", "per_category", "ids", "api_url", "api_delay", "download_timeout", "max_pdf_mb"}
    skip = arxiv_only if settings.pdf_dir else {"pdf_dir"}
    return {k: str(v) for k, v in vars(settings).items() if k not in skip}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    settings = start(parser, Settings, argv)
    check_settings(settings, parser)
    log.info("settings (%s): %s", "local PDFs" if settings.pdf_dir else "arXiv", shown_settings(settings))
    started = time.monotonic()
    store = Store(settings.out)
    imported = import_legacy(settings.out, store)
    if imported:
        log.info("kept %s of %s in %s/", counted(imported, "paper"), settings.out, store.dir)
    # Only the fingerprints: a store of thousands of papers is not held in memory for a comparison.
    stored = {r["id"]: {k: r[k] for k in ("options", "source_sha256") if k in r} for r in store.records()}
    records, early_failures = collect_records(settings)
    todo = [r for r in records.values() if not kept(r, stored, settings)]
    skipped = len(records) - len(todo)
    if skipped:
        log.info("skipping %s already in %s, unchanged", counted(skipped, "paper"), settings.out)
    failures: dict[str, dict] = {}
    new: list[dict] = []
    try:
        ready = fetch_all(todo, settings, store, failures)
        new = extract_all(ready, settings, store, failures)
    except KeyboardInterrupt:
        papers, _ = write_papers_json(settings.out, store, early_failures)
        die(f"interrupted: {counted(papers, 'paper')} saved in {settings.out}; rerun the same command to resume")
    except InputError:  # the Ray cluster could not be joined: what was stored is still written out
        write_papers_json(settings.out, store, early_failures)
        raise
    write_papers_json(settings.out, store, early_failures)
    failed = len(failures) + len(early_failures)
    print(
        f"done: {len(new):,} ok, {failed:,} failed, {skipped:,} skipped | "
        f"{sum(p['pages'] for p in new):,} pages, {sum(len(p['sections']) for p in new):,} sections, "
        f"{sum(len(p['images']) for p in new):,} images in {time.monotonic() - started:,.1f} s -> {settings.out}"
    )
    for failure in [*failures.values(), *early_failures]:
        log.warning("failed %s (%s): %s", failure["id"], failure["stage"], failure["reason"])
    if not new and not skipped:
        first = next(iter([*early_failures, *failures.values()]), None)
        if first is None:
            die("no papers found: check the categories, ids or --pdf-dir")
        die(f"nothing succeeded: {failed:,} failed; first {first['id']} ({first['stage']}): {first['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

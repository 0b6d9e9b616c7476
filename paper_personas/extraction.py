"""Step 1's PDF extraction, run in worker processes: one PDF in, its markdown, sections, figures, title and
authors out. The title and authors come from page 1's type sizes, where PDF metadata often holds a file name."""

import contextlib
import logging
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from pathlib import Path

from paper_personas.files import safe_filename
from paper_personas.sections import (
    REFERENCE_TITLES,
    PageLayout,
    furniture_key,
    layout_key,
    split_sections,
    title_key,
)

# ----------------------------------------------------------------------------- extraction (worker processes)


log = logging.getLogger("paperExtractor")


def find_references_page(page_texts: list[str]) -> int | None:
    """Index of the last page that starts a references section, found on cheap plain text.

    Pages after it are appendix or bibliography and are dropped anyway, so layout analysis skips them.
    The last match wins because a table of contents may also list "References" on page 1.
    """
    hit = None
    for index, text in enumerate(page_texts):
        if any(title_key(line) in REFERENCE_TITLES for line in text.splitlines() if len(line) < 40):
            hit = index
    return hit


def limit_worker_threads(threads: int) -> None:
    """Give each worker process its share of the cores so N workers do not oversubscribe them.

    pymupdf's layout model runs in onnxruntime, which otherwise starts one thread per core in every worker.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import onnxruntime

    options_class = onnxruntime.SessionOptions

    class CappedSessionOptions(options_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.intra_op_num_threads = threads
            self.inter_op_num_threads = 1

    onnxruntime.SessionOptions = CappedSessionOptions


AFFILIATION = re.compile(
    r"@|\b(?:university|universit[äa]t|department|dept\.|institute|school|college|laborator(?:y|ies)|lab\b|inc\.|"
    r"division|computer science|faculty|centre|center|"
    r"corporation|research|google|microsoft|ibm|yahoo|e-?mail|http|www\.|street|road|avenue|usa|china|germany)\b",
    re.IGNORECASE,
)
# A word of a person's name in any Latin-script language ("Müller", "O’Brien", "Jean-Pierre"), an initial ("J.",
# "J.-P."), a name in capitals ("GOLUBCHIK"), or a particle; letters only, so "58th" or "2020" never is one.
NAME_TOKEN = re.compile(r"^(?:[^\W\d_](?:[^\W\d_]|['’\-])*|[^\W\d_]\.(?:-?[^\W\d_]\.)*)$")
NAME_PARTICLES = {"van", "von", "de", "der", "da", "del", "di", "le", "la"}
# Affiliation marks set after a name: digits, footnote symbols, or a lone Greek letter ("Smithα", "Jones2,β"; a
# Greek word has more than one). A mark ends a name, so "Ada Lovelace1 Alan Turing2" is two names.
AFFILIATION_MARK = re.compile(r"[\d*†‡§¶∗⋆]+|(?<![\u0370-\u03ff])[\u03b1-\u03c9](?![\u0370-\u03ff])")


def page_lines(page) -> list[tuple[float, float, str]]:
    """(top y, largest font size, text) of every horizontal text line of a page, top to bottom and left to right
    (authors side by side share a row). Rotated text, such as arXiv's margin stamp, is left out."""
    lines = []
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            text = " ".join("".join(span["text"] for span in line["spans"]).split())
            if text and abs(line["dir"][0] - 1) < 1e-3 and not re.match(r"^arXiv:\d", text):
                size = max(span["size"] for span in line["spans"])
                lines.append((round(line["bbox"][1]), line["bbox"][0], size, text))
    return [(y, size, text) for y, _, size, text in sorted(lines)]


def is_name(tokens: list[str]) -> bool:
    return (
        2 <= len(tokens) <= 5
        and all(t[0].isupper() or t in NAME_PARTICLES for t in tokens)
        and all(NAME_TOKEN.match(t) for t in tokens)
    )


def names_in(line: str) -> list[str]:
    """The person names of an author line ("Ada Lovelace, Alan Turing and Grace Hopper", "José Müller1 Bob
    Jones2,α"), or [] if it is not one. A line that names an affiliation gives names only as ACM's journals print
    them, in capitals before it ("LEANA GOLUBCHIK, University of Southern California")."""
    if len(line) > 300:
        return []
    cleaned = AFFILIATION_MARK.sub(",", line)
    cleaned = re.sub(r"[´¨`˝˜ˆ˘˚¸]", "", cleaned)  # TeX's spacing accents: "Zolt´an Gy¨ongyi" -> "Zoltan Gyongyi"
    parts = [p.split() for p in re.split(r",|;|\band\b|·|&", cleaned, flags=re.IGNORECASE)]
    parts = [tokens for tokens in parts if tokens]
    if AFFILIATION.search(line):
        in_capitals = [all(t.isupper() or t in NAME_PARTICLES for t in tokens) and is_name(tokens) for tokens in parts]
        count = next((i for i, ok in enumerate(in_capitals) if not ok), len(parts))
        if not count or not AFFILIATION.search(" ".join(" ".join(tokens) for tokens in parts[count:])):
            return []
    else:
        count = len(parts)
        if not all(is_name(tokens) for tokens in parts):
            return []
    return [" ".join(t.title() if t.isupper() and "." not in t else t for t in tokens) for tokens in parts[:count]]


def first_page_title_authors(page) -> tuple[str, list[str]]:
    """The title (the largest type in the upper half of page 1) and the author lines below it, up to the
    abstract: what a reader takes them from, where PDF metadata often holds a file name or nothing."""
    lines = page_lines(page)
    upper = [line for line in lines if line[0] < page.rect.height * 0.5 and len(line[2]) >= 2]
    if not upper:
        return "", []
    size = max(s for _, s, _ in upper)
    title_lines = [i for i, (y, s, t) in enumerate(lines) if abs(s - size) < 0.5 and y < page.rect.height * 0.5]
    title = " ".join(lines[i][2] for i in title_lines)
    authors: list[str] = []
    for _, _, text in lines[title_lines[-1] + 1 :]:
        found = names_in(text)
        if re.match(r"^\W*(?:abstract|summary|摘要)\b", text, re.IGNORECASE) or (len(text) > 160 and not found):
            break  # the abstract, labelled or not: a long line that names nobody
        authors += [n for n in found if n not in authors]
    return (title if 8 <= len(title) <= 300 else ""), authors


FOOTNOTE_MARK = re.compile(r"^\s*(?:\d{1,2}|[*†‡§¶∗⋆])\s*\S")
EDGE_SHARE = 0.1  # lines in the top or bottom tenth of a page may be running headers or footers


def page_layout(doc, pages: list[int]) -> PageLayout:
    """Edge lines and footnotes of the pages analysed, from the PDF's geometry and type sizes."""
    sizes: Counter = Counter()
    per_page = []
    for number in pages:
        page = doc[number]
        lines = page_lines(page)
        per_page.append((page, lines))
        for _, size, text in lines:
            sizes[round(size)] += len(text)
    body_size = sizes.most_common(1)[0][0] if sizes else 10
    edges, footnotes = set(), set()
    for page, lines in per_page:
        height = page.rect.height
        edges |= {furniture_key(t) for y, _, t in lines if y < height * EDGE_SHARE or y > height * (1 - EDGE_SHARE)}
        for y, size, text in lines:
            small, low = size <= body_size - 1, y > page.rect.height * 0.7
            if small and low and FOOTNOTE_MARK.match(text) and not re.fullmatch(r"\d{1,4}", text.strip()):
                footnotes.add(layout_key(text))  # a footnote's first line, marker included
    # 20+ characters: a short line would match the start of too many paragraphs
    return PageLayout(frozenset(edges), frozenset(k for k in footnotes if len(k) >= 20))


def metadata_title(metadata: dict) -> str:
    """The metadata title, unless it is a file name or a tool's placeholder ("packing-journal.dvi")."""
    title = (metadata.get("title") or "").strip()
    if re.search(r"\.(?:dvi|tex|pdf|docx?|ps)$|^Microsoft Word|^untitled$", title, re.IGNORECASE):
        return ""
    return title


def markdown_ref(image_dir: str | Path) -> str:
    """How pymupdf4llm links a figure in `image_dir` from the markdown: relative to this process's working
    folder when under it, else absolute. (Its md_path also makes the folder: a paper that fails has none.)"""
    from pymupdf4llm.helpers.utils import md_path

    existed = Path(image_dir).is_dir()
    link, _ = md_path(str(image_dir), "x.png")  # (link in the markdown, file it saves to)
    if not existed:
        Path(image_dir).rmdir()
    return link.rsplit("/", 1)[0]


def extract_paper(
    pdf_path: str, image_dir: str, max_pages: int, keep_appendix: bool, image_ref: str | None = None
) -> dict:
    """Markdown, sections and figures of one PDF. Raises ValueError with a reason for unusable PDFs.
    `image_ref`: the folder the markdown's figure links should name instead of image_dir (a Ray task extracts
    into a scratch folder; the figures end up on the driver)."""
    import pymupdf
    import pymupdf4llm

    pymupdf.TOOLS.mupdf_display_warnings(False)
    pymupdf.TOOLS.reset_mupdf_warnings()  # per paper: a worker process extracts many
    try:
        doc = pymupdf.open(pdf_path)
    except Exception as e:
        raise ValueError(f"corrupt PDF: {e}") from None
    with doc:
        if doc.needs_pass:
            raise ValueError("encrypted PDF: it needs a password")
        if doc.page_count == 0:
            raise ValueError("corrupt or empty PDF: no readable pages")
        texts = []
        for number, page in enumerate(doc, start=1):
            try:
                texts.append(page.get_text())
            except Exception as e:
                raise ValueError(f"damaged PDF: page {number} does not load ({e})") from None
        # None of the 12 real test papers makes mupdf repair anything; a truncated or damaged file does, and then
        # "loads" with pages silently missing.
        warnings = pymupdf.TOOLS.mupdf_warnings()
        if "repair" in warnings:
            first = next(line for line in warnings.splitlines() if line.strip())
            raise ValueError(f"damaged PDF: mupdf had to repair it ({first}); pages may be missing")
        if not any(t.strip() for t in texts):
            raise ValueError("no text layer (a scanned PDF?): OCR it first")
        last = len(texts) - 1 if keep_appendix else (find_references_page(texts) or len(texts) - 1)
        pages = list(range(min(last + 1, max_pages)))
        pages_total = doc.page_count
        Path(image_dir).mkdir(parents=True, exist_ok=True)
        markdown = pymupdf4llm.to_markdown(
            doc, pages=pages, write_images=True, image_path=image_dir, image_format="png", show_progress=False
        )
        if image_ref is not None:
            markdown = markdown.replace(f"]({markdown_ref(image_dir)}/", f"]({image_ref}/")
        metadata = doc.metadata or {}
        first_line = next((line.strip() for line in texts[0].splitlines() if line.strip()), "")
        page_title, page_authors = first_page_title_authors(doc[0])
        outline = [title for _, title, *_ in doc.get_toc()]  # the authors' own bookmarks, when LaTeX wrote them
        layout = page_layout(doc, pages)
    sections = split_sections(markdown, keep_appendix=keep_appendix, outline=outline, layout=layout)
    return {
        "markdown": markdown,
        "sections": sections,
        "images": sorted(str(p) for p in Path(image_dir).glob("*.png")),
        "pages": len(pages),
        "pages_total": pages_total,
        "page_capped": len(pages) < last + 1,  # --max-pages cut text that would have been used
        "pdf_title": page_title or metadata_title(metadata) or first_line,
        "pdf_authors": page_authors
        or [a.strip() for a in re.split(r"[;,]| and ", metadata.get("author") or "") if a.strip()],
    }


# ----------------------------------------------------------------------------- extracting many papers


def worker_init(threads: int) -> None:
    """Extraction workers leave Ctrl-C to the main process, which stops them; and share the cores."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_worker_threads(threads)


def extract_all(records: list[dict], settings, store, failures: dict) -> list[dict]:
    """Extract in worker processes, or as Ray tasks with --ray (settings: paperExtractor.py's); each finished
    paper is stored at once. On Ctrl-C or SIGTERM the work still queued or running is cancelled, so the interrupt
    takes effect in seconds; finished papers are kept."""
    from tqdm import tqdm

    from paper_personas import ray_extraction
    from paper_personas.records import finish_record

    if settings.ray is None:
        outcomes = pool_extractions(records, settings)
    else:
        jobs = (
            ray_extraction.Job(
                r, Path(r["pdf_path"]), image_dir(r, settings), settings.max_pages, settings.keep_appendix
            )
            for r in records
        )
        outcomes = ray_extraction.extractions(jobs, settings.ray, settings.workers, settings.timeout)
    done = []
    with contextlib.closing(outcomes):  # closed early (Ctrl-C), the engine stops its workers
        for record, outcome in tqdm(outcomes, total=len(records), desc="extract", unit="paper", disable=not records):
            if isinstance(outcome, str):  # any failure of one paper is recorded; it never stops the run
                failures[record["id"]] = {"id": record["id"], "stage": "extract", "reason": outcome}
                store.save_failure(failures[record["id"]])
                continue
            if outcome["page_capped"]:
                log.warning(
                    "%s: only the first %d of %d pages extracted (--max-pages)",
                    record["id"],
                    outcome["pages"],
                    outcome["pages_total"],
                )
            done.append(finish_record(record, outcome, settings.options))
            store.save_paper(done[-1])
            failures.pop(record["id"], None)
    return done


def image_dir(record: dict, settings) -> Path:
    return settings.papers_dir / "images" / safe_filename(record["id"])


def pool_extractions(records: list[dict], settings) -> Iterator[tuple[dict, dict | str]]:
    """Yield (record, extracted | failure reason) as the worker processes finish, in any order."""
    from pebble import ProcessPool

    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    pool = ProcessPool(max_workers=settings.workers, initializer=worker_init, initargs=(threads,))
    try:
        futures = {
            pool.schedule(
                extract_paper,
                timeout=settings.timeout,
                args=(r["pdf_path"], str(image_dir(r, settings)), settings.max_pages, settings.keep_appendix),
            ): r
            for r in records
        }
        for future in as_completed(futures):
            try:
                extracted = future.result()
            except Exception as e:
                yield futures[future], extract_failure(e, settings)
                continue
            yield futures[future], extracted
    except BaseException:  # Ctrl-C, or the caller closed us early
        pool.stop()  # cancels what is queued and ends the workers now, instead of draining the queue
        pool.join(timeout=5)
        raise
    pool.close()
    pool.join()


def extract_failure(error: Exception, settings) -> str:
    """Why one paper's extraction failed, in words for papers.json."""
    if isinstance(error, FutureTimeout):
        return f"timed out after {settings.timeout:g} s (raise --timeout)"
    if isinstance(error, ValueError):  # a reason extract_paper gave: corrupt, damaged, encrypted, empty, no text
        return str(error)
    return f"{type(error).__name__}: {error}"  # pebble.ProcessExpired for a crashed worker, a pymupdf4llm bug, ...

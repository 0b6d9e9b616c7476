"""Step 1: fetch research papers and turn each into clean, sectioned markdown.

Run simply as:
    $ python paperExtractor.py                                   # 7 newest papers in each default category
    $ python paperExtractor.py --ids 1706.03762 cs/0112017       # specific arXiv papers
    $ python paperExtractor.py --pdf-dir ~/papers                # local PDFs, no arXiv involved

Reads:  the arXiv API (or --pdf-dir), then each paper's PDF.
Writes: papers/<id>.pdf, papers/images/<id>/*.png, and papers.json:
        {"papers": [{id, version, title, authors, abstract, categories, primary_category, published,
                     pdf_url, pdf_path, markdown, sections: [{heading, text}], images, pages}],
         "failures": [{id, stage, reason}]}
A rerun merges with an existing papers.json: papers already in it are skipped, earlier failures are retried.
"""

import argparse
import difflib
import logging
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

from common import InputError, atomic_writer, die, read_json, setup_logging, write_json

log = logging.getLogger("paperExtractor")

# ----------------------------------------------------------------------------- constants

DEFAULT_CATEGORIES = ["cs.LG", "cs.AI", "cs.DS", "cs.GT", "cs.PF", "cs.SE", "cs.OH"]
DEFAULT_API_URL = "https://export.arxiv.org/api/query"
USER_AGENT = "paper-personas/0.1 (builds LoRA persona training data from arXiv papers)"
# arXiv's API terms ask for at most one request every 3 seconds.
ARXIV_MIN_DELAY_S = 3.0

# The arXiv category taxonomy (https://arxiv.org/category_taxonomy), so a typo fails fast instead of
# silently returning zero papers.
ARXIV_ARCHIVES_WITHOUT_SUBJECTS = {
    "astro-ph",
    "cond-mat",
    "gr-qc",
    "hep-ex",
    "hep-lat",
    "hep-ph",
    "hep-th",
    "math-ph",
    "nlin",
    "nucl-ex",
    "nucl-th",
    "physics",
    "quant-ph",
    "q-alg",
    "alg-geom",
    "chao-dyn",
    "cmp-lg",
}
ARXIV_SUBJECTS = {
    "cs": "AI AR CC CE CG CL CR CV CY DB DC DL DM DS ET FL GL GR GT HC IR IT LG LO MA MM MS NA NE NI OH OS "
    "PF PL RO SC SD SE SI SY",
    "math": "AC AG AP AT CA CO CT CV DG DS FA GM GN GR GT HO IT KT LO MG MP NA NT OA OC PR QA RA RT SG SP ST",
    "stat": "AP CO ME ML OT TH",
    "eess": "AS IV SP SY",
    "econ": "EM GN TH",
    "q-bio": "BM CB GN MN NC OT PE QM SC TO",
    "q-fin": "CP EC GN MF PM PR RM ST TR",
    "astro-ph": "CO EP GA HE IM SR",
    "cond-mat": "dis-nn mes-hall mtrl-sci other quant-gas soft stat-mech str-el supr-con",
    "nlin": "AO CD CG PS SI",
    "physics": "acc-ph ao-ph app-ph atm-clus atom-ph bio-ph chem-ph class-ph comp-ph data-an ed-ph flu-dyn "
    "gen-ph geo-ph hist-ph ins-det med-ph optics plasm-ph pop-ph soc-ph space-ph",
}
ARXIV_CATEGORIES = ARXIV_ARCHIVES_WITHOUT_SUBJECTS | {
    f"{archive}.{subject}" for archive, subjects in ARXIV_SUBJECTS.items() for subject in subjects.split()
}

PDF_MAGIC = b"%PDF-"
DOWNLOAD_TIMEOUT_S = (10, 120)  # (connect, read)

# ----------------------------------------------------------------------------- section splitting

MD_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
ALL_BOLD_LINE = re.compile(r"^(?:\*\*[^*]+\*\*\s*)+$")
NUMBERED_TITLE = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+\S")
INLINE_ABSTRACT = re.compile(r"^\W{0,4}abstract\W{0,4}[.:—–-]\W{0,4}\s*(?P<rest>\S.*)$", re.IGNORECASE)
INLINE_ACKNOWLEDGMENT = re.compile(r"^\W{0,4}acknowledge?ments?\b", re.IGNORECASE)
NOT_A_HEADING = re.compile(
    r"^(?:figure|fig\.|table|algorithm|lemma|theorem|corollary|proposition|definition|claim|proof|remark|"
    r"step|conjecture|assumption|observation|fact|note)\b",
    re.IGNORECASE,
)
TOC_LINE = re.compile(r"^.{2,120}?(?:\.\s?){4,}\s*\d{1,4}\s*$")  # "2.1 Method ........ 7"
PAGE_NUMBER = re.compile(r"^\s*(?:page\s+)?\d{1,4}(?:\s+of\s+\d{1,4})?\s*$", re.IGNORECASE)
PICTURE_TEXT = re.compile(r"<!-- Start of picture text -->.*?<!-- End of picture text -->", re.DOTALL)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\([^)]*\)")
OMITTED_PICTURE = re.compile(r"^\W*==> picture .*<==\W*$", re.IGNORECASE)
MARKUP = re.compile(r"<[^>]{1,20}>|\*\*|__|(?<!\w)_|_(?!\w)|`")

REFERENCE_TITLES = {
    "references",
    "reference",
    "bibliography",
    "literature cited",
    "works cited",
    "references and notes",
    "cited literature",
}
ACKNOWLEDGMENT_TITLE = re.compile(r"^acknowledge?ments?$")
APPENDIX_TITLE = re.compile(r"^(?:appendix|appendices|supplementary|supplemental)\b")
LETTERED_APPENDIX = re.compile(r"^a(?:\.\d+)*\.?\s+[a-z]")  # "A. Proofs", "A Proof of Lemma 2"
CONTENTS_TITLE = re.compile(r"^(?:table of )?contents$")
FURNITURE_MIN_REPEATS = 3  # a short line seen on 3+ pages is a running header or footer
FURNITURE_MAX_CHARS = 100  # running headers are a title or author list, never a paragraph


def plain(text: str) -> str:
    """Heading or line text without markdown/HTML markup, whitespace folded."""
    return " ".join(MARKUP.sub("", text).split())


def title_key(title: str) -> str:
    """Lower-case heading text without its number: '**4.2 Methods**' -> 'methods'."""
    words = plain(title).lower()
    words = re.sub(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[ivx]{1,5}\.|[a-h]\.)\s+", "", words)
    return words.strip(" .:")


def furniture_key(line: str) -> str:
    """What stays of a line once page numbers and markup go: running headers then look alike on every page."""
    return re.sub(r"[\d\W_]+", " ", plain(line.lstrip("#"))).strip().lower()


def find_furniture(lines: list[str]) -> set[str]:
    counts = Counter(furniture_key(line) for line in lines if 0 < len(line) < FURNITURE_MAX_CHARS)
    return {key for key, n in counts.items() if n >= FURNITURE_MIN_REPEATS and len(key) >= 4}


def heading_title(line: str) -> str | None:
    """The title if this line is a section heading, else None."""
    match = MD_HEADING.match(line)
    if match:
        title = plain(match["title"])
    elif ALL_BOLD_LINE.match(line):
        title = plain(line)
        # A bold line is a heading only when numbered ("**1** **Introduction**") or a known section name.
        key = title_key(title)
        known = key in REFERENCE_TITLES or key == "abstract" or ACKNOWLEDGMENT_TITLE.match(key)
        if not (NUMBERED_TITLE.match(title) or known):
            return None
    elif title_key(line) in REFERENCE_TITLES and len(line) < 40:
        title = plain(line)  # a bare "REFERENCES" line that layout analysis did not mark
    else:
        return None
    if not title or len(title) > 120 or not (title[0].isupper() or title[0].isdigit()):
        return None  # sentence fragments the layout model promoted: "and beneficial in our setting."
    if NOT_A_HEADING.match(title) or title.endswith(","):
        return None  # captions, theorem-like blocks, algorithm boxes
    return title


def heading_role(title: str, seen_numbered: bool) -> str:
    key = title_key(title)
    if key in REFERENCE_TITLES:
        return "references"
    if ACKNOWLEDGMENT_TITLE.match(key):
        return "acknowledgments"
    if CONTENTS_TITLE.match(key):
        return "contents"
    if key == "abstract":
        return "abstract"
    if APPENDIX_TITLE.match(key) or (seen_numbered and LETTERED_APPENDIX.match(plain(title).lower())):
        return "appendix"
    return "section"


def clean_lines(markdown: str) -> list[str]:
    """Drop what is never section text: picture text, image links, tables, TOC lines, page furniture."""
    text = HTML_COMMENT.sub("", PICTURE_TEXT.sub("", markdown))
    text = IMAGE_LINK.sub("", text).replace("\ufffd", "")
    lines = [line.rstrip() for line in text.splitlines()]
    furniture = find_furniture(lines)
    return [
        line
        for line in lines
        if not (
            line.lstrip().startswith("|")
            or TOC_LINE.match(line)
            or PAGE_NUMBER.match(line)
            or OMITTED_PICTURE.match(line)
            or (0 < len(line) < FURNITURE_MAX_CHARS and furniture_key(line) in furniture)
        )
    ]


@dataclass
class _Section:
    heading: str
    role: str
    lines: list[str]

    def text(self) -> str:
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


def _walk_sections(lines: list[str], keep_appendix: bool) -> list[_Section]:
    sections: list[_Section] = [_Section("", "front", [])]
    skipping = False  # inside acknowledgments or a table of contents
    after_references = False  # past the references: only a kept appendix restarts the body
    seen_numbered = False
    for line in lines:
        title = heading_title(line)
        inline_abstract = INLINE_ABSTRACT.match(plain(line)) if title is None else None
        if title is None and inline_abstract is None:
            if INLINE_ACKNOWLEDGMENT.match(plain(line)):
                continue  # a paragraph that starts "**Acknowledgments** We thank ..."
            if not skipping and not after_references:
                sections[-1].lines.append(line)
            continue
        role = "abstract" if inline_abstract else heading_role(title, seen_numbered)
        seen_numbered = seen_numbered or bool(NUMBERED_TITLE.match(title or ""))
        if role == "references" or (role == "appendix" and not keep_appendix):
            if not keep_appendix:
                break
            after_references = True
            continue
        if after_references and role != "appendix":
            continue
        after_references = False
        skipping = role in ("acknowledgments", "contents")
        if not skipping:
            first = [inline_abstract["rest"]] if inline_abstract else []
            sections.append(_Section("Abstract" if inline_abstract else title, role, first))
    return sections


def split_sections(markdown: str, keep_appendix: bool = False) -> list[dict]:
    """Split pymupdf4llm markdown into [{heading, text}] in document order.

    Recognises '#' headings and bold numbered headings, keeps the abstract, drops the title block,
    acknowledgments, the table of contents, the references and everything after them (appendices
    too, unless keep_appendix), and strips image links, tables and running headers from the text.
    """
    sections = _walk_sections(clean_lines(markdown), keep_appendix)
    roles = [s.role for s in sections]
    if "abstract" in roles:
        sections = sections[roles.index("abstract") :]  # before it: title, authors, affiliations
    return [{"heading": s.heading, "text": s.text()} for s in sections if s.text()]


def body_before_references(markdown: str) -> str:
    """The paper up to its references heading, tables excluded: the denominator of section coverage."""
    kept = []
    for line in markdown.splitlines():
        title = heading_title(line.rstrip())
        if title and title_key(title) in REFERENCE_TITLES:
            break
        if not line.lstrip().startswith("|"):
            kept.append(line)
    return "\n".join(kept)


def section_coverage(markdown: str, sections: list[dict]) -> float:
    """Share of the body's characters (whitespace folded) that ended up in some section's text."""
    body = len(" ".join(body_before_references(markdown).split()))
    covered = sum(len(" ".join(s["text"].split())) for s in sections)
    return covered / body if body else 0.0


# ----------------------------------------------------------------------------- arXiv search


def versionless_id(short_id: str) -> tuple[str, int]:
    """'2309.13541v2' -> ('2309.13541', 2); 'cs/0112017v1' -> ('cs/0112017', 1); no version -> 0."""
    match = re.match(r"^(?P<id>.+?)(?:v(?P<version>\d+))?$", short_id)
    return match["id"], int(match["version"] or 0)


def safe_filename(paper_id: str) -> str:
    """A paper id as a single path component: old-style 'cs/0112017' must never become a sub-folder."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", paper_id).strip("._")
    return name or "paper"


def unknown_categories(categories: list[str]) -> list[str]:
    return [c for c in categories if c not in ARXIV_CATEGORIES]


def record_from_result(result, categories: set[str]) -> dict:
    paper_id, version = versionless_id(result.get_short_id())
    return {
        "id": paper_id,
        "version": version,
        "title": " ".join(result.title.split()),
        "authors": [a.name for a in result.authors],
        "abstract": " ".join(result.summary.split()),
        "categories": sorted(set(result.categories) | categories),
        "primary_category": result.primary_category,
        "published": result.published.isoformat() if result.published else None,
        "pdf_url": result.pdf_url,
        "pdf_path": None,  # set once the PDF is on disk
    }


def merge_record(records: dict[str, dict], record: dict) -> None:
    """Add a paper keyed by versionless id; a paper cross-listed in several categories is kept once."""
    seen = records.get(record["id"])
    if seen is None:
        records[record["id"]] = record
    else:
        seen["categories"] = sorted(set(seen["categories"]) | set(record["categories"]))


def make_arxiv_client(api_url: str, delay_s: float):
    import arxiv
    import requests.adapters

    class _TimeoutAdapter(requests.adapters.HTTPAdapter):
        # arxiv.Client sends no timeout of its own; a silent server would hang the run forever.
        def send(self, request, **kwargs):
            kwargs["timeout"] = kwargs.get("timeout") or DOWNLOAD_TIMEOUT_S
            return super().send(request, **kwargs)

    # arxiv.py sends its own User-Agent on every request; this module constant is where it comes from.
    arxiv._USER_AGENT = f"{USER_AGENT} arxiv.py/{arxiv.__version__}"
    client = arxiv.Client(page_size=100, delay_seconds=delay_s, num_retries=3)
    client.query_url_format = api_url + "?{}"
    client._session.mount("http://", _TimeoutAdapter())
    client._session.mount("https://", _TimeoutAdapter())
    return client


def search_arxiv(client, categories: list[str], per_category: int, ids: list[str]) -> dict[str, dict]:
    """Query arXiv (newest submissions first per category, or by id) and merge cross-listed papers."""
    import arxiv

    records: dict[str, dict] = {}
    if ids:
        for result in client.results(arxiv.Search(id_list=ids, max_results=len(ids))):
            merge_record(records, record_from_result(result, set()))
    for category in categories:
        search = arxiv.Search(
            query=f"cat:{category}",
            max_results=per_category,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        found = 0
        for result in client.results(search):
            merge_record(records, record_from_result(result, {category}))
            found += 1
        log.info("%s: %d papers", category, found)
    return records


# ----------------------------------------------------------------------------- download


def is_complete_pdf(path: Path) -> bool:
    """Cheap validity check for resume: the PDF header at the start and an end-of-file marker at the end."""
    if not path.exists() or path.stat().st_size < 64:
        return False
    with open(path, "rb") as f:
        head = f.read(5)
        f.seek(-1024, os.SEEK_END) if path.stat().st_size > 1024 else f.seek(0)
        tail = f.read()
    return head == PDF_MAGIC and b"%%EOF" in tail


def make_download_session():
    import requests
    from urllib3.util.retry import Retry

    # urllib3's Retry handles 5xx, timeouts and dropped connections with exponential backoff (1, 2, 4, 8 s).
    retry = Retry(
        total=4,
        backoff_factor=1.0,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=("GET",),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def download_pdf(session, url: str, dest: Path) -> str | None:
    """Download url to dest atomically; return None on success or the reason it failed."""
    import requests

    try:
        response = session.get(url, timeout=DOWNLOAD_TIMEOUT_S)
    except requests.RequestException as e:
        return f"download failed: {type(e).__name__}: {e}"
    if response.status_code != 200:
        return f"download failed: HTTP {response.status_code} from {url}"
    if not response.content.startswith(PDF_MAGIC):
        kind = response.headers.get("Content-Type", "unknown type")
        return f"not a PDF: {url} returned {kind} ({len(response.content):,} bytes)"
    with atomic_writer(dest, "wb") as f:
        f.write(response.content)
    return None


# ----------------------------------------------------------------------------- extraction (worker processes)


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


def extract_paper(pdf_path: str, image_dir: str, max_pages: int, keep_appendix: bool) -> dict:
    """Markdown, sections and figures of one PDF. Raises ValueError with a reason for unusable PDFs."""
    import pymupdf
    import pymupdf4llm

    try:
        doc = pymupdf.open(pdf_path)
    except Exception as e:
        raise ValueError(f"corrupt PDF: {e}") from None
    with doc:
        if doc.needs_pass:
            raise ValueError("encrypted PDF: it needs a password")
        if doc.page_count == 0:
            raise ValueError("corrupt or empty PDF: no readable pages")
        texts = [page.get_text() for page in doc]
        if not any(t.strip() for t in texts):
            raise ValueError("no text layer (a scanned PDF?): OCR it first")
        last = len(texts) - 1 if keep_appendix else (find_references_page(texts) or len(texts) - 1)
        pages = list(range(min(last + 1, max_pages)))
        Path(image_dir).mkdir(parents=True, exist_ok=True)
        markdown = pymupdf4llm.to_markdown(
            doc, pages=pages, write_images=True, image_path=image_dir, image_format="png", show_progress=False
        )
        metadata = doc.metadata or {}
        first_line = next((line.strip() for line in texts[0].splitlines() if line.strip()), "")
    sections = split_sections(markdown, keep_appendix=keep_appendix)
    return {
        "markdown": markdown,
        "sections": sections,
        "images": sorted(str(p) for p in Path(image_dir).glob("*.png")),
        "pages": len(pages),
        "pdf_title": (metadata.get("title") or "").strip() or first_line,
        "pdf_authors": [a.strip() for a in re.split(r"[;,]| and ", metadata.get("author") or "") if a.strip()],
    }


# ----------------------------------------------------------------------------- orchestration


def local_record(path: Path) -> dict:
    """The record of a local PDF; title and authors are filled from the PDF itself after extraction."""
    return {
        "id": safe_filename(path.stem),
        "version": None,
        "title": None,
        "authors": [],
        "abstract": None,
        "categories": [],
        "primary_category": None,
        "published": None,
        "pdf_url": None,
        "pdf_path": str(path),
    }


def local_records(pdf_dir: Path) -> dict[str, dict]:
    return {record["id"]: record for record in map(local_record, sorted(pdf_dir.glob("*.pdf")))}


def load_previous(out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    if not out.exists():
        return {}, {}
    data = read_json(out, "papers.json", "move it aside or fix it, then rerun")
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{out}: expected {{'papers': [...], 'failures': [...]}}; move it aside and rerun")
    return {p["id"]: p for p in data["papers"]}, {f["id"]: f for f in data.get("failures", [])}


def finish_record(record: dict, extracted: dict) -> dict:
    sections = extracted["sections"]
    abstract = next((s["text"] for s in sections if s["heading"].lower() == "abstract"), None)
    return {
        **record,
        "title": record["title"] or extracted["pdf_title"],
        "authors": record["authors"] or extracted["pdf_authors"],
        "abstract": record["abstract"] or abstract,
        "markdown": extracted["markdown"],
        "sections": sections,
        "images": extracted["images"],
        "pages": extracted["pages"],
    }


def download_all(records: list[dict], papers_dir: Path, failures: dict[str, dict]) -> list[dict]:
    """Fetch missing PDFs; return the records whose PDF is now on disk."""
    from tqdm import tqdm

    session = make_download_session()
    ready = []
    for record in tqdm(records, desc="download", unit="pdf", disable=not records):
        reason = ensure_pdf(session, record, papers_dir)
        if reason:
            failures[record["id"]] = {"id": record["id"], "stage": "download", "reason": reason}
        else:
            ready.append(record)
    return ready


def ensure_pdf(session, record: dict, papers_dir: Path) -> str | None:
    """Set record["pdf_path"], downloading unless a complete PDF is already there; return a failure reason."""
    if record["pdf_path"] is None:
        dest = papers_dir / f"{safe_filename(record['id'])}.pdf"
        if not is_complete_pdf(dest):
            reason = download_pdf(session, record["pdf_url"], dest)
            if reason:
                return reason
        record["pdf_path"] = str(dest)
    return None


def extract_all(records, args, done: dict, failures: dict, save) -> None:
    """Extract in worker processes; each finished paper is saved at once, so a crash loses only work in flight."""
    from pebble import ProcessPool
    from tqdm import tqdm

    threads = max(1, (os.cpu_count() or 1) // args.workers)
    with ProcessPool(max_workers=args.workers, initializer=limit_worker_threads, initargs=(threads,)) as pool:
        futures = {
            pool.schedule(
                extract_paper,
                timeout=args.timeout,
                args=(
                    r["pdf_path"],
                    str(args.papers_dir / "images" / safe_filename(r["id"])),
                    args.max_pages,
                    args.keep_appendix,
                ),
            ): r
            for r in records
        }
        for future in tqdm(
            as_completed(futures), total=len(futures), desc="extract", unit="paper", disable=not futures
        ):
            record = futures[future]
            try:
                done[record["id"]] = finish_record(record, future.result())
                failures.pop(record["id"], None)
            except Exception as e:  # any failure of one paper is recorded; it never stops the run
                failures[record["id"]] = {"id": record["id"], "stage": "extract", "reason": extract_failure(e, args)}
            save()


def extract_failure(error: Exception, args) -> str:
    """Why one paper's extraction failed, in words for papers.json."""
    if isinstance(error, FutureTimeout):
        return f"timed out after {args.timeout:g} s (raise --timeout)"
    if isinstance(error, ValueError):  # a reason extract_paper gave: corrupt, encrypted, empty, no text
        return str(error)
    return f"{type(error).__name__}: {error}"  # pebble.ProcessExpired for a crashed worker, a pymupdf4llm bug, ...


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
    src.add_argument("--pdf-dir", type=Path, help="ingest local PDFs from this folder instead of arXiv")
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
    out.add_argument("--out", type=Path, default=Path("papers.json"), help="output JSON (default: %(default)s)")
    out.add_argument(
        "--papers-dir",
        type=Path,
        default=Path("papers"),
        help="PDFs and papers/images/<id>/ figures (default: %(default)s)",
    )
    work = p.add_argument_group("extraction")
    work.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="extraction processes (default: number of CPUs, %(default)s)",
    )
    work.add_argument("--max-pages", type=int, default=60, help="page cap per PDF (default: %(default)s)")
    work.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="time cap per PDF in seconds; a slower PDF is recorded as failed (default: %(default)s)",
    )
    work.add_argument("--keep-appendix", action="store_true", help="keep appendix sections (default: dropped)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def collect_records(args, parser) -> dict[str, dict]:
    if args.pdf_dir is not None:
        if not args.pdf_dir.is_dir():
            parser.error(f"--pdf-dir {args.pdf_dir}: no such folder; pass a folder that holds .pdf files")
        return local_records(args.pdf_dir)
    import arxiv
    import requests

    categories = [] if args.ids else args.categories
    client = make_arxiv_client(args.api_url, args.api_delay)
    try:
        records = search_arxiv(client, categories, args.per_category, args.ids)
    except (arxiv.ArxivError, requests.RequestException) as e:
        die(
            f"cannot query the arXiv API at {args.api_url} ({type(e).__name__}: {e}). "
            "Check your network, retry in a minute, or point --api-url at a mirror."
        )
    missing = [i for i in args.ids if versionless_id(i)[0] not in records]
    if args.ids and len(missing) == len(args.ids):
        die(f"arXiv found none of the ids {', '.join(missing)}; check them (e.g. 1706.03762 or cs/0112017)")
    if missing:
        log.warning("not found on arXiv, skipped: %s", ", ".join(missing))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.workers < 1 or args.per_category < 1 or args.max_pages < 1:
        parser.error("--workers, --per-category and --max-pages must be at least 1")
    bad = [] if (args.ids or args.pdf_dir) else unknown_categories(args.categories)
    if bad:
        by_lower = {c.lower(): c for c in ARXIV_CATEGORIES}
        hints = {c: [by_lower[m] for m in difflib.get_close_matches(c.lower(), by_lower, n=1)] for c in bad}
        parser.error(
            "unknown arXiv categories: "
            + ", ".join(f"{c}" + (f" (did you mean {h[0]}?)" if h else "") for c, h in hints.items())
            + "; see https://arxiv.org/category_taxonomy"
        )
    log.info("settings: %s", {k: str(v) for k, v in vars(args).items()})
    started = time.monotonic()
    try:
        done, failures = load_previous(args.out)
    except InputError as e:
        die(str(e))
    records = collect_records(args, parser)
    todo = [r for r in records.values() if r["id"] not in done]
    skipped = len(records) - len(todo)
    if skipped:
        log.info("skipping %d papers already in %s", skipped, args.out)

    def save():
        write_json(args.out, {"papers": list(done.values()), "failures": list(failures.values())})

    try:
        ready = download_all(todo, args.papers_dir, failures)
        save()
        extract_all(ready, args, done, failures, save)
    except KeyboardInterrupt:
        save()
        die(f"interrupted: {len(done):,} papers are saved in {args.out}; rerun the same command to resume")
    save()

    new = [done[r["id"]] for r in ready if r["id"] in done]
    failed = sum(1 for r in todo if r["id"] in failures)
    print(
        f"done: {len(new):,} ok, {failed:,} failed, {skipped:,} skipped | "
        f"{sum(p['pages'] for p in new):,} pages, {sum(len(p['sections']) for p in new):,} sections, "
        f"{sum(len(p['images']) for p in new):,} images in {time.monotonic() - started:,.1f} s -> {args.out}"
    )
    for failure in failures.values():
        if failure["id"] in records:
            log.warning("failed %s (%s): %s", failure["id"], failure["stage"], failure["reason"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Step 1's sources: arXiv search (categories or ids, cross-listed papers merged) and PDF downloads with one
deadline, retries and a size cap. The network edge of step 1; the section splitting is in sections.py."""

import logging
import os
import re
import time
from pathlib import Path

from paper_personas.cli import counted
from paper_personas.files import atomic_writer, safe_filename

log = logging.getLogger("paperExtractor")

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
API_TIMEOUT_S = (10, 120)  # (connect, read) for arXiv API pages
DOWNLOAD_READ_TIMEOUT_S = 30  # a PDF server silent this long is dead; --download-timeout bounds the whole download
DOWNLOAD_ATTEMPTS = 4
# arXiv identifiers (info.arxiv.org/help/arxiv_identifier.html): 2309.13541v2 since 2007, cs/0112017v1 before.
NEW_STYLE_ID = re.compile(r"^\d{4}\.\d{4,5}(?:v\d+)?$")
OLD_STYLE_ID = re.compile(r"^[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?$")


# ----------------------------------------------------------------------------- arXiv search


def versionless_id(short_id: str) -> tuple[str, int]:
    """'2309.13541v2' -> ('2309.13541', 2); 'cs/0112017v1' -> ('cs/0112017', 1); no version -> 0."""
    match = re.match(r"^(?P<id>.+?)(?:v(?P<version>\d+))?$", short_id)
    return match["id"], int(match["version"] or 0)


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


def bad_ids(ids: list[str]) -> list[str]:
    """The ids that are not arXiv identifiers at all; checked before any request, so one typo sinks nothing else."""
    return [i for i in ids if not (NEW_STYLE_ID.match(i) or OLD_STYLE_ID.match(i))]


class UnreadableFeedError(Exception):
    """The API answered 200 with something that is not an Atom feed (a proxy page, a truncated body)."""


def make_arxiv_client(api_url: str, delay_s: float, page_size: int):
    import arxiv
    import requests.adapters

    class _TimeoutAdapter(requests.adapters.HTTPAdapter):
        # arxiv.Client sends no timeout of its own; a silent server would hang the run forever.
        def send(self, request, **kwargs):
            kwargs["timeout"] = kwargs.get("timeout") or API_TIMEOUT_S
            return super().send(request, **kwargs)

    class StrictClient(arxiv.Client):
        # arxiv.py only logs a malformed feed and carries on with zero results, so an unreadable answer would be
        # reported as "no papers found". Say what it is instead.
        def _parse_feed(self, url, first_page=True, _try_index=0):
            feed = super()._parse_feed(url, first_page, _try_index)
            if feed.malformed and not feed.results:
                raise UnreadableFeedError(f"the arXiv API at {api_url} answered something that is not an Atom feed")
            return feed

    def require_atom(response, *args, **kwargs):
        # lxml's recovering parser reads an HTML page as a feed with no entries; a 200 must be Atom to count.
        if response.status_code == 200 and b"<feed" not in response.content[:4096]:
            kind = response.headers.get("Content-Type", "unknown type")
            raise UnreadableFeedError(f"the arXiv API at {api_url} answered {kind}, not an Atom feed")

    # arxiv.py sends its own User-Agent on every request; this module constant is where it comes from.
    arxiv._USER_AGENT = f"{USER_AGENT} arxiv.py/{arxiv.__version__}"
    client = StrictClient(page_size=max(1, min(100, page_size)), delay_seconds=delay_s, num_retries=3)
    client.query_url_format = api_url + "?{}"
    client._session.mount("http://", _TimeoutAdapter())
    client._session.mount("https://", _TimeoutAdapter())
    client._session.hooks["response"].append(require_atom)
    return client


def search_failure(error: Exception, api_url: str) -> str:
    """Why an arXiv query failed, in words: the status it answered, an unreadable feed, or the network."""
    import arxiv

    if isinstance(error, arxiv.HTTPError):
        return f"the arXiv API answered HTTP {error.status} after retries"
    if isinstance(error, UnreadableFeedError):
        return str(error)
    return f"cannot reach the arXiv API at {api_url} ({type(error).__name__}); check your network or --api-url"


def search_arxiv(client, categories: list[str], per_category: int, ids: list[str], api_url: str):
    """Query arXiv (newest submissions first per category, or by id) and merge cross-listed papers. A query that
    still fails after retries is returned as a failure; the others' papers are kept."""
    import arxiv
    import requests

    records: dict[str, dict] = {}
    failures: list[dict] = []
    queries = [("ids", arxiv.Search(id_list=ids, max_results=len(ids)), set())] if ids else []
    for category in categories:
        search = arxiv.Search(
            query=f"cat:{category}",
            max_results=per_category,
            sort_by=arxiv.SortCriterion.SubmittedDate,
            sort_order=arxiv.SortOrder.Descending,
        )
        queries.append((category, search, {category}))
    for name, search, tags in queries:
        try:
            found = [record_from_result(result, tags) for result in client.results(search)]
        except (arxiv.ArxivError, requests.RequestException, UnreadableFeedError) as e:
            failures.append({"id": f"search:{name}", "stage": "search", "reason": search_failure(e, api_url)})
            log.error("arXiv query %s failed: %s", name, failures[-1]["reason"])
            continue
        for record in found:
            merge_record(records, record)
        if name != "ids":
            log.info("%s: %s", name, counted(len(found), "paper"))
    return records, failures


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

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


class RetryableDownload(Exception):
    """A 429/5xx or a dropped connection: worth another attempt while the deadline allows."""


def fetch_pdf_once(session, url: str, dest: Path, deadline: float, max_bytes: int) -> str | None:
    """One attempt: stream url into dest atomically. Return None or why it failed for good; raise
    RetryableDownload for what another attempt may fix, TimeoutError when the deadline passes."""
    import requests
    import urllib3

    remaining = deadline - time.monotonic()
    try:
        response = session.get(url, stream=True, timeout=(min(10, remaining), min(DOWNLOAD_READ_TIMEOUT_S, remaining)))
    except (requests.ConnectionError, requests.Timeout) as e:
        raise RetryableDownload(f"{type(e).__name__}: {e}") from None
    with response:
        if response.status_code in (429, 500, 502, 503, 504):
            raise RetryableDownload(f"HTTP {response.status_code}")
        if response.status_code != 200:
            return f"download failed: HTTP {response.status_code} from {url}"
        if int(response.headers.get("Content-Length") or 0) > max_bytes:
            return f"larger than --max-pdf-mb ({int(response.headers['Content-Length']):,} bytes)"
        received, head, tail = 0, b"", b""
        try:
            with atomic_writer(dest, "wb") as f:
                # read1 returns what has arrived, so a server trickling a byte at a time meets the deadline too.
                while chunk := response.raw.read1(1 << 16, decode_content=True):
                    head = (head + chunk)[: len(PDF_MAGIC)] if len(head) < len(PDF_MAGIC) else head
                    if len(head) == len(PDF_MAGIC) and head != PDF_MAGIC:
                        kind = response.headers.get("Content-Type", "unknown type")
                        raise ValueError(f"not a PDF: {url} returned {kind}")
                    received += len(chunk)
                    tail = (tail + chunk)[-1024:]
                    if received > max_bytes:
                        raise ValueError(f"larger than --max-pdf-mb (over {max_bytes:,} bytes)")
                    f.write(chunk)
                    if time.monotonic() > deadline:
                        raise TimeoutError
                if b"%%EOF" not in tail:
                    raise ValueError(f"truncated PDF: {url} ended after {received:,} bytes without %%EOF")
        except ValueError as e:
            return str(e)
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, OSError) as e:
            if isinstance(e, TimeoutError) and time.monotonic() > deadline:
                raise
            raise RetryableDownload(f"{type(e).__name__}: {e}") from None
    return None


def download_pdf(session, url: str, dest: Path, timeout_s: float, max_bytes: int) -> str | None:
    """Download url to dest atomically within one deadline covering connect, every read and every retry (tenacity:
    up to 4 attempts, exponential backoff with jitter); return None on success or the reason it failed."""
    import tenacity

    deadline = time.monotonic() + timeout_s
    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(DOWNLOAD_ATTEMPTS) | tenacity.stop_before_delay(timeout_s),
            wait=tenacity.wait_exponential_jitter(initial=1, max=8),
            retry=tenacity.retry_if_exception_type(RetryableDownload),
            reraise=True,
        ):
            with attempt:
                return fetch_pdf_once(session, url, dest, deadline, max_bytes)
    except TimeoutError:
        return f"download timed out after {timeout_s:g} s (raise --download-timeout)"
    except RetryableDownload as e:
        if time.monotonic() > deadline:
            return f"download timed out after {timeout_s:g} s (raise --download-timeout): {e}"
        return f"download failed after {DOWNLOAD_ATTEMPTS} attempts: {e}"
    return None


# ----------------------------------------------------------------------------- getting every PDF


def ensure_pdf(session, record: dict, papers_dir: Path, settings) -> str | None:
    """Set record["pdf_path"], downloading unless a complete PDF is already there; return a failure reason."""
    if record["pdf_path"] is None:
        dest = papers_dir / f"{safe_filename(record['id'])}.pdf"
        if not is_complete_pdf(dest):
            max_bytes = int(settings.max_pdf_mb * 1e6)
            reason = download_pdf(session, record["pdf_url"], dest, settings.download_timeout, max_bytes)
            if reason:
                return reason
        record["pdf_path"] = str(dest)
        return None
    from paper_personas.records import check_local

    return check_local(record)


def fetch_all(records: list[dict], settings, store, failures: dict) -> list[dict]:
    """Download missing PDFs (arXiv) or check local files; return the records whose PDF is ready to extract."""
    from tqdm import tqdm

    session = make_download_session()
    ready = []
    label, unit = ("check", "file") if settings.pdf_dir else ("download", "pdf")
    for record in tqdm(records, desc=label, unit=unit, disable=not records):
        reason = ensure_pdf(session, record, settings.papers_dir, settings)
        if reason:
            failures[record["id"]] = {"id": record["id"], "stage": label, "reason": reason}
            store.save_failure(failures[record["id"]])
        else:
            ready.append(record)
    return ready

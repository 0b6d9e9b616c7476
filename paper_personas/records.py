"""Step 1's paper records: one per local PDF or arXiv listing, kept when the stored one is current (same options,
same PDF bytes), checked before extraction, and finished from what extraction found."""

import hashlib
import logging
from collections import Counter
from pathlib import Path

from paper_personas.arxiv_client import PDF_MAGIC, is_complete_pdf
from paper_personas.files import safe_filename

log = logging.getLogger("paperExtractor")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def empty_record(paper_id: str, pdf_path: Path | None) -> dict:
    """The record of a local PDF; title and authors are filled from the PDF itself after extraction."""
    return {
        "id": paper_id,
        "version": None,
        "title": None,
        "authors": [],
        "abstract": None,
        "categories": [],
        "primary_category": None,
        "published": None,
        "pdf_url": None,
        "pdf_path": str(pdf_path) if pdf_path else None,
    }


def local_records(pdf_dir: Path) -> dict[str, dict]:
    """Every PDF under pdf_dir, subfolders included, whatever the case of ".pdf". An id is the relative path made
    safe ("sub/a b.pdf" -> "sub_a_b"); names that come out the same get a short hash of their path, stable from
    run to run, and the log says so."""
    paths = sorted(p for p in pdf_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    base = {p: safe_filename(str(p.relative_to(pdf_dir).with_suffix(""))) for p in paths}
    taken = Counter(base.values())
    records = {}
    for path, name in base.items():
        if taken[name] > 1:
            suffix = hashlib.sha256(str(path.relative_to(pdf_dir)).encode()).hexdigest()[:8]
            log.warning("%s: its name is taken by another PDF as %r; its id is %s-%s", path, name, name, suffix)
            name = f"{name}-{suffix}"
        records[name] = empty_record(name, path)
    return records


def is_current(stored: dict | None, pdf: Path | None, options: dict, force: bool) -> bool:
    """Whether a stored paper can be kept: made with today's options, from the PDF bytes on disk now."""
    if stored is None or force or stored.get("options", options) != options:
        return False
    if pdf is None or not pdf.is_file() or "source_sha256" not in stored:
        return True  # a paper from before fingerprints, or whose PDF was since deleted: kept as it is
    return stored["source_sha256"] == file_sha256(pdf)


def finish_record(record: dict, extracted: dict, options: dict) -> dict:
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
        "pages_total": extracted["pages_total"],
        "source_sha256": file_sha256(Path(record["pdf_path"])),
        "options": options,
    }


def check_local(record: dict) -> str | None:
    """A local file gets the checks a download gets: a PDF header, and an end marker (else it was cut short)."""
    path = Path(record["pdf_path"])
    with open(path, "rb") as f:
        head = f.read(len(PDF_MAGIC))
    if head != PDF_MAGIC:
        return f"not a PDF: {path} does not start with %PDF- (an HTML page saved as .pdf?)"
    if not is_complete_pdf(path):
        return f"truncated PDF: {path} has no %%EOF marker at its end (an interrupted download?)"
    return None


def local_pdf(record: dict, papers_dir: Path) -> Path:
    """Where a record's PDF is (or will be) on disk: its own path, else where a download puts it."""
    return Path(record["pdf_path"]) if record["pdf_path"] else papers_dir / f"{safe_filename(record['id'])}.pdf"

"""Step 1's resumable store: one JSON file per finished (or failed) paper, and papers.json assembled from it."""

import json
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import atomic_writer, read_json, safe_filename, write_json

# ----------------------------------------------------------------------------- the store: one file per paper


class Store:
    """One small JSON file per finished paper (and per failed one) in a folder beside the output, e.g.
    papers.records/ for papers.json: saving a paper costs the same however many are done, where rewriting
    papers.json after each paper cost time and bytes in proportion to all of them (quadratic in a run).
    papers.json is assembled from the store once, at the end of a run and on Ctrl-C."""

    def __init__(self, out: Path):
        self.dir = out.with_name(out.stem + ".records")

    def _path(self, paper_id: str, failed: bool = False) -> Path:
        return self.dir / f"{safe_filename(paper_id)}{'.failed' if failed else ''}.json"

    def records(self, failed: bool = False):
        """Stored papers (or failures), one at a time, in file-name order: never all in memory at once."""
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            if path.name.endswith(".failed.json") != failed:
                continue
            record = read_json(path, "a stored paper", f"delete {path} to extract that paper again")
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise InputError(f'{path}: not a paper record (no "id"); delete it to extract that paper again')
            yield record

    def save_paper(self, record: dict) -> None:
        write_json(self._path(record["id"]), record)
        self._path(record["id"], failed=True).unlink(missing_ok=True)

    def save_failure(self, failure: dict) -> None:
        write_json(self._path(failure["id"], failed=True), failure)

    def is_empty(self) -> bool:
        return not self.dir.is_dir() or not any(self.dir.glob("*.json"))


def write_papers_json(out: Path, store: Store, extra_failures: list[dict]) -> tuple[int, int]:
    """papers.json from the store, streamed one record at a time (memory does not grow with the papers) and
    replaced atomically; return (papers, failures)."""
    ids: set[str] = set()
    with atomic_writer(out) as f:
        f.write('{"papers": [')
        for record in store.records():
            f.write(("," if ids else "") + "\n" + json.dumps(record, ensure_ascii=False))
            ids.add(record["id"])
        failures = [r for r in store.records(failed=True) if r["id"] not in ids] + extra_failures
        f.write('\n], "failures": ' + json.dumps(failures, ensure_ascii=False, indent=1) + "}\n")
    return len(ids), len(failures)


PAPERS_SHAPE = 'step 1\'s papers.json, {"papers": [{"id": ..., "sections": [...]}, ...]}'


def checked_papers(data, path: Path, fix: str) -> list[dict]:
    """papers.json's records, checked field by field before any is used (step 2, analyze.py, and step 1 when it
    takes over an older papers.json): a damaged or foreign file names the paper and the field, and `fix`. A
    paper without "sections" has none."""
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{path}: expected {PAPERS_SHAPE}; {fix}")
    for index, paper in enumerate(data["papers"]):
        name = paper.get("id") if isinstance(paper, dict) else None
        where = f"{path}: paper {name!r}" if isinstance(name, str) and name else f"{path}: papers[{index}]"
        if not isinstance(paper, dict) or not isinstance(name, str) or not name:
            raise InputError(f'{where} is not a paper record with an "id"; {fix}')
        sections = paper.get("sections", [])
        if not isinstance(sections, list):
            raise InputError(f'{where}: "sections" is {type(sections).__name__}, not a list; {fix}')
        for i, section in enumerate(sections):
            for field_name in ("heading", "text"):
                if not isinstance(section, dict) or not isinstance(section.get(field_name), str):
                    raise InputError(f'{where}: sections[{i}] has no text field "{field_name}"; {fix}')
    return data["papers"]


def read_papers(path: Path, fix: str) -> tuple[list[dict], dict]:
    """papers.json's checked records, and the whole file (its failures too)."""
    data = read_json(path, "papers.json", fix)
    return checked_papers(data, path, fix), data


def import_legacy(out: Path, store: Store) -> int:
    """A papers.json written before the store existed seeds it, so an upgrade re-extracts nothing."""
    if not out.is_file() or not store.is_empty():
        return 0
    papers, _ = read_papers(out, "fix or remove that record, or move the file aside, then rerun")
    for record in papers:
        store.save_paper(record)
    return len(papers)

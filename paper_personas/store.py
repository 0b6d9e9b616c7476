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


def import_legacy(out: Path, store: Store) -> int:
    """A papers.json written before the store existed seeds it, so an upgrade re-extracts nothing."""
    if not out.is_file() or not store.is_empty():
        return 0
    data = read_json(out, "papers.json", "move it aside or fix it, then rerun")
    if not isinstance(data, dict) or not isinstance(data.get("papers"), list):
        raise InputError(f"{out}: expected {{'papers': [...], 'failures': [...]}}; move it aside and rerun")
    for index, record in enumerate(data["papers"]):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
            raise InputError(f'{out}: papers[{index}] has no "id"; fix or remove that record, or move the file aside')
        store.save_paper(record)
    return len(data["papers"])

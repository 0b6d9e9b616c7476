"""Step 2's training rows: made from a teacher's answers, appended as each unit finishes, and reconciled with
papers.json at the end of every run (data/{persona}.jsonl holds one row per current unit, in the units' order)."""

import logging
from pathlib import Path

from pydantic import BaseModel

from paper_personas.cli import InputError
from paper_personas.files import append_jsonl, iter_jsonl, persona_rows_path, repair_torn_tail, write_jsonl
from paper_personas.ledger import Stats
from paper_personas.personas import Persona
from paper_personas.units import Unit, canonical_key

log = logging.getLogger("sdg")

ORPHANS = "sdg_orphans.jsonl"  # rows moved out of a persona file: their unit left papers.json, or a second copy
FAILURES = "sdg_failures.jsonl"  # units that failed this run, with the reason


def make_row(persona: Persona, unit: Unit, answers: BaseModel, model: str, model_version: str | None = None) -> dict:
    return {
        "messages": [
            {"role": "user", "content": persona.user_message(unit.text)},
            {"role": "assistant", "content": persona.render(getattr(answers, persona.name).model_dump())},
        ],
        "meta": {
            "paper_id": unit.paper_id,
            "section": unit.section,
            "chunk": unit.chunk,
            "key": unit.key,
            "model": model,
            **({"model_version": model_version} if model_version else {}),
        },
    }


def read_done_keys(out_dir: Path, personas: tuple[Persona, ...], repair: bool = True) -> dict[str, set[str]]:
    """Keys already written per persona, after cutting a torn last line that a kill may have left (with
    repair=False, as a dry run reads, the torn line is only left out: nothing is written)."""
    done = {}
    for persona in personas:
        path = persona_rows_path(out_dir, persona.name)
        if repair and repair_torn_tail(path):
            log.warning("%s: cut a torn last line left by an interrupted run", path)
        keys = set()
        if path.exists():
            for lineno, row, problem in iter_jsonl(path, skip_torn_tail=not repair):
                if problem or not (row.get("meta") or {}).get("key"):
                    raise InputError(
                        f"{path}:{lineno}: {problem or 'row without meta.key'}; it was not written by "
                        "sdg.py. Move the file aside to start over"
                    )
                keys.add(canonical_key(row["meta"]["key"]))
        done[persona.name] = keys
    return done


def reconcile(out_dir: Path, personas: tuple[Persona, ...], current: list[str]) -> dict[str, int]:
    """Make each persona file hold exactly one row per current unit, in the units' order (papers.json's), whatever
    order they finished in, so a rerun gives identical bytes. Rows whose unit is no longer in papers.json (a paper
    removed, a section edited) and second copies of a key move to sdg_orphans.jsonl, kept and never deleted; keys
    of an older spelling are rewritten. A persona file is replaced atomically, after its orphans are safely
    appended."""
    rank = {key: i for i, key in enumerate(current)}
    moved = {"stale": 0, "duplicate": 0}
    for persona in personas:
        path = persona_rows_path(out_dir, persona.name)
        if not path.exists():
            continue
        seen, orphans, rekeyed, order = set(), [], 0, []
        for _, row, _ in iter_jsonl(path):  # every line was checked by read_done_keys
            key = canonical_key(row["meta"]["key"])
            reason = "stale" if key not in rank else "duplicate" if key in seen else None
            if reason:
                orphans.append({"persona": persona.name, "reason": reason, "row": row})
                moved[reason] += 1
            else:
                order.append(rank[key])
            seen.add(key)
            rekeyed += key != row["meta"]["key"]
        if not orphans and not rekeyed and order == sorted(order):
            continue
        if orphans:
            append_jsonl(out_dir / ORPHANS, orphans)
        write_jsonl(path, sorted(kept_rows(path, rank), key=lambda row: rank[row["meta"]["key"]]))
    return moved


def kept_rows(path: Path, current):
    """The rows of a persona file that reconcile() keeps, first copy of each current key, keys respelled."""
    seen = set()
    for _, row, _ in iter_jsonl(path):
        key = canonical_key(row["meta"]["key"])
        if key in current and key not in seen:
            seen.add(key)
            yield {**row, "meta": {**row["meta"], "key": key}}


class Writer:
    """Where answers become rows, for every teacher and way of running alike: a unit's rows are appended as it
    finishes, once per persona (a unit cut short by a kill is completed, never duplicated), and a failure is
    recorded with its reason. Counts go to `stats`, progress to the bar."""

    def __init__(
        self, out_dir: Path, model: str, personas, done: dict[str, set[str]], stats: Stats, progress, activity=dict
    ):
        self.out_dir, self.model, self.personas, self.done = out_dir, model, personas, done
        self.stats, self.progress = stats, progress
        self.activity = activity  # what the teacher is doing now (a local model's tokens/s), for the bar
        (out_dir / FAILURES).write_text("")  # this run's failures
        for persona in personas:  # every persona file exists once a run starts, empty or not
            persona_rows_path(out_dir, persona.name).touch()

    def is_done(self, key: str) -> bool:
        return all(key in self.done[p.name] for p in self.personas)

    def write(self, unit: Unit, answers: BaseModel, model_version: str | None) -> None:
        for persona in self.personas:
            if unit.key not in self.done[persona.name]:  # a unit cut short by a kill is completed, not duplicated
                row = make_row(persona, unit, answers, self.model, model_version)
                append_jsonl(persona_rows_path(self.out_dir, persona.name), [row])
                self.done[persona.name].add(unit.key)
        self.stats.done += 1
        self.tick()

    def record_failure(self, unit: Unit, reason: str) -> None:
        self.stats.fail(reason)
        record = {"key": unit.key, "paper_id": unit.paper_id, "section": unit.section, "chunk": unit.chunk}
        append_jsonl(self.out_dir / FAILURES, [{**record, "reason": reason}])
        self.tick()

    def tick(self) -> None:
        self.progress.update(1)
        self.tick_postfix()

    def tick_postfix(self) -> None:
        counts = {"done": self.stats.done, "failed": self.stats.failed, "retrying": self.stats.retrying}
        self.progress.set_postfix(counts | self.activity())

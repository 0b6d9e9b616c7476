"""The Gemini Batch API for step 2 (sdg.py --teacher gemini-batch): half the online price, results within 24 h.
Not another teacher but another way of running the Gemini teacher's requests: the protocol, its journal and the
run (GeminiBatchRun), which writes through the same gate, writer, ledger and orphan handling as an online run.

The protocol, through google-genai: the requests go up as one JSONL file (client.files.upload), one line per
unit, {"key": <unit key>, "request": {GenerateContentRequest}}; client.batches.create starts a job on that file;
client.batches.get reports its state; when it has succeeded, client.files.download fetches the results file, one
line per request, {"key": ..., "response": {...}} or {"key": ..., "error": {google.rpc.Status}}, in any order.
File mode with keys, not inline requests: inline results are known to come back out of order and without their
metadata, and keys are what lets every answer find its unit.

Exactly once, even under SIGKILL. data/sdg_batches.jsonl is an append-only journal, each record fsynced before
the next step is taken:
    submitting  {display_name, keys}     written before the upload; the display name is new and unique
    created     {display_name, job}      as soon as the job's name is known
    abandoned   {display_name}           a "submitting" job that never reached the server: its units are free
    ended       {display_name, job, state}      failed, cancelled or expired: its units return to pending
    collected   {display_name, job, usage, cost_usd, written, failed}   every result written or recorded
A rerun first settles every job that is not finished: a "submitting" one is looked up by its display name among
the account's jobs (a kill after the create request reached the server leaves a job we never heard the name
of: it is adopted, not paid for again); a created one is waited for and collected. Only then are units that are
neither done nor in flight submitted. A kill while results are being written is harmless: the job is not yet
"collected", so the rerun downloads the results again and writes only what is missing.
"""

import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import append_jsonl, dump_jsonl_line, iter_jsonl, repair_torn_tail
from paper_personas.ledger import Stats
from paper_personas.personas import answers_schema, system_instruction
from paper_personas.replies import parse_answers
from paper_personas.rows import Writer
from paper_personas.teachers.base import FatalAPIError, Prices, Reply, Teacher, Usage, retrying, run_stopper
from paper_personas.teachers.gemini import (
    PRICE_CACHED,
    PRICE_INPUT,
    PRICE_OUTPUT,
    GeminiTeacher,
    gemini_reply,
    make_client,
)
from paper_personas.units import Unit, across_papers, request_text

log = logging.getLogger("sdg")

JOURNAL = "sdg_batches.jsonl"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
ENDED_WITHOUT_RESULTS = {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
API_RETRIES = 6
EVENTS = ("submitting", "created", "abandoned", "ended", "collected")  # a job's life, in the journal's words
# The Batch API bills half the online price (ai.google.dev/gemini-api/docs/batch-mode).
GEMINI_BATCH_PRICES = Prices(PRICE_INPUT / 2, PRICE_OUTPUT / 2, PRICE_CACHED / 2)


@dataclass
class Job:
    """One batch job as the journal knows it."""

    display_name: str
    keys: list[str]
    job: str | None = None  # "batches/..." once known
    status: str = "submitting"  # submitting, created, abandoned, ended, collected
    end_state: str = ""  # how an ended job ended: JOB_STATE_FAILED, _CANCELLED or _EXPIRED

    @property
    def in_flight(self) -> bool:
        return self.status in ("submitting", "created")


@dataclass
class Journal:
    """data/sdg_batches.jsonl: every job's life, one record per step, appended and fsynced."""

    path: Path
    jobs: dict[str, Job] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "Journal":
        journal = cls(path)
        repair_torn_tail(path)  # a kill mid-record: that step did not happen
        if not path.exists():
            return journal
        for lineno, record, problem in iter_jsonl(path):
            name = (record or {}).get("display_name")
            if problem or not name or record.get("event") not in EVENTS:
                raise InputError(
                    f"{path}:{lineno}: {problem or 'not a batch journal record'}; it was not written by sdg.py. "
                    "Move it aside only once every job it names is finished: it is what stops a job being paid twice"
                )
            if record["event"] == "submitting":
                journal.jobs[name] = Job(name, list(record["keys"]))
            elif name in journal.jobs:
                job = journal.jobs[name]
                job.status, job.job = record["event"], record.get("job") or job.job
                job.end_state = str(record.get("state") or job.end_state)  # only an "ended" record has a state
        return journal

    def append(self, event: str, job: Job, **extra) -> None:
        record = {"event": event, "display_name": job.display_name, **extra}
        if event == "submitting":
            record["keys"] = job.keys
        elif job.job:
            record["job"] = job.job
        append_jsonl(self.path, [record])
        if event != "submitting":
            job.status = event
        if event == "ended":
            job.end_state = str(extra.get("state", ""))
        self.jobs[job.display_name] = job

    def in_flight_keys(self) -> set[str]:
        return {key for job in self.jobs.values() if job.in_flight for key in job.keys}

    def unsettled(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.in_flight]


def new_job(keys: list[str]) -> Job:
    return Job(f"sdg-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}", keys)


# ----------------------------------------------------------------------------- request and result lines (pure)


def request_line(key: str, system: str, text: str, json_schema: dict, options) -> dict:
    """One line of the requests file: a GenerateContentRequest in the REST API's JSON, as the online call sends
    it (the schema as responseJsonSchema, which takes the pydantic model's JSON schema as it is)."""
    return {
        "key": key,
        "request": {
            "contents": [{"role": "user", "parts": [{"text": text}]}],
            "systemInstruction": {"parts": [{"text": system}]},
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": json_schema,
                "temperature": options.temperature,
                "maxOutputTokens": options.max_output_tokens,
                "thinkingConfig": {"thinkingBudget": options.thinking_budget},
            },
        },
    }


def result_of(line: dict) -> tuple[str | None, Reply | None, str | None]:
    """A results-file line as (key, reply, None), or (key, None, failure reason) for a per-line error."""
    from google.genai import types

    key = line.get("key") if isinstance(line, dict) else None
    if not isinstance(key, str):
        return None, None, "no_key"
    if isinstance(line.get("error"), dict):
        error = line["error"]
        return key, None, f"api_error:{error.get('code') or error.get('status') or 'unknown'}"
    if not isinstance(line.get("response"), dict):
        return key, None, "no_response"
    try:
        response = types.GenerateContentResponse.model_validate(line["response"])
    except Exception as e:  # a line the client's own model rejects
        return key, None, f"bad_response:{type(e).__name__}"
    return key, gemini_reply(response), None


# ----------------------------------------------------------------------------- the API calls, with retries


class BatchAPI:
    """client.files and client.batches, each call retried on what the teacher calls retryable; an error every call
    would meet (key, model, permission) stops the run."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.client = make_client(teacher.options.timeout, teacher.options.base_url)
        self.model = teacher.options.model

    def call(self, what: str, fn, *args, **kwargs):
        try:
            for attempt in retrying(self.teacher, API_RETRIES, blocking=True):
                with attempt:
                    return fn(*args, **kwargs)
        except FatalAPIError:
            raise
        except Exception as e:  # after its retries, any error stops the run: it is about the whole job
            kind = "refused" if run_stopper(self.teacher, e) else "failed"
            raise FatalAPIError(f"the Batch API {kind} to {what}: {self.teacher.facts(e).describe()}") from e

    def upload(self, path: Path) -> str:
        from google.genai import types

        # "jsonl", as the Batch API guide uploads its requests file
        config = types.UploadFileConfig(display_name=path.stem, mime_type="jsonl")
        return self.call("upload the requests", self.client.files.upload, file=str(path), config=config).name

    def create(self, file_name: str, display_name: str) -> str:
        job = self.call(
            "create the job",
            self.client.batches.create,
            model=self.model,
            src=file_name,
            config={"display_name": display_name},
        )
        return job.name

    def find(self, display_name: str) -> str | None:
        """The job created under this display name, if the create request reached the server."""
        jobs = self.call("list the jobs", lambda: list(self.client.batches.list(config={"page_size": 100})))
        return next((job.name for job in jobs if job.display_name == display_name), None)

    def status(self, job: str) -> tuple[str, str | None, str]:
        """(state, results file, error message) of a job."""
        batch = self.call(f"read {job}", self.client.batches.get, name=job)
        state = str(getattr(batch.state, "value", batch.state))
        results = batch.dest.file_name if batch.dest else None
        message = batch.error.message if getattr(batch, "error", None) else ""
        return state, results, message or ""

    def download(self, file_name: str) -> bytes:
        return self.call(f"download {file_name}", self.client.files.download, file=file_name)


def settle_unheard(api: BatchAPI, journal: Journal) -> None:
    """Every job journaled as "submitting" but never "created" (a kill or an error during upload or create) is
    looked up by its display name: found, it is adopted as created, never sent again; not found, it never reached
    the server and is abandoned, its units free to be submitted."""
    for job in journal.unsettled():
        if job.status == "submitting":
            job.job = api.find(job.display_name)
            journal.append("created" if job.job else "abandoned", job)


def result_lines(data: bytes) -> list[dict]:
    """The results file's lines; a line that is not JSON is skipped (its unit is recorded as missing)."""
    lines = []
    for raw in data.decode("utf-8", errors="replace").split("\n"):  # not splitlines(): U+2028 may sit in a string
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines


# ----------------------------------------------------------------------------- the run


class GeminiBatchRun:
    """sdg.py --teacher gemini-batch: settle every job a previous run left unfinished, submit what is neither done
    nor in flight, then wait for the jobs and write their results through the same gate and writer as online
    answers."""

    teacher_class = GeminiTeacher
    prices = GEMINI_BATCH_PRICES
    default_rpm = 0.0
    interrupted_note = "; submitted batch jobs keep running at Google and are collected by the rerun"
    label = "--teacher gemini-batch"

    def generate(self, teacher: Teacher, settings, personas, units, pending, done, stats: Stats) -> str:
        """Returns a note for the summary: jobs still in flight, units returned to pending."""
        from tqdm import tqdm

        journal = Journal.read(settings.out_dir / JOURNAL)
        api = BatchAPI(teacher)
        settle_unheard(api, journal)
        in_flight = journal.in_flight_keys()  # --limit applies to what is neither done nor in flight
        to_submit = across_papers([u for u in pending if u.key not in in_flight], settings.limit)
        stats.requests += submit_jobs(api, journal, to_submit, settings, personas)
        waiting = journal.unsettled()
        this_run = {job.display_name for job in waiting}  # the jobs this run waits for, old and new
        with tqdm(total=sum(len(job.keys) for job in waiting), desc="batch", unit="unit") as progress:
            writer = Writer(settings.out_dir, settings.model, personas, done, stats, progress)
            while waiting:
                for job in waiting:
                    collect_job(api, journal, job, writer, settings, personas, units, progress)
                waiting = journal.unsettled()
                if not waiting or settings.no_wait:
                    break
                time.sleep(settings.poll_interval)
        ended = [job for job in journal.jobs.values() if job.status == "ended" and job.display_name in this_run]
        if ended and stats.done == 0 and not waiting:
            states = ", ".join(sorted({job.end_state or "ended" for job in ended}))
            raise FatalAPIError(f"every batch job ended without results ({states}); rerun to submit their units again")
        return batch_note(waiting, ended)


def submit_jobs(api: BatchAPI, journal: Journal, units: list[Unit], settings, personas) -> int:
    """Jobs of at most --batch-size units: the requests file is written, the job journaled as "submitting" (so a
    kill from here on is settled by the next run), uploaded, created, and journaled as "created". Returns the
    number of requests submitted."""
    system, json_schema = system_instruction(personas), answers_schema(personas).model_json_schema()
    options = settings.teacher_options()
    for start in range(0, len(units), settings.batch_size):
        chunk = units[start : start + settings.batch_size]
        job = new_job([u.key for u in chunk])
        with tempfile.TemporaryDirectory() as folder:
            requests = Path(folder) / f"{job.display_name}.jsonl"
            lines = [request_line(u.key, system, request_text(u), json_schema, options) for u in chunk]
            requests.write_text("".join(map(dump_jsonl_line, lines)), encoding="utf-8")
            journal.append("submitting", job)
            try:
                file_name = api.upload(requests)
            except FatalAPIError:
                journal.append("abandoned", job)  # nothing was created: the units stay pending
                raise
            job.job = api.create(file_name, job.display_name)
        journal.append("created", job)
        log.info("submitted %d units as %s", len(chunk), job.job)
    return len(units)


def batch_note(waiting: list[Job], ended: list[Job]) -> str:
    """What the summary line should add: jobs still in flight, and units that ended jobs returned to pending."""
    notes = []
    if waiting:
        names = ", ".join(job.job or job.display_name for job in waiting)
        keys = sum(len(job.keys) for job in waiting)
        notes.append(
            f"{keys:,} units in flight in {len(waiting)} batch job(s) ({names}); rerun the same command to collect"
        )
    if ended:
        keys = sum(len(job.keys) for job in ended)
        notes.append(
            f"{keys:,} units of {len(ended)} job(s) that ended without results are pending again; rerun to resubmit"
        )
    return "\n".join(notes)


def collect_job(api: BatchAPI, journal: Journal, job: Job, writer: Writer, settings, personas, units, progress) -> None:
    """One look at a job: write its results if it has succeeded, return its units to pending if it ended without
    results, else leave it running. Each result is written once: a unit already written (a kill cut an earlier
    collection short) is skipped, and so is a result whose unit's text changed while the job ran."""
    state, results, message = api.status(job.job)
    progress.set_postfix(job=job.job, state=state.removeprefix("JOB_STATE_").lower())
    if state in ENDED_WITHOUT_RESULTS:
        reason = f" ({message})" if message else ""
        log.warning("%s ended %s%s: its %d units return to pending", job.job, state, reason, len(job.keys))
        journal.append("ended", job, state=state, message=message)
        return
    if state != SUCCEEDED:
        return
    by_key = {u.key: u for u in units}
    schema = answers_schema(personas)
    ours, seen, usage = set(job.keys), set(), Usage()
    written = failed = 0
    for line in result_lines(api.download(results)):
        key, reply, reason = result_of(line)
        if key not in ours or key in seen:
            continue  # not a unit of this job, or a second copy of its result
        seen.add(key)
        if reply is not None:
            usage = usage + reply.usage
            writer.stats.add_usage(reply.usage)
        unit = by_key.get(key)
        if unit is None or writer.is_done(key):
            continue
        if reply is not None:
            answers, reason = parse_answers(reply, schema, personas, unit.text)
            if answers is not None:
                writer.write(unit, answers, reply.model_version)
                written += 1
                continue
        writer.record_failure(unit, reason)
        failed += 1
    for key in ours - seen:
        if key in by_key and not writer.is_done(key):
            writer.record_failure(by_key[key], "missing_result")
            failed += 1
    cost = round(settings.prices.cost(usage), 6)
    journal.append("collected", job, usage=vars(usage), cost_usd=cost, written=written, failed=failed)

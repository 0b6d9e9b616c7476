"""The Gemini Batch API for step 2 (sdg.py --teacher gemini-batch): half the online price, results within 24 h.

What lives here is the protocol and its bookkeeping; sdg.py runs it through the same gate, writer, ledger and
orphan handling as every other teacher.

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
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import iter_jsonl, repair_torn_tail
from paper_personas.teachers.base import SYSTEMIC, FatalAPIError, Prices, Reply, Teacher, retrying
from paper_personas.teachers.gemini import (
    PRICE_CACHED,
    PRICE_INPUT,
    PRICE_OUTPUT,
    GeminiTeacher,
    gemini_reply,
    make_client,
)

JOURNAL = "sdg_batches.jsonl"
SUCCEEDED = "JOB_STATE_SUCCEEDED"
ENDED_WITHOUT_RESULTS = {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
API_RETRIES = 6
EVENTS = ("submitting", "created", "abandoned", "ended", "collected")  # a job's life, in the journal's words
# The Batch API bills half the online price (ai.google.dev/gemini-api/docs/batch-mode).
GEMINI_BATCH_PRICES = Prices(PRICE_INPUT / 2, PRICE_OUTPUT / 2, PRICE_CACHED / 2)


class GeminiBatchTeacher(GeminiTeacher):
    """Gemini through the Batch API: the same model, key and error classes, half the price. sdg.py runs it with
    this module's jobs instead of asking unit by unit."""

    name = "gemini-batch"
    prices = GEMINI_BATCH_PRICES
    default_rpm = 0.0
    batch = True

    async def ask(self, system: str, text: str, schema) -> Reply:
        raise NotImplementedError("gemini-batch answers through jobs (this module), never one request at a time")


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
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
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
        except Exception as e:
            facts = self.teacher.facts(e)
            kind = "refused" if self.teacher.classify(e) == SYSTEMIC else "failed"
            raise FatalAPIError(f"the Batch API {kind} to {what}: {facts.describe()}") from e

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

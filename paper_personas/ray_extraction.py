"""Step 1's extraction as Ray tasks (`paperExtractor.py --ray [ADDRESS]`): the same extract_paper, run on a local
Ray instance or on a cluster, each task carrying its PDF's bytes and sending back its record and figures.

What stays where: downloads, the store and papers.json stay with the driver (the machine that runs
paperExtractor.py), so the store is written in one place and arXiv sees one polite client; a worker needs no shared
storage, only the same Python packages. A worker that dies (killed, out of memory) has its task retried by Ray
(`max_retries`), then the paper is recorded as failed with that reason. At most one task per CPU of the cluster is
in flight, so --timeout counts from when a task was handed over (it starts at once, a worker being free), and PDF
bytes in the object store stay bounded by the number of CPUs.
"""

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.extraction import extract_paper, limit_worker_threads, markdown_ref

log = logging.getLogger("paperExtractor")

RETRIES = 2  # a dead worker's task is run again this many times before the paper is recorded as failed
INSTALL_HINT = "--ray needs Ray: pip install -r requirements-ray.txt (on the driver and on every worker)"


@dataclass(frozen=True)
class Job:
    """One PDF to extract: where it is on the driver, and where its figures go there."""

    key: object  # whatever the caller needs back with the result (its record)
    pdf_path: Path
    image_dir: Path
    max_pages: int
    keep_appendix: bool


# ----------------------------------------------------------------------------- the task (on a Ray worker)

_threads_limited = False


def extract_task(pdf: bytes, pdf_name: str, image_ref: str, max_pages: int, keep_appendix: bool) -> dict:
    """Extract one PDF from its bytes in a scratch folder on the worker. The PDF keeps its file name (figures are
    named after it), and figure links in the markdown point where the driver puts the figures, as the pool's do."""
    global _threads_limited
    if not _threads_limited:  # a Ray task holds one CPU: its layout model gets one thread
        limit_worker_threads(1)
        _threads_limited = True
    with tempfile.TemporaryDirectory(prefix="paperExtractor-") as scratch:
        path = Path(scratch) / pdf_name
        path.write_bytes(pdf)
        images = Path(scratch) / "images"
        extracted = extract_paper(str(path), str(images), max_pages, keep_appendix, image_ref=image_ref)
        extracted["images"] = {Path(p).name: Path(p).read_bytes() for p in extracted["images"]}
    return extracted


# ----------------------------------------------------------------------------- the driver


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def preflight(address: str) -> str | None:
    """What stops --ray before any work: Ray missing here, or nothing at the cluster's address."""
    try:
        import_ray()
    except InputError as e:
        return str(e)
    return unreachable(address or os.environ.get("RAY_ADDRESS", ""))


def unreachable(address: str) -> str | None:
    """Why nothing answers at a host:port address, found in seconds: Ray itself retries a dead address for
    minutes. Addresses of another shape ("auto", a bare host name) are left for Ray to judge."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        return (
            f"--ray {address}: nothing answers there ({e.strerror or e}); start the cluster's head "
            "(ray start --head) or give its address"
        )
    return None


def start(ray, address: str, workers: int) -> tuple[str, int]:
    """Connect to the cluster at `address`, or to RAY_ADDRESS's, or start a local instance with `workers` CPUs;
    return what was joined, for the log, and its CPUs."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report sent home from a user's run
    local = not address and not os.environ.get("RAY_ADDRESS")
    if local:
        # On Linux Ray binds a local instance to the machine's network address, open to its LAN; one machine
        # needs only loopback. (The variable's name is Ray's: "no cluster" on Windows and macOS, applied here.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray runs its workers at nice 15, where anything else on the machine comes first; on one machine the
        # extraction is the job, at the priority the pool's workers have (bench/ray_bench.py: 1.30x -> 1.19-1.21x).
        os.environ.setdefault("RAY_worker_niceness", "0")
        # "local": a new instance even when `ray start` left one running here (plain ray.init() would join it).
        # Its workers import this package from here.
        options = {"address": "local", "num_cpus": workers, "include_dashboard": False}
    else:  # the driver's copy of the package goes to the cluster's workers, so they run this very code
        options = {"address": address or None, "runtime_env": {"py_modules": [str(Path(__file__).resolve().parent)]}}
    try:
        ray.init(**options, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as e:
        if isinstance(e.__cause__, ray.exceptions.AuthenticationError):  # a cluster started with token auth
            fix = "the cluster wants its token: export RAY_AUTH_MODE=token and the head's RAY_AUTH_TOKEN here"
        else:
            fix = "is the cluster up, and is this machine's Ray the same version as the cluster's?"
        raise InputError(f"--ray {address or os.environ.get('RAY_ADDRESS')}: {e}; {fix}") from None
    except (ValueError, RuntimeError) as e:  # Ray's own word on an address or a setting it cannot use
        raise InputError(f"--ray {address or os.environ.get('RAY_ADDRESS') or '(local)'}: {e}") from None
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    where = "a local Ray instance" if local else f"the Ray cluster at {address or os.environ['RAY_ADDRESS']}"
    return f"{where} ({cpus} CPUs)", cpus


def failure_reason(ray, error: Exception) -> str:
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(error.cause, ValueError):
        return str(error.cause)  # a reason extract_paper gave: corrupt, damaged, encrypted, empty, no text
    if isinstance(error, ray.exceptions.RayTaskError):
        return f"{type(error.cause).__name__}: {error.cause}"
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        return "out of memory on the Ray worker (give the task's node more memory, or lower --max-pages)"
    if isinstance(error, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return f"the Ray worker died while extracting it, {RETRIES + 1} times (killed, or out of memory?)"
    return f"{type(error).__name__}: {error}"


def extractions(jobs: Iterable[Job], address: str, workers: int, timeout: float) -> Iterator[tuple[object, dict | str]]:
    """Yield (job.key, extracted record fields | failure reason) as tasks finish, in any order. Figures are
    written into each job's image_dir before its result is yielded. Ctrl-C (or closing this generator) cancels
    the tasks still running and leaves Ray."""
    ray = import_ray()
    joined, window = start(ray, address, workers)  # one task in flight per CPU
    log.info("extracting on %s", joined)
    task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(extract_task)
    queue = iter(jobs)
    running: dict = {}  # object ref -> (job, deadline)
    try:
        while True:
            while len(running) < window and (job := next(queue, None)) is not None:
                try:
                    pdf = job.pdf_path.read_bytes()
                except OSError as e:  # gone or unreadable since it was checked
                    yield job.key, f"cannot read {job.pdf_path}: {e.strerror or e}"
                    continue
                args = (pdf, job.pdf_path.name, markdown_ref(job.image_dir), job.max_pages, job.keep_appendix)
                running[task.remote(*args)] = (job, time.monotonic() + timeout)
            if not running:
                return
            # Never past the earliest deadline: a result that comes in after it is a timeout, as in the pool.
            earliest = min(deadline for _, deadline in running.values())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, min(1.0, earliest - time.monotonic())))
            for ref in ready:
                job, _ = running.pop(ref)
                try:
                    extracted = ray.get(ref)
                except Exception as e:  # one paper's failure is recorded; it never stops the run
                    yield job.key, failure_reason(ray, e)
                    continue
                extracted["images"] = save_images(job.image_dir, extracted["images"])
                yield job.key, extracted
            now = time.monotonic()
            for ref, (job, deadline) in list(running.items()):
                if now > deadline:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    yield job.key, f"timed out after {timeout:g} s (raise --timeout)"
    finally:
        for ref in running:  # Ctrl-C or an error: stop what runs now, instead of draining the queue
            ray.cancel(ref, force=True)
        ray.shutdown()


def save_images(image_dir: Path, images: dict[str, bytes]) -> list[str]:
    """Write a task's figures where the pool writes them, as it does (the paper's record, saved after, is what
    marks it done); list the folder as the pool does."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (image_dir / name).write_bytes(data)
    return sorted(str(p) for p in image_dir.glob("*.png"))

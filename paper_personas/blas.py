"""An optimised BLAS for mlx on Linux CPUs, loaded before mlx is, and only where this CPU can run it.

`mlx[cpu]` on Linux links netlib's reference BLAS (mlx_cpu.libs/libblas-*.so.3.10.0), correct but 10-60x slower
than OpenBLAS on a matmul (BENCHMARKS.md). On Linux x86-64 the requirements install OpenBLAS (the
`ngsolve-openblas` wheel: DYNAMIC_ARCH, so it picks its kernels for the CPU it finds, up to 128 threads);
loading it with its symbols global, before mlx's own library is loaded, makes mlx's cblas_* calls resolve to it.
On a Mac mlx uses Accelerate and nothing here does anything.

The guard: a library built for one CPU family (an OpenBLAS without DYNAMIC_ARCH, such as cmeel-openblas's
SKYLAKEX build) executes instructions other CPUs lack and kills the process with SIGILL at its first matmul.
Before loading, a child process reads the library's own openblas_get_config() and openblas_get_corename(), and
`refusal()` (pure) compares the instructions that build needs with this CPU's flags in /proc/cpuinfo. A library
refused, or one that cannot load, is not loaded, and the log line says why and that mlx's reference BLAS runs.

Every process that imports mlx must load it first: the scripts call `use_fast_blas()` at the top of main; the
`mlx_lm` command lines (`make train`, the smoke run) get it through `LD_PRELOAD` from `preload_env()`, and
`python -m paper_personas.blas` prints that value for the Makefile.

    $ python -m paper_personas.blas          # the library to preload, or nothing when there is none
    $ python -m paper_personas.blas --which  # which BLAS a process here would run, and why
    $ PAPER_PERSONAS_BLAS=reference make smoke   # every process on mlx's reference BLAS
    $ PAPER_PERSONAS_BLAS=/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0 make train   # your own
"""

import ctypes
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("blas")

SWITCH = "PAPER_PERSONAS_BLAS"  # "reference": load nothing; a path: that OpenBLAS instead of the wheel's
REFERENCE = "mlx's bundled reference BLAS (slow but correct)"
WHEEL_FOLDER = "ngsolve_openblas"  # the wheel's package folder; never imported: its __init__ loads the library

# Instructions the kernels of a single-target OpenBLAS build use, by the core it was built for (OpenBLAS's
# TargetList.txt), as /proc/cpuinfo names them. A DYNAMIC_ARCH build checks the CPU itself and needs none of
# these. A core not listed is refused: a wrong refusal costs speed, a wrong load kills the process.
X86_CORES = {
    **dict.fromkeys(("GENERIC", "P2", "KATMAI", "COPPERMINE", "NORTHWOOD", "ATHLON", "OPTERON"), ()),
    **dict.fromkeys(("PRESCOTT", "BANIAS", "YONAH", "OPTERON_SSE3", "BARCELONA", "SHANGHAI", "ISTANBUL"), ("pni",)),
    **dict.fromkeys(("CORE2", "PENRYN", "DUNNINGTON", "ATOM", "BOBCAT", "NANO"), ("ssse3",)),
    "NEHALEM": ("ssse3", "sse4_2"),
    "SANDYBRIDGE": ("avx",),
    **dict.fromkeys(("BULLDOZER", "PILEDRIVER", "STEAMROLLER", "EXCAVATOR"), ("avx", "fma4")),
    **dict.fromkeys(("HASWELL", "ZEN"), ("avx2", "fma")),
    "SKYLAKEX": ("avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "COOPERLAKE": ("avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"),
    "SAPPHIRERAPIDS": (
        *("avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"),
        *("avx512_fp16", "amx_tile", "amx_bf16"),
    ),
}
ARM64_CORES = {
    **dict.fromkeys(
        (
            *("ARMV8", "CORTEXA53", "CORTEXA55", "CORTEXA57", "CORTEXA72", "CORTEXA73", "CORTEXA76", "NEOVERSEN1"),
            *("FALKOR", "THUNDERX", "THUNDERX2T99", "THUNDERX3T110", "TSV110", "EMAG8180", "FT2000", "VORTEX"),
        ),
        ("asimd",),
    ),
    **dict.fromkeys(("A64FX", "ARMV8SVE", "NEOVERSEV1", "CORTEXA510", "CORTEXX2"), ("asimd", "sve")),
    **dict.fromkeys(("NEOVERSEN2", "NEOVERSEV2", "ARMV9SVE", "CORTEXA710"), ("asimd", "sve", "sve2", "bf16")),
}
CORES = {"x86_64": X86_CORES, "aarch64": ARM64_CORES}


# ----------------------------------------------------------------------------- the guard (pure)


@dataclass(frozen=True)
class Build:
    """What an OpenBLAS says of itself: "OpenBLAS 0.3.33 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=128"."""

    config: str
    corename: str

    @property
    def version(self) -> str:
        parts = self.config.split()
        return parts[1] if len(parts) > 1 else "?"

    @property
    def dynamic(self) -> bool:
        return "DYNAMIC_ARCH" in self.config.split()

    @property
    def max_threads(self) -> int | None:
        found = [w.split("=", 1)[1] for w in self.config.split() if w.startswith("MAX_THREADS=")]
        return int(found[0]) if found and found[0].isdigit() else None

    def describe(self) -> str:
        kernels = f"{self.corename} kernels picked at run time" if self.dynamic else f"built for {self.corename} only"
        threads = f", up to {self.max_threads} threads" if self.max_threads else ""
        return f"OpenBLAS {self.version} ({kernels}{threads})"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The instruction-set flags of /proc/cpuinfo's first processor: "flags" on x86, "Features" on arm64."""
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def refusal(build: Build, flags: frozenset[str], machine: str) -> str | None:
    """Why this CPU must not load this build, or None. A DYNAMIC_ARCH build chose its kernels for this CPU
    when it was loaded (the probe's corename is that choice); a single-target build needs its core's
    instructions, all of them."""
    if build.dynamic:
        return None
    core = build.corename.upper()
    cores = CORES.get(machine, {})
    if core not in cores:
        known = "x86-64 or arm64" if machine not in CORES else machine
        return f"a core this guard does not know for {known}"
    missing = [flag for flag in cores[core] if flag not in flags]
    if missing:
        return f"which needs {', '.join(missing)}, and this CPU has no {missing[0]}"
    return None


# ----------------------------------------------------------------------------- finding and probing the library

PROBE = """
import ctypes, json, os, sys
library = ctypes.CDLL(sys.argv[1], mode=os.RTLD_GLOBAL)
for name in ("openblas_get_config", "openblas_get_corename"):
    getattr(library, name).restype = ctypes.c_char_p
print(json.dumps([library.openblas_get_config().decode(), library.openblas_get_corename().decode()]))
"""


def wheel_library() -> Path | None:
    """The OpenBLAS of the ngsolve-openblas wheel in this environment, or None."""
    for folder in map(Path, sys.path):
        found = sorted((folder / WHEEL_FOLDER).glob("libopenblas*.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def probe(library: Path) -> Build | str:
    """The library's own report, read in a child process (a library that crashes on load takes only the child
    with it); or why it could not be read."""
    try:
        child = subprocess.run(
            [sys.executable, "-I", "-S", "-c", PROBE, str(library)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"its probe did not finish ({type(e).__name__})"
    if child.returncode < 0:
        return f"loading it killed a probe process with {signal_name(-child.returncode)}"
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no message"])[-1]
        return f"it cannot load ({last.removeprefix('OSError: ')})"
    config, corename = json.loads(child.stdout.strip().splitlines()[-1])
    return Build(config, corename)


def signal_name(number: int) -> str:
    """How a crash is named to a user: "SIGILL (illegal instruction)" for 4."""
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    return f"{sig.name} ({signal.strsignal(sig).lower()})" if signal.strsignal(sig) else sig.name


@dataclass(frozen=True)
class Choice:
    library: Path | None  # None: mlx's reference BLAS
    description: str  # the log line's words


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def choose() -> Choice:
    """Which BLAS this machine's processes should run, and why."""
    if not sys.platform.startswith("linux"):
        return Choice(None, "Accelerate (macOS)" if sys.platform == "darwin" else "mlx's own BLAS")
    wanted = os.environ.get(SWITCH, "").strip()
    if wanted == "reference":
        return Choice(None, f"{REFERENCE}, as {SWITCH}=reference asks")
    library = Path(wanted).expanduser() if wanted else wheel_library()
    if library is None:
        hint = "pip install ngsolve-openblas" if platform.machine() == "x86_64" else f"set {SWITCH} to an OpenBLAS"
        return Choice(None, f"{REFERENCE}; no OpenBLAS found here ({hint})")
    if not library.is_file():
        return Choice(None, f"{REFERENCE}; {SWITCH}={wanted} is not a file")
    return decide(library, probe(library), cpu_flags(read_cpuinfo()), platform.machine())


def decide(library: Path, build: Build | str, flags: frozenset[str], machine: str) -> Choice:
    """The choice, and the log line that explains it, from what the probe read (or why it could not)."""
    if isinstance(build, str):
        fix = "; install libgfortran5 (Debian, Ubuntu)" if "libgfortran" in build else ""
        return Choice(None, f"{REFERENCE}: not loading {library}: {build}{fix}")
    refused = refusal(build, flags, machine)
    if refused:
        return Choice(None, f"{REFERENCE}: not loading {library}: {build.describe()}, {refused}")
    return Choice(library, f"{build.describe()} from {library}")


# ----------------------------------------------------------------------------- loading

_choice: Choice | None = None
_loaded: str | None = None


def chosen() -> Choice:
    global _choice
    if _choice is None:
        _choice = choose()
    return _choice


def use_fast_blas() -> str:
    """Load the chosen OpenBLAS with global symbols, once, before mlx; return which BLAS mlx will call, for the
    log. Too late when mlx is already imported (its symbols are bound): then say so rather than pretend."""
    global _loaded
    if _loaded is not None:
        return _loaded
    choice = chosen()
    preloaded = choice.library is not None and str(choice.library) in os.environ.get("LD_PRELOAD", "").split(":")
    if choice.library is None or preloaded:
        _loaded = choice.description
    elif "mlx.core" in sys.modules:
        _loaded = f"{REFERENCE}; {choice.library} was found but mlx was imported before it could be loaded"
    else:
        ctypes.CDLL(str(choice.library), mode=os.RTLD_GLOBAL)
        _loaded = choice.description
    log.info("BLAS: %s", _loaded)
    return _loaded


def preload_env() -> dict[str, str]:
    """The environment for a child process that imports mlx (the mlx_lm command lines): the chosen OpenBLAS
    preloaded, or nothing when the reference BLAS is to run."""
    library = chosen().library
    if library is None:
        return {}
    already = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p and p != str(library)]
    return {"LD_PRELOAD": ":".join([str(library), *already])}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--which" in args:
        print(chosen().description)
    else:
        print(preload_env().get("LD_PRELOAD", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

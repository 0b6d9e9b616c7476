"""An optimised BLAS for mlx on Linux CPUs, loaded before mlx is.

`mlx[cpu]` on Linux links netlib's reference BLAS (mlx_cpu.libs/libblas-*.so.3.10.0): a float32 matmul runs at
about 8 GFLOP/s on this project's 2-core machine, against about 490 with OpenBLAS (BENCHMARKS.md). The
requirements install OpenBLAS on Linux (the `cmeel-openblas` wheel); loading it into the process with its
symbols global, before mlx's own library is loaded, makes mlx's cblas_* calls resolve to it. On a Mac mlx uses
Accelerate and nothing here does anything.

Every process that imports mlx must load it first: the scripts call `use_fast_blas()` at the top of main; the
`mlx_lm` command lines (`make train`, the smoke run) get it through `LD_PRELOAD` from `preload_env()`, and
`python -m paper_personas.blas` prints that value for the Makefile.

    $ python -m paper_personas.blas          # the library to preload, or nothing when there is none
    $ python -m paper_personas.blas --which  # which BLAS a process here would run
"""

import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("blas")

REFERENCE = "mlx's bundled reference BLAS"
FALLBACK = f"{REFERENCE} (slow: pip install cmeel-openblas)"
_loaded: str | None = None


def openblas_path() -> Path | None:
    """The OpenBLAS shared library of the cmeel-openblas wheel in this environment, or None."""
    if not sys.platform.startswith("linux"):
        return None
    for folder in map(Path, sys.path):
        library = folder / "cmeel.prefix" / "lib" / "libopenblas.so.0"
        if library.is_file():
            return library
    return None


def use_fast_blas() -> str:
    """Load OpenBLAS with global symbols, once, before mlx; return which BLAS mlx will call, for the log.
    Too late when mlx is already imported (its symbols are bound): then say so rather than pretend."""
    global _loaded
    if _loaded is not None:
        return _loaded
    if not sys.platform.startswith("linux"):
        _loaded = "Accelerate (macOS)" if sys.platform == "darwin" else "mlx's own"
        return _loaded
    library = openblas_path()
    preloaded = library is not None and str(library) in os.environ.get("LD_PRELOAD", "")
    if library is None:
        _loaded = FALLBACK
    elif "mlx.core" in sys.modules and not preloaded:
        _loaded = f"{FALLBACK}; OpenBLAS was found but mlx was imported before it could be loaded"
    else:
        try:
            ctypes.CDLL(str(library), mode=os.RTLD_GLOBAL)
            _loaded = f"OpenBLAS {openblas_version(library)} ({library})"
        except OSError as e:  # libgfortran.so.5, which this OpenBLAS links, is a system library
            _loaded = f"{REFERENCE}: OpenBLAS cannot load ({e}); install libgfortran5 (Debian, Ubuntu)"
    log.info("BLAS: %s", _loaded)
    return _loaded


def openblas_version(library: Path) -> str:
    config = ctypes.CDLL(str(library)).openblas_get_config
    config.restype = ctypes.c_char_p
    return config().decode().split()[1]  # "OpenBLAS 0.3.31 DYNAMIC_ARCH ..."


def preload_env() -> dict[str, str]:
    """The environment for a child process that imports mlx (the mlx_lm command lines): OpenBLAS preloaded,
    when it loads here (a preload that fails to load would stop the child)."""
    library = openblas_path()
    if library is None or not use_fast_blas().startswith("OpenBLAS"):
        return {}
    already = os.environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{library}:{already}" if already else str(library)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--which" in args:
        print(use_fast_blas())
    else:
        print(preload_env().get("LD_PRELOAD", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

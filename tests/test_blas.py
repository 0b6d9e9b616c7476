"""The BLAS mlx runs on Linux: the guard that keeps a library built for another CPU out of the process, and the
real library through both ways in (preload, use_fast_blas) on the matmul shapes of a 135M Llama."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from paper_personas.blas import REFERENCE, SWITCH, Build, cpu_flags, decide, refusal, signal_name, wheel_library

# What the libraries say of themselves (openblas_get_config(), openblas_get_corename()).
CMEEL_SKYLAKEX = Build("OpenBLAS 0.3.31 NO_AFFINITY SKYLAKEX MAX_THREADS=4", "SKYLAKEX")
NGSOLVE_ON_ZEN = Build("OpenBLAS 0.3.33 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=128", "Zen")
CMEEL_ARM64 = Build("OpenBLAS 0.3.31 NO_AFFINITY NEOVERSEN2", "NEOVERSEN2")

# /proc/cpuinfo lines: an AMD EPYC Zen 3 (no AVX-512), an Intel Sapphire Rapids, two arm64 servers.
ZEN3 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
    "ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid "
    "tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand "
    "hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single "
    "ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb "
    "sha_ni xsaveopt xsavec xgetbv1 xsaves clzero xsaveerptr rdpru wbnoinvd arat umip pku ospke vaes vpclmulqdq "
    "rdpid fsrm\nbugs\t\t: sysret_ss_attrs\n"
)
SAPPHIRE_RAPIDS = (
    "processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512ifma "
    "avx512cd avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8\n"
)
GRAVITON2 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\n"  # noqa: E501
GRAVITON4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti\n"  # noqa: E501


def test_cpu_flags_are_read_from_x86_and_arm64_cpuinfo():
    assert "avx2" in cpu_flags(ZEN3) and "avx512f" not in cpu_flags(ZEN3)
    assert {"avx512f", "amx_tile"} <= cpu_flags(SAPPHIRE_RAPIDS)
    assert "asimd" in cpu_flags(GRAVITON2) and "sve" not in cpu_flags(GRAVITON2)
    assert {"sve", "sve2", "bf16"} <= cpu_flags(GRAVITON4)
    assert cpu_flags("") == frozenset()


def test_a_build_reads_its_version_kernels_and_thread_cap():
    assert (NGSOLVE_ON_ZEN.version, NGSOLVE_ON_ZEN.dynamic, NGSOLVE_ON_ZEN.max_threads) == ("0.3.33", True, 128)
    assert (CMEEL_SKYLAKEX.version, CMEEL_SKYLAKEX.dynamic, CMEEL_SKYLAKEX.max_threads) == ("0.3.31", False, 4)
    assert CMEEL_ARM64.max_threads is None
    assert NGSOLVE_ON_ZEN.describe() == "OpenBLAS 0.3.33 (Zen kernels picked at run time, up to 128 threads)"
    assert CMEEL_SKYLAKEX.describe() == "OpenBLAS 0.3.31 (built for SKYLAKEX only, up to 4 threads)"


@pytest.mark.parametrize(
    "build, cpuinfo, machine, refused_for",
    [
        (CMEEL_SKYLAKEX, ZEN3, "x86_64", "avx512f"),  # the crash of issue 27: AVX-512 kernels on a Zen 3
        (CMEEL_SKYLAKEX, SAPPHIRE_RAPIDS, "x86_64", None),  # the machines it was tested on before
        (NGSOLVE_ON_ZEN, ZEN3, "x86_64", None),  # run-time dispatch picked Zen kernels itself
        (Build("OpenBLAS 0.3.20 HASWELL MAX_THREADS=64", "Haswell"), ZEN3, "x86_64", None),
        (CMEEL_ARM64, GRAVITON2, "aarch64", "sve"),  # cmeel's arm64 wheel: SVE kernels on a Neoverse N1
        (CMEEL_ARM64, GRAVITON4, "aarch64", None),
        (Build("OpenBLAS 0.3.26 ARMV8 MAX_THREADS=64", "ARMV8"), GRAVITON2, "aarch64", None),
        (CMEEL_SKYLAKEX, GRAVITON4, "aarch64", "does not know"),  # an x86 build on arm64
        (Build("OpenBLAS 0.3.40 NO_AFFINITY FUTURELAKE", "FUTURELAKE"), SAPPHIRE_RAPIDS, "x86_64", "does not know"),
    ],
)
def test_the_guard_refuses_a_build_for_instructions_the_cpu_lacks(build, cpuinfo, machine, refused_for):
    problem = refusal(build, cpu_flags(cpuinfo), machine)
    if refused_for is None:
        assert problem is None
    else:
        assert problem is not None and refused_for in problem


def test_an_avx512_only_build_on_a_cpu_without_avx512f_gets_a_clear_log_line():
    library = Path("/venv/cmeel.prefix/lib/libopenblas.so.0")
    choice = decide(library, CMEEL_SKYLAKEX, cpu_flags(ZEN3), "x86_64")
    assert choice.library is None
    assert choice.description == (
        f"{REFERENCE}: not loading {library}: OpenBLAS 0.3.31 (built for SKYLAKEX only, up to 4 threads), which "
        "needs avx512f, avx512cd, avx512bw, avx512dq, avx512vl, and this CPU has no avx512f"
    )
    assert decide(library, NGSOLVE_ON_ZEN, cpu_flags(ZEN3), "x86_64").library == library
    missing_runtime = decide(library, "it cannot load (libgfortran.so.5: cannot open shared object file)", [], "x")
    assert missing_runtime.library is None
    assert missing_runtime.description.endswith("; install libgfortran5 (Debian, Ubuntu)")


def test_a_crash_is_named_by_its_signal():
    assert signal_name(4) == "SIGILL (illegal instruction)"
    assert signal_name(9) == "SIGKILL (killed)"
    assert signal_name(200) == "signal 200"


# ----------------------------------------------------------------------------- the real library, in real processes

# SmolLM2-135M's matmuls (hidden 576, 9 query and 3 key-value heads of 64, MLP 1536, vocabulary 49,152) for one
# decoded token (m = 1, the shape that crashed), a short prompt (7) and a batch of rows (32: a matrix product, not
# a matrix-vector one, and a quarter of 128's time in the reference BLAS, 30-60x slower than OpenBLAS).
MATMULS = r"""
import json, sys
import numpy as np
MODE, OUT = sys.argv[1], sys.argv[2]
if MODE == "use_fast_blas":
    from paper_personas.blas import use_fast_blas
    print(use_fast_blas(), file=sys.stderr)
import mlx.core as mx
rng = np.random.default_rng(0)
shapes = [(k, n) for k, n in ((576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152), (64, 128))]
out = {}
for m in (1, 7, 32):
    for k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out[f"{m}x{k}x{n}"] = np.array(mx.array(a) @ mx.array(b))
np.savez(OUT, **out)
print(json.dumps({"openblas": "libopenblas" in open("/proc/self/maps").read()}))
"""


def run_matmuls(mode: str, env: dict, out: Path) -> tuple[bool, dict]:
    """Whether OpenBLAS was in the child process, and the products it computed."""
    import numpy as np

    child = subprocess.run(
        [sys.executable, "-c", MATMULS, mode, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, "PYTHONPATH": str(ROOT), **env},
    )
    assert child.returncode == 0, f"{mode}: exit {child.returncode}\n{child.stderr[-2000:]}"
    with np.load(out) as products:
        return json.loads(child.stdout)["openblas"], dict(products)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mlx on Linux links the reference BLAS")
def test_llama_135m_matmuls_agree_with_the_reference_blas_through_both_ways_in(tmp_path):
    import numpy as np

    from paper_personas.blas import chosen, preload_env

    if chosen().library is None:
        pytest.skip(f"no OpenBLAS runs here: {chosen().description}")
    with_openblas, reference = run_matmuls("plain", {SWITCH: "reference"}, tmp_path / "reference.npz")
    assert not with_openblas
    for mode, env in (("preload", preload_env()), ("use_fast_blas", {})):
        with_openblas, products = run_matmuls(mode, env, tmp_path / f"{mode}.npz")
        assert with_openblas, f"{mode}: OpenBLAS is not in the process"
        assert products.keys() == reference.keys()
        for name, want in reference.items():
            got = products[name]
            # float32 sums of up to 1,536 products in another order: agree to a few units in the 6th digit
            assert np.allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max()), (mode, name)


def test_the_switch_makes_every_process_run_the_reference_blas():
    env = {**os.environ, SWITCH: "reference", "PYTHONPATH": str(ROOT)}
    which = subprocess.run(
        [sys.executable, "-m", "paper_personas.blas", "--which"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    preload = subprocess.run(
        [sys.executable, "-m", "paper_personas.blas"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert which.stdout.strip() == f"{REFERENCE}, as {SWITCH}=reference asks"
    assert preload.stdout.strip() == ""  # nothing for the Makefile to preload


def test_the_wheel_library_is_a_runtime_dispatching_build_with_many_threads():
    from paper_personas.blas import probe

    library = wheel_library()
    if library is None:
        pytest.skip("no ngsolve-openblas here (not Linux x86-64)")
    build = probe(library)
    if isinstance(build, str):
        pytest.skip(f"the wheel's OpenBLAS cannot load here: {build}")
    assert build.dynamic, build.config
    assert build.max_threads is not None and build.max_threads > 32, build.config

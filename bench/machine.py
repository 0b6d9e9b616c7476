"""The machine a bench ran on, as lscpu names it, printed beside every figure: the next machine may have another
CPU (AMD or Intel, with or without AVX-512), and a figure without its CPU cannot be compared."""

import os
import platform
import subprocess


def cpu() -> str:
    """'Intel(R) Xeon(R) Processor (family 6, model 167; AVX-512: yes; 2 cores)', or what can be had."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores; lscpu not found)"
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    avx512 = "yes" if "avx512f" in fields.get("Flags", "").split() else "no"
    return (
        f"{fields.get('Model name', platform.machine())} (family {fields.get('CPU family', '?')}, model "
        f"{fields.get('Model', '?')}; AVX-512: {avx512}; {os.cpu_count()} cores)"
    )

"""llama.cpp itself runs what `make export` writes: build llama.cpp from the source the llama-cpp-python sdist
vendors (no prebuilt wheel for this platform), run the exported GGUF greedily on three held-out sections, and
count in tokens how far its answers agree with base + adapter in mlx_lm.

    $ python bench/llama_cpp_bench.py [--adapters .bench/teacher/adapters] [--persona eli5] [--tokens 64]

Builds in .bench/llama-cpp/ once (several minutes on 2 cores; `pip download` fetches the sdist from PyPI), exports
the persona with paper_personas.export into .bench/llama-cpp/exports/, then for each section renders the prompt
training used (the Modelfile's template: chat template + the persona's prefix) and generates with llama-simple
(greedy sampler) and with mlx_lm (greedy). The GGUF is fp16 and mlx runs float32, so the answers may part after a
near tie; the report says where. Prints a markdown table and the commands it ran.
"""

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from machine import cpu  # noqa: E402
from real_model import CACHE, build_smollm2  # noqa: E402

from paper_personas.blas import use_fast_blas  # noqa: E402
from paper_personas.personas import load_personas  # noqa: E402

WORK = ROOT / ".bench" / "llama-cpp"
SDIST = "llama-cpp-python==0.3.36"


def sh(cmd: list, log: list[str], cwd: Path | None = None) -> str:
    started = time.monotonic()
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    log.append(f"$ {' '.join(str(c) for c in cmd)}  ({time.monotonic() - started:,.0f} s)")
    if result.returncode != 0:
        sys.exit(f"error: {cmd[0]} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def build_llama_cpp(log: list[str]) -> Path:
    """llama-simple from the sdist's vendored llama.cpp; built once."""
    binary = WORK / "build" / "bin" / "llama-simple"
    if binary.exists():
        return binary
    WORK.mkdir(parents=True, exist_ok=True)
    sh([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", WORK], log)
    archive = next(WORK.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(WORK / "sdist", filter="data")
    source = next((WORK / "sdist").glob("llama_cpp_python-*/vendor/llama.cpp"))
    flags = ["-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    sh(["cmake", "-S", source, "-B", WORK / "build", *flags], log)
    sh(["cmake", "--build", WORK / "build", "--target", "llama-simple", "-j", "2"], log)
    return binary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=Path, default=ROOT / ".bench" / "teacher" / "adapters")
    parser.add_argument("--data", type=Path, default=ROOT / ".bench" / "teacher" / "data", help="held-out rows")
    parser.add_argument("--persona", default="eli5")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per section (default 64)")
    args = parser.parse_args()
    log: list[str] = []
    simple = build_llama_cpp(log)
    model = build_smollm2(CACHE)
    exports = WORK / "exports"
    sh([sys.executable, "-m", "paper_personas.export", "--adapters", args.adapters, "--out", exports,
        "--model", model, "--personas", args.persona], log, cwd=ROOT)  # fmt: skip
    use_fast_blas()
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    from paper_personas.export import render_template
    from paper_personas.models import PersonaModel, adapter_configs

    persona = next(p for p in load_personas() if p.name == args.persona)
    folder = next(p for p in args.data.glob(f"{args.persona}_*") if p.is_dir())
    held_out = folder / "test.jsonl" if (folder / "test.jsonl").exists() else folder / "valid.jsonl"
    rows = [json.loads(line) for line in held_out.read_text().splitlines()]
    rows = sorted(rows, key=lambda r: len(r["messages"][0]["content"]))[:3]  # the three shortest: quick to run
    template = (exports / args.persona / "Modelfile").read_text().split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    adapted = PersonaModel(str(model), args.adapters, adapter_configs(args.adapters, [args.persona], str(model)))
    adapted.use(args.persona)
    tokenizer = adapted.tokenizer
    table = ["| section | mlx tokens | llama.cpp agrees for | first difference |", "|---|---:|---:|---|"]
    for row in rows:
        section = row["messages"][0]["content"][len(persona.user_prefix) :]
        prompt = render_template(template, section)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        sampler = make_sampler(0.0)
        mlx_ids = [r.token for r in mlx_lm.stream_generate(adapted.model, tokenizer, ids, args.tokens, sampler=sampler)]
        mlx_ids = [t for t in mlx_ids if t not in tokenizer.eos_token_ids]
        out = sh([simple, "-m", exports / args.persona / "model.gguf", "-n", args.tokens, prompt], log)
        generated = out.split("<|im_start|>assistant\n")[-1] if "<|im_start|>assistant\n" in out else out[len(prompt) :]
        cpp_ids = tokenizer.encode(generated.rstrip("\n"), add_special_tokens=False)
        agree = next((i for i, (a, b) in enumerate(zip(mlx_ids, cpp_ids, strict=False)) if a != b), None)
        agree = min(len(mlx_ids), len(cpp_ids)) if agree is None else agree
        where = "none" if agree == len(mlx_ids) else f"token {agree}: {tokenizer.decode(mlx_ids[agree : agree + 3])!r}"
        table.append(f"| {row['meta']['key']} | {len(mlx_ids)} | {agree} | {where} |")
    print(f"CPU: {cpu()}\n")
    print("\n".join(table))
    print("\nCommands:\n" + "\n".join(f"    {line}" for line in log))
    return 0


if __name__ == "__main__":
    sys.exit(main())

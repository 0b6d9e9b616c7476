"""Token budgets the steps must agree on, Llama 3.2's chat-template margin, and tokenizers: a tiktoken encoding
by name, or a local model folder's or Hugging Face id's tokenizer as mlx_lm loads it."""

from pathlib import Path

from paper_personas.blas import use_fast_blas
from paper_personas.cli import InputError

# ----------------------------------------------------------------------------- settings every step shares

MAX_TOKENS = 2048  # the trainer's max_seq_length: step 2 sizes chunks for it, step 3 trims to it, 4 and 5 read it
# Llama 3.2's chat template around the message texts, measured with its real tokenizer
# (bench/template_margin.py): 26 tokens once (BOS and the default system header with its dates),
# plus 5 per message (<|start_header_id|>, role, <|end_header_id|>, "\n\n", <|eot_id|>).
TEMPLATE_BASE_TOKENS = 26
TEMPLATE_TOKENS_PER_MESSAGE = 5


# trim_jsonl.py ends a cut user text with this; split_data.py ignores it when it compares sections.
TRUNCATION_MARK = "\n\n[…truncated]"


def template_tokens(messages: int) -> int:
    return TEMPLATE_BASE_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE * messages


# ----------------------------------------------------------------------------- tokenizers


def load_tiktoken(name: str):
    """Load a tiktoken encoding, or raise InputError that explains the offline case and the local alternative."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        raise InputError(f"unknown tiktoken encoding {name!r} ({e}); try cl100k_base or o200k_base") from None
    except Exception as e:  # requests' ConnectionError and friends: tiktoken downloads encodings on first use
        raise InputError(
            f"could not load tiktoken encoding {name!r}: it is downloaded on first use and that failed "
            f"({type(e).__name__}). Without network access, pass --tokenizer PATH to a local model folder "
            "(any folder with tokenizer.json), or set TIKTOKEN_CACHE_DIR to a folder that already holds it."
        ) from None


def load_tokenizer(spec: str):
    """A tiktoken.Encoding for an encoding name, else the tokenizer (with chat template) of a local model folder
    or Hugging Face model id, loaded as mlx_lm loads it. Raises InputError saying what to pass instead."""
    import tiktoken

    if spec in tiktoken.list_encoding_names():
        return load_tiktoken(spec)
    use_fast_blas()  # mlx_lm imports mlx: the BLAS must be loaded first
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    try:
        return mlx_load_tokenizer(Path(spec) if Path(spec).exists() else spec)
    except Exception as e:
        raise InputError(
            f"could not load tokenizer {spec!r} ({type(e).__name__}: {e}). Pass a tiktoken encoding "
            f"({', '.join(tiktoken.list_encoding_names())}), a local model folder, or a Hugging Face model id"
        ) from None


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Token counts of plain texts (no special tokens) for either kind of tokenizer load_tokenizer returns."""
    if hasattr(tokenizer, "encode_ordinary_batch"):
        return [len(t) for t in tokenizer.encode_ordinary_batch(texts)]
    return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]

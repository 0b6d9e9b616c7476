"""Token budgets the steps must agree on, Llama 3.2's chat-template margin, and tokenizers: a tiktoken encoding
by name, or a local model folder's or Hugging Face id's tokenizer as mlx_lm loads it."""

import re
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


# ----------------------------------------------------------------------------- counting whole conversations (step 3)


# Llama 3's control tokens: the estimate mode stands for Llama 3.2, whose tokenizer is not loaded then.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
)
LLAMA3_RESERVED = r"<\|reserved_special_token_\d+\|>"


def special_token_finder(tokens: set[str], extra_pattern: str | None = None):
    """A function returning the first special token string in a text, or None.

    A text containing one is read by the tokenizer as a control token (a literal "<|begin_of_text|>" in a prompt
    starts a new conversation mid-row), so such a row is invalid. A substring test on the tokens' first two
    characters skips the regex for the rows that contain none, which is nearly all of them."""
    alternatives = [re.escape(t) for t in sorted(tokens, key=len, reverse=True)] + [extra_pattern or "(?!)"]
    pattern = re.compile("|".join(alternatives))
    openings = {t[:2] for t in tokens} | ({"<|"} if extra_pattern else set())

    def find(text: str) -> str | None:
        if not any(opening in text for opening in openings):
            return None
        match = pattern.search(text)
        return match[0] if match else None

    return find


class TiktokenCounter:
    """Fast estimate: message texts encoded in batches, plus the chat template's fixed overhead."""

    def __init__(self, encoding):
        self.encoding = encoding
        self.name = f"tiktoken:{encoding.name}"
        self.find_special = special_token_finder(
            set(encoding.special_tokens_set) | set(LLAMA3_SPECIAL_TOKENS), LLAMA3_RESERVED
        )

    def count_text(self, texts: list[str]) -> list[int]:
        return count_tokens(self.encoding, texts)

    def count(self, rows: list[dict]) -> list[int]:
        texts = [m["content"] for row in rows for m in row["messages"]]
        lengths = iter(self.count_text(texts))
        counts = []
        for row in rows:
            text_tokens = sum(next(lengths) for _ in row["messages"])
            counts.append(text_tokens + template_tokens(len(row["messages"])))
        return counts


class ChatTemplateCounter:
    """Exact count: the model's own tokenizer and chat template, as mlx_lm's ChatDataset applies them."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials = {t.content for t in decoder.values() if getattr(t, "special", False)}
        self.find_special = special_token_finder(specials | set(getattr(tokenizer, "all_special_tokens", [])))

    def count_text(self, texts: list[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def count(self, rows: list[dict]) -> list[int]:
        if any(row.get("tools") for row in rows):  # tools differ per row, and the batch call takes one set
            template = self.tokenizer.apply_chat_template
            return [len(template(row["messages"], tools=row.get("tools"), return_dict=False)) for row in rows]
        # Render the whole batch, then encode it in one call: the same ids apply_chat_template(tokenize=True)
        # gives row by row (it renders, then encodes without adding special tokens), 1.6x faster.
        texts = self.tokenizer.apply_chat_template([row["messages"] for row in rows], tokenize=False)
        # mlx_lm's TokenizerWrapper forwards attributes but is not callable itself.
        encode = getattr(self.tokenizer, "_tokenizer", self.tokenizer)
        return [len(ids) for ids in encode(texts, add_special_tokens=False)["input_ids"]]


def load_counter(spec: str):
    """A tiktoken encoding name gives the estimate; a local folder or Hugging Face id gives the exact count."""
    tokenizer = load_tokenizer(spec)
    if hasattr(tokenizer, "encode_ordinary_batch"):
        return TiktokenCounter(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"tokenizer {spec!r} has no chat template; mlx_lm needs one to train on chat rows")
    return ChatTemplateCounter(tokenizer, spec)

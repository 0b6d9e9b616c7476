"""Step 3's work on rows, pure but for reading a file: what makes a row trainable, and making it fit the token
budget (drop it, or cut its user text at a paragraph or sentence and count again), with every drop counted by
reason. The token counters are in tokens.py."""

import re
from pathlib import Path

from paper_personas.cli import InputError
from paper_personas.files import iter_jsonl, write_jsonl
from paper_personas.personas import section_text
from paper_personas.quality import contents_page
from paper_personas.tokens import TRUNCATION_MARK

ROLES = {"system", "user", "assistant"}
BATCH_ROWS = 1024
MIN_USER_TOKENS = 64  # a prompt cut shorter than this carries too little paper to be worth training on


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def row_problem(row: dict, find_special=None) -> str | None:
    """Why a row cannot be trained on, or None. Mirrors what mlx_lm's ChatDataset needs."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing 'messages': expected a non-empty list of {role, content}"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] is not an object"
        if message.get("role") not in ROLES:
            return f"messages[{i}] has role {message.get('role')!r}; expected one of {sorted(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content is {type(message.get('content')).__name__}, not text"
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "empty assistant answer: the last message must be a non-empty assistant reply"
    if not any(m["role"] == "user" for m in messages):
        return "no user message"
    for i, message in enumerate(messages):
        token = find_special(message["content"]) if find_special else None
        if token:
            return (
                f"special_token: messages[{i}] contains {token!r}, which the tokenizer reads as a control token, "
                "not text: a literal <|begin_of_text|> starts a new conversation mid-row"
            )
    return None


def read_rows(path: Path, skip_invalid: bool, dropped: dict, find_special=None) -> list[dict]:
    """All valid rows of a file; a bad row raises InputError (or is counted by reason, with --skip-invalid)."""
    rows = []
    for lineno, row, problem in iter_jsonl(path):
        problem = problem or row_problem(row, find_special)
        if problem is None:
            rows.append(row)
        elif skip_invalid:
            reason = "special_token" if problem.startswith("special_token") else "invalid"
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            raise InputError(f"{path}:{lineno}: {problem}. Fix the row, or pass --skip-invalid to drop it")
    return rows


def cut_points(text: str) -> list[int]:
    """Offsets where text may be cut, paragraph or sentence ends, last first: the first that fits keeps the most."""
    paragraphs = {m.start() for m in re.finditer(r"\n\s*\n", text)}
    sentences = {m.end() for m in re.finditer(r"[.!?][\"')\]]?\s", text)}
    return sorted(paragraphs | sentences, reverse=True)


def truncate_row(row: dict, counter, max_tokens: int) -> tuple[dict, int, float] | None:
    """Cut the last user message so the row fits max_tokens: the cut row, its re-checked token count and the
    share of the user text's characters kept; None if no boundary leaves enough of it.

    Cuts happen on the text itself, never on decoded tokens, so no special token can leak into the prompt.
    """
    messages = row["messages"]
    user_index = max(i for i, m in enumerate(messages) if m["role"] == "user")
    text = messages[user_index]["content"]

    def with_user(content: str) -> dict:
        new = [dict(m) for m in messages]
        new[user_index]["content"] = content
        return {**row, "messages": new}

    # Estimate the cut from the token surplus, then walk back one boundary at a time until it fits.
    surplus = counter.count([row])[0] - max_tokens
    keep_chars = int(len(text) * (1 - surplus / max(1, counter.count_text([text])[0]))) - len(TRUNCATION_MARK)
    for point in (p for p in cut_points(text) if p <= keep_chars):
        head = text[:point].rstrip()
        if counter.count_text([head])[0] < MIN_USER_TOKENS:
            return None
        candidate = with_user(head + TRUNCATION_MARK)
        length = counter.count([candidate])[0]
        if length <= max_tokens:
            return candidate, length, len(head) / len(text)
    return None


def trim_rows(
    rows: list[dict],
    counter,
    budget: int,
    overflow: str,
    min_kept: float,
    dropped: dict,
    lengths: list[int],
    personas=(),
):
    """Yield the rows that fit `budget` tokens (cut when overflow is "truncate"), counting drops by reason and
    recording kept lengths.

    A truncated row keeps its answer, which was written about the whole section: below `min_kept` of the user
    text the answer no longer matches its prompt, and the row is dropped as truncated_too_much. A row about a
    table of contents is dropped as table_of_contents: its answer explains a paper the teacher never saw."""
    rows = [row for row in rows if not about_contents_page(row, personas, dropped)]
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        for row, length in zip(batch, counter.count(batch), strict=True):
            if length > budget and overflow == "truncate":
                truncated = truncate_row(row, counter, budget)
                if truncated is not None and truncated[2] < min_kept:
                    dropped["truncated_too_much"] = dropped.get("truncated_too_much", 0) + 1
                    continue
                if truncated is not None:
                    row, length, _ = truncated
                    dropped["truncated (kept)"] = dropped.get("truncated (kept)", 0) + 1
            if length > budget:
                dropped["too_long"] = dropped.get("too_long", 0) + 1
                continue
            lengths.append(length)
            yield row


def about_contents_page(row: dict, personas, dropped: dict) -> bool:
    user = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "user"), "")
    if contents_page(section_text(user, personas)):
        dropped["table_of_contents"] = dropped.get("table_of_contents", 0) + 1
        return True
    return False


def trim_file(
    path: Path, out: Path, counter, budget: int, overflow: str, min_kept: float, skip_invalid: bool, personas=()
) -> tuple[str, int]:
    """Trim one file into `out`, atomically; its summary line (kept, drops by reason, token percentiles) and the
    number of rows kept."""
    dropped: dict[str, int] = {}
    lengths: list[int] = []
    rows = read_rows(path, skip_invalid, dropped, counter.find_special)
    kept = write_jsonl(out, trim_rows(rows, counter, budget, overflow, min_kept, dropped, lengths, personas))
    lengths.sort()
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items())) or "none dropped"
    summary = (
        f"{path}: {kept:,} kept ({reasons}); tokens p50 {percentile(lengths, 50):,} "
        f"p95 {percentile(lengths, 95):,} max {lengths[-1] if lengths else 0:,} -> {out}"
    )
    return summary, kept

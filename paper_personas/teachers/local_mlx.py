"""A local model in this process through mlx_lm (--teacher mlx): no key, no server. Every unit in flight is
decoded together by BatchGenerator, each sequence constrained to the answer schema by an llguidance grammar."""

import json
from dataclasses import dataclass

from paper_personas.blas import use_fast_blas
from paper_personas.models import local_path_problem
from paper_personas.teachers.base import MIN_STRING_CHARS, FatalAPIError, Reply, Teacher, TeacherOptions, Usage

# ----------------------------------------------------------------------------- mlx: a local model, no key


# A JSON string's content without escapes: no quote, no backslash, no control character, and not opening with a
# space. Rust regex syntax, which llguidance's lexer uses.
STRING_REGEX = r'/[^"\\\x00-\x20][^"\\\x00-\x1f]{%d,}/'


def lark_grammar(schema: dict, string_max_tokens: int, min_chars: int = MIN_STRING_CHARS) -> str:
    """An llguidance Lark grammar for the JSON a pydantic schema describes (objects of strings and string enums,
    as the answer and judge schemas are): keys in schema order, no whitespace between tokens (a weak model
    would emit whitespace until max_tokens), no extra keys, strings of at least `min_chars` characters starting
    with a non-space and of at most `string_max_tokens` tokens, with no escapes. The token caps add up to a bound
    on the whole answer, so it always closes before --max-output-tokens."""
    definitions = schema.get("$defs", {})
    rules: list[str] = []

    def literal(value: str) -> str:
        return json.dumps(value)  # a Lark string literal; JSON's escapes are Lark's

    def rule_for(node: dict) -> str:
        if "$ref" in node:
            node = definitions[node["$ref"].split("/")[-1]]
        slot = len(rules)
        rules.append("")  # reserve the slot, so nested rules get later numbers
        if "enum" in node:
            body = " | ".join(literal(json.dumps(value)) for value in node["enum"])
        elif node.get("type") == "object":
            members = [
                f"{literal(json.dumps(key) + ':')} {rule_for(value)}" for key, value in node["properties"].items()
            ]
            body = " ".join([literal("{"), f" {literal(',')} ".join(members), literal("}")])
        elif node.get("type") == "string":
            text = f"t{slot}"
            rules.append(f"{text}[max_tokens={string_max_tokens}]: {STRING_REGEX % (min_chars - 1)}")
            body = " ".join([literal('"'), text, literal('"')])
        else:
            raise ValueError(f"the mlx teacher cannot constrain a {node.get('type')!r} field yet")
        rules[slot] = f"r{slot}: {body}"
        return f"r{slot}"

    top = rule_for(schema)
    return "\n".join([f"start: {top}", *rules])


def string_fields(schema: dict) -> int:
    """Free-text fields in the schema: what the output budget is shared among."""
    definitions = schema.get("$defs", {})

    def count(node: dict) -> int:
        if "$ref" in node:
            node = definitions[node["$ref"].split("/")[-1]]
        if "enum" in node:
            return 0
        if node.get("type") == "object":
            return sum(count(value) for value in node["properties"].values())
        return 1

    return count(schema)


class SchemaConstraint:
    """An mlx_lm logits processor for one sequence: llguidance's matcher follows the tokens generated so far and
    masks every token the grammar forbids next. One per sequence, since it holds that sequence's parse state.

    llguidance's own llguidance.mlx needs Metal, so the mask is llguidance.numpy's bitmask applied with mx.where,
    which runs on every mlx backend."""

    def __init__(self, tokenizer, grammar: str, n_vocab: int, eos_ids: list[int]):
        import llguidance
        import llguidance.numpy

        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"llguidance rejected the grammar: {self.matcher.get_error()}")
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, n_vocab)
        self.eos_ids = eos_ids
        self.seen = None  # tokens of the context already given to the matcher

    def __call__(self, tokens, logits):
        import llguidance.numpy
        import mlx.core as mx
        import numpy as np

        if self.seen is None:
            self.seen = len(tokens)  # the first call sees the prompt only
        elif len(tokens) > self.seen:
            self.matcher.consume_tokens([int(t) for t in np.array(tokens[self.seen :])])
            self.seen = len(tokens)
        vocab = logits.shape[-1]
        if self.matcher.is_error():  # cannot happen with the mask applied; end the sequence rather than loop
            allowed = np.zeros(vocab, dtype=bool)
            allowed[self.eos_ids] = True
        else:
            llguidance.numpy.fill_next_token_bitmask(self.matcher, self.bitmask)
            allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")[:vocab].astype(bool)
        return mx.where(mx.array(allowed), logits, -mx.inf)


@dataclass
class Sequence:
    future: object
    prompt_tokens: int
    tokens: list


MODEL_HINT = "--model must be an mlx_lm model folder or Hugging Face id"


class MLXTeacher(Teacher):
    """A local model in this process: mlx_lm's BatchGenerator decodes every unit in flight together (up to
    --concurrency), each constrained to the schema by its own SchemaConstraint. Decoding steps run on the
    event loop between awaits, so sdg.py's machinery above is unchanged."""

    name = "mlx"
    remote = False
    fix_hint = "Fix the cause above and rerun; finished rows are kept."

    def __init__(self, options: TeacherOptions):
        super().__init__(options)
        self.model = self.tokenizer = self.generator = None
        self.running: dict[int, Sequence] = {}
        self.driver = None
        self.grammars: dict[object, str] = {}
        self.generated, self.started = 0, None  # tokens decoded, and since when: the progress bar's tokens/s

    def problem(self) -> str | None:
        if not self.options.model:
            flags = self.options.flags
            return f"{flags.teacher} mlx needs {flags.model}: an mlx_lm model folder or Hugging Face id"
        return None

    def prepare(self) -> None:
        """Load the model and its tokenizer for llguidance, once, before the first unit."""
        if self.model is not None:
            return
        use_fast_blas()  # before mlx is imported
        import llguidance.hf
        import mlx_lm
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        model = self.options.model
        if local_path_problem(model):
            raise FatalAPIError(f"cannot load {model!r} with mlx_lm: {local_path_problem(model)}; {MODEL_HINT}")
        try:
            self.model, self.tokenizer = mlx_lm.load(model)
        except Exception as e:  # no network for a hub id, an unsupported architecture, a broken folder
            raise FatalAPIError(f"cannot load {model!r} with mlx_lm: {type(e).__name__}: {e}; {MODEL_HINT}") from e
        hf_tokenizer = self.tokenizer._tokenizer
        # The mask must cover every logit: the model's output layer can be larger than the tokenizer's vocabulary.
        self.eos_ids = sorted(self.tokenizer.eos_token_ids)
        self.n_vocab = max(len(hf_tokenizer), self.model_vocab())
        try:
            self.lltokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=self.n_vocab, eos_token=self.eos_ids)
        except ValueError as e:  # llguidance reads the Rust tokenizer of a "fast" Hugging Face tokenizer only
            raise FatalAPIError(f"{self.options.model}: llguidance cannot use its tokenizer ({e})") from e
        self.generator = BatchGenerator(
            self.model,
            max_tokens=self.options.max_output_tokens,
            stop_tokens=[[t] for t in self.eos_ids],
            sampler=make_sampler(temp=self.options.temperature),
            completion_batch_size=self.options.concurrency,
            prefill_batch_size=min(8, self.options.concurrency),
        )

    def model_vocab(self) -> int:
        args = getattr(self.model, "args", None)
        return int(getattr(args, "vocab_size", 0) or 0)

    def grammar(self, schema) -> str:
        """The schema's grammar, built and converted for llguidance once per schema."""
        from llguidance import LLMatcher

        if schema not in self.grammars:
            json_schema = schema.model_json_schema()
            fields = string_fields(json_schema)
            skeleton = len(self.tokenizer.encode(json.dumps(json_schema.get("properties", {})))) + 16
            per_field = (self.options.max_output_tokens - skeleton) // max(1, fields)
            if fields and per_field < MIN_STRING_CHARS:  # a token is a character at least, so 40 always fit
                raise FatalAPIError(
                    f"--max-output-tokens {self.options.max_output_tokens} leaves {per_field} tokens for each of "
                    f"{fields} answer fields; give at least {skeleton + fields * MIN_STRING_CHARS}"
                )
            self.grammars[schema] = LLMatcher.grammar_from_lark(lark_grammar(json_schema, per_field))
        return self.grammars[schema]

    async def ask(self, system: str, text: str, schema) -> Reply:
        import asyncio

        self.prepare()
        prompt = self.prompt(system, text)
        constraint = SchemaConstraint(self.lltokenizer, self.grammar(schema), self.n_vocab, self.eos_ids)
        (uid,) = self.generator.insert([prompt], logits_processors=[[constraint]])
        sequence = Sequence(asyncio.get_running_loop().create_future(), len(prompt), [])
        self.running[uid] = sequence
        if self.driver is None or self.driver.done():
            self.driver = asyncio.create_task(self.drive())
        try:
            finish = await sequence.future
        except asyncio.CancelledError:
            self.generator.remove([uid])
            self.running.pop(uid, None)
            raise
        usage = Usage(input=sequence.prompt_tokens, output=len(sequence.tokens))
        return Reply(self.tokenizer.decode(sequence.tokens), finish, usage, model_version=self.options.model)

    def prompt(self, system: str, text: str) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception:  # a chat template without a system role (Gemma's, for one): the instructions lead the turn
            merged = [{"role": "user", "content": f"{system}\n\n{text}"}]
            return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True)

    async def drive(self) -> None:
        """Step the batch while any sequence runs; each step decodes one token of every sequence in flight. An
        error in a step fails every sequence waiting on it, so no caller waits for ever."""

        try:
            await self.decode()
        except Exception as e:
            for sequence in self.running.values():
                if not sequence.future.done():
                    sequence.future.set_exception(e)
            self.running.clear()

    def activity(self) -> dict[str, str]:
        import time

        if not self.running and not self.generated:
            return {}
        self.started = self.started or time.monotonic()
        seconds = max(time.monotonic() - self.started, 1e-9)
        return {"in_flight": str(len(self.running)), "tok/s": f"{self.generated / seconds:.1f}"}

    async def decode(self) -> None:
        import asyncio

        while self.running:
            for response in self.generator.next_generated():
                sequence = self.running.get(response.uid)
                if sequence is None:
                    continue
                self.generated += 1
                if response.finish_reason != "stop":  # the stop token itself is not part of the answer
                    sequence.tokens.append(response.token)
                if response.finish_reason:
                    del self.running[response.uid]
                    if not sequence.future.done():
                        sequence.future.set_result("STOP" if response.finish_reason == "stop" else "MAX_TOKENS")
            await asyncio.sleep(0)  # let new units join the batch

    async def aclose(self) -> None:
        if self.generator is not None:
            self.generator.close()

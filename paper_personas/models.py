"""Loading the trained model: the base model once, each persona's LoRA adapter swapped in, and generation.

analyze.py and evaluate.py both use this, so an answer in a report and an answer in an evaluation come from the
same code path.
"""

import json
import logging
from pathlib import Path

from paper_personas.blas import use_fast_blas
from paper_personas.cli import InputError
from paper_personas.files import read_json

log = logging.getLogger("models")

REPO_CONFIG = Path(__file__).resolve().parent.parent / "adapter_config.json"
ADAPTER_FILE = "adapters.safetensors"  # what mlx_lm loads from an adapter folder; make train keeps the best there
LORA_KEYS = ("fine_tune_type", "num_layers", "lora_parameters")


def default_model(config: Path = REPO_CONFIG) -> str:
    """The base model adapter_config.json trains, so adapters and analysis agree by default.

    Called when a script runs, never while its parser is built, so --help works without the file."""
    model = read_json(config, "adapter_config.json", "restore it from git, or pass --model").get("model")
    if not model:
        raise InputError(f'{config} names no "model"; add one, or pass --model')
    return model


def default_model_help(config: Path = REPO_CONFIG) -> str:
    """--model's help text, naming the default when adapter_config.json can be read (--help works without it)."""
    try:
        return f"base model (default: {default_model(config)}, the model adapter_config.json trains)"
    except InputError:
        return "base model (default: the model adapter_config.json trains)"


def local_path_problem(model: str) -> str | None:
    """Why `model`, written as a local path, is no model folder; None for a folder with config.json or a name
    that is not a path (a Hugging Face id, owner/name)."""
    path = Path(model).expanduser()
    if path.exists():
        return None if (path / "config.json").is_file() else f"{model} has no config.json: not a model folder"
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        return f"{model}: no such folder, and not a Hugging Face id (owner/name)"
    return None


def model_identity(model: str) -> str:
    """One spelling per model: a local folder as its resolved path (given relatively, absolutely or through a
    link), a hub id as it is."""
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.exists() else model


def same_model(trained_on: str, model: str) -> bool:
    """Whether two model names are one model (mlx_lm.lora records the path as it was given; a relative one is read
    from here)."""
    return trained_on == model or model_identity(trained_on) == model_identity(model)


def adapter_configs(adapters: Path, personas: list[str], model: str) -> dict[str, dict]:
    """Each persona's adapter config, checked: present, trained on `model`, and sharing one LoRA shape."""
    configs = {}
    for persona in personas:
        folder = adapters / persona
        if not (folder / ADAPTER_FILE).exists() or not (folder / "adapter_config.json").exists():
            raise InputError(
                f"no trained adapter in {folder}/: train it with `make train`, or point --adapters "
                "at the folder that holds one subfolder per persona"
            )
        config = json.loads((folder / "adapter_config.json").read_text())
        if not same_model(str(config.get("model")), str(model)):
            raise InputError(
                f"{folder} was trained on {config.get('model')!r}, not {model!r}: pass --model "
                f"{config.get('model')}, or retrain the adapter"
            )
        configs[persona] = config
    shapes = {json.dumps({k: c.get(k) for k in LORA_KEYS}, sort_keys=True) for c in configs.values()}
    if len(shapes) > 1:
        raise InputError(f"the adapters differ in {', '.join(LORA_KEYS)}; retrain them with one adapter_config.json")
    return configs


def generate(model, tokenizer, messages: list[dict], max_tokens: int, temperature: float) -> tuple[str, int]:
    """One chat-template answer with mlx_lm; returns the text and the number of tokens generated."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    text, tokens = [], 0
    for response in stream_generate(
        model, tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(temp=temperature)
    ):
        text.append(response.text)
        # its count includes the stop token, which is not part of the answer
        tokens = response.generation_tokens - (response.finish_reason == "stop")
    return "".join(text).strip(), tokens


def generate_batch(
    model,
    tokenizer,
    conversations: list[list[dict]],
    max_tokens: int,
    batch_size: int = 8,
    temperature: float = 0.0,
    on_answer=None,
) -> list[tuple[str, int]]:
    """Chat-template answers to many conversations, decoded together by mlx_lm's BatchGenerator (one decoding
    step advances every sequence in flight: on a CPU, several answers for little more than the price of one).
    Returns (text, tokens generated) per conversation, in order, as generate() would, and at temperature 0 the
    same answers (tests/test_real_model.py); on_answer(i, text, tokens) is called as each one finishes, for a
    journal or a progress bar."""
    prompts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=False) for m in conversations]
    answers: list[tuple[str, int]] = [("", 0)] * len(prompts)

    def finished(i: int, ids: list[int]) -> None:
        answers[i] = tokenizer.decode(ids).strip(), len(ids)
        if on_answer is not None:
            on_answer(i, *answers[i])

    generate_token_ids(model, prompts, tokenizer.eos_token_ids, max_tokens, batch_size, temperature, finished)
    return answers


def generate_token_ids(
    model,
    prompts: list[list[int]],
    stop_ids,
    max_tokens: int,
    batch_size: int = 8,
    temperature: float = 0.0,
    on_finished=None,
) -> list[list[int]]:
    """The token ids generated after each prompt (token ids), decoded together by mlx_lm's BatchGenerator, the
    stop token left out; on_finished(i, ids) is called as each sequence ends."""
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    generator = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in stop_ids],
        sampler=make_sampler(temp=temperature),
        completion_batch_size=batch_size,
        prefill_batch_size=min(batch_size, 8),
    )
    try:
        uids = generator.insert(prompts) if prompts else []
        index = {uid: i for i, uid in enumerate(uids)}
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        done: set[int] = set()
        while len(done) < len(uids):
            for response in generator.next_generated():
                if response.finish_reason != "stop":  # the stop token is not part of the answer
                    tokens[response.uid].append(response.token)
                if response.finish_reason:
                    done.add(response.uid)
                    if on_finished is not None:
                        on_finished(index[response.uid], tokens[response.uid])
    finally:
        generator.close()
    return [tokens[uid] for uid in uids]


class PersonaModel:
    """One base model in memory; `use(persona)` swaps in that persona's LoRA weights.

    The LoRA layers are added on the first use(), so until then the model is the plain base model."""

    def __init__(self, model_path: str, adapters: Path, configs: dict[str, dict]):
        use_fast_blas()  # before mlx is imported
        import mlx_lm

        log.info("loading the base model %s, once for every persona", model_path)
        self.model, self.tokenizer = mlx_lm.load(model_path)
        self.model.eval()
        self.adapters = adapters
        self.lora = next(iter(configs.values()), None)  # adapter_configs() checked that all share one LoRA shape
        self.has_lora = False

    def use(self, persona: str) -> None:
        assert self.lora is not None, "PersonaModel.use needs the adapters' configs"
        if not self.has_lora:
            from mlx_lm.tuner.utils import linear_to_lora_layers

            linear_to_lora_layers(
                self.model,
                self.lora["num_layers"],
                self.lora["lora_parameters"],
                use_dora=self.lora.get("fine_tune_type") == "dora",
            )
            self.model.eval()
            self.has_lora = True
        self.model.load_weights(str(self.adapters / persona / ADAPTER_FILE), strict=False)

    def generate(self, messages: list[dict], max_tokens: int, temperature: float) -> tuple[str, int]:
        return generate(self.model, self.tokenizer, messages, max_tokens, temperature)

    def generate_batch(self, conversations, max_tokens: int, batch_size: int, temperature: float, on_answer=None):
        return generate_batch(
            self.model, self.tokenizer, conversations, max_tokens, batch_size, temperature, on_answer=on_answer
        )


def kept_step(adapter_folder: Path) -> str:
    """Which checkpoint an adapter folder holds, for the log: "step 120 of 200, val loss 2.257" from the best.json
    that `make train` writes beside it, or mlx_lm's last weights when there is none."""
    try:
        best = json.loads((adapter_folder / "best.json").read_text())
        return f"step {best['step']:,} of {best['last_step']:,}, val loss {best['val_loss']:.3f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "the last step (no best.json: trained without make train)"

"""Loading the trained model: the base model once, each persona's LoRA adapter swapped in, and generation.

analyze.py and evaluate.py both use this, so an answer in a report and an answer in an evaluation come from the
same code path.
"""

import json
from pathlib import Path

from paper_personas.blas import use_fast_blas
from paper_personas.cli import InputError
from paper_personas.files import read_json

REPO_CONFIG = Path(__file__).resolve().parent.parent / "adapter_config.json"
LORA_KEYS = ("fine_tune_type", "num_layers", "lora_parameters")


def default_model(config: Path = REPO_CONFIG) -> str:
    """The base model adapter_config.json trains, so adapters and analysis agree by default.

    Called when a script runs, never while its parser is built, so --help works without the file."""
    model = read_json(config, "adapter_config.json", "restore it from git, or pass --model").get("model")
    if not model:
        raise InputError(f'{config} names no "model"; add one, or pass --model')
    return model


def same_model(trained_on: str, model: str) -> bool:
    """Whether two model names are one model: a local folder given relatively or absolutely is the same folder
    (mlx_lm.lora records the path as it was given; a relative one is read from here); a hub id is an id."""
    if trained_on == model:
        return True
    mine, theirs = Path(model).expanduser(), Path(trained_on).expanduser()
    return mine.exists() and theirs.exists() and mine.resolve() == theirs.resolve()


def adapter_configs(adapters: Path, personas: list[str], model: str) -> dict[str, dict]:
    """Each persona's adapter config, checked: present, trained on `model`, and sharing one LoRA shape."""
    configs = {}
    for persona in personas:
        folder = adapters / persona
        if not (folder / "adapters.safetensors").exists() or not (folder / "adapter_config.json").exists():
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
        tokens = response.generation_tokens
    return "".join(text).strip(), tokens


class PersonaModel:
    """One base model in memory; `use(persona)` swaps in that persona's LoRA weights.

    The LoRA layers are added on the first use(), so until then the model is the plain base model."""

    def __init__(self, model_path: str, adapters: Path, configs: dict[str, dict]):
        use_fast_blas()  # before mlx is imported
        import mlx_lm

        self.model, self.tokenizer = mlx_lm.load(model_path)
        self.model.eval()
        self.adapters = adapters
        self.lora = next(iter(configs.values()))  # adapter_configs() checked that all share one LoRA shape
        self.has_lora = False

    def use(self, persona: str) -> None:
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
        self.model.load_weights(str(self.adapters / persona / "adapters.safetensors"), strict=False)

    def generate(self, messages: list[dict], max_tokens: int, temperature: float) -> tuple[str, int]:
        return generate(self.model, self.tokenizer, messages, max_tokens, temperature)

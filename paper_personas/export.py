"""Step 5's adapters as models people run elsewhere: for each persona, the base model with its adapter fused in
(as mlx_lm.fuse does), an fp16 GGUF for llama.cpp, Ollama and LM Studio, and an Ollama Modelfile that folds in the
persona's training prompt.

    $ make export                                                     # every persona, from adapters/
    $ python -m paper_personas.export [--adapters adapters] [--out exports] [--model MODEL] [--personas eli5]

Writes exports/{persona}/, whole or not at all (built in a temporary folder, then renamed into place):
  model.safetensors, config.json, tokenizer files   the fused model, for mlx_lm and Hugging Face tooling
  model.gguf      fp16, llama architecture (Llama 3.x, SmolLM2): written here with the `gguf` package that
                  llama.cpp's own converter is built on, since mlx_lm's exporter writes a SentencePiece tokenizer
                  for every model, and these use byte-level BPE (llama.cpp would split text into other tokens)
  Modelfile       `ollama create paper-eli5 -f exports/eli5/Modelfile`: the GGUF, the chat template with the
                  persona's prefix in the user turn (the adapter was trained on prefix + section), stop tokens,
                  greedy decoding as evaluate.py uses
  README.md       base model, adapter step and validation loss, and the commands for Ollama, llama.cpp, mlx_lm
  export.json     what the export was made from: a re-run exports again only a persona whose inputs changed
"""

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from paper_personas.blas import use_fast_blas
from paper_personas.cli import InputError, die, setup_logging, stop_on_sigterm
from paper_personas.files import current_umask, write_json
from paper_personas.models import ADAPTER_FILE, adapter_configs, default_model, kept_step
from paper_personas.personas import DEFAULT_FILE as DEFAULT_PERSONAS_FILE
from paper_personas.personas import Persona, load_personas, select

log = logging.getLogger("export")

GGUF_ARCHITECTURES = ("llama",)  # what write_gguf knows; Llama 3.x and SmolLM2 are llama architecture
PROMPT = "{{ .Prompt }}"  # Ollama's template variable for the user's message
# llama.cpp names a BPE pre-tokenizer by the hash of the token ids its tokenizer gives this text (its
# convert_hf_to_gguf.py, get_vocab_base_pre; MIT licence). Only the models this project trains are listed.
PRE_TOKENIZER_CHECK = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3, 3.1, 3.2
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
}
CONVERT_INSTEAD = (
    "run llama.cpp's convert_hf_to_gguf.py on the fused folder: python convert_hf_to_gguf.py {folder} --outtype f16"
)


# ----------------------------------------------------------------------------- GGUF (pure, on arrays)


def gguf_problem(config: dict, encode) -> str | None:
    """Why this model cannot be written as GGUF here, or None: its architecture, or a pre-tokenizer llama.cpp
    would not know by the name written here (`encode` is its tokenizer's)."""
    if config.get("model_type") not in GGUF_ARCHITECTURES:
        return f"GGUF export here knows the llama architecture (Llama 3.x, SmolLM2), not {config.get('model_type')!r}"
    if pre_tokenizer(encode) is None:
        return "its tokenizer's pre-tokenizer is none of those named here (Llama 3's, SmolLM's)"
    return None


def permute(weight, heads: int):
    """llama.cpp's order of a query or key projection's rows: its rotary embedding pairs the two halves of each
    head's rows interleaved, where Hugging Face's keeps them apart (convert_hf_to_gguf.py's LlamaModel.permute)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


LAYER_PARTS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(name: str) -> str:
    """A Hugging Face llama tensor name as GGUF names it: model.layers.3.mlp.up_proj.weight -> blk.3.ffn_up.weight."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if name in fixed:
        return fixed[name]
    if name == "lm_head.weight":
        return "output.weight"
    _, _, layer, *part, kind = name.split(".")
    return f"blk.{layer}.{LAYER_PARTS['.'.join(part)]}.{kind}"


def gguf_tensors(weights: dict, config: dict):
    """(GGUF name, numpy array) for every tensor, in llama.cpp's layout and types: matrices fp16, vectors fp32;
    Llama 3's rope_freqs where its config asks for llama3 rope scaling."""
    import numpy as np

    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    for name, array in weights.items():
        array = np.asarray(array, dtype=np.float32)
        if name.endswith("self_attn.q_proj.weight"):
            array = permute(array, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            array = permute(array, kv_heads)
        yield gguf_name(name), array.astype(np.float16 if array.ndim >= 2 else np.float32)
    if (factors := rope_factors(config)) is not None:
        yield "rope_freqs.weight", np.asarray(factors, dtype=np.float32)


def rope_factors(config: dict) -> list[float] | None:
    """Llama 3's per-frequency rope scaling, as llama.cpp's converter computes it (LlamaModel.generate_extra_tensors);
    None for a model without llama3 rope scaling (SmolLM2)."""
    scaling = config.get("rope_scaling") or {}
    if str(scaling.get("rope_type", scaling.get("type", ""))).lower() != "llama3":
        return None
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = config.get("rope_theta", 10000.0)
    factor, low, high = (
        scaling.get("factor", 8.0),
        scaling.get("low_freq_factor", 1.0),
        scaling.get("high_freq_factor", 4.0),
    )
    old_context = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for i in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (i / dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def pre_tokenizer(encode) -> str | None:
    """llama.cpp's name for a tokenizer's pre-tokenizer, from the token ids `encode` gives its check text."""
    return PRE_TOKENIZERS.get(hashlib.sha256(str(encode(PRE_TOKENIZER_CHECK)).encode()).hexdigest())


def vocabulary(hf_tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every token id's text and llama.cpp token type (control for special tokens, user-defined for other added
    ones, unused for ids the tokenizer does not have), as its converter lists them."""
    from gguf import TokenType

    by_id = {i: token for token, i in hf_tokenizer.get_vocab().items()}
    added = hf_tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def write_gguf(path: Path, weights: dict, config: dict, model_folder: Path, hf_tokenizer, name: str) -> None:
    """The fused model as fp16 GGUF: llama.cpp's hyperparameters, its byte-level BPE tokenizer (tokens, merges,
    pre-tokenizer, special ids) and the chat template, with the `gguf` package's writer."""
    import gguf

    pre = pre_tokenizer(hf_tokenizer.encode)
    assert pre is not None, "gguf_problem() is asked first"
    heads = config["num_attention_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    tokens, types = vocabulary(hf_tokenizer, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    for tensor_name, array in gguf_tensors(weights, config):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ----------------------------------------------------------------------------- the Ollama Modelfile


def ollama_template(tokenizer, persona: Persona) -> str:
    """The exact text training fed the model for one section, with Ollama's {{ .Prompt }} where the section goes:
    the model's chat template applied to the persona's training prompt (user_prefix + section)."""
    mark = "\x00SECTION\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": persona.user_message(mark)}], add_generation_prompt=True, tokenize=False
    )
    before, after = text.split(mark)
    if "{{" in before + after or '"""' in before + after:
        raise InputError('the chat template holds "{{" or \'"""\', which a Modelfile TEMPLATE cannot quote')
    return before + PROMPT + after


def render_template(template: str, prompt: str) -> str:
    """What Ollama sends the model for one message, for the one variable this project's templates use."""
    return template.replace(PROMPT, prompt)


def modelfile(template: str, stops: list[str], context: int) -> str:
    lines = ["FROM ./model.gguf", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {context}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- one persona


@dataclass(frozen=True)
class Settings:
    adapters: Path
    out: Path
    model: str | None  # None: adapter_config.json's
    personas_file: Path
    personas: list[str] | None
    force: bool
    verbose: bool


def identity(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def sources(settings: Settings, persona: Persona) -> dict:
    """What an export is made from; the same sources make the same export."""
    folder = settings.adapters / persona.name
    return {
        "base_model": settings.model,
        "adapter": identity(folder / ADAPTER_FILE),
        "adapter_config": identity(folder / "adapter_config.json"),
        "user_prefix": persona.user_prefix,
        "format": 1,  # raised when this module changes what it writes
    }


def stale_data(folder: Path) -> Path | None:
    """The training data an adapter is older than, or None (the data of its adapter_config.json)."""
    config = json.loads((folder / "adapter_config.json").read_text())
    data = Path(config.get("data") or "")
    newer = [p for p in (data / "train.jsonl", data / "valid.jsonl") if p.exists()]
    adapter_time = (folder / ADAPTER_FILE).stat().st_mtime
    return next((p for p in newer if p.stat().st_mtime > adapter_time), None)


def fuse(base: str, adapter_folder: Path):
    """Base + adapter as one model, as mlx_lm.fuse makes it (dequantized when the base is quantized)."""
    use_fast_blas()  # before mlx is imported
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load

    model, tokenizer, config = load(base, adapter_path=str(adapter_folder), return_config=True)
    fused = [(name, module.fuse(dequantize=True)) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if config.get("quantization") or config.get("quantization_config"):
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    return model, tokenizer, config


def export_persona(settings: Settings, persona: Persona, made_from: dict) -> str | None:
    """Write exports/{persona}/ whole, in a temporary folder renamed into place; the GGUF problem, or None."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import save

    folder = settings.adapters / persona.name
    model, tokenizer, config = fuse(settings.model, folder)
    settings.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=settings.out, prefix=f".{persona.name}.", suffix=".tmp"))
    try:
        try:
            save(work, settings.model, model, tokenizer, config, donate_model=False)
        except RuntimeError as e:  # mlx reports a failed write ("[write] Unable to write ...") as a RuntimeError
            raise OSError(str(e)) from None
        problem = gguf_problem(config, tokenizer._tokenizer.encode)
        if problem is None:
            weights = dict(tree_flatten(model.parameters()))
            write_gguf(work / "model.gguf", weights, config, work, tokenizer._tokenizer, f"paper-{persona.name}")
            stops = [tokenizer.decode([i]) for i in sorted(tokenizer.eos_token_ids)]
            context = max(2048, int(json.loads((folder / "adapter_config.json").read_text())["max_seq_length"]) + 512)
            (work / "Modelfile").write_text(modelfile(ollama_template(tokenizer, persona), stops, context))
        (work / "README.md").write_text(export_readme(settings, persona, folder, problem))
        write_json(work / "export.json", made_from)
        replace_folder(work, settings.out / persona.name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return problem


def replace_folder(new: Path, target: Path) -> None:
    """Put a finished folder where an older one may be: readers see the old one or the new one, never half."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
    os.chmod(target, 0o777 & ~current_umask())  # mkdtemp made it 0700


def export_readme(settings: Settings, persona: Persona, adapter_folder: Path, problem: str | None) -> str:
    name = f"paper-{persona.name}"
    out = settings.out / persona.name
    lines = [
        f"# {name}: the {persona.name} persona, fused",
        "",
        f"- Base model: `{settings.model}`",
        f"- Adapter: `{adapter_folder / ADAPTER_FILE}`, {kept_step(adapter_folder)}",
        f"- Trained on prompts that begin with {persona.user_prefix!r}: the Modelfile adds it; elsewhere, type it.",
        "",
        "## Run it",
        "",
        "mlx_lm, on the fused folder:",
        "",
        f"    mlx_lm.generate --model {out} --prompt {json.dumps(persona.user_prefix + '<section text>')}",
        "",
    ]
    if problem is None:
        lines += [
            "Ollama:",
            "",
            f"    ollama create {name} -f {out}/Modelfile",
            f"    ollama run {name}          # then paste a paper section",
            "",
            "llama.cpp (the GGUF carries the chat template; the persona's prefix is yours to type):",
            "",
            f"    llama-cli -m {out}/model.gguf -cnv --temp 0",
            "",
        ]
    else:
        lines += [f"No GGUF: {problem}. Instead, {CONVERT_INSTEAD.format(folder=out)}.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapters", type=Path, default=Path("adapters"), help="trained adapters (default: adapters)")
    p.add_argument("--out", type=Path, default=Path("exports"), help="where exports go (default: exports)")
    p.add_argument("--model", help="the adapters' base model (default: the model adapter_config.json trains)")
    p.add_argument("--personas-file", type=Path, default=DEFAULT_PERSONAS_FILE, help="(default: personas.toml)")
    p.add_argument("--personas", nargs="+", metavar="NAME", help="which personas (default: all with an adapter)")
    p.add_argument("--force", action="store_true", help="export again even where nothing changed")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings(**{k: getattr(args, k) for k in Settings.__dataclass_fields__})
    setup_logging(settings.verbose)
    stop_on_sigterm()
    started = time.monotonic()
    try:
        if not settings.adapters.is_dir():
            raise InputError(f"no {settings.adapters}/ folder of trained adapters: train first (make train)")
        personas = select(load_personas(settings.personas_file), settings.personas, settings.personas_file)
        settings = Settings(**{**vars(settings), "model": settings.model or default_model()})
        trained = [p for p in personas if (settings.adapters / p.name / ADAPTER_FILE).exists()]
        if not trained:
            raise InputError(f"{settings.adapters}/ holds no persona's adapter: train first (make train)")
        adapter_configs(settings.adapters, [p.name for p in trained], settings.model)  # complete, and on this base
    except InputError as e:
        die(str(e))
    outcome: dict[str, list[str]] = {"exported": [], "unchanged": [], "missing": [], "stale": [], "no_gguf": []}
    for persona in personas:
        if persona not in trained:
            log.error("%s: no adapter in %s/: train it (make train)", persona.name, settings.adapters / persona.name)
            outcome["missing"].append(persona.name)
    for persona in trained:
        folder = settings.adapters / persona.name
        if (older_than := stale_data(folder)) is not None:
            log.error(
                "%s: the adapter is older than %s: retrain it (make train), then export", persona.name, older_than
            )
            outcome["stale"].append(persona.name)
            continue
        made_from = sources(settings, persona)
        previous = settings.out / persona.name / "export.json"
        if not settings.force and previous.exists() and json.loads(previous.read_text()) == made_from:
            outcome["unchanged"].append(persona.name)
            continue
        try:
            problem = export_persona(settings, persona, made_from)
        except InputError as e:
            die(f"{persona.name}: {e}")
        except OSError as e:
            die(f"cannot write {settings.out}/ ({e.strerror or e}; is the disk full?): nothing partial was left")
        except KeyboardInterrupt:
            die(f"interrupted: {persona.name} was not exported (nothing partial was left); rerun to export the rest")
        outcome["exported"].append(persona.name)
        if problem:
            log.error(
                "%s: no GGUF: %s; %s", persona.name, problem, CONVERT_INSTEAD.format(folder=settings.out / persona.name)
            )
            outcome["no_gguf"].append(persona.name)
    counts = ", ".join(
        f"{len(names)} {kind}" + (f" ({' '.join(names)})" if names else "") for kind, names in outcome.items()
    )
    print(f"done: {counts} in {time.monotonic() - started:,.1f} s -> {settings.out}/")
    return 1 if outcome["missing"] or outcome["stale"] or outcome["no_gguf"] else 0


if __name__ == "__main__":
    sys.exit(main())

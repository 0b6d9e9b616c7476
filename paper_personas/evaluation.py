"""evaluate.py's settings and its results: each system's answers scored (metrics.py), summarised with intervals
(statistics.py), and the outputs made from them: eval.md's tables, eval.json, one chart per metric."""

from dataclasses import dataclass
from pathlib import Path

from paper_personas.metrics import METRICS, flagged, score_answers
from paper_personas.personas import Persona
from paper_personas.statistics import mean_ci, summarise, verdict


@dataclass(frozen=True)
class Settings:
    model: str | None  # None: adapter_config.json's
    adapters: Path
    data: Path
    personas_file: Path
    personas: list[str] | None  # None: all in the personas file
    systems: list[str]
    answers: list[Path]
    limit: int
    max_tokens: int
    max_seq_length: int
    batch_size: int
    seed: int
    out: Path
    judge: str | None  # a teacher name, or None: no judge
    judge_model: str | None  # None: the teacher's default
    base_url: str | None
    yes: bool
    verbose: bool


def evaluate_persona(persona: Persona, rows: list[dict], answers: dict, losses: dict, settings: Settings) -> dict:
    """Every system's scored answers for one persona, their summaries and what was flagged."""
    systems = {}
    for system, by_persona in answers.items():
        scored = score_answers(persona, rows, by_persona[persona.name], settings.max_tokens)
        for entry, loss in zip(scored, losses.get(system, {}).get(persona.name, [None] * len(scored)), strict=True):
            if loss is not None:
                entry["metrics"]["loss"] = loss
        counts: dict[str, int] = {}
        for entry in scored:
            for flag in flagged(entry):
                counts[flag] = counts.get(flag, 0) + 1
        systems[system] = {"scored": scored, "summary": summarise(scored, settings.seed), "flags": counts}
    return systems


def report(settings: Settings, personas, sources: dict, answers: dict, losses: dict, judged: dict) -> dict:
    """The results every output is made from: per persona, each system's scored answers and summaries."""
    results = {"model": settings.model, "seed": settings.seed, "systems": list(answers), "personas": {}, "verdicts": []}
    for persona in personas:
        source, rows = sources[persona.name]
        systems = evaluate_persona(persona, rows, answers, losses, settings)
        for metric, values in judged.get(persona.name, {}).items():
            systems["adapter"]["summary"][metric] = mean_ci(values, settings.seed)
        if {"adapter", "prompted"} <= set(systems):
            results["verdicts"].append(
                verdict(persona.name, systems["adapter"]["scored"], systems["prompted"]["scored"], settings.seed)
            )
        results["personas"][persona.name] = {"source": str(source), "rows": len(rows), "systems": systems}
    return results


def ci_text(stat: dict | None) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def render_markdown(results: dict) -> str:
    lines = [
        "# Adapter evaluation",
        "",
        f"Model {results['model']}, greedy decoding, seed {results['seed']}. Systems: "
        f"{', '.join(results['systems'])}. Each cell: mean [95% bootstrap interval]; n is the number of answers "
        "the metric applies to.",
        "",
        *[f"- {line}" for line in results["verdicts"]],
        "",
    ]
    for persona, r in results["personas"].items():
        systems = list(r["systems"])
        lines += [
            f"## {persona} ({r['rows']} held-out rows from {r['source']})",
            "",
            "| metric | " + " | ".join(systems) + " | n |",
            "|---|" + "---:|" * (len(systems) + 1),
        ]
        for key, (label, _) in METRICS.items():
            stats = [r["systems"][s]["summary"].get(key) for s in systems]
            if any(stats):
                n = max((st["n"] for st in stats if st), default=0)
                lines.append(f"| {label} | " + " | ".join(ci_text(st) for st in stats) + f" | {n} |")
        flags = {s: r["systems"][s]["flags"] for s in systems}
        described = {s: ", ".join(f"{n} {flag}" for flag, n in sorted(f.items())) or "none" for s, f in flags.items()}
        lines += ["", "Flagged answers: " + "; ".join(f"{s}: {text}" for s, text in described.items()), ""]
    return "\n".join(lines)


def write_charts(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = []
    personas = list(results["personas"])
    systems = results["systems"]
    for key, (label, _) in METRICS.items():
        if not any(key in results["personas"][p]["systems"][s]["summary"] for p in personas for s in systems):
            continue
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            stats = [results["personas"][p]["systems"][system]["summary"].get(key) for p in personas]
            means = [st["mean"] if st and st["mean"] is not None else 0.0 for st in stats]
            errors = [
                [m - st["low"] if st and st["mean"] is not None else 0.0 for m, st in zip(means, stats, strict=True)],
                [st["high"] - m if st and st["mean"] is not None else 0.0 for m, st in zip(means, stats, strict=True)],
            ]
            xs = [x + (k - (len(systems) - 1) / 2) * width for x in range(len(personas))]
            ax.bar(xs, means, width=width, yerr=errors, capsize=3, label=system)
        ns = [
            max(
                (s.get(key) or {}).get("n", 0)
                for s in (results["personas"][p]["systems"][x]["summary"] for x in systems)
            )
            for p in personas
        ]
        ax.set_xticks(range(len(personas)), [f"{p}\n(n={n})" for p, n in zip(personas, ns, strict=True)])
        ax.set_title(f"{label}, 95% bootstrap intervals")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(systems), frameon=False)
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: reruns give identical bytes
        plt.close(fig)
        charts.append(path)
    return charts

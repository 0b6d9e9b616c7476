"""evaluate.py's statistics, pure: means with 95% bootstrap intervals (scipy), paired differences, and the verdict
line that says where the adapter beats, ties with or loses to the prompted base model."""

import warnings

from paper_personas.metrics import METRICS

BOOTSTRAP_RESAMPLES = 2000


def mean_ci(values: list[float], seed: int) -> dict:
    """Mean, 95% percentile bootstrap interval (scipy) and n; a single value or a constant has a zero-width one."""
    import numpy as np
    from scipy.stats import DegenerateDataWarning, bootstrap

    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(np.mean(values))
    if n < 2 or min(values) == max(values):
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    with warnings.catch_warnings():  # nearly constant values: scipy warns, and the interval is the mean itself
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(
            (np.asarray(values, dtype=float),),
            np.mean,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=0.95,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        low = high = mean
    return {"mean": mean, "low": low, "high": high, "n": n}


def summarise(per_answer: list[dict], seed: int) -> dict[str, dict]:
    keys = [k for k in METRICS if any(k in a["metrics"] for a in per_answer)]
    return {k: mean_ci([a["metrics"][k] for a in per_answer if k in a["metrics"]], seed) for k in keys}


def paired_difference(a: list[dict], b: list[dict], metric: str, seed: int) -> dict | None:
    """Mean and 95% interval of (a - b) over the rows both systems have the metric for."""
    pairs = [(x["metrics"][metric], y["metrics"][metric]) for x, y in zip(a, b, strict=True)]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    return mean_ci([x - y for x, y in pairs], seed) if pairs else None


def verdict(persona: str, adapter: list[dict], prompted: list[dict], seed: int) -> str:
    """One line: on which metrics the adapter beats, ties with or loses to the prompted base model. A difference
    counts only when its 95% interval excludes zero."""
    outcome = {"beats": [], "ties": [], "loses": []}
    for metric, (_, higher_is_better) in METRICS.items():
        if higher_is_better is None or metric.startswith("judge"):
            continue
        both = [
            (x, y) for x, y in zip(adapter, prompted, strict=True) if metric in x["metrics"] and metric in y["metrics"]
        ]
        if not both:
            continue
        diff = paired_difference([x for x, _ in both], [y for _, y in both], metric, seed)
        sign = 1 if higher_is_better else -1
        low, high = sorted((diff["low"] * sign, diff["high"] * sign))  # > 0: better for the adapter
        outcome["beats" if low > 0 else "loses" if high < 0 else "ties"].append(metric)
    parts = [f"{word} on {', '.join(names)}" for word, names in outcome.items() if names]
    return f"{persona}: adapter vs prompted base (n={len(adapter)}): " + ("; ".join(parts) or "nothing comparable")

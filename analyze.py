"""Explain a paper three ways with the trained persona adapters: the product the adapters power.

Run simply as:
    $ python analyze.py --id 1706.03762                 # fetch from arXiv
    $ python analyze.py --pdf ~/papers/paper.pdf        # a local PDF
    $ python analyze.py --paper 2401.00001              # a paper already in papers.json

Reads:  the base model (--model, default: the one in adapter_config.json) and adapters/{persona}/.
Writes: reports/<id>.md, each section followed by its three perspectives, and the same content as
        reports/<id>.json (--out moves both).

Fetching, extraction and sectioning are step 1's own functions, and chunks and prompts step 2's, so a persona
sees exactly the prompt it was trained on. The base model is loaded once; personas are switched by swapping
LoRA weights, which all three adapters share the shape of.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import paperExtractor as step1
import sdg as step2
from common import InputError, atomic_writer, count_tokens, die, load_tokenizer, read_json, setup_logging, write_json

log = logging.getLogger("analyze")

REPO_CONFIG = Path(__file__).resolve().parent / "adapter_config.json"
PERSONAS = {p.name: p for p in step2.PERSONAS}
LORA_KEYS = ("fine_tune_type", "num_layers", "lora_parameters")


def default_model() -> str:
    """The base model the repository's adapter_config.json trains, so adapters and analysis agree by default."""
    return read_json(REPO_CONFIG, "adapter_config.json", "restore it from git")["model"]


# ----------------------------------------------------------------------------- the paper


def paper_from_json(papers_json: Path, paper_id: str) -> dict:
    data = read_json(papers_json, "papers.json", "run paperExtractor.py first, or use --id / --pdf")
    for paper in data.get("papers", []):
        if paper["id"] == paper_id:
            return paper
    raise InputError(f"paper {paper_id!r} is not in {papers_json}; use --id to fetch it from arXiv")


def paper_from_pdf(pdf: Path, papers_dir: Path) -> dict:
    if not pdf.is_file():
        raise InputError(f"--pdf {pdf}: no such file")
    return extract(step1.local_record(pdf), papers_dir)


def paper_from_arxiv(paper_id: str, args) -> dict:
    client = step1.make_arxiv_client(args.api_url, args.api_delay)
    try:
        records = step1.search_arxiv(client, [], 1, [paper_id])
    except Exception as e:
        raise InputError(
            f"cannot fetch {paper_id!r} from {args.api_url} ({type(e).__name__}: {e}); check the id and your network"
        ) from None
    if not records:
        raise InputError(f"arXiv has no paper {paper_id!r}; check the id (e.g. 1706.03762)")
    record = next(iter(records.values()))
    reason = step1.ensure_pdf(step1.make_download_session(), record, args.papers_dir)
    if reason:
        raise InputError(f"{record['id']}: {reason}")
    return extract(record, args.papers_dir)


def extract(record: dict, papers_dir: Path) -> dict:
    image_dir = papers_dir / "images" / step1.safe_filename(record["id"])
    try:
        extracted = step1.extract_paper(record["pdf_path"], str(image_dir), max_pages=60, keep_appendix=False)
    except ValueError as e:
        raise InputError(f"{record['pdf_path']}: {e}") from None
    return step1.finish_record(record, extracted)


# ----------------------------------------------------------------------------- the adapters


def adapter_configs(adapters: Path, personas: list[str], model: str) -> dict[str, dict]:
    """Each persona's adapter config, checked: present, trained on `model`, and sharing one LoRA shape."""
    configs = {}
    for persona in personas:
        folder = adapters / persona
        if not (folder / "adapters.safetensors").exists() or not (folder / "adapter_config.json").exists():
            raise InputError(
                f"no trained adapter in {folder}/: train it with `make train`, or point --adapters "
                "at the folder holding eli5/, intuitive/ and executive/"
            )
        config = json.loads((folder / "adapter_config.json").read_text())
        if str(config.get("model")) != str(model):
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

    def generate(self, user: str, max_tokens: int, temperature: float) -> tuple[str, int]:
        return generate(self.model, self.tokenizer, [{"role": "user", "content": user}], max_tokens, temperature)


# ----------------------------------------------------------------------------- the report


def paper_units(paper: dict, tokenizer_spec: str, max_tokens: int) -> list:
    """Step 2's units for this paper: same skipping, same chunking, same keys."""
    tokenizer = load_tokenizer(tokenizer_spec)
    units, _ = step2.build_units([paper], step2.chunk_budget(max_tokens), lambda t: count_tokens(tokenizer, t))
    return units


def render_markdown(report: dict) -> str:
    lines = [
        f"# {report['title']}",
        "",
        f"*{report['paper_id']}: {len(report['sections'])} sections, "
        f"personas {', '.join(report['personas'])}, model {report['model']}*",
        "",
    ]
    for section in report["sections"]:
        chunk = f" (part {section['chunk'] + 1})" if section["chunk"] else ""
        lines += [f"## {section['heading']}{chunk}", "", section["text"], ""]
        for persona, answer in section["perspectives"].items():
            lines += [f"### {persona}", "", answer["text"], ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--id", help="an arXiv id to fetch, e.g. 1706.03762")
    src.add_argument("--pdf", type=Path, help="a local PDF")
    src.add_argument("--paper", help="the id of a paper already in --papers")
    p.add_argument("--model", default=default_model(), help="base model (default: adapter_config.json's, %(default)s)")
    p.add_argument(
        "--adapters", type=Path, default=Path("adapters"), help="folder of persona adapters (default: %(default)s)"
    )
    p.add_argument("--personas", nargs="+", choices=list(PERSONAS), default=list(PERSONAS), help="(default: all)")
    p.add_argument("--out", type=Path, help="markdown report path; JSON beside it (default: reports/<id>.md)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens generated per answer (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    p.add_argument(
        "--tokenizer", default="cl100k_base", help="chunk sizing, as sdg.py --tokenizer (default: %(default)s)"
    )
    p.add_argument("--chunk-max-tokens", type=int, default=2048, help="as sdg.py --max-tokens (default: %(default)s)")
    p.add_argument("--papers", type=Path, default=Path("papers.json"), help="for --paper (default: %(default)s)")
    p.add_argument("--papers-dir", type=Path, default=Path("papers"), help="downloads (default: %(default)s)")
    p.add_argument("--api-url", default=step1.DEFAULT_API_URL, help="arXiv API endpoint (default: %(default)s)")
    p.add_argument("--api-delay", type=float, default=step1.ARXIV_MIN_DELAY_S, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def load_paper(args) -> dict:
    if args.paper:
        return paper_from_json(args.papers, args.paper)
    if args.pdf:
        return paper_from_pdf(args.pdf, args.papers_dir)
    return paper_from_arxiv(args.id, args)


def analyze(paper: dict, units: list, persona_model: PersonaModel, args) -> tuple[dict, int]:
    """Every unit through every persona, one adapter swap per persona; return the report and tokens generated."""
    from tqdm import tqdm

    sections = [
        {"heading": u.heading, "section": u.section, "chunk": u.chunk, "key": u.key, "text": u.text, "perspectives": {}}
        for u in units
    ]
    generated = 0
    with tqdm(total=len(units) * len(args.personas), desc="analyze", unit="answer") as progress:
        for name in args.personas:
            persona_model.use(name)
            for unit, section in zip(units, sections, strict=True):
                prompt = step2.user_message(PERSONAS[name], unit.text)
                text, tokens = persona_model.generate(prompt, args.max_tokens, args.temperature)
                section["perspectives"][name] = {"prompt": prompt, "text": text, "tokens": tokens}
                generated += tokens
                progress.update(1)
    report = {
        "paper_id": paper["id"],
        "title": paper.get("title") or paper["id"],
        "model": args.model,
        "personas": args.personas,
        "sections": sections,
    }
    return report, generated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    started = time.monotonic()
    try:
        configs = adapter_configs(args.adapters, args.personas, args.model)
        paper = load_paper(args)
        units = paper_units(paper, args.tokenizer, args.chunk_max_tokens)
        if not units:
            raise InputError(f"{paper['id']}: no section has enough text to analyze")
        persona_model = PersonaModel(args.model, args.adapters, configs)
    except InputError as e:
        die(str(e))
    report, generated = analyze(paper, units, persona_model, args)
    out = args.out or Path("reports") / f"{step1.safe_filename(paper['id'])}.md"
    with atomic_writer(out) as f:
        f.write(render_markdown(report))
    write_json(out.with_suffix(".json"), report)
    seconds = time.monotonic() - started
    print(
        f"done: {len(units):,} sections x {len(args.personas)} personas, {generated:,} tokens generated, "
        f"{generated / seconds:,.1f} tokens/s overall in {seconds:,.1f} s -> {out}, {out.with_suffix('.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

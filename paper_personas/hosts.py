"""Step 5 on several machines: `make train HOSTS=hosts.json` runs each persona's `mlx_lm lora` under
`mlx.launch --hostfile hosts.json --backend ring`, one rank per host. mlx_lm's trainer is data-parallel under
mx.distributed: each rank takes its share of every batch and the gradients are averaged, so the batch size
must divide by the number of ranks. That is checked here, before any host starts.

    $ python -m paper_personas.hosts hosts.json [adapter_config.json]   # exit 1 with the fix when it does not divide
"""

import json
import sys
from pathlib import Path

from paper_personas.cli import InputError


def ranks(hostfile: Path) -> int:
    """The ranks mlx.launch starts for this hostfile, counted by its own parser."""
    from mlx._distributed_utils.common import Hostfile  # the parser mlx.launch itself uses

    try:
        return len(Hostfile.from_file(hostfile).hosts)
    except ValueError as e:
        raise InputError(f"{e}; write it with mlx.distributed_config --over thunderbolt --backend ring") from None


def batch_problem(batch_size: int, n_ranks: int, hostfile: Path) -> str | None:
    if n_ranks < 1:
        return f"{hostfile} lists no hosts; write it with mlx.distributed_config"
    if batch_size % n_ranks:
        fits = [b for b in range(n_ranks, 4 * n_ranks + 1, n_ranks)]
        return (
            f"batch_size {batch_size} does not divide among the {n_ranks} hosts of {hostfile}: each rank takes an "
            f"equal share of every batch. Set batch_size in adapter_config.json to a multiple of {n_ranks} "
            f"(e.g. {', '.join(map(str, fits[:3]))}), or list a number of hosts that divides {batch_size}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.exit("usage: python -m paper_personas.hosts HOSTFILE [ADAPTER_CONFIG]")
    hostfile, config = Path(args[0]), Path(args[1] if len(args) > 1 else "adapter_config.json")
    try:
        batch_size, n_ranks = json.loads(config.read_text())["batch_size"], ranks(hostfile)
        problem = batch_problem(batch_size, n_ranks, hostfile)
    except (InputError, OSError, KeyError, json.JSONDecodeError) as e:
        problem = f"{config}: {e}" if not isinstance(e, InputError) else str(e)
    if problem:
        sys.exit(f"error: {problem}")
    print(f"{n_ranks} ranks, batch_size {batch_size}: {batch_size // n_ranks} rows per rank per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m hwnas.quantize``: mixed-precision quantization of a saved subnet.

    python -m hwnas.quantize run_dir=outputs/runs/<run> [quantize.KEY=VALUE ...]
    python -m hwnas.quantize subnet_dir=<folder> output_dir=<folder> [data.KEY=VALUE ...]

``run_dir=``: the final subnet of a finished run (``<run>/final``) with the run's own
data settings; the results go to ``<run>/quantize`` (marked done, as the pipeline stage
would) unless ``output_dir=`` says elsewhere. ``subnet_dir=``: any folder written by
:func:`hwnas.app.subnet_io.save_subnet` (``arch.json`` + ``subnet.pt``), with the default
settings of the data set it names. Settings: the ``quantize`` group
(:class:`hwnas.app.schema.quantize.QuantizeConfig`); ``seed=``
and ``threads=`` as in ``python -m hwnas``. Exit 2 with one ``error:`` line for input
to fix; an existing result is never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from hwnas.app.config import compose_config, load_run_config
from hwnas.app.errors import key_value_main
from hwnas.core import atomic

log = logging.getLogger("hwnas.quantize")
USAGE = (
    "usage: python -m hwnas.quantize run_dir=PATH [quantize.KEY=VALUE ...] | "
    "subnet_dir=PATH output_dir=PATH [data.KEY=VALUE ...]"
)
_OWN = ("run_dir", "subnet_dir", "output_dir")


def load_config(args: dict[str, str], rest: list[str]) -> tuple[DictConfig, Path, Path]:
    """The run's config (or the defaults for ``subnet_dir``) with ``rest`` applied, the
    subnet folder and the output folder."""
    if ("run_dir" in args) == ("subnet_dir" in args):
        raise ValueError(f"give exactly one of run_dir= and subnet_dir= ({USAGE})")
    if "run_dir" in args:
        run = Path(args["run_dir"])
        cfg = load_run_config(run, rest)
        subnet, out = run / "final", Path(args.get("output_dir", run / "quantize"))
    else:
        subnet = Path(args["subnet_dir"])
        if "output_dir" not in args:
            raise ValueError(f"subnet_dir= needs output_dir= ({USAGE})")
        spec_path = subnet / "arch.json"
        if not spec_path.is_file():
            raise FileNotFoundError(f"{spec_path} is missing: point subnet_dir to a final/ folder")
        data = json.loads(spec_path.read_text())["data"]
        cfg = compose_config([f"data={data}", *rest])
        out = Path(args["output_dir"])
    if (out / "DONE.json").exists() or (out / "report.json").exists():
        raise FileExistsError(f"{out} already holds a quantization: remove it or pass output_dir=")
    return cfg, subnet, out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return key_value_main(argv, __doc__, USAGE, _OWN, _run)


def _run(args: dict[str, str], rest: list[str]) -> int:
    import lightning.pytorch  # noqa: F401  (it sets its loggers' level when imported)
    import torch

    from hwnas.app.checks import validate
    from hwnas.app.data import build_data
    from hwnas.app.stages.quantize import quantize_model
    from hwnas.app.subnet_io import load_subnet
    from hwnas.core.runtime import resolve_threads, torch_threads

    for name in ("lightning.pytorch", "lightning.fabric"):  # as python -m hwnas
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg, subnet, out = load_config(args, rest)
    validate(cfg)
    net = load_subnet(subnet)
    with torch_threads(resolve_threads(cfg.threads)):
        torch.manual_seed(int(cfg.seed))
        dm = build_data(cfg.data, int(cfg.seed))
        dm.setup()
        progress = {"mode": str(cfg.progress), "interval_s": float(cfg.progress_interval_s)}
        q = OmegaConf.to_container(cfg.quantize, resolve=True)
        summary = quantize_model(net, dm, q, out, int(cfg.seed), progress, cfg.trainer)
    atomic.write_json(out / "DONE.json", summary)
    model = out / json.loads((out / "report.json").read_text())["model"]
    print(f"quantized model: {model}; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

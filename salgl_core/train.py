"""Train SALGL on one dataset.

    python -m salgl_core.train --dataset synthetic --out runs/synthetic          # CPU, about a minute
    python -m salgl_core.train --dataset coco --data-root /data/coco2014 \\
        --label-embedding label_embeddings/mscoco/bert.npy --out runs/coco       # the paper's recipe
    python -m salgl_core.train --out runs/coco --resume                          # continue after a stop

`--dataset synthetic` starts from the CPU-sized preset, real datasets from the paper's recipe; every
config field is a flag (see --help) and overrides the preset. Writes config.json, epochs.csv,
checkpoint.pt (last epoch, for --resume) and best_ema.pt (EMA weights of the best epoch) into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from salgl_core.cli import add_config_arguments, config_from_args
from salgl_core.config import ConfigError, ExperimentConfig


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m salgl_core.train",
                                     description="Train SALGL (Scene-Aware Label Graph Learning).", add_help=add_help)
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder for config.json, epochs.csv and checkpoints "
                             "(default: runs/<dataset>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/checkpoint.pt with the config saved in <out>/config.json "
                             "(flags given again must agree with it)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="a config.json to start from instead of the preset (flags still override it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, only the per-epoch line")
    # The help shows the paper's defaults; `shown_defaults=` is where the preset's would go.
    add_config_arguments(parser)
    return parser


def _resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    base = args.config
    if args.resume and args.out is not None and (args.out / "config.json").is_file():
        base = args.out / "config.json"
    cfg = config_from_args(args)
    if base is not None:
        typed = {k: v for k, v in vars(args).items() if k in cfg.to_flat()}
        saved = ExperimentConfig.load(base)
        if args.resume:
            clash = {k: (v, saved.to_flat()[k]) for k, v in typed.items() if saved.to_flat()[k] != v}
            if clash:
                raise ConfigError(f"--resume uses the config saved in {base}; these flags disagree with it "
                                  f"(given, saved): {clash}")
        cfg = saved.replace(**typed)
    return cfg


def main(args: argparse.Namespace) -> int:
    from salgl_core.backbone import BackboneWeightsError
    from salgl_core.data import DataError
    from salgl_core.embeddings import LabelEmbeddingError
    from salgl_core.engine import DivergedError, fit

    out = args.out
    try:
        cfg = _resolve_config(args)
        out = out or Path("runs") / f"{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"training SALGL on {cfg.data.dataset} -> {out.resolve()}", flush=True)
        result = fit(cfg, out, resume=args.resume, progress=not args.no_progress,
                     log=lambda s: print(s, flush=True))
    except (ConfigError, DataError, BackboneWeightsError, LabelEmbeddingError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python -m salgl_core.train --out {out} --resume", file=sys.stderr)
        return 130
    if result.epochs:
        print(f"done: best EMA mAP {result.best_mAP_ema:.2f} at epoch {result.best_epoch}; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

"""Train SALGL on one dataset.

    python -m salgl_core.train --out runs/synthetic                              # synthetic preset, CPU, ~1 min
    python -m salgl_core.train --recipe paper-coco-r101-448 --data-root /data/coco2014 --out runs/coco
    python -m salgl_core.train --dataset coco --data-root /data/coco2014         # the same recipe
    python -m salgl_core.train --recipe paper-coco-r101-448 --print-config       # every value and its source
    python -m salgl_core.train --list-recipes                                    # each recipe and its target
    python -m salgl_core.train --out runs/coco --resume                          # continue after a stop
    python -m salgl_core.train --recipe paper-voc2007-from-coco-r101-448 --init-from runs/coco --data-root /data/voc
                                                   # VOC 2007 fine-tuned from a COCO run (salgl_core/transfer.py)

The configuration starts from a recipe (salgl_core/presets.py): `--recipe NAME`, or `--dataset D`'s paper
recipe, or without either the CPU-sized synthetic preset; every config field is a flag (see --help) and
overrides it. Writes config.json (recording the recipe), epochs.csv, checkpoint.pt (last epoch, for
--resume) and best_ema.pt (EMA weights of the best epoch) into --out.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from salgl_core.cli import (
    HOW_THE_PRESET_IS_CHOSEN,
    add_config_arguments,
    add_recipe_argument,
    config_with_sources,
    flag_layer,
    format_config,
    layered,
    recipes_epilog,
    shown_recipe,
    typed_fields,
)
from salgl_core.config import ConfigError, ExperimentConfig, ignored_fields
from salgl_core.presets import check_needs, recipe_table

PROG = "python -m salgl_core.train"


def get_args_parser(add_help: bool = True, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; its --help shows the defaults of the recipe `argv` chooses (--recipe / --dataset in it;
    none given: the synthetic preset)."""
    shown = shown_recipe(argv)
    parser = argparse.ArgumentParser(prog=PROG, description=textwrap.fill(
                                     "Train SALGL (Scene-Aware Label Graph Learning). " + HOW_THE_PRESET_IS_CHOSEN,
                                     100), epilog=recipes_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help)
    start = parser.add_argument_group("starting point")
    add_recipe_argument(start)
    start.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="a config.json to start from instead of a recipe (flags still override it)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder for config.json, epochs.csv and checkpoints "
                          "(default: runs/<dataset>-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="continue from <out>/checkpoint.pt with the config saved in <out>/config.json "
                          "(flags given again must agree with it)")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved configuration, each value with its source (default, recipe, "
                          "flag or config file), and exit without training")
    run.add_argument("--no-progress", action="store_true", help="no progress bar, only the per-epoch line")
    run.add_argument("--list-recipes", action="store_true",
                     help="print every recipe with its dataset, backbone, image size, weights and the published "
                          "number it targets, and exit")
    how = (f"recipe {shown.name}" if shown.paper else
           "the synthetic preset, used without --dataset/--recipe; '--recipe NAME --help' shows a recipe's")
    add_config_arguments(parser, shown_defaults=shown.config(), shown_from=how)
    return parser


def _resolve_config(args: argparse.Namespace) -> tuple[ExperimentConfig, dict[str, str]]:
    """The run's configuration and each value's source: a recipe (or --config / the saved config of a
    --resume) under the typed flags."""
    base = args.config
    if args.resume and args.out is not None and (args.out / "config.json").is_file():
        base = args.out / "config.json"
    if base is None:
        return config_with_sources(args)
    typed = typed_fields(args)
    saved = ExperimentConfig.load(base).to_flat()
    if args.resume:
        given = {**typed, **({"recipe": args.recipe} if args.recipe is not None else {})}
        clash = {k: (v, saved[k]) for k, v in given.items() if saved[k] != v}
        if clash:
            raise ConfigError(f"--resume uses the config saved in {base}; these flags disagree with it "
                              f"(given, saved): {clash}")
    elif args.recipe is not None:
        raise ConfigError("--config and --recipe both say where the configuration starts; pass only one")
    return layered([(saved, f"config {base}"), flag_layer(typed)])


def main(args: argparse.Namespace) -> int:
    if args.list_recipes:
        print(recipe_table())
        return 0
    out = args.out
    try:
        cfg, sources = _resolve_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    typed = typed_fields(args)
    ignored = [why for name, why in ignored_fields(cfg.to_flat()).items() if name in typed]
    if ignored:
        print(f"error: {ignored[0]}", file=sys.stderr)
        return 2
    if args.print_config:
        print(format_config(cfg, sources))
        return 0
    try:
        check_needs(cfg)  # a recipe that cannot run without a value, e.g. --init-from for a fine-tuning recipe
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Heavy imports (torch) only once the arguments are known to be valid.
    from salgl_core.backbone import BackboneWeightsError
    from salgl_core.data import DataError
    from salgl_core.embeddings import LabelEmbeddingError
    from salgl_core.engine import CHECKPOINT, DivergedError, fit

    if args.resume and (out is None or not (out / CHECKPOINT).is_file()):
        # fit(resume=True) starts afresh without a checkpoint (a study trial's first attempt); typed by hand, that
        # would silently train from scratch over whatever the folder holds.
        where = f"{out} has no {CHECKPOINT}" if out is not None else "it needs --out, the folder of the run"
        print(f"error: --resume continues a run from its {CHECKPOINT}, but {where}; start a new run without "
              "--resume, or name the interrupted run's folder with --out", file=sys.stderr)
        return 2
    try:
        out = out or Path("runs") / f"{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"training SALGL on {cfg.data.dataset} (recipe {cfg.train.recipe}) -> {out.resolve()}", flush=True)
        result = fit(cfg, out, resume=args.resume, progress=not args.no_progress,
                     log=lambda s: print(s, flush=True))
    except (ConfigError, DataError, BackboneWeightsError, LabelEmbeddingError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {PROG} --out {out} --resume", file=sys.stderr)
        return 130
    if result.epochs:
        print(f"done: best EMA mAP {result.best_mAP_ema:.2f} at epoch {result.best_epoch}; files in {out}")
    return 0


if __name__ == "__main__":
    _argv = sys.argv[1:]
    sys.exit(main(get_args_parser(argv=_argv).parse_args(_argv)))

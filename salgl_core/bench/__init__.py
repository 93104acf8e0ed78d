"""Benchmarks that print one JSON object each (speed goals live here, not in timed test asserts).

    python -m salgl_core.bench attention [--batch 32] [--step-batch 8] [--device cuda] [--amp bf16]
    python -m salgl_core.bench loader [--workers 0 1 2] [--real-data DIR]
    python -m salgl_core.bench train [--recipe paper-coco-r101-448] [--amp fp16 bf16] [--compile off on]
    python -m salgl_core.bench features [--epochs 2] [--real-data DIR | --no-coco] [--coco-steps 3]
    python -m salgl_core.bench probe [--visibility 0 0.6 1]
    python -m salgl_core.bench memory [--recipe paper-coco-r101-448] [--batch-size N] [--gpu-memory-gb 24]

`attention` (bench/attention.py): the bilinear attention and the whole train step, reference vs the
exact fast path. `loader` (bench/loader.py): the training data pipeline vs bare JPEG decoding. `train`
(bench/train.py): a recipe's training throughput and peak memory, on device tensors and through the real
loader, per AMP dtype x channels_last x torch.compile. `features` (bench/features.py): trial time with
cached frozen-backbone features vs end to end (the default synthetic study trial; the COCO subset with
Lite0). `probe` (bench/probe.py): how well a supervised linear probe reads the true synthetic scene
from the frozen backbone's cached features (do the features carry what SALGL's scenes miss?). `memory`
(bench/memory.py): the GPU memory one training trial of a recipe needs, traced on fake tensors on a CPU
(salgl_core/memory.py). `attention`,
`loader` and `train` default to the paper's shapes; their flags shrink them (the tests run them at tiny shapes on a
CPU; `train` picks small shapes itself without CUDA).
`tools/gpu_check.sh` runs `attention` and `train` on a GPU with a training run and a two-trial study.
"""

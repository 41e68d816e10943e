"""Benchmarks of the training loop (issue "Training loop").

Run:  .venv/bin/python benchmarks/bench_train.py [--n 10000] [--repeats 5] [--no-write]

Everything is measured in this one process on synthetic random data of the real shapes
(``N`` images ``1×36×36``, 9 classes, group R4), with a freshly initialized ``mlp5``
(1296→128→128→128→128→128→9), batch 512:

(a) achieved FLOP rate of one invlab training epoch (``invlab.train.train`` with
    ``epochs=1``: random rot90 per sample, forward, loss, backward, Adam, plus the
    validation pass on 512 images) for DA and for IR (ν=1, pairs ``(g·x, h·g·x)`` in one
    ``2×batch`` forward), versus a plain chain of the same matmuls (forward and backward
    of every Linear layer, no bias, no ReLU, no loss, no Adam) on contiguous slices of a
    pre-flattened input. FLOPs are counted explicitly: ``2·in·out`` per sample per Linear
    forward, ``×3`` for forward + backward, i.e. ``3 · 2 · Σ in·out`` per sample
    (``2×`` that per sample for IR). Autograd skips the input gradient of the first layer
    (the images need no gradient), and so does the reference chain, so both sides run the
    very same matmuls and the rate ratio is the time ratio. Target: ≥ 50 %.
(b) invlab's DA epoch versus a reference loop: ``torch.utils.data.DataLoader`` (batch 512,
    shuffled, ``num_workers=0``) over a ``Dataset`` whose ``__getitem__`` applies a random
    ``rot90`` to one sample, then the same model, loss and Adam. Target: ≥ 1.5× faster.

The compared variants are interleaved (each repeat times every variant once, in turn) and
the median over repeats is reported, together with the median of the per-repeat ratios.
The machine may be shared: absolute times are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from invlab.data import Split, TransformingData
from invlab.models import create_model
from invlab.train import TrainConfig, train

BATCH = 512
SHAPES = [(1296, 128), (128, 128), (128, 128), (128, 128), (128, 128), (128, 9)]
FWD_FLOPS_PER_SAMPLE = sum(2 * i * o for i, o in SHAPES)
TRAIN_FLOPS_PER_SAMPLE = 3 * FWD_FLOPS_PER_SAMPLE


def synthetic_data(n: int, n_val: int = 512, seed: int = 0) -> TransformingData:
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        return Split(torch.randn(m, 1, 36, 36, generator=g),
                     torch.randint(0, 9, (m,), generator=g), torch.zeros(m, dtype=torch.long))

    return TransformingData(split(n), split(n_val), split(8), 0.0, 1.0, "r4", 9, ("synthetic",))


def invlab_epoch(data: TransformingData, method: str, epochs: int = 1) -> None:
    cfg = TrainConfig(method=method, group="r4", epochs=epochs, batch_size=BATCH,
                      nu=1.0 if method == "ir" else 0.0, seed=0)
    train(cfg, data, progress=False)


def matmul_chain_epoch(x_flat: torch.Tensor, weights: list[torch.Tensor], rows: int) -> None:
    """Forward + backward matmuls of the Linear chain, ``rows`` samples per step."""
    n = x_flat.shape[0]
    with torch.no_grad():
        for i in range(0, n, rows):
            acts = [x_flat[i:i + rows]]
            for w in weights:  # forward: a_{l+1} = a_l W_lᵀ
                acts.append(acts[-1] @ w.t())
            grad = torch.ones_like(acts[-1])
            for layer in range(len(weights) - 1, -1, -1):
                _ = grad.t() @ acts[layer]  # weight gradient  [out, in]
                if layer > 0:  # input gradient (autograd skips it for the first layer)
                    grad = grad @ weights[layer]


class RotatingDataset(torch.utils.data.Dataset):
    """Per-sample augmentation, the way a torchvision-style pipeline does it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = int(torch.randint(0, 4, ()))
        return torch.rot90(self.images[i], k, dims=(-2, -1)), self.labels[i]


def dataloader_epoch(data: TransformingData) -> None:
    torch.manual_seed(0)
    model = create_model("mlp5", in_shape=[1, 36, 36], num_classes=9)
    opt = torch.optim.Adam(model.parameters(), lr=8e-4)
    loader = torch.utils.data.DataLoader(RotatingDataset(data.train.images, data.train.labels),
                                         batch_size=BATCH, shuffle=True, num_workers=0)
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="training images (default 10000)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 gives stable timings "
                         "on a machine whose cores are busy with other work")
    ap.add_argument("--epochs-per-call", type=int, default=5,
                    help="epochs per timed invlab.train call (its time / this = one epoch), so "
                         "that one-time work (model init, the orbit of the training set) is "
                         "amortized as in a real run (default 5)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    data = synthetic_data(args.n)
    x_flat = data.train.images.reshape(args.n, -1).contiguous()
    x_pair = torch.cat([x_flat, x_flat])  # IR forwards 2 rows per sample
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(o, i, generator=gen) / i ** 0.5 for i, o in SHAPES]

    variants = {
        "invlab DA": lambda: invlab_epoch(data, "da", args.epochs_per_call),
        "chain DA": lambda: matmul_chain_epoch(x_flat, weights, BATCH),
        "invlab IR": lambda: invlab_epoch(data, "ir", args.epochs_per_call),
        "chain IR": lambda: matmul_chain_epoch(x_pair, weights, 2 * BATCH),
        "DataLoader DA": lambda: dataloader_epoch(data),
    }
    load0 = os.getloadavg()[0]
    for name, fn in variants.items():  # warm-up (one epoch each)
        invlab_epoch(data, "da" if "DA" in name else "ir") if name.startswith("invlab") else fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            per = args.epochs_per_call if name.startswith("invlab") else 1
            times[name].append(timed(fn) / per)  # seconds per epoch
    load1 = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> float:
        """Median over repeats of times[a] / times[b] (adjacent measurements)."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    flops_da = TRAIN_FLOPS_PER_SAMPLE * args.n
    flops_ir = 2 * flops_da
    rate = {"invlab DA": flops_da / med["invlab DA"], "chain DA": flops_da / med["chain DA"],
            "invlab IR": flops_ir / med["invlab IR"], "chain IR": flops_ir / med["chain IR"]}
    frac_da, frac_ir = paired("chain DA", "invlab DA"), paired("chain IR", "invlab IR")
    speedup = paired("DataLoader DA", "invlab DA")

    rows = [
        ("(a) FLOP rate, DA epoch vs matmul chain",
         (f"{rate['invlab DA'] / 1e9:.1f} vs {rate['chain DA'] / 1e9:.1f} GFLOP/s "
          f"({med['invlab DA']:.2f} s vs {med['chain DA']:.2f} s)"),
         f"{100 * frac_da:.0f}%", ">= 50%", frac_da >= 0.5),
        ("(a) FLOP rate, IR epoch vs matmul chain",
         (f"{rate['invlab IR'] / 1e9:.1f} vs {rate['chain IR'] / 1e9:.1f} GFLOP/s "
          f"({med['invlab IR']:.2f} s vs {med['chain IR']:.2f} s)"),
         f"{100 * frac_ir:.0f}%", ">= 50%", frac_ir >= 0.5),
        ("(b) DA epoch vs DataLoader + per-sample rot90",
         f"{med['invlab DA']:.2f} s vs {med['DataLoader DA']:.2f} s",
         f"{speedup:.2f}x", ">= 1.5x", speedup >= 1.5),
    ]
    cmd = ".venv/bin/python benchmarks/bench_train.py" + (
        f" --epochs-per-call {args.epochs_per_call}" if args.epochs_per_call != 5 else "") + (
        f" --n {args.n}" if args.n != 10_000 else "") + (
        f" --repeats {args.repeats}" if args.repeats != 5 else "") + (
        f" --threads {args.threads}" if args.threads is not None else "")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads; load average {load0:.1f} → {load1:.1f}")
    lines = ["| benchmark | measured (median of repeats) | ratio | target | met |",
             "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {'yes' if e else 'no'} |" for a, b, c, d, e in rows]
    per_repeat = "; ".join(f"{k}: " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items())
    print(f"Machine: {machine}")
    print(f"FLOPs per sample (fwd+bwd, nominal 3x forward): {TRAIN_FLOPS_PER_SAMPLE:,}; "
          f"per epoch DA {flops_da / 1e9:.2f} GFLOP, IR {flops_ir / 1e9:.2f} GFLOP")
    print("\n".join(lines))
    print(f"per-repeat seconds: {per_repeat}")
    if not args.no_write:
        write_results(cmd, machine, lines, per_repeat, flops_da, flops_ir, args.threads)
    return 0


def write_results(cmd: str, machine: str, table: list[str], per_repeat: str,
                  flops_da: float, flops_ir: float, threads: int | None) -> None:
    section = "\n".join([
        "## Training",
        "",
        f"Command: `{cmd}`  ",
        (f"Machine: {machine} (the machine may be shared, so absolute times are noisy; "
         "both sides of every ratio are measured in the same process, interleaved, median of "
         "repeats)."),
        "",
        *table,
        "",
        f"Per-repeat seconds (interleaved): {per_repeat}.",
        "",
        ("Notes: synthetic random data of the real shapes (10k images 1×36×36, 9 classes, R4), "
        "`mlp5`, batch 512. (a) the invlab side is a whole `invlab.train.train(epochs=E)` call "
        "divided by E (`--epochs-per-call`, default 5; model init and the orbit of the "
        "training set, built once per call, are amortized over E epochs as they are over a "
        "run's), with per epoch: per-sample random rot90 (read from the orbit), forward, cross-entropy, IR's pair term, "
        "backward, Adam, validation pass on 512 images, best-state copy); the reference is the "
        "bare chain of the same matmuls (forward and backward of each Linear, no bias, ReLU, "
        "loss or optimizer). FLOPs counted as 2·in·out per sample per Linear forward, ×3 for "
        f"forward + backward: {flops_da / 1e9:.2f} GFLOP per DA epoch, {flops_ir / 1e9:.2f} "
        "GFLOP per IR epoch (two forwards per sample). Both sides skip the first layer's input "
        "gradient, so they run identical matmuls and the ratio is the time ratio (median of the "
        "per-repeat ratios). (b) the reference is a `DataLoader(batch_size=512, shuffle=True, "
        "num_workers=0)` over a `Dataset` whose `__getitem__` rotates one image by a random "
        "multiple of 90°, then the same model, loss and Adam; the ratio is its epoch time over "
        "invlab's DA epoch time."),
        "",
        *([("Threads: this run uses `--threads 1`. With torch's default 2 intra-op threads "
            "on the 2 busy cores, the same epoch took anywhere from 0.5 s to 14 s from one "
            "repeat to the next (an OpenMP region waits for its descheduled second thread), "
            "so no ratio was meaningful; one thread per side gives repeat-to-repeat spreads "
            "of a few percent."), ""] if threads == 1 else []),
    ])
    path = Path(__file__).resolve().parent / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find("\n## Training")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
    print(f"wrote the Training section of {path}")


if __name__ == "__main__":
    sys.exit(main())

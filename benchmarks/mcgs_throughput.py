"""MCGS throughput: seconds per image of RE generation (MSPD: F1B1, N=20, ResNet-20, CIFAR-10)
against the batch size, the pass size (``chunk_size``) and the number format, and the ratio to a
per-image loop of the same algorithm (batch 1, plain float32). Goal on CPU: params.yaml's runtime
settings (batched, ``fold_bn``) >= 1.5x faster than the loop. The last lines separate what batching
alone gives from what the shipped settings give: on a CPU with one thread per job the loop's passes
already hold the N = 20 starts of an image, and larger passes are no cheaper per sample.

Each run draws its random starts the way the defend stage does, from one seeded stream per image
(``runtime.ImageStreams``), so every batch size computes the same REs up to the float kernels' own
batch dependence; the second table shows how far each run's REs and metrics move from the loop's
(pixels that differ by more than float rounding (1e-6) and by more than one 8-bit level (1/255),
max |difference|, a ResNet-32 victim's accuracy on the REs). On CUDA it also repeats the loop, to
show the device's run-to-run noise, and times float32 with TF32 convolutions (``runtime.tf32``,
PyTorch's own default, so the authors' GPU runs had it). The process is set up as a stage's is
(``runtime.configure``: deterministic algorithms on CUDA, TF32 off).

    python benchmarks/mcgs_throughput.py [--quick] [--images 256] [--batches 1,32,256] [--threads 1]

Options are the ``runtime`` options of params.yaml: ``channels_last`` and ``fold_bn`` (both devices) and ``amp``
(bfloat16 autocast; CUDA, and CPUs with AMX or AVX512-BF16: elsewhere emulated, and timed only
with ``--emulated-bf16``, since it is an order of magnitude slower).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from _common import ROOT, cifar_images, cifar_resnet, setup_threads
from preempt.config import load
from preempt.defenses import DEFENSES
from preempt.defenses.mcgs import MCGSConfig
from preempt.runtime import ImageStreams, RuntimeConfig, accelerate, auto_chunk, configure, cpu_has_bf16, generator


def run(x: torch.Tensor, models: dict[str, torch.nn.Module], batch: int, chunk: int | str) -> tuple[torch.Tensor, float]:
    """REs of ``x`` in batches of ``batch`` (the defend stage's loop), and wall seconds."""
    cfg = MCGSConfig(classifier="classifier", backbone="backbone", eps=8 / 255, schedule="F1B1", n_samples=20,
                     chunk_size=chunk)  # type: ignore[arg-type]
    fn: Any = DEFENSES["mcgs"].fn
    parts = []
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        parts.append(fn(xb, cfg=cfg, models=models, y_true=None, generator=generator(i, x.device),
                        streams=ImageStreams(0, range(i, i + len(xb)), x.device)))
    if x.is_cuda:
        torch.cuda.synchronize()
    return torch.cat(parts), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 images, batches 1, 16, 64 (about 1 minute on CPU)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batches", default="", help="comma-separated batch sizes (default: per device)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's runtime.num_threads: 1)")
    ap.add_argument("--emulated-bf16", action="store_true", help="also time bf16 on a CPU without native bf16")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    default_batches = "1,16,64" if a.quick else ("1,32,256" if device.type == "cpu" else "1,64,256,1024")
    if a.quick:
        a.images = 64
    batches = [int(b) for b in (a.batches or default_batches).split(",")]
    setup_threads(a.threads)
    base, origin = cifar_resnet(20)
    victim, _ = cifar_resnet(32)
    x, y, data = cifar_images(a.images)
    x, y, victim = x.to(device), y.to(device), victim.to(device)
    bf16 = device.type == "cuda" or cpu_has_bf16()
    print(f"ResNet-20 backbone and classifier ({origin}); {a.images} {data}; device {device}; "
          f"auto pass size {auto_chunk(device, x.shape[1:])} samples; native bf16: {bf16}")

    shipped = load(ROOT / "params.yaml").runtime
    ship_opts = {k: True for k in ("amp", "channels_last", "fold_bn", "tf32") if getattr(shipped, k)}
    settings: list[tuple[str, dict[str, bool]]] = [("float32", {}), ("float32 channels_last", {"channels_last": True}),
                                                   ("float32 fold_bn", {"fold_bn": True}),
                                                   ("fold_bn channels_last", {"fold_bn": True, "channels_last": True})]
    if device.type == "cuda":
        settings.insert(1, ("float32 TF32", {"tf32": True}))
    if bf16 or a.emulated_bf16:
        settings += [("bf16 autocast", {"amp": True}), ("bf16 channels_last", {"amp": True, "channels_last": True})]
    if not any(opts == ship_opts for _, opts in settings):
        settings.append(("params.yaml runtime", ship_opts))
    ship_name = next(name for name, opts in settings if opts == ship_opts)
    rows: list[tuple[str, int, str, float, torch.Tensor]] = []
    for name, opts in settings:
        rt = RuntimeConfig(num_threads=a.threads, **opts)
        configure(rt)
        model = accelerate(base.to(device), rt, device, x.shape[1:])
        models = {"classifier": model, "backbone": model}
        chunks: list[int | str] = ["auto"] if device.type == "cuda" else ["auto", 8192]  # 8192: the old fixed pass
        again = device.type == "cuda" and name == "float32"
        for chunk in chunks:
            for b in ([1, *batches] if again else batches):
                if chunk != "auto" and b * 20 <= auto_chunk(device, x.shape[1:]):
                    continue  # the same passes as auto
                run(x[:min(b, 8)], models, b, chunk)  # warm-up (allocator, oneDNN primitives)
                res, sec = run(x, models, b, chunk)
                label = f"{name} (again)" if again and b == 1 and any(r[0] == name and r[1] == 1 for r in rows) else name
                rows.append((label, b, str(chunk), sec / len(x), res))
                print(f"  {label:24s} batch {b:5d} pass {chunk!s:>5}: {sec / len(x):.4f} s/image", flush=True)

    loop = next(r for r in rows if r[0] == "float32" and r[1] == 1 and r[2] == "auto")
    with torch.inference_mode():
        def acc(t: torch.Tensor) -> float:
            return float((victim(t).argmax(1) == y).float().mean() * 100)
        print(f"\nvictim ResNet-32 accuracy: originals {acc(x):.2f}%, REs of the per-image loop {acc(loop[4]):.2f}%")
        print(f"pixels differing from the loop's REs, of {loop[4].numel()}:")
        print(f"{'setting':24s} {'batch':>5s} {'pass':>5s} {'s/image':>8s} {'vs loop':>8s} "
              f"{'> 1e-6':>8s} {'> 1/255':>8s} {'max |diff|':>10s} {'victim acc':>10s}")
        for name, b, chunk, spi, res in rows:
            diff = (res - loop[4]).abs()
            print(f"{name:24s} {b:5d} {chunk:>5s} {spi:8.4f} {loop[3] / spi:7.2f}x "
                  f"{int((diff > 1e-6).sum()):8d} {int((diff > 1 / 255).sum()):8d} {float(diff.max()):10.2e} "
                  f"{acc(res):9.2f}%")
    top = max(batches)
    batched = next(r for r in rows if r[0] == "float32" and r[2] == "auto" and r[1] == top)
    ship = next(r for r in rows if r[0] == ship_name and r[2] == "auto" and r[1] == top)
    print(f"batching alone: float32 batch {top} (auto pass) vs the per-image loop: {loop[3] / batched[3]:.2f}x")
    print(f"params.yaml's runtime ({', '.join(ship_opts) or 'plain float32'}, batch {top}) vs the per-image float32 "
          f"loop (goal on CPU >= 1.5x): {loop[3] / ship[3]:.2f}x")


if __name__ == "__main__":
    main()

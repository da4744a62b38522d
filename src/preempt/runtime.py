"""Process-wide settings for a stage: device, threads, determinism, batches and their RNGs, logging.

``RuntimeConfig`` (params.yaml's ``runtime`` section) lives here, beside the code it configures.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Callable, Literal, Sequence, TypeVar

import torch
from pydantic import Field, PositiveInt
from torch.fx.experimental.optimization import fuse as fx_fuse
from tqdm.auto import tqdm

from .errors import PreemptError
from .paths import Shard
from .registry import MethodConfig

log = logging.getLogger("preempt")
T = TypeVar("T")


class RuntimeConfig(MethodConfig):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads per job: fixed so that results do not depend on the driver's
    # parallelism (CPU reductions are bit-identical only for a fixed thread count).
    num_threads: int = Field(1, ge=1)
    # images per batch; 'auto' = the documented per-device rule of auto_batch_size. A batch size
    # is a speed knob only: defenses draw per-image random streams (ImageStreams), so REs change
    # with it only through the kernels' own batch-size dependence. Fix a number for reported runs.
    batch_size: PositiveInt | Literal["auto"] = 256
    # Speed-ups, off by default (see accelerate below); each changes float results slightly, so
    # they are stage params: switching one reruns the stages it affects. The papers are float32.
    amp: bool = Field(False, description="autocast forward passes to bfloat16 (CUDA; CPUs with AMX or "
                                         "AVX512-BF16, else ignored with a log line) or float16 (old GPUs)")
    channels_last: bool = Field(False, description="NHWC memory format for conv models (CUDA and CPU)")
    compile: bool = Field(False, description="torch.compile the models a stage runs (CUDA only)")
    fold_bn: bool = Field(False, description="fold eval-mode BatchNorm into the convolution before it "
                                             "(torch.fx, checked on a probe batch; both devices)")
    # PyTorch lets cuDNN convolutions run in TF32 (10-bit mantissa) by default on Ampere and later
    # GPUs; then a GPU's float32 REs depend on the batch size (measured: 20% of pixels move by more
    # than 1/255 between batch 1 and 1,024 on an H100; 204 of 3,072,000 without). Off = true float32.
    tf32: bool = Field(False, description="allow TF32 convolutions and matmuls on CUDA (about 1.5x faster "
                                          "MCGS on an H100; REs then depend on the batch size)")

    # Device memory (the GPU's; see DeviceBatch). A defense stage's first pass on a GPU is a
    # probe whose peak memory sets how many images later passes take: this share of the memory
    # that was free. Per-image random streams make the REs independent of it.
    memory_fraction: float = Field(0.8, gt=0, le=1, description="share of the free GPU memory a defense stage "
                                                                "sizes its passes to (measured on a probe pass)")
    # An attack stage's batches are its own seeded units (an attack's random starts are drawn per
    # batch), so they are not sized by a measurement, which would make results depend on what else
    # holds the GPU: a model too large for runtime.batch_size gets its own, declared number here.
    model_batch: dict[str, PositiveInt] = Field(
        default_factory=dict, description="images per batch of any stage that runs this model (the smallest of a "
                                          "stage's models applies), e.g. {bartoldson2024_wrn94_16: 64}")

    def batch(self, device: torch.device | str, sample_shape: Sequence[int], models: Iterable[str] = ()) -> int:
        """``batch_size``, with 'auto' resolved for this device and image size, capped by the
        ``model_batch`` of each of ``models``."""
        bs = self.batch_size if self.batch_size != "auto" else auto_batch_size(device, sample_shape)
        return self.model_cap(bs, models)

    def model_cap(self, n: int, models: Iterable[str]) -> int:
        """``n``, or the smallest ``model_batch`` of ``models`` where that is smaller."""
        return min([n, *(self.model_batch[m] for m in models if m in self.model_batch)])


# The per-device rule behind 'auto' (measured with benchmarks/mcgs_throughput.py). On a CPU, a
# pass over more than a few hundred 32x32 images no longer fits the caches and gets slower per
# image (ResNet-20, one thread: about 1.5x slower per sample at 2,560 than at 128); a GPU wants
# the largest passes its memory holds. Both scale with the pixels of one image.
CIFAR_PIXELS = 3 * 32 * 32
PASS_SAMPLES = {"cpu": 128, "cuda": 8192}   # samples (images x random starts) per backbone pass
BATCH_IMAGES = {"cpu": 256, "cuda": 1024}   # images per batch of a stage


def _scaled(table: dict[str, int], device: torch.device | str, sample_shape: Sequence[int], floor: int) -> int:
    numel = 1
    for d in sample_shape:
        numel *= int(d)
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return max(floor, table[kind] * CIFAR_PIXELS // max(numel, 1))


def auto_batch_size(device: torch.device | str, sample_shape: Sequence[int]) -> int:
    """Images per batch for ``runtime.batch_size: auto``: 256 on a CPU, 1,024 on a GPU, for
    CIFAR-sized images, inversely proportional to the pixels of larger ones (at least 8)."""
    return _scaled(BATCH_IMAGES, device, sample_shape, floor=8)


def auto_chunk(device: torch.device | str, sample_shape: Sequence[int]) -> int:
    """Samples per forward+backward pass of a batched multi-start method (MCGS's ``chunk_size:
    auto``): 128 on a CPU (cache-sized), 8,192 on a GPU, for CIFAR-sized images (at least 1)."""
    return _scaled(PASS_SAMPLES, device, sample_shape, floor=1)


class MemoryMeter:
    """What batch sizing reads of a device's memory: CUDA's allocator on a GPU; a CPU has no
    budget to size to (``free`` is None). Tests put a simulated device in ``METER``'s place."""

    def free(self, device: torch.device) -> int | None:
        """Bytes a stage can still allocate: the device's free memory plus what PyTorch's caching
        allocator holds unused; None on a CPU."""
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))

    def measure(self, device: torch.device, fn: Callable[[], T]) -> tuple[T, int]:
        """``fn()`` and the peak bytes it allocated beyond what was allocated before it."""
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - base)


METER = MemoryMeter()
PROBE_IMAGES = 4  # images of the probe pass: its fixed overheads count per image, so the fit errs small


class DeviceBatch:
    """How many images a stage puts through the device at once, sized to the device's memory.

    On a device with a memory budget (a GPU) and a ``fraction``, the first pass is a probe of
    ``PROBE_IMAGES`` images: its peak memory per image sets the size that fills ``fraction`` of
    the memory free before it (at most ``cap``, at least 1). Passes that still run out of memory
    are halved by the caller (:meth:`halve`). Without a budget (a CPU) the size is ``cap``. One
    object can serve several runs of the same work (the timing stage's repeats): it probes once."""

    def __init__(self, cap: int, device: torch.device, fraction: float | None = None) -> None:
        self.size, self.device, self.fraction = cap, device, fraction or 0.0
        self.pending = fraction is not None and METER.free(device) is not None

    def next(self, remaining: int) -> int:
        """Images of the next pass."""
        return min(remaining, PROBE_IMAGES if self.pending else self.size)

    def run(self, k: int, fn: Callable[[], T], desc: str) -> T:
        """``fn()`` on the next ``k`` images, measured when it is the probe."""
        if not self.pending:
            return fn()
        free = METER.free(self.device)
        out, peak = METER.measure(self.device, fn)
        self.pending = False
        if free is not None and peak > 0:
            self.size = max(1, min(self.size, int(self.fraction * free * k // peak)))
            log.info("%s: %.3g MiB per image on the probe pass, %.3g GiB free: passes of %d images",
                     desc, peak / k / 2**20, free / 2**30, self.size)
        return out

    def halve(self, k: int) -> int:
        """After ``k`` images ran the device out of memory: the new size (half of ``k``)."""
        self.pending = False
        self.size = -(-k // 2)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self.size


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16). Without either, bf16
    autocast is emulated: measured 18x slower than float32 on an AVX2 CPU (ResNet-20)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def shard_range(n: int, batch_size: int, shard: Shard | None) -> tuple[int, int]:
    """Images [lo, hi) of shard ``(i, k)`` (1-based i): whole batches, as even as possible, so a
    sharded run draws exactly the batches (and per-batch seeds) of an unsharded one."""
    if shard is None:
        return 0, n
    i, k = shard
    n_batches = -(-n // batch_size)
    lo_b, hi_b = (i - 1) * n_batches // k, i * n_batches // k
    return min(n, lo_b * batch_size), min(n, hi_b * batch_size)


def setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[preempt %(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(os.environ.get("PREEMPT_LOGLEVEL", "INFO"))
        log.propagate = False


# glibc's malloc gives large freed blocks back to the kernel (munmap, heap trimming), so every
# activation of a CPU pass lands on fresh pages that fault in again, zeroed by the kernel: measured
# 21,834 page faults per ResNet-20 forward+backward pass of 128 CIFAR images on one thread, 205 once
# freed memory is kept, and 18% less time per pass (more at larger passes). The process keeps its
# peak memory instead; results do not change (the allocator is not part of the arithmetic).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20              # glibc's largest M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the process (blocks up to 32 MiB from the heap,
    no trimming). False where the C library has no ``mallopt`` (macOS) or refuses the settings."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def configure(rt: RuntimeConfig) -> torch.device:
    """Fix threads and determinism for this process, keep freed memory, and pick the device."""
    torch.set_num_threads(rt.num_threads)
    keep_freed_memory()
    if rt.device == "cuda" and not torch.cuda.is_available():
        raise PreemptError("runtime.device: 'cuda' requested but no GPU is visible; set runtime.device: auto or cpu")
    if rt.device == "cpu" or (rt.device == "auto" and not torch.cuda.is_available()):
        # CPU kernels are deterministic for a fixed thread count (bit-identical reruns are tested);
        # the flag below only matters for CUDA kernels and costs ~1.5 s of imports per job.
        return torch.device("cpu")
    # cuBLAS needs this workspace setting for deterministic matmuls (before its first use)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = rt.tf32
    return torch.device("cuda")


class Accelerated(torch.nn.Module):
    """A frozen model run with the speed options of ``runtime``: autocast (AMP) forward passes
    whose logits come back as float32, and/or channels-last inputs. Gradients still flow to the input."""

    def __init__(self, model: torch.nn.Module, amp: bool, channels_last: bool, device_type: str = "cuda") -> None:
        super().__init__()
        self.model, self.amp, self.channels_last, self.device_type = model, amp, channels_last, device_type
        cuda_bf16 = device_type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if device_type == "cpu" or cuda_bf16 else torch.float16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.amp):
            return self.model(x).float()


def fold_bn(model: torch.nn.Module, sample_shape: Sequence[int]) -> torch.nn.Module:
    """The model with each eval-mode BatchNorm folded into the convolution before it (torch.fx's
    ``fuse``: one pass less over each activation, the same function up to float rounding).

    Tracing runs ``forward`` once with placeholders, so control flow or randomness inside it could
    be traced wrongly: the folded model is kept only if it computes what the model computes on a
    seeded probe batch of ``sample_shape`` images (a randomized model never does); otherwise the
    model is returned as it is, with a log line."""
    if model.training or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        folded = fx_fuse(model)
        device = next(model.parameters()).device
        probe = torch.rand(4, *sample_shape, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            want, got = model(probe), folded(probe)
        same = want.shape == got.shape and torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    except Exception as err:  # torch.fx raises many kinds of errors on code it cannot trace
        same, why = False, str(err).splitlines()[0][:120] if str(err) else type(err).__name__
    else:
        why = "the folded model computes something else on a probe batch"
    if same:
        return folded
    log.info("runtime: fold_bn left %s as it is (%s)", type(model).__name__, why)
    return model


def accelerate(model: torch.nn.Module, rt: RuntimeConfig, device: torch.device | str,
               sample_shape: Sequence[int] | None = None) -> torch.nn.Module:
    """Apply ``runtime.amp`` / ``channels_last`` / ``compile`` / ``fold_bn`` to a model on its device.

    All four default off (the papers' numbers are float32). ``channels_last`` and ``fold_bn`` (which
    needs ``sample_shape``, one image's shape, for its check) work on both devices; ``amp`` on CUDA
    and on CPUs with native bfloat16 (else ignored with one log line: emulated bf16 is an order of
    magnitude slower); ``compile`` on CUDA only (on a CPU its minute of compilation costs more than
    a stage's passes gain)."""
    kind = torch.device(device).type
    wanted = [k for k in ("amp", "channels_last", "compile", "fold_bn") if getattr(rt, k)]
    if not wanted:
        return model
    if rt.fold_bn:
        if sample_shape is None:
            raise ValueError("runtime.fold_bn needs the images' shape to check the folded model")
        model = fold_bn(model, sample_shape)
    unsupported = [k for k in wanted if kind != "cuda" and (k == "compile" or (k == "amp" and not cpu_has_bf16()))]
    if unsupported:
        why = "no AMX or AVX512-BF16 on this CPU" if "amp" in unsupported else "CUDA only"
        log.info("runtime: %s ignored on %s (%s)", ", ".join(unsupported), device, why)
    amp = rt.amp and "amp" not in unsupported
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if amp or rt.channels_last:
        model = Accelerated(model, amp, rt.channels_last, "cuda" if kind == "cuda" else "cpu")
    if rt.compile and kind == "cuda":
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG for one stage: randomness never depends on what ran before in the process."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def batch_generator(seed: int, start: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The RNG of the batch that starts at image ``start``: a batch draws the same numbers however
    the images are split into shards or jobs (the seed mixes both with a 64-bit hash)."""
    digest = hashlib.sha256(f"{seed}:{start}".encode()).digest()
    return generator(int.from_bytes(digest[:8], "little") & (2**63 - 1), device)


class ImageStreams:
    """One seeded random stream per image: image ``j`` of the stage draws from
    ``batch_generator(seed, j)``, the generator a batch of that one image would have. What an image
    draws therefore depends neither on the batch it is in, nor on chunking or shards, so
    ``runtime.batch_size`` is a pure speed knob for the defenses that draw through this."""

    def __init__(self, seed: int, index: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.gens = [batch_generator(seed, int(j), device) for j in index]

    def draw(self, per_image: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """``per_image(g)`` for each image's generator, stacked on a new dim 1 (images): a
        ``(k, ...)`` draw per image gives ``(k, images, ...)``."""
        return torch.stack([per_image(g) for g in self.gens], 1)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm progress bar on stderr (quiet when PREEMPT_PROGRESS=0)."""
    disable = os.environ.get("PREEMPT_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, file=sys.stderr)

"""Runtime helpers: per-batch generators (what makes sharding bit-identical) and the GPU options."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from preempt.runtime import RuntimeConfig
from preempt import runtime
from preempt.runtime import (Accelerated, ImageStreams, accelerate, auto_batch_size, auto_chunk, batch_generator,
                             configure)


def test_a_batch_draws_the_same_numbers_wherever_it_runs() -> None:
    a = torch.rand(5, generator=batch_generator(0, 256))
    assert torch.equal(a, torch.rand(5, generator=batch_generator(0, 256)))
    assert not torch.equal(a, torch.rand(5, generator=batch_generator(0, 512)))  # another batch
    assert not torch.equal(a, torch.rand(5, generator=batch_generator(1, 256)))  # another seed


def test_an_image_stream_is_the_stream_of_a_batch_of_that_one_image() -> None:
    s = ImageStreams(7, range(3, 6))
    drawn = s.draw(lambda g: torch.rand(4, generator=g))
    assert drawn.shape == (4, 3)
    for k, j in enumerate(range(3, 6)):
        assert torch.equal(drawn[:, k], torch.rand(4, generator=batch_generator(7, j)))


def test_auto_sizes_follow_the_device_and_the_image_size() -> None:
    cifar, imagenet = (3, 32, 32), (3, 224, 224)
    assert auto_chunk("cpu", cifar) == 128 and auto_chunk("cuda", cifar) == 8192
    assert auto_batch_size("cpu", cifar) == 256 and auto_batch_size("cuda", cifar) == 1024
    assert auto_chunk("cuda", imagenet) == 8192 * 3072 // (3 * 224 * 224)  # fewer, larger images per pass
    assert auto_batch_size("cpu", (1, 8, 8)) > auto_batch_size("cpu", cifar)
    assert RuntimeConfig(batch_size="auto").batch("cpu", cifar) == 256
    assert RuntimeConfig(batch_size=64).batch("cuda", cifar) == 64  # a number is kept as given


def test_speed_options_are_off_by_default_and_cpu_ignores_what_it_cannot_run(linear, monkeypatch) -> None:
    assert not any(getattr(RuntimeConfig(), k) for k in ("amp", "channels_last", "compile"))
    assert accelerate(linear, RuntimeConfig(), "cuda") is linear  # nothing asked, nothing wrapped
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert accelerate(linear, RuntimeConfig(amp=True, compile=True), "cpu") is linear  # emulated bf16: ignored
    cl = accelerate(linear, RuntimeConfig(channels_last=True), "cpu")
    assert isinstance(cl, Accelerated) and cl.channels_last and not cl.amp
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # an AMX / AVX512-BF16 CPU
    amp = accelerate(linear, RuntimeConfig(amp=True), "cpu")
    assert isinstance(amp, Accelerated) and amp.amp and amp.dtype == torch.bfloat16 and amp.device_type == "cpu"


def test_a_cuda_stage_runs_true_float32_unless_tf32_is_asked_for(monkeypatch) -> None:
    """PyTorch's default lets cuDNN use TF32, which makes a GPU's REs depend on the batch size."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # configure only sets flags here
    was = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32, torch.get_num_threads()
    try:
        assert configure(RuntimeConfig(device="cuda")).type == "cuda"
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        configure(RuntimeConfig(device="cuda", tf32=True))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.use_deterministic_algorithms(was[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = was[1], False
        torch.set_num_threads(was[2])


class _ConvBN(torch.nn.Module):
    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4 * 6 * 6, 3)
        self.bn.running_mean.uniform_(-1, 1), self.bn.running_var.uniform_(0.5, 2)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc((h + self.noise * torch.randn_like(h)).flatten(1))


def test_fold_bn_keeps_the_function_and_its_input_gradients() -> None:
    model = _ConvBN().eval()
    folded = runtime.fold_bn(model, (1, 8, 8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    (g_model,) = torch.autograd.grad(model(x).sum(), x)
    (g_folded,) = torch.autograd.grad(folded(x).sum(), x)
    assert torch.allclose(folded(x), model(x), atol=1e-5) and torch.allclose(g_folded, g_model, atol=1e-5)
    fl = accelerate(model, RuntimeConfig(fold_bn=True, channels_last=True), "cpu", (1, 8, 8))
    assert isinstance(fl, Accelerated) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fl.modules())


def test_fold_bn_leaves_a_model_it_cannot_check(caplog) -> None:
    """A model whose forward draws noise never matches its folded copy on the probe: kept as it is."""
    noisy = _ConvBN(noise=1.0).eval()
    logger = logging.getLogger("preempt")  # preempt's own logger does not propagate once set up
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="preempt"):
            assert runtime.fold_bn(noisy, (1, 8, 8)) is noisy
    finally:
        logger.removeHandler(caplog.handler)
    assert "fold_bn left _ConvBN" in caplog.text
    assert runtime.fold_bn(_ConvBN().train(), (1, 8, 8)).training  # training mode: BN is not a constant
    with pytest.raises(ValueError, match="shape"):
        accelerate(_ConvBN().eval(), RuntimeConfig(fold_bn=True), "cpu")


def test_cpu_bf16_autocast_gives_float32_logits_close_to_float32(linear, images) -> None:
    """What the opt-in computes on a CPU (emulated here if the CPU has no native bf16)."""
    out = Accelerated(linear, amp=True, channels_last=False, device_type="cpu")(images)
    assert out.dtype == torch.float32
    assert torch.allclose(out, linear(images), atol=0.05, rtol=0.05)


def test_the_amp_wrapper_returns_float32_logits_and_input_gradients(linear, images) -> None:
    wrapped = Accelerated(linear, amp=False, channels_last=True)
    x = images.clone().requires_grad_(True)
    out = wrapped(x)
    assert out.dtype == torch.float32 and torch.allclose(out, linear(images))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_stage_process_keeps_freed_memory_so_passes_do_not_fault_pages_in_again() -> None:
    """glibc's default hands large freed blocks back to the kernel: each pass then faults its
    activations in afresh. Counted in a fresh process (mallopt cannot be undone), on one thread."""
    code = textwrap.dedent("""
        import resource, torch
        from preempt.runtime import keep_freed_memory
        torch.set_num_threads(1)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Flatten(), torch.nn.Linear(16 * 32 * 32, 10))
        x = torch.rand(64, 3, 32, 32, requires_grad=True)
        def faults():
            for _ in range(2):
                net(x).sum().backward()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(5):
                net(x).sum().backward()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        default = faults()
        assert keep_freed_memory()
        print(default, faults())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    default, kept = map(int, out.split())
    assert kept * 5 < default, (default, kept)

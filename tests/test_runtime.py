"""Runtime helpers: per-batch generators (what makes sharding bit-identical) and the GPU options."""

from __future__ import annotations

import torch

from preempt.runtime import RuntimeConfig
from preempt.runtime import Accelerated, accelerate, batch_generator


def test_a_batch_draws_the_same_numbers_wherever_it_runs() -> None:
    a = torch.rand(5, generator=batch_generator(0, 256))
    assert torch.equal(a, torch.rand(5, generator=batch_generator(0, 256)))
    assert not torch.equal(a, torch.rand(5, generator=batch_generator(0, 512)))  # another batch
    assert not torch.equal(a, torch.rand(5, generator=batch_generator(1, 256)))  # another seed


def test_gpu_options_are_off_by_default_and_ignored_on_cpu(linear) -> None:
    assert not any(getattr(RuntimeConfig(), k) for k in ("amp", "channels_last", "compile"))
    on = RuntimeConfig(amp=True, channels_last=True, compile=True)
    assert accelerate(linear, on, "cpu") is linear
    assert accelerate(linear, RuntimeConfig(), "cuda") is linear  # nothing asked, nothing wrapped


def test_the_amp_wrapper_returns_float32_logits_and_input_gradients(linear, images) -> None:
    wrapped = Accelerated(linear, amp=False, channels_last=True)  # autocast is CUDA-only; the rest runs here
    x = images.clone().requires_grad_(True)
    out = wrapped(x)
    assert out.dtype == torch.float32 and torch.allclose(out, linear(images))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

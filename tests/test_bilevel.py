"""Bi-Level (Moon et al. 2022): the RE lowers the loss the inner attacker can reach, in budget."""

from __future__ import annotations

import pytest
import torch

from preempt.defenses import DEFENSES
from preempt.defenses.bilevel import (BiLevelConfig, decode, draw, encode, initial, inner_attack, outer_grad,
                                      robustify)
from preempt.runtime import ImageStreams, generator


def worst(model: torch.nn.Module, z: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig, seed: int) -> float:
    """A fresh inner attacker's CE on z (other random starts than the defender's)."""
    adv = inner_attack(model, z, y, cfg, draw(z, 1, cfg.eps, cfg.norm, generator(seed), None)[0])
    return float(torch.nn.functional.cross_entropy(model(adv), y))


@pytest.mark.parametrize("norm,eps,lr", [("Linf", 0.1, None), ("L2", 0.5, 0.05)])
def test_bilevel_res_lower_the_inner_attack_loss_within_budget(linear, images, norm, eps, lr) -> None:
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=eps, max_iter=20, inner_steps=5, norm=norm, lr=lr)
    xr = robustify(images, y, linear, cfg, generator(0))
    dist = (xr - images).abs().amax((1, 2, 3)) if norm == "Linf" else (xr - images).flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-5).all() and xr.min() >= 0 and xr.max() <= 1

    assert worst(linear, xr, y, cfg, 123) < 0.5 * worst(linear, images, y, cfg, 123)


def test_bilevel_is_a_registered_defense_with_the_paper_defaults() -> None:
    cfg = DEFENSES["bilevel"].config.model_validate({"method": "bilevel", "classifier": "c", "backbone": "b",
                                                      "eps": 8 / 255})
    assert (cfg.max_iter, cfg.inner_steps, cfg.n_samples, cfg.inner_alpha, cfg.lr) == (100, 20, 1, None, None)


def test_reverse_dynamics_raise_the_worst_case_loss(linear, images) -> None:
    """Moon et al.'s reconstruction runs the same optimisation the other way from x_r."""
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=0.1, max_iter=10, inner_steps=5)
    xr = robustify(images, y, linear, cfg, generator(0))
    rec = robustify(xr, y, linear, cfg.model_copy(update={"reverse": True}), generator(1))

    assert worst(linear, rec, y, cfg, 5) > 2 * worst(linear, xr, y, cfg, 5)
    assert (rec - xr).abs().max() <= 0.1 + 1e-5


def test_reconstruct_reversion_reruns_the_defense_reversed() -> None:
    from preempt.reversions import REVERSIONS

    calls = []

    def redefend(x, roles, **updates):
        calls.append((roles, updates))
        return x + 0.5

    cfg = REVERSIONS["reconstruct"].config(backbone="surrogate")
    out = REVERSIONS["reconstruct"].fn(torch.full((1, 1, 2, 2), 0.25), cfg=cfg, redefend=redefend, generator=None)
    assert calls == [({"backbone": "surrogate", "classifier": "surrogate"}, {"reverse": True})]
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 0.75))


def test_preemptively_robust_training_inputs_stay_within_both_budgets(linear, images) -> None:
    """Algorithm 2: robustify (eps), then attack from there (eps): at most 2 eps from x."""
    from preempt.models.recipes import RECIPES

    y = linear(images).argmax(1)
    entry = RECIPES["preemptive_at"]
    x_in = entry.fn(linear, images, y, cfg=entry.config(eps=0.05, outer_iters=2, steps=3), generator=generator(0))
    assert (x_in - images).abs().max() <= 0.1 + 1e-5
    assert float(torch.nn.functional.cross_entropy(linear(x_in), y)) > float(torch.nn.functional.cross_entropy(linear(images), y))


def test_bilevel_runs_with_labels_predicted_in_inference_mode(linear, images) -> None:
    """The registered entry labels x with the classifier (inference mode) before autograd runs."""
    entry = DEFENSES["bilevel"]
    cfg = entry.config(classifier="c", backbone="b", eps=0.1, max_iter=2, inner_steps=2)
    xr = entry.fn(images, cfg=cfg, models={"classifier": linear, "backbone": linear}, y_true=None, generator=generator(0))
    assert xr.shape == images.shape


@pytest.mark.parametrize("norm,eps,lr", [("Linf", 0.1, None), ("L2", 0.5, 0.05)])
def test_trace_records_moon_figs_4_and_5_without_changing_the_res(linear, images, norm, eps, lr) -> None:
    """Per image and outer iteration: the update-gradient norm (Fig. 5) and the inner attack's loss;
    after the loop, the worst-case loss of the final RE (Fig. 4's h~(x_r))."""
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=eps, max_iter=7, inner_steps=3, norm=norm, lr=lr)
    plain = robustify(images, y, linear, cfg, generator(0))
    trace: dict[str, list[torch.Tensor]] = {}
    traced = robustify(images, y, linear, cfg, generator(0), trace)
    assert torch.equal(plain, traced)
    assert len(trace["grad_norm"]) == len(trace["loss"]) == 7 and len(trace["final_loss"]) == 1
    assert all(g.shape == (len(images),) and (g >= 0).all() for g in trace["grad_norm"])
    assert float(trace["grad_norm"][0].min()) > 0
    first, final = trace["loss"][0], trace["final_loss"][0]
    assert float(final.mean()) < float(first.mean())  # the robustification lowered the worst case


def test_the_registered_defense_fills_the_stage_trace(linear, images) -> None:
    from preempt.defenses import run

    cfg = BiLevelConfig(classifier="c", backbone="b", eps=0.1, max_iter=3, inner_steps=2)
    trace: dict[str, list[torch.Tensor]] = {}
    run(cfg, images, models={"classifier": linear, "backbone": linear}, y_true=None, generator=generator(0), trace=trace)
    assert {k: len(v) for k, v in trace.items()} == {"grad_norm": 3, "loss": 3, "final_loss": 1}


# --- fidelity to Algorithm 1 and the authors' code (issue: random start, gradient averaging, ...) ---

def cfg_(**kw: object) -> BiLevelConfig:
    return BiLevelConfig(classifier="c", backbone="b", **{"eps": 0.1, "max_iter": 5, "inner_steps": 3, **kw})


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 0.5)])
def test_random_start_lies_in_the_ball_and_differs_per_seed(images, norm, eps) -> None:
    cfg = cfg_(norm=norm, eps=eps)
    a, b = (initial(images, cfg, generator(0), ImageStreams(s, range(16))) for s in (0, 1))
    d = (a - images).abs().amax((1, 2, 3)) if norm == "Linf" else (a - images).flatten(1).norm(dim=1)
    assert (d <= eps + 1e-6).all() and a.min() >= 0 and a.max() <= 1
    assert float(d.min()) > 0.5 * eps  # a draw in the ball, not x
    assert not torch.allclose(a, b, atol=1e-3)
    assert torch.equal(initial(images, cfg.model_copy(update={"start": "original"}), generator(0)), images)
    # the reconstruction starts at the image it is given (the authors' rec=True)
    assert torch.equal(initial(images, cfg.model_copy(update={"reverse": True}), generator(0)), images)


def test_start_is_the_default_and_x_start_is_a_variant_with_its_own_ref() -> None:
    paper = cfg_(max_iter=100, inner_steps=20, eps=8 / 255)
    assert (paper.start, paper.update) == ("random", "unrolled")
    assert paper.ref() == "bilevel/Linf/eps0.0314/iter100/T20"  # the published numbers' key
    assert paper.model_copy(update={"start": "original"}).ref().endswith("/x-start")
    assert paper.model_copy(update={"update": "fixed_delta"}).ref().endswith("/fixed-delta")
    assert paper.model_copy(update={"n_samples": 4}).ref().endswith("/N4")


@pytest.mark.parametrize("update", ["unrolled", "fixed_delta"])
def test_n_sample_gradient_is_the_mean_of_the_per_sample_gradients(linear, images, update) -> None:
    """Algorithm 1: (1/N) sum_n dl(x^a_n)/dx_r, each x^a_n its own inner attack (autograd, one by one)."""
    y = linear(images).argmax(1)
    cfg = cfg_(n_samples=3, update=update)
    noise = draw(images, 3, cfg.eps, "Linf", generator(0), None)
    got = outer_grad(linear, images, y, cfg, noise)
    per_sample = []
    for n in range(3):
        xr = images.clone().requires_grad_(True)
        adv = inner_attack(linear, xr, y, cfg, noise[n])
        if update == "fixed_delta":
            adv = xr + (adv - xr).detach()  # delta* held fixed
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(linear(adv), y, reduction="sum"), xr)
        per_sample.append(g)
    assert torch.allclose(got, torch.stack(per_sample).mean(0), atol=1e-6)
    # and not the gradient at the mean perturbation (the project's old, weaker inner adversary)
    adv_mean = torch.stack([inner_attack(linear, images, y, cfg, noise[n]) for n in range(3)]).mean(0)
    xm = adv_mean.clone().requires_grad_(True)
    (g_mean,) = torch.autograd.grad(torch.nn.functional.cross_entropy(linear(xm), y, reduction="sum"), xm)
    assert not torch.allclose(got, g_mean, atol=1e-4)


def test_unrolled_update_masks_the_gradient_where_the_inner_attack_sits_on_the_box(linear) -> None:
    """The authors' gradient flows through the inner PGD's projection and clipping: per pixel it is
    the fixed-delta gradient times 0 or 1, 0 where the inner iterate is clipped to [0, 1]."""
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x[:, :, :2] = 0.0  # rows on the box: the inner attack clips there
    y = linear(x).argmax(1)
    cfg = cfg_(eps=0.1)
    noise = draw(x, 1, cfg.eps, "Linf", generator(0), None)
    unrolled = outer_grad(linear, x, y, cfg, noise)
    fixed = outer_grad(linear, x, y, cfg.model_copy(update={"update": "fixed_delta"}), noise)
    same, masked = torch.isclose(unrolled, fixed, atol=1e-7), unrolled == 0
    assert (same | masked).all()
    adv = inner_attack(linear, x, y, cfg, noise[0])
    on_box = (adv == 0) | (adv == 1)
    assert masked[on_box].all() and on_box.any()
    assert same[~on_box].float().mean() > 0.9  # inside the box the two gradients agree


def test_linf_parametrisation_is_the_authors_tanh_map(images) -> None:
    """w = atanh(1.999 (u - 1/2)), u = (x - lo) / (hi - lo); x = lo + (tanh(w) + 1) / 2 (hi - lo), with
    atanh written as the authors do, 0.5 log((1 + t) / (1 - t))."""
    eps = 0.1
    lo, hi = (images - eps).clamp(0, 1), (images + eps).clamp(0, 1)
    t = ((images - lo) / (hi - lo) - 0.5) * 1.999
    assert torch.allclose(encode(images, lo, hi - lo), 0.5 * torch.log((1 + t) / (1 - t)), atol=1e-5)
    w = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(decode(w, lo, hi - lo), lo + (torch.tanh(w) + 1) / 2 * (hi - lo))
    back = decode(encode(images, lo, hi - lo), lo, hi - lo)  # the map's start: x pulled 0.05% to the box centre
    assert torch.allclose(back, (lo + hi) / 2 + 0.9995 * (images - (lo + hi) / 2), atol=1e-6)


@pytest.mark.parametrize("norm,eps,lr", [("Linf", 0.1, None), ("L2", 0.5, 0.05)])
def test_res_are_bit_identical_across_batch_sizes_and_shards(linear, images, norm, eps, lr) -> None:
    """Each image draws its start and every inner start from its own stream (the defend stage's
    ``compute``), so batch size and shard split leave every RE unchanged."""
    from preempt.stages.defend import compute

    class Rowwise(torch.nn.Module):
        """``linear`` computed image by image: a GEMM's float result depends on the batch's size,
        this does not, so the test pins the defense's own randomness, bit for bit."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.flatten(1).unsqueeze(1) * linear.w).sum(-1) + linear.b

    model = Rowwise()
    cfg = cfg_(norm=norm, eps=eps, lr=lr, n_samples=2)
    models = {"classifier": model, "backbone": model}
    y = torch.arange(16) % 10

    def res(lo: int, hi: int, bs: int) -> torch.Tensor:
        return compute(cfg, images[lo:hi], y[lo:hi], models, lo=lo, batch_size=bs, device=torch.device("cpu"))[0]

    whole = res(0, 16, 16)
    for bs in (5, 1):
        assert torch.equal(whole, res(0, 16, bs))
    assert torch.equal(whole, torch.cat([res(0, 7, 16), res(7, 16, 4)]))  # two shards
    # the streams are what makes it so: one generator per batch gives other REs
    per_batch = torch.cat([robustify(images[i:i + 5], y[i:i + 5], model, cfg, generator(0))
                           for i in range(0, 16, 5)])
    assert not torch.allclose(whole, per_batch, atol=1e-3)


def test_reconstruction_from_a_random_start_re_ends_farther_from_x(linear, images) -> None:
    """Moon et al. Sec. 3.7 / Fig. 3: reversing the dynamics from an x-start RE walks back towards
    x; from a random-start RE it does not know where x was. (lr 0.01: at 0.1 the linear model's
    REs all saturate in the same corner of the box, whatever the start.)"""
    y = linear(images).argmax(1)
    cfg = cfg_(max_iter=20, inner_steps=5, eps=0.1, lr=0.01)
    error = {}
    for start in ("original", "random"):
        c = cfg.model_copy(update={"start": start})
        xr = robustify(images, y, linear, c, generator(0), streams=ImageStreams(0, range(16)))
        rec = robustify(xr, linear(xr).argmax(1), linear, c.model_copy(update={"reverse": True}), generator(1))
        error[start] = (rec - images).abs().flatten(1).mean(1)  # mean |x~ - x| per image
    assert float(error["random"].mean()) > 2 * float(error["original"].mean())


def test_a_batch_out_of_memory_is_retried_in_halves_with_the_same_res(linear, images) -> None:
    """A simulated device budget of 4 images: the defend stage's batches of 16 go on in batches of
    4, and the REs are those of the unconstrained run (per-image streams); one image over budget
    is the CLI's one-line error."""
    from preempt.stages.defend import compute

    class Budget(torch.nn.Module):
        def __init__(self, limit: int) -> None:
            super().__init__()
            self.limit, self.seen = limit, []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(len(x))
            if len(x) > self.limit:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return (x.flatten(1).unsqueeze(1) * linear.w).sum(-1) + linear.b  # batch-invariant linear

    cfg = cfg_(max_iter=3, inner_steps=2)
    y = torch.arange(16) % 10
    free, tight = Budget(10_000), Budget(4)
    want = compute(cfg, images, y, {"classifier": free, "backbone": free}, lo=0, batch_size=16, device=torch.device("cpu"))[0]
    got = compute(cfg, images, y, {"classifier": tight, "backbone": tight}, lo=0, batch_size=16, device=torch.device("cpu"))[0]
    assert torch.equal(want, got) and max(n for n in tight.seen[-20:]) <= 4
    with pytest.raises(torch.OutOfMemoryError):
        compute(cfg, images, y, {"classifier": Budget(0), "backbone": Budget(0)}, lo=0, batch_size=16,
                device=torch.device("cpu"))


def test_a_gpu_stage_sizes_its_passes_to_the_measured_free_memory(linear, images, monkeypatch) -> None:
    """A simulated GPU that holds 10 images' activations: the probe pass of 4 images measures the
    memory per image, later passes take 80% of the free memory (8 images), none runs out of
    memory, and the REs are those of the unconstrained run. The timing stage's repeats reuse
    the size (one probe); ``runtime.model_batch`` caps it."""
    from preempt import runtime
    from preempt.stages.defend import compute

    per_image = 1000
    budget = 10 * per_image

    class Sim(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(len(x))
            if len(x) * per_image > budget:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return (x.flatten(1).unsqueeze(1) * linear.w).sum(-1) + linear.b

    class Meter:
        probes = 0

        def free(self, device: torch.device) -> int:
            return budget

        def measure(self, device: torch.device, fn):  # peak: the largest pass the probe made
            Meter.probes += 1
            start = len(sim.seen)
            out = fn()
            return out, max(sim.seen[start:]) * per_image

    sim, unlimited = Sim(), Sim()
    monkeypatch.setattr(runtime, "METER", Meter())
    cfg = cfg_(max_iter=3, inner_steps=2)
    y = torch.arange(16) % 10
    dev = torch.device("cpu")
    budget = 10_000 * per_image
    want = compute(cfg, images, y, {"classifier": unlimited, "backbone": unlimited}, lo=0, batch_size=16, device=dev)[0]
    budget = 10 * per_image
    passes = runtime.DeviceBatch(16, dev, fraction=0.8)
    got = compute(cfg, images, y, {"classifier": sim, "backbone": sim}, lo=0, batch_size=16, device=dev, passes=passes)[0]
    assert torch.equal(want, got)
    assert passes.size == 8 and Meter.probes == 1
    assert sim.seen[0] == runtime.PROBE_IMAGES and max(sim.seen) == 8  # the probe, then passes of 8
    compute(cfg, images, y, {"classifier": sim, "backbone": sim}, lo=0, batch_size=16, device=dev, passes=passes)
    assert Meter.probes == 1  # a second run with the same passes does not probe again
    capped = runtime.DeviceBatch(3, dev, fraction=0.8)
    compute(cfg, images[:8], y[:8], {"classifier": sim, "backbone": sim}, lo=0, batch_size=8, device=dev, passes=capped)
    assert capped.size == 3


def test_model_batch_caps_the_batches_of_the_stages_that_run_the_model() -> None:
    """``runtime.model_batch``: the smallest entry among a stage's models applies; other models and
    an unset entry leave ``runtime.batch_size``; a name that is no model is one error line."""
    from preempt.errors import ConfigError
    from preempt.runtime import RuntimeConfig

    rt = RuntimeConfig(batch_size=256, model_batch={"big": 32, "huge": 8})
    assert rt.batch("cpu", (3, 32, 32)) == 256
    assert rt.batch("cpu", (3, 32, 32), ["small"]) == 256
    assert rt.batch("cpu", (3, 32, 32), ["big", "small"]) == 32
    assert rt.batch("cpu", (3, 32, 32), ["big", "huge"]) == 8
    from preempt import config
    raw = config.load().raw
    with pytest.raises(ConfigError, match=r"runtime.model_batch: 'nosuch' is not defined in models"):
        config.parse({**raw, "runtime": {**raw.get("runtime", {}), "model_batch": {"nosuch": 4}}}, "params.yaml")

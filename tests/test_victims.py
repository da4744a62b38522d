"""Test-time defenses deployed as victims: transform wrappers with BPDA/EOT, Trigger Activation
(accurate only with its trigger) and JATP (its denoiser lowers the adaptive attack's success)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import Linear
from preempt.attacks import eot_grad, input_grad
from preempt.attacks.pgd import pgd
from preempt.data import DATASETS
from preempt.metrics import accuracy, predict
from preempt.models import frozen
from preempt.models import ImageSpec
from preempt.models.train import TrainConfig, fit
from preempt.models.transform import transform_entry
from preempt.models.wrappers import Preprocessed, Transform, bpda


@pytest.fixture(scope="module")
def digits():
    ds = DATASETS["digits"]
    c = ds.config(name="digits")
    tr, te = ds.fn(c, "train"), ds.fn(c, "test")
    return tr, te, ImageSpec(tuple(tr.x.shape[1:]), 10, tr.mean, tr.std)


def wrap(method: str, model: nn.Module, **kw) -> Preprocessed:
    fn, cfg = transform_entry({"method": method, **kw})
    return Preprocessed(Transform(fn, cfg, seed=0), model, type(cfg).differentiable)


def test_non_differentiable_transforms_are_attacked_through_bpda(images) -> None:
    """JPEG and bit-depth have no useful gradient: the wrapper's gradient is the model's gradient
    at the transformed image (straight-through), and the forward pass is the real transform."""
    lin = Linear(0).eval()
    y = torch.arange(16) % 10
    for method, kw in (("jpeg", {"quality": 75}), ("bitdepth", {"bits": 3})):
        v = wrap(method, lin, **kw)
        fn, cfg = transform_entry({"method": method, **kw})
        z = fn(images, cfg=cfg, generator=None)
        assert torch.allclose(v(images), lin(z))
        assert torch.allclose(input_grad(v, images, y), input_grad(lin, z, y), atol=1e-5)


def test_bpda_context_switches_differentiable_transforms_to_the_identity_gradient(images) -> None:
    lin = Linear(0).eval()
    y = torch.arange(16) % 10
    v = wrap("gaussian", lin, sigma=1.0)
    full = input_grad(v, images, y)
    with bpda(v):
        straight = input_grad(v, images, y)
    assert not torch.allclose(full, straight)
    assert torch.allclose(straight, input_grad(lin, v.pre(images), y), atol=1e-5)
    assert torch.allclose(input_grad(v, images, y), full)  # restored after the block


def test_eot_averages_the_gradient_of_a_randomized_victim(images) -> None:
    lin = Linear(0).eval()
    y = torch.arange(16) % 10
    v = wrap("resize_pad", lin, pad=3)
    assert not torch.equal(v(images), v(images))  # fresh randomness on every call
    g1, g2 = eot_grad(input_grad, v, images, y, 1), eot_grad(input_grad, v, images, y, 1)
    many = eot_grad(input_grad, v, images, y, 64)
    assert not torch.allclose(g1, g2)
    assert torch.allclose(eot_grad(input_grad, lin, images, y, 3), input_grad(lin, images, y), atol=1e-6)
    ref = eot_grad(input_grad, v, images, y, 64)  # two EOT estimates agree better than two samples
    assert (many - ref).norm() < (g1 - g2).norm()


def test_unknown_transform_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown transform 'jpg'; did you mean 'jpeg'"):
        transform_entry({"method": "jpg"})
    with pytest.raises(ValueError, match="unknown transform 'white'"):  # a reversion, not a transform
        transform_entry({"method": "white"})


def test_trigger_model_is_near_chance_without_its_trigger_and_accurate_with_it(digits) -> None:
    from preempt.models.trigger import TriggerConfig, deploy, initial_trigger, train_trigger

    tr, te, spec = digits
    for kind in ("fixed", "learnable"):
        cfg = TriggerConfig(arch="mlp", epochs=10, eps_t=0.1, trigger=kind)
        net, tau = train_trigger(cfg, tr.x, tr.y, spec, torch.device("cpu"))
        with_trigger = accuracy(predict(deploy(net, tau).eval(), te.x), te.y)
        without = accuracy(predict(net, te.x), te.y)
        assert with_trigger > 90 and without < 40, (kind, with_trigger, without)
        assert float(tau.abs().max()) <= 0.1 + 1e-6
        if kind == "fixed":  # Algorithm 1: a +-eps_t pattern that never changes
            assert torch.equal(tau, initial_trigger(cfg, spec.shape)) and torch.allclose(tau.abs(), torch.full_like(tau, 0.1))
        else:  # Algorithm 2: moved from its U(-alpha, alpha) start
            assert not torch.equal(tau, initial_trigger(cfg, spec.shape))


def test_an_unbounded_learnable_trigger_takes_algorithm_2s_sign_steps_and_refs_name_the_swept_knob(digits) -> None:
    """Algorithm 2 as written: no bound on tau, ``alpha`` sign steps during 60% of the epochs; the
    refs carry eps_t (Table I's sweep) and alpha (Table VII's), so published keys can tell them apart."""
    from preempt.models.trigger import TriggerConfig, initial_trigger, train_trigger

    tr, _, spec = digits
    cfg = TriggerConfig(arch="mlp", epochs=4, trigger="learnable", alpha=0.05)  # 2 learning epochs
    _, tau = train_trigger(cfg, tr.x[:256], tr.y[:256], spec, torch.device("cpu"))
    steps = (tau - initial_trigger(cfg, spec.shape)) / 0.05
    assert torch.allclose(steps, steps.round(), atol=1e-4) and float(steps.abs().max()) == pytest.approx(2)  # two +-alpha steps
    assert float(tau.abs().max()) > 0.1  # beyond both its start range and what eps_t = 0.1 would allow
    assert cfg.ref({}) == "trigger/mlp/learnable/alpha0.0500"
    assert TriggerConfig(arch="mlp", trigger="learnable", eps_t=0.1).ref({}) == "trigger/mlp/learnable/alpha0.0250/eps0.1000"
    assert TriggerConfig(arch="mlp", trigger="fixed", eps_t=4 / 255).ref({}) == "trigger/mlp/fixed/eps0.0157"
    with pytest.raises(ValueError, match="fixed trigger needs eps_t"):
        TriggerConfig(arch="mlp", trigger="fixed")
    with pytest.raises(ValueError, match="needs alpha"):
        TriggerConfig(arch="mlp", trigger="learnable")


def test_jatp_denoiser_lowers_the_adaptive_attack_success_on_its_target(digits) -> None:
    from preempt.models.jatp import JATPConfig, train_denoiser

    tr, te, spec = digits
    cpu = torch.device("cpu")
    target = frozen(fit(TrainConfig(arch="resnet8", epochs=4), tr.x, tr.y, spec, cpu))
    cfg = JATPConfig(target="t", eps=0.1, epochs=4, attack_steps=5, attack_step=0.05, width=32, lr=3e-4)
    victim = frozen(Preprocessed(train_denoiser("jatp", cfg, target, tr.x, tr.y, spec, cpu), target))
    x, y = te.x[:300], te.y[:300]
    assert accuracy(predict(victim, x), y) > 90

    def robust(model: nn.Module) -> float:  # adaptive white-box PGD through P and T
        adv = pgd(model, x, y, eps=0.1, alpha=0.025, steps=20, generator=torch.Generator().manual_seed(0))
        return accuracy(predict(model, adv), y)

    assert robust(victim) > robust(target) + 10


def test_jatp_feature_layer_typo_is_one_clear_line() -> None:
    from preempt.errors import PreemptError
    from preempt.models.archs import _resnet
    from preempt.models.jatp import feature_module

    holder = nn.Module()
    holder.net = _resnet(1, (1, 8, 8), 10)
    with pytest.raises(PreemptError, match="'net.layer4' is not a module of the target; did you mean 'net.layer"):
        feature_module(holder, "net.layer4", "j")


def test_jatp_boosted_cross_entropy_is_marts_and_stays_finite() -> None:
    """JATP's BCE is MART's boosted cross-entropy (Eq. 7), not binary cross-entropy: -log t_y - log(1 - max_{k!=y} t_k)."""
    from preempt.models.jatp import boosted_cross_entropy

    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 9, 2, 2, 5])
    p = logits.softmax(1)
    others = p.scatter(1, y[:, None], -1.0)
    naive = -p.gather(1, y[:, None]).squeeze(1).log() - (1 - others.max(1).values).log()
    assert torch.allclose(boosted_cross_entropy(logits, y), naive, atol=1e-5)
    # a confident wrong prediction: the naive log(1 - t_k) is log(0); ours is finite and large
    extreme = torch.tensor([[100.0, 0.0, -50.0]], requires_grad=True)
    loss = boosted_cross_entropy(extreme, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 150 and torch.isfinite(extreme.grad).all()

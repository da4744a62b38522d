"""``source: jatp``: a pre-processing denoiser P trained jointly against full adversarial examples
(Zhou et al., "Improving White-box Robustness of Pre-processing Defenses via Joint Adversarial
Training", NeurIPS 2021), deployed as the victim T(P(x)).

- P: a small residual network, a 3x3 convolution in, ``blocks`` (3) basic residual blocks
  (conv-BN-ReLU-conv-BN + identity), a 3x3 convolution out, added to the input and clipped to
  [0, 1] (P predicts the residual and starts as the identity; the clip passes the gradient
  straight through, otherwise a pixel pushed past a bound early in training never recovers).
- Full adversarial examples (Eq. 5), found in feature space: PGD-``attack_steps`` (random start,
  step ``attack_step``, the paper's 0.01) maximising ||F(T(P(x'))) - F(T(P(x)))||_2 over
  ||x' - x||_inf <= eps, with F the output of ``feature_layer`` of the frozen target (e.g.
  ``net.layer3``: a ResNet's third block). "Full" = through the current P and T together, not
  w.r.t. T alone.
- Loss on them (Eqs. 6-10): mean_i [BCE(x'_i) + ``alpha`` * FSM_i * (1 - t_y(T(P(x_i))))]
  + ``beta`` * mean_i ||P(x'_i) - x_i||_2, with alpha = 5 and beta = 3. BCE is the *boosted*
  cross-entropy of MART (Eq. 7): -log t_y - log(1 - max_{k != y} t_k) on T(P(x')); FSM (Eq. 8) is
  the mean squared difference of the features of P(x') and of P(x); the soft misclassification
  weight 1 - t_y of the clean example emphasises examples the full model gets wrong (MART).
- SGD (momentum 0.9, weight decay 2e-4), lr 1e-2, decayed x0.1 at 50% and 83% of the epochs
  (the paper's 15th and 25th of 30). The paper's targets are adversarially trained (TRADES);
  in front of a standard target the feature gradients are large and training is less stable.

``denoiser_from: <other jatp model>`` deploys that entry's trained P in front of this entry's
``target`` without training (cross-model transfer of one P). Attacks on the deployed victim
differentiate through P and T (adaptive white-box); ``bpda: true`` on an attack gives BPDA+PGD.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from .. import artifacts
from ..attacks import project, signed_step, uniform_ball
from ..errors import PreemptError
from ..registry import ModelName, closest
from ..runtime import generator
from . import SOURCES, Env, ImageSpec, ModelConfig, test_accuracy
from .recipes import boosted_cross_entropy
from .train import OptimConfig, fit
from .wrappers import Preprocessed


class JATPConfig(OptimConfig, ModelConfig):
    """JATP (Zhou et al., 2021): a denoiser trained jointly with its target against full adversarial examples."""

    source: Literal["jatp"] = "jatp"
    target: ModelName
    denoiser_from: ModelName | None = None
    feature_layer: str = Field("net.layer3", description="module path inside the target model")
    eps: float = Field(ge=0, le=1, description="budget of the training adversarial examples")
    attack_steps: int = Field(10, ge=1)
    attack_step: float = Field(0.01, gt=0, le=1, description="step size of the training attack (the paper's 0.01)")
    train_images: int | None = Field(None, ge=1, description="train on the first n training images only (a CPU "
                                     "budget: JATP's attack-in-the-loop epoch is the costliest); None: all")
    alpha: float = Field(5.0, ge=0, description="weight of the misclassification-weighted feature similarity term")
    beta: float = Field(3.0, ge=0, description="weight of the pixel-wise L2 term")
    blocks: int = Field(3, ge=1, le=16)
    width: int = Field(64, ge=4, le=512)
    optimizer: Literal["adam", "sgd"] = "sgd"
    lr: float = Field(1e-2, gt=0)
    lr_schedule: Literal["constant", "cosine", "multistep"] = "multistep"
    weight_decay: float = Field(2e-4, ge=0)

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        """``jatp(<target>)``; a denoiser moved from another entry says whose target trained it:
        ``jatp[from <that target>](<target>)`` (JATP's Table 2 transfers the TRADES target's P)."""
        target = models[self.target].ref(models)
        if self.denoiser_from is None:
            return f"jatp({target})"
        donor = models[self.denoiser_from]
        return f"jatp[from {models[getattr(donor, 'target')].ref(models)}]({target})"

    def adversarial(self, models: Mapping[str, ModelConfig]) -> bool | None:
        return models[self.target].adversarial(models)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Denoiser(nn.Module):
    """P: image in [0, 1] -> image in [0, 1], residual over the input."""

    def __init__(self, channels: int, width: int = 64, blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*[_Block(width) for _ in range(blocks)])
        self.tail = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]  # Conv2d's bias exists (bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x + self.tail(self.blocks(self.head(x)))
        return z + (z.clamp(0, 1) - z).detach()  # clipped to [0, 1], but the gradient never dies at the bounds


class _Joint(nn.Module):
    """T(P(x)) while training P: ``train()`` never touches the frozen target's BatchNorm."""

    def __init__(self, denoiser: Denoiser, target: nn.Module) -> None:
        super().__init__()
        self.denoiser, self.target = denoiser, target

    def train(self, mode: bool = True) -> "_Joint":
        self.training = mode
        self.denoiser.train(mode)
        self.target.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.denoiser(x))


def feature_module(target: nn.Module, path: str, name: str) -> nn.Module:
    try:
        return target.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in target.named_modules() if n]
        raise PreemptError(f"models.{name}.feature_layer: '{path}' is not a module of the target; "
                           f"{closest(path, names)}") from None


class Features:
    """Captures the output of one module of the target on every forward pass."""

    def __init__(self, module: nn.Module) -> None:
        self.out: torch.Tensor | None = None
        module.register_forward_hook(lambda _m, _i, o: setattr(self, "out", o))

    def of(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        assert self.out is not None
        return logits, self.out


def feature_attack(joint: _Joint, feats: Features, x: torch.Tensor, eps: float, steps: int, step: float,
                   generator: torch.Generator) -> torch.Tensor:
    """PGD maximising the feature distance of T(P(x')) to T(P(x)): the full adversarial example."""
    mode = joint.denoiser.training
    joint.denoiser.eval()
    with torch.no_grad():
        _, f_clean = feats.of(joint, x)
    adv = project(x + uniform_ball(x.shape, eps, "Linf", generator, x.device), x, eps, "Linf")
    for _ in range(steps):
        a = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            _, f = feats.of(joint, a)
            (g,) = torch.autograd.grad((f - f_clean).flatten(1).norm(dim=1).sum(), a)
        adv = project(adv + signed_step(g, step, "Linf"), x, eps, "Linf")
    joint.denoiser.train(mode)
    return adv.detach()


def train_denoiser(name: str, cfg: JATPConfig, target: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor,
                   spec: ImageSpec, device: torch.device) -> Denoiser:
    target = target.to(device).eval()
    feats = Features(feature_module(target, cfg.feature_layer, name))
    torch.manual_seed(cfg.seed)
    joint = _Joint(Denoiser(spec.shape[0], cfg.width, cfg.blocks), target)
    gen = generator(cfg.seed + 3, device)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = feature_attack(joint, feats, x, cfg.eps, cfg.attack_steps, cfg.attack_step, gen)
        den_adv, den_clean = joint.denoiser(torch.cat([x_adv, x])).chunk(2)
        logits, f = feats.of(target, torch.cat([den_adv, den_clean]))
        (logits_adv, logits_clean), (f_adv, f_clean) = logits.chunk(2), f.chunk(2)
        fsm = (f_adv - f_clean).pow(2).flatten(1).mean(1)
        wrong = 1 - logits_clean.softmax(1).gather(1, y[:, None]).squeeze(1)
        pixel = (den_adv - x).flatten(1).norm(dim=1)
        return (boosted_cross_entropy(logits_adv, y) + cfg.alpha * fsm * wrong).mean() + cfg.beta * pixel.mean()

    fit(cfg, x_all, y_all, spec, device, desc=f"train {name}", loss_fn=loss_fn, model=joint)
    return joint.denoiser.eval()


def _denoiser_config(name: str, cfg: JATPConfig, env: Env) -> JATPConfig:
    """The config whose denoiser is deployed: this entry's, or the ``denoiser_from`` entry's."""
    if cfg.denoiser_from is None:
        return cfg
    src = env.configs[cfg.denoiser_from]
    if not isinstance(src, JATPConfig):
        raise PreemptError(f"models.{name}.denoiser_from: '{cfg.denoiser_from}' is not a jatp model; "
                           "name a model with source: jatp")
    return src


def deploy(den_cfg: JATPConfig, target: nn.Module, state: dict[str, torch.Tensor], spec: ImageSpec) -> Preprocessed:
    den = Denoiser(spec.shape[0], den_cfg.width, den_cfg.blocks)
    den.load_state_dict(state)
    return Preprocessed(den, target)


class JATPSource:
    def materialize(self, name: str, cfg: JATPConfig, env: Env, out: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        target = env.model(cfg.target)
        den_cfg = _denoiser_config(name, cfg, env)
        if cfg.denoiser_from is not None:
            state, origin = env.stored(cfg.denoiser_from), cfg.denoiser_from
        else:
            x, y = env.data("train")
            x, y = x[: cfg.train_images], y[: cfg.train_images]
            den = train_denoiser(name, cfg, target, x, y, env.spec, env.device)
            state, origin = den.cpu().state_dict(), name
        victim = deploy(den_cfg, env.model(cfg.target), state, env.spec)
        acc, acc_target = test_accuracy(victim, env), test_accuracy(target, env)
        artifacts.save(out, dict(state), {
            "stage": "model", "model": name, "source": "jatp", "target": cfg.target, "denoiser_of": origin,
            "clean_acc": acc, "clean_acc_target_alone": acc_target, "wall_seconds": time.perf_counter() - t0,
            "seed": cfg.seed, "device": str(env.device), "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc, "clean_acc_target_alone": acc_target}

    def load(self, name: str, cfg: JATPConfig, env: Env, path: str) -> nn.Module:
        state, _ = artifacts.load(path)
        return deploy(_denoiser_config(name, cfg, env), env.model(cfg.target), state, env.spec)


SOURCES.register("jatp", JATPConfig)(JATPSource())

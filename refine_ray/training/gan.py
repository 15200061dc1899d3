"""One optimisation step of the conditional GAN (progressive or pix2pix), independent of Ray.

Data parallelism without DDP wrappers, on purpose: (1) the WGAN-GP gradient penalty needs a double
backward (torch.autograd.grad with create_graph=True), and DDP's reducer does not all-reduce
gradients of gradients; (2) the networks grow every stage, so a DDP wrapper would have to be rebuilt
and told which parameters are unused. Instead, after each backward every worker averages the
gradients of the parameters that received one with a single flattened all-reduce (the same set on
every worker, since it depends only on stage and α), then steps the same Adam. Equal starting
weights (broadcast from rank 0) + equal averaged gradients ⇒ parameters stay bitwise equal; the test
checks exactly that inside a fade-in stage. The cost is no overlap of communication with backward,
small for these 1.7 M + 1.7 M parameter networks.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from refine_ray.nn.losses import critic_wgan_gp_loss, footprint_loss, generator_loss, normal_l1
from refine_ray.nn.pix2pix import patchgan_discriminator_loss, pix2pix_generator_loss
from refine_ray.nn.refiner import build_networks
from refine_ray.training.config import TrainConfig


def average_gradients(module: torch.nn.Module, world_size: int) -> None:
    """All-reduce (mean) every existing .grad of `module` in one flat buffer."""
    if world_size <= 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every worker's parameters and buffers equal to rank `src`'s."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


class ConditionalGan:
    """Generator, critic, EMA generator and their Adam optimizers, plus `step(x, y, stage, alpha)`.

    One Adam per network over *all* its parameters, created once: parameters of blocks not yet
    active have no gradient, so Adam leaves them (and their moments) untouched until their stage
    starts; older blocks keep their moments across growth instead of restarting cold.
    """

    def __init__(self, config: TrainConfig, device: torch.device | str = "cpu", world_size: int = 1):
        self.cfg = config
        self.device = torch.device(device)
        self.world_size = world_size
        self.channels = config.model.channels
        self.kind = config.model.kind
        self.generator, self.critic = build_networks(config.model_dump(mode="json"))
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        o = config.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=o.lr_g, betas=o.betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=o.lr_d, betas=o.betas)
        self.kappa = o.kappa if o.kappa is not None else self.channels.kappa
        self.ema_updates = 0
        self.bf16 = config.workers.bf16 and self.device.type == "cuda"

    def _autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, x: torch.Tensor, y: torch.Tensor, stage: int, alpha: float,
             weight: torch.Tensor | None = None, coverage: torch.Tensor | None = None,
             slope_per_unit: float | None = None) -> dict[str, float]:
        """One critic and one generator update on a batch (x = dataset input, y = target, same res;
        weight (B,r,r) optionally weights the pixel loss per pixel; coverage (B,2,r,r) = the input's and
        the target's pixel coverage in 0..1, required by a footprint head; slope_per_unit = surface slope
        of one normalized depth unit per pixel at this resolution, required by a normal loss)."""
        footprint = self.cfg.model.footprint_head
        if footprint and coverage is None:
            raise ValueError("a generator with a footprint head needs the input and target coverage")
        if self.cfg.optim.normal_weight > 0 and slope_per_unit is None:
            raise ValueError("a normal loss needs slope_per_unit (the depth scale and pixel size)")
        ch, o = self.channels, self.cfg.optim
        xg = x[:, list(ch.generator_channels)]
        cond = x[:, list(ch.critic_channels)]
        real = y[:, list(ch.critic_channels)]
        critic = lambda c, img: self.critic(c, img, stage, alpha)  # noqa: E731

        with self._autocast():
            with torch.no_grad():
                fake = self.generator(xg, stage, alpha)
            if self.kind == "pix2pix":
                d_loss, stats = patchgan_discriminator_loss(critic, cond, real, fake[:, list(ch.critic_channels)].float())
            else:
                d_loss, stats = critic_wgan_gp_loss(critic, cond, real, fake[:, list(ch.critic_channels)].float(),
                                                    o.gp_lambda, o.drift)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        average_gradients(self.critic, self.world_size)
        self.opt_d.step()

        self.critic.requires_grad_(False)
        try:
            with self._autocast():
                if footprint:
                    # depth where the ground truth has a surface; the head decides the footprint;
                    # the critic sees the composition (nn/residual.py)
                    image, logit = self.generator.detail_and_footprint(xg, stage, alpha)
                    image, logit = image.float(), logit.float()
                    fake = self.generator.compose(image, logit, hard=False)
                    face = coverage[:, 0] * coverage[:, 1]
                    weight = face if weight is None else weight * face
                    loss_image = image
                else:
                    fake = self.generator(xg, stage, alpha).float()
                    loss_image = fake
                args = (critic, cond, fake[:, list(ch.critic_channels)], loss_image[:, list(ch.loss_channels)],
                        y[:, list(ch.loss_channels)])
                if self.kind == "pix2pix":
                    g_loss, g_stats = pix2pix_generator_loss(*args, l1_weight=o.l1_weight, weight=weight)
                else:
                    g_loss, g_stats = generator_loss(*args, kappa=self.kappa, weight=weight)
                if o.normal_weight > 0:
                    g_loss = g_loss + o.normal_weight * self._normal_loss(x, y, loss_image, weight, coverage,
                                                                        slope_per_unit, g_stats)
                if footprint:
                    fp = footprint_loss(logit, coverage[:, 1], coverage[:, 0])
                    g_loss = g_loss + o.footprint_weight * fp
                    g_stats["footprint_bce"] = float(fp.detach())
                g_stats["g_loss"] = float(g_loss.detach())
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            average_gradients(self.generator, self.world_size)
            self.opt_g.step()
        finally:
            self.critic.requires_grad_(True)
        self.update_ema()
        stats.update(g_stats)
        return stats

    @staticmethod
    def _normal_loss(x, y, image, weight, coverage, slope_per_unit, stats) -> torch.Tensor:
        """normal_l1 of the output's depth against the target's on the pixels wholly inside the coarse
        input and the target (pooled border pixels blend in the background, a false cliff) where the
        pixel loss fully applies."""
        inside = (x[:, 0] > -0.9999) & (y[:, 0] > -0.9999)
        if coverage is not None:
            inside &= (coverage[:, 0] >= 0.999) & (coverage[:, 1] >= 0.999)
        else:  # without coverage, drop the outermost ring, where pooled pixels blend in the background
            inside = -torch.nn.functional.max_pool2d(-inside[:, None].float(), 3, 1, 1)[:, 0] > 0.5
        if weight is not None:
            inside &= weight >= 0.999
        loss = normal_l1(image[:, 0], y[:, 0], inside.float(), slope_per_unit)
        stats["normal_l1"] = float(loss.detach())
        return loss

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA of G's weights; the decay ramps up (TF's num_updates rule) so short runs get a useful EMA."""
        self.ema_updates += 1
        n = self.ema_updates
        decay = min(self.cfg.optim.ema_decay, (1.0 + n) / (10.0 + n))
        for e, p in zip(self.ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers()):
            e.copy_(b)

    def broadcast(self) -> None:
        for m in (self.generator, self.critic, self.ema):
            broadcast_module(m)

    # -- checkpoint state (tensors and primitives only, for torch.load(weights_only=True)) --
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
                "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "ema_updates": self.ema_updates}

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        """Everything (resume), or only the three networks (fine-tuning with fresh optimizers)."""
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.ema.load_state_dict(state["ema"])
        if not weights_only:
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.ema_updates = int(state.get("ema_updates", 0))

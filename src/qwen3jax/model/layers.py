"""Building blocks shared by attention and MLPs: annotated parameters, RMSNorm, RoPE (+YaRN), SwiGLU."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model.config import ModelConfig, YarnScaling
from qwen3jax.parallel.rules import constrain


def param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], cfg: ModelConfig, init=None):
    """A parameter carrying its logical axes (`axes` metadata) for the sharding rules."""
    init = init or jax.nn.initializers.normal(cfg.init_std)
    return nnx.Param(init(rngs.params(), shape, jnp.dtype(cfg.param_dtype)), axes=axes)


class OutputMajor(nnx.Variable):
    """A weight stored with its axes reversed (contracted axes innermost, like torch's Linear weights); only
    `decode_view` makes these, and `project` reads them."""


# At most this many rows (decode steps) are multiplied weight-first by `project`. XLA:CPU's GEMMs stream a weight
# about 2x faster as the long left operand ([out, in] @ [in, rows]) than as the right operand of a skinny product.
FEW_ROWS = 64


def project(spec: str, x: jax.Array, weight: nnx.Variable, dtype, **einsum_kwargs) -> jax.Array:
    """`einsum(spec, x, weight)` in `dtype`. An `OutputMajor` weight is read through the reversed weight spec and,
    for at most `FEW_ROWS` rows of `x`, multiplied weight-first with the small result transposed back."""
    w = weight[...].astype(dtype)
    if not isinstance(weight, OutputMajor):
        return jnp.einsum(spec, x, w, **einsum_kwargs)
    x_spec, rest = spec.split(",")
    weight_spec, out = rest.split("->")
    weight_spec = weight_spec[::-1]
    rows = math.prod(size for axis, size in zip(x_spec, x.shape) if axis not in weight_spec)
    if rows > FEW_ROWS:
        return jnp.einsum(f"{x_spec},{weight_spec}->{out}", x, w, **einsum_kwargs)
    weight_first = "".join(a for a in weight_spec if a in out) + "".join(a for a in out if a not in weight_spec)
    y = jnp.einsum(f"{weight_spec},{x_spec}->{weight_first}", w, x, **einsum_kwargs)
    return jnp.transpose(y, [weight_first.index(a) for a in out])


def ones_param(shape: tuple[int, ...], axes: tuple[str | None, ...], cfg: ModelConfig):
    return nnx.Param(jnp.ones(shape, jnp.dtype(cfg.param_dtype)), axes=axes)


class RMSNorm(nnx.Module):
    """`x * rsqrt(mean(x^2) + eps)` in fp32, cast back to the compute dtype, times a learned weight (init 1)."""

    def __init__(self, dim: int, cfg: ModelConfig):
        self.weight = ones_param((dim,), ("norm",), cfg)
        self.eps = cfg.rms_norm_eps
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return normed.astype(self.dtype) * self.weight[...].astype(self.dtype)


def rope_frequencies(cfg: ModelConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim/2] and the cos/sin scale (1 unless YaRN), in float64 for accuracy."""
    dim, base = cfg.head_dim, cfg.rope_theta
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if cfg.rope_scaling is None:
        return 1.0 / pos_freqs, 1.0
    return _yarn(cfg.rope_scaling, pos_freqs, dim, base, cfg.max_position_embeddings)


def _yarn(y: YarnScaling, pos_freqs: np.ndarray, dim: int, base: float, max_positions: int):
    """YaRN (arXiv 2309.00071) exactly as HF's `_compute_yarn_parameters` defines it."""
    original = y.original_max_position_embeddings or max_positions
    factor = y.factor if y.factor is not None else max_positions / original

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if y.attention_factor is not None:
        attention_factor = y.attention_factor
    elif y.mscale and y.mscale_all_dim:
        attention_factor = mscale(factor, y.mscale) / mscale(factor, y.mscale_all_dim)
    else:
        attention_factor = mscale(factor)

    def correction_dim(rotations):  # the dimension whose wavelength fits `rotations` times in the original context
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(y.beta_fast), correction_dim(y.beta_slow)
    if y.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # HF's guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    keep = 1.0 - ramp  # 1: extrapolate (keep the original frequency), 0: interpolate (divide by factor)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1.0 - keep) + (1.0 / pos_freqs) * keep
    return inv_freq, attention_factor


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray, scale: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [batch, seq, head_dim/2] in fp32 for integer positions [batch, seq]."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def apply_rope(x_BTNH: jax.Array, cos_BTh: jax.Array, sin_BTh: jax.Array) -> jax.Array:
    """Half-split ("rotate_half", GPT-NeoX) rotation of the full head_dim, computed in fp32."""
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos_BTh[:, :, None, :], sin_BTh[:, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BTNH.dtype)


class MLP(nnx.Module):
    """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = param(rngs, (d, f), ("embed", "mlp"), cfg)
        self.up_proj = param(rngs, (d, f), ("embed", "mlp"), cfg)
        self.down_proj = param(rngs, (f, d), ("mlp", "embed"), cfg)
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        dt = self.dtype
        gate_BTF = project("BTD,DF->BTF", x_BTD, self.gate_proj, dt)
        up_BTF = project("BTD,DF->BTF", x_BTD, self.up_proj, dt)
        h_BTF = constrain(jax.nn.silu(gate_BTF) * up_BTF, ("batch", "seq", "act_mlp"))
        return project("BTF,FD->BTD", h_BTF, self.down_proj, dt)

"""Building blocks shared by attention and MLPs: annotated parameters, RMSNorm, RoPE (+YaRN), SwiGLU."""

from __future__ import annotations

import functools
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
    """A weight stored with its input (contracted) axes moved last, like torch's Linear weights: [D, N, H] becomes
    [N, H, D]. Only `decode_view` makes these, and `project` reads them."""


# At most this many rows (decode steps) are multiplied weight-first by `project`: XLA:CPU's GEMMs stream a weight
# faster as the long left operand ([out, in] @ [in, rows]) than as the right operand of a skinny product
# (docs/performance.md).
FEW_ROWS = 64


def project(spec: str, x: jax.Array, weight: nnx.Variable, dtype, preferred_element_type=None) -> jax.Array:
    """`einsum(spec, x, weight)` in `dtype`, computed as one 2-D matmul [rows, contracted] x [contracted, out].

    `spec` names x's axes as rows then contracted axes (e.g. "BTD,DF->BTF"). The flattening matters for training:
    the weight gradient of a 3-D einsum contracts two axes, which XLA:CPU lowers with a transposed copy of the
    activation gradient fused into the elementwise backward, an expensive fusion that the 2-D product avoids.
    An `OutputMajor` weight is read with its input axes last; a weight stored output axes first (it, or a tied
    embedding table) is multiplied weight-first when x has at most `FEW_ROWS` rows.
    """
    x_spec, rest = spec.split(",")
    weight_spec, out = rest.split("->")
    if isinstance(weight, OutputMajor):
        num_inputs = sum(a in x_spec for a in weight_spec)
        weight_spec = weight_spec[num_inputs:] + weight_spec[:num_inputs]
    rows = "".join(a for a in x_spec if a not in weight_spec)
    contracted = x_spec[len(rows) :]
    input_major = weight_spec.startswith(contracted)
    w_out = weight_spec[len(contracted) :] if input_major else weight_spec[: -len(contracted)]
    if x_spec != rows + contracted or sorted(out) != sorted(rows + w_out) or contracted not in weight_spec:
        raise ValueError(f"project needs x's rows then its contracted axes, got {spec!r}")
    size = dict(zip(x_spec, x.shape)) | dict(zip(weight_spec, weight.shape))
    x_RC = x.reshape(-1, math.prod(size[a] for a in contracted))
    w = weight[...].astype(dtype)
    if input_major:
        y, y_axes = _cpu_matmul(x_RC, w.reshape(x_RC.shape[1], -1), preferred_element_type), rows + w_out
    elif x_RC.shape[0] > FEW_ROWS:
        y, y_axes = _dot(x_RC, w.reshape(-1, x_RC.shape[1]), 1, 1, preferred_element_type), rows + w_out
    else:  # the transpose below stays a separate (small) op: the reshape keeps XLA from folding it into the dot
        y, y_axes = _dot(w.reshape(-1, x_RC.shape[1]), x_RC, 1, 1, preferred_element_type), w_out + rows
    y = y.reshape([size[a] for a in y_axes])
    return jnp.transpose(y, [y_axes.index(a) for a in out])


def _dot(a, b, contract_a: int, contract_b: int, preferred_element_type=None):
    dims = (((contract_a,), (contract_b,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=preferred_element_type)


def _cpu_matmul(x_RC, w_CO, preferred_element_type):
    """`_matmul` for wide outputs (at least 4x the input width, e.g. the LM head) on CPU; a plain product otherwise.
    On narrower weights the transpose of x costs more than the faster weight-gradient product saves. Other backends
    handle the transposed product well, and a plain product keeps forward-mode autodiff (jvp) available, which a
    custom_vjp function does not support."""
    if jax.default_backend() == "cpu" and w_CO.shape[1] >= 4 * w_CO.shape[0]:
        return _matmul(x_RC, w_CO, preferred_element_type)
    return _dot(x_RC, w_CO, 1, 0, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x_RC, w_CO, preferred_element_type):
    """x @ w whose weight gradient is a plain product of a materialised x^T: XLA:CPU runs the contract-over-rows
    (transposed-left) product that autodiff emits at about half the speed of a plain product on a wide LM head."""
    return _dot(x_RC, w_CO, 1, 0, preferred_element_type)


def _matmul_fwd(x_RC, w_CO, preferred_element_type):
    return _matmul(x_RC, w_CO, preferred_element_type), (x_RC, w_CO)


def _matmul_bwd(preferred_element_type, residuals, g_RO):
    x_RC, w_CO = residuals
    # The barrier keeps XLA from folding the transpose back into the product.
    dw_CO = _dot(jax.lax.optimization_barrier(x_RC.T), g_RO, 1, 0, w_CO.dtype)
    return _dot(g_RO, w_CO, 1, 1, x_RC.dtype), dw_CO


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


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

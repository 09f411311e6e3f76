"""Model hyper-parameters: `ModelConfig`, the released size presets, tiny CPU presets and parameter counts.

Layers receive this small frozen dataclass, never an experiment config. Field names follow the Hugging Face
`Qwen3Config` / `Qwen3MoeConfig` where one exists, so conversion is a rename, not a translation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Every released Qwen3 model shares these (SPEC §1).
QWEN3_VOCAB = 151_936
QWEN3_HEAD_DIM = 128
QWEN3_ROPE_THETA = 1_000_000.0
QWEN3_MAX_POSITIONS = 40_960


@dataclasses.dataclass(frozen=True)
class YarnScaling:
    """HF `rope_type: yarn` parameters (None means "derive as HF does")."""

    factor: float | None = 4.0  # context multiplier; None: max_position_embeddings / original_max_position_embeddings
    original_max_position_embeddings: int | None = 32_768  # pretraining length; None: max_position_embeddings
    beta_fast: float = 32.0  # rotations above which a frequency is kept (extrapolated)
    beta_slow: float = 1.0  # rotations below which a frequency is fully interpolated
    attention_factor: float | None = None  # cos/sin multiplier; None: 0.1*ln(factor)+1 (or the mscale ratio)
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True  # round the correction range to whole dimensions


@dataclasses.dataclass(frozen=True)
class DualChunk:
    """Dual Chunk Attention at inference (An et al. 2024, "ChunkLlama"; model/dca.py), with the fields of Qwen's
    `dual_chunk_attention_config`. Keys take positions modulo `chunk_size - local_size` and every query/key distance
    stays <= `chunk_size`, so a model trained on `chunk_size` tokens attends over many times that length."""

    chunk_size: int  # the longest query/key distance used: the trained context length
    local_size: int  # keys of the previous chunk within this distance keep their exact relative position

    def __post_init__(self):
        if not 0 <= self.local_size < self.chunk_size:
            raise ValueError(f"DualChunk needs 0 <= local_size < chunk_size, got {self.local_size}, {self.chunk_size}")

    @property
    def chunk_len(self) -> int:
        """Tokens per chunk: keys sit at position (p mod chunk_len)."""
        return self.chunk_size - self.local_size


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of one Qwen3 model (dense when `num_experts == 0`)."""

    vocab_size: int = QWEN3_VOCAB
    hidden_size: int = 1024
    intermediate_size: int = 3072  # SwiGLU width of dense layers
    num_layers: int = 28
    num_heads: int = 16  # query heads
    num_kv_heads: int = 8  # key/value heads (GQA); must divide num_heads
    head_dim: int = QWEN3_HEAD_DIM  # NOT hidden_size // num_heads in Qwen3
    rms_norm_eps: float = 1e-6
    rope_theta: float = QWEN3_ROPE_THETA
    rope_scaling: YarnScaling | None = None
    # Dual Chunk Attention (an inference option, off by default; combines with `rope_scaling`), see `DualChunk`.
    dual_chunk: DualChunk | None = None
    max_position_embeddings: int = QWEN3_MAX_POSITIONS
    tie_word_embeddings: bool = False
    # Mixture of experts (all zero for dense models).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0  # SwiGLU width of each expert
    norm_topk_prob: bool = True  # renormalise the top-k router probabilities to sum to 1
    decoder_sparse_step: int = 1  # layer i is MoE when (i + 1) % step == 0 ...
    mlp_only_layers: tuple[int, ...] = ()  # ... and i is not listed here
    moe_kernel: str = "looped"  # dispatch kernel (model/moe.py): naive | sorted | looped | ragged | megablox
    # Most rows per block of the sorted/looped kernels (padding waste vs. per-block overhead); the kernels cap it at
    # the average expert group of the batch.
    moe_block_size: int = 256
    # Expert parallelism (model/expert_parallel.py): on a mesh with an `expert` axis, exchange tokens with an explicit
    # all-to-all and run the kernel on each device's own experts. none | auto (ragged on TPU/GPU, padded on CPU) |
    # ragged (jax.lax.ragged_all_to_all, dropless) | padded (all_to_all with a per-pair capacity).
    moe_expert_exchange: str = "none"
    # Padded exchange only: 0 = dropless (capacity of the worst case); f > 0 = capacity ceil(f * slots / ranks) per
    # device pair, overflow dropped and counted in RoutingStats.dropped_slots.
    moe_capacity_factor: float = 0.0
    # Numerics and compilation.
    param_dtype: str = "float32"  # storage dtype of the weights
    dtype: str = "float32"  # compute dtype of matmuls/activations (norms, softmax, router, logits stay fp32)
    remat: str = "none"  # activation checkpointing policy per layer, see model/transformer.py REMAT_POLICIES
    scan_layers: bool = True  # nnx.scan over layers (compile time flat in depth) vs. an unrolled Python loop
    # Causal attention over T > block tokens runs per block of queries against only the keys up to that block,
    # skipping the fully masked upper triangle (about half the work); 0 = one full [T, T] block. See attention.py.
    attention_block_size: int = 128
    # xla (the einsum attention above) | splash (the Pallas TPU kernel, model/splash.py; interpreted on CPU, for
    # tests) | auto (splash when compiling for TPU, else xla). Training/prefill without a cache only.
    attention_kernel: str = "xla"
    init_std: float = 0.02  # normal init of projections and embeddings

    def __post_init__(self):
        problems = []
        if self.num_heads % self.num_kv_heads:
            problems.append(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for RoPE")
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                problems.append(f"num_experts_per_tok={self.num_experts_per_tok} must be in [1, {self.num_experts}]")
            if self.moe_intermediate_size <= 0:
                problems.append("moe_intermediate_size must be positive for an MoE model")
            if self.decoder_sparse_step < 1:
                problems.append("decoder_sparse_step must be >= 1")
        if bad := [i for i in self.mlp_only_layers if not 0 <= i < self.num_layers]:
            problems.append(f"mlp_only_layers {bad} are outside [0, {self.num_layers})")
        for field in ("param_dtype", "dtype"):
            if getattr(self, field) not in ("float32", "bfloat16", "float16"):
                problems.append(f"{field}={getattr(self, field)!r} is not one of float32, bfloat16, float16")
        if self.moe_block_size < 1:
            problems.append(f"moe_block_size must be >= 1, got {self.moe_block_size}")
        if self.remat not in _REMAT_NAMES:
            problems.append(f"remat={self.remat!r} is not one of {sorted(_REMAT_NAMES)}")
        if self.attention_block_size < 0:
            problems.append(f"attention_block_size={self.attention_block_size} must be >= 0 (0: unblocked)")
        if self.attention_kernel not in ("xla", "splash", "auto"):
            problems.append(f"attention_kernel={self.attention_kernel!r} is not one of xla, splash, auto")
        if self.moe_expert_exchange not in _MOE_EXCHANGES:
            problems.append(f"moe_expert_exchange={self.moe_expert_exchange!r} is not one of {list(_MOE_EXCHANGES)}")
        if self.moe_capacity_factor < 0:
            problems.append(f"moe_capacity_factor={self.moe_capacity_factor} must be >= 0 (0: dropless)")
        if self.moe_kernel not in _MOE_KERNEL_NAMES:
            problems.append(f"moe_kernel={self.moe_kernel!r} is not one of {sorted(_MOE_KERNEL_NAMES)}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    # ---- structure -------------------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def layer_is_moe(self, i: int) -> bool:
        """HF's rule (Qwen3MoeDecoderLayer): sparse unless listed in mlp_only_layers or off the sparse step."""
        return self.is_moe and i not in self.mlp_only_layers and (i + 1) % self.decoder_sparse_step == 0

    def layer_groups(self) -> list[tuple[bool, int]]:
        """Consecutive runs of same-kind layers as (is_moe, count); each run is scanned as one stack."""
        groups: list[tuple[bool, int]] = []
        for i in range(self.num_layers):
            kind = self.layer_is_moe(i)
            if groups and groups[-1][0] == kind:
                groups[-1] = (kind, groups[-1][1] + 1)
            else:
                groups.append((kind, 1))
        return groups

    @property
    def num_moe_layers(self) -> int:
        return sum(self.layer_is_moe(i) for i in range(self.num_layers))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---- serialisation (native checkpoints store this next to the weights) -----------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ValueError(f"unknown ModelConfig fields {unknown}")
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = YarnScaling(**d["rope_scaling"])
        if d.get("dual_chunk") is not None:
            d["dual_chunk"] = DualChunk(**d["dual_chunk"])
        if "mlp_only_layers" in d:
            d["mlp_only_layers"] = tuple(d["mlp_only_layers"])
        return cls(**d)

    # ---- presets ---------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        if name not in PRESETS:
            import difflib

            near = difflib.get_close_matches(name, PRESETS, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise KeyError(f"unknown model preset {name!r}.{hint} Known: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    # ---- counting --------------------------------------------------------------------------------------------
    def param_counts(self) -> dict[str, int]:
        """Total, non-embedding and active-per-token parameter counts, by formula (matches the module tree)."""
        d, h = self.hidden_size, self.head_dim
        attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads) + 2 * h  # q,k,v,o + q_norm,k_norm
        norms = 2 * d
        dense_mlp = 3 * d * self.intermediate_size
        expert = 3 * d * self.moe_intermediate_size
        total_layers = active_layers = 0
        for i in range(self.num_layers):
            base = attn + norms
            if self.layer_is_moe(i):
                router = d * self.num_experts
                total_layers += base + router + self.num_experts * expert
                active_layers += base + router + self.num_experts_per_tok * expert
            else:
                total_layers += base + dense_mlp
                active_layers += base + dense_mlp
        embed = self.vocab_size * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        non_embedding = total_layers + d  # + final norm
        return {
            "total": non_embedding + embed + head,
            "non_embedding": non_embedding,
            "active": active_layers + d + embed + head,
        }

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), matmuls only, causal attention halved."""
        # Matmul weights: every layer weight plus the LM head. The embedding lookup is a gather, not a matmul, so an
        # untied model's input embedding does not count; a tied one multiplies its table once (as the head).
        # Norm weights (RMSNorm, QK-norm) scale elementwise: no matmul either.
        untied_embedding = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        norm_weights = self.num_layers * (2 * self.hidden_size + 2 * self.head_dim) + self.hidden_size
        matmul_params = self.param_counts()["active"] - untied_embedding - norm_weights
        attention = 2 * self.num_layers * seq_len * self.num_heads * self.head_dim  # QK^T and PV, causal half of 4
        return 3.0 * (2.0 * matmul_params + attention)


_REMAT_NAMES = {"none", "full", "dots", "dots_no_batch"}
_MOE_KERNEL_NAMES = {"naive", "sorted", "looped", "ragged", "megablox"}
_MOE_EXCHANGES = ("none", "auto", "ragged", "padded")  # expert_parallel.EXCHANGES (this module imports no jax)


def _dense(hidden, ffn, layers, heads, kv, tied) -> ModelConfig:
    return ModelConfig(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        tie_word_embeddings=tied,
    )


def _moe(hidden, expert_ffn, layers, heads, kv, experts, topk) -> ModelConfig:
    return ModelConfig(
        hidden_size=hidden,
        intermediate_size=expert_ffn * 8,  # unused by all-MoE presets; HF's released configs carry 6144 / 12288
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        num_experts=experts,
        num_experts_per_tok=topk,
        moe_intermediate_size=expert_ffn,
    )


PRESETS: dict[str, ModelConfig] = {
    "qwen3_0_6b": _dense(1024, 3072, 28, 16, 8, tied=True),
    "qwen3_1_7b": _dense(2048, 6144, 28, 16, 8, tied=True),
    "qwen3_4b": _dense(2560, 9728, 36, 32, 8, tied=True),
    "qwen3_8b": _dense(4096, 12288, 36, 32, 8, tied=False),
    "qwen3_14b": _dense(5120, 17408, 40, 40, 8, tied=False),
    "qwen3_32b": _dense(5120, 25600, 64, 64, 8, tied=False),
    "qwen3_30b_a3b": _moe(2048, 768, 48, 32, 4, experts=128, topk=8),
    "qwen3_235b_a22b": _moe(4096, 1536, 94, 64, 4, experts=128, topk=8),
    # Tiny presets for CPU work: same structure (GQA, QK-Norm, head_dim independent of hidden), small sizes. The
    # LM head is untied: in a model this shallow a tied table's direct path (embedding -> head) scores the input
    # token itself highest, so early greedy samples repeat words; an own head learns next-token statistics directly.
    "tiny": ModelConfig(
        vocab_size=8192, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
        head_dim=32, rope_theta=10_000.0, max_position_embeddings=4096,
    ),
    "tiny_moe": ModelConfig(
        vocab_size=8192, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
        head_dim=32, rope_theta=10_000.0, max_position_embeddings=4096, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=96,
    ),
}

# Model-card figures (SPEC §1) the presets are checked against, in parameters.
MODEL_CARD_PARAMS: dict[str, dict[str, float]] = {
    "qwen3_0_6b": {"total": 0.6e9, "non_embedding": 0.44e9},
    "qwen3_1_7b": {"total": 1.7e9, "non_embedding": 1.4e9},
    "qwen3_4b": {"total": 4.0e9, "non_embedding": 3.6e9},
    "qwen3_8b": {"total": 8.2e9, "non_embedding": 6.95e9},
    "qwen3_14b": {"total": 14.8e9, "non_embedding": 13.2e9},
    "qwen3_32b": {"total": 32.8e9, "non_embedding": 31.2e9},
    "qwen3_30b_a3b": {"total": 30.5e9, "active": 3.3e9},
    "qwen3_235b_a22b": {"total": 235e9, "active": 22e9},
}


def describe(cfg: ModelConfig) -> str:
    c = cfg.param_counts()
    kind = f"MoE {cfg.num_experts}x top-{cfg.num_experts_per_tok}" if cfg.is_moe else "dense"
    return (
        f"{kind}, {cfg.num_layers} layers, d={cfg.hidden_size}, heads {cfg.num_heads}/{cfg.num_kv_heads}x{cfg.head_dim}"
        f", {c['total'] / 1e6:,.1f}M params ({c['active'] / 1e6:,.1f}M active)"
    )

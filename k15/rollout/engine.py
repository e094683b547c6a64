"""Batched rollout engine: our own inference path for Llama/Qwen2-family policies.

Why not `model.generate()`: on a training model it is slow (per-step Python overhead, growing cache,
mask rebuilding) and deadlocks under FSDP. This engine keeps its own copy of the weights in a few
fused, contiguous tensors (so a weight sync is one explicit, timed step) and decodes with a KV cache
that is allocated once at a fixed size, so no step ever allocates a new cache shape.

Layout decisions (each measured or needed for exactness, see benchmarks/RESULTS.md):
- q/k/v are one matrix and gate/up one matrix: one GEMM instead of three/two per layer.
- Rotary embeddings are applied as a complex multiply. The rows of Wq/Wk are permuted within each
  head so that HF's (i, i + d/2) rotation pairs become adjacent (re, im) pairs. q and k get the same
  permutation, so q.k — the only thing attention uses them for — is unchanged.
- Prompts are left-padded, so every row writes the same cache column at each step; each row's
  rotary positions start at 0 at its first real token, exactly like HF on the unpadded prompt.
  Two small methods say where a row's tokens sit (`_prefill_rope`, `_decode_start`), so a subclass
  can give image tokens other positions (M-RoPE, k15.rollout.vision) without touching the decoder.
- Decode attention is two batched matmuls over the valid cache prefix (CPU SDPA was ~2-3x slower
  for one query per row); the prefill uses SDPA. On CPU the decode step is bound by reading the
  weights and the KV cache from memory, not by Python overhead (benchmarks/RESULTS.md).
- Rows that finish are compacted out of the batch once at most 3/4 are still running.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from k15.rollout.repeat import NO_TOKEN
from k15.rollout.sampling import SamplingParams, sample_next

__all__ = ["RolloutEngine", "RolloutOutput", "SamplingParams"]


@dataclass
class RolloutOutput:
    tokens: list[list[int]]  # generated ids per sequence (includes the stop token when it stopped)
    logprobs: list[list[float]]  # log p(token) at temperature 1, no top-p (what the RL loss needs)
    finish_reasons: list[str]  # "stop", "length" (max_new_tokens or the row's limit) or "repeat"


@dataclass(frozen=True)
class _Arch:
    """The shape facts of a Llama/Qwen2 decoder, read from its config."""

    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rms_eps: float

    @classmethod
    def from_config(cls, config: transformers.PretrainedConfig) -> _Arch:
        if getattr(config, "hidden_act", "silu") != "silu":
            raise NotImplementedError(f"only SwiGLU (silu) MLPs are supported, got {config.hidden_act}")
        if getattr(config, "use_sliding_window", False) and "sliding_attention" in (config.layer_types or []):
            raise NotImplementedError("sliding-window attention layers are not supported")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            num_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            num_heads=config.num_attention_heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            head_dim=head_dim,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            rms_eps=config.rms_norm_eps,
        )


def rope_table(config: transformers.PretrainedConfig, head_dim: int, max_seq_len: int) -> torch.Tensor:
    """cos + i*sin for every position, [max_seq_len, head_dim // 2] complex64.

    transformers 5.x keeps `rope_theta` (and the scaling type) in `config.rope_parameters`; the
    frequencies and the cos/sin are computed in fp32 exactly as HF's rotary module does.
    """
    rope = dict(getattr(config, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type == "default":
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        scaling = 1.0
    elif rope_type in ("dynamic", "longrope"):
        # Their frequencies depend on the current sequence length; a fixed table would be wrong.
        raise NotImplementedError(f"rope_type={rope_type!r} is not supported")
    else:
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
        inv_freq = inv_freq.float()
    freqs = torch.arange(max_seq_len, dtype=torch.float)[:, None] * inv_freq[None, :]
    return torch.complex(freqs.cos() * scaling, freqs.sin() * scaling)


def _rope_pair_permutation(head_dim: int) -> torch.Tensor:
    """Row order that puts HF's rotation partners (i, i + d/2) next to each other."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()


@dataclass
class _Layer:
    """Views into the engine's stacked weight buffers for one decoder layer."""

    attn_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(heads + 2 * kv_heads) * head_dim, hidden], q/k rows rope-permuted
    qkv_bias: torch.Tensor | None
    o_t: torch.Tensor  # [heads * head_dim, hidden] (transposed view, for addmm with the residual)
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    gate_up_bias: torch.Tensor | None
    down_t: torch.Tensor  # [intermediate, hidden] (transposed view)
    down_bias: torch.Tensor | None


def _decoder(model: transformers.PreTrainedModel) -> torch.nn.Module:
    return model.model  # LlamaForCausalLM / Qwen2ForCausalLM keep the decoder stack here


def _sliding_window(config) -> int | None:
    """The attention window every layer applies (Mistral: config.sliding_window, unless a Qwen2-style
    use_sliding_window turns it off), or None. Within the window, full attention is the same thing."""
    window = getattr(config, "sliding_window", None)
    if not window or not getattr(config, "use_sliding_window", True):
        return None
    return int(window)


class RolloutEngine:
    """Samples completions for a batch of token-id prompts from a copy of a HF causal LM's weights."""

    # Drop finished rows once the running share of the batch falls to this: 0.75 was 1.04-1.14x faster than
    # 0.5 with stop tokens at batch 64-128 (benchmarks/RESULTS.md); compacting at every finish (1.0) pays
    # for its cache copies.
    compact_below = 0.75

    def __init__(self, model: transformers.PreTrainedModel, max_batch_size: int, max_seq_len: int):
        if max_batch_size < 1 or max_seq_len < 2:
            raise ValueError("max_batch_size must be >= 1 and max_seq_len >= 2")
        self.arch = arch = _Arch.from_config(model.config)
        window = _sliding_window(model.config)
        if window is not None and max_seq_len > window:
            raise NotImplementedError(
                f"the model attends within a sliding window of {window} tokens (config.sliding_window) and the rollout "
                f"engine to the whole sequence: sequences of up to {max_seq_len} tokens would differ from the model; "
                f"keep model.max_seq_len + the rollout budget within {window}")
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        ref = _decoder(model).embed_tokens.weight
        self.device, self.dtype = ref.device, ref.dtype
        self.scale = arch.head_dim**-0.5
        self._q_width = arch.num_heads * arch.head_dim
        self._qk_width = (arch.num_heads + arch.num_kv_heads) * arch.head_dim
        self._qkv_width = self._qk_width + arch.num_kv_heads * arch.head_dim

        attn0 = _decoder(model).layers[0].self_attn
        mlp0 = _decoder(model).layers[0].mlp
        self._has_qkv_bias = attn0.q_proj.bias is not None
        self._has_o_bias = attn0.o_proj.bias is not None
        self._has_mlp_bias = mlp0.gate_proj.bias is not None
        lm_head = model.get_output_embeddings().weight
        self._tied = lm_head is ref or lm_head.data_ptr() == ref.data_ptr()

        # Everything below is allocated once. Inference tensors skip autograd's version tracking.
        with torch.inference_mode():
            new = lambda *shape: torch.empty(*shape, device=self.device, dtype=self.dtype)  # noqa: E731
            L, H, I = arch.num_layers, arch.hidden, arch.intermediate
            self.embed = new(arch.vocab, H)
            self.lm_head = self.embed if self._tied else new(arch.vocab, H)
            self.final_norm = new(H)
            self.attn_norm = new(L, H)
            self.mlp_norm = new(L, H)
            self.qkv = new(L, self._qkv_width, H)
            self.qkv_bias = new(L, self._qkv_width) if self._has_qkv_bias else None
            self.o = new(L, H, self._q_width)
            self.o_bias = new(L, H) if self._has_o_bias else None
            self.gate_up = new(L, 2 * I, H)
            self.gate_up_bias = new(L, 2 * I) if self._has_mlp_bias else None
            self.down = new(L, H, I)
            self.down_bias = new(L, H) if self._has_mlp_bias else None
            cache_shape = (L, max_batch_size, arch.num_kv_heads, max_seq_len, arch.head_dim)
            self.k_cache = torch.zeros(cache_shape, device=self.device, dtype=self.dtype)
            self.v_cache = torch.zeros(cache_shape, device=self.device, dtype=self.dtype)
            self.rope = rope_table(model.config, arch.head_dim, max_seq_len).to(self.device)
            self.positions = torch.arange(max_seq_len, device=self.device)
        pick = lambda t, l: None if t is None else t[l]  # noqa: E731
        self._layers = [
            _Layer(
                attn_norm=self.attn_norm[l],
                qkv=self.qkv[l],
                qkv_bias=pick(self.qkv_bias, l),
                o_t=self.o[l].t(),
                o_bias=pick(self.o_bias, l),
                mlp_norm=self.mlp_norm[l],
                gate_up=self.gate_up[l],
                gate_up_bias=pick(self.gate_up_bias, l),
                down_t=self.down[l].t(),
                down_bias=pick(self.down_bias, l),
            )
            for l in range(arch.num_layers)
        ]
        self._k, self._v = self._cache_views(max_batch_size, max_seq_len)  # re-viewed per chunk
        self.last_load_seconds = self.load_weights(model)

    # ------------------------------------------------------------------ weights

    def load_weights(self, model: transformers.PreTrainedModel) -> float:
        """Copy the (trained) HF model's weights into the engine's fused buffers; returns seconds taken."""
        start = time.perf_counter()
        arch, D = self.arch, self.arch.head_dim
        perm = _rope_pair_permutation(D).to(self.device)
        nq, nkv = arch.num_heads, arch.num_kv_heads

        def rope_rows(t: torch.Tensor, heads: int) -> torch.Tensor:
            return t.reshape(heads, D, *t.shape[1:])[:, perm].reshape(t.shape)

        dec = _decoder(model)
        with torch.inference_mode():
            self.embed.copy_(dec.embed_tokens.weight)
            if not self._tied:
                self.lm_head.copy_(model.get_output_embeddings().weight)
            self.final_norm.copy_(dec.norm.weight)
            for l, layer in enumerate(dec.layers):
                attn, mlp = layer.self_attn, layer.mlp
                self.attn_norm[l].copy_(layer.input_layernorm.weight)
                self.mlp_norm[l].copy_(layer.post_attention_layernorm.weight)
                q_end, k_end = self._q_width, self._qk_width
                self.qkv[l, :q_end].copy_(rope_rows(attn.q_proj.weight, nq))
                self.qkv[l, q_end:k_end].copy_(rope_rows(attn.k_proj.weight, nkv))
                self.qkv[l, k_end:].copy_(attn.v_proj.weight)
                if self.qkv_bias is not None:
                    self.qkv_bias[l, :q_end].copy_(rope_rows(attn.q_proj.bias, nq))
                    self.qkv_bias[l, q_end:k_end].copy_(rope_rows(attn.k_proj.bias, nkv))
                    self.qkv_bias[l, k_end:].copy_(attn.v_proj.bias)
                self.o[l].copy_(attn.o_proj.weight)
                if self.o_bias is not None:
                    self.o_bias[l].copy_(attn.o_proj.bias)
                I = arch.intermediate
                self.gate_up[l, :I].copy_(mlp.gate_proj.weight)
                self.gate_up[l, I:].copy_(mlp.up_proj.weight)
                self.down[l].copy_(mlp.down_proj.weight)
                if self.gate_up_bias is not None:
                    self.gate_up_bias[l, :I].copy_(mlp.gate_proj.bias)
                    self.gate_up_bias[l, I:].copy_(mlp.up_proj.bias)
                    self.down_bias[l].copy_(mlp.down_proj.bias)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_load_seconds = time.perf_counter() - start
        return self.last_load_seconds

    # ------------------------------------------------------------------ forward

    def _forward(
        self, x: torch.Tensor, rope: torch.Tensor, start: int, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """Run the decoder on hidden states x [n, T, hidden] occupying cache columns [start, start+T).

        Takes embeddings rather than ids so that a prefill can later splice in image features.
        rope: [n, T, 1, head_dim/2] complex rotations for each token's position.
        mask: bool [n, 1, T, start+T], True where a query may attend to a key; None when no row has
        padding (then plain causal attention).
        Returns the final-normed hidden states [n, T, hidden].
        """
        a = self.arch
        n, T, H = x.shape
        end = start + T
        nq, nkv, D = a.num_heads, a.num_kv_heads, a.head_dim
        x = x.reshape(n * T, H)
        for l, w in enumerate(self._layers):
            h = F.rms_norm(x, (H,), w.attn_norm, a.rms_eps)
            qkv = F.linear(h, w.qkv, w.qkv_bias)
            qk = torch.view_as_complex(qkv[:, : self._qk_width].float().reshape(n, T, nq + nkv, D // 2, 2))
            qk = torch.view_as_real(qk * rope).to(self.dtype).reshape(n, T, nq + nkv, D)
            v = qkv[:, self._qk_width :].reshape(n, T, nkv, D)
            k_cache, v_cache = self._k[l, :n], self._v[l, :n]
            k_cache[:, :, start:end].copy_(qk[:, :, nq:].transpose(1, 2))
            v_cache[:, :, start:end].copy_(v.transpose(1, 2))
            attn = self._attend(qk[:, :, :nq], k_cache[:, :, :end], v_cache[:, :, :end], mask, causal)
            x = torch.addmm(x, attn, w.o_t) if w.o_bias is None else torch.addmm(x + w.o_bias, attn, w.o_t)
            h = F.rms_norm(x, (H,), w.mlp_norm, a.rms_eps)
            gate_up = F.linear(h, w.gate_up, w.gate_up_bias)
            act = F.silu(gate_up[:, : a.intermediate]) * gate_up[:, a.intermediate :]
            x = torch.addmm(x, act, w.down_t) if w.down_bias is None else torch.addmm(x + w.down_bias, act, w.down_t)
        return F.rms_norm(x, (H,), self.final_norm, a.rms_eps).reshape(n, T, H)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """q [n, T, heads, D] against the cache prefix k, v [n, kv_heads, L, D] -> [n * T, heads * D]."""
        n, T, nq, D = q.shape
        nkv = k.shape[1]
        if T > 1:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k, v, attn_mask=mask, is_causal=causal and mask is None,
                scale=self.scale, enable_gqa=nq != nkv,
            )
            return out.transpose(1, 2).reshape(n * T, nq * D)
        # One query per row: plain matmuls beat CPU SDPA here (measured), and grouping the query heads
        # by kv head handles GQA without materialising repeated keys.
        q = q.reshape(n, nkv, nq // nkv, D)
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(self.scale)
        if mask is not None:
            scores.masked_fill_(mask.logical_not(), -torch.inf)
        return torch.matmul(torch.softmax(scores, dim=-1), v).reshape(n, nq * D)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator | None = None,
        *,
        limits: Sequence[int] | None = None,
        history: Sequence[int] | None = None,
    ) -> RolloutOutput:
        """Sample a completion for every prompt. Prompts longer than a batch are split into chunks.

        Prompts are processed in order of length (so chunks need little padding); results come back
        in the caller's order. Reproducible for a fixed generator seed and the same inputs.

        limits: per prompt, the most new tokens it may get (<= params.max_new_tokens); a row that
            reaches its own limit ends with "length". Partial rollouts pass their per-iteration budget.
        history: per prompt, how many of its last tokens are earlier output of the same response (a
            continued partial rollout). Only the repeat rule reads them, so a response generated in
            segments stops exactly where it would have stopped in one go.
        """
        n = len(prompts)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if limits is not None and (len(limits) != n or not all(0 <= x <= params.max_new_tokens for x in limits)):
            raise ValueError(f"limits needs one value in [0, {params.max_new_tokens}] per prompt")
        if history is not None and (len(history) != n or not all(0 <= h <= len(p) for h, p in zip(history, prompts))):
            raise ValueError("history needs one value per prompt, at most the prompt's length")
        order = sorted(range(n), key=lambda i: len(prompts[i]))
        if limits is not None:
            order = [i for i in order if limits[i] > 0]  # nothing to generate: empty, "length"
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        reasons: list[str] = ["length"] * n
        with torch.inference_mode():
            for first in range(0, len(order), self.max_batch_size):
                chunk = order[first : first + self.max_batch_size]
                out = self._generate_chunk(
                    [prompts[i] for i in chunk], params, generator,
                    None if limits is None else [limits[i] for i in chunk],
                    None if history is None else [history[i] for i in chunk],
                )
                for j, i in enumerate(chunk):
                    tokens[i], logprobs[i], reasons[i] = out.tokens[j], out.logprobs[j], out.finish_reasons[j]
        return RolloutOutput(tokens=tokens, logprobs=logprobs, finish_reasons=reasons)

    def _generate_chunk(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator | None,
        limits: list[int] | None,
        history: list[int] | None,
    ) -> RolloutOutput:
        n = len(prompts)
        new = params.max_new_tokens if limits is None else max(limits)
        P = max(len(p) for p in prompts)
        if P + new > self.max_seq_len:
            raise ValueError(f"prompt ({P}) + max_new_tokens ({new}) exceeds max_seq_len ({self.max_seq_len})")
        if new == 0:
            return RolloutOutput([[] for _ in prompts], [[] for _ in prompts], ["length"] * n)
        self._k, self._v = self._cache_views(n, P + new)
        ids, pad = self._left_pad(prompts)
        logits, key_ok = self._prefill(F.embedding(ids, self.embed), pad)

        dev = self.device
        rule = params.repeat
        # The response so far per original row: earlier segments (right-aligned, repeat rule only), then new tokens.
        H = max(history) if rule is not None and history else 0
        responses = torch.full((n, H + new), NO_TOKEN, dtype=torch.long, device=dev)
        for r, h in enumerate(history if H else []):
            if h:
                responses[r, H - h : H] = torch.tensor(prompts[r][len(prompts[r]) - h :], dtype=torch.long)
        out_tokens = responses[:, H:]
        out_logprobs = torch.zeros(n, new, dtype=torch.float, device=dev)
        done_at = [new] * n  # number of generated tokens per original row
        reasons = ["length"] * n
        stop_ids = torch.tensor(params.stop_token_ids, dtype=torch.long, device=dev) if params.stop_token_ids else None
        limit = torch.tensor(limits, device=dev) if limits is not None else None
        rows = torch.arange(n, device=dev)  # batch slot -> original row; changes when we compact
        alive = torch.ones(n, dtype=torch.bool, device=dev)  # per slot: still generating
        compacted = False
        next_pos = self._decode_start(prompts)  # rotary position of the next token
        for step in range(new):
            tok, lp = sample_next(logits, params, generator)
            if compacted:
                out_tokens[rows, step], out_logprobs[rows, step] = tok, lp
            else:
                out_tokens[:, step], out_logprobs[:, step] = tok, lp
            # Finish checks in order of precedence: a stop token, then a repeat, then the row's own limit.
            checks: list[tuple[str, torch.Tensor]] = []
            if stop_ids is not None:
                checks.append(("stop", torch.isin(tok, stop_ids)))
            if rule is not None:
                seen = responses[:, : H + step + 1]
                checks.append(("repeat", rule.hits(seen[rows] if compacted else seen)))
            if limit is not None:
                checks.append(("length", limit[rows] == step + 1))
            finished, any_finished = torch.zeros_like(alive), False
            for reason, hit in checks:
                hit = hit & alive & ~finished
                if bool(hit.any()):
                    for r in rows[hit].tolist():
                        done_at[r], reasons[r] = step + 1, reason
                    finished, any_finished = finished | hit, True
            if any_finished:
                alive &= ~finished
                live = int(alive.sum())
                if live == 0:
                    break
                if live <= self.compact_below * alive.numel() and step + 1 < new:
                    # Finished rows still cost a full row of compute; drop them from the batch.
                    keep = alive.nonzero().squeeze(1)
                    self._compact(keep, filled=P + step)
                    rows, tok, next_pos, alive = rows[keep], tok[keep], next_pos[keep], alive[keep]
                    key_ok = key_ok[keep] if key_ok is not None else None
                    compacted = True
            if step + 1 == new:
                break
            col = P + step  # the cache column this token's keys/values go to
            mask = key_ok[:, None, None, : col + 1] if key_ok is not None else None
            rope = self.rope[next_pos].view(-1, 1, 1, self.arch.head_dim // 2)
            hidden = self._forward(F.embedding(tok, self.embed)[:, None], rope, col, mask, causal=False)
            logits = self._logits(hidden[:, 0])
            next_pos += 1

        tok_lists, lp_lists = out_tokens.tolist(), out_logprobs.tolist()
        return RolloutOutput(
            tokens=[t[:k] for t, k in zip(tok_lists, done_at)],
            logprobs=[t[:k] for t, k in zip(lp_lists, done_at)],
            finish_reasons=reasons,
        )

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-align the prompts in one [n, P] id tensor; returns it and each row's pad count."""
        P = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), P, dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, P - len(p) :] = torch.tensor(p, dtype=torch.long)
        pad = torch.tensor([P - len(p) for p in prompts])
        return ids.to(self.device), pad.to(self.device)

    def _prefill(self, embeds: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fill cache columns [0, P) from left-padded input embeddings [n, P, hidden].

        Takes embeddings (not ids) so image features can later be spliced in at placeholder tokens.
        Returns the logits for the next token [n, vocab] and, when any row is padded, the bool
        [n, max_seq_len] of cache columns each row may attend to (its pad columns are never keys).
        """
        n, P, _ = embeds.shape
        cols = self.positions[:P]
        mask = key_ok = None
        if bool(pad.any()):
            key_ok = self.positions[None, :] >= pad[:, None]  # [n, max_seq_len]
            # Pad queries may see themselves so no softmax row is empty (NaN); their outputs are unused.
            eye = torch.eye(P, dtype=torch.bool, device=self.device)
            mask = (((cols[None, :] <= cols[:, None])[None] & key_ok[:, None, :P]) | eye[None])[:, None]
        hidden = self._forward(embeds, self._prefill_rope(pad, P), 0, mask, causal=True)
        return self._logits(hidden[:, -1]), key_ok

    # Where each row's tokens sit. A subclass whose prompts carry other positions (M-RoPE) overrides both.

    def _prefill_rope(self, pad: torch.Tensor, P: int) -> torch.Tensor:
        """The rotations of the prefill's tokens, [n, P, 1, head_dim/2] complex."""
        # Row r's token in column c sits at position c - pad[r], so each row starts at position 0.
        pos = (self.positions[None, :P] - pad[:, None]).clamp_(min=0)
        return self.rope[pos][:, :, None]

    def _decode_start(self, prompts: list[list[int]]) -> torch.Tensor:
        """Each row's rotary position for its first generated token, [n] long."""
        return torch.tensor([len(p) for p in prompts], device=self.device)

    def _cache_views(self, rows: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The start of the preallocated cache viewed as [layers, rows, kv_heads, seq, head_dim].

        Packing a chunk densely (seq = what this chunk needs, not max_seq_len) keeps each row's key
        prefix nearly contiguous, which the decode matmuls read a little faster. No allocation.
        """
        a = self.arch
        shape = (a.num_layers, rows, a.num_kv_heads, seq, a.head_dim)
        numel = a.num_layers * rows * a.num_kv_heads * seq * a.head_dim
        return self.k_cache.view(-1)[:numel].view(shape), self.v_cache.view(-1)[:numel].view(shape)

    def _compact(self, keep: torch.Tensor, filled: int) -> None:
        """Move the cache rows of still-running slots `keep` to the front (columns [0, filled))."""
        m = keep.numel()
        for cache in (self._k, self._v):
            cache[:, :m, :, :filled] = cache[:, keep, :, :filled]

"""One-GPU check: packed training tokens/s and MFU, the flash-attention varlen kernel on packed rows
against padded SDPA, rollout tokens/s (ours vs HF generate), FSDP2 sanity, and the real pipeline
under trainer=fsdp and trainer=fsdp2.

Phases 1-4 run with the device machine's own packages (torch, transformers, pyyaml; lightning is not
needed): they import from k15 only modules that need nothing else (k15.rollout.engine,
k15.data.packing, k15.models.attention, k15.perf). Phases 5-6 start `python -m experiments.run`,
which needs all of k15's dependencies: the ones the machine lacks travel as wheels
(benchmarks/fetch_gpu_wheels.sh). Start it through benchmarks/gpu_check.sh, which installs those and
checks the rest first.

    python benchmarks/gpu_check.py               # on a CUDA GPU: configs/model/0.5b.yaml, bf16
    python benchmarks/gpu_check.py --cpu-dry-run # the same code paths at tiny size on CPU, fp32

1. train: a Qwen2-shaped decoder from the model preset, fp32 master weights with bf16 autocast,
   AdamW, rows packed from variable-length documents (position ids restart per document) and given
   to the model as training does (k15.data.packing.model_inputs, the varlen form). Attention:
   flash-attn varlen (HF flash_attention_2) if flash_attn is installed, else torch's own varlen flash
   kernel (torch.nn.attention.varlen) if this torch has it, else SDPA (mask built from the positions).
   MFU = (6 x matmul params + causal attention FLOPs) x tokens/s over the bf16 dense peak.
2. varlen: the same documents packed (varlen form, flash_attention_2) and padded one per row (SDPA
   with a padding mask), bf16 weights: |loss difference|, max |per-token log-prob difference| and
   tokens/s (forward + backward) of both. Without flash-attn (or CUDA) flash is reported skipped
   and the packed side runs on SDPA, which the CPU dry run checks in fp32.
3. rollout: RolloutEngine vs HF generate(), same model in bf16, greedy, no stop token.
4. fsdp: FSDP2 `fully_shard` on a one-process group (nccl on GPU, gloo on CPU), fp32 weights (checked)
   with bf16 autocast, a few steps.
5. pipeline_fsdp: `experiments.run quickstart` at a tiny size under trainer=fsdp (Lightning's
   FSDPStrategy, the preset as it is but on one GPU), stages pretrain, sft, eval (validate refuses RL
   under fsdp). GPU only: the CPU dry run reports it skipped.
6. pipeline_fsdp2: the same under trainer=fsdp2 (ModelParallelStrategy + fully_shard, sharded
   checkpoints), stages pretrain, rl, eval; on CPU in the dry run.
   Both record wall time per run and per stage, and check that every stage's Hugging Face export
   holds exactly the weights its config describes (no FSDP wrapper names or flat parameters).

Every phase gets its own copy of the model config: `_from_config(cfg, dtype=...)` writes the dtype
onto the config it is given, so a shared one carried the bf16 of the rollout phase into the FSDP
phase (whose fp32 check now catches that).
Peak GPU memory is reset per phase (k15.perf). Figures go to $OUT/gpu_check.json when OUT is set, the
pipelines' logs to $OUT/pipeline_<strategy>.log. At the end: `gpu_check summary {...}` (one JSON
line: each phase's status, time and headline figures), then `gpu_check ratio=X.XX` (rollout
tokens/s, ours over HF).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from transformers import AttentionInterface, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from k15.data.packing import IGNORE, model_inputs, pack_examples  # noqa: E402
from k15.models.attention import check_attn_implementation  # noqa: E402
from k15.perf import read_gpu_peak_mb  # noqa: E402
from k15.rollout.engine import RolloutEngine, SamplingParams  # noqa: E402

BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense bf16, vendor datasheets
PHASES = ("train", "varlen", "rollout", "fsdp", "pipeline_fsdp", "pipeline_fsdp2")
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, max_seq_len=512)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny model on CPU: exercises every path, measures nothing")
    p.add_argument("--model", default=str(ROOT / "configs/model/0.5b.yaml"))
    p.add_argument("--vocab", type=int, default=151_936, help="Qwen2.5's vocabulary (the preset has none)")
    p.add_argument("--row-len", type=int, default=4096)
    p.add_argument("--rows", type=int, default=4, help="packed rows per training step")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (after 3 warm-up)")
    p.add_argument("--rollout-batch", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--fsdp-steps", type=int, default=4)
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="the pipeline phases get what is left of this (gpu_check.sh stops everything at 560 s)")
    p.add_argument("--only", default=None, help="comma-separated phases to run (default: all): " + ", ".join(PHASES))
    args = p.parse_args()
    if args.cpu_dry_run:
        args.vocab, args.row_len, args.rows, args.steps = 256, 256, 2, 2
        args.rollout_batch, args.prompt_len, args.new_tokens, args.fsdp_steps = 4, 8, 8, 2
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(model, inputs: dict, opt, device: torch.device, autocast: bool) -> tuple[float, float]:
    """One optimizer step, synchronised on both ends: (seconds, loss)."""
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(**inputs).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start, float(loss.detach())


def model_config(args) -> Qwen2Config:
    preset = TINY if args.cpu_dry_run else yaml.safe_load(Path(args.model).read_text())
    return Qwen2Config(
        vocab_size=args.vocab, hidden_size=preset["hidden_size"], num_hidden_layers=preset["num_layers"],
        num_attention_heads=preset["num_heads"], num_key_value_heads=preset["num_kv_heads"],
        intermediate_size=preset["intermediate_size"], max_position_embeddings=max(preset["max_seq_len"], args.row_len),
        rope_theta=float(preset.get("rope_theta", 10000.0)), tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )


# ---------------------------------------------------------------------------------------- attention


def flash_attn_installed() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def reference_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, 0), enable_gqa=False):
    """varlen_attn's contract, one causal SDPA per document: stands in for the CUDA kernel in the CPU dry run."""
    out = torch.empty_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                                           is_causal=True, scale=scale, enable_gqa=enable_gqa)
        out[a:b] = o.transpose(0, 1)
    return out


def torch_varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """HF attention function over torch.nn.attention.varlen, on the boundaries model_inputs passes (cu_seq_lens_q):
    the batch is one long sequence of documents."""
    if query.is_cuda:
        from torch.nn.attention.varlen import varlen_attn
    else:
        varlen_attn = reference_varlen_attn

    b, hq, t, d = query.shape
    dtype = query.dtype
    if query.is_cuda and dtype == torch.float32:  # HF's rotary step promotes q/k to fp32 under autocast;
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16  # flash needs 16-bit
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.shape[1], d).to(dtype) for x in (query, key, value))
    cu, max_len = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
    kw = {"scale": scaling}
    params = inspect.signature(varlen_attn).parameters
    if "window_size" in params:
        kw["window_size"] = (-1, 0)  # causal
    else:
        kw["is_causal"] = True
    if key.shape[1] != hq:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = hq // key.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)
    return out.reshape(b, t, hq, d), None


def pick_attention(device: torch.device) -> str:
    """The fastest packed-attention kernel here. On CPU (dry run) the varlen path runs on a reference kernel."""
    if check_attn_implementation("flash_attention_2", device.type) is None:
        return "flash_attention_2"
    if device.type == "cuda":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError:
            return "sdpa"
    AttentionInterface.register("torch_varlen", torch_varlen_attention)
    return "torch_varlen"


def packed_loss_matches_sdpa(model, batch, attention: str, device: torch.device, autocast: bool) -> float:
    """|loss(varlen kernel) - loss(SDPA)| on one packed batch: both must compute the same thing."""
    if attention == "sdpa":
        return 0.0
    losses = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for name in (attention, "sdpa"):
            model.config._attn_implementation = name
            losses.append(float(model(**train_inputs(batch, device)).loss))
    model.config._attn_implementation = attention
    return abs(losses[0] - losses[1])


# ---------------------------------------------------------------------------------------- data


def packed_batch(rows: int, row_len: int, vocab: int, rng: random.Random) -> tuple[list[list[int]], dict]:
    """Rows filled with random documents of 32..row_len/4 tokens (a mix like long-CoT SFT data)."""
    docs_per_row, ids, pos, doc = [], [], [], []
    for _ in range(rows):
        lengths, used = [], 0
        while True:
            n = rng.randint(32, max(33, row_len // 4))
            if used + n > row_len:
                break
            lengths.append(n)
            used += n
        if used < row_len:
            lengths.append(row_len - used)  # the tail is a last (short) document, not padding
        docs_per_row.append(lengths)
        ids.append([rng.randrange(1, vocab) for _ in range(row_len)])
        pos.append([p for n in lengths for p in range(n)])
        doc.append([i for i, n in enumerate(lengths) for _ in range(n)])
    t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return docs_per_row, {"input_ids": t(ids), "position_ids": t(pos), "doc_ids": t(doc)}


def train_inputs(batch: dict, device: torch.device) -> dict:
    """The packed batch as training hands it to the model (k15.data.packing.model_inputs), on `device`."""
    ids, pos = batch["input_ids"].to(device), batch["position_ids"].to(device)
    labels = ids.masked_fill(pos == 0, IGNORE)  # a document's first token is not predicted from the previous one
    return model_inputs({"input_ids": ids, "labels": labels, "position_ids": pos})


def matmul_params(model: torch.nn.Module, cfg: Qwen2Config) -> int:
    """Parameters that take part in matmuls: everything but the embedding lookup, plus the lm_head."""
    total = sum(p.numel() for p in model.parameters())  # a tied table is counted once, and used once as lm_head
    return total if cfg.tie_word_embeddings else total - cfg.vocab_size * cfg.hidden_size


def attention_flops(docs_per_row: list[list[int]], cfg: Qwen2Config) -> float:
    """Causal attention, forward + backward: 6 * layers * (heads * head_dim) * sum(len^2) (half of QK^T and PV, x3)."""
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return 6.0 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * sum(n * n for r in docs_per_row for n in r)


# ---------------------------------------------------------------------------------------- phases


def train_phase(args, cfg: Qwen2Config, device: torch.device, autocast: bool) -> dict:
    attention = pick_attention(device)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(cfg, attn_implementation=attention if attention != "torch_varlen" else "sdpa")
    model.config._attn_implementation = attention  # a registered name is only accepted after construction
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    rng = random.Random(0)
    batches = [packed_batch(args.rows, args.row_len, cfg.vocab_size, rng) for _ in range(4)]
    times, losses, flops = [], [], []
    fallback = None
    try:
        loss_gap = packed_loss_matches_sdpa(model, batches[0][1], attention, device, autocast)
        if loss_gap > (2e-2 if autocast else 1e-4):
            raise RuntimeError(f"{attention} and SDPA disagree on the packed loss by {loss_gap:.2e}")
    except Exception as e:  # a kernel that fails or disagrees is reported, and SDPA is timed instead
        fallback = f"{attention} failed ({type(e).__name__}: {str(e)[:300]}); timed sdpa instead"
        print(f"train: {fallback}", flush=True)
        attention, loss_gap = "sdpa", 0.0
        model.config._attn_implementation = attention
    read_gpu_peak_mb()
    for step in range(3 + args.steps):
        docs, batch = batches[step % len(batches)]
        seconds, loss = timed_step(model, train_inputs(batch, device), opt, device, autocast)
        if step >= 3:
            times.append(seconds)
            losses.append(loss)
            tokens = args.rows * args.row_len
            flops.append(6.0 * matmul_params(model, cfg) * tokens + attention_flops(docs, cfg))
    if not all(map(lambda x: x == x and abs(x) < 1e4, losses)):
        raise RuntimeError(f"non-finite training loss: {losses}")
    tokens = args.rows * args.row_len
    seconds = sorted(times)[len(times) // 2]
    achieved = sum(flops) / sum(times) / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    out = {
        "attention": attention, "attention_fallback": fallback, "loss_gap_vs_sdpa": loss_gap, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "tokens_per_step": tokens, "step_s_median": seconds, "tokens_per_s": tokens / seconds,
        "tflops": achieved, "mfu": achieved / peak if peak else None, "peak_tflops": peak,
        "loss_first_last": [losses[0], losses[-1]], "gpu_peak_mb": read_gpu_peak_mb(),
    }
    del model, opt
    return out


def random_documents(total: int, longest: int, vocab: int, rng: random.Random) -> list[list[int]]:
    """Documents of 8..longest random tokens, about `total` tokens in all."""
    docs, used = [], 0
    while used < total:
        docs.append([rng.randrange(1, vocab) for _ in range(rng.randint(8, longest))])
        used += len(docs[-1])
    return docs


def padded_inputs(docs: list[list[int]], device: torch.device) -> dict:
    """One document per row, right-padded, with the usual 2D padding mask."""
    width = max(map(len, docs))
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, d in enumerate(docs):
        ids[r, : len(d)], mask[r, : len(d)] = torch.tensor(d), 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def doc_logprobs(logits: torch.Tensor, ids: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """[n - 1] fp32 log p(token t | the tokens before it) of the document at ids[start:start + n]."""
    lp = F.log_softmax(logits[start : start + n - 1].float(), dim=-1)  # one document at a time: vocab-wide fp32 is big
    return lp.gather(1, ids[start + 1 : start + n, None]).squeeze(1)


def fwd_bwd_seconds(model, inputs: dict, device: torch.device, reps: int) -> float:
    """Median seconds of a forward + backward (no optimizer step) after one warm-up."""
    times = []
    for rep in range(reps + 1):
        sync(device)
        start = time.perf_counter()
        model(**inputs).loss.backward()
        sync(device)
        if rep:
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2]


def varlen_phase(args, cfg: Qwen2Config, device: torch.device, dtype: torch.dtype) -> dict:
    """Packed rows in the varlen form under flash_attention_2 vs the same documents padded under SDPA."""
    skipped = check_attn_implementation("flash_attention_2", device.type)
    packed_attention = "sdpa" if skipped else "flash_attention_2"
    if skipped:
        print(f"varlen: flash_attention_2 skipped ({skipped}); packed rows run on sdpa", flush=True)
    rows, row_len = min(args.rows, 2), args.row_len
    docs = random_documents(int(rows * row_len * 0.9), row_len // 4, cfg.vocab_size, random.Random(2))
    packed = pack_examples([(d, d) for d in docs], row_len, pad_id=0)
    packed_in = model_inputs({k: packed[k].to(device) for k in ("input_ids", "labels", "position_ids")})
    padded_in = padded_inputs(docs, device)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    model.eval()  # no dropout either way; gradients still flow for the timing
    read_gpu_peak_mb()
    with torch.no_grad():
        model.set_attn_implementation(packed_attention)
        packed_out = model(**packed_in)
        model.set_attn_implementation("sdpa")
        padded_out = model(**padded_in)
        ids = packed["input_ids"].to(device)
        where = [(r, c) for r, row in enumerate(packed["position_ids"].tolist())
                 for c, pos in enumerate(row) if pos == 0 and packed["doc_ids"][r, c] >= 0]
        gaps = torch.cat([(doc_logprobs(packed_out.logits[r], ids[r], c, len(d))
                           - doc_logprobs(padded_out.logits[i], padded_in["input_ids"][i], 0, len(d))).abs()
                          for i, (d, (r, c)) in enumerate(zip(docs, where))])
    loss_gap = abs(float(packed_out.loss) - float(padded_out.loss))
    del packed_out, padded_out
    tokens = sum(map(len, docs))
    reps = 1 if args.cpu_dry_run else 3
    model.set_attn_implementation(packed_attention)
    packed_s = fwd_bwd_seconds(model, packed_in, device, reps)
    model.set_attn_implementation("sdpa")
    padded_s = fwd_bwd_seconds(model, padded_in, device, reps)
    limit = 1e-4 if dtype == torch.float32 else 5e-2
    out = {
        "packed_attention": packed_attention, "flash_attention_2": f"skipped: {skipped}" if skipped else "ran",
        "dtype": str(dtype).removeprefix("torch."), "documents": len(docs), "tokens": tokens,
        "packed_shape": list(packed["input_ids"].shape), "padded_shape": list(padded_in["input_ids"].shape),
        "loss_abs_diff": loss_gap, "logprob_max_abs_diff": float(gaps.max()), "logprob_mean_abs_diff": float(gaps.mean()),
        "packed_tokens_per_s": tokens / packed_s, "padded_tokens_per_s": tokens / padded_s,
        "agree": loss_gap <= limit, "gpu_peak_mb": read_gpu_peak_mb(),
    }
    del model
    return out


def rollout_phase(args, cfg: Qwen2Config, device: torch.device, dtype: torch.dtype) -> dict:
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = model.generation_config.bos_token_id = None
    prompts = torch.randint(1, cfg.vocab_size, (args.rollout_batch, args.prompt_len), generator=torch.Generator().manual_seed(0))
    read_gpu_peak_mb()
    engine = RolloutEngine(model, max_batch_size=args.rollout_batch, max_seq_len=args.prompt_len + args.new_tokens)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    dev_prompts = prompts.to(device)

    def ours():
        return engine.generate(prompts.tolist(), params).tokens

    def hf():
        with torch.no_grad():
            out = model.generate(dev_prompts, attention_mask=torch.ones_like(dev_prompts), do_sample=False,
                                 max_new_tokens=args.new_tokens, pad_token_id=0)
        return out[:, args.prompt_len :].tolist()

    rates: dict[str, list[float]] = {"ours": [], "hf": []}
    outs = {}
    n_tokens = args.rollout_batch * args.new_tokens
    for rep in range(4):  # repetition 0 warms up (kernels, allocator); order alternates
        for name, fn in [("ours", ours), ("hf", hf)][:: 1 if rep % 2 == 0 else -1]:
            sync(device)
            start = time.perf_counter()
            outs[name] = fn()
            sync(device)
            if rep:
                rates[name].append(n_tokens / (time.perf_counter() - start))
    same = sum(a == b for a, b in zip(outs["ours"], outs["hf"])) / len(outs["hf"])
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    out = {
        "ours_tokens_per_s": med["ours"], "hf_tokens_per_s": med["hf"], "ratio": med["ours"] / med["hf"],
        "greedy_rows_identical_frac": same, "gpu_peak_mb": read_gpu_peak_mb(),
    }
    del engine, model
    return out


def require_fp32(model: torch.nn.Module) -> None:
    """Training keeps fp32 weights and lets autocast run the matmuls in bf16; pure bf16 weights lose the small updates."""
    wrong = sorted({str(p.dtype) for p in model.parameters()} - {"torch.float32"})
    if wrong:
        raise RuntimeError(f"parameters in {', '.join(wrong)}, not float32: was the model config shared with a bf16 phase?")


def fsdp_phase(args, cfg: Qwen2Config, device: torch.device, autocast: bool) -> dict:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa")
        require_fp32(model)  # master weights: a config that came out of a bf16 phase would make them bf16
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        _, batch = packed_batch(min(args.rows, 2), min(args.row_len, 1024), cfg.vocab_size, random.Random(1))
        inputs = train_inputs(batch, device)
        read_gpu_peak_mb()
        losses, times = [], []
        for _ in range(args.fsdp_steps):  # the same batch each step: the loss must fall
            seconds, loss = timed_step(model, inputs, opt, device, autocast)
            times.append(seconds)
            losses.append(loss)
        ok = all(x == x for x in losses) and losses[-1] < losses[0]
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        return {"losses": losses, "step_s": times, "loss_fell": ok, "param_dtypes": dtypes, "gpu_peak_mb": read_gpu_peak_mb()}
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------- pipelines

# What `python -m experiments.run` imports (setup.cfg's install_requires, by module name); the device
# machine lacks several of them, which gpu_check.sh installs from the carried wheels.
PIPELINE_MODULES = ("lightning", "transformers", "tokenizers", "safetensors", "omegaconf", "tensorboard", "rich",
                    "einops", "numpy", "matplotlib", "yaml", "PIL", "webdataset", "braceexpand", "math_verify")
# A ~0.2M-parameter model and short stages: this checks that the strategies run the real code end to
# end (checkpoints and exports included), not how fast they are.
PIPELINE_SIZES = [
    "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
    "model.intermediate_size=128", "model.max_seq_len=128", "world.max_level=3", "run.threads=2",
    "pretrain.max_steps=20", "pretrain.batch_size=8", "pretrain.seq_len=128", "pretrain.num_documents=400",
    "sft.max_steps=20", "sft.batch_size=8", "sft.num_examples=400", "trainer.checkpoint_every_n_steps=10",
    "rl.iterations=3", "rl.num_prompts=64", "rl.prompts_per_iteration=4", "rl.samples_per_prompt=4",
    "rl.max_new_tokens=48", "rl.checkpoint_every_n_iterations=2",
    "eval.problems_per_level=4", "eval.samples_per_problem=2", "eval.max_new_tokens=48",
]
# The CPU dry run: smaller still, one thread (the sizes above take half a minute on two busy cores).
DRY_RUN_SIZES = [
    "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64", "model.max_seq_len=64", "run.threads=1",
    "pretrain.max_steps=10", "pretrain.seq_len=64", "pretrain.num_documents=200", "sft.max_steps=10",
    "sft.num_examples=200", "trainer.checkpoint_every_n_steps=5", "rl.iterations=2", "rl.num_prompts=32",
    "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=30", "eval.problems_per_level=2",
    "eval.samples_per_problem=1", "eval.max_new_tokens=30",
]
PIPELINES = {  # strategy: (its overrides, its stages)
    # Lightning's FSDPStrategy as the preset has it (bf16-mixed, activation checkpointing, sharded
    # checkpoints), on one GPU; validate refuses RL under fsdp.
    "fsdp": (["trainer=fsdp", "trainer.devices=1", "eval.models=[sft]"], ["pretrain", "sft", "eval"]),
    # FSDP2 through ModelParallelStrategy, with RL (its rollout engine gathers the full weights), and
    # sharded checkpoints as a run at scale would write them.
    "fsdp2": (["trainer=fsdp2", "trainer.devices=1", "trainer.sharded_checkpoints=true", "eval.models=[rl]"],
              ["pretrain", "rl", "eval"]),
}


def export_problems(path: Path) -> str | None:
    """None if the Hugging Face export at `path` holds exactly the weights its config describes, in
    their shapes; else what is wrong (an FSDP wrapper's names or flat parameters would be)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        want.pop("lm_head.weight", None)  # save_pretrained leaves the tied copy out
    got = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            got.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    reshaped = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    problems = [f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)) if keys]
    return "; ".join(problems) or None


def pipeline_phase(args, strategy: str, device: torch.device, deadline: float) -> dict:
    """`experiments.run quickstart` under trainer=STRATEGY on one device, in a process of its own."""
    if strategy == "fsdp" and device.type != "cuda":
        return {"skipped": "trainer=fsdp is Lightning's FSDPStrategy, which refuses CPU: runs on the GPU only"}
    missing = [m for m in PIPELINE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"missing Python packages: {', '.join(missing)} (run benchmarks/fetch_gpu_wheels.sh on the "
                           "development machine and carry benchmarks/wheels; gpu_check.sh installs them)")
    timeout = min(240.0, deadline - time.monotonic())
    if timeout < 60:
        raise RuntimeError(f"only {timeout:.0f} s of the --budget-s left: not started")
    where = ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"] if device.type == "cuda" else ["trainer.accelerator=cpu"]
    chosen, stages = PIPELINES[strategy]
    chosen = chosen + [f"stages=[{','.join(stages)}]"] + where
    overrides = PIPELINE_SIZES + (DRY_RUN_SIZES if args.cpu_dry_run else []) + chosen  # the last of a key wins
    work = Path(tempfile.mkdtemp(prefix=f"gpu_check_{strategy}_"))
    try:
        run_dir = work / "run"
        cmd = [sys.executable, "-m", "experiments.run", "quickstart", *overrides, f"run.dir={run_dir}"]
        # The FSDP phase left its rendezvous address here; the run starts its own process group.
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        env["PYTHONUNBUFFERED"] = "1"
        log = Path(os.environ["OUT"], f"pipeline_{strategy}.log") if os.environ.get("OUT") else work / "log"
        start = time.perf_counter()
        try:
            with open(log, "w") as f:
                f.write(" ".join(cmd) + "\n")
                f.flush()
                proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - start
        out = {"command": "python -m experiments.run quickstart " + " ".join(chosen) + " (+ tiny sizes)",
               "rc": rc, "wall_s": round(wall, 1), "log": str(log)}
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        out["stage_wall_s"] = {k: v.get("wall_s") for k, v in summary.get("stages", {}).items()}
        out["peak_gpu_mb"] = {k: v["peak_gpu_mb"] for k, v in summary.get("stages", {}).items() if "peak_gpu_mb" in v}
        out["eval_pass@1"] = {k: v.get("pass@1") for k, v in summary.get("eval", {}).items()}
        out["exports"] = {s: export_problems(run_dir / s / "model") or "ok"
                          for s in stages if (run_dir / s / "model" / "config.json").is_file()}
        trained = [s for s in stages if s != "eval"]
        problems = []
        if rc != 0:
            problems.append(f"exit status {rc}")
        if set(out["stage_wall_s"]) != set(stages):
            problems.append(f"summary.json has stages {sorted(out['stage_wall_s'])}, expected {stages}")
        if set(out["exports"]) != set(trained) or any(v != "ok" for v in out["exports"].values()):
            problems.append(f"exports: {out['exports']}")
        if problems:
            out["error"] = "; ".join(problems) + " | log tail: " + log.read_text()[-1500:]
        out["ok"] = not problems
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)  # checkpoints of a tiny model; the log is in $OUT


def run_phases(phases: dict, cfg: Qwen2Config, report: dict, after=lambda name: None) -> None:
    """Run each phase on its own deep copy of `cfg` (HF's `_from_config` writes the dtype it was given
    onto the config), recording its result, or its error, and its time in `report`."""
    for name, phase in phases.items():
        start = time.perf_counter()
        try:
            report[name] = phase(copy.deepcopy(cfg))
        except Exception as e:  # one broken phase must not hide the others' figures
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["phase_s"] = time.perf_counter() - start
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        after(name)


def summary(report: dict, total_s: float) -> dict:
    """One line's worth: each phase's status, time and headline figures."""
    headline = {"train": ("tokens_per_s", "mfu", "attention"), "varlen": ("agree", "loss_abs_diff", "flash_attention_2"),
                "rollout": ("ratio", "greedy_rows_identical_frac"), "fsdp": ("loss_fell", "param_dtypes"),
                "pipeline_fsdp": ("wall_s", "stage_wall_s"), "pipeline_fsdp2": ("wall_s", "stage_wall_s")}
    phases = {}
    for name, r in report.items():
        if name not in headline:
            continue
        status = "failed" if "error" in r else "skipped" if "skipped" in r else "ok"
        phases[name] = {"status": status, "s": round(r.get("phase_s", 0.0), 1),
                        **{k: r[k] for k in headline[name] if k in r}}
        if status == "skipped":
            phases[name]["why"] = r["skipped"]
    failed = [n for n, p in phases.items() if p["status"] == "failed"]
    if report.get("varlen", {}).get("agree") is False:
        failed.append("varlen")
    if report.get("fsdp", {}).get("loss_fell") is False:
        failed.append("fsdp")
    failed = sorted(set(failed))
    return {"ok": not failed, "failed": failed, "total_s": round(total_s, 1), "device": report["device"], "phases": phases}


def main() -> None:
    started = time.monotonic()
    args = parse_args()
    if args.cpu_dry_run:
        device, dtype, autocast = torch.device("cpu"), torch.float32, False
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA device visible (use --cpu-dry-run to exercise the code on CPU)")
        device, dtype, autocast = torch.device("cuda"), torch.bfloat16, True
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    cfg = model_config(args)
    import transformers

    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "flash_attn": flash_attn_installed(), "dry_run": args.cpu_dry_run,
    }
    print(json.dumps(report), flush=True)
    out_dir = os.environ.get("OUT")
    deadline = started + args.budget_s
    phases = {
        "train": lambda c: train_phase(args, c, device, autocast),
        "varlen": lambda c: varlen_phase(args, c, device, dtype),
        "rollout": lambda c: rollout_phase(args, c, device, dtype),
        "fsdp": lambda c: fsdp_phase(args, c, device, autocast),
        "pipeline_fsdp": lambda c: pipeline_phase(args, "fsdp", device, deadline),
        "pipeline_fsdp2": lambda c: pipeline_phase(args, "fsdp2", device, deadline),
    }
    if args.only:
        unknown = set(args.only.split(",")) - set(phases)
        if unknown:
            sys.exit(f"gpu_check: unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(phases)}")
        phases = {k: v for k, v in phases.items() if k in args.only.split(",")}

    def after(name: str) -> None:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if out_dir:
            Path(out_dir, "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    run_phases(phases, cfg, report, after)
    t, v, r, f = (report.get(k, {"error": "not run"}) for k in ("train", "varlen", "rollout", "fsdp"))
    print("\n| check | result |\n|---|---|")
    if "error" not in t:
        mfu = f"{t['mfu']:.1%}" if t["mfu"] is not None else "n/a"
        print(f"| train ({t['params_m']:.0f}M, {t['attention']}) | {t['tokens_per_s']:.0f} tok/s, {t['tflops']:.1f} TFLOP/s, MFU {mfu} |")
    if "error" not in v:
        print(f"| packed ({v['packed_attention']}) vs padded (sdpa), {v['dtype']} | loss diff {v['loss_abs_diff']:.2e}, "
              f"log-prob max diff {v['logprob_max_abs_diff']:.2e}; {v['packed_tokens_per_s']:.0f} vs "
              f"{v['padded_tokens_per_s']:.0f} tok/s; flash_attention_2 {v['flash_attention_2']} |")
    if "error" not in r:
        print(f"| rollout | ours {r['ours_tokens_per_s']:.0f} tok/s, HF {r['hf_tokens_per_s']:.0f} tok/s, greedy identical rows {r['greedy_rows_identical_frac']:.0%} |")
    if "error" not in f:
        print(f"| fsdp2 (1 process, {'/'.join(f['param_dtypes'])} weights) | losses {', '.join(f'{x:.3f}' for x in f['losses'])}, fell: {f['loss_fell']} |")
    for strategy in PIPELINES:
        p = report.get(f"pipeline_{strategy}")
        if p is None:
            continue
        result = (f"skipped: {p['skipped']}" if "skipped" in p else "FAILED (see its log)" if "error" in p else
                  f"ok in {p['wall_s']:.0f} s (stages: {', '.join(f'{k} {s:.0f} s' for k, s in p['stage_wall_s'].items())}); exports ok")
        print(f"| pipeline, trainer={strategy} | {result} |")
    s = summary(report, time.monotonic() - started)
    report["summary"] = s
    if out_dir:
        Path(out_dir, "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    if s["failed"]:
        print(f"FAILED phases: {', '.join(s['failed'])} (errors above)")
    print("gpu_check summary " + json.dumps(s))
    print(f"gpu_check ratio={r.get('ratio', float('nan')):.2f}")
    sys.exit(1 if s["failed"] else 0)


if __name__ == "__main__":
    main()

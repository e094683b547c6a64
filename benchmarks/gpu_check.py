"""One-GPU check: packed training tokens/s and MFU, rollout tokens/s (ours vs HF generate), FSDP2 sanity.

Runs with the device machine's own packages (torch, transformers, pyyaml; lightning is not needed):
it imports from k15 only modules that need nothing else (k15.rollout.engine, k15.data.packing,
k15.perf). Start it through benchmarks/gpu_check.sh, which checks those packages first.

    python benchmarks/gpu_check.py               # on a CUDA GPU: configs/model/0.5b.yaml, bf16
    python benchmarks/gpu_check.py --cpu-dry-run # the same code paths at tiny size on CPU, fp32

1. train: a Qwen2-shaped decoder from the model preset, fp32 master weights with bf16 autocast,
   AdamW, rows packed from variable-length documents (position ids restart per document). Attention:
   flash-attn varlen (HF flash_attention_2) if flash_attn is installed, else torch's own varlen flash
   kernel (torch.nn.attention.varlen) if this torch has it, else SDPA with a block-diagonal mask.
   MFU = (6 x matmul params + causal attention FLOPs) x tokens/s over the bf16 dense peak.
2. rollout: RolloutEngine vs HF generate(), same model in bf16, greedy, no stop token.
3. fsdp: FSDP2 `fully_shard` on a one-process group (nccl on GPU, gloo on CPU), a few steps.
Peak GPU memory is reset per phase (k15.perf). Figures go to $OUT/gpu_check.json when OUT is set.
The last line is `gpu_check ratio=X.XX` (rollout tokens/s, ours over HF).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from transformers import AttentionInterface, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from k15.data.packing import document_mask  # noqa: E402
from k15.perf import read_gpu_peak_mb  # noqa: E402
from k15.rollout.engine import RolloutEngine, SamplingParams  # noqa: E402

BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense bf16, vendor datasheets
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


_CU: dict[str, object] = {}  # the current batch's document boundaries, set before each forward


def reference_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, 0), enable_gqa=False):
    """varlen_attn's contract, one causal SDPA per document: stands in for the CUDA kernel in the CPU dry run."""
    out = torch.empty_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1),
                                           is_causal=True, scale=scale, enable_gqa=enable_gqa)
        out[a:b] = o.transpose(0, 1)
    return out


def torch_varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """HF attention function over torch.nn.attention.varlen: the packed row is one long sequence of documents."""
    if query.is_cuda:
        from torch.nn.attention.varlen import varlen_attn
    else:
        varlen_attn = reference_varlen_attn

    b, hq, t, d = query.shape
    dtype = query.dtype
    if query.is_cuda and dtype == torch.float32:  # HF's rotary step promotes q/k to fp32 under autocast;
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16  # flash needs 16-bit
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.shape[1], d).to(dtype) for x in (query, key, value))
    cu, max_len = _CU["cu"], _CU["max"]
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
    if device.type == "cuda" and flash_attn_installed():
        return "flash_attention_2"
    if device.type == "cuda":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError:
            return "sdpa"
    AttentionInterface.register("torch_varlen", torch_varlen_attention)
    return "torch_varlen"


def packed_loss_matches_masked(model, batch, attention: str, device: torch.device, autocast: bool) -> float:
    """|loss(varlen kernel) - loss(SDPA + block-diagonal mask)| on one batch: both must compute the same thing."""
    if attention == "sdpa":
        return 0.0
    losses = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for name in (attention, "sdpa"):
            model.config._attn_implementation = name
            losses.append(float(model(**model_inputs(batch, name, device)).loss))
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


def model_inputs(batch: dict, attention: str, device: torch.device) -> dict:
    ids, pos = batch["input_ids"].to(device), batch["position_ids"].to(device)
    labels = ids.clone()
    labels[pos == 0] = -100  # a document's first token is not predicted from the previous document
    if attention == "sdpa":
        return {"input_ids": ids, "position_ids": pos, "labels": labels, "attention_mask": document_mask(batch["doc_ids"].to(device))}
    # varlen kernels: all rows as one sequence, boundaries where the position restarts
    flat = pos.reshape(1, -1)
    starts = torch.nonzero(flat[0] == 0).squeeze(1)
    cu = torch.cat([starts, torch.tensor([flat.shape[1]], device=device)]).to(torch.int32)
    _CU["cu"], _CU["max"] = cu, int((cu[1:] - cu[:-1]).max())
    return {"input_ids": ids.reshape(1, -1), "position_ids": flat, "labels": labels.reshape(1, -1)}


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
        loss_gap = packed_loss_matches_masked(model, batches[0][1], attention, device, autocast)
        if loss_gap > (2e-2 if autocast else 1e-4):
            raise RuntimeError(f"{attention} and masked SDPA disagree on the packed loss by {loss_gap:.2e}")
    except Exception as e:  # a kernel that fails or disagrees is reported, and masked SDPA is timed instead
        fallback = f"{attention} failed ({type(e).__name__}: {str(e)[:300]}); timed sdpa instead"
        print(f"train: {fallback}", flush=True)
        attention, loss_gap = "sdpa", 0.0
        model.config._attn_implementation = attention
    read_gpu_peak_mb()
    for step in range(3 + args.steps):
        docs, batch = batches[step % len(batches)]
        seconds, loss = timed_step(model, model_inputs(batch, attention, device), opt, device, autocast)
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
        "attention": attention, "attention_fallback": fallback, "loss_gap_vs_masked_sdpa": loss_gap, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "tokens_per_step": tokens, "step_s_median": seconds, "tokens_per_s": tokens / seconds,
        "tflops": achieved, "mfu": achieved / peak if peak else None, "peak_tflops": peak,
        "loss_first_last": [losses[0], losses[-1]], "gpu_peak_mb": read_gpu_peak_mb(),
    }
    del model, opt
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
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        _, batch = packed_batch(min(args.rows, 2), min(args.row_len, 1024), cfg.vocab_size, random.Random(1))
        inputs = model_inputs(batch, "sdpa", device)
        read_gpu_peak_mb()
        losses, times = [], []
        for _ in range(args.fsdp_steps):  # the same batch each step: the loss must fall
            seconds, loss = timed_step(model, inputs, opt, device, autocast)
            times.append(seconds)
            losses.append(loss)
        ok = all(x == x for x in losses) and losses[-1] < losses[0]
        return {"losses": losses, "step_s": times, "loss_fell": ok, "gpu_peak_mb": read_gpu_peak_mb()}
    finally:
        dist.destroy_process_group()


def main() -> None:
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
    for name, phase in (("train", lambda: train_phase(args, cfg, device, autocast)),
                        ("rollout", lambda: rollout_phase(args, cfg, device, dtype)),
                        ("fsdp", lambda: fsdp_phase(args, cfg, device, autocast))):
        start = time.perf_counter()
        try:
            report[name] = phase()
        except Exception as e:  # one broken phase must not hide the others' figures
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["phase_s"] = time.perf_counter() - start
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if out_dir:
            Path(out_dir, "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    t, r, f = report["train"], report["rollout"], report["fsdp"]
    print("\n| check | result |\n|---|---|")
    if "error" not in t:
        mfu = f"{t['mfu']:.1%}" if t["mfu"] is not None else "n/a"
        print(f"| train ({t['params_m']:.0f}M, {t['attention']}) | {t['tokens_per_s']:.0f} tok/s, {t['tflops']:.1f} TFLOP/s, MFU {mfu} |")
    if "error" not in r:
        print(f"| rollout | ours {r['ours_tokens_per_s']:.0f} tok/s, HF {r['hf_tokens_per_s']:.0f} tok/s, greedy identical rows {r['greedy_rows_identical_frac']:.0%} |")
    if "error" not in f:
        print(f"| fsdp2 (1 process) | losses {', '.join(f'{x:.3f}' for x in f['losses'])}, fell: {f['loss_fell']} |")
    failed = [k for k in ("train", "rollout", "fsdp") if "error" in report[k]]
    if failed:
        print(f"FAILED phases: {', '.join(failed)} (errors above)")
    print(f"gpu_check ratio={r.get('ratio', float('nan')):.2f}")
    sys.exit(1 if failed or ("loss_fell" in f and not f["loss_fell"]) else 0)


if __name__ == "__main__":
    main()

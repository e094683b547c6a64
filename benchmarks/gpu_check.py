"""One-GPU check: packed training tokens/s and MFU, the flash-attention varlen kernel on packed rows
against padded SDPA, rollout tokens/s (ours vs HF generate), FSDP2 sanity.

Runs with the device machine's own packages (torch, transformers, pyyaml; lightning is not needed):
it imports from k15 only modules that need nothing else (k15.rollout.engine, k15.data.packing,
k15.models.attention, k15.perf). Start it through benchmarks/gpu_check.sh, which checks those
packages first.

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
4. fsdp: FSDP2 `fully_shard` on a one-process group (nccl on GPU, gloo on CPU), a few steps.
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
from k15.data.packing import IGNORE, model_inputs, pack_examples  # noqa: E402
from k15.models.attention import check_attn_implementation  # noqa: E402
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
        inputs = train_inputs(batch, device)
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
                        ("varlen", lambda: varlen_phase(args, cfg, device, dtype)),
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
    t, v, r, f = report["train"], report["varlen"], report["rollout"], report["fsdp"]
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
        print(f"| fsdp2 (1 process) | losses {', '.join(f'{x:.3f}' for x in f['losses'])}, fell: {f['loss_fell']} |")
    failed = [k for k in ("train", "varlen", "rollout", "fsdp") if "error" in report[k]]
    if v.get("agree") is False:
        failed.append("varlen (packed and padded losses disagree)")
    if failed:
        print(f"FAILED phases: {', '.join(failed)} (errors above)")
    print(f"gpu_check ratio={r.get('ratio', float('nan')):.2f}")
    sys.exit(1 if failed or ("loss_fell" in f and not f["loss_fell"]) else 0)


if __name__ == "__main__":
    main()

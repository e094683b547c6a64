"""RL iteration time: k15's RLModule against TRL's GRPOTrainer at matched settings, in one process.

Both sides get the same tiny Llama policy (configs/model/tiny.yaml, random init, saved once as a HF
checkpoint and loaded by each side), the same synthetic prompt set and verifier (k15's reward
registry, wrapped as a TRL reward function), the same prompts per iteration, samples per prompt and
max new tokens, temperature 1, fp32 on CPU, one optimizer step per iteration (k15: rl.epochs=1,
rl.minibatches=1; TRL: one generation batch = one step, num_iterations=1), no reference model
(TRL beta=0; k15's reference is the first forward pass of the step, no extra pass), no activation
recomputation (GRPOConfig turns gradient checkpointing on by default; it is turned off here, as k15
does not recompute), and both log every iteration's metrics to TensorBoard (TRL report_to=tensorboard
with logging_steps=1; k15 its RLModule metrics through Lightning's TensorBoardLogger, as in a run).

The two alternate: every TRL step is timed from on_step_begin to on_step_end (generation, scoring,
loss, backward, optimizer step), and a TRL callback then runs and times one k15 iteration, so load
from other jobs hits both alike. The first `--warmup` iterations of each are not counted.
The last line is `trl_grpo ratio=X.XX` (TRL median s/iter over k15 median s/iter).

    python benchmarks/trl_grpo.py [--prompts 16] [--samples 8] [--max-new-tokens 64] [--iterations 5]

Needs TRL (`pip install -e .[bench]`); without it the script says so and exits 0.
"""

from __future__ import annotations

import os
import sys

_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
if any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):  # same allocator for both (see rollout.py)
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (TRL num_generations)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per side")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per side first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="tiny", help="a configs/model preset")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if importlib.util.find_spec("trl") is None:
        print("trl is not installed: `pip install -e .[bench]` (or `pip install trl`) to run this benchmark. Skipped.")
        print("trl_grpo ratio=nan")
        return

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    from datasets import Dataset
    from lightning.pytorch.loggers import TensorBoardLogger
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from k15.config import apply_overrides, base
    from k15.data.prompts import synthetic_prompt_set
    from k15.models.policy import export_policy, load_policy
    from k15.modules.rl import RLModule
    from k15.quiet import quiet_libraries
    from k15.rewards.registry import RewardRegistry

    quiet_libraries()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    P, K, M = args.prompts, args.samples, args.max_new_tokens
    cfg = apply_overrides(base(), [
        f"model={args.model}", f"rl.prompts_per_iteration={P}", f"rl.samples_per_prompt={K}", f"rl.max_new_tokens={M}",
        "rl.epochs=1", "rl.minibatches=1", "rl.temperature=1.0", "rl.top_p=1.0",
    ])
    model, tok = load_policy(cfg.model, None)
    records = synthetic_prompt_set(cfg.world, 1024, seed=0)
    registry = RewardRegistry()
    tmp = Path(tempfile.mkdtemp(prefix="trl_grpo_"))
    export_policy(model, tok, tmp / "policy")  # TRL starts from exactly these weights
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {n_params / 1e6:.2f}M params | {P} prompts x {K} samples x {M} max new tokens | "
          f"{args.threads} thread(s) | loadavg(1m) {os.getloadavg()[0]:.2f}", flush=True)

    # ---- k15: the real RLModule, driven as tests/vision/test_vision_rl.py does (no Trainer around it)
    k15_model = model.train()
    module = RLModule(k15_model, tok, records, cfg.rl, cfg.model.max_seq_len, seed=0)
    module.on_fit_start()
    module.log = lambda *a, **k: None
    module.manual_backward = lambda loss: loss.backward()
    lengths: dict[str, list[float]] = {"trl": [], "k15": []}  # mean response tokens per iteration
    phases: list[dict[str, float]] = []  # k15's own split of each iteration
    log_iteration = module.log_iteration

    k15_logger = TensorBoardLogger(save_dir=str(tmp), name="tb", version="k15", default_hp_metric=False)

    def keep_length(metrics, rollout, rewards):
        lengths["k15"].append(metrics.get("rollout/len_mean", float("nan")))
        phases.append({k: metrics.get(f"perf/{k}_s", 0.0) for k in ("weight_sync", "rollout", "score", "train")})
        log_iteration(metrics, rollout, rewards)
        k15_logger.log_metrics(metrics, step=module.iteration)  # what RLModule.log_iteration does under a Trainer
        k15_logger.experiment.flush()

    module.log_iteration = keep_length

    def k15_iteration() -> float:
        start = time.perf_counter()
        module.training_step(None, module.iteration)
        return time.perf_counter() - start

    # ---- TRL: GRPOTrainer on the same prompts and verifier
    by_prompt = {r.prompt: r for r in records}

    def reward(prompts, completions, **_) -> list[float]:
        items = [(str(i), c, by_prompt[p]) for i, (p, c) in enumerate(zip(prompts, completions))]
        verdicts = registry.score(items)
        return [verdicts[str(i)].reward for i in range(len(items))]

    bos = tok.bos_token or ""  # k15 prompts start with <bos>; TRL tokenizes the text as given
    dataset = Dataset.from_list([{"prompt": r.prompt} for r in records])
    trl_model = AutoModelForCausalLM.from_pretrained(tmp / "policy", dtype=torch.float32)
    trl_model.generation_config.eos_token_id = module.sampling_params().stop_token_ids[0]
    trl_generate_s: list[float] = []  # TRL's generation time inside each step (it calls model.generate)
    hf_generate = trl_model.generate

    def timed_generate(*a, **k):
        start = time.perf_counter()
        out = hf_generate(*a, **k)
        trl_generate_s.append(time.perf_counter() - start)
        return out

    trl_model.generate = timed_generate
    total = args.warmup + args.iterations
    trl_cfg = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=P * K, num_generations=K,
        gradient_accumulation_steps=1, max_completion_length=M, num_iterations=1, beta=0.0, max_steps=total,
        learning_rate=cfg.rl.lr, temperature=1.0, top_p=1.0, use_cpu=True, bf16=False, fp16=False,
        logging_steps=1, report_to="tensorboard", gradient_checkpointing=False,
        disable_tqdm=True, save_strategy="no", dataloader_num_workers=0, seed=0,
        generation_kwargs={"eos_token_id": list(module.sampling_params().stop_token_ids)},
    )
    times: dict[str, list[float]] = {"trl": [], "k15": []}

    class Alternate(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_log(self, args_, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths["trl"].append(float(logs["completions/mean_length"]))

        def on_step_end(self, *a, **k):
            times["trl"].append(time.perf_counter() - self.start)
            times["k15"].append(k15_iteration())
            i = len(times["trl"])
            tag = "warm-up" if i <= args.warmup else f"iter {i - args.warmup}"
            print(f"  {tag:>8}: trl {times['trl'][-1]:6.2f} s   k15 {times['k15'][-1]:6.2f} s", flush=True)

    trainer = GRPOTrainer(model=trl_model, reward_funcs=reward, args=trl_cfg, train_dataset=dataset,
                          processing_class=tok, callbacks=[Alternate()])
    trainer.remove_callback(PrinterCallback)  # TRL's per-step log dicts would bury the timings
    if bos:
        trainer.train_dataset = dataset.map(lambda r: {"prompt": bos + r["prompt"]})
        by_prompt.update({bos + p: r for p, r in list(by_prompt.items())})
    trainer.train()

    trl_s = statistics.median(times["trl"][args.warmup :])
    k15_s = statistics.median(times["k15"][args.warmup :])
    for name in ("trl", "k15"):
        t = times[name][args.warmup :]
        ln = lengths[name][args.warmup :]
        print(f"{name:>4} s/iter: median {statistics.median(t):.2f}  min {min(t):.2f}  max {max(t):.2f}  "
              f"| mean response tokens {statistics.mean(ln) if ln else float('nan'):.1f}")
    timed = phases[args.warmup :]
    split = "  ".join(f"{k} {statistics.median(p[k] for p in timed):.2f}" for k in timed[0])
    print(f"k15 phases (median s): {split}")
    if len(trl_generate_s) == len(times["trl"]):
        gen = statistics.median(trl_generate_s[args.warmup :])
        print(f"trl phases (median s): generate {gen:.2f}  rest (score, loss, update) {trl_s - gen:.2f}")
    print(f"torch threads at the end: {torch.get_num_threads()} (both sides share this process); "
          f"TRL gradient_checkpointing={trainer.args.gradient_checkpointing}, "
          f"is_gradient_checkpointing={getattr(trl_model, 'is_gradient_checkpointing', False)}")
    print(f"after the run: loadavg(1m) {os.getloadavg()[0]:.2f}")
    print(f"trl_grpo ratio={trl_s / k15_s:.2f}")


if __name__ == "__main__":
    main()

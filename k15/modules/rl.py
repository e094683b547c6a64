"""The RL policy as a LightningModule: one `training_step` is one k1.5 RL iteration.

    1. sync the trainer's weights into the rollout engine            (perf/weight_sync_s)
    2. draw prompts, sample k responses per prompt                   (rollout/*)
    3. score every response, keyed by sample id                      (reward/*)
    4. advantages from each prompt's group of k (mean baseline)
    5. reference log-probs = the policy at the iteration start
    6. `epochs` x `minibatches` optimizer steps on the k1.5 loss     (rl/*)
       with a fresh optimizer every iteration (paper; `rl.reset_optimizer`)

Simplifications, stated: one process holds trainer and engine; rewards come from the rule verifier
of the synthetic world (the registry of verifiers is a later issue). Prompts are drawn inside the
step, not by a DataLoader, so the sampler always sees the latest state and a checkpoint holds all
of it (sampler, RNG, iteration) for an exact resume.
"""

from __future__ import annotations

import time
from collections import Counter

import lightning as L
import torch
from rich.console import Console
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.config import RLConfig
from k15.data.prompts import PromptRecord
from k15.rewards.rule import verify
from k15.rl.advantages import advantages, group_stats
from k15.rl.batch import RolloutBatch, token_logprobs
from k15.rl.losses import rl_loss, sequence_logprob
from k15.rl.sampler import UniformSampler
from k15.rollout.engine import RolloutEngine, SamplingParams
from k15.tokenizer import prompt_ids, stop_token_ids

console = Console(stderr=True)


class RLModule(L.LightningModule):
    def __init__(
        self,
        model: PreTrainedModel,
        tok: PreTrainedTokenizerBase,
        prompts: list[PromptRecord],
        cfg: RLConfig,
        max_seq_len: int,
        seed: int,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.tok, self.prompts, self.cfg = model, tok, prompts, cfg
        self.max_seq_len = max_seq_len
        self.sampler = UniformSampler(len(prompts), seed)
        self.generator = torch.Generator().manual_seed(seed)  # rollouts and minibatch order
        self.iteration = 0
        self.verdicts: Counter[str] = Counter()  # every verifier decision so far, by reason
        self._last_reasons: dict[str, str] = {}  # sample id -> reason, for the logged rollouts
        self.engine: RolloutEngine | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.persistent_opt_state: dict | None = None

    # ------------------------------------------------------------------------------------------
    # Lightning plumbing

    def configure_optimizers(self):
        return None  # the optimizer is ours: re-created every iteration when rl.reset_optimizer

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.AdamW(
            self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay
        )

    def on_fit_start(self) -> None:
        batch = self.cfg.prompts_per_iteration * self.cfg.samples_per_prompt
        self.engine = RolloutEngine(self.model, max_batch_size=batch, max_seq_len=self.max_seq_len)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["k15_rl"] = {
            "iteration": self.iteration,
            "sampler": self.sampler.state_dict(),
            "generator": self.generator.get_state(),
            "verdicts": dict(self.verdicts),
            "optimizer": None if self.cfg.reset_optimizer or self.opt is None else self.opt.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["k15_rl"]
        self.iteration = state["iteration"]
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
        self.verdicts = Counter(state["verdicts"])
        self.persistent_opt_state = state["optimizer"]

    # ------------------------------------------------------------------------------------------
    # One RL iteration

    def training_step(self, batch, batch_idx):
        c = self.cfg
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        metrics["perf/weight_sync_s"] = self.engine.load_weights(self.model)

        t = time.perf_counter()
        records = [self.prompts[i] for i in self.sampler.draw(c.prompts_per_iteration)]
        rollout = self.roll_out(records)
        metrics["perf/rollout_s"] = time.perf_counter() - t
        metrics["rollout/tokens_per_s"] = rollout.num_response_tokens / max(metrics["perf/rollout_s"], 1e-9)

        t = time.perf_counter()
        rewards = self.score(rollout)
        metrics["perf/score_s"] = time.perf_counter() - t

        t = time.perf_counter()
        metrics.update(self.train_on(rollout, rewards))
        metrics["perf/train_s"] = time.perf_counter() - t
        metrics["perf/iteration_s"] = time.perf_counter() - started
        metrics.update(rollout.length_stats(prefix="rollout/"))
        metrics.update({f"reward/{k}": float(v) for k, v in group_stats(rewards, rollout.group_ids).items()})

        self.iteration += 1
        self.log_iteration(metrics, rollout, rewards)
        return None

    def roll_out(self, records: list[PromptRecord]) -> RolloutBatch:
        c = self.cfg
        k = c.samples_per_prompt
        prompts = [prompt_ids(self.tok, r.prompt) for r in records]
        params = SamplingParams(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
            stop_token_ids=tuple(stop_token_ids(self.tok)),
        )
        out = self.engine.generate([p for p in prompts for _ in range(k)], params, generator=self.generator)
        return RolloutBatch.build(records, prompts, k, out, pad_id=self.tok.pad_token_id)

    def score(self, rollout: RolloutBatch) -> torch.Tensor:
        """Reward per sample, looked up by sample id: a bad parse can never shift another sample's reward."""
        by_id: dict[str, float] = {}
        self._last_reasons = {}
        for sample in rollout.samples:
            verdict = verify(self.tok.decode(sample.tokens), sample.record.answer)
            reason = "truncated" if sample.finish_reason == "length" else verdict.reason
            self.verdicts[reason] += 1
            self._last_reasons[sample.id] = reason
            by_id[sample.id] = self.cfg.truncated_reward if sample.finish_reason == "length" else verdict.reward
        return torch.tensor([by_id[s.id] for s in rollout.samples], dtype=torch.float32)

    def train_on(self, rollout: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        c = self.cfg
        adv = advantages(rewards, rollout.group_ids, c.baseline, c.tau)
        input_ids, attention, loss_mask = rollout.tensors(self.device)
        n = input_ids.shape[0]
        constant = float(c.max_new_tokens) if c.logp_normalization == "constant" else None

        def seq_logp(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lp = token_logprobs(self.model, input_ids[rows], attention[rows])
            return sequence_logprob(lp, loss_mask[rows], c.logp_normalization, constant), lp

        # Reference = the policy now, before any update. With one minibatch the first forward pass
        # happens before any step, so it doubles as the reference pass; otherwise do one no-grad pass.
        ref: torch.Tensor | None = None
        ref_token_lp: torch.Tensor | None = None
        if c.minibatches > 1:
            with torch.no_grad():
                ref, ref_token_lp = seq_logp(torch.arange(n, device=self.device))

        if c.reset_optimizer or self.opt is None:
            self.opt = self.make_optimizer()
            if self.persistent_opt_state is not None:
                self.opt.load_state_dict(self.persistent_opt_state)
                self.persistent_opt_state = None
        stats: dict[str, float] = {}
        grad_norms = []
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for rows in order.chunk(c.minibatches):
                logp, token_lp = seq_logp(rows)
                if ref is None:  # first pass, no step taken yet: this *is* the reference
                    ref, ref_token_lp = torch.empty_like(logp), torch.empty_like(token_lp)
                    ref[rows], ref_token_lp[rows] = logp.detach(), token_lp.detach()
                loss, parts = rl_loss(
                    c.loss, logp, logp_ref=ref[rows], adv=adv[rows.cpu()].to(self.device),
                    rewards=rewards[rows.cpu()].to(self.device), tau=c.tau,
                )
                self.opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if c.grad_clip > 0:
                    grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)))
                self.opt.step()
                stats = {f"rl/{k}": float(v) for k, v in parts.items()}
        stats["rl/kl"] = stats.get("rl/sq_term", 0.0)  # 0.5 * (logp - logp_ref)^2 after the last step
        if grad_norms:
            stats["rl/grad_norm"] = sum(grad_norms) / len(grad_norms)
        stats["rl/logp_mismatch"] = rollout.logprob_mismatch(ref_token_lp)
        stats["rl/adv_abs_mean"] = float(adv.abs().mean())
        return stats

    # ------------------------------------------------------------------------------------------
    # Logging

    def log_iteration(self, metrics: dict[str, float], rollout: RolloutBatch, rewards: torch.Tensor) -> None:
        c = self.cfg
        total = sum(self.verdicts.values())
        for reason, count in self.verdicts.items():
            metrics[f"reward/verdict_{reason}_frac"] = count / total
        if metrics["rollout/truncated_frac"] > c.warn_truncated_frac:
            console.print(
                f"[bold red]WARNING[/]: iteration {self.iteration}: {metrics['rollout/truncated_frac']:.0%} of responses hit "
                f"rl.max_new_tokens={c.max_new_tokens} and get rl.truncated_reward={c.truncated_reward}; raise rl.max_new_tokens"
            )
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.iteration)
        self.log("reward", metrics["reward/reward_mean"], prog_bar=True, logger=False)
        self.log("len", metrics["rollout/len_mean"], prog_bar=True, logger=False)
        every = c.sample_every_n_iterations
        experiment = getattr(self.logger, "experiment", None)
        if every and experiment is not None and (self.iteration % every == 0 or self.iteration == 1):
            lines = []
            for sample, reward in list(zip(rollout.samples, rewards.tolist()))[:: max(1, len(rollout.samples) // 8)]:
                text = self.tok.decode(sample.tokens)
                lines.append(f"    [r={reward:g} {self._last_reasons.get(sample.id, '')}] {sample.record.prompt}{text}")
            experiment.add_text("rollouts", "\n".join(lines), self.iteration)

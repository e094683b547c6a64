"""The RL policy as a LightningModule: one `training_step` is one k1.5 RL iteration.

    1. sync the trainer's weights into the rollout engine            (perf/weight_sync_s)
    2. draw prompts (curriculum / prioritized: k15.rl.sampler),      (sampler/*)
       sample k responses per prompt, under a token budget with     (rollout/*)
       partial rollouts (k15.rollout.partial), stopping repeats
    3. score every response, keyed by sample id                      (reward/*)
    4. advantages from each prompt's group of k (mean baseline),
       with the length penalty once warmed up (k15.rl.length_penalty) (rl/length_*)
    5. reference log-probs = the policy at the iteration start
    6. `epochs` x `minibatches` optimizer steps on the k1.5 loss     (rl/*)
       with a fresh optimizer every iteration (paper; `rl.reset_optimizer`)

Simplifications, stated: one process holds trainer and engine; rewards come from the rule verifier
of the synthetic world (the registry of verifiers is a later issue). Prompts are drawn inside the
step, not by a DataLoader, so the sampler always sees the latest state and a checkpoint holds all
of it (sampler with its success rates and RNG, replay buffer, RNG, iteration) for an exact resume.
With partial rollouts an iteration trains only on the groups whose k responses have all finished.

With `rl.async.workers > 0` rollout worker processes generate instead of the in-process engine
(k15.rl.workers.loop.AsyncRollouts takes the place of step 1-2's generation, and publishes the
weights after step 6); everything else is the same code. With 0, nothing here changes.
"""

from __future__ import annotations

import copy
import time
from collections import Counter

import lightning as L
import torch
from rich.console import Console
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.callbacks.checkpoint import StopWithCheckpoint
from k15.callbacks.length_penalty import LengthPenaltySchedule
from k15.callbacks.sampler_histograms import SamplerHistograms
from k15.config import RewardConfig, RLConfig
from k15.data.prompts import PromptRecord
from k15.distributed import (
    ShardedEngine, all_reduce_sum, configure_fsdp2, full_weights, loss_denominator, owned_rows, rank, reshard,
    shard_weight, world_size,
)
from k15.errors import DataError, K15Error
from k15.guards import NonFiniteGuard
from k15.perf import memory_metrics
from k15.rewards.registry import RewardRegistry, verifier_name
from k15.rl.advantages import advantages, group_stats
from k15.rl.batch import RolloutBatch, token_logprobs
from k15.rl.length_penalty import length_reward, length_stats
from k15.rl.losses import rl_loss, sequence_logprob
from k15.rl.sampler import make_sampler
from k15.rl.workers.loop import AsyncRollouts, start_async_rollouts
from k15.rl.workers.staleness import StalenessHistogram
from k15.rollout.buffer import Group
from k15.data.vision_prompts import image_prompt
from k15.models.policy import is_vlm
from k15.rollout.engine import RolloutEngine, SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from k15.rollout.partial import PartialRollouts
from k15.rollout.repeat import RepeatRule
from k15.chat import RAW, ChatFormat

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
        max_nonfinite_in_a_row: int = 3,
        rewards: RewardConfig | None = None,
        chat: ChatFormat = RAW,
        judge=None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.guard = NonFiniteGuard(max_nonfinite_in_a_row, "rl")
        self.model, self.tok, self.prompts, self.cfg = model, tok, prompts, cfg
        self.chat = chat  # how prompts are shown (raw, or a chat template's user turn): as in SFT and eval
        self.max_seq_len = max_seq_len
        self.sampler = make_sampler(prompts, cfg.sampling, cfg.prompts_per_iteration, seed)
        self.rollouts = PartialRollouts(
            cfg.samples_per_prompt, cfg.prompts_per_iteration, cfg.max_new_tokens, cfg.partial.budget, cfg.partial.max_continuations,
            cfg.partial.min_groups,
        )
        self.generator = torch.Generator().manual_seed(seed)  # rollouts and minibatch order
        self.seed = seed  # async: the seed of every rollout request (k15.rl.workers.loop.request_seed)
        self.iteration = 0
        self.length_penalty_weight = 0.0  # set before each iteration by LengthPenaltySchedule
        self._prompt_tokens: dict[int, list[int]] = {}  # token ids of text prompts
        self._image_prompts: dict[int, ImagePrompt] = {}  # this iteration's image prompts, pixels read
        self.vision = is_vlm(model)  # image prompts need a VLM policy (k15's or a transformers one)
        if not self.vision and any(p.images for p in prompts):
            raise DataError(f"prompt {next(p.id for p in prompts if p.images)} has images, but the policy is a text model")
        self.verdicts: Counter[str] = Counter()  # every verifier decision so far, by reason
        self._last_reasons: dict[str, str] = {}  # sample id -> reason, for the logged rollouts
        # The prompt's domain picks its verifier; the code sandbox starts on first use. `judge`: a learned
        # reward model (rewards.rm) that rewards its domains' samples in place of their verifier.
        self.registry = RewardRegistry.from_config(rewards or RewardConfig(), judge=judge)
        self._verifier_means: dict[str, float] = {}
        self.engine: RolloutEngine | None = None
        self.workers: AsyncRollouts | None = None  # rl.async.workers > 0: rollout worker processes, not self.engine
        self.async_dropped = 0  # stale groups dropped in this run, kept across a resume (and once the workers close)
        self.opt: torch.optim.Optimizer | None = None
        self._train_started: float | None = None  # on_train_start's clock (unit tests call training_step without it)
        self._trained_before_s = 0.0  # training seconds of the run before its last resume (perf/elapsed_s)
        self.persistent_opt_state: dict | None = None

    # ------------------------------------------------------------------------------------------
    # Lightning plumbing

    def configure_model(self) -> None:
        configure_fsdp2(self, self.model)  # FSDP2 under trainer.strategy=fsdp2; nothing otherwise

    def configure_optimizers(self):
        return None  # the optimizer is ours: re-created every iteration when rl.reset_optimizer

    def make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        reshard(self.model)  # FSDP2: the optimizer must hold the sharded parameters
        return torch.optim.AdamW(
            self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay
        )

    def configure_callbacks(self) -> list[L.Callback]:
        """The recipe's per-iteration policies; Lightning adds them to the trainer's own callbacks."""
        c = self.cfg
        callbacks: list[L.Callback] = [SamplerHistograms(c.sampling.histogram_every_n_iterations)]
        if c.length_penalty.weight > 0:
            callbacks.append(LengthPenaltySchedule(c.length_penalty.weight, c.length_penalty.warmup_iterations))
        if c.asynchronous.workers:
            callbacks += [StalenessHistogram(), CloseWorkersOnException()]
        return callbacks

    def on_fit_start(self) -> None:
        batch = self.cfg.prompts_per_iteration * self.cfg.samples_per_prompt
        # A continued trajectory's prompt holds its earlier segments; left-padding aligns all rows
        # at the longest prompt, so the cache needs up to one budget more than max_seq_len.
        seq = self.max_seq_len + self.rollouts.budget
        if self.cfg.asynchronous.workers:
            self.workers = start_async_rollouts(self.model, self.cfg, seq, self.seed, self.iteration, str(self.device),
                                                self.async_dropped)
        else:
            engine = VisionRolloutEngine if self.vision else RolloutEngine
            self.engine = engine(full_weights(self.model), max_batch_size=batch, max_seq_len=seq)
        self.registry.check(self.prompts)  # an unknown verifier or unusable tests fail now, naming the prompt
        if self.registry.judge is not None:  # a learned reward model judges where the policy trains
            self.registry.judge.to(self.device)

    def on_train_start(self) -> None:
        self._train_started = time.perf_counter()

    def elapsed_s(self) -> float:
        """Training seconds so far, a resumed run's earlier ones included (perf/elapsed_s; rl.max_seconds' Timer
        keeps its own clock in the checkpoint the same way)."""
        started = self._train_started if self._train_started is not None else time.perf_counter()
        return self._trained_before_s + time.perf_counter() - started

    def on_fit_end(self) -> None:
        self.close_workers()
        self.registry.close()  # stops the sandbox's helper processes, if code prompts started them

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["k15_rl"] = {
            "iteration": self.iteration,
            "sampler": self.sampler.state_dict(),
            "rollouts": self.rollouts.state_dict(),
            "generator": self.generator.get_state(),
            "verdicts": dict(self.verdicts),
            # the persistent arm's Adam: live, or still parked from a resume whose iterations trained nothing yet
            "optimizer": None if self.cfg.reset_optimizer else (
                self.opt.state_dict() if self.opt is not None else self.persistent_opt_state),
            "guard": self.guard.state_dict(),
            "verifier_counts": dict(self.registry.counts),
            "async_dropped": self.workers.dropped if self.workers is not None else self.async_dropped,
            "elapsed_s": self.elapsed_s(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["k15_rl"]
        self.iteration = state["iteration"]
        self.sampler.load_state_dict(state["sampler"])
        self.rollouts.load_state_dict(state["rollouts"])
        self.generator.set_state(state["generator"])
        self.verdicts = Counter(state["verdicts"])
        self.persistent_opt_state = state["optimizer"]
        self.guard.load_state_dict(state["guard"])
        self.registry.counts = Counter(state["verifier_counts"])
        self.async_dropped = int(state.get("async_dropped", 0))  # absent from checkpoints written before async RL
        self._trained_before_s = float(state.get("elapsed_s", 0.0))

    # ------------------------------------------------------------------------------------------
    # One RL iteration

    def training_step(self, batch, batch_idx):
        c = self.cfg
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        self._image_prompts.clear()
        self.drawn: list[int] = []  # this iteration's new prompts (RUN/rl/drawn.jsonl, k15.callbacks.data_order)
        if self.workers is None:
            self.engine.load_weights(full_weights(self.model))  # under FSDP2 the shards are gathered first
            metrics["perf/weight_sync_s"] = time.perf_counter() - started
            t = time.perf_counter()
            done = self.rollouts.run(
                self.iteration, self.rollout_engine(), self.draw,
                self.prompt_tokens, self.sampling_params(), self.generator,
            )
        else:
            # Finished groups from the workers, each sample with the log-probs its worker recorded under the
            # version that made it (for rl/logp_mismatch); the loss's reference is recomputed in train_on with
            # the policy at this iteration's start, exactly as in the synchronous loop.
            t = time.perf_counter()
            done = self.async_round()
        metrics["perf/rollout_s"] = time.perf_counter() - t
        metrics["rollout/tokens_per_s"] = done.generated_tokens / max(metrics["perf/rollout_s"], 1e-9)
        metrics.update(done.stats)

        rollout = rewards = None
        if done.groups:  # with partial rollouts an iteration may finish no whole group
            rollout = self.to_batch(done.groups)
            t = time.perf_counter()
            rewards, correct = self.score(rollout)
            metrics["perf/score_s"] = time.perf_counter() - t
            groups = rollout.group_ids
            per_group = torch.zeros(len(done.groups)).index_add_(0, groups, correct.float()) / c.samples_per_prompt
            self.sampler.update([g.prompt_index for g in done.groups], per_group.tolist())

            t = time.perf_counter()
            adv = self.shaped_advantages(rollout, rewards, correct, metrics)
            metrics.update(self.train_on(rollout, rewards, adv))
            metrics["perf/train_s"] = time.perf_counter() - t
            metrics.update(rollout.length_stats(prefix="rollout/"))
            metrics.update({f"reward/{k}": float(v) for k, v in group_stats(rewards, groups).items()})
        metrics.update(self.sampler.stats())
        if self.workers is not None:  # the next iteration's version: this iteration's weights, for requests from now on
            metrics["perf/weight_sync_s"] = self.workers.publish(self.model, self.iteration + 1)
        metrics["perf/iteration_s"] = time.perf_counter() - started
        metrics["perf/elapsed_s"] = self.elapsed_s()  # for curves at equal wall-clock (rl.max_seconds)
        metrics.update(memory_metrics())  # rss now and peak so far: a leak shows as a rising rss

        self.iteration += 1
        self.log_iteration(metrics, rollout, rewards)
        return None

    def async_round(self):
        """This iteration's finished groups from the workers; a dead or hung worker raises StopWithCheckpoint.

        Steps: 1. keep the sampler's state; 2. run the round; 3. on a worker failure put the sampler back
        (the prompts drawn for lost groups are lost with them), so that the checkpoint PreemptionCheckpoint
        saves holds the last finished iteration: nothing else changed before training."""
        sampler = copy.deepcopy(self.sampler.state_dict())
        try:
            return self.workers.run(self.iteration, self.draw, self.prompt_tokens, self.sampling_params())
        except K15Error as failure:
            self.sampler.load_state_dict(sampler)
            raise StopWithCheckpoint(str(failure)) from failure

    def close_workers(self) -> None:
        """Stop the rollout workers, if any (at the end of fit and on any failure)."""
        if self.workers is not None:
            self.async_dropped = self.workers.dropped
            self.workers.close()
            self.workers = None

    def draw(self, n: int) -> list[int]:
        """The sampler's next `n` prompt indices, kept in `drawn` for the record of what each iteration drew."""
        drawn = self.sampler.draw(n, self.iteration)
        self.drawn += drawn
        return drawn

    def rollout_engine(self) -> RolloutEngine | ShardedEngine:
        """On N processes each rank generates its block of rows and all see every row (k15.distributed)."""
        return self.engine if world_size() == 1 else ShardedEngine(self.engine, world_size(), rank())

    def prompt_tokens(self, index: int) -> list[int] | ImagePrompt:
        """Prompt `index` for the engine: its ids, or (image prompts) an ImagePrompt whose pixels are read now."""
        record = self.prompts[index]
        if self.vision:  # (images) read once per iteration, the k samples share it, not held for the whole set
            if index not in self._image_prompts:
                self._image_prompts[index] = image_prompt(record, self.tok, self.model, self.chat)
            return self._image_prompts[index]
        if index not in self._prompt_tokens:
            self._prompt_tokens[index] = self.chat.prompt_ids(self.tok, record.prompt)
        return self._prompt_tokens[index]

    def sampling_params(self) -> SamplingParams:
        c = self.cfg
        return SamplingParams(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
            stop_token_ids=tuple(self.chat.stop_ids(self.tok, self.model)),
            repeat=RepeatRule(c.repeat.ngram, c.repeat.threshold) if c.repeat.ngram else None,
        )

    def to_batch(self, groups: list[Group]) -> RolloutBatch:
        prompts = [self.prompt_tokens(g.prompt_index) for g in groups]
        images = [p.images if isinstance(p, ImagePrompt) else [] for p in prompts]
        ids = [p.ids if isinstance(p, ImagePrompt) else p for p in prompts]
        current_only = self.cfg.partial.loss_on == "current"
        return RolloutBatch.from_groups(
            groups, self.prompts, ids, self.iteration, current_only, self.tok.pad_token_id, images=images
        )

    def score(self, rollout: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward and verifier correctness per sample, looked up by sample id: a bad parse can never
        shift another sample's reward. A response cut by length or stopped as a repeat has no final
        answer: its reward is `rl.truncated_reward` / `-rl.repeat.penalty`, and it is not correct."""
        c = self.cfg
        verdicts = self.registry.score([(s.id, self.chat.response_text(self.tok, s.tokens), s.record) for s in rollout.samples],
                                       judged={s.id for s in rollout.samples if s.finish_reason == "stop"})
        overrides = {"length": ("truncated", c.truncated_reward), "repeat": ("repeat", -c.repeat.penalty)}
        by_id: dict[str, tuple[float, bool]] = {}
        self._last_reasons = {}
        for s in rollout.samples:
            verdict = verdicts[s.id]
            reason, reward = overrides.get(s.finish_reason, (verdict.reason, verdict.reward))
            self.verdicts[reason] += 1
            self._last_reasons[s.id] = reason
            by_id[s.id] = (reward, s.finish_reason == "stop" and verdict.reward == 1.0)
        rewards = torch.tensor([by_id[s.id][0] for s in rollout.samples], dtype=torch.float32)
        correct = torch.tensor([by_id[s.id][1] for s in rollout.samples], dtype=torch.bool)
        by_verifier: dict[str, list[float]] = {}
        for s, r in zip(rollout.samples, rewards.tolist()):
            by_verifier.setdefault(verifier_name(s.record), []).append(r)
        self._verifier_means = {f"reward/{name}_mean": sum(v) / len(v) for name, v in by_verifier.items()}
        rm = self.registry.last_rm
        if rm.get("judged"):  # reward hacking shows as a rising disagreement, mostly false positives
            self._verifier_means["reward/rm_disagreement"] = rm["disagree"] / rm["judged"]
            self._verifier_means["reward/rm_false_positive_frac"] = rm["false_positive"] / rm["judged"]
            self._verifier_means["reward/rm_false_negative_frac"] = rm["false_negative"] / rm["judged"]
            self._verifier_means["reward/rm_correct_frac"] = rm["rm_correct"] / rm["judged"]  # what RL is paid for
            self._verifier_means["reward/truth_correct_frac"] = rm["truth_correct"] / rm["judged"]  # what is true
        return rewards, correct

    def shaped_advantages(
        self, rollout: RolloutBatch, rewards: torch.Tensor, correct: torch.Tensor, metrics: dict[str, float]
    ) -> torch.Tensor:
        """Group-mean advantages of r, or of r + w * len_reward (paper §2.3.3) once the penalty is on."""
        c, w = self.cfg, self.length_penalty_weight
        groups = rollout.group_ids
        if c.length_penalty.weight == 0:
            return advantages(rewards, groups, c.baseline, c.tau)
        lengths = torch.tensor([len(s.tokens) for s in rollout.samples])  # response tokens, all segments
        len_reward = length_reward(lengths, correct, groups)
        metrics.update(length_stats(len_reward, lengths, correct, groups, w))  # logged during the warm-up too
        if c.length_penalty.in_baseline:
            return advantages(rewards + w * len_reward, groups, c.baseline, c.tau)
        return advantages(rewards, groups, c.baseline, c.tau) + w * len_reward

    def train_on(self, rollout: RolloutBatch, rewards: torch.Tensor, adv: torch.Tensor) -> dict[str, float]:
        c = self.cfg
        if not self.guard.ok(rewards, adv, step=self.iteration):  # a verifier returned NaN/inf: no update
            return {"rl/nonfinite_skipped": float(self.guard.skipped)}
        input_ids, attention, loss_mask = rollout.tensors(self.device)
        n, world = input_ids.shape[0], world_size()
        constant = float(c.max_new_tokens) if c.logp_normalization == "constant" else None

        def seq_logp(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lp = token_logprobs(self.model, input_ids[rows], attention[rows], rollout.images_of(rows.cpu()))
            return sequence_logprob(lp, loss_mask[rows], c.logp_normalization, constant), lp

        # Reference = the policy now, before any update. With one minibatch the first forward pass
        # happens before any step, so it doubles as the reference pass; otherwise do one no-grad pass.
        ref: torch.Tensor | None = None
        ref_token_lp: torch.Tensor | None = None
        if c.minibatches > 1:
            with torch.no_grad():
                mine = owned_rows(torch.arange(n, device=self.device))  # every row on one process
                logp, token_lp = seq_logp(mine)
                ref, ref_token_lp = logp.new_zeros(n), token_lp.new_zeros(n, token_lp.shape[1])
                ref[mine], ref_token_lp[mine] = logp, token_lp

        if c.reset_optimizer or self.opt is None:
            self.opt = self.make_optimizer()
            if self.persistent_opt_state is not None:
                self.opt.load_state_dict(self.persistent_opt_state)
                self.persistent_opt_state = None
        stats: dict[str, float] = {}
        grad_norms = []
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for minibatch in order.chunk(c.minibatches):
                rows = owned_rows(minibatch)  # on N processes: this rank's share, its loss weighted
                weight = shard_weight(
                    loss_denominator(c.loss, rewards[rows.cpu()]), loss_denominator(c.loss, rewards[minibatch.cpu()]), world
                )
                if len(rows) == 0:  # nothing of this minibatch is ours: join its collectives with a zero loss
                    rows, weight = minibatch[:1], 0.0
                logp, token_lp = seq_logp(rows)
                if ref is None:  # first pass, no step taken yet: this *is* the reference
                    ref, ref_token_lp = logp.new_zeros(n), token_lp.new_zeros(n, token_lp.shape[1])
                    ref[rows], ref_token_lp[rows] = logp.detach(), token_lp.detach()
                loss, parts = rl_loss(
                    c.loss, logp, logp_ref=ref[rows], adv=adv[rows.cpu()].to(self.device),
                    rewards=rewards[rows.cpu()].to(self.device), tau=c.tau,
                )
                if world > 1:  # the global loss decides the skip, so every rank skips together
                    loss = loss * weight
                    parts["loss"] = all_reduce_sum(loss) / world
                self.opt.zero_grad(set_to_none=True)
                if not self.guard.ok(parts["loss"] if world > 1 else loss, step=self.iteration):
                    continue  # skipped and counted; no backward through a NaN
                self.manual_backward(loss)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip if c.grad_clip > 0 else float("inf"))
                if not self.guard.ok(norm, step=self.iteration):
                    self.opt.zero_grad(set_to_none=True)
                    continue
                grad_norms.append(float(norm))
                self.opt.step()
                stats = {f"rl/{k}": float(v) for k, v in parts.items()}
        stats["rl/kl"] = stats.get("rl/sq_term", 0.0)  # 0.5 * (logp - logp_ref)^2 after the last step
        if grad_norms:
            stats["rl/grad_norm"] = sum(grad_norms) / len(grad_norms)
        # on N processes, over this rank's rows: the others' reference rows are zeros here
        stats["rl/logp_mismatch"] = rollout.logprob_mismatch(ref_token_lp, owned_rows(torch.arange(n)).tolist())
        stats["rl/adv_abs_mean"] = float(adv.abs().mean())  # the whole iteration's, for every loss
        stats["rl/nonfinite_skipped"] = float(self.guard.skipped)
        return stats

    # ------------------------------------------------------------------------------------------
    # Logging

    def log_iteration(self, metrics: dict[str, float], rollout: RolloutBatch | None, rewards: torch.Tensor | None) -> None:
        c = self.cfg
        total = sum(self.verdicts.values())
        for reason, count in self.verdicts.items():
            metrics[f"reward/verdict_{reason}_frac"] = count / total
        metrics.update(self._verifier_means)
        for key, count in self.registry.counts.items():  # "verifier/reason" -> samples so far
            metrics[f"reward/count_{key.replace('/', '_')}"] = float(count)
        if metrics.get("rollout/truncated_frac", 0.0) > c.warn_truncated_frac:
            console.print(
                f"[bold red]WARNING[/]: iteration {self.iteration}: {metrics['rollout/truncated_frac']:.0%} of responses hit "
                f"rl.max_new_tokens={c.max_new_tokens} and get rl.truncated_reward={c.truncated_reward}; raise rl.max_new_tokens"
            )
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.iteration)
        if rollout is None or rewards is None:
            return
        self.log("reward", metrics["reward/reward_mean"], prog_bar=True, logger=False)
        self.log("len", metrics["rollout/len_mean"], prog_bar=True, logger=False)
        every = c.sample_every_n_iterations
        experiment = getattr(self.logger, "experiment", None)
        if every and experiment is not None and (self.iteration % every == 0 or self.iteration == 1):
            lines = []
            logged = list(zip(rollout.samples, rewards.tolist()))[:: max(1, len(rollout.samples) // 8)]
            for sample, reward in logged:
                text = self.tok.decode(sample.tokens)
                parts = f" {sample.segments} segments" if sample.segments > 1 else ""
                lines.append(f"    [r={reward:g} {self._last_reasons.get(sample.id, '')}{parts}] {sample.record.prompt}{text}")
            experiment.add_text("rollouts", "\n".join(lines), self.iteration)
            if self.vision:
                self.log_rollout_images(experiment, logged)

    def log_rollout_images(self, experiment, logged: list) -> None:
        """The images of the logged rollouts (TensorBoard's Images tab), captioned by response and reward."""
        tower = getattr(self.model.tower, "cfg", None)  # k15's VLM; a transformers one keeps its processor's
        mean, std = (tower.pixel_mean, tower.pixel_std) if tower is not None else (self.model.mean, self.model.std)
        mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1, 1) for v in (mean, std))
        for i, (sample, reward) in enumerate(logged[:4]):
            for j, pixels in enumerate(sample.images):
                shown = (pixels.detach().float().cpu() * std + mean).clamp(0, 1)
                experiment.add_image(f"rollouts/sample{i}_image{j}", shown, self.iteration)
            if sample.images:
                experiment.add_text(f"rollouts/sample{i}", f"r={reward:g}: {self.tok.decode(sample.tokens)}", self.iteration)


class CloseWorkersOnException(L.Callback):
    """On a failed fit (an exception anywhere, Ctrl-C included) the rollout workers stop before the error surfaces."""

    def on_exception(self, trainer: L.Trainer, pl_module: RLModule, exception: BaseException) -> None:
        pl_module.close_workers()

"""Asynchronous RL (issue #19): rollout worker processes fed from the trainer process.

`rl.async.workers=N` (N > 0) runs the RL stage on N workers; 0, the default, is today's synchronous
loop, bit-exact as before (the same code path: RLModule only dispatches).

What exists (each file one concept):
- weights.py: WeightPublisher (trainer) / WeightSubscriber (worker). The policy's state dict in one
  flat shared-memory buffer allocated once; `publish(model)` copies into it and sets an integer
  policy version; a worker copies a whole version (seqlock on x86-64, a lock elsewhere) into its
  own model only when the version changed.
- messages.py: RolloutRequest (a batch of prompts, SamplingParams, seed, optional partial-rollout
  limits/history: per row, the most new tokens and how many last prompt tokens are its own earlier
  output) and RolloutResult (tokens, log-probs, finish reasons, the policy version that
  produced them, seconds, or a one-line error).
- worker.py: the spawn-context worker process: dies with its parent (PR_SET_PDEATHSIG), one thread,
  builds its RolloutEngine from the model's transformers config and the shared weights, picks up
  new weights only between requests, and beats a shared heartbeat cell (idle, and per decode step).
- pool.py: RolloutWorkers(n, model, ...): starts the workers, publish / submit / get, `check()`
  (one-line K15Error naming a dead or hung worker), `close()`; no worker outlives the trainer.
- loop.py: AsyncRollouts, the trainer's side: keeps 2 x prompts_per_iteration groups outstanding
  (drawn from the trainer's sampler, one request per group, seeded from run seed, iteration, slot,
  prompt and segment), continues a group's unfinished members (partial rollouts), returns each
  iteration's finished groups whose oldest segment is at most `max_staleness` versions old (older
  ones dropped, counted, replaced), logs async/* (staleness mean/max, dropped groups, worker busy
  fraction, trainer wait, samples/s) and, with a budget, the synchronous loop's rollout/* partial
  curves, publishes after the optimizer steps. It returns the same RolloutRound as
  PartialRollouts, so scoring, advantages and the loss are the synchronous ones.
- staleness.py: StalenessHistogram, the TensorBoard histogram `async/staleness` (per trained group,
  versions old), every iteration.

The same request on the same weights gives the same tokens and log-probs in a worker as in the
in-process engine (tests/rl/test_async_workers.py).

Done:
1. Config (k15.config.AsyncConfig, `rl.asynchronous`; `rl.async.KEY` is accepted on the command line
   for it): workers, max_staleness, heartbeat_timeout_s; validated. Refused in one line with
   workers > 0: more than one trainer process (k15.config).
2. RLModule wiring: the pool starts in on_fit_start (version = iteration, so a resume starts at its
   iteration) and stops in on_fit_end and on any exception (CloseWorkersOnException). The loss's
   reference log-probs are recomputed by the trainer at the iteration start, as in the synchronous
   loop; the worker's log-probs travel with the samples. Bounded staleness: groups older than
   max_staleness are dropped and counted; each segment of a trajectory records the version that
   made it, so `rl.partial.loss_on=current` gives stale tokens no gradient (see 7). Stop ids and the repeat
   rule travel in SamplingParams; the sampler (curriculum, prioritized), verifiers (sandbox included)
   and length penalty stay in the trainer, unchanged.
3. Failure: pool.check() every iteration, and every wait for a result, names a dead or hung worker
   in one K15Error. RLModule.async_round turns it into k15.callbacks.checkpoint.StopWithCheckpoint
   after putting the sampler back as it was when the iteration began (the prompts drawn for the lost
   groups go with them); the failed iteration changed nothing else, so the state is the last finished
   iteration's. PreemptionCheckpoint (the preemption save, same path) writes RUN/rl/checkpoints/
   last.ckpt in its on_exception and prints `stopped in rl after iteration N: saved PATH; continue
   with: python -m experiments.run --resume RUN`; then the error's own line, `error: rollout worker
   i (pid P) ...`, ends the run with exit 2. No worker survives (the pool closes; PR_SET_PDEATHSIG).
4. Checkpoint and resume: trainer state, sampler (with its RNG), replay buffer and iteration are
   saved as in the synchronous loop, plus `async/dropped_groups`' count, which a resume continues.
   What a kill loses is the workers' in-flight work: at most 2 x prompts_per_iteration groups
   (generated or being generated, never trained on) and the prompts drawn for them; a resume
   publishes the checkpoint's weights as its iteration's version and draws the sampler's next
   prompts, from where the checkpoint's sampler stood: no finished iteration runs again (a SIGKILLed
   trainer resumes from its last periodic checkpoint, as the synchronous loop does).
   Async runs are not bit-reproducible: which groups arrive in time, and so which are dropped and
   which policy version made each one, depends on timing (requests are seeded, but the weights a
   worker holds when it starts one are not fixed). The synchronous default (workers=0) stays bit-exact.
5. TensorBoard: async/staleness (histogram) with async/staleness_mean and _max, dropped groups,
   worker busy fraction, trainer wait, samples/s, groups in flight.
6. benchmarks/async_rl.py: trained samples/s and held-out pass@1 at equal RL wall-clock, sync vs
   workers=1 (`--arms sync_partial,async_partial`: with partial rollouts), one thread per process,
   long-CoT SFT policy over levels 1-6 (or `--override world.max_level=8`); last line
   `async ratio=X.XX`; `--smoke` runs in seconds (tests/test_async_rl_benchmark.py); measured on the
   idle 2-core machine in benchmarks/RESULTS.md.
   Tests: tests/rl/test_async_rl.py (the command line, the async/ curves and histogram, drops, a
   killed worker -> checkpoint -> --resume, a SIGTERMed / SIGKILLed trainer -> --resume).
7. Partial rollouts through the workers (paper §2.6.2: a long trajectory never holds the others
   back), `rl.partial.budget` below `rl.max_new_tokens` with workers > 0. A request is one segment
   of at most `budget` tokens for each unfinished member of one group, its prompt the original one
   plus the member's tokens so far (history: the repeat rule sees them as response). A group with
   unfinished members goes back to the trainer (AsyncRollouts.waiting) and is resubmitted, to any
   worker, as soon as the trainer is collecting (between iterations' training, not during it).
   k15.rollout.partial's pieces are shared, not copied: effective_budget (the reach rule),
   segment_limits (limits, history), settle (done / saved / capped by max_continuations, truncation
   at max_new_tokens), partial_stats (rollout/partial_frac, continued_frac, capped_frac, buffer_*,
   segments_mean, staleness_*, stale_token_frac). A group is trained once all k finished; its
   staleness is the current version minus its oldest segment's version. Beyond max_staleness it is
   dropped and counted when it finishes, or before its continuation if it is already too stale
   while waiting (staleness only grows; a stale group is not regenerated, a fresh draw replaces it).
   `min_groups` changes nothing here: every round returns prompts_per_iteration groups. The
   synchronous replay buffer stays empty; unfinished groups are in-flight work, lost on a kill like
   any other (at most 2 x prompts_per_iteration groups). Greedy, same weights: a trajectory made in
   segments through a worker equals one go token for token (tests/rl/test_async_rl.py).

8. Image prompts and VLM policies (k15's VLM, a transformers VLM): a worker builds the policy from its
   skeleton (worker.skeleton_of: the module with meta tensors, hooks dropped, tied names and the
   non-persistent rotary buffers carried) and runs the VisionRolloutEngine; requests carry
   ImagePrompts, pixels included. Worker == in-process vision engine bit for bit (k15 VLM,
   Qwen2.5-VL, Pixtral-LLaVA; tests/vision/test_async_vision.py).
9. With partial rollouts a collector thread resubmits continuations while the trainer trains
   (loop.py step 5; `async/resubmitted_while_training`), so workers do not idle until the next round.
10. `rl.max_seconds` (any RL run) ends training on a clock (Lightning's Timer, saved with the
   checkpoint) and `perf/elapsed_s` is logged every iteration: arms at equal wall-clock
   (benchmarks/async_rl.py, F8's wall-clock re-run in docs/results.md).

Not done (each refused in one line or stated): more than one trainer process (DDP/FSDP2: rank 0 would
gather the full weights and publish; across nodes, a broadcast over the process group); a GPU
trainer with workers is untested; in-flight groups are not checkpointed (a kill loses at most
2 x prompts_per_iteration groups, see 4).
"""

from k15.rl.workers.messages import STOP, RolloutRequest, RolloutResult
from k15.rl.workers.pool import RolloutWorkers
from k15.rl.workers.weights import WeightPublisher, WeightSubscriber

__all__ = ["STOP", "RolloutRequest", "RolloutResult", "RolloutWorkers", "WeightPublisher", "WeightSubscriber"]

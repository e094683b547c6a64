"""Asynchronous RL, first step (issue #19): rollout worker processes fed from the trainer process.

Not wired into RLModule or the config yet; today's synchronous loop is unchanged.

What exists (each file one concept):
- weights.py: WeightPublisher (trainer) / WeightSubscriber (worker). The policy's state dict in one
  flat shared-memory buffer allocated once; `publish(model)` copies into it and sets an integer
  policy version; a worker copies a whole version (seqlock on x86-64, a lock elsewhere) into its
  own model only when the version changed.
- messages.py: RolloutRequest (a batch of prompts, SamplingParams, seed, optional partial-rollout
  limits/history) and RolloutResult (tokens, log-probs, finish reasons, the policy version that
  produced them, seconds, or a one-line error).
- worker.py: the spawn-context worker process: dies with its parent (PR_SET_PDEATHSIG), one thread,
  builds its RolloutEngine from the model's transformers config and the shared weights, picks up
  new weights only between requests, and beats a shared heartbeat cell (idle, and per decode step).
- pool.py: RolloutWorkers(n, model, ...): starts the workers, publish / submit / get, `check()`
  (one-line K15Error naming a dead or hung worker), `close()`; no worker outlives the trainer.

The same request on the same weights gives the same tokens and log-probs in a worker as in the
in-process engine (tests/rl/test_async_workers.py).

Next steps, in order:
1. Config: `rl.async.workers` (0 = today's loop, the default), `rl.async.max_staleness`,
   heartbeat timeout; validated in k15.config.
2. RLModule wiring: start the pool in on_fit_start (close in on_fit_end and on failure), publish
   after every optimizer step with version = iteration, keep N requests in flight so workers never
   idle, and train on finished groups. The trainer keeps owning the sampler (curriculum,
   prioritized): it draws prompts when it submits, and updates success rates when it scores.
3. Buffer and staleness: each segment's (version, tokens) goes into k15.rollout.buffer (today
   segments record the iteration; with async, the version is that iteration); groups older than
   `max_staleness` are dropped or regenerated and counted; `rl.partial.loss_on` decides whether
   stale segments get gradient. TensorBoard: staleness histogram, worker/trainer idle fractions
   (RolloutResult.seconds / weights_s against wall time), samples per second, dropped groups.
4. Everything else through the workers: stop ids, repeat rule and length penalty work as they are
   (they travel in SamplingParams or are applied by the trainer); image prompts need the vision
   engine in the worker (VisionRolloutEngine + pixels in the request); verifiers stay in the
   trainer. Sharded trainers (FSDP2): rank 0 gathers the full weights (full_weights) and publishes;
   across nodes, broadcast over the process group or a stated follow-up.
5. Checkpoint/resume: trainer state, buffer and sampler are saved as today; requests in flight
   are lost on a kill (at most the pending requests of every worker) and resubmitted from the
   buffer on resume; async runs are not bit-reproducible, the synchronous default stays bit-exact.
6. Failure: on check() failing, the trainer saves a checkpoint and exits non-zero (a test kills a
   worker mid-run). Orphans are already covered here.
7. benchmarks/: trained samples/s and held-out pass@1 at equal wall-clock, sync vs workers=1 on 2
   cores with long-tailed lengths, last line `async ratio=X.XX`; re-run F8 with async partial rollouts.
"""

from k15.rl.workers.messages import STOP, RolloutRequest, RolloutResult
from k15.rl.workers.pool import RolloutWorkers
from k15.rl.workers.weights import WeightPublisher, WeightSubscriber

__all__ = ["STOP", "RolloutRequest", "RolloutResult", "RolloutWorkers", "WeightPublisher", "WeightSubscriber"]

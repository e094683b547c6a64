"""Asynchronous RL (issue #19): rollout worker processes fed from the trainer process.

`rl.async.workers=N` (N > 0) runs the RL stage on N workers; 0, the default, is today's synchronous
loop, bit-exact as before (the same code path: RLModule only dispatches).

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
- loop.py: AsyncRollouts, the trainer's side: keeps 2 x prompts_per_iteration groups in flight
  (drawn from the trainer's sampler, one request per group, seeded from run seed, iteration, slot
  and prompt), returns each iteration's finished groups made at most `max_staleness` versions ago
  (older ones dropped, counted, replaced), logs async/* (staleness mean/max, dropped groups, worker
  busy fraction, trainer wait, samples/s), publishes after the optimizer steps. It returns the same
  RolloutRound as PartialRollouts, so scoring, advantages and the loss are the synchronous ones.

The same request on the same weights gives the same tokens and log-probs in a worker as in the
in-process engine (tests/rl/test_async_workers.py).

Done:
1. Config (k15.config.AsyncConfig, `rl.asynchronous`; `rl.async.KEY` is accepted on the command line
   for it): workers, max_staleness, heartbeat_timeout_s; validated. Refused in one line with
   workers > 0: partial rollouts (rl.partial.budget), more than one trainer process, image prompts
   or a VLM policy (in RLModule).
2. RLModule wiring: the pool starts in on_fit_start (version = iteration, so a resume starts at its
   iteration) and stops in on_fit_end and on any exception (CloseWorkersOnException); pool.check()
   every iteration: a dead or hung worker stops the run with a one-line K15Error naming it (exit 2
   from experiments.run), no orphan. The loss's reference log-probs are recomputed by the trainer at
   the iteration start, as in the synchronous loop; the worker's log-probs travel with the samples.
   Bounded staleness (part of step 3): groups older than max_staleness are dropped and counted;
   a group's trajectories record its version as their segment, so `rl.partial.loss_on=current`
   gives a stale group no gradient. Stop ids and the repeat rule travel in SamplingParams; the
   sampler (curriculum, prioritized), verifiers (sandbox included) and length penalty stay in the
   trainer, unchanged.
   Tests: tests/rl/test_async_rl.py (the command line, the async/ curves, drops, a killed worker).

Next steps, in order:
3. Partial rollouts through the workers: segments with (version, tokens) in k15.rollout.buffer,
   continued by later requests (RolloutRequest already carries limits and history); a staleness
   histogram. Today workers > 0 refuses rl.partial.budget.
4. Image prompts through the workers: the vision engine in the worker (VisionRolloutEngine + pixels
   in the request). Sharded trainers (FSDP2): rank 0 gathers the full weights (full_weights) and
   publishes; across nodes, broadcast over the process group or a stated follow-up. Workers use the
   trainer's device; a GPU trainer with workers is untested.
5. Checkpoint/resume of the async loop: trainer state, buffer and sampler are saved as today; the
   groups in flight (at most 2 x prompts_per_iteration) are lost on a kill and drawn anew on resume
   (a resume starts the pool at the checkpoint's iteration, untested); a test that kills an async
   run and resumes it. Async runs are not bit-reproducible (which groups arrive in time depends on
   timing); the synchronous default stays bit-exact.
6. Failure: on check() failing, also save a checkpoint before exiting non-zero (today: the pool is
   closed and the run exits 2 without one).
7. benchmarks/: trained samples/s and held-out pass@1 at equal wall-clock, sync vs workers=1 on 2
   cores with long-tailed lengths, last line `async ratio=X.XX`; re-run F8 with async partial rollouts.
"""

from k15.rl.workers.messages import STOP, RolloutRequest, RolloutResult
from k15.rl.workers.pool import RolloutWorkers
from k15.rl.workers.weights import WeightPublisher, WeightSubscriber

__all__ = ["STOP", "RolloutRequest", "RolloutResult", "RolloutWorkers", "WeightPublisher", "WeightSubscriber"]

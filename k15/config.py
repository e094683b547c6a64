"""The typed config schema, and how a config is built: base -> presets -> experiment -> overrides.

An experiment (a file in experiments/) returns an `ExperimentConfig` built with `base(...)`, which
loads the YAML presets of configs/ (model sizes, trainer presets). Command-line `key=value`
overrides apply last through `apply_overrides`. OmegaConf does the type checking and coercion;
this module turns its complaints into one-line errors that name the key and the closest valid keys.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from k15.errors import ConfigError
from k15.models.attention import ATTN_IMPLEMENTATIONS
from k15.rewards.answers import GOLD_SOURCES as ANSWER_FROM
from k15.models.projector import ProjectorConfig
from k15.models.vision import VisionConfig
from k15.rewards.code import CodeConfig
from k15.rewards.math import MathConfig
from k15.rewards.sandbox import SandboxLimits

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
# The vision-language stages (paper §7): tower alone, joint, cooldown, long-context activation.
VISION_STAGES = ("vision_tower", "vision_joint", "cooldown", "long_context")
RM_STAGES = ("rm_data", "classic_rm", "cot_rm")  # the learned reward models; they export judges, not policies
STAGES = ("pretrain", *VISION_STAGES, "sft", "rl", "merge", "shortest_rs", "dpo", "l2s_rl", *RM_STAGES, "eval")
MODEL_STAGES = ("pretrain", *VISION_STAGES, "sft", "rl", "merge", "shortest_rs", "dpo", "l2s_rl")  # stages that export a model
VISION_TASKS = ("problem", "count", "compare", "chart")  # image tasks with a verifiable answer
SYNTHETIC_SOURCES = ("text", "caption", "interleaved", "ocr", "synthetic")  # k15.synthetic.shards
TEXT_ONLY_STAGES = ("sft", "merge", "shortest_rs", "dpo", "l2s_rl")  # they load a text model
PRESET_GROUPS = ("model", "trainer")
STRATEGIES = ("auto", "ddp", "fsdp", "fsdp2")  # trainer.strategy


@dataclass
class RunConfig:
    name: str = ""  # set by the runner: the experiment (and arm) name
    dir: str | None = None  # default: <root>/<name>/<timestamp>
    root: str = "runs"
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default


@dataclass
class ModelConfig:
    family: str = "llama"  # llama | qwen2 (transformers classes)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 512
    max_seq_len: int = 128
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    init_from: str | None = None  # a local HF checkpoint dir; when set, the size fields are ignored
    tokenizer: str | None = None  # a local HF tokenizer dir; default: the synthetic-world tokenizer
    attn_implementation: str = "sdpa"


@dataclass
class WorldConfig:
    """The synthetic text world: chains of single-digit +/- operations, level = number of ops."""

    min_level: int = 1
    max_level: int = 6
    heldout_fraction: float = 0.1  # share of all problems reserved for evaluation (split by hash)
    error_rate: float = 0.1  # long CoT: chance that a step is first written wrong, then corrected
    seed: int = 0


@dataclass
class DataConfig:
    """A researcher's own data: how prompts are shown to the model, and how prompt files map onto k15's fields.

    The mapping applies to every prompt file of the run (rl.prompt_path, eval.prompt_path) and to
    sft.data_path (prompt_field + response_field); see k15/data/prompts.py and k15/chat.py.
    """

    # none: raw text after <bos> (the tiny world) | model: the checkpoint's own chat template | a Jinja file
    chat_template: str = "none"
    system_prompt: str | None = None  # with a chat template: a system turn before each prompt
    prompt_field: str = "prompt"  # e.g. problem (MATH), question (GSM8K)
    answer_field: str = "answer"  # e.g. solution (MATH), answer (GSM8K)
    answer_from: str = "none"  # the gold answer inside answer_field: none (as is) | gsm8k (after ####) | boxed (last \boxed{})
    response_field: str = "response"  # SFT files: the target response (e.g. solution)
    id_field: str = "id"  # optional in the file: a hash of the prompt text when absent
    difficulty_field: str = "difficulty"  # optional: an integer, or a text holding one ("Level 3")
    domain_field: str = "domain"  # optional: picks the verifier (math, arithmetic, code, ...)
    # optional: a prompt's images, one or a list in reading order: paths (relative to the prompt file),
    # datasets' Image structs {"bytes", "path"} (Parquet, save_to_disk) or raw bytes; e.g. image (one a row)
    image_field: str = "images"
    default_domain: str = "math"  # the domain of rows without one
    max_missing_answers: float = 0.05  # rows without a gold answer are dropped and counted; above this share: refused


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class PretrainConfig:
    max_steps: int = 800
    batch_size: int = 32  # packed rows per step
    seq_len: int = 128
    num_documents: int = 60000
    mix_raw: float = 0.3  # bare equations "3+4-2=5"
    mix_short: float = 0.2  # prompt + short answer
    mix_long: float = 0.5  # prompt + long chain of thought
    data_path: str | None = None  # a text file (one document per line) instead of the synthetic corpus
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class SFTConfig:
    max_steps: int = 300
    batch_size: int = 128
    num_examples: int = 30000
    long_fraction: float = 0.5  # share of long-CoT traces; 1.0 is the paper's long-CoT warm-up set
    data_path: str | None = None  # JSONL of {"prompt", "response"} instead of the synthetic world
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20))


@dataclass
class VisionDataConfig:
    """Where the vision stages read: webdataset shard sources (k15.data.mixture), the synthetic world's by default."""

    # source name -> shards (a directory, glob, brace pattern or comma-separated list). Empty: the
    # synthetic world's sources are written once to RUN/data/shards (k15.synthetic.shards).
    shards: dict[str, str] = field(default_factory=dict)
    # documents per synthetic source, when `shards` is empty
    synthetic: dict[str, int] = field(default_factory=lambda: {
        "text": 6000, "caption": 1000, "interleaved": 1000, "ocr": 2000, "synthetic": 8000})
    per_shard: int = 1000
    shuffle_buffer: int = 256
    num_workers: int = 0
    max_skip_fraction: float = 0.05  # per source and reader: past it the stage fails, naming the shard


@dataclass
class VLMConfig:
    """The vision half of a VLM: built on the text decoder by the first vision stage."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    # image tasks for RL prompts and evaluation (k15.synthetic.images): problem (arithmetic shown as
    # an image, text-rendered) and the visual-reasoning kinds count, compare, chart
    tasks: list[str] = field(default_factory=lambda: ["problem"])


@dataclass
class VLMStageConfig:
    """One vision-language training stage over the shard mixture (k15.modules.vlm_train)."""

    max_steps: int = 200
    batch_size: int = 16  # packed rows per step
    seq_len: int = 128
    trainable: list[str] = field(default_factory=lambda: ["tower", "projector", "decoder"])  # the rest is frozen
    weights: dict[str, float] = field(default_factory=dict)  # source -> share of tokens (k15.data.mixture)
    weights_end: dict[str, float] = field(default_factory=dict)  # if set: the shares move linearly to these by the end
    ocr_weight: float = 0.0  # the reading loss (embedding_softmax projector only)
    lm_weight: float = 1.0  # the next-token loss on the mixture
    ocr_batch_size: int = 32
    ocr_kinds: list[str] = field(default_factory=lambda: ["ocr"])  # reading batches: ocr strips, scene cells (take turns)
    seq_len_schedule: list[int] = field(default_factory=list)  # long context: row length per phase (e.g. 4x growth)
    full_attention_share: float = 0.0  # rows whose documents are joined into one attention span
    rope_theta: float = 0.0  # > 0: the decoder's RoPE base is set to this when the stage starts
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=20))


def _stage(**kwargs) -> Callable[[], VLMStageConfig]:
    return lambda: VLMStageConfig(**kwargs)


@dataclass
class SamplingConfig:
    """Which prompts an iteration draws (paper §2.3.4). Both off: a shuffled pass over the set."""

    curriculum: str = "none"  # none | paper (uniform, then hard only) | gradual (easiest share grows to all)
    hard_from_iteration: int = 0  # paper: the iteration from which only hard prompts are drawn
    hard_min_difficulty: int | None = None  # paper: difficulty >= this is hard; None: >= the set's median difficulty
    gradual_start: float = 0.3  # gradual: share of the set (easiest first) drawable at iteration 0
    gradual_iterations: int = 0  # gradual: iterations until the whole set is drawable
    prioritized: bool = False  # P(i in the draw) proportional to (1 - s_i) + floor, s_i = prompt i's success rate
    # Keeps solved prompts drawable. 0: the paper's exact P(i) ∝ 1 - s_i; a solved prompt (s_i = 1) is then
    # drawn only to fill slots the unsolved ones cannot (all solved: uniform), see k15.rl.sampler
    floor: float = 0.05
    success_tracking: str = "ema"  # ema | counts (running mean, the initial value counting as one observation)
    ema_decay: float = 0.7  # ema: s <- decay * s + (1 - decay) * (this draw's success rate)
    initial_success: float = 0.5  # s_i before the first draw, for prompts without a curation pass_rate
    histogram_every_n_iterations: int = 10  # sampler/ histograms in TensorBoard; 0: never


@dataclass
class LengthPenaltyConfig:
    """The paper's length reward (§2.3.3) within each group of k: r + weight * len_reward."""

    weight: float = 0.0  # 0: off
    warmup_iterations: int = 0  # no penalty before this iteration, the constant weight from it on
    in_baseline: bool = True  # the group-mean baseline is taken over r + w*len_reward (else len_reward is added after)


@dataclass
class PartialRolloutConfig:
    """Partial rollouts (§2.6.2): a per-iteration token budget per trajectory and a replay buffer."""

    budget: int = 0  # output tokens per trajectory per iteration; 0 (or >= max_new_tokens): off, every response in one go
    # A trajectory continued this often and still unfinished is finalized as truncated. budget x (max_continuations + 1)
    # must reach max_new_tokens (validate() refuses less), so this never cuts an answer short of max_new_tokens.
    max_continuations: int = 4
    loss_on: str = "all"  # all (every segment) | current (only tokens generated in this iteration)
    # Train only once this many groups have finished (they wait in the buffer until then); 0: train
    # whatever finished. A fresh Adam's first step has size ~lr whatever the batch, so steps on a
    # handful of groups are as large as on many and far noisier (docs/results.md, F8).
    min_groups: int = 0


@dataclass
class RepeatConfig:
    """Early stop of degenerate repetition inside the rollout engine (§2.6.2)."""

    ngram: int = 0  # n; 0: off
    threshold: int = 4  # stop when the newest n-gram has occurred this many times in the response
    penalty: float = 0.0  # a repeat-stopped response gets reward -penalty


@dataclass
class AsyncConfig:
    """Asynchronous RL (issue #19, k15.rl.workers): rollout worker processes generate while the trainer trains.

    On the command line `rl.async.KEY` is accepted for `rl.asynchronous.KEY` (`async` is a Python keyword).
    """

    workers: int = 0  # rollout worker processes; 0: today's synchronous loop, unchanged
    max_staleness: int = 1  # train on a group only if made by a policy at most this many versions (iterations) old
    heartbeat_timeout_s: float = 300.0  # a worker silent this long is named as hung and the run stops


@dataclass
class RLConfig:
    """One iteration: draw prompts, sample k responses each, score, then `epochs` x `minibatches` optimizer steps."""

    iterations: int = 60
    prompts_per_iteration: int = 32
    samples_per_prompt: int = 8  # k
    epochs: int = 2  # passes over the iteration's samples
    minibatches: int = 1  # optimizer steps per pass
    loss: str = "k15"  # k15 | rest | reinforce
    tau: float = 0.05  # weight of the squared log-ratio penalty (paper's tau)
    baseline: str = "mean"  # mean | logmeanexp (exact tau*log Z estimate)
    logp_normalization: str = "sum"  # sum (sequence log-prob) | mean (per token) | constant (/ max_new_tokens)
    lr: float = 5e-5
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    reset_optimizer: bool = True  # a fresh Adam every iteration, as in the paper
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    truncated_reward: float = 0.0  # reward of a response cut by max_new_tokens
    prompt_path: str | None = None  # JSONL prompt set; default: the synthetic world's
    num_prompts: int = 4096  # size of the synthetic prompt set
    sample_every_n_iterations: int = 10  # log sample rollouts as text
    checkpoint_every_n_iterations: int = 20
    max_seconds: float = 0.0  # stop RL after this many seconds of training (0: run all iterations); equal wall-clock arms
    warn_truncated_frac: float = 0.5  # warn loudly when more answers than this are cut
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    length_penalty: LengthPenaltyConfig = field(default_factory=LengthPenaltyConfig)
    partial: PartialRolloutConfig = field(default_factory=PartialRolloutConfig)
    repeat: RepeatConfig = field(default_factory=RepeatConfig)
    asynchronous: AsyncConfig = field(default_factory=AsyncConfig)  # `rl.async.*` on the command line


@dataclass
class Long2ShortConfig:
    """Short-CoT models from a long-CoT one (paper §2.4): merge, shortest rejection sampling, DPO."""

    long_model: str = "rl"  # a stage of this run, or a checkpoint directory
    short_model: str = "sft"  # merged with the long model by the `merge` stage
    merge_weight: float = 0.5  # weight of the long model: theta = w * long + (1 - w) * short
    num_prompts: int = 512  # prompts sampled for shortest-RS and DPO data
    samples_per_prompt: int = 8  # n
    temperature: float = 1.0
    max_new_tokens: int = 96
    long_ratio: float = 1.5  # a correct answer this much longer than the shortest one is a DPO negative
    max_pairs_per_prompt: int = 4
    rs_steps: int = 100  # SFT steps on the shortest correct answers
    rs_batch_size: int = 64
    rs_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=10))
    # Plain DPO is fragile here: on a long-CoT RL model at 95.5% held-out pass@1 (26.4 tokens), lr 2e-5 /
    # beta 0.2 / 60 steps gave 85.0%, beta 0.5 gave 90.1% (24.5 tokens), 1e-5 / 0.2 / 150 steps 58%.
    # With the chosen response's NLL added (RPO), 2e-5 / 0.5 / 60 keeps 94.0% at 23.3 tokens
    # (docs/results.md, F6); set dpo_nll_weight=0 for the paper's standard DPO.
    dpo_beta: float = 0.5
    dpo_steps: int = 60
    dpo_nll_weight: float = 1.0  # weight of the chosen response's per-token NLL added to the DPO loss; 0: standard DPO
    dpo_batch_size: int = 32
    dpo_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-5, warmup_steps=10))
    rl_iterations: int = 30  # long2short RL: the rl section's settings, but these three replaced
    rl_max_new_tokens: int = 48  # "significantly reduces the maximum rollout length"
    rl_length_weight: float = 0.5  # the length penalty's weight, on from the first iteration


@dataclass
class RMDataConfig:
    """Labelled (question, reference, response, label) examples over the free-form domain (k15.synthetic.freeform)."""

    train_examples: int = 8000
    spotcheck_examples: int = 400  # held-out questions only: the RMs are compared on these
    positive_share: float = 0.5  # share of examples whose response is correct (exact, in every set)
    rollout_share: float = 0.25  # share from the policy's own rollouts (when a policy is given); the rest are rewrites
    rollout_temperature: float = 1.0
    rollout_max_new_tokens: int = 48
    min_level: int = 1  # chain lengths of the questions; short, so question + answers + rationale fit the context
    max_level: int = 4
    unit_share: float = 0.5  # questions that ask for a count of things ("how many apples?")


@dataclass
class RMTrainConfig:
    # ~5 (Classic) and ~10 (CoT) minutes on one CPU thread from the tiny SFT model; 300 steps left both near chance
    max_steps: int = 1000
    batch_size: int = 32  # examples per step
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_steps=20))


@dataclass
class RewardModelConfig:
    """The learned reward models (paper §2.3.5): stages rm_data, classic_rm, cot_rm (k15.reward_models)."""

    data: RMDataConfig = field(default_factory=RMDataConfig)
    classic: RMTrainConfig = field(default_factory=RMTrainConfig)
    cot: RMTrainConfig = field(default_factory=RMTrainConfig)
    init_from: str = "sft"  # a stage of this run or a checkpoint directory: both RMs start from it
    policy: str | None = "sft"  # whose rollouts go into the data (a stage or a directory); None: rewrites only
    verdict_format: str = "auto"  # auto (json when the tokenizer can write it, else plain) | json | plain
    # The RMs' context (tokens): question + reference + response (+ rationale and verdict: up to ~190 in the
    # tiny world); beyond the SFT model's 128 positions, which fine-tuning teaches (rotary positions extend).
    max_len: int = 256
    judge_max_new_tokens: int = 96  # the CoT RM's rationale + verdict (the generator's longest is 93 tokens)
    judge_batch_size: int = 64


@dataclass
class RMRewardConfig:
    """A learned reward model as the RL reward of some domains (k15.reward_models.judge): `rewards.rm.*`.

    The prompts of `domains` get the RM's verdict as their reward; their own verifier still runs, as the
    ground truth that `reward/rm_disagreement` compares against (eval always uses the verifiers)."""

    kind: str = "none"  # none | classic_rm | cot_rm
    path: str | None = None  # a stage of this run (classic_rm / cot_rm) or a reward-model directory
    domains: list[str] = field(default_factory=lambda: ["freeform"])  # record domains (or extra.verifier) it judges
    threshold: float = 0.5  # classic_rm: P(correct) at or above this is a correct verdict
    batch_size: int = 64  # judge prompts per forward / generation batch
    max_new_tokens: int = 96  # cot_rm: rationale + verdict
    prompt_template: str | None = None  # how the RM reads an example; None: k15's "q: {question} ref: {reference} resp: {response} judge:"
    probe: bool = True  # before RL: stop in one line when not one of the RM's verdicts on 8 references parses
    chat_template: str = "none"  # cot_rm trained elsewhere: none | model | a Jinja file (k15's RMs record their own)


@dataclass
class RewardConfig:
    """The verifiers' settings: the code sandbox's limits, math equivalence, code scoring; an optional learned RM."""

    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    math: MathConfig = field(default_factory=MathConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    rm: RMRewardConfig = field(default_factory=RMRewardConfig)


@dataclass
class EvalConfig:
    models: list[str] = field(default_factory=lambda: ["sft"])  # stages whose models to evaluate; "init" = model.init_from
    prompt_path: str | None = None  # a held-out prompt set (data.* mapping); default: the synthetic world's held-out problems
    num_prompts: int = 0  # with prompt_path: evaluate the first this many prompts; 0: all
    problems_per_level: int = 64  # the synthetic world
    samples_per_problem: int = 4  # n: pass@1 is the mean over these samples
    pass_k: list[int] = field(default_factory=lambda: [1])  # unbiased pass@k from the n samples (k <= n)
    temperature: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 256


@dataclass
class TrainerConfig:
    """Where and how a stage trains; k15.trainer builds the Lightning strategy from these (docs/distributed.md)."""

    accelerator: str = "cpu"
    devices: int = 1  # processes per node
    num_nodes: int = 1
    strategy: str = "auto"  # auto (one process) | ddp | fsdp (FSDP1, GPU only) | fsdp2 (fully_shard, CPU or GPU)
    precision: str = "32-true"
    activation_checkpointing: bool = False  # fsdp/fsdp2: recompute each decoder/vision block in the backward
    sharded_checkpoints: bool = False  # fsdp/fsdp2: each rank writes its shard (a checkpoint folder), not one file
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 200
    sample_every_n_steps: int = 200  # log a few greedy generations as text
    progress: bool = True
    max_nonfinite_in_a_row: int = 3  # NaN/inf updates are skipped and counted; this many in a row stop the run
    # Write the example indices of every step to RUN/<stage>/data_order.jsonl (pretraining, SFT; RL always
    # writes the prompts it drew to RUN/rl/drawn.jsonl): see k15.callbacks.data_order
    record_data_order: bool = False


@dataclass
class ExperimentConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    long2short: Long2ShortConfig = field(default_factory=Long2ShortConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    # Stage 1 (after the language-only `pretrain`): the tower alone with the decoder frozen, then
    # joint training with the vision share raised from 10% to 30% by its end; stage 2: cooldown on the high-quality
    # subset (synthetic QA and long-CoT text) at a low lr; stage 3: long context (paper §7).
    vision_tower: VLMStageConfig = field(default_factory=_stage(
        trainable=["tower", "projector"], weights={"ocr": 0.5, "caption": 0.25, "synthetic": 0.25}))
    vision_joint: VLMStageConfig = field(default_factory=_stage(
        max_steps=300, weights={"text": 0.9, "synthetic": 0.05, "ocr": 0.02, "caption": 0.02, "interleaved": 0.01},
        weights_end={"text": 0.7, "synthetic": 0.15, "ocr": 0.05, "caption": 0.05, "interleaved": 0.05}))
    cooldown: VLMStageConfig = field(default_factory=_stage(
        max_steps=100, weights={"text": 0.5, "synthetic": 0.5},
        optim=OptimConfig(lr=3e-4, warmup_steps=10, min_lr_ratio=0.0)))
    long_context: VLMStageConfig = field(default_factory=_stage(
        max_steps=64, weights={"text": 0.7, "interleaved": 0.15, "synthetic": 0.15}, seq_len_schedule=[128, 512],
        full_attention_share=0.4, rope_theta=40000.0, optim=OptimConfig(lr=3e-4, warmup_steps=10)))
    stages: list[str] = field(default_factory=lambda: ["pretrain", "sft", "rl", "eval"])


# ----------------------------------------------------------------------------------------------
# Building a config


def base(model: str = "tiny", trainer: str = "cpu") -> ExperimentConfig:
    """The default config with the named presets of configs/model and configs/trainer applied."""
    cfg = ExperimentConfig()
    apply_preset(cfg, "model", model)
    apply_preset(cfg, "trainer", trainer)
    return cfg


def preset_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS_DIR / group).glob("*.yaml"))


def apply_preset(cfg: ExperimentConfig, group: str, name: str) -> None:
    """Replace section `group` by its defaults updated with configs/<group>/<name>.yaml."""
    path = CONFIGS_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} preset '{name}'; available: {', '.join(preset_names(group))}")
    values = yaml.safe_load(path.read_text()) or {}
    section = type(getattr(cfg, group))()
    try:
        merged = OmegaConf.merge(OmegaConf.structured(section), values)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_first_line(exc)}") from None
    setattr(cfg, group, OmegaConf.to_object(merged))


def apply_overrides(cfg: ExperimentConfig, overrides: list[str],
                    before_validate: Callable[[ExperimentConfig], None] | None = None) -> ExperimentConfig:
    """Apply `key=value` overrides (YAML values, coerced to the schema's types) and validate;
    `before_validate` sees the overridden config first (an experiment's own requirements)."""
    overrides = [_alias(item) for item in overrides]
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        if key in PRESET_GROUPS and "." not in raw:
            apply_preset(cfg, key, raw)
    node = _structured(cfg)
    valid = all_keys(cfg)
    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.strip()
        if key in PRESET_GROUPS:
            continue
        if key not in valid and not _inside_a_dict(cfg, key):
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:  # not YAML ("Q: {question} A: {response}"): a string field takes it as written
            value = raw
        if not isinstance(value, (str, type(None))) and _type_name(cfg, key) in ("str", "str | None", "Optional[str]"):
            value = raw  # a string field takes text that YAML would read as a number, a list or a mapping, as written
        try:
            OmegaConf.update(node, key, value, merge=False)
        except OmegaConfBaseException:
            raise ConfigError(
                f"config key '{key}' expects {_type_name(cfg, key)}, got {raw!r}"
            ) from None
    result = OmegaConf.to_object(node)
    if before_validate is not None:
        before_validate(result)
    validate(result)
    return result


def _alias(item: str) -> str:
    """`rl.async.KEY=V` -> `rl.asynchronous.KEY=V`: the issue's key, for a field Python cannot name `async`."""
    key = item.lstrip()
    return "rl.asynchronous." + key[len("rl.async."):] if key.startswith("rl.async.") else item


def all_keys(obj: Any, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included (e.g. 'sft', 'sft.optim.lr')."""
    keys = []
    for f in fields(obj):
        key = f"{prefix}{f.name}"
        keys.append(key)
        value = getattr(obj, f.name)
        if is_dataclass(value):
            keys.extend(all_keys(value, key + "."))
    return keys


def _inside_a_dict(cfg: Any, key: str) -> bool:
    """A key below a dict-valued field (e.g. 'vision_joint.weights.ocr'): its entries are the user's to name."""
    obj = cfg
    for part in key.split(".")[:-1]:
        if isinstance(obj, dict):
            return True
        if not is_dataclass(obj) or not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return isinstance(obj, dict)


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def load_yaml(path: str | Path) -> ExperimentConfig:
    """Load a saved (resolved) config, e.g. a run directory's config.yaml."""
    try:
        saved = OmegaConf.load(path)
        node = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), saved)
        for key in _dict_fields(ExperimentConfig()):  # a saved dict is the whole dict, not additions to the defaults
            value = OmegaConf.select(saved, key)
            if value is not None:
                OmegaConf.update(node, key, value, merge=False)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_first_line(exc)}") from None
    return OmegaConf.to_object(node)


def _dict_fields(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the schema's dict-valued fields (e.g. 'vision_joint.weights')."""
    keys = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, dict):
            keys.append(f"{prefix}{f.name}")
        elif is_dataclass(value):
            keys.extend(_dict_fields(value, f"{prefix}{f.name}."))
    return keys


def _structured(cfg: ExperimentConfig):
    """The config as a typed OmegaConf node; this is also where an experiment's own wrong types show."""
    try:
        return OmegaConf.structured(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"invalid experiment config at '{key}': {_first_line(exc)}") from None


def _type_name(cfg: Any, key: str) -> str:
    *parents, leaf = key.split(".")
    obj = cfg
    for p in parents:
        if isinstance(obj, dict):
            break
        obj = getattr(obj, p)
    if isinstance(obj, dict):  # an entry of a dict field: the type of its values
        return type(next(iter(obj.values()), "")).__name__
    annotation = {f.name: f.type for f in fields(obj)}[leaf]
    return str(annotation).replace("typing.", "")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


# ----------------------------------------------------------------------------------------------
# Values that type-check but make no sense


def validate(cfg: ExperimentConfig) -> None:
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    for stage in cfg.stages:
        need(stage in STAGES, f"stages: unknown stage '{stage}' (known: {', '.join(STAGES)})")
    m = cfg.model
    need(m.family in ("llama", "qwen2"), f"model.family must be llama or qwen2, got '{m.family}'")
    for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_seq_len"):
        need(getattr(m, name) > 0, f"model.{name} must be > 0, got {getattr(m, name)}")
    need(m.hidden_size % max(m.num_heads, 1) == 0, "model.hidden_size must be divisible by model.num_heads")
    need(m.num_heads % max(m.num_kv_heads, 1) == 0, "model.num_heads must be divisible by model.num_kv_heads")
    d = cfg.data
    need(d.chat_template != "none" or not d.system_prompt,
         "data.system_prompt needs a chat template (data.chat_template=model or a Jinja file)")
    need(d.answer_from in ANSWER_FROM, f"data.answer_from must be one of {', '.join(ANSWER_FROM)}, got '{d.answer_from}'")
    need(0.0 <= d.max_missing_answers <= 1.0, f"data.max_missing_answers must be in [0, 1], got {d.max_missing_answers}")
    need(d.image_field.strip() != "" and d.image_field not in (d.prompt_field, d.answer_field),
         f"data.image_field must name a field of its own (not the prompt's or the answer's), got '{d.image_field}'")
    # (files, checkpoint directories, CUDA and flash-attn are the machine's, checked by k15.preflight)
    need(m.attn_implementation in ATTN_IMPLEMENTATIONS,
         f"model.attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got '{m.attn_implementation}'")
    w = cfg.world
    need(1 <= w.min_level <= w.max_level <= 9, f"world levels need 1 <= min_level <= max_level <= 9, got {w.min_level}..{w.max_level}")
    need(0.0 < w.heldout_fraction < 1.0, f"world.heldout_fraction must be in (0, 1), got {w.heldout_fraction}")
    need(0.0 <= w.error_rate < 1.0, f"world.error_rate must be in [0, 1), got {w.error_rate}")
    for stage in ("pretrain", "sft"):
        s = getattr(cfg, stage)
        need(s.max_steps > 0, f"{stage}.max_steps must be > 0, got {s.max_steps}")
        need(s.batch_size > 0, f"{stage}.batch_size must be > 0, got {s.batch_size}")
        need(s.optim.lr > 0 and math.isfinite(s.optim.lr), f"{stage}.optim.lr must be > 0, got {s.optim.lr}")
        need(0.0 <= s.optim.min_lr_ratio <= 1.0, f"{stage}.optim.min_lr_ratio must be in [0, 1]")
        need(s.optim.warmup_steps >= 0, f"{stage}.optim.warmup_steps must be >= 0")
    for stage in VISION_STAGES:
        v = getattr(cfg, stage)
        need(v.max_steps > 0 and v.batch_size > 0 and v.seq_len > 3, f"{stage}: max_steps and batch_size must be > 0, seq_len > 3")
        need(v.optim.lr > 0 and math.isfinite(v.optim.lr), f"{stage}.optim.lr must be > 0, got {v.optim.lr}")
        bad = sorted(set(v.trainable) - {"tower", "projector", "decoder"})
        need(bool(v.trainable) and not bad, f"{stage}.trainable must name some of tower, projector, decoder; got {v.trainable}")
        need(any(w > 0 for w in v.weights.values()) and all(w >= 0 for w in v.weights.values()),
             f"{stage}.weights must be >= 0 with at least one > 0, got {v.weights}")
        need(not v.weights_end or (any(w > 0 for w in v.weights_end.values()) and all(w >= 0 for w in v.weights_end.values())),
             f"{stage}.weights_end must be empty, or >= 0 with at least one > 0; got {v.weights_end}")
        need(v.ocr_weight >= 0 and v.lm_weight >= 0 and v.ocr_weight + v.lm_weight > 0,
             f"{stage}: ocr_weight and lm_weight must be >= 0 and not both 0")
        if stage in cfg.stages and v.ocr_weight > 0:
            need(cfg.vlm.projector.kind == "embedding_softmax",
                 f"{stage}.ocr_weight > 0 needs vlm.projector.kind=embedding_softmax (the reading loss uses its readout)")
        need(0.0 <= v.full_attention_share <= 1.0, f"{stage}.full_attention_share must be in [0, 1], got {v.full_attention_share}")
        need(v.rope_theta >= 0, f"{stage}.rope_theta must be >= 0 (0: unchanged), got {v.rope_theta}")
    vision_run = [s for s in cfg.stages if s in VISION_STAGES]
    if vision_run:
        d = cfg.vlm.data
        sources = set(d.shards) if d.shards else {n for n, k in d.synthetic.items() if k > 0}
        unknown_sources = sorted(set(d.synthetic) - set(SYNTHETIC_SOURCES))
        need(not unknown_sources, f"vlm.data.synthetic: unknown sources {unknown_sources} (known: {', '.join(SYNTHETIC_SOURCES)})")
        need(d.per_shard > 0 and d.num_workers >= 0 and 0.0 <= d.max_skip_fraction <= 1.0,
             "vlm.data: per_shard must be > 0, num_workers >= 0, max_skip_fraction in [0, 1]")
        for stage in vision_run:
            v = getattr(cfg, stage)
            missing = sorted({n for n, w in [*v.weights.items(), *v.weights_end.items()] if w > 0 and n not in sources})
            need(not missing, f"{stage}.weights name sources without data: {missing} (sources: {', '.join(sorted(sources))})")
            bad_kinds = sorted(set(v.ocr_kinds) - {"ocr", "scene"})
            need(bool(v.ocr_kinds) and not bad_kinds and v.ocr_batch_size > 0,
                 f"{stage}: ocr_kinds must name some of ocr, scene and ocr_batch_size be > 0; got {v.ocr_kinds}, {v.ocr_batch_size}")
            sched = v.seq_len_schedule
            need(all(x >= 4 for x in sched) and sched == sorted(sched),
                 f"{stage}.seq_len_schedule must be row lengths >= 4 that never shrink, got {sched}")
        first = cfg.stages.index(vision_run[0])
        later_text = [s for s in cfg.stages[first:] if s in TEXT_ONLY_STAGES]
        need(not later_text, f"stages: {', '.join(later_text)} after {vision_run[0]} would get a VLM; they train text models only")
        if "problem" in cfg.vlm.tasks or d.synthetic.get("synthetic", 0) > 0:
            need(w.max_level <= 6, f"world.max_level={w.max_level}: image problems fit levels up to 6 (a 14-cell strip)")
    unknown_tasks = sorted(set(cfg.vlm.tasks) - set(VISION_TASKS))
    need(bool(cfg.vlm.tasks) and not unknown_tasks, f"vlm.tasks must name some of {', '.join(VISION_TASKS)}; got {cfg.vlm.tasks}")
    p = cfg.pretrain
    need(p.seq_len > 1, f"pretrain.seq_len must be > 1, got {p.seq_len}")
    need(min(p.mix_raw, p.mix_short, p.mix_long) >= 0 and p.mix_raw + p.mix_short + p.mix_long > 0,
         "pretrain.mix_* weights must be >= 0 and not all zero")
    need(0.0 <= cfg.sft.long_fraction <= 1.0, f"sft.long_fraction must be in [0, 1], got {cfg.sft.long_fraction}")
    r = cfg.rl
    for name in ("iterations", "prompts_per_iteration", "samples_per_prompt", "epochs", "minibatches", "max_new_tokens", "num_prompts"):
        need(getattr(r, name) > 0, f"rl.{name} must be > 0, got {getattr(r, name)}")
    need(r.loss in ("k15", "rest", "reinforce"), f"rl.loss must be k15, rest or reinforce, got '{r.loss}'")
    need(r.baseline in ("mean", "logmeanexp"), f"rl.baseline must be mean or logmeanexp, got '{r.baseline}'")
    need(r.logp_normalization in ("sum", "mean", "constant"), f"rl.logp_normalization must be sum, mean or constant, got '{r.logp_normalization}'")
    need(r.tau > 0, f"rl.tau must be > 0, got {r.tau}")
    need(r.lr > 0 and math.isfinite(r.lr), f"rl.lr must be > 0, got {r.lr}")
    need(r.temperature > 0, f"rl.temperature must be > 0 (sampling), got {r.temperature}")
    need(0.0 < r.top_p <= 1.0, f"rl.top_p must be in (0, 1], got {r.top_p}")
    need(r.prompts_per_iteration * r.samples_per_prompt >= r.minibatches, "rl.minibatches exceeds the samples of an iteration")
    need(r.checkpoint_every_n_iterations >= 0, "rl.checkpoint_every_n_iterations must be >= 0 (0: only at the end)")
    need(r.max_seconds >= 0 and math.isfinite(r.max_seconds), f"rl.max_seconds must be >= 0 (0: no limit), got {r.max_seconds}")
    s = r.sampling
    need(s.curriculum in ("none", "paper", "gradual"), f"rl.sampling.curriculum must be none, paper or gradual, got '{s.curriculum}'")
    need(s.hard_from_iteration >= 0, f"rl.sampling.hard_from_iteration must be >= 0, got {s.hard_from_iteration}")
    if s.curriculum == "gradual":
        need(s.gradual_iterations > 0, f"rl.sampling.curriculum=gradual needs rl.sampling.gradual_iterations > 0, got {s.gradual_iterations}")
        need(0.0 < s.gradual_start <= 1.0, f"rl.sampling.gradual_start must be in (0, 1], got {s.gradual_start}")
    need(s.floor >= 0 and math.isfinite(s.floor), f"rl.sampling.floor must be >= 0 (0: the paper's 1 - s_i exactly), got {s.floor}")
    need(s.success_tracking in ("ema", "counts"), f"rl.sampling.success_tracking must be ema or counts, got '{s.success_tracking}'")
    need(0.0 <= s.ema_decay < 1.0, f"rl.sampling.ema_decay must be in [0, 1), got {s.ema_decay}")
    need(0.0 <= s.initial_success <= 1.0, f"rl.sampling.initial_success must be in [0, 1], got {s.initial_success}")
    need(s.histogram_every_n_iterations >= 0, "rl.sampling.histogram_every_n_iterations must be >= 0 (0: never)")
    lp = r.length_penalty
    need(lp.weight >= 0, f"rl.length_penalty.weight must be >= 0, got {lp.weight}")
    need(lp.warmup_iterations >= 0, f"rl.length_penalty.warmup_iterations must be >= 0, got {lp.warmup_iterations}")
    need(lp.weight == 0 or r.loss != "rest", "rl.length_penalty needs an advantage-based rl.loss (k15 or reinforce); rest ignores shaped rewards")
    pr = r.partial
    need(pr.budget >= 0, f"rl.partial.budget must be >= 0 (0: off), got {pr.budget}")
    need(0 <= pr.min_groups <= r.prompts_per_iteration,
         f"rl.partial.min_groups must be in [0, rl.prompts_per_iteration], got {pr.min_groups}")
    need(pr.max_continuations >= 1, f"rl.partial.max_continuations must be >= 1, got {pr.max_continuations}")
    reach = pr.budget * (pr.max_continuations + 1)
    need(pr.budget <= 0 or reach >= r.max_new_tokens,  # (a negative budget is refused above)
         f"rl.partial.budget x (rl.partial.max_continuations + 1) = {pr.budget} x {pr.max_continuations + 1} = {reach} is below "
         f"rl.max_new_tokens={r.max_new_tokens}: answers would be cut short of it; raise the budget or max_continuations")
    need(pr.loss_on in ("all", "current"), f"rl.partial.loss_on must be all or current, got '{pr.loss_on}'")
    a = r.asynchronous
    need(a.workers >= 0, f"rl.async.workers must be >= 0 (0: the synchronous loop), got {a.workers}")
    need(a.max_staleness >= 0, f"rl.async.max_staleness must be >= 0, got {a.max_staleness}")
    need(a.heartbeat_timeout_s > 0, f"rl.async.heartbeat_timeout_s must be > 0, got {a.heartbeat_timeout_s}")
    rp = r.repeat
    need(rp.ngram >= 0, f"rl.repeat.ngram must be >= 0 (0: off), got {rp.ngram}")
    need(rp.threshold >= 2, f"rl.repeat.threshold must be >= 2 (occurrences of the n-gram), got {rp.threshold}")
    need(rp.penalty >= 0, f"rl.repeat.penalty must be >= 0 (the reward is -penalty), got {rp.penalty}")
    if "rl" in cfg.stages:
        need(r.max_new_tokens < m.max_seq_len, f"rl.max_new_tokens ({r.max_new_tokens}) must be below model.max_seq_len ({m.max_seq_len})")
    if "eval" in cfg.stages:
        need(cfg.eval.max_new_tokens < m.max_seq_len, f"eval.max_new_tokens ({cfg.eval.max_new_tokens}) must be below model.max_seq_len ({m.max_seq_len})")
    e = cfg.eval
    for name in ("problems_per_level", "samples_per_problem", "max_new_tokens", "batch_size"):
        need(getattr(e, name) > 0, f"eval.{name} must be > 0, got {getattr(e, name)}")
    need(e.num_prompts >= 0, f"eval.num_prompts must be >= 0 (0: all), got {e.num_prompts}")
    need(bool(e.pass_k) and all(1 <= k <= e.samples_per_problem for k in e.pass_k),
         f"eval.pass_k must be values in [1, eval.samples_per_problem={e.samples_per_problem}], got {e.pass_k}")
    need(e.temperature >= 0, f"eval.temperature must be >= 0, got {e.temperature}")
    trained_before_eval = [s for s in cfg.stages[: cfg.stages.index("eval")] if s in MODEL_STAGES] if "eval" in cfg.stages else []
    if m.init_from:
        trained_before_eval.append("init")  # the starting checkpoint itself
    l2s = cfg.long2short
    for stage in ("merge", "shortest_rs", "dpo", "l2s_rl"):
        if stage in cfg.stages:
            before = [s for s in cfg.stages[: cfg.stages.index(stage)] if s in MODEL_STAGES] + (["init"] if m.init_from else [])
            sources = [l2s.long_model] + ([l2s.short_model] if stage == "merge" else [])
            for source in sources:
                need(source in before or Path(source).is_dir(),
                     f"{stage}: long2short model '{source}' is neither a stage that runs before it nor a directory")
    need(0.0 <= l2s.merge_weight <= 1.0, f"long2short.merge_weight must be in [0, 1], got {l2s.merge_weight}")
    need(l2s.long_ratio >= 1.0, f"long2short.long_ratio must be >= 1, got {l2s.long_ratio}")
    for name in ("num_prompts", "samples_per_prompt", "max_new_tokens", "max_pairs_per_prompt", "rs_steps", "rs_batch_size",
                 "dpo_steps", "dpo_batch_size", "rl_iterations", "rl_max_new_tokens"):
        need(getattr(l2s, name) > 0, f"long2short.{name} must be > 0, got {getattr(l2s, name)}")
    need(l2s.dpo_beta > 0, f"long2short.dpo_beta must be > 0, got {l2s.dpo_beta}")
    need(l2s.dpo_nll_weight >= 0, f"long2short.dpo_nll_weight must be >= 0, got {l2s.dpo_nll_weight}")
    need(l2s.rl_length_weight >= 0, f"long2short.rl_length_weight must be >= 0, got {l2s.rl_length_weight}")
    if "l2s_rl" in cfg.stages:
        need(l2s.rl_max_new_tokens < m.max_seq_len, f"long2short.rl_max_new_tokens ({l2s.rl_max_new_tokens}) must be below model.max_seq_len")
        # l2s_rl runs the RL loop with rl.partial as set, under its own token limit
        need(pr.budget <= 0 or reach >= l2s.rl_max_new_tokens,
             f"rl.partial.budget x (rl.partial.max_continuations + 1) = {reach} is below long2short.rl_max_new_tokens="
             f"{l2s.rl_max_new_tokens}: long2short RL answers would be cut short of it; raise the budget or max_continuations")
    rm = cfg.reward_model
    rd = rm.data
    for name in ("train_examples", "spotcheck_examples", "rollout_max_new_tokens"):
        need(getattr(rd, name) > 0, f"reward_model.data.{name} must be > 0, got {getattr(rd, name)}")
    for name in ("positive_share", "rollout_share", "unit_share"):
        need(0.0 <= getattr(rd, name) <= 1.0, f"reward_model.data.{name} must be in [0, 1], got {getattr(rd, name)}")
    need(rd.rollout_temperature > 0, f"reward_model.data.rollout_temperature must be > 0, got {rd.rollout_temperature}")
    need(1 <= rd.min_level <= rd.max_level <= 9,
         f"reward_model.data levels need 1 <= min_level <= max_level <= 9, got {rd.min_level}..{rd.max_level}")
    for kind in ("classic", "cot"):
        rt = getattr(rm, kind)
        need(rt.max_steps > 0 and rt.batch_size > 0, f"reward_model.{kind}: max_steps and batch_size must be > 0")
        need(rt.optim.lr > 0 and math.isfinite(rt.optim.lr), f"reward_model.{kind}.optim.lr must be > 0, got {rt.optim.lr}")
        need(0.0 <= rt.optim.min_lr_ratio <= 1.0 and rt.optim.warmup_steps >= 0,
             f"reward_model.{kind}.optim: min_lr_ratio must be in [0, 1] and warmup_steps >= 0")
    for name in ("max_len", "judge_max_new_tokens", "judge_batch_size"):
        need(getattr(rm, name) > 0, f"reward_model.{name} must be > 0, got {getattr(rm, name)}")
    need(rm.verdict_format in ("auto", "json", "plain"),
         f"reward_model.verdict_format must be auto, json or plain, got '{rm.verdict_format}'")
    if "rm_data" in cfg.stages and rm.policy is not None and rd.rollout_share > 0:
        need(rd.rollout_max_new_tokens < m.max_seq_len, f"reward_model.data.rollout_max_new_tokens "
             f"({rd.rollout_max_new_tokens}) must be below model.max_seq_len ({m.max_seq_len})")
    checked = set()  # both RMs start from init_from: one message for it, at the first of them
    for stage in (s for s in cfg.stages if s in RM_STAGES):
        before = [s for s in cfg.stages[: cfg.stages.index(stage)] if s in MODEL_STAGES] + (["init"] if m.init_from else [])
        key = "policy" if stage == "rm_data" else "init_from"  # rm_data samples the policy
        source = getattr(rm, key)
        if key not in checked:
            checked.add(key)
            need(source is None or source in before or Path(source).is_dir(),
                 f"{stage}: reward_model.{key} '{source}' is neither a model stage that runs before it nor a directory")
        need(stage == "rm_data" or "rm_data" in cfg.stages[: cfg.stages.index(stage)],
             f"stages: {stage} trains on RUN/rm_data, so rm_data must run before it")
    rr = cfg.rewards.rm
    need(rr.kind in ("none", "classic_rm", "cot_rm"), f"rewards.rm.kind must be none, classic_rm or cot_rm, got '{rr.kind}'")
    if rr.kind != "none":
        need(rr.path is not None, f"rewards.rm.kind={rr.kind} needs rewards.rm.path (a {rr.kind} stage of this run or "
             "a reward-model directory)")
        need(bool(rr.domains), "rewards.rm.domains must name at least one domain")
        need(0.0 < rr.threshold < 1.0, f"rewards.rm.threshold must be in (0, 1), got {rr.threshold}")
        need(rr.batch_size > 0 and rr.max_new_tokens > 0, "rewards.rm.batch_size and max_new_tokens must be > 0")
        need("rl" in cfg.stages, f"rewards.rm.kind={rr.kind}: the reward model rewards the rl stage, which this run "
             "does not have (l2s_rl and evaluation always use the verifiers)")
        need(rr.path not in MODEL_STAGES, f"rewards.rm.path '{rr.path}' is a policy stage; name classic_rm / cot_rm "
             "or a reward-model directory")
        if rr.path in RM_STAGES and "rl" in cfg.stages:
            need(rr.path == rr.kind, f"rewards.rm.kind={rr.kind} but rewards.rm.path names the {rr.path} stage")
            need(rr.path in cfg.stages[: cfg.stages.index("rl")] or Path(rr.path).is_dir(),
                 f"rewards.rm.path '{rr.path}' is a stage that does not run before rl")
        if rr.prompt_template is not None:
            for name in ("{question}", "{reference}", "{response}"):
                need(name in rr.prompt_template, f"rewards.rm.prompt_template must contain {name}")
            try:  # literal braces must be doubled ({{ }}), as str.format reads the template
                rr.prompt_template.format(question="", reference="", response="")
            except (KeyError, IndexError, ValueError) as exc:
                need(False, f"rewards.rm.prompt_template is not a format string with only {{question}}, {{reference}} "
                     f"and {{response}} ({type(exc).__name__}: {exc}); write a literal brace as {{{{ or }}}}")
    for name in e.models if "eval" in cfg.stages else []:
        need(name in trained_before_eval, f"eval.models: '{name}' is not a training stage that runs before eval"
             + ("" if m.init_from else " (or 'init' with model.init_from)"))
    t = cfg.trainer
    need(t.devices > 0 and t.num_nodes > 0, "trainer.devices and trainer.num_nodes must be > 0")
    need(t.strategy in STRATEGIES, f"trainer.strategy must be one of {', '.join(STRATEGIES)}, got '{t.strategy}'")
    need(t.strategy != "fsdp" or t.accelerator != "cpu",
         "trainer.strategy=fsdp needs GPUs (Lightning's FSDPStrategy refuses CPU); use trainer.strategy=fsdp2 on CPU")
    need(t.strategy != "fsdp" or not {"rl", "l2s_rl"} & set(cfg.stages),
         "trainer.strategy=fsdp cannot run RL (its rollout engine gathers full weights from FSDP2 only); use trainer.strategy=fsdp2")
    sharding = t.strategy in ("fsdp", "fsdp2")
    need(sharding or not t.activation_checkpointing, "trainer.activation_checkpointing needs trainer.strategy=fsdp or fsdp2")
    need(sharding or not t.sharded_checkpoints, "trainer.sharded_checkpoints needs trainer.strategy=fsdp or fsdp2")
    need(t.strategy != "fsdp2" or cfg.rl.reset_optimizer,
         "trainer.strategy=fsdp2 needs rl.reset_optimizer=true (a kept RL optimizer's state is sharded and its checkpoint is not)")
    need(r.asynchronous.workers == 0 or (t.strategy == "auto" and t.devices * t.num_nodes == 1),
         "rl.async.workers > 0 needs one trainer process (trainer.strategy=auto, one device) for now")
    need(t.strategy != "auto" or t.devices * t.num_nodes == 1,
         "trainer.devices x trainer.num_nodes > 1 needs trainer.strategy=ddp, fsdp or fsdp2")
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems))

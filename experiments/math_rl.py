"""Your own checkpoint and prompt set: (optional SFT ->) k1.5 RL -> held-out eval, chat template, \\boxed{} answers.

    python -m experiments.run math_rl model.init_from=DIR rl.prompt_path=TRAIN eval.prompt_path=TEST

TRAIN / TEST: JSONL, Parquet or a `datasets.save_to_disk` directory. The defaults read MATH's fields
(problem, solution with the answer in its last \\boxed{}, level "Level N"); for GSM8K set
`data.prompt_field=question data.answer_field=answer data.answer_from=gsm8k`. Prompts go through the
checkpoint's own chat template with a system prompt asking for a boxed answer. SFT first:
`stages=[sft,rl,eval] sft.data_path=FILE data.response_field=solution`.

The sizes are GPU defaults for a 0.5B-1.5B model on one 80-GB GPU (`trainer=gpu`); several GPUs:
`trainer=fsdp2 trainer.accelerator=gpu trainer.devices=8 run.dir=DIR`. Memory: the rollout engine
holds fp32 weights and a KV cache of rows x context x layers x 2 x kv_heads x head_dim x 4 bytes
(256 rows x 2560 positions: Qwen2.5-0.5B 16 GB, Qwen2.5-1.5B 38 GB) beside the trained model, its
gradients and Adam state (16 bytes a parameter); larger models need fewer rows or a shorter context.
The values are starting points from the paper's setting and public reimplementations (OpenKimi: tau
0.01, lr 1e-6), not tuned here: this repository has run this path on CPU with tiny models only.
"""

from k15.config import ExperimentConfig, base

REQUIRED = {
    "model.init_from": "DIR (a local Hugging Face checkpoint directory)",
    "rl.prompt_path": ("FILE (your training prompts)", ("rl",)),
    "eval.prompt_path": ("FILE (your held-out prompts)", ("eval",)),
}


def config() -> ExperimentConfig:
    cfg = base(model="tiny", trainer="gpu")  # the model's size comes from model.init_from
    cfg.stages = ["rl", "eval"]
    cfg.model.max_seq_len = 2560  # the context k15 uses (prompt + response), within the checkpoint's own

    d = cfg.data
    d.chat_template = "model"
    d.system_prompt = "Please reason step by step, and put your final answer within \\boxed{}."
    d.prompt_field, d.answer_field, d.answer_from = "problem", "solution", "boxed"
    d.response_field, d.difficulty_field = "solution", "level"

    r = cfg.rl
    r.iterations, r.prompts_per_iteration, r.samples_per_prompt = 200, 32, 8
    r.max_new_tokens = 2048
    r.loss, r.tau, r.lr = "k15", 0.01, 1e-6
    r.epochs, r.minibatches = 1, 4  # 4 optimizer steps per iteration on 256 samples
    r.checkpoint_every_n_iterations = 20
    r.sampling.prioritized = True  # needs no difficulty labels; curriculum=paper does (MATH's level)
    r.length_penalty.weight = 0.1  # the paper: plain RL first, then a constant penalty
    r.length_penalty.warmup_iterations = 100

    e = cfg.eval
    e.models = ["init", "rl"]
    e.samples_per_problem, e.pass_k = 4, [1, 4]
    e.max_new_tokens, e.batch_size = 2048, 64
    return cfg

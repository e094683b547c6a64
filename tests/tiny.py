"""Config overrides for a tiny, fast model and world, shared by the tests that run the real pipeline."""

TINY = [
    "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2",
    "model.intermediate_size=64", "model.max_seq_len=64", "world.max_level=3", "stages=[pretrain,sft,eval]",
    "pretrain.max_steps=40", "pretrain.batch_size=8", "pretrain.seq_len=64", "pretrain.num_documents=2000",
    "sft.max_steps=40", "sft.batch_size=32", "sft.num_examples=2000",
    "eval.problems_per_level=4", "eval.samples_per_problem=2", "eval.max_new_tokens=40",
    "trainer.progress=false", "trainer.checkpoint_every_n_steps=20", "trainer.sample_every_n_steps=20",
]

# The vision stages and their synthetic shards at a size that runs in seconds.
VISION_SMOKE = [
    *(f"{stage}.{key}" for stage in ("vision_tower", "vision_joint", "cooldown", "long_context")
      for key in ("max_steps=3", "batch_size=4", "seq_len=64")),
    "long_context.seq_len_schedule=[64,128]", "vision_tower.ocr_batch_size=4",
    "vlm.vision.hidden_size=32", "vlm.vision.intermediate_size=64", "vlm.tasks=[problem,count]",
    "vlm.data.shuffle_buffer=8", "vlm.data.per_shard=50", "vlm.data.synthetic.text=60", "vlm.data.synthetic.caption=20",
    "vlm.data.synthetic.interleaved=20", "vlm.data.synthetic.ocr=20", "vlm.data.synthetic.synthetic=60",
    "rl.num_prompts=32", "eval.max_new_tokens=30",
]

RM_SMOKE = [
    "reward_model.data.train_examples=24", "reward_model.data.spotcheck_examples=8",
    "reward_model.data.rollout_max_new_tokens=8", "reward_model.data.max_level=2",
    "reward_model.classic.max_steps=2", "reward_model.classic.batch_size=8",
    "reward_model.cot.max_steps=2", "reward_model.cot.batch_size=8",
    "reward_model.max_len=160", "reward_model.judge_max_new_tokens=8",
    "rewards.rm.probe=false", "rewards.rm.max_new_tokens=8",  # a 2-step CoT RM writes no verdict yet
]

# Every section at a size that runs in seconds, for running each experiment file end to end.
SMOKE = [o for o in TINY if not o.startswith("stages=")] + [
    "run.threads=1", "rl.iterations=2", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=30",
    "long2short.num_prompts=4", "long2short.samples_per_prompt=2", "long2short.max_new_tokens=30",
    "long2short.rs_steps=2", "long2short.rs_batch_size=2", "long2short.dpo_steps=2", "long2short.dpo_batch_size=2",
    "long2short.rl_iterations=2", "long2short.rl_max_new_tokens=24",
    *VISION_SMOKE,
    *RM_SMOKE,
]

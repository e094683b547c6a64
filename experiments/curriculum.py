"""Finding F3 (paper Fig. 9): uniform sampling vs the paper's curriculum (all prompts, then hard ones only from iteration 24/44 of the run)."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    uniform = ablation_base()
    curriculum = ablation_base()
    s = curriculum.rl.sampling
    s.curriculum = "paper"
    s.hard_from_iteration = curriculum.rl.iterations * 24 // 44  # the paper's switch point, as a share of the run
    s.hard_min_difficulty = None  # hard = at least the set's median difficulty (logged: sampler/curriculum_min_difficulty)
    return {"uniform": uniform, "curriculum": curriculum}

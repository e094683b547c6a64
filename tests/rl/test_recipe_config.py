"""The recipe's config keys: set from any experiment by dotted overrides; bad values fail in one line."""

import pytest

from k15.config import apply_overrides, base
from k15.errors import ConfigError


def test_recipe_keys_are_overridable_and_off_by_default():
    cfg = base()
    r = cfg.rl
    assert (r.sampling.curriculum, r.sampling.prioritized, r.length_penalty.weight, r.partial.budget, r.repeat.ngram) == ("none", False, 0.0, 0, 0)
    cfg = apply_overrides(cfg, ["rl.sampling.prioritized=true", "rl.sampling.curriculum=gradual", "rl.sampling.gradual_iterations=10",
                                "rl.length_penalty.weight=0.1", "rl.partial.budget=24", "rl.partial.loss_on=current",
                                "rl.repeat.ngram=6"])
    assert cfg.rl.sampling.prioritized and cfg.rl.partial.loss_on == "current" and cfg.rl.repeat.ngram == 6


@pytest.mark.parametrize("overrides,fragment", [
    (["rl.sampling.curriculum=hardest"], "rl.sampling.curriculum must be none, paper or gradual"),
    (["rl.sampling.curriculum=gradual"], "needs rl.sampling.gradual_iterations > 0"),
    (["rl.sampling.floor=-0.1"], "rl.sampling.floor must be >= 0"),
    (["rl.sampling.success_tracking=window"], "rl.sampling.success_tracking must be ema or counts"),
    (["rl.length_penalty.weight=0.5", "rl.loss=rest"], "rl.length_penalty needs an advantage-based rl.loss"),
    (["rl.partial.loss_on=old"], "rl.partial.loss_on must be all or current"),
    (["rl.partial.budget=-1"], "rl.partial.budget must be >= 0"),
    (["rl.repeat.threshold=1"], "rl.repeat.threshold must be >= 2"),
])
def test_bad_recipe_values_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        apply_overrides(base(), overrides)
    assert "\n" not in str(err.value)

"""Supervised fine-tuning: next-token loss on response tokens only (labels are -100 elsewhere).

Vanilla SFT and the long-CoT warm-up are this module with different data.
"""

from __future__ import annotations

from k15.modules.lm import CausalLMModule


class SFTModule(CausalLMModule):
    stage_name = "sft"

    def inputs(self, batch):
        return batch

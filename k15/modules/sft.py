"""Supervised fine-tuning: next-token loss on response tokens only (labels are -100 elsewhere).

The same computation as pretraining; what differs is the data (SFTDataModule masks the prompt).
Vanilla SFT and the long-CoT warm-up are this module with different data.
"""

from __future__ import annotations

from k15.modules.lm import CausalLMModule


class SFTModule(CausalLMModule):
    stage_name = "sft"

"""Pretraining: next-token loss on every token of packed rows (attention kept inside each document)."""

from __future__ import annotations

from k15.modules.lm import CausalLMModule


class PretrainModule(CausalLMModule):
    stage_name = "pretrain"

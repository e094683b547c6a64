"""Pretraining: next-token loss on every token of packed rows."""

from __future__ import annotations

from k15.modules.lm import CausalLMModule


class PretrainModule(CausalLMModule):
    stage_name = "pretrain"

    def inputs(self, batch):
        (rows,) = batch
        return {"input_ids": rows, "labels": rows}

"""A genas network as a transformers model (written by genas).

genas found this architecture and no transformers family expresses it (linear or "none"
attention, a mix of attention kinds, per-layer widths, low-rank FFNs, shared layers, or sparsity
masks kept at zero). This file wraps the standalone PyTorch network of `model.py` (beside it) in
a `PreTrainedModel`, so that

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
    out = model.generate(input_ids, max_new_tokens=20)

work as for any causal LM. Its weights are model.py's under `transformer.`, sparsity masks
included (as buffers: training further keeps masked weights at zero).

Generation does not use transformers' KV cache: each step runs the network on the last
`context` tokens. genas mixes layer kinds whose state has no transformers cache type (linear
attention's recurrent state), and at genas's sizes a step takes milliseconds.
"""

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_genas import GenasConfig
from .model import GenasLM


class GenasForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = GenasConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    _supports_cache_class = False

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GenasLM(config.genas_architecture)
        self.post_init()

    def _init_weights(self, module):
        # GenasLM initialises itself as genas does; from_pretrained then loads the weights.
        pass

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        """Logits for input_ids (B, T), T <= context; with `labels`, the next-token loss."""
        logits = self.transformer(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        # No cache: the whole window, every step.
        return {"input_ids": input_ids[:, -self.transformer.context:]}

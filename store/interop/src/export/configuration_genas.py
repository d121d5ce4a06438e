"""The configuration of a genas network for transformers (written by genas; see modeling_genas.py).

`genas_architecture` is the architecture genas trained, as in `architecture.json`.
"""

try:
    from transformers import PreTrainedConfig as _Config
except ImportError:  # transformers 4
    from transformers import PretrainedConfig as _Config


class GenasConfig(_Config):
    model_type = "genas"

    def __init__(self, genas_architecture=None, **kwargs):
        self.genas_architecture = genas_architecture or {}
        arch = self.genas_architecture
        if arch:
            kwargs.setdefault("vocab_size", arch["vocab_size"])
            kwargs.setdefault("max_position_embeddings", arch["context"])
            kwargs.setdefault("hidden_size", arch["d_model"])
            kwargs.setdefault("num_hidden_layers", len(arch["layers"]))
        # The head is the token embedding itself when the architecture ties them: nothing for
        # transformers to tie.
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)

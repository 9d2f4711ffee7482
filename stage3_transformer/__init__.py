"""Stage 3: every part of the Transformer, on top of the stage 1 autograd and the stage 2 library.

The modules, one concept each:
  * ``functional``  fused softmax and log-softmax, layer and RMS norm, positions (sinusoidal, rotary) and
                    scaled dot-product attention, as functions of Tensors;
  * ``nn``          the layers with PyTorch's names and semantics: ``LayerNorm``, ``RMSNorm``, ``Embedding``,
                    ``RotaryEmbedding``, ``MultiheadAttention``, ``SwiGLU``, the encoder and decoder layers,
                    ``Transformer`` and ``MoE``;
  * ``addition``    an encoder-decoder Transformer that learns to add numbers, with a prompt to ask it.

Import from the modules themselves (``from stage3_transformer import functional as F``): this file imports
nothing, so a mistake in one module does not stop the exercises of the others from being graded.
"""

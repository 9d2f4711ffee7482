"""Stage 4: a GPT built from stages 1-3, trained on text, sampled from, and ported to PyTorch.

The modules, one concept each:
  * ``tokenizer``   characters and bytes to ids and back (``CharTokenizer``, ``ByteTokenizer``);
  * ``bpe``         byte-level byte-pair encoding, trained here or read from GPT-2's files (``BPETokenizer``);
  * ``model``       ``GPTConfig`` and ``GPT``: the model, its loss, sampling and the key/value cache;
  * ``optim``       parameter groups, the learning-rate schedule and gradient clipping;
  * ``data``        batches of token windows and the default text corpus;
  * ``train``       ``python -m stage4_gpt.train``: the training loop, checkpoints and resuming;
  * ``sample``      ``python -m stage4_gpt.sample``: text from a checkpoint;
  * ``torch_gpt``   the same GPT in PyTorch, weights both ways, GPU and data-parallel training.

Import from the modules themselves (``from stage4_gpt.model import GPT``): this file imports nothing,
so a mistake in one module does not stop the exercises of the others from being graded.
"""

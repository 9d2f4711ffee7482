"""One process of the data-parallel test of exercise 4.9, started twice by test_torch_port.py as torchrun would
start it (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment):

    python -m tests.stage4.ddp_worker INPUT.npz OUTPUT.npz

INPUT holds the model's config (JSON), its weights and a global batch (x, y). The process joins the group
with the code under test (``setup_distributed``), wraps the model (``wrap_for_training``), takes its rows of
the batch (``shard``), runs forward and backward once, and writes every parameter's gradient to OUTPUT.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from stage4_gpt.model import GPTConfig
from stage4_gpt.torch_gpt import TorchGPT, cleanup_distributed, setup_distributed, shard, wrap_for_training


def main(input_path: str, output_path: str) -> None:
    torch.set_num_threads(1)
    with np.load(input_path, allow_pickle=False) as archive:
        data = {key: archive[key] for key in archive.files}
    config = GPTConfig.from_dict(json.loads(str(data["config"])))
    distributed = setup_distributed()
    try:
        model = TorchGPT(config).double()
        model.load_state_dict({key.removeprefix("model."): torch.tensor(value) for key, value in data.items()
                               if key.startswith("model.")})
        trained = wrap_for_training(model, distributed)
        x = shard(torch.tensor(data["x"]), distributed)
        y = shard(torch.tensor(data["y"]), distributed)
        _, loss = trained(x, y)
        loss.backward()
        grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
        np.savez(output_path, rank=np.array(distributed.rank), world_size=np.array(distributed.world_size),
                 rows=np.array(len(x)), wrapped=np.array(type(trained).__name__), **grads)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:3])
    # Everything is written and the group is left. Skip the interpreter's teardown: on some PyTorch builds gloo's
    # background threads can abort a process at exit ("terminate called without an active exception") after
    # its work is done, which would read as a crash of a correct submission.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

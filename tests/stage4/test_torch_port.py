"""Exercise 4.9: the PyTorch port. TorchGPT has GPT's parameters; to_torch and from_torch move weights both
ways with identical logits, losses and gradients; the training entry point runs on the CPU here (CUDA when
present); and two processes with DistributedDataParallel (gloo on 127.0.0.1) get the gradients one process
gets on the whole batch.

The data-parallel test is skipped only where torch.distributed is unavailable (a skip never counts as a pass).
"""

import json
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed

from stage4_gpt.model import GPT, GPTConfig
from stage4_gpt.torch_gpt import (Distributed, TorchGPT, from_torch, main, setup_distributed, shard, to_torch,
                                  wrap_for_training)
from stage4_gpt.train import load_checkpoint, model_from_checkpoint
from tests.helpers import assert_close, assert_equal, assert_in_range, assert_raises, parameter_shapes
from tests.stage4.student_side import Output, shift_in_place, start_module_with_environment
from tests.stage4.torch_reference import ReferenceGPT
from tests.student_side import reraise_not_implemented, state_as_arrays

pytestmark = pytest.mark.exercise("4.9")

SMALL = dict(vocab_size=29, block_size=12, n_layer=2, n_head=2, n_embd=16)
LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False)
VARIANTS = {
    "gpt2": dict(),
    "gpt2-tanh-gelu-untied-unbiased": dict(gelu_approximate="tanh", tie_weights=False, bias=False),
    "llama": dict(LLAMA, n_embd=24, n_head=3, rope_theta=500.0),
    "rope-layernorm-swiglu-tied": dict(pos="rope", mlp="swiglu", ffn_hidden=20),
}
# float32 against float64: see test_parity.py (a few hundred ulps of float32 at most; a wrong formula is off
# by 1e-2 or more).
FLOAT32_RTOL = 1e-4


def random_model(fields: dict, dtype=np.float64, seed: int = 0) -> GPT:
    """Our GPT with seeded random weights (no bias 0, no norm weight 1, so that every parameter matters)."""
    model = GPT(GPTConfig(**fields), rng=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    state = {}
    for name, value in model.state_dict().items():
        noise = rng.standard_normal(value.shape)
        is_norm = ".ln_" in name or name.startswith("transformer.ln_f")
        state[name] = (1 + 0.1 * noise if is_norm and name.endswith("weight") else 0.3 * noise).astype(dtype)
    if model.config.tie_weights:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model


def batch(fields: dict, seed: int, B: int = 4, padding: bool = True):
    """idx and targets (B, block_size); with ``padding`` about a fifth of the targets are ignore_index -1."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, fields["vocab_size"], (B, fields["block_size"]))
    targets = rng.integers(0, fields["vocab_size"], (B, fields["block_size"]))
    if padding:
        targets[rng.random(targets.shape) < 0.2] = -1
    return idx, targets


# ---------------------------------------------------------------------- the module and the transfer
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.under_test("TorchGPT.__init__")
def test_torch_gpt_has_the_parameters_of_gpt(variant):
    config = GPTConfig(**dict(SMALL, **VARIANTS[variant]))
    ours, theirs = GPT(config, rng=0), TorchGPT(config)
    shapes, expected = parameter_shapes(theirs), parameter_shapes(ours)
    assert_equal(sorted(shapes), sorted(expected), f"TorchGPT({variant}): the names of named_parameters() (sorted)")
    for name, shape in expected.items():
        assert_equal(shapes[name], shape, f"TorchGPT({variant}): the shape of {name!r}")
    assert_equal(sorted(theirs.state_dict()), sorted(ours.state_dict()),
                 f"TorchGPT({variant}): the keys of state_dict() (buffers such as RoPE tables must not be in it)")
    assert_equal(theirs.lm_head.weight is theirs.transformer.wte.weight, config.tie_weights,
                 f"TorchGPT({variant}): lm_head.weight is transformer.wte.weight (tie_weights={config.tie_weights})")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.under_test("to_torch", "TorchGPT.forward", "TorchCausalSelfAttention.forward", "TorchBlock.forward")
def test_to_torch_gives_the_same_logits_loss_and_gradients(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    ours = random_model(fields)
    theirs = to_torch(ours)
    what = f"to_torch(GPT {variant}, float64)"
    assert_equal(next(theirs.parameters()).dtype, torch.float64, f"{what}: the dtype of the torch parameters")
    assert_equal(isinstance(theirs, TorchGPT), True, f"{what} returns a TorchGPT")
    idx, targets = batch(fields, 1)
    logits, loss = ours(idx, targets)
    loss.backward()
    torch_logits, torch_loss = theirs(torch.tensor(idx), torch.tensor(targets))
    torch_loss.backward()
    assert_close(torch_logits, logits, f"{what}: logits of the torch model vs ours")
    assert_close(torch_loss, loss, f"{what}: loss (targets with ignore_index -1) of the torch model vs ours")
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        assert_close(grads[name], p.grad, f"{what}: gradient of {name!r}, torch vs ours")
    p = next(iter(ours.parameters()))
    shift_in_place(p, 1.0)  # p.data[...] += 1.0, where p lives (p.data here is a copy in authoritative grading)
    assert_close(next(iter(theirs.parameters())).detach().numpy(), p.data - 1.0,
                 f"{what}: the torch weights after changing ours (to_torch must copy, not share, the arrays)")


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.under_test("to_torch")
def test_to_torch_in_float32(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    ours = random_model(fields, np.float32, seed=2)
    theirs = to_torch(ours)
    assert_equal(next(theirs.parameters()).dtype, torch.float32, f"to_torch(float32 GPT {variant}): parameter dtype")
    idx, _ = batch(fields, 3)
    expected = random_model(fields, np.float64, seed=2)(idx)[0].data  # the float64 truth
    with torch.no_grad():
        got = theirs(torch.tensor(idx))[0]
    assert_close(got, expected, f"to_torch(float32 GPT {variant}): logits vs the float64 model (tolerance "
                                f"{FLOAT32_RTOL:g} of the largest logit)",
                 atol=FLOAT32_RTOL * float(np.abs(expected).max()), rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.under_test("from_torch", "to_torch")
def test_from_torch_round_trip(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    torch.manual_seed(4)
    theirs = TorchGPT(GPTConfig(**fields)).double()
    ours = from_torch(theirs)
    what = f"from_torch(TorchGPT {variant} in float64)"
    assert_equal(isinstance(ours, GPT), True, f"{what} returns a GPT")
    assert_equal(ours.config.to_dict(), theirs.config.to_dict(), f"{what}: the config (every field)")
    state = state_as_arrays(theirs)
    for name, value in ours.state_dict().items():
        assert_equal(value, state[name], f"{what}: {name!r}")
    assert_equal(ours.lm_head.weight is ours.transformer.wte.weight, fields.get("tie_weights", True),
                 f"{what}: lm_head.weight is transformer.wte.weight")
    idx, _ = batch(fields, 5)
    with torch.no_grad():
        expected = theirs(torch.tensor(idx))[0]
    assert_close(ours(idx)[0], expected, f"{what}: our logits vs the torch model's")
    back = to_torch(ours)
    for name, value in state_as_arrays(back).items():
        assert_equal(value, state[name], f"to_torch(from_torch(TorchGPT {variant})): {name!r}")


@pytest.mark.under_test("TorchGPT.__init__")
def test_torch_gpt_starts_from_gpt2_initialisation():
    config = GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=64)
    torch.manual_seed(0)
    model = TorchGPT(config)
    named = dict(model.named_parameters())
    residual = 0.02 / np.sqrt(2 * config.n_layer)
    # 4 096 to 32 000 draws each: the relative standard error of a sample std is 1/sqrt(2 n), at most 1.1%,
    # so the +-5% band is at least 4.5 standard errors wide.
    for name, std in (("transformer.wte.weight", 0.02), ("transformer.h.0.attn.c_attn.weight", 0.02),
                      ("transformer.h.1.mlp.c_fc.weight", 0.02), ("transformer.h.2.attn.c_proj.weight", residual),
                      ("transformer.h.3.mlp.c_proj.weight", residual)):
        got = float(named[name].detach().std())
        assert_in_range(got / std, 0.95, 1.05, f"TorchGPT: std of {name!r} / {std:.4g} (GPT-2's initialisation)")
    assert_equal(float(named["transformer.h.0.attn.c_attn.bias"].detach().abs().max()), 0.0, "TorchGPT: c_attn.bias (zeros)")
    assert_equal(float(named["transformer.h.0.ln_1.weight"].detach().min()), 1.0, "TorchGPT: ln_1.weight (ones)")


# ---------------------------------------------------------------------- devices, processes, training
@pytest.mark.under_test("setup_distributed", "shard")
def test_single_process_setup_and_shards(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = setup_distributed()
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert_equal((alone.rank, alone.world_size, alone.device.type), (0, 1, expected_device),
                 "setup_distributed() without torchrun's WORLD_SIZE: (rank, world_size, device type)")
    model = TorchGPT(GPTConfig(**SMALL))
    assert_equal(wrap_for_training(model, alone) is model, True, "wrap_for_training(model, one process) is the model")
    rows = torch.arange(12).reshape(6, 2)
    assert_equal(shard(rows, alone).numpy(), rows.numpy(), "shard(6 rows, one process): every row")
    third = Distributed(rank=1, local_rank=1, world_size=3, device=torch.device("cpu"))
    assert_equal(shard(rows, third).numpy(), rows[2:4].numpy(), "shard(6 rows, rank 1 of 3): rows 2 and 3")
    assert_raises(ValueError, lambda: shard(torch.arange(7), third), "shard(7 rows, 3 processes)")


@pytest.mark.under_test("wrap_for_training", "from_torch")
@pytest.mark.integration
def test_training_entry_point_writes_a_checkpoint_numpy_reads(student_tmp, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    data = student_tmp / "corpus.txt"
    data.write_text("".join(f"{i} squared is {i * i}.\n" for i in range(200)))  # UTF-8
    out = student_tmp / "run"
    output = Output()  # what main prints where it runs (capsys would see only this process's output)
    code = output.run(main, ["--data", str(data), "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                             "--block-size", "8", "--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1",
                             "--eval-batches", "2", "--out", str(out)])
    assert_equal(code, 0, "exit code of python -m stage4_gpt.torch_gpt (3 steps on the CPU)")
    printed = output.readouterr()[0]
    assert_equal("cpu" in printed or "cuda" in printed, True, f"the run says which device it uses; it printed "
                                                              f"{printed[:200]!r}")
    model, tokenizer = model_from_checkpoint(load_checkpoint(str(out / "ckpt.npz")))
    assert_equal(model.config.vocab_size, tokenizer.vocab_size, "the checkpoint's vocab_size vs its tokenizer's")
    assert_equal(int(load_checkpoint(str(out / "ckpt.npz"))["step"]), 3, "the step in the checkpoint")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.under_test("wrap_for_training", "setup_distributed", "shard")
@pytest.mark.integration
def test_two_processes_average_the_gradients_of_one(student_tmp):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this PyTorch build")
    fields = dict(SMALL)
    ours = random_model(fields, seed=6)
    # No padding: with ignored targets the processes' shards would count different numbers of positions, and
    # the average of their mean losses would not be the mean loss of the whole batch.
    idx, targets = batch(fields, 7, B=6, padding=False)
    # The truth: one process, the whole batch, on the independent reference GPT.
    reference = ReferenceGPT(**fields).double()
    reference.load_state_dict({name: torch.tensor(value) for name, value in ours.state_dict().items()})
    _, loss = reference(torch.tensor(idx), torch.tensor(targets))
    loss.backward()
    expected = {name: p.grad.numpy() for name, p in reference.named_parameters()}
    TorchGPT(GPTConfig(**fields))  # the port must exist before two processes are started to run it

    inputs = student_tmp / "input.npz"
    inputs.save_npz(config=np.array(json.dumps(ours.config.to_dict())), x=idx, y=targets,
                    **{f"model.{name}": value for name, value in ours.state_dict().items()})
    port = free_port()
    processes = []
    for rank in range(2):  # started by the process that runs the code under test, as torchrun would
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": ""}
        processes.append(start_module_with_environment("tests.stage4.ddp_worker", str(inputs),
                                                       str(student_tmp / f"{rank}.npz"), cwd=str(student_tmp),
                                                       environment=env))
    deadline = time.monotonic() + 60
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for process in processes:
            process.kill()
    for rank, (process, (_, stderr)) in enumerate(zip(processes, outputs)):
        if process.returncode:
            reraise_not_implemented(stderr)
        assert_equal(process.returncode, 0, f"exit code of DDP process {rank} (its stderr ends with {stderr[-600:]!r})")
    for rank in range(2):
        got = (student_tmp / f"{rank}.npz").load_npz()  # np.load(..., allow_pickle=False), from the file's bytes
        what = f"DDP process {rank} of 2 (gloo on the CPU)"
        assert_equal((int(got["rank"]), int(got["world_size"])), (rank, 2), f"{what}: (rank, world_size) from setup_distributed")
        assert_equal(str(got["wrapped"]), "DistributedDataParallel", f"{what}: the type wrap_for_training returned")
        assert_equal(int(got["rows"]), 3, f"{what}: rows of its shard of the 6-row batch")
        for name, value in expected.items():
            assert_close(got[name], value, f"{what}: the gradient of {name!r} after backward, vs one process on the "
                                           "whole batch (DDP averages the processes' gradients)")

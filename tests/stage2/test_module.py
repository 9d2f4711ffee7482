"""Exercise 2.1: Module and Parameter: registration, PyTorch's parameter names, train/eval, state dicts.

The models here are built from Parameters directly (not from Linear, which is exercise 2.2), each
next to the PyTorch model with the same structure: lists of modules there are ``nn.ModuleList``s,
lists of parameters ``nn.ParameterList``s.
"""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage2_mlp.nn import IncompatibleKeys, Parameter
from tests.helpers import assert_close, assert_equal
from tests.stage2.student_side import (
    Net,
    load_npz_state_dict,
    load_then_write_into_state,
    state_dict_then_shift_parameter,
    write_into_state_dict,
)

pytestmark = [
    pytest.mark.exercise("2.1"),
    pytest.mark.under_test(
        "Module.__setattr__", "Module.named_modules", "Module._all_parameters_by_name", "Module.named_parameters",
    ),
]


# ---------------------------------------------------------------------- the same model, ours and PyTorch's
# Ours (Affine, Block, Net) subclass the Module under test: they live in student_side.py, beside it.


class TorchAffine(torch.nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_out, n_in, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.randn(n_out, dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class TorchBlock(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.rand(width, dtype=torch.float64) + 0.5)
        self.inner = TorchAffine(width, width)
        self.layers = torch.nn.ModuleList([TorchAffine(width, width), TorchAffine(width, width)])
        self.offsets = torch.nn.ParameterList([torch.randn(width, dtype=torch.float64) for _ in range(2)])

    def forward(self, x):
        x = self.inner(x) * self.gain
        for layer in self.layers:
            x = layer(x).tanh()
        return x + self.offsets[0] - self.offsets[1]


class TorchNet(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = TorchAffine(2, 3)
        self.blocks = torch.nn.ModuleList([TorchBlock(3), TorchBlock(3)])
        self.head = TorchAffine(3, 1)
        self.temperature = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x) / self.temperature


def all_modules(net):
    """Every module of a Net, found by hand (not with the code under test)."""
    blocks = list(net.blocks)
    return [net, net.embed, net.head, *blocks, *(b.inner for b in blocks), *(layer for b in blocks for layer in b.layers)]


def names(named):
    return [name for name, _ in named]


def assert_same_names(got, expected, what):
    """The names in this order (a wrong one is reported as missing and extra, see tests.helpers.assert_equal)."""
    assert_equal(list(got), list(expected), f"{what}: the names, in this order")


def torch_state_as_numpy(torch_model):
    return {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}


def load_error(model, state, **kwargs) -> str:
    """The message of the error ``load_state_dict`` raises (any exception type will do)."""
    try:
        model.load_state_dict(state, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:
        return str(error)
    raise AssertionError(f"load_state_dict({kwargs or ''}) should have raised an error for this state, but returned normally")


# ---------------------------------------------------------------------- registration and names
@pytest.mark.under_test("Module.named_parameters", "Module.named_modules", "Module.__setattr__")
def test_named_parameters_match_pytorch():
    got = names(Net().named_parameters())
    expected = names(TorchNet().named_parameters())
    assert_same_names(got, expected, "Net().named_parameters() (own parameters first, then sub-modules in order, "
                                     "lists as name.0, name.1, ...)")


@pytest.mark.under_test("Module.__setattr__", "Module.named_parameters")
def test_parameters_are_the_assigned_objects():
    net = Net()
    params = net.parameters()
    expected = [net.temperature, net.embed.weight, net.embed.bias, net.blocks[0].gain]
    for i, p in enumerate(expected):
        assert params[i] is p, (
            f"parameters()[{i}] should be the very Parameter object assigned to the model (an optimizer updates "
            f"it in place), got a {type(params[i]).__name__} of shape {getattr(params[i], 'shape', '?')}"
        )
    assert len(params) == 1 + 2 + 2 * (1 + 2 + 2 * 2 + 2) + 2, f"Net has 23 parameters, parameters() gave {len(params)}"
    for name, p in net.named_parameters():
        assert isinstance(p, Parameter) and p.requires_grad, f"{name}: expected a Parameter that requires grad"


@pytest.mark.under_test("Module.__setattr__")
def test_only_parameters_and_modules_are_registered():
    got = names(Net().named_parameters())
    for stray in ("blocks.0.scratch", "blocks.0.label", "blocks.0.sizes.0"):
        assert stray not in got, (
            f"{stray!r} appears in named_parameters(), but only Parameters (and Modules, and lists of them) are "
            f"registered; a plain Tensor, a string or a list of numbers stays an ordinary attribute"
        )
    block = Net().blocks[0]
    assert block.label == "block" and block.sizes == [3, 3] and isinstance(block.scratch, Tensor), (
        "attributes that are not parameters must still be stored as ordinary attributes"
    )


@pytest.mark.under_test("Module.__setattr__")
def test_reassigning_an_attribute_replaces_what_it_registered():
    ours, theirs = Net(), TorchNet()
    new_weight = Parameter(np.zeros((1, 3)))
    ours.head.weight, theirs.head.weight = new_weight, torch.nn.Parameter(torch.zeros(1, 3, dtype=torch.float64))
    ours.blocks, theirs.blocks = [ours.blocks[1]], torch.nn.ModuleList([theirs.blocks[1]])
    ours.embed, theirs.embed = None, None
    assert_same_names(names(ours.named_parameters()), names(theirs.named_parameters()),
                      "after model.head.weight = <new Parameter>; model.blocks = [model.blocks[1]]; model.embed = None")
    assert dict(ours.named_parameters())["head.weight"] is new_weight, (
        "after model.head.weight = p, named_parameters() must give p itself as 'head.weight'"
    )


@pytest.mark.under_test("Module.named_parameters")
def test_shared_parameter_is_listed_once():
    # Tied weights: the same Parameter in two modules (as a GPT shares its embedding with its output layer).
    ours, theirs = Net(), TorchNet()
    ours.blocks[1].inner.weight = ours.blocks[0].inner.weight
    theirs.blocks[1].inner.weight = theirs.blocks[0].inner.weight
    got = names(ours.named_parameters())
    assert_same_names(got, names(theirs.named_parameters()),
                      "named_parameters() with model.blocks[1].inner.weight = model.blocks[0].inner.weight (a shared "
                      "Parameter is listed once, under its first name, so an optimizer updates it once)")


# ---------------------------------------------------------------------- zero_grad and modes
@pytest.mark.under_test("Module.zero_grad")
def test_zero_grad_forgets_every_gradient():
    net = Net()
    x = Tensor(np.random.default_rng(1).standard_normal((5, 2)))
    net(x).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"after backward() every parameter should have a gradient, these have none: {missing}"
    net.zero_grad()
    left = [n for n, p in net.named_parameters() if p.grad is not None]
    assert not left, f"after zero_grad() every parameter's grad should be None, these still have one: {left}"


@pytest.mark.under_test("Module.train")
def test_train_and_eval_reach_every_module():
    net = Net()
    modules = all_modules(net)
    assert all(m.training for m in modules), "a new Module should be in training mode (training == True)"
    assert net.eval() is net, "eval() should return the module itself (so that model = Net().eval() works)"
    still = [type(m).__name__ for m in modules if m.training]
    assert not still, f"after model.eval() every module below it must have training == False; still training: {still}"
    assert net.train() is net, "train() should return the module itself"
    off = [type(m).__name__ for m in modules if not m.training]
    assert not off, f"after model.train() every module must have training == True again; not training: {off}"
    net.blocks[1].train(False)
    assert not net.blocks[1].layers[0].training and net.blocks[0].training and net.training, (
        "block.train(False) must switch off that block and the modules inside it only"
    )


# ---------------------------------------------------------------------- state dicts
@pytest.mark.under_test("Module.state_dict")
def test_state_dict_keys_match_pytorch_and_values_are_copies():
    net = Net()
    state = net.state_dict()
    assert isinstance(state, dict), f"state_dict() should return a dict, got {type(state).__name__}"
    assert_same_names(list(state), list(TorchNet().state_dict()), "the keys of state_dict()")
    for name, p in net.named_parameters():
        assert isinstance(state[name], np.ndarray), f"state_dict()[{name!r}] should be an np.ndarray, got {type(state[name]).__name__}"
        assert_close(state[name], p.data, f"state_dict()[{name!r}]")
    before = net.embed.weight.data.copy()
    write_into_state_dict(net, "embed.weight", 99.0)  # state = net.state_dict(); state["embed.weight"][...] = 99.0
    assert_close(net.embed.weight.data, before, "embed.weight after changing the array state_dict() returned "
                                                "(state_dict must hold copies, not the parameters' own arrays)")
    # state = net.state_dict(); net.head.bias.data += 1.0 (in place); then state["head.bias"] as it is now:
    earlier = state_dict_then_shift_parameter(net, "head.bias", 1.0)
    assert not np.allclose(earlier, net.head.bias.data), (
        "changing a parameter changed an earlier state_dict(): it must hold copies"
    )


@pytest.mark.under_test("Module.state_dict", "Module._all_parameters_by_name")
def test_state_dict_of_tied_weights_has_every_name():
    ours, theirs = Net(), TorchNet()
    ours.blocks[1].inner.weight = ours.blocks[0].inner.weight
    theirs.blocks[1].inner.weight = theirs.blocks[0].inner.weight
    assert_same_names(list(ours.state_dict()), list(theirs.state_dict()),
                      "state_dict() keys with model.blocks[1].inner.weight = model.blocks[0].inner.weight "
                      "(a shared parameter appears under each of its names, as in PyTorch)")


@pytest.mark.under_test("Module.state_dict", "Module.load_state_dict")
def test_round_trip_through_npz(student_tmp):
    x = Tensor(np.random.default_rng(2).standard_normal((4, 2)))
    trained, fresh = Net(seed=0), Net(seed=1)
    path = student_tmp / "checkpoint.npz"
    path.save_npz(**trained.state_dict())  # np.savez(path, **trained.state_dict()), written beside the code under test
    load_npz_state_dict(fresh, str(path))  # with np.load(path, allow_pickle=False) as saved: fresh.load_state_dict(saved)
    for (name, p), (_, q) in zip(fresh.named_parameters(), trained.named_parameters()):
        assert_close(p, q, f"parameter {name!r} after np.savez(state_dict()) and load_state_dict(np.load(...))")
    assert_close(fresh(x), trained(x), "the output of the reloaded model")


@pytest.mark.under_test("Module.load_state_dict")
@pytest.mark.integration
def test_loads_a_converted_pytorch_state_dict_and_matches_its_outputs_and_gradients():
    ours, theirs = Net(seed=0), TorchNet(seed=3)
    ours.load_state_dict(torch_state_as_numpy(theirs))
    x = np.random.default_rng(4).standard_normal((6, 2))
    out, expected = ours(Tensor(x)), theirs(torch.tensor(x))
    assert_close(out, expected, "the output after loading PyTorch's state dict")
    upstream = np.random.default_rng(5).standard_normal(expected.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    theirs_named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs_named[name].grad, f"the gradient of parameter {name!r}")


@pytest.mark.under_test("Module.load_state_dict")
def test_load_copies_values_and_keeps_dtypes():
    net = Net()
    state = {k: np.full(v.shape, 0.25) for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.data = p.data.astype(np.float32)
    expected = {k: v.copy() for k, v in state.items()}
    load_then_write_into_state(net, state, "head.weight", -7.0)  # net.load_state_dict(state), then state["head.weight"][...] = -7.0
    for name, p in net.named_parameters():
        assert p.dtype == np.float32, (
            f"{name}: a float32 parameter loaded from a float64 array should stay float32 (copy the values into "
            f"its array, e.g. np.copyto or p.data[...] = value), got {p.dtype}"
        )
        assert_close(p, expected[name], f"{name} after load_state_dict")
    assert not np.any(net.head.weight.data == -7.0), (
        "changing the state's array after load_state_dict changed the model: copy the values, don't keep the array"
    )


# ---------------------------------------------------------------------- strictness
@pytest.mark.under_test("Module.load_state_dict")
def test_strict_load_names_a_missing_key():
    state = Net().state_dict()
    del state["blocks.1.layers.0.bias"]
    message = load_error(Net(), state)
    assert "blocks.1.layers.0.bias" in message, (
        f"a strict load with 'blocks.1.layers.0.bias' missing from the state should name it; the error said: {message}"
    )


@pytest.mark.under_test("Module.load_state_dict")
def test_strict_load_names_an_unexpected_key():
    state = Net().state_dict()
    state["blocks.0.extra"] = np.zeros(3)
    message = load_error(Net(), state)
    assert "blocks.0.extra" in message, (
        f"a strict load of a state with the extra key 'blocks.0.extra' should name it; the error said: {message}"
    )


@pytest.mark.under_test("Module.load_state_dict")
def test_mis_shaped_key_is_an_error_even_when_not_strict():
    state = Net().state_dict()
    state["embed.weight"] = np.zeros((2, 3))  # the model's is (3, 2)
    for strict in (True, False):
        message = load_error(Net(), state, strict=strict)
        assert "embed.weight" in message, (
            f"load_state_dict(strict={strict}) with 'embed.weight' of shape (2, 3) for a parameter of shape (3, 2) "
            f"should raise an error naming it; the error said: {message}"
        )


@pytest.mark.under_test("Module.load_state_dict")
def test_strict_load_names_every_problem_at_once():
    state = Net().state_dict()
    del state["temperature"]
    state["head.scale"] = np.ones(1)
    state["blocks.0.gain"] = np.ones(4)
    message = load_error(Net(), state)
    for key in ("temperature", "head.scale", "blocks.0.gain"):
        assert key in message, (
            f"the state misses 'temperature', has an unexpected 'head.scale' and a mis-shaped 'blocks.0.gain'; "
            f"the error should name all three, but {key!r} is not in it: {message}"
        )


@pytest.mark.under_test("Module.load_state_dict")
def test_non_strict_load_loads_what_fits():
    source, target = Net(seed=0), Net(seed=1)
    state = source.state_dict()
    del state["head.bias"]
    state["head.extra"] = np.ones(2)
    kept = target.head.bias.data.copy()
    target.load_state_dict(state, strict=False)
    assert_close(target.embed.weight, source.embed.weight, "embed.weight after a non-strict load")
    assert_close(target.blocks[1].offsets[0], source.blocks[1].offsets[0], "blocks.1.offsets.0 after a non-strict load")
    assert_close(target.head.bias, kept, "head.bias, missing from the state, should be left as it was")


# The bad key sits at the end of the model's order (or of the state's), so a load that copies key by key
# and stops at the first problem has already copied everything else.
BAD_STATES = {
    "strict, 'head.bias' missing": (True, lambda state: state.pop("head.bias")),
    "strict, an unexpected 'head.extra'": (True, lambda state: state.update({"head.extra": np.ones(2)})),
    "strict, 'head.weight' mis-shaped": (True, lambda state: state.update({"head.weight": np.ones((3, 1))})),
    "not strict, 'head.weight' mis-shaped": (False, lambda state: state.update({"head.weight": np.ones((3, 1))})),
}


@pytest.mark.parametrize("case", BAD_STATES)
@pytest.mark.under_test("Module.load_state_dict")
def test_a_failed_load_copies_nothing(case):
    strict, spoil = BAD_STATES[case]
    source, target = Net(seed=0), Net(seed=1)
    state = source.state_dict()
    spoil(state)
    before = {name: p.data.copy() for name, p in target.named_parameters()}
    load_error(target, state, strict=strict)
    changed = [name for name, p in target.named_parameters() if not np.array_equal(p.data, before[name])]
    assert not changed, (
        f"load_state_dict ({case}) raised an error, as it should, but had already copied these parameters: "
        f"{changed}. Check the whole state first, then copy: a failed load must leave the model as it was"
    )


@pytest.mark.under_test("Module.load_state_dict")
def test_load_state_dict_reports_missing_and_unexpected_keys():
    source, target = Net(seed=0), Net(seed=1)
    state = source.state_dict()
    del state["head.bias"], state["blocks.0.gain"]
    state["head.extra"] = np.ones(2)
    result = target.load_state_dict(state, strict=False)
    assert isinstance(result, IncompatibleKeys), (
        f"load_state_dict should return IncompatibleKeys(missing_keys, unexpected_keys), got {result!r}"
    )
    missing, unexpected = result
    assert sorted(missing) == ["blocks.0.gain", "head.bias"], (
        f"load_state_dict(strict=False) of a state without 'blocks.0.gain' and 'head.bias': expected them as "
        f"missing_keys, got {missing!r}"
    )
    assert list(unexpected) == ["head.extra"], (
        f"load_state_dict(strict=False) of a state with the extra key 'head.extra': expected unexpected_keys "
        f"['head.extra'], got {unexpected!r}"
    )
    result = target.load_state_dict(source.state_dict())
    assert isinstance(result, IncompatibleKeys) and list(result.missing_keys) == [] and list(result.unexpected_keys) == [], (
        f"a load of a complete state should return IncompatibleKeys(missing_keys=[], unexpected_keys=[]), got {result!r}"
    )

"""Comparisons shared by the graded tests, with failure messages written for a student.

A failure says what was computed, what was expected and what came back: shapes, dtypes, the largest
absolute difference and where it is.
"""

from __future__ import annotations

import functools
import io
import os
from collections import Counter

import numpy as np
import torch

# float64 on both sides: differences beyond these come from a wrong formula, not from rounding.
ATOL = 1e-9
RTOL = 1e-7


def as_array(x) -> np.ndarray | None:
    """A NumPy view of our Tensor, a torch tensor, an ndarray or a number (None stays None)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    data = getattr(x, "data", None)  # read once: in authoritative grading each read of a Tensor is a round trip
    if isinstance(data, np.ndarray):  # our Tensor
        return data
    return np.asarray(x)


def assert_close(got, expected, what: str, atol: float = ATOL, rtol: float = RTOL,
                 small_difference_hint: tuple[float, str] | None = None) -> None:
    """Assert ``got`` equals ``expected`` elementwise within tolerance; ``what`` names the quantity.
    NaN is never close to anything, itself included: an expected value that came out NaN (say, from inputs the
    code under test handed back) must not let a NaN answer pass. ``small_difference_hint``: (limit, advice),
    the advice added to the message when the largest difference is at most the limit (a near miss has causes
    of its own, which would mislead about a plainly wrong value)."""
    got_arr, exp_arr = as_array(got), as_array(expected)
    if got_arr is None:
        raise AssertionError(f"{what}: expected an array of shape {exp_arr.shape}, got None")
    if got_arr.shape != exp_arr.shape:
        raise AssertionError(f"{what}: expected shape {exp_arr.shape}, got shape {got_arr.shape}")
    if got_arr.size == 0:
        return
    got64, exp64 = got_arr.astype(np.float64), exp_arr.astype(np.float64)
    bad = ~np.isclose(got64, exp64, atol=atol, rtol=rtol)
    if bad.any():
        diff = np.array(np.abs(got64 - exp64))  # np.array: for 0-d inputs np.abs returns a scalar, not an array
        diff[~bad] = 0  # locate the worst among the elements that are actually out of tolerance
        where = np.unravel_index(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape)
        at = f" at index {tuple(int(i) for i in where)}" if got_arr.ndim else ""
        hint = ""
        if small_difference_hint is not None and diff[where] <= small_difference_hint[0]:
            hint = f" ({small_difference_hint[1]})"
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ (shape {got_arr.shape}, dtype {got_arr.dtype}); "
            f"largest difference {diff[where]:.3g}{at}: expected {exp64[where]:.6g}, got {got64[where]:.6g}{hint}"
        )


def assert_equal(got, expected, what: str) -> None:
    """Assert ``got == expected`` exactly: numbers, strings, tuples and lists, or arrays (same shape, same
    values; NaN equals nothing, as in ``assert_close``). For anything computed in floating point, use ``assert_close``."""
    if isinstance(expected, np.ndarray) or isinstance(got, np.ndarray) or hasattr(got, "data"):
        got_arr, exp_arr = as_array(got), np.asarray(expected)
        if got_arr is None or got_arr.shape != exp_arr.shape:
            shape = None if got_arr is None else got_arr.shape
            raise AssertionError(f"{what}: expected an array of shape {exp_arr.shape}, got {shape}")
        if not np.array_equal(got_arr, exp_arr):
            where = tuple(int(i) for i in np.argwhere(got_arr != exp_arr)[0]) if got_arr.ndim else ()
            raise AssertionError(f"{what}: {int(np.sum(got_arr != exp_arr))} of {exp_arr.size} elements differ; "
                                 f"first at index {where}: expected {exp_arr[where].item()!r}, got {got_arr[where].item()!r}")
        return
    if type(got) is not type(expected) and not (isinstance(got, (int, float, np.number)) and
                                                isinstance(expected, (int, float, np.number))):
        raise AssertionError(f"{what}: expected {expected!r} ({type(expected).__name__}), "
                             f"got {got!r} ({type(got).__name__})")
    if not got == expected:
        difference = collection_difference(got, expected)
        raise AssertionError(f"{what}: {difference}" if difference else f"{what}: expected {expected!r}, got {got!r}")


SHOWN_ITEMS = 8  # of the missing or extra items of a list or set, named in a message


def _some(items: list) -> str:
    shown = ", ".join(_brief(item) for item in items[:SHOWN_ITEMS])
    return shown + (f" and {len(items) - SHOWN_ITEMS} more" if len(items) > SHOWN_ITEMS else "")


def _brief(item) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def collection_difference(got, expected) -> str | None:
    """For two lists, tuples, sets or dicts that differ: what is missing and what is extra (and for dicts the
    keys whose values differ), rather than both whole: a model's parameter names run to a thousand characters.
    For lists, the first difference in order too. None for anything else, or items that cannot be counted."""
    if isinstance(got, dict) and isinstance(expected, dict):
        missing = [key for key in expected if key not in got]
        extra = [key for key in got if key not in expected]
        try:
            changed = [key for key in expected if key in got and not got[key] == expected[key]]
        except (TypeError, ValueError):  # values such as arrays, whose == is no yes or no
            return None
        parts = [f"missing keys: {_some(missing)}"] if missing else []
        parts += [f"extra keys: {_some(extra)}"] if extra else []
        parts += [f"other values at {len(changed)} key{'s' if len(changed) > 1 else ''}: " + "; ".join(
            f"{_brief(key)}: expected {_brief(expected[key])}, got {_brief(got[key])}" for key in changed[:SHOWN_ITEMS])
            + (" ..." if len(changed) > SHOWN_ITEMS else "")] if changed else []
        return "; ".join(parts) or None
    if type(got) is not type(expected) or not isinstance(got, (list, tuple, set, frozenset)):
        return None
    try:
        got_counts, expected_counts = Counter(got), Counter(expected)
    except TypeError:
        return None
    missing = list((expected_counts - got_counts).elements())
    extra = list((got_counts - expected_counts).elements())
    if isinstance(got, (set, frozenset)):
        missing, extra = sorted(missing, key=repr), sorted(extra, key=repr)
    parts = [f"expected {len(expected)} items, got {len(got)}" if len(got) != len(expected) else
             f"{len(expected)} items as expected, but not the same ones" if missing else
             f"the expected {len(expected)} items, in another order"]
    parts += [f"missing: {_some(missing)}"] if missing else []
    parts += [f"extra: {_some(extra)}"] if extra else []
    if isinstance(got, (list, tuple)):
        first = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
        parts.append(f"first difference at index {first}: expected "
                     f"{_brief(expected[first]) if first < len(expected) else 'nothing more'}, "
                     f"got {_brief(got[first]) if first < len(got) else 'nothing more'}")
    return "; ".join(parts)


def assert_in_range(value, low: float | None, high: float | None, what: str) -> None:
    """Assert ``low <= value <= high`` for a number (``None``: no bound on that side); for statistics,
    accuracies and loss thresholds, where the test states the range and why."""
    number = float(as_array(value))
    if not ((low is None or number >= low) and (high is None or number <= high)):
        bounds = f"at least {low:g}" if high is None else f"at most {high:g}" if low is None else f"in [{low:g}, {high:g}]"
        raise AssertionError(f"{what}: expected a value {bounds}, got {number:.6g}")


def assert_raises(exceptions, fn, what: str, match: str | None = None) -> BaseException:
    """Call ``fn()`` and assert it raises one of ``exceptions`` (a type or a tuple), whose message contains
    ``match`` (case-insensitive) if given. Returns the exception."""
    names = " or ".join(e.__name__ for e in (exceptions if isinstance(exceptions, tuple) else (exceptions,)))
    try:
        fn()
    except exceptions as error:
        if match is not None and match.lower() not in str(error).lower():
            raise AssertionError(f"{what}: the {type(error).__name__} should mention {match!r}; its message was "
                                 f"{str(error)!r}") from None
        return error
    raise AssertionError(f"{what}: expected a {names}, but nothing was raised")


@functools.cache
def tensor_class():
    """The stage's ``Tensor``, imported on first use: this module is imported before the stage packages' finder
    is set up. Kept, as a module-level import would keep it (in authoritative grading each lookup of a name of
    the code under test is a round trip to the student process)."""
    from stage1_autograd.tensor import Tensor  # noqa: PLC0415

    return Tensor


@functools.cache
def beside_the_code(name: str):
    """``tests.student_side.<name>``: a helper that runs where the code under test runs (see ``tensor_class``)."""
    from tests import student_side  # noqa: PLC0415

    return getattr(student_side, name)


def assert_tensor(out, what: str, shape: tuple[int, ...] | None = None, dtype=None) -> None:
    """Assert ``out`` is one of our Tensors, with ``shape`` and ``dtype`` when they are given."""
    if not isinstance(out, tensor_class()):
        raise AssertionError(f"{what}: expected a Tensor, got {type(out).__name__}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise AssertionError(f"{what}: expected shape {tuple(shape)}, got shape {tuple(out.shape)}")
    if dtype is not None and out.dtype != np.dtype(dtype):
        raise AssertionError(f"{what}: expected dtype {np.dtype(dtype)}, got {out.dtype}")


def describe(arrays) -> str:
    return ", ".join(f"input {i} of shape {np.shape(a)}" for i, a in enumerate(arrays))


def run_backward(out, grad: np.ndarray) -> None:
    """``tests.student_side.run_backward``: the gradients pushed through the graph by hand, beside the code
    under test."""
    beside_the_code("run_backward")(out, grad)


def parameter_shapes(module) -> dict[str, tuple[int, ...]]:
    """name -> shape of every parameter, of a torch module of the tests or of a module of the code under test
    (read beside it, in one call)."""
    if isinstance(module, torch.nn.Module):
        return {name: tuple(p.shape) for name, p in module.named_parameters()}
    return beside_the_code("parameter_shapes")(module)


def randomize_like_training(model, rng: np.random.Generator) -> None:
    """Give every matrix of ``model`` values of the size a trained model's have, N(0, 0.3): at initialisation the
    attention is nearly uniform, which would hide a mistake of masks or positions. Drawn here, by the tests;
    assigned in place where the parameters live, in one call."""
    params = [p for _, p in model.named_parameters()]
    matrices = [(p, shape) for p, shape in zip(params, beside_the_code("read_each")(params, "shape")) if len(shape) > 1]
    beside_the_code("assign_each")([p for p, _ in matrices], [rng.normal(0, 0.3, shape) for _, shape in matrices])


def compare_with_torch(fn, *arrays, torch_fn=None, label: str = "", seed: int = 0, use_engine: bool = False,
                       grad_inputs=None):
    """Run ``fn`` on our Tensors and ``torch_fn`` (default: ``fn``) on torch tensors, all float64, with the
    same random upstream gradient; assert the outputs and every input's gradient agree.

    ``grad_inputs`` lists the indices of the inputs that require grad (default: all).
    ``use_engine`` drives the gradients with the student's ``Tensor.backward()``; otherwise with
    ``run_backward`` (for the op exercises, which come before the engine).
    Returns our output tensor.
    """
    Tensor = tensor_class()
    grad_inputs = range(len(arrays)) if grad_inputs is None else grad_inputs
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    ours = [Tensor(a, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    theirs = [torch.tensor(a, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    what = label or getattr(fn, "__name__", "the operation")
    what = f"{what} with {describe(arrays)}"

    out = fn(*ours)
    expected = (torch_fn or fn)(*theirs)
    assert isinstance(out, Tensor), f"{what}: expected a Tensor as the result, got {type(out).__name__}"
    assert out.dtype == np.float64, f"{what}: float64 inputs must give a float64 result, got {out.dtype}"
    assert_close(out, expected, f"{what}: value")

    upstream = np.random.default_rng(seed).standard_normal(expected.shape)
    expected.backward(torch.tensor(upstream))
    if use_engine:
        out.backward(upstream)
    else:
        run_backward(out, upstream)
    grads = _gradients_of(ours)
    for i in grad_inputs:
        assert_close(grads[i], theirs[i].grad, f"{what}: gradient of input {i}")
    return out


def _gradients_of(tensors) -> list:
    """Each Tensor's ``.grad``, read beside the code under test in one call."""
    return beside_the_code("read_each")(tensors, "grad")


# ---------------------------------------------------------------------- gradients by central differences
# How close autograd and central differences must agree. For F = sum(w * f(x)) and one input element x_i,
#   (F(x_i + eps) - F(x_i - eps)) / (2 eps) = dF/dx_i + eps**2 / 6 * d3F/dx_i3 + (rounding error of F) / eps:
#   * truncation: eps**2 / 6 * |d3F/dx3| = 1.7e-13 * |d3F/dx3| with eps = 1e-6. On the inputs the tests draw
#     the third derivatives stay below ~1e3 (the steepest are log and 1/x near 0.3-0.5: 2/x**3 and 6/x**4),
#     so at most ~2e-10;
#   * rounding: each F carries an error of a few ulps (1.1e-16) of the sum of |terms| of F, <= ~1e2 for these
#     small arrays of values of order 1, and the quotient divides it by 2 eps: ~1e-8 at most.
# An element passes if |autograd - numerical| <= CD_ATOL + CD_RTOL * |numerical|, 1e-6 both: about 100 times
# the worst expected error, while a wrong formula is off by the size of a gradient (>= 1e-2 on these inputs).
# (ATOL and RTOL above are for comparisons with PyTorch, which are exact up to rounding: too tight here.)
CD_ATOL = 1e-6
CD_RTOL = 1e-6


def assert_matches_central_differences(fn, *arrays, eps: float = 1e-6, seed: int = 0, label: str = "",
                                       use_engine: bool = False):
    """Check the gradients of ``fn`` (a function of Tensors) at ``arrays`` against central differences.

    With a fixed random upstream weighting ``w`` (the output's shape, drawn with ``seed``), the gradient of
    the number F = sum(w * fn(*inputs)) with respect to each input is measured numerically and compared
    with what ``run_backward(out, w)`` (or ``out.backward(w)`` with ``use_engine``) puts into ``.grad``.
    A random ``w`` rather than ones catches a backward that sends the right amounts to the wrong places.
    Every input is float64 and requires grad. The numerical evaluations use constant Tensors, which record
    no graph, so they need no ``no_grad()`` (exercise 1.7). Returns our output tensor.
    """
    Tensor, constants = tensor_class(), beside_the_code("constants")
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    what = label or getattr(fn, "__name__", "the operation")
    what = f"{what} with {describe(arrays)}"
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ours)
    assert isinstance(out, Tensor), f"{what}: expected a Tensor as the result, got {type(out).__name__}"
    assert out.dtype == np.float64, f"{what}: float64 inputs must give a float64 result, got {out.dtype}"
    w = np.random.default_rng(seed).standard_normal(out.shape)
    if use_engine:
        out.backward(w)
    else:
        run_backward(out, w)
    grads = _gradients_of(ours)

    # Two evaluations of fn per element of each input, at x + eps and x - eps: their constant input Tensors are
    # made beside the code under test in one call, and their outputs read back in one (in authoritative grading
    # one round trip each, not three per evaluation). fn runs here, op by op: it is the tests' own function.
    # fn (a reduction over an axis, a concatenation, a matmul) cannot in general be evaluated on a whole batch of
    # perturbed copies of its inputs at once; the arrays of these tests have at most a few dozen elements.
    perturbed = []
    for i, x in enumerate(arrays):
        for index in np.ndindex(x.shape):
            for step in (eps, -eps):
                moved = list(arrays)
                moved[i] = x.copy()
                moved[i][index] = x[index] + step
                perturbed.append(moved)
    outputs = [fn(*inputs) for inputs in constants(perturbed)]
    weighted_sums = iter([float(np.sum(w * value)) for value in beside_the_code("read_each")(outputs, "data")])

    for i, x in enumerate(arrays):
        numerical = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            plus, minus = next(weighted_sums), next(weighted_sums)
            numerical[index] = (plus - minus) / (2 * eps)
        got = grads[i]
        assert got is not None, f"{what}: input {i} received no gradient (its .grad is None after backward)"
        got = np.asarray(got, dtype=np.float64)
        assert got.shape == x.shape, (
            f"{what}: the gradient of input {i} has shape {got.shape}, but the input has shape {x.shape}"
        )
        difference = np.abs(got - numerical)
        bad = ~(difference <= CD_ATOL + CD_RTOL * np.abs(numerical))  # also flags nan
        if bad.any():
            ranked = np.where(bad, np.nan_to_num(difference, nan=np.inf), -1.0)
            worst = np.unravel_index(np.argmax(ranked), x.shape)
            at = f" at element {tuple(int(k) for k in worst)}" if x.ndim else ""
            raise AssertionError(
                f"{what}: the gradient of input {i} disagrees with central differences in {int(bad.sum())} of "
                f"{bad.size} elements; the worst is{at}: backward gives {got[worst]:.8g}, (F(x + eps) - F(x - eps)) "
                f"/ (2 eps) gives {numerical[worst]:.8g} (F = sum(w * output) for a fixed random w, eps={eps:g}, "
                f"tolerance {CD_ATOL:g} + {CD_RTOL:g} * |numerical|)"
            )
    return out


# ---------------------------------------------------------------------- reference ops for 1.7 and 1.8
# The tests of the engine (1.7) and of gradient checking (1.8) build their graphs from these few ops,
# made directly with the given ``Tensor._from_op`` and textbook gradients. Those exercises are then graded
# on the engine and the checker alone, whatever the state of the student's ops (1.2-1.6).
# Each op reads its inputs' arrays once, when it is made: in authoritative grading every read of ``a.data``
# crosses to the student process, and the engine test chains 10,000 of these ops.

@functools.cache
def _from_op():
    """``Tensor._from_op`` (``Tensor``, not ``type(a)``: in authoritative grading ``a`` is a proxy of the student's
    tensor, and its type is the proxy's)."""
    return tensor_class()._from_op


def ref_add(a, b):
    """a + b, for tensors of the same shape."""
    return _from_op()(a.data + b.data, (a, b), lambda g: (g, g))


def ref_mul(a, b):
    """a * b, for tensors of the same shape."""
    a_data, b_data = a.data, b.data
    return _from_op()(a_data * b_data, (a, b), lambda g: (g * b_data, g * a_data))


def ref_sin(a):
    a_data = a.data
    return _from_op()(np.sin(a_data), (a,), lambda g: (g * np.cos(a_data),))


def ref_sum(a):
    """The sum of all elements, a 0-d tensor."""
    a_data = a.data
    return _from_op()(a_data.sum(), (a,), lambda g: (np.broadcast_to(g, a_data.shape),))


def ref_matmul(a, b):
    """a @ b for 2-D a and b."""
    a_data, b_data = a.data, b.data
    return _from_op()(a_data @ b_data, (a, b), lambda g: (g @ b_data.T, a_data.T @ g))


class StudentPath:
    """A path where the code under test reads and writes files (the ``student_tmp`` fixture): in authoritative
    grading, in the student process's private folder, which the test process cannot see. The test hands
    ``str(path)`` to the code under test and reads or writes the file's bytes through ``tests.student_side``,
    never by opening the path itself: a folder the code under test has touched may have become a link."""

    def __init__(self, path: str):
        self._path = str(path)

    def __truediv__(self, name: str) -> StudentPath:
        return StudentPath(os.path.join(self._path, name))

    def __str__(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"StudentPath({self._path!r})"

    @property
    def name(self) -> str:
        return os.path.basename(self._path)

    def read_bytes(self) -> bytes:
        from tests import student_side  # noqa: PLC0415 - the student process's module in authoritative grading

        return bytes(student_side.read_bytes(self._path))

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        from tests import student_side  # noqa: PLC0415

        student_side.write_bytes(self._path, bytes(data))

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def exists(self) -> bool:
        from tests import student_side  # noqa: PLC0415

        return bool(student_side.exists(self._path))

    def mkdir(self) -> None:
        from tests import student_side  # noqa: PLC0415

        student_side.make_folder(self._path)

    def names(self, pattern: str = "*") -> list[str]:
        """The sorted names in this folder that match ``pattern``."""
        from tests import student_side  # noqa: PLC0415

        return [str(name) for name in student_side.names(self._path, pattern)]

    def load_npz(self) -> dict[str, np.ndarray]:
        """The arrays of an ``.npz`` file, read here from its bytes (never unpickled)."""
        with np.load(io.BytesIO(self.read_bytes()), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def save_npz(self, **arrays) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write_bytes(buffer.getvalue())

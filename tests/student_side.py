"""What the tests run beside the code under test, in the process that imports it.

In authoritative grading the tests run in a process of their own and the stage packages in a student
process (``grading.remote``); a module named ``student_side`` is imported in the student process, and the
tests hold proxies of what it returns. Here:
- ``run_module``/``start_module``: run a module of the code under test in a fresh Python process, as
  ``python -m stage4_gpt.train ...`` would, with the same stage packages (the student's, the reference's,
  or a mix). A plain ``python -m`` would find the stage packages on ``sys.path`` instead of where the run
  chose them, so the new process installs the same finder first.
- ``printed``: what a call prints, for the tests of command lines and progress lines.
- ``new_folder``, ``read_bytes``, ``write_bytes``, ...: the files the code under test reads and writes, for
  ``tests.helpers.StudentPath`` (the ``student_tmp`` fixture).

Everything computed here is the student process's word, like any value its code returns: the tests use it
to drive and observe the code under test, and decide every verdict themselves, on values.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from grading.stage_imports import StagePackageFinder

REPO_ROOT = Path(__file__).resolve().parents[1]

_BOOT = """
import json, os, runpy, signal, sys
from pathlib import Path
from grading.stage_imports import StagePackageFinder
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C -> KeyboardInterrupt, even if it was ignored
try:  # a graded run keeps its processes on one CPU (grading.sandbox.Isolation.cpu); a program may use them all
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
except (AttributeError, OSError):
    pass
homes = {name: Path(folder) for name, folder in json.loads(sys.argv[1]).items()}
sys.meta_path.insert(0, StagePackageFinder(homes))
module = sys.argv[2]
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def stage_homes() -> dict[str, str]:
    """Package name -> the folder this process imports it from."""
    for finder in sys.meta_path:
        if isinstance(finder, StagePackageFinder):
            return {name: str(folder) for name, folder in finder.homes.items()}
    raise RuntimeError("the stage packages' finder (grading.stage_imports) is not installed")


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args...`` on this process's stage packages."""
    return [sys.executable, "-c", _BOOT, json.dumps(stage_homes()), module, *map(str, args)]


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)  # for tests.conftest; the stage packages come from the finder
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run_module(module: str, *args: str, cwd, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the module to the end; returns the completed process (text stdout and stderr)."""
    return subprocess.run(module_command(module, *args), cwd=cwd, env=child_environment(), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def start_module(module: str, *args: str, cwd) -> subprocess.Popen:
    """Start the module and return at once (stdout and stderr are pipes of text lines)."""
    return subprocess.Popen(module_command(module, *args), cwd=cwd, env=child_environment(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def reraise_not_implemented(stderr: str) -> None:
    """If the child stopped at an unfinished exercise (its last line is ``NotImplementedError: ...``), raise
    that NotImplementedError here, so that the test reads as "not started" rather than as a failure."""
    lines = stderr.strip().splitlines()
    if lines and lines[-1].startswith("NotImplementedError"):
        raise NotImplementedError(lines[-1].partition(": ")[2] or lines[-1])


def printed(fn, *args, **kwargs) -> tuple[object, str]:
    """``(fn(*args, **kwargs), what it printed to stdout)``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


# ---------------------------------------------------------------------- files of the code under test
# In authoritative grading the test process never opens a path the code under test could have changed (it could
# have swapped a folder for a link): files cross as bytes, read and written here, beside the code under test.
def new_folder(name: str) -> str:
    """A fresh empty folder in this process's temporary folder (private to it under bubblewrap); its path."""
    import tempfile  # noqa: PLC0415

    return tempfile.mkdtemp(prefix=f"{name}-")


def read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


def exists(path: str) -> bool:
    return Path(path).exists()


def make_folder(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)


def names(folder: str, pattern: str = "*") -> list[str]:
    """The names in ``folder`` that match ``pattern``, sorted."""
    return sorted(p.name for p in Path(folder).glob(pattern))


# ---------------------------------------------------------------------- reading many objects at once
def read_each(objects, name: str) -> list:
    """``[getattr(o, name) for o in objects]``. The tests read many objects of the code under test in a row (every
    parameter's ``.grad``); in authoritative grading this is one round trip instead of one per object."""
    return [getattr(o, name) for o in objects]


def constants(batches) -> list:
    """``[[Tensor(a) for a in arrays] for arrays in batches]``: the inputs of every evaluation of central
    differences, made in one call."""
    from stage1_autograd.tensor import Tensor  # noqa: PLC0415 - stage 1's, as the code under test imports it

    return [[Tensor(a) for a in arrays] for arrays in batches]


def listed(iterable) -> list:
    """``list(iterable)`` beside the code under test (a generator of its): one round trip, not one per item."""
    return list(iterable)


def parameter_shapes(module) -> dict[str, tuple[int, ...]]:
    """name -> shape of every parameter of ``module`` (ours, or a PyTorch one of the port), in one call."""
    return {name: tuple(int(n) for n in p.shape) for name, p in module.named_parameters()}


def state_as_arrays(module) -> dict:
    """``module.state_dict()`` of a PyTorch module of the port (stage 4.9), its tensors as NumPy arrays, in one
    call (its tensors would otherwise cross one by one, as objects)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items()}


def assign_each(parameters, values) -> None:
    """``p.data[...] = v`` for each parameter and its new values: the same arrays, changed in place, in one call."""
    for parameter, value in zip(parameters, values):
        parameter.data[...] = value


# ---------------------------------------------------------------------- gradients by hand, before the engine
# Exercises 1.2-1.6 are graded before 1.7's Tensor.backward() is written: the tests push gradients through the
# graph themselves. Here, beside the code under test, because a graph walk reads every node: in authoritative
# grading that is one round trip for the whole walk instead of several per node. The gradients it leaves in
# .grad are then read and judged by the tests.
def _read_only(g) -> np.ndarray:
    """A view of ``g`` that NumPy refuses to write into: ``g *= 2`` or ``g[mask] = 0`` on it raise."""
    view = np.asarray(g).view()
    view.flags.writeable = False
    return view


def _call_backward(node, g):
    """``node._backward(g)`` on a read-only view of ``g``. The same upstream array is often handed to
    several parents (``a + b`` returns ``(g, g)``) or is another node's gradient, so an op that modified it
    in place would silently corrupt other gradients: here it fails at once, naming the op."""
    try:
        return node._backward(_read_only(g))
    except ValueError as error:
        if "read-only" not in str(error):
            raise
        backward = getattr(node._backward, "__qualname__", "")
        op = backward.split(".<locals>")[0] if ".<locals>" in backward else "an op"
        raise AssertionError(
            f"the backward function of {op} wrote into the upstream gradient g it was given (in place: "
            f"g *= ..., g[...] = ..., np.add.at(g, ...)); it must leave g unchanged and return new arrays, "
            f"because the same g may be handed to several parents. NumPy said: {error}"
        ) from None


def run_backward(out, grad: np.ndarray) -> None:
    """Push ``grad`` (dL/d out) back through the graph by calling each node's ``_backward``, exactly as
    ``Tensor.backward()`` does, but without using it: exercises 1.2-1.6 are graded before 1.7 is written.

    Each ``_backward`` receives a read-only view of its upstream gradient: one that writes into it fails
    with a message naming the op (the op contract of tensor.py forbids it)."""
    order, seen, stack = [], set(), [(out, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad)
    grads = {id(out): grad}
    for node in reversed(order):
        if node._backward is None:
            node.grad = grads[id(node)]
            continue
        parent_grads = _call_backward(node, grads[id(node)])
        assert len(parent_grads) == len(node._parents), (
            f"_backward returned {len(parent_grads)} gradients for an op with {len(node._parents)} inputs"
        )
        for parent, g in zip(node._parents, parent_grads):
            if g is not None and parent.requires_grad:
                g = np.asarray(g)
                assert g.shape == parent.shape, (
                    f"_backward returned a gradient of shape {g.shape} for an input of shape {parent.shape}: "
                    f"each gradient must have its input's shape; {_shape_fix(g.shape, parent.shape)}"
                )
                grads[id(parent)] = grads[id(parent)] + g if id(parent) in grads else g


def _shape_fix(got: tuple[int, ...], wanted: tuple[int, ...]) -> str:
    """How a gradient of shape ``got`` becomes one of ``wanted``: it is too big, too small, or arranged wrongly."""
    got_size, wanted_size = int(np.prod(got)), int(np.prod(wanted))
    only_size_1_axes_differ = [n for n in got if n != 1] == [n for n in wanted if n != 1]
    if got_size > wanted_size or (only_size_1_axes_differ and len(got) > len(wanted)):
        return ("sum it down to that shape with unbroadcast (the input was broadcast in the forward pass, so its "
                "gradient adds up over the copies)")
    if got_size < wanted_size or only_size_1_axes_differ:
        return ("spread it over that shape (a reduction's input: give g its reduced axes back as size 1 with "
                "np.expand_dims, then np.broadcast_to the input's shape)")
    return "it has the right number of elements in the wrong arrangement: undo the forward's reshape or transpose"

"""Authoritative grading: the tests run in a trusted process, the code under test in another one.

In authoritative mode (``grader.py --authoritative``, ``--submission``, batch grading, Gradescope) the pytest
process that decides every verdict never runs a line of student code. Its stage packages are proxies: the
first use starts a second Python, the *student process*, which imports the real packages from the
submission and runs them; the test process holds handles to the objects living there.

What crosses between the two processes, and how (``Channel``):
- Values cross as values: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, lists,
  tuples, dicts, sets and slices of values, NumPy arrays and scalars of numeric, boolean or string dtype,
  NumPy dtypes, paths, and PyTorch tensors sent to the student process. They are rebuilt from plain data on
  the receiving side (JSON and raw array bytes; nothing is ever unpickled), so a subclass sent as a value
  arrives as its plain base type and keeps none of its methods. Two kinds cross in their own way: a NumPy
  Generator as its state, kept in step on both sides message by message (so the student's
  ``isinstance(rng, np.random.Generator)`` holds and the draws are those of one generator), and a student's
  exception class as a class of the same name and builtin bases (``pytest.raises(GradcheckError)``).
- Every other object stays where it lives and crosses as a handle. The test process sees a ``Proxy``:
  attribute access, calls and operators are carried out in the student process, and their results come
  back by the same rule.

Why verdicts cannot be forged: the student process only ever answers questions (a result, an attribute, an
array); the comparisons with expected values, computed in the test process with PyTorch or by hand, happen
in the test process on values it has rebuilt itself. Nothing the student process sends can patch pytest,
the grading plugin, the helpers or NumPy in the test process, and an object that claims to equal anything
stays a handle whose equality is identity. These rules close the remaining doors:
- A proxy compares equal only to itself unless both sides are proxies, so an expected value is never
  handed to the student process to be echoed back.
- ``with proxy:`` never suppresses an exception of the test, whatever ``__exit__`` returns.
- The student process may only call, index, iterate and measure the objects the tests hand to it
  (callbacks, datasets); it cannot read their attributes, so it has no path to the test process's modules,
  and a callback's repr tells it nothing (not even its test's name).
- A test's failed check inside a callback fails the test, even if the student's code catches the error.
What stays the student process's word: anything only it can observe about itself (an array updated in place,
a graph freed, what it printed), which the tests' ``student_side`` modules look at there; every exercise is
also checked on values.

The grader starts the student process when the test process asks (``grading.launcher``), at the run's
isolation level (``grading.sandbox``): under bubblewrap it sees its own workspace, the Python installation
and NumPy, nothing of the tests or the host, and no PyTorch outside the exercises that port to it. When it
dies or hangs, the test that was waiting is charged with it, and the next use starts a fresh one; names
imported from the stage packages find their objects again in the new process. Files cross as bytes: the
test process never opens a path the student process can write (``tests.student_side.StudentFolder``).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import operator as _operator
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
import types
import weakref
from pathlib import Path, PurePath

import numpy as np

FRAME_CAP = 512 * 2**20  # bytes in one message: far above any test's arrays, far below what would exhaust memory
TEXT_CAP = 100_000  # characters of a repr, str or exception message kept
VALUE_KINDS = "biufcUS"  # NumPy dtype kinds that cross as values: booleans, numbers and strings
BUILTIN_TYPES = {t.__name__: t for t in (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, slice, object)}
ARRAY_FUNCTIONS = {"asarray": np.asarray}

# ------------------------------------------------------------------------------------------- exceptions


class CodeUnderTestGone(Exception):
    """The student process ended (crashed, exited, was stopped) while a test was waiting for it."""

    def __init__(self, returncode: int | None, reason: str | None = None):
        self.returncode, self.reason = returncode, reason
        super().__init__(self.describe("while the test waited for it"))

    def describe(self, when: str) -> str:
        from grading.sandbox import crash_message

        if self.reason:
            return f"the process running the code under test {self.reason} {when}; it was stopped"
        return crash_message(self.returncode, when).replace("the Python process",
                                                            "the Python process running the code under test")


class ProtocolError(Exception):
    """The other process hung up, or sent something that is not a well-formed message."""


class StaleObject(Exception):
    """A handle to an object of a student process that has since ended."""


class RemoteError(Exception):
    """An exception of a type that is not a Python builtin, raised in the student process; the class the
    test process sees has the student's class name (``RemoteError`` subclasses are made per name)."""


_REMOTE_ERROR_TYPES: dict[str, type] = {}
_REBUILT_BUILTINS = {name: value for name, value in vars(builtins).items()
                     if isinstance(value, type) and issubclass(value, Exception)}
_REBUILT_BUILTINS.pop("StopAsyncIteration", None)


def _remote_error_type(name: str, bases: list[str] = ()) -> type:
    """The test process's class for an exception class of the code under test: a ``RemoteError`` with the
    student's class name and the builtin exception classes it derives from (``GradcheckError(AssertionError)``
    is still an AssertionError), so ``pytest.raises(module.GradcheckError)`` works on it."""
    name = name if name.isidentifier() else "RemoteError"
    builtin = tuple(_REBUILT_BUILTINS[b] for b in bases if b in _REBUILT_BUILTINS and b != "Exception")
    key = (name, builtin)
    if key not in _REMOTE_ERROR_TYPES:
        _REMOTE_ERROR_TYPES[key] = type(name, (RemoteError, *builtin), {"__module__": "code_under_test"})
    return _REMOTE_ERROR_TYPES[key]


def _builtin_bases(cls: type) -> list[str]:
    return [base.__name__ for base in cls.__mro__[1:] if base.__module__ == "builtins"
            and issubclass(base, Exception) and base.__name__ in _REBUILT_BUILTINS]


def _short(text: str) -> str:
    return text if len(text) <= TEXT_CAP else text[:TEXT_CAP] + "... (cut)"


def describe_for_wire(exc: BaseException) -> dict:
    """An exception as plain data: type, message, constructor arguments that are values, and each chained
    exception's frames (innermost last), so the test process can say where in the student's files it came from."""
    chain, seen, current = [], set(), exc
    while current is not None and id(current) not in seen and len(chain) < 5:
        seen.add(id(current))
        frames = [[frame.f_code.co_filename, lineno, frame.f_code.co_name]
                  for frame, lineno in traceback.walk_tb(current.__traceback__)][-50:]
        chain.append({"type": type(current).__name__, "frames": frames})
        current = current.__cause__ if current.__cause__ is not None else current.__context__
    record = {
        "type": type(exc).__name__,
        "builtin": type(exc).__module__ == "builtins",
        "bases": _builtin_bases(type(exc)),
        "message": _short(str(exc)),
        "args": list(exc.args) if len(exc.args) <= 4 and all(type(a) in (str, int, float, bool) or a is None
                                                              for a in exc.args) else [],
        "chain": chain,
        # the frames and message, without Python's "Traceback (most recent call last):" headers (the grader
        # shows students places and messages, never a raw traceback)
        "text": _short("".join(line for line in traceback.format_exception(exc)
                               if not line.startswith("Traceback (most recent call last)"))),
    }
    if isinstance(exc, SyntaxError):
        record["syntax"] = [exc.msg, exc.filename, exc.lineno, exc.offset, exc.text]
    if isinstance(exc, OSError):
        record["errno"] = [exc.errno, exc.strerror]
    if isinstance(exc, SystemExit):
        record["code"] = exc.code if type(exc.code) in (int, str) or exc.code is None else str(exc.code)
    return record


def rebuild_exception(record: dict) -> BaseException:
    """The exception the test process raises for one the student process sent. Builtin types keep their
    type (a test's ``pytest.raises(ValueError)`` works); others become a ``RemoteError`` of the same name.
    ``KeyboardInterrupt`` and ``GeneratorExit`` would stop the test run itself, so they become errors."""
    name, message = str(record.get("type")), str(record.get("message", ""))
    if record.get("builtin") and name == "SyntaxError" and record.get("syntax"):
        msg, filename, lineno, offset, text = record["syntax"]
        exc: BaseException = SyntaxError(msg, (filename, lineno, offset, text))
    elif record.get("builtin") and name == "SystemExit":
        exc = SystemExit(record.get("code"))
    elif record.get("builtin") and name in _REBUILT_BUILTINS:
        cls = _REBUILT_BUILTINS[name]
        exc = None
        if issubclass(cls, OSError) and record.get("errno"):
            with contextlib.suppress(Exception):
                exc = cls(*record["errno"])
        if exc is None:
            try:
                exc = cls(*record.get("args", [])) if record.get("args") else cls(message)
            except Exception:  # noqa: BLE001 - an exception type with a constructor of its own (UnicodeError)
                exc = _remote_error_type(name)(message)
    else:
        exc = _remote_error_type(name, [str(b) for b in record.get("bases", [])])(message)
    exc.remote_chain = record.get("chain", [])
    text = record.get("text")
    if text:
        exc.add_note("Raised in the process that runs the code under test:\n" + text.rstrip())
    return exc


# ------------------------------------------------------------------------------------------- the channel


class Proxy:
    """An object that lives in the other process. Everything is forwarded over the channel, except identity,
    hashing and equality with anything that is not itself a proxy (see the module's docstring)."""

    __slots__ = ("_channel", "_id", "_generation", "_path", "_count", "__weakref__")

    def __init__(self, channel: Channel, oid: int, generation: int):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_id", oid)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_path", None)  # (module, attribute, ...) to find it again in a new process
        object.__setattr__(self, "_count", 0)  # how many times the other side has sent this handle

    def _op(self, op: str, *args, **kwargs):
        return self._channel.request(op, self, *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # protocol lookups (numpy's __array_interface__, copy's __deepcopy__...)
        value = self._op("getattr", name)
        if isinstance(value, Proxy) and value._path is None and self._path is not None:
            object.__setattr__(value, "_path", self._path + (name,))
        return value

    def __setattr__(self, name, value):
        self._op("setattr", name, value)

    def __delattr__(self, name):
        self._op("delattr", name)

    def __call__(self, *args, **kwargs):
        return self._op("call", args, kwargs)

    def __repr__(self):
        try:
            return self._op("repr")
        except Exception as exc:  # noqa: BLE001 - a repr must not raise inside pytest's own reporting
            return f"<object of the code under test; its repr raised {type(exc).__name__}>"

    def __str__(self):
        return self._op("str")

    def __format__(self, spec):
        return self._op("format", spec)

    def __eq__(self, other):
        if isinstance(other, Proxy):
            return self is other or self._op("eq", other)
        return NotImplemented  # falls back to identity: never echoes a test's value

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return id(self) >> 4  # a proxy is unique per object (Channel.proxy_for), so identity is the object's

    __array_ufunc__ = None  # like the course's Tensor: ``ndarray * proxy`` asks the proxy (its __rmul__)

    def __bool__(self):
        return self._op("bool")

    def __len__(self):
        return _typed(self._op("len"), int, "len()")

    def __iter__(self):
        return self._op("iter")

    def __next__(self):
        return self._op("next")

    def __contains__(self, item):
        return self._op("contains", item)

    def __getitem__(self, key):
        return self._op("getitem", key)

    def __setitem__(self, key, value):
        self._op("setitem", key, value)

    def __delitem__(self, key):
        self._op("delitem", key)

    def __float__(self):
        return _typed(self._op("float"), float, "float()")

    def __int__(self):
        return _typed(self._op("int"), int, "int()")

    def __index__(self):
        return _typed(self._op("index"), int, "an index")

    def __complex__(self):
        return _typed(self._op("complex"), complex, "complex()")

    def __array__(self, dtype=None, copy=None):
        array = self._op("array")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"converting the object to an array gave {type(array).__name__}")
        return array if dtype is None else array.astype(dtype)

    def __enter__(self):
        return self._op("enter")

    def __exit__(self, exc_type, exc, tb):
        self._op("exit", exc_type is not None)
        return False  # an exception of the test is never the code under test's to swallow

    def __del__(self):
        with contextlib.suppress(Exception):
            self._channel.released(self)

    def __mro_entries__(self, bases):
        raise TypeError("in authoritative grading a class of the tests cannot derive from a class of the code under "
                        "test here: define it in a module named student_side (tests/stageN/student_side.py), which "
                        "is imported beside the code under test")

    def __instancecheck__(self, instance):  # isinstance(x, ProxiedClass) when the class is a proxy
        return isinstance(instance, Proxy) and self._op("isinstance", instance)

    for _name in ("lt", "le", "gt", "ge"):
        def _compare(self, other, _op=_name):
            if isinstance(other, Proxy):
                return self._op("binary", _op, other)
            return NotImplemented
        locals()[f"__{_name}__"] = _compare

    for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
                  "lshift", "rshift"):
        def _binary(self, other, _op=_name):
            return self._op("binary", _op, other)

        def _reflected(self, other, _op=_name):
            return self._op("reflected", _op, other)

        def _inplace(self, other, _op=_name):
            return self._op("inplace", _op, other)
        locals()[f"__{_name}__"], locals()[f"__r{_name}__"], locals()[f"__i{_name}__"] = _binary, _reflected, _inplace

    for _name in ("neg", "pos", "abs", "invert"):
        def _unary(self, _op=_name):
            return self._op("unary", _op)
        locals()[f"__{_name}__"] = _unary
    del _name, _compare, _binary, _reflected, _inplace, _unary


def _typed(value, kind: type, what: str):
    if type(value) is not kind and not (kind is float and type(value) is int):
        raise TypeError(f"{what} of an object of the code under test gave {type(value).__name__}, not {kind.__name__}")
    return value


_BINARY = {name: getattr(_operator, name if name not in ("and", "or") else f"{name}_") for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift",
    "lt", "le", "gt", "ge")}
_INPLACE = {name: getattr(_operator, f"i{name}") for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift")}
_UNARY = {"neg": _operator.neg, "pos": _operator.pos, "abs": abs, "invert": _operator.invert}


def _as_value_array(obj) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    array = np.asarray(obj)
    if array.dtype.kind not in VALUE_KINDS:
        raise TypeError(f"it converts to an array of dtype {array.dtype} (Python objects, not numbers)")
    return array


class Channel:
    """One end of the connection. ``request`` sends an operation and waits for its answer, serving the other
    side's requests (callbacks) meanwhile; both sides run the same code, with different rights (``trusted``:
    this end is the test process, which lets the other side only call, index, iterate and measure)."""

    def __init__(self, sock: socket.socket, trusted: bool):
        self.sock = sock
        self.trusted = trusted
        self.generation = 0
        self.exports: dict[int, list] = {}  # handle -> [object, times sent]
        self.export_ids: dict[int, int] = {}  # id(object) -> handle
        self.next_handle = 1
        self.proxies: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # handle -> Proxy
        self.releases: list[list[int]] = []  # [handle, count] of proxies gone, sent with the next message
        self.swallowed: BaseException | None = None  # a test's failure inside a callback (see serve_one)
        self.depth = 0
        self.guard = None  # the test process's StudentProcess.request: restarts, and charges a crash to the test
        self.lent: dict[int, np.random.Generator] = {}  # the test process's generators the other side has a copy of
        self.borrowed: dict[int, np.random.Generator] = {}  # the student process's copies of those
        self.named: set[int] = set()  # the keys of the generators the test process's last message carried

    # ---------------------------------------------------------------- framing
    def send(self, message: dict, buffers: list[bytes]) -> None:
        self._states_out(message, buffers)
        if self.releases:
            message["rel"], self.releases = self.releases, []
        header = json.dumps(message, separators=(",", ":")).encode()
        sizes = [len(b) for b in buffers]
        head = json.dumps(sizes).encode()
        total = 8 + len(head) + len(header) + sum(sizes)
        if total > FRAME_CAP:
            raise ValueError(f"a message of {total} bytes is over the {FRAME_CAP} bytes a message may have")
        self.sock.sendall(b"".join([struct.pack("<II", len(head), len(header)), head, header, *buffers]))

    @property
    def sock(self) -> socket.socket:
        return self._sock

    @sock.setter
    def sock(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb", buffering=1 << 16)  # one system call for most messages, not four

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
            self._sock.close()

    def _read(self, n: int) -> bytearray:
        data = bytearray(n)
        if self._reader.readinto(data) != n:
            raise ProtocolError("the other process closed the connection")
        return data

    def recv(self) -> tuple[dict, list[bytearray]]:
        try:
            return self._recv()
        except (ValueError, TypeError, KeyError, RecursionError, struct.error) as exc:
            raise ProtocolError(f"a malformed message ({type(exc).__name__})") from None

    def _recv(self) -> tuple[dict, list[bytearray]]:
        head_len, header_len = struct.unpack("<II", self._read(8))
        if head_len + header_len > FRAME_CAP:
            raise ValueError("a message over the size cap")
        sizes = json.loads(self._read(head_len))
        if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes) or sum(sizes) > FRAME_CAP:
            raise ValueError("a malformed message")
        message = json.loads(self._read(header_len))
        buffers = [self._read(size) for size in sizes]
        if not isinstance(message, dict):
            raise ValueError("a malformed message")
        for handle, count in message.pop("rel", []):
            self._release_export(int(handle), int(count))
        self._states_in(message, buffers)
        return message, buffers

    # ---------------------------------------------------------------- random generators
    # A NumPy Generator crosses as a value (its bit generator's state), so that the student's
    # ``isinstance(rng, np.random.Generator)`` holds; every message then carries the state of each generator
    # lent or borrowed, and the receiver adopts it: the two copies act as the one object they stand for, draw
    # for draw, whichever process draws next.
    # The test process forgets what it lent at the start of each test (``forget_generators``); the student
    # process answers for the generators the last message named.
    def lend(self, generator: np.random.Generator) -> int:
        for key, lent in self.lent.items():
            if lent is generator:
                return key
        key, self.next_handle = self.next_handle, self.next_handle + 1
        self.lent[key] = generator
        return key

    def borrowed_generator(self, key: int, state: dict) -> np.random.Generator:
        generator = self.borrowed.get(key)
        if generator is None:
            bit_generator = getattr(np.random, str(state["bit_generator"]))
            if not (isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator)):
                raise ValueError(f"a bit generator named {state['bit_generator']!r}")
            generator = self.borrowed[key] = np.random.Generator(bit_generator())
        generator.bit_generator.state = state
        return generator

    def _generators(self) -> dict[int, np.random.Generator]:
        return self.lent if self.trusted else {key: self.borrowed[key] for key in self.named if key in self.borrowed}

    def _states_out(self, message: dict, buffers: list) -> None:
        generators = self._generators()
        if generators:
            message["rng"] = [[key, self.encode(gen.bit_generator.state, buffers)] for key, gen in generators.items()]

    def _states_in(self, message: dict, buffers: list) -> None:
        states = {int(key): state for key, state in message.get("rng", [])}
        if not self.trusted:
            self.named = set(states)
        for key, state in states.items():
            generator = self.lent.get(key) if self.trusted else self.borrowed.get(key)
            if generator is not None:
                generator.bit_generator.state = self.decode(state, buffers)

    # ---------------------------------------------------------------- values and handles
    def export(self, obj) -> int:
        handle = self.export_ids.get(id(obj))
        if handle is None:
            handle, self.next_handle = self.next_handle, self.next_handle + 1
            self.exports[handle] = [obj, 0]
            self.export_ids[id(obj)] = handle
        self.exports[handle][1] += 1
        return handle

    def _release_export(self, handle: int, count: int) -> None:
        entry = self.exports.get(handle)
        if entry is not None:
            entry[1] -= count
            if entry[1] <= 0:
                del self.exports[handle]
                self.export_ids.pop(id(entry[0]), None)

    def released(self, proxy: Proxy) -> None:
        if proxy._generation == self.generation and proxy._count:
            self.releases.append([proxy._id, proxy._count])

    def proxy_for(self, handle: int) -> Proxy:
        proxy = self.proxies.get(handle)
        if proxy is None:
            proxy = Proxy(self, handle, self.generation)
            self.proxies[handle] = proxy
        object.__setattr__(proxy, "_count", proxy._count + 1)
        return proxy

    def encode(self, value, buffers: list) -> object:
        kind = type(value)
        if value is None or kind is bool or kind is int or kind is str:
            return value if kind is not int or abs(value) < 2**53 else {"t": "i", "v": str(value)}
        if kind is float:
            return {"t": "f", "v": repr(value)}
        if kind is complex:
            return {"t": "c", "v": [repr(value.real), repr(value.imag)]}
        if kind in (list, tuple, set, frozenset):
            return {"t": kind.__name__, "v": [self.encode(item, buffers) for item in value]}
        if kind is dict:
            return {"t": "dict", "v": [[self.encode(k, buffers), self.encode(v, buffers)] for k, v in value.items()]}
        if kind is slice:
            return {"t": "slice", "v": [self.encode(x, buffers) for x in (value.start, value.stop, value.step)]}
        if value is Ellipsis:
            return {"t": "..."}
        if isinstance(value, PurePath):
            return {"t": "path", "v": str(value)}
        if kind is np.random.Generator:
            return {"t": "rng", "k": self.lend(value), "state": self.encode(value.bit_generator.state, buffers)}
        if kind is bytes:
            buffers.append(value)
            return {"t": "bytes", "b": len(buffers) - 1}
        if kind is Proxy and value._channel is self:
            self._fresh(value)
            return {"t": "yours", "h": value._id}
        if kind is np.ndarray and value.dtype.kind in VALUE_KINDS:
            buffers.append(np.ascontiguousarray(value).tobytes())
            return {"t": "array", "d": value.dtype.str, "s": list(value.shape), "b": len(buffers) - 1}
        if isinstance(value, np.generic) and value.dtype.kind in VALUE_KINDS:
            buffers.append(value.tobytes())
            return {"t": "scalar", "d": value.dtype.str, "b": len(buffers) - 1}
        if kind is np.dtype or isinstance(value, np.dtype):
            if value.kind in VALUE_KINDS:
                return {"t": "dtype", "v": value.str}
        if isinstance(value, type):
            if issubclass(value, np.generic) and np.dtype(value).kind in VALUE_KINDS and value is np.dtype(value).type:
                return {"t": "scalartype", "v": np.dtype(value).str}
            if BUILTIN_TYPES.get(value.__name__) is value:
                return {"t": "builtintype", "v": value.__name__}
            if issubclass(value, BaseException) and not self.trusted:
                if value.__module__ == "builtins":
                    return {"t": "builtintype", "v": value.__name__}
                return {"t": "exctype", "v": value.__name__, "bases": _builtin_bases(value)}
        torch = sys.modules.get("torch")
        if self.trusted and torch is not None and kind is torch.Tensor and value.device.type == "cpu":
            # the tests' tensors reach the student's PyTorch code (stage 4's port) as values
            array = value.detach().numpy()
            buffers.append(np.ascontiguousarray(array).tobytes())
            return {"t": "tensor", "d": array.dtype.str, "s": list(array.shape), "b": len(buffers) - 1,
                    "g": bool(value.requires_grad)}
        if torch is not None and kind is torch.dtype:
            return {"t": "torchdtype", "v": str(value).removeprefix("torch.")}
        return {"t": "mine", "h": self.export(value)}

    def _fresh(self, proxy: Proxy) -> None:
        if proxy._generation != self.generation:
            self.refind(proxy)

    def decode(self, data, buffers: list) -> object:
        if data is None or type(data) in (bool, int, str):
            return data
        if type(data) is not dict:
            raise ValueError("a malformed value")
        tag, v = data.get("t"), data.get("v")
        if tag == "i":
            return int(v)
        if tag == "f":
            return float(v)
        if tag == "c":
            return complex(float(v[0]), float(v[1]))
        if tag in ("list", "tuple", "set", "frozenset"):
            return BUILTIN_TYPES[tag](self.decode(item, buffers) for item in v)
        if tag == "dict":
            return {self.decode(k, buffers): self.decode(x, buffers) for k, x in v}
        if tag == "slice":
            return slice(*(self.decode(x, buffers) for x in v))
        if tag == "...":
            return Ellipsis
        if tag == "path":
            return Path(str(v))
        if tag == "rng":
            return self.borrowed_generator(int(data["k"]), self.decode(data["state"], buffers))
        if tag == "bytes":
            return bytes(buffers[data["b"]])
        if tag in ("array", "scalar", "tensor"):
            dtype = np.dtype(data["d"])
            if dtype.kind not in VALUE_KINDS:
                raise ValueError(f"an array of dtype {dtype}")
            raw = buffers[data["b"]]
            if tag == "scalar":
                return np.frombuffer(raw, dtype=dtype, count=1)[0]
            shape = tuple(int(n) for n in data["s"])
            array = np.frombuffer(raw, dtype=dtype).reshape(shape) if raw else np.zeros(shape, dtype)
            if tag == "tensor":
                import torch
                return torch.from_numpy(array).requires_grad_(bool(data.get("g")))
            return array
        if tag == "dtype":
            dtype = np.dtype(v)
            if dtype.kind not in VALUE_KINDS:
                raise ValueError(f"dtype {dtype}")
            return dtype
        if tag == "scalartype":
            return np.dtype(v).type
        if tag == "builtintype":
            return BUILTIN_TYPES.get(v) or _REBUILT_BUILTINS[v]
        if tag == "exctype" and self.trusted:
            return _remote_error_type(str(v), [str(b) for b in data.get("bases", [])])
        if tag == "torchdtype":
            import torch
            dtype = getattr(torch, v)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(v)
            return dtype
        if tag == "yours":
            entry = self.exports.get(int(data["h"]))
            if entry is None:
                raise StaleObject("an object that no longer exists")
            return entry[0]
        if tag == "mine":
            return self.proxy_for(int(data["h"]))
        raise ValueError(f"a value tagged {tag!r}")

    # ---------------------------------------------------------------- requests
    def request(self, op: str, target=None, *args, **kwargs):
        if self.guard is not None:
            return self.guard(op, target, *args, **kwargs)
        return self.request_raw(op, target, *args, **kwargs)

    def request_raw(self, op: str, target=None, *args, **kwargs):
        if target is not None and isinstance(target, Proxy):
            self._fresh(target)
        buffers: list = []
        message = {"k": "req", "op": op, "target": self.encode(target, buffers),
                   "args": self.encode(list(args), buffers), "kwargs": self.encode(kwargs, buffers)}
        self.send(message, buffers)
        return self.wait()

    def wait(self):
        self.depth += 1
        try:
            while True:
                message, buffers = self.recv()
                kind = message.get("k")
                if kind == "ret":
                    try:
                        result = self.decode(message.get("v"), buffers)
                    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
                        raise ProtocolError(f"a malformed value ({type(exc).__name__})") from None
                    break
                if kind == "err":
                    raise rebuild_exception(message.get("e") or {})
                if kind == "req":
                    self.serve_one(message, buffers)
                    continue
                raise ProtocolError("a malformed message")
        finally:
            self.depth -= 1
        if self.depth == 0 and self.swallowed is not None:
            swallowed, self.swallowed = self.swallowed, None
            raise swallowed
        return result

    def serve_one(self, message: dict, buffers: list) -> None:
        try:
            target = self.decode(message.get("target"), buffers)
            args = self.decode(message.get("args"), buffers)
            kwargs = self.decode(message.get("kwargs"), buffers)
            result = self.perform(str(message.get("op")), target, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure is the other side's answer
            if self.trusted and not isinstance(exc, Exception):
                raise  # the test's own time limit: never handed to the code under test
            if self.trusted and isinstance(exc, AssertionError) and self.swallowed is None:
                self.swallowed = exc  # a test's check failed inside a callback: it fails the test, caught or not
            self.send({"k": "err", "e": describe_for_wire(exc)}, [])
            return
        buffers = []
        try:
            encoded = self.encode(result, buffers)
        except BaseException as exc:  # noqa: BLE001
            self.send({"k": "err", "e": describe_for_wire(exc)}, [])
            return
        self.send({"k": "ret", "v": encoded}, buffers)

    CALLBACK_OPS = {"call", "len", "getitem", "iter", "next", "contains", "bool", "float", "int", "index", "array",
                    "repr", "str"}

    def perform(self, op: str, target, args: list, kwargs: dict):
        if self.trusted and op not in self.CALLBACK_OPS:
            raise PermissionError(f"the code under test may not use {op!r} on an object of the tests")
        if op == "import":
            return importlib.import_module(args[0])
        if op == "getattr":
            return getattr(target, args[0])
        if op == "setattr":
            return setattr(target, args[0], args[1])
        if op == "delattr":
            return delattr(target, args[0])
        if op == "call":
            return target(*args[0], **args[1])
        if op == "binary":
            return _BINARY[args[0]](target, args[1])
        if op == "reflected":
            return _BINARY[args[0]](args[1], target)
        if op == "inplace":
            return _INPLACE[args[0]](target, args[1])
        if op == "unary":
            return _UNARY[args[0]](target)
        if op == "eq":
            return bool(target == args[0])
        if op == "bool":
            return bool(target)
        if op == "len":
            return len(target)
        if op == "iter":
            return iter(target)
        if op == "next":
            return next(target)
        if op == "contains":
            return args[0] in target
        if op == "getitem":
            return target[args[0]]
        if op == "setitem":
            target[args[0]] = args[1]
            return None
        if op == "delitem":
            del target[args[0]]
            return None
        if op in ("float", "int", "complex", "index"):
            return {"float": float, "int": int, "complex": complex, "index": _operator.index}[op](target)
        if op == "array":
            return _as_value_array(target)
        if op in ("repr", "str") and self.trusted:
            return "<an object of the tests>"  # a callback's repr names its test: no hint to the code under test
        if op == "repr":
            return _short(repr(target))
        if op == "str":
            return _short(str(target))
        if op == "format":
            return _short(format(target, args[0]))
        if op == "enter":
            return target.__enter__()
        if op == "exit":
            failed = args[0]
            error = RuntimeError("an exception in the test") if failed else None
            target.__exit__(type(error) if failed else None, error, None)
            return None
        if op == "isinstance":
            return isinstance(args[0], target)
        if op == "spec":
            return is_package(args[0])
        if op == "refuse":
            return refuse_imports(args[0])
        raise ValueError(f"unknown operation {op!r}")

    def refind(self, proxy: Proxy) -> None:
        """Point a proxy of an ended student process at the same name in the current one."""
        if proxy._path is None:
            raise StaleObject("this object belonged to a run of the code under test that has ended (it crashed "
                              "or was stopped in an earlier test)")
        module, *attributes = proxy._path
        fresh = self.request("import", None, module)
        for name in attributes:
            fresh = self.request("getattr", fresh, name)
        object.__setattr__(proxy, "_id", fresh._id)
        object.__setattr__(proxy, "_generation", self.generation)
        object.__setattr__(proxy, "_count", fresh._count)
        object.__setattr__(fresh, "_count", 0)
        self.proxies[fresh._id] = proxy

    def serve_forever(self) -> None:
        """The student process's loop: answer requests until the test process hangs up."""
        while True:
            try:
                message, buffers = self.recv()
            except ProtocolError:
                return
            if message.get("k") != "req":
                raise ProtocolError("a malformed message")
            self.serve_one(message, buffers)


# ------------------------------------------------------------------------------------------- the test process


class StudentProcess:
    """The connection to the student process, which the grader starts on first use and again after it has
    ended (``grading.launcher``): the test process only asks."""

    def __init__(self, launcher):
        self.launcher = launcher
        self.channel: Channel | None = None
        self.alive = False
        self.generation = 0
        self.torch = False  # whether the current test's exercise may use PyTorch (its port)
        self.running_torch = False  # whether the running student process has it
        self.torch_modules: frozenset[str] = frozenset()  # the files of those exercises, as module names
        self.refused: dict[str, str] = {}  # module -> why its import is refused (grading.plugin.HungImports)

    def allow_torch(self, allowed: bool) -> None:
        """(Before each test.) PyTorch is in the student process only for the exercises that port to it: a
        change restarts the process, and names imported from the stage packages find their objects again."""
        self.torch = allowed

    def connect(self) -> Channel:
        if self.alive and self.channel is not None and self.running_torch == self.torch:
            return self.channel
        self.stop()
        self.start()
        return self.channel

    def start(self) -> None:
        ours = self.launcher.start(torch=self.torch)
        self.alive, self.running_torch = True, self.torch
        self.generation += 1
        channel = self.channel
        if channel is None:
            channel = self.channel = Channel(ours, trusted=True)
            channel.guard = self.request
        else:
            channel.sock = ours
            channel.exports.clear()
            channel.export_ids.clear()
            channel.proxies = weakref.WeakValueDictionary()
            channel.releases.clear()
        channel.generation = self.generation
        if self.refused:
            channel.request_raw("refuse", None, self.refused)

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError, ValueError):
                self.launcher.stop()
        self.alive = False
        if self.channel is not None:
            self.channel.close()

    def returncode(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return self.launcher.returncode(wait=2.0)
        return None

    def where(self) -> list[list]:
        """Where the student process is now, innermost frame last."""
        with contextlib.suppress(OSError, ValueError):
            return self.launcher.where()
        return []

    def request(self, op: str, target=None, *args, **kwargs):
        channel = self.connect()
        try:
            return channel.request_raw(op, target, *args, **kwargs)
        except (ProtocolError, ConnectionError) as exc:
            reason = f"sent {str(exc).removeprefix('a ')}" if "malformed" in str(exc) else None
            gone = CodeUnderTestGone(None if reason else self.returncode(), reason)
            self.stop()
            raise gone from None
        except BaseException as exc:
            if not isinstance(exc, Exception) and not hasattr(exc, "remote_chain"):
                # The test's time limit struck while it waited (not a SystemExit the student's code raised): say
                # where the student process was, as a traceback would in one process, then stop it.
                exc.remote_chain = [{"type": type(exc).__name__, "frames": self.where()}]
                self.stop()
            raise

    def refuse(self, module: str, why: str) -> None:
        """Make importing ``module`` fail at once in this and every later student process (its import hung)."""
        self.refused[module] = why
        if self.alive:
            self.request("refuse", None, self.refused)


STUDENT: StudentProcess | None = None


def student_process() -> StudentProcess:
    if STUDENT is None:
        raise RuntimeError("the student process is not configured")
    return STUDENT


class RemoteModule(types.ModuleType):
    """A stage module (or a test module that must run beside the student's code) in the student process."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _student_request("getattr", _module_handle(self), name)
        if isinstance(value, Proxy) and value._path is None:
            object.__setattr__(value, "_path", (self.__name__, name))
        return value

    def __setattr__(self, name, value):
        if (name.startswith("__") and name.endswith("__")) or isinstance(value, RemoteModule):
            super().__setattr__(name, value)  # the import system's own bookkeeping, and submodules
        else:
            _student_request("setattr", _module_handle(self), name, value)

    def __delattr__(self, name):
        _student_request("delattr", _module_handle(self), name)

    def __dir__(self):
        return list(_student_request("call", _student_request("getattr", _module_handle(self), "__dir__"), (), {}))


def _module_handle(module: RemoteModule) -> Proxy:
    handle = module.__dict__.get("_remote_handle")
    if handle is None or handle._generation != student_process().generation:
        handle = _student_request("import", None, module.__name__)
        object.__setattr__(handle, "_path", (module.__name__,))
        types.ModuleType.__setattr__(module, "_remote_handle", handle)
    return handle


def _student_request(op, target=None, *args):
    return student_process().request(op, target, *args)


class RemoteLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = RemoteModule(spec.name)
        if spec.submodule_search_locations is not None:
            types.ModuleType.__setattr__(module, "__path__", [])
        return module

    def exec_module(self, module):
        if module.__name__ in student_process().torch_modules:  # the port's file imports torch at its top
            student_process().allow_torch(True)
        _module_handle(module)  # imports it in the student process now: an import error fails the import here


class RemoteFinder(importlib.abc.MetaPathFinder):
    """In the test process: the stage packages, and the test modules that must run beside them, are found in
    the student process. ``solutions`` is not importable here either."""

    def __init__(self, packages: tuple[str, ...]):
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if name == "solutions":
            raise ModuleNotFoundError("the solutions/ folder cannot be imported by the code under test", name=name)
        if top not in self.packages and not is_student_side(name):
            return None
        is_package = _student_request("spec", None, name)
        return importlib.machinery.ModuleSpec(name, RemoteLoader(), is_package=is_package)


def is_package(name: str) -> bool:
    """(In the student process.) Whether ``name`` names a package; raises ModuleNotFoundError if it names nothing."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return spec.submodule_search_locations is not None


def is_student_side(name: str) -> bool:
    """Test modules named ``student_side`` (``tests/student_side.py``, ``tests/stage2/student_side.py``) hold what
    the tests build on the student's classes (a subclass of their ``Module``) or run beside their code (a
    command-line run): they are imported where the student's code is, never into the test process."""
    return name.startswith("tests.") and name.rpartition(".")[2] == "student_side"


def install(settings: dict, packages: tuple[str, ...]) -> None:
    """(In the test process.) Make the stage packages proxies of the student process's. ``settings``, from the
    grader's runner: ``control_fd``, the socket on which the grader starts student processes, and
    ``torch_modules``, the modules of the exercises whose code may import PyTorch."""
    global STUDENT
    from grading.launcher import LauncherClient  # noqa: PLC0415

    STUDENT = StudentProcess(LauncherClient(int(settings["control_fd"])))
    STUDENT.torch_modules = frozenset(settings.get("torch_modules", ()))
    sys.meta_path.insert(0, RemoteFinder(packages))
    if sys.platform.startswith("linux"):  # at level "none" a student process of the same uid could read our memory
        with contextlib.suppress(Exception):
            import ctypes  # noqa: PLC0415

            ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


def forget_generators() -> None:
    """(In the test process, before each test.) The generators lent so far belong to finished tests."""
    if STUDENT is not None and STUDENT.channel is not None:
        STUDENT.channel.lent.clear()


def shutdown() -> None:
    if STUDENT is not None:
        STUDENT.stop()


# ------------------------------------------------------------------------------------------- the student process


class ImportBlocked(ImportError):
    """(In the student process.) Importing this module hung earlier in the run; it is not tried again."""


class RefusedImports(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.refusals: dict[str, str] = {}

    def find_spec(self, name, path=None, target=None):
        if name in self.refusals:
            raise ImportBlocked(self.refusals[name], name=name)
        return None


REFUSED = RefusedImports()


def refuse_imports(refusals: dict[str, str]) -> None:
    REFUSED.refusals.update(refusals)
    if REFUSED not in sys.meta_path:
        sys.meta_path.insert(0, REFUSED)


def serve(fd: int, homes_json: str, stack_fd: int) -> None:
    """(The student process's entry point.) Import the stage packages from the folders chosen, then answer.
    SIGUSR1 makes it write where it is to ``stack_fd``, a file of the grader's, for a test that ran out of time."""
    import faulthandler

    faulthandler.register(signal.SIGUSR1, file=os.fdopen(stack_fd, "w"), all_threads=False)  # noqa: SIM115
    for variable in ("HOME", "TMPDIR"):  # in a fresh private scratch folder
        os.makedirs(os.environ[variable], exist_ok=True)
    from grading.stage_imports import StagePackageFinder

    homes = {name: Path(folder) for name, folder in json.loads(homes_json).items()}
    sys.meta_path.insert(0, StagePackageFinder(homes))
    sock = socket.socket(fileno=fd)
    channel = Channel(sock, trusted=False)
    channel.serve_forever()
    sys.stdout.flush()
    os._exit(0)

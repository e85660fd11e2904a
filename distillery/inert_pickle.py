"""Read a pickle as inert data: the values it describes, without running it.

`read_inert_pickle` decodes the opcodes with pickletools and a small stack machine assembles
plain values (str, bytes, numbers, tuples, lists, dicts, sets). Every object the pickle would
build by importing a name and calling it stays an `Inert` record of that name, its arguments
and its state: no module is imported, no callable is called, there is no `find_class`. An
opcode it does not know is refused. `inert_array` and `inert_state` read numpy arrays and
object attributes out of such records. Used for the class names and target scaler of an
AutoMM predictor's df_preprocessor.pkl (distillery/automm.py), which exist nowhere else.
"""

from __future__ import annotations

import pickletools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class InertPickleError(ValueError):
    """The pickle holds something the inert reader does not read; nothing was run."""


@dataclass(eq=False)
class Inert:
    """What a pickle would build by importing `name` and calling it: only the name, the
    arguments and the state, as plain data. Nothing is imported or called."""

    name: str
    args: tuple[Any, ...] = ()
    state: Any = None
    # What a dict or list subclass would get through __setitem__ / append.
    items: dict[Any, Any] = field(default_factory=dict)
    appended: list[Any] = field(default_factory=list)


# Opcodes that push one plain value taken from the opcode's own argument.
_LITERALS = {
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
    "STRING", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BININT", "BININT1", "BININT2", "INT",
    "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def read_inert_pickle(data: bytes) -> Any:
    """The value a pickle describes, with every object it would build replaced by an `Inert`
    record (pickletools decodes the opcodes; a small stack machine assembles plain values).
    This is not unpickling: no module is imported, no callable is called, no `find_class`."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name in _LITERALS:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in ("PROTO", "FRAME"):
            continue
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            items = tuple(stack[-size:])
            del stack[-size:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            stack.append({"EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_SET": set}[name]())
        elif name in ("LIST", "DICT", "FROZENSET"):
            items = pop_mark()
            pairs = dict(zip(items[::2], items[1::2], strict=True)) if name == "DICT" else None
            stack.append(items if name == "LIST" else pairs if pairs is not None else items)
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else pop_mark()
            target = stack[-1]
            (target.appended if isinstance(target, Inert) else target).extend(items)
        elif name == "ADDITEMS":
            items = pop_mark()
            stack[-1].update(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = stack[-2:] if name == "SETITEM" else pop_mark()
            if name == "SETITEM":
                del stack[-2:]
            target = stack[-1]
            pairs = zip(items[::2], items[1::2], strict=True)
            (target.items if isinstance(target, Inert) else target).update(pairs)
        elif name == "STACK_GLOBAL":
            qualname, module = stack.pop(), stack.pop()
            stack.append(Inert(f"{module}.{qualname}"))
        elif name == "GLOBAL":
            stack.append(Inert(str(arg).replace(" ", ".")))
        elif name in ("REDUCE", "NEWOBJ"):
            args, callable_ = stack.pop(), stack.pop()
            stack.append(Inert(callable_.name, tuple(args)))
        elif name == "NEWOBJ_EX":
            _, args, cls = stack.pop(), stack.pop(), stack.pop()
            stack.append(Inert(cls.name, tuple(args)))
        elif name == "BUILD":
            state = stack.pop()
            stack[-1].state = state
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "STOP":
            return stack.pop()
        else:
            raise InertPickleError(f"opcode {name} is not read")
    raise InertPickleError("no STOP opcode")


def inert_array(value: Any) -> list[Any]:
    """The items of a 1-d numpy array as a pickle describes it (numpy's _reconstruct with a
    (version, shape, dtype, fortran, data) state): object arrays hold their items, others raw
    bytes of the dtype's code (e.g. '<f8', '<U14')."""
    if not isinstance(value, Inert) or not value.name.endswith("multiarray._reconstruct"):
        raise InertPickleError("not a numpy array")
    _, shape, dtype, _, raw = value.state
    if not isinstance(dtype, Inert) or not dtype.args or len(shape) != 1:
        raise InertPickleError("not a 1-d numpy array")
    code = str(dtype.args[0])
    if code == "O8" and isinstance(raw, list):
        return list(raw)
    if not re.fullmatch(r"[fiuU][0-9]{1,3}", code) or not isinstance(raw, bytes):
        raise InertPickleError(f"numpy dtype {code!r} is not read")
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else "|"
    order = order if order in ("<", ">") else "="
    return np.frombuffer(raw, dtype=np.dtype(order + code)).tolist()


def inert_state(value: Any, field: str) -> Any:
    if not isinstance(value, Inert) or not isinstance(value.state, dict):
        raise InertPickleError(f"no {field}")
    return value.state.get(field)

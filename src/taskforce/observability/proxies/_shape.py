"""The protocols a proxy exposes: exactly those of the object it wraps, chosen at wrap time.

wrapt's ``BaseObjectProxy`` defines the container and context manager methods
(``__len__``, ``__contains__``, ``__getitem__``, ``__enter__``, ``__aenter__``, ...) on
every proxy, and none of ``__call__``, ``__iter__``, ``__next__``, ``__aiter__``,
``__anext__``, ``__await__`` (``AutoObjectProxy`` adds those, with a new class per
instance; wrapt's docs, "hasattr on ObjectProxy and pre-defined dunder methods", and
GrahamDumpleton/wrapt#91). Python looks these up on the type, so a proxy of a callable
tool was not callable, one of an iterable registry not iterable, and ``hasattr(proxy,
"__aenter__")`` or ``isinstance(proxy, collections.abc.Sized)``-style checks by
attribute answered yes for an object that has no such method.

So ``ObservingProxy`` hides the methods of :data:`MASKED` behind :class:`Absent`
(attribute reads miss, and the operation raises the ``TypeError`` the plain object
raises), and :func:`shaped` picks, once per proxy class and wrapped type, a subclass
that gives back those the wrapped type has and adds those of :data:`ADDED` it has. A
proxy of an object with none of them is of the proxy class itself; nothing here runs on
a call through a proxy.

Left as wrapt has them: the arithmetic and conversion methods and ``__bool__`` (hiding
one would make Python raise where it falls back: to the other operand's reflected
method, or to true), and ``__copy__``/``__reduce_ex__`` (refused on purpose). Where
Python falls back from a missing method to another one the object has (``in`` and
``reversed()`` to iteration and ``__getitem__``), the proxy keeps the method and
forwards: the operation works as on the object, and only ``hasattr`` of that one name
differs. ``isinstance`` against an ABC that checks the type's methods
(``collections.abc.Sized``) still sees wrapt's, which no attribute can hide.

Hazard: holds two process-wide caches of classes, bounded.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import wrapt

__all__ = ["ADDED", "MASKED", "Absent", "AbsentProtocolError", "shaped"]

#: The methods wrapt defines on every proxy that a proxy has only if its object has them.
MASKED = (
    "__len__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__reversed__",
    "__iter__",
    "__enter__",
    "__exit__",
    "__aenter__",
    "__aexit__",
)
#: The methods wrapt leaves out that a proxy has if its object has them.
ADDED = ("__call__", "__next__", "__aiter__", "__anext__", "__await__", "__length_hint__")

# A method Python falls back from, to any of these the object has (``iter()`` of an object
# with ``__getitem__`` only iterates by index; ``in`` iterates).
_FALLS_BACK_TO = {
    "__iter__": ("__iter__", "__getitem__"),
    "__contains__": ("__contains__", "__iter__", "__getitem__"),
    "__reversed__": ("__reversed__", "__getitem__"),
}
_MISSING: Any = object()
# Shaped classes, by (proxy class, wrapped type); more and the cache starts over.
_MAX_TYPES = 1024


class AbsentProtocolError(AttributeError, TypeError):
    """A protocol method the wrapped object lacks, used through its proxy.

    A ``TypeError`` with the message Python gives for the plain object (``len()`` of
    it, ``with`` on it), and an ``AttributeError`` so that ``hasattr``/``getattr`` on
    the proxy go on to the wrapped object, as wrapt's ``__getattr__`` does for any name
    the proxy lacks, and miss there too.
    """


def _lookup(kind: type, name: str) -> Any:
    """``name`` in the dicts of ``kind``'s MRO, as Python finds a special method; or _MISSING."""
    for klass in kind.__mro__:
        found = klass.__dict__.get(name, _MISSING)
        if found is not _MISSING:
            return found
    return _MISSING


def _with(wrapped: Any) -> None:
    with wrapped:
        pass


def _async_with(wrapped: Any) -> None:
    async def enter() -> None:
        async with wrapped:
            pass

    coroutine = enter()
    try:
        coroutine.send(None)  # fails before its first await: the lookup of the protocol
    finally:
        coroutine.close()


# How the plain object fails without the method: each fails on looking the method up,
# before any of the object's code runs.
_FAILING: dict[str, Callable[[Any], object]] = {
    "__len__": len,
    "__getitem__": lambda wrapped: wrapped[0],
    "__setitem__": lambda wrapped: operator.setitem(wrapped, 0, None),
    "__delitem__": lambda wrapped: operator.delitem(wrapped, 0),
    "__contains__": lambda wrapped: 0 in wrapped,
    "__reversed__": reversed,
    "__iter__": iter,
    "__enter__": _with,
    "__exit__": _with,
    "__aenter__": _async_with,
    "__aexit__": _async_with,
}


class Absent:
    """A method of :data:`MASKED` on a proxy whose object lacks it (see the module doc)."""

    __slots__ = ("_name",)

    def __init__(self) -> None:
        """Make the mask; its name is the attribute it is assigned to."""
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, proxy: Any, owner: type | None = None) -> Any:
        name = self._name
        if proxy is None:  # read on the class: missing, as on the object's type
            kind = getattr(owner, "__name__", "?")
            raise AttributeError(f"type object {kind!r} has no attribute {name!r}")
        wrapped = proxy.__wrapped__
        if not _has(type(wrapped), name):
            try:
                _FAILING[name](wrapped)
            except TypeError as exc:  # Python's own words for the plain object
                raise AbsentProtocolError(*exc.args) from None
        # the type gained the method after the proxy was made: its shape stays as it was
        kind = type(wrapped).__name__
        raise AbsentProtocolError(f"{kind!r} had no {name} when its proxy was made")


def _enter(proxy: Any) -> Any:
    # The body of the ``with`` gets the proxy, not the raw object, when the object
    # returns itself: what it does there is observed.
    wrapped = proxy.__wrapped__
    entered = type(wrapped).__enter__(wrapped)
    return proxy if entered is wrapped else entered


async def _aenter(proxy: Any) -> Any:
    # Same as _enter, for ``async with``.
    wrapped = proxy.__wrapped__
    entered = await type(wrapped).__aenter__(wrapped)
    return proxy if entered is wrapped else entered


def _call(proxy: Any, /, *args: Any, **kwargs: Any) -> Any:
    return proxy.__wrapped__(*args, **kwargs)


def _iter(proxy: Any) -> Any:
    return iter(proxy.__wrapped__)


def _next(proxy: Any) -> Any:
    return next(proxy.__wrapped__)


def _aiter(proxy: Any) -> Any:
    return aiter(proxy.__wrapped__)


def _anext(proxy: Any) -> Any:
    return anext(proxy.__wrapped__)


def _await(proxy: Any) -> Any:
    wrapped = proxy.__wrapped__
    return type(wrapped).__await__(wrapped)


def _length_hint(proxy: Any) -> Any:
    wrapped = proxy.__wrapped__
    return type(wrapped).__length_hint__(wrapped)


#: What a shaped class gives back or adds: wrapt's own method, or a forwarder above.
_GIVEN: dict[str, Any] = {
    **{name: wrapt.BaseObjectProxy.__dict__[name] for name in MASKED if name != "__iter__"},
    "__enter__": _enter,
    "__aenter__": _aenter,
    "__iter__": _iter,
    "__call__": _call,
    "__next__": _next,
    "__aiter__": _aiter,
    "__anext__": _anext,
    "__await__": _await,
    "__length_hint__": _length_hint,
}
_BY_SHAPE: dict[tuple[type, tuple[tuple[str, bool], ...]], type] = {}
_BY_TYPE: dict[tuple[type, type], type] = {}


def _has(kind: type, name: str) -> bool:
    """Whether the operation of ``name`` works on a ``kind`` (by a method it falls back to too)."""
    return any(
        _lookup(kind, given) not in (_MISSING, None) for given in _FALLS_BACK_TO.get(name, (name,))
    )


def _shape(kind: type) -> tuple[tuple[str, bool], ...]:
    """The managed methods ``kind`` has: ``(name, True)``, or ``(name, False)`` set to None."""
    shape = []
    for name in (*MASKED, *ADDED):
        if _lookup(kind, name) is None:  # Python's "no such operation": kept as it is
            shape.append((name, False))
        elif _has(kind, name):
            shape.append((name, True))
    return tuple(shape)


def shaped(cls: type, wrapped: object) -> type:
    """The class of a ``cls`` proxy of ``wrapped``: ``cls``, or its subclass of the same name.

    Args:
        cls: An ``ObservingProxy`` class. A method of :data:`MASKED` or :data:`ADDED` it
            defines itself stays as it is; one it maps in ``_self_protocols`` replaces
            the default when the object has that method.
        wrapped: The object it will wrap.

    Returns:
        ``cls`` when ``wrapped``'s type has none of the methods (the usual case), else a
        subclass, made once per set of methods, that has exactly those.
    """
    key = (cls, type(wrapped))
    found = _BY_TYPE.get(key)
    if found is None:
        shape = tuple(entry for entry in _shape(type(wrapped)) if _is_managed(cls, entry[0]))
        found = _BY_SHAPE.get((cls, shape)) if shape else cls
        if found is None:
            found = _BY_SHAPE.setdefault((cls, shape), _make(cls, shape))
        if len(_BY_TYPE) >= _MAX_TYPES:
            _BY_TYPE.clear()
        _BY_TYPE[key] = found
    return found


def _is_managed(cls: type, name: str) -> bool:
    """Whether ``name`` is left to the shape: not a method ``cls`` defines itself."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return isinstance(klass.__dict__[name], Absent) or klass is wrapt.BaseObjectProxy
    return True


def _make(cls: type, shape: tuple[tuple[str, bool], ...]) -> type:
    own: Mapping[str, Any] = getattr(cls, "_self_protocols", {})
    namespace: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__slots__": (),
    }
    for name, has in shape:
        namespace[name] = own.get(name, _GIVEN[name]) if has else None
    return type(cls.__name__, (cls,), namespace)

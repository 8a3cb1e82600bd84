"""The base every observing proxy shares; a proxy reports a fault of its own with
:func:`report_fault` (``observability._faults``: counted always, logged once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

import wrapt

from taskforce.core.interfaces.closing import aclose_iterator
from taskforce.observability._faults import raise_interrupt, report_fault
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies._shape import Absent, shaped

__all__ = [
    "ObservingProxy",
    "aclose_iterator",
    "is_observing_proxy",
    "passthrough",
    "raise_interrupt",
    "report_fault",
]

_T = TypeVar("_T")


def passthrough(name: str) -> Any:
    """A class attribute that reads, writes and deletes the wrapped object's ``name``.

    For attributes the callers of a proxy read on every mission: reaching one the
    proxy does not define costs wrapt a failed lookup, an ``AttributeError`` and
    a call of its ``__getattr__``; this property gets it with one C-level
    ``attrgetter``. The value is read live, on every access,
    and assignment and deletion still land on the wrapped object, as without it.

    Args:
        name: The attribute of the wrapped object.

    Returns:
        A ``property`` to assign to that name in the proxy class.
    """

    def set_attr(proxy: Any, value: Any) -> None:
        setattr(proxy.__wrapped__, name, value)

    def del_attr(proxy: Any) -> None:
        delattr(proxy.__wrapped__, name)

    return property(attrgetter(f"__wrapped__.{name}"), set_attr, del_attr, f"The wrapped {name}.")


if TYPE_CHECKING:
    # The stubs make BaseObjectProxy generic, so mypy sees ``__wrapped__: _T``.
    _ProxyBase = wrapt.BaseObjectProxy

else:

    class _ErasedSubscript:
        """``_ProxyBase[T]`` at run time: wrapt's class itself, with no ``typing.Generic``.

        wrapt 2.1 cannot subscript ``BaseObjectProxy`` (that arrived in wrapt 2.2), and
        ``Generic`` as a base would lengthen the MRO of every proxy: an attribute read on
        a proxy that misses CPython's type attribute cache walks the whole MRO.
        """

        def __getitem__(self, item: object) -> type:
            return wrapt.BaseObjectProxy

    _ProxyBase = _ErasedSubscript()


class ObservingProxy(_ProxyBase[_T]):
    """A ``wrapt.BaseObjectProxy`` that writes to one :class:`MetricSet`.

    Subclasses define the protocol methods they observe explicitly (an
    attribute the proxy does not define costs a failed lookup on every access)
    and keep their state in ``_self_*`` attributes, which stay on the proxy;
    any other assignment lands on the wrapped object. Helper methods are
    ``_self_*`` too, or module functions, so that no name of the wrapped
    object is shadowed.
    """

    # Any ``__getattr__`` in the MRO (wrapt's C type has one) makes CPython route
    # every attribute read through its generic hook, which calls wrapt's own
    # ``__getattribute__`` through a bound method-wrapper, a call more per read.
    # With object's generic ``__getattribute__`` here the hook does the same
    # lookup directly; a miss still falls back to wrapt's ``__getattr__``, which
    # reads the wrapped object, exactly as wrapt's getattro does.
    __getattribute__ = object.__getattribute__

    if not TYPE_CHECKING:
        # Run time only: to mypy, ``ObservingProxy[T]`` is the generic of wrapt's stubs
        # (wrapt 2.2 and later declare a ``__class_getitem__`` that returns a GenericAlias,
        # which an override returning the class would contradict).
        def __class_getitem__(cls, item: object) -> type:
            """``ObservingProxy[T]`` (and a subclass's) is the class itself."""
            return cls

    if TYPE_CHECKING:
        # What wrapt does at run time: any attribute the proxy lacks is the wrapped object's.
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def __init__(self, wrapped: _T, metrics: MetricSet) -> None:
        """Wrap ``wrapped`` so its observed calls are recorded in ``metrics``.

        Args:
            wrapped: The plain object; it stays reachable as ``__wrapped__``.
            metrics: The container's metric set.
        """
        super().__init__(wrapped)
        self._self_metrics = metrics

    # wrapt defines these on every proxy; they are the object's only if it has them, and
    # a shaped subclass gives them back (``_shape``). A mask per name, listed here so
    # that each is found where the class is read.
    __len__ = Absent()
    __getitem__ = Absent()
    __setitem__ = Absent()
    __delitem__ = Absent()
    __contains__ = Absent()
    __reversed__ = Absent()
    __iter__ = Absent()
    __enter__ = Absent()
    __exit__ = Absent()
    __aenter__ = Absent()
    __aexit__ = Absent()

    # The protocol methods a shaped subclass uses instead of the default forwarding ones,
    # when the wrapped object has them (``shaped``); a subclass may set its own.
    _self_protocols: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    def __new__(cls, wrapped: Any, *args: Any, **kwargs: Any) -> Self:
        """Make the proxy of the class that has exactly the protocols of ``wrapped``.

        Chosen once, here: a call through the proxy runs none of it (``_shape``).
        """
        return cast(Self, super().__new__(shaped(cls, wrapped)))


def is_observing_proxy(obj: object) -> bool:
    """Tell whether ``obj`` is already one of our proxies.

    ``isinstance`` is right here: a proxy reports the wrapped class as its
    ``__class__``, but ``isinstance`` also checks ``type(obj)``, which is the
    proxy class.

    Args:
        obj: Any object.

    Returns:
        ``True`` for an :class:`ObservingProxy`, ``False`` otherwise.
    """
    return isinstance(obj, ObservingProxy)

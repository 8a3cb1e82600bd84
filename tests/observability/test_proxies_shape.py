"""A proxy has exactly the protocols of what it wraps: metrics on or off, a part answers alike.

Parts of one's own of every role (tool, registry, provider, store, executor), each bare,
with every container, call and context manager method, or an iterator's, are used plain
and observed, side by side: each protocol operation (``len``, ``in``, ``iter``, a call,
``with``, ``async with``, ``await``, ...) and each ``hasattr`` of its method must come
out the same. The container built with metrics off hands the plain part back, and the one
with metrics on the proxy :func:`instrument` makes of it, of the same class
(``test_the_container_observes_a_part_as_instrument_does``): the operations go through
``instrument`` over one metric set of the module, as a container's build makes one (two
milliseconds) that the three hundred operations need not pay for each.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import wrapt

from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.observability import ToolProxy, ToolRegistryProxy, instrument
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies._base import ObservingProxy
from tests.observability import proxy_fakes as fakes
from tests.observability.metric_samples import samples


class _EveryProtocol:
    """Every container, call and context manager method, over a list of two items."""

    @property
    def _items(self) -> list[Any]:
        items: list[Any] = self.__dict__.setdefault("_listed", [1, 2])
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        return self._items[index]

    def __setitem__(self, index: int, value: Any) -> None:
        self._items[index] = value

    def __delitem__(self, index: int) -> None:
        del self._items[index]

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __length_hint__(self) -> int:
        return 2

    def __call__(self, *args: Any) -> Any:
        return ("called", args)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _Iterator:
    """An iterator, async iterator and awaitable, all of nothing."""

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        raise StopIteration

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    def __await__(self) -> Any:
        return iter(())


#: The protocol methods a caller may look for on a part.
_METHODS = (
    *("__len__", "__getitem__", "__setitem__", "__delitem__", "__contains__", "__reversed__"),
    *("__iter__", "__next__", "__aiter__", "__anext__", "__await__", "__length_hint__"),
    *("__call__", "__enter__", "__exit__", "__aenter__", "__aexit__"),
)
_ROLES: dict[str, type] = {
    "tool": fakes.FakeTool,
    "registry": fakes.FakeRegistry,
    "provider": fakes.FakeProvider,
    "streaming-provider": fakes.FakeStreamingProvider,
    "store": fakes.FakeStore,
    "executor": fakes.FakeExecutor,
}
_SHAPES: dict[str, tuple[type, ...]] = {
    "bare": (),
    "every": (_EveryProtocol,),
    "iter": (_Iterator,),
}
_PARTS = {
    f"{role}-{shape}": type(f"{shape.title()}{fake.__name__}", (*mixins, fake), {})
    for role, fake in _ROLES.items()
    for shape, mixins in _SHAPES.items()
}


async def _with(subject: Any) -> Any:
    with subject as entered:
        return entered is subject


async def _async_with(subject: Any) -> Any:
    async with subject as entered:
        return entered is subject


async def _exit_stack(subject: Any) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        return await stack.enter_async_context(subject) is subject


async def _await(subject: Any) -> Any:
    return await subject


async def _anext(subject: Any) -> Any:
    return await anext(subject)


def _sync(operation: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    async def run(subject: Any) -> Any:
        return operation(subject)

    return run


#: What a caller may do with a part, by the protocol it uses.
_OPERATIONS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "len": _sync(len),
    "in": _sync(lambda subject: 2 in subject),
    "iter": _sync(lambda subject: list(iter(subject))),
    "reversed": _sync(lambda subject: list(reversed(subject))),
    "getitem": _sync(lambda subject: subject[0]),
    "setitem": _sync(lambda subject: operator.setitem(subject, 0, 5)),
    "delitem": _sync(lambda subject: operator.delitem(subject, 0)),
    "length_hint": _sync(lambda subject: operator.length_hint(subject, -1)),
    "bool": _sync(bool),
    "callable": _sync(callable),
    "call": _sync(lambda subject: subject(1)),
    "next": _sync(next),
    "anext": _anext,
    "await": _await,
    "with": _with,
    "async with": _async_with,
    "exit stack": _exit_stack,
}


async def _outcome(subject: Any, operation: str, plain_name: str) -> tuple[str, Any]:
    """What the operation returns, or its exception's kind and message.

    Where Python words a TypeError itself and names no method (``iter()``, a call,
    ``await``), it names the proxy's class: put the plain class's name in its place.
    """
    try:
        return "returned", await _OPERATIONS[operation](subject)
    except TypeError as exc:
        message = str(exc).replace(type(subject).__name__, plain_name)
        return "TypeError", message.replace(f"{type(subject).__module__}.", "")
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.fixture(scope="module", name="settings_by_metrics")
def fixture_settings_by_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Settings]:
    """Settings with metrics off and on, for every test of the module: they are frozen, and
    no part used here writes to the folders they name."""
    root = tmp_path_factory.mktemp("shape")
    return {
        metrics: Settings(
            state_dir=root / f"state-{metrics}",
            workspace_dir=root / "workspace",
            metrics={"enabled": metrics},
        )
        for metrics in (False, True)
    }


@pytest.fixture(scope="module", name="module_metrics")
def fixture_module_metrics() -> MetricSet:
    """One metric set for the observed parts of the module's operations: what they record
    is not what these tests compare (returns and exceptions)."""
    return MetricSet()


#: The keyword argument of ``build_container`` that takes a part of a role.
_ARGUMENTS = {
    "registry": "tool_registry",
    "store": "state_store",
    "provider": "llm_provider",
    "streaming-provider": "llm_provider",
}


def _side_by_side(metrics: MetricSet, part: str) -> tuple[Any, Any]:
    """The same kind of part plain and observed (as a container with metrics on has it)."""
    plain, bare = _PARTS[part](), _PARTS[part]()
    observed = instrument(bare, metrics)
    assert observed is not bare  # a proxy
    return plain, observed


class TestTheSameProtocols:
    @pytest.mark.parametrize(
        "part", [part for part in _PARTS if part.rsplit("-", 1)[0] in _ARGUMENTS]
    )
    def test_the_container_observes_a_part_as_instrument_does(
        self, settings_by_metrics: dict[bool, Settings], part: str
    ) -> None:
        """With metrics off the container hands the part back as it is; with metrics on it
        holds a proxy of it, of the class ``instrument`` chooses for it (the proxies the
        tests below use). A tool or an executor of one's own does not go in a container."""
        argument = _ARGUMENTS[part.rsplit("-", 1)[0]]
        made = [_PARTS[part]() for _ in range(2)]
        plain = getattr(
            build_container(settings_by_metrics[False], **{argument: made[0]}), argument
        )
        observed = getattr(
            build_container(settings_by_metrics[True], **{argument: made[1]}), argument
        )
        assert plain is made[0]
        assert observed is not made[1]
        assert observed.__wrapped__ is made[1]
        assert type(instrument(_PARTS[part](), MetricSet())) is type(observed)

    @pytest.mark.parametrize("part", list(_PARTS))
    def test_hasattr_of_each_protocol_method(self, module_metrics: MetricSet, part: str) -> None:
        """A proxy has a protocol method exactly when its part has it; but for ``in`` on
        a part that iterates without ``__contains__``, which Python does by iterating:
        the proxy keeps wrapt's ``__contains__`` then (see ``_shape``)."""
        plain, observed = _side_by_side(module_metrics, part)
        for name in _METHODS:
            if name == "__contains__" and hasattr(plain, "__iter__"):
                assert hasattr(observed, name)
                continue
            assert hasattr(plain, name) == hasattr(observed, name), name
            assert (getattr(plain, name, None) is None) == (getattr(observed, name, None) is None)

    @pytest.mark.parametrize("operation", list(_OPERATIONS))
    @pytest.mark.parametrize("part", list(_PARTS))
    async def test_each_operation(
        self, module_metrics: MetricSet, part: str, operation: str
    ) -> None:
        """Each protocol operation returns or raises the same with metrics on and off."""
        plain, observed = _side_by_side(module_metrics, part)
        name = type(plain).__name__
        assert await _outcome(plain, operation, name) == await _outcome(observed, operation, name)

    def test_every_method_wrapt_defines_is_masked(self) -> None:
        """The masks of ObservingProxy are exactly the methods the shape gives back."""
        from taskforce.observability.proxies._shape import MASKED, Absent

        masks = {name for name, value in vars(ObservingProxy).items() if isinstance(value, Absent)}
        assert set(MASKED) == masks
        assert all(name in vars(wrapt.BaseObjectProxy) for name in masks - {"__iter__"})

    def test_the_class_is_chosen_once_per_type(self) -> None:
        """Two parts of one type get one class, of the proxy's name; a bare part gets the
        proxy class itself."""
        metrics = MetricSet()
        every = _PARTS["tool-every"]
        first, second = instrument(every(), metrics), instrument(every(), metrics)
        assert type(first) is type(second)
        assert (ToolProxy.__name__, ToolProxy) == (type(first).__name__, type(first).__mro__[1])
        assert ToolProxy is type(instrument(_PARTS["tool-bare"](), metrics))


class TestWhatTheRegistryHandsOut:
    async def test_iterating_or_indexing_a_registry_hands_out_observed_tools(self) -> None:
        """A registry of one's own that iterates or indexes its tools hands out observed
        tools that way too, as get() and list_tools() do; anything else passes as it is."""

        class Listing(fakes.FakeRegistry):
            def __iter__(self) -> Iterator[Any]:
                return iter([*self._tools.values(), "a name"])

            def __getitem__(self, name: str) -> Any:
                return self._tools[name]

        metrics = MetricSet()
        registry = ToolRegistryProxy(Listing(fakes.FakeTool("fake")), metrics)
        *tools, name = list(registry)
        assert "a name" == name
        assert [registry.get("fake"), registry.get("fake")] == [*tools, registry["fake"]]
        assert all(isinstance(tool, ToolProxy) for tool in [*tools, registry["fake"]])
        await registry["fake"].execute()
        assert {("fake", "none", "success"): 1} == samples(metrics, "taskforce_tool_calls_total")

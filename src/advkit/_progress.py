"""One progress bar for every loop over a data loader, which iterates the loader exactly once.

``tqdm(loader)`` is not safe for data loaders: ``tqdm.auto`` resolves to
``tqdm.asyncio.tqdm_asyncio``, whose constructor calls ``iter(loader)`` (even with
``disable=True``) before the loop calls it again. Each pass then starts the loader's worker
processes twice and draws the shuffling order twice from its generator, so a seeded loader
yields another order than in a plain ``for batch in loader`` loop. Here the bar is built without
the iterable and advanced by hand; the loop's own ``for`` is the only ``iter()`` call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class Progress(Generic[T]):
    """Iterate ``iterable`` once, advancing a progress bar after each item.

    Args:
        iterable: What to iterate (a ``DataLoader``, a list of batches, ...).
        description: The bar's label.
        enabled: Show the bar; when ``False`` no bar is drawn (the loop is the same).
        total: Number of items, by default ``len(iterable)`` where it has a length.
        unit: The unit shown after the count.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        description: str,
        enabled: bool,
        total: int | None = None,
        unit: str = "batch",
    ) -> None:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self._iterable = iterable
        # No iterable is given to tqdm: its asyncio variant would call iter() on it.
        self._bar = tqdm(total=total, desc=description, unit=unit, disable=not enabled, leave=False)

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self._iterable:  # the one and only iter() of the loader
                yield item
                self._bar.update(1)
        finally:
            self._bar.close()

    def set_postfix(self, **values: Any) -> None:
        """Show ``name=value`` pairs after the bar."""
        self._bar.set_postfix(**values)

    def close(self) -> None:
        """Close the bar (also done when the iteration ends or is abandoned)."""
        self._bar.close()

"""A DataTable kept in step with a list of records by row key, cell by cell.

A column's width is at least its label and its ``width``, and grows to fit the widest cell written
to it (measured here, by text length: ``update_cell(..., update_width=True)`` is ~70x slower, and it
would shrink and grow columns on every update). Rows are keyed by the record's id, and ``sync``
only touches cells whose text changed: rows are added, updated in place or removed, never rebuilt.
That keeps a live table of 500 workers cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    """The narrowest the column gets; it widens to fit its cells."""
    right: bool = False


def cell_width(value: Cell) -> int:
    return cell_len(value.plain if isinstance(value, Text) else value)


class KeyedTable(DataTable[Cell]):
    """Subclasses set ``COLUMNS``; ``sync`` takes ``(row_key, cells)`` pairs in display order."""

    COLUMNS: Sequence[Column] = ()

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[Cell, ...]] = {}
        self.updates = 0
        """Cells written by the last ``sync`` (tests check that updates stay in place)."""

    def on_mount(self) -> None:
        for column in self.COLUMNS:
            label = Text(column.label, justify="right" if column.right else "left")
            self.add_column(label, width=self.width_of(column), key=column.key)

    @staticmethod
    def width_of(column: Column) -> int:
        return max(column.width, cell_len(column.label))

    def _fit(self, key: str, needed: int) -> bool:
        """Widen column ``key`` to ``needed`` cells if it is narrower; whether it changed."""
        column = self.columns.get(key)  # type: ignore[call-overload]
        if column is None or column.width >= needed:
            return False
        column.width = needed
        return True

    def _cell(self, column: Column, value: Cell) -> Cell:
        if column.right and isinstance(value, str):
            return Text(value, justify="right")
        return value

    def sync(self, rows: Iterable[tuple[str, Sequence[Cell]]]) -> None:
        """Make the table show exactly ``rows``; new keys are appended."""
        updates = 0
        widened = False
        seen: set[str] = set()
        for key, cells in rows:
            seen.add(key)
            values = tuple(cells)
            old = self._shown.get(key)
            if old is None:
                for column, value in zip(self.COLUMNS, values):
                    widened |= self._fit(column.key, cell_width(value))
                self.add_row(*(self._cell(c, v) for c, v in zip(self.COLUMNS, values)), key=key)
                updates += len(values)
            elif old != values:
                for column, before, after in zip(self.COLUMNS, old, values):
                    if before != after:
                        widened |= self._fit(column.key, cell_width(after))
                        self.update_cell(key, column.key, self._cell(column, after))
                        updates += 1
            self._shown[key] = values
        for key in [k for k in self._shown if k not in seen]:
            self.remove_row(key)
            del self._shown[key]
            updates += 1
        self.updates = updates
        if widened:
            self._require_update_dimensions = True
            self.refresh()

    def column_widths(self) -> dict[str, int]:
        """Each column's width in cells, without padding (tests check that cells fit)."""
        return {str(key.value): column.width for key, column in self.columns.items()}

    def shown(self, key: str) -> tuple[Cell, ...]:
        return self._shown[key]

    @property
    def keys(self) -> list[str]:
        return list(self._shown)

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

"""What every writer of an export needs: the plan, the records, the corrections, the counters."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.orm import Session

from server.exports import layout as L
from server.exports import source
from server.exports.options import ExportOptions
from server.personal import Disclosure, unrestricted


@dataclass
class ExportContext:
    """One export being written."""

    db_session: Session
    plan: L.Plan
    where: list[Any]
    options: ExportOptions
    stats: source.ExportStats
    corrections: Any | None = None
    decryptor: source.Decryptor | None = None
    tmp_dir: str | None = None
    pseudonymise: Any | None = None
    # What the export's reader sees of personal answers (server/personal.py), from its options.
    disclosure: Disclosure = field(default_factory=unrestricted)
    _temporary: list[IO[bytes]] = field(default_factory=list)

    @property
    def xml_form_id(self) -> str:
        return self.plan.layout.xml_form_id

    def records(self) -> Iterator[list[Any]]:
        """Stream the main raw rows (corrections applied when the export is cleaned)."""
        return source.iter_records(
            self.db_session,
            self.plan,
            self.where,
            self.stats,
            decryptor=self.decryptor,
            corrections=self.corrections,
        )

    def repeat_rows(self, row: list[Any]) -> Iterator[tuple[L.TablePlan, list[Any]]]:
        """Yield a record's repeat rows, depth first."""
        return source.repeat_rows(self.plan, row, self.corrections)

    def temporary(self) -> IO[bytes]:
        """Return a temporary file removed when the export ends."""
        handle = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - closed in close()
        self._temporary.append(handle)
        return handle

    def close(self) -> None:
        """Remove the temporary files."""
        for handle in self._temporary:
            handle.close()
        self._temporary.clear()

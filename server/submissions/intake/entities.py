"""The entities a record creates or updates, applied in the transaction that stores it.

A form that declares entities (its schema's ``entities``) makes each new record and each edit
apply its entity blocks (:mod:`server.entities.records` holds the rules, Central's), before
the commit that answers 201: the record and the entities it made are durable together, or
neither is. A resend or a split upload's next part applies nothing again; encrypted records
and draft test records apply nothing (as in Central: the server cannot read the first, and
the second belong to a draft).
"""

from __future__ import annotations

from server.entities import records
from server.submissions.intake.upload import Receipt, Upload


def apply(upload: Upload, receipt: Receipt) -> None:
    """Apply the record's entity blocks (not committed); see :func:`records.apply`."""
    if (
        receipt.outcome == "duplicate"
        or upload.draft
        or upload.parsed.encrypted
        or not upload.entity_blocks
    ):
        return
    records.apply(
        upload.db,
        records.Source(
            project_id=upload.form.project_id,
            form_id=upload.form.id,
            submission_id=receipt.submission_id,
            version_id=receipt.version_id,
            instance_id=receipt.instance_id,
            actor_id=upload.actor_id,
            user_agent=upload.user_agent,
            event=records.CREATE if receipt.outcome == "created" else records.EDIT,
            blocks=records.read_blocks(upload.parsed.root, upload.entity_blocks),
        ),
    )

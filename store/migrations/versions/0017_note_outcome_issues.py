"""A refused note keeps the EHR's OperationOutcome issues, diagnostics included (``outcome_issues``, JSON): the person
who must fix the note needs the server's own words, which the note's ``reason`` leaves out because they may quote
the patient. The column sits beside the note's text (PHI already) and nowhere else; the request's credentials are
removed before it is written. Existing notes have none (NULL).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.add_column(sa.Column("outcome_issues", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("note_outbox") as batch:
        batch.drop_column("outcome_issues")

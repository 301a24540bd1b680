"""Draft-note write-back (issue 13): the outbox sensor (off by default), the one-note job, the outbox asset."""

from dagster import Definitions

from engine.settings import PipelineSettings
from pipelines.defs.writeback.jobs import note_outbox, write_back_note
from pipelines.defs.writeback.resources import WritebackResource
from pipelines.defs.writeback.sensors import note_outbox_sensor

__all__ = ["configured_defs", "defs"]

defs = Definitions(assets=[note_outbox], jobs=[write_back_note], sensors=[note_outbox_sensor])


def configured_defs(settings: PipelineSettings) -> Definitions:
    """The ``writeback`` resource with ``SMART_ENABLE_WRITE`` as the settings read it."""
    return Definitions(resources={"writeback": WritebackResource(service_write_enabled=settings.write_enabled)})

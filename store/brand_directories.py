"""A tenant's directory of health systems: the SMART brands bundles it loaded (revision 0006).

One row per (tenant, source): loading a source again replaces it. Brands are kept parsed (the checked,
display-ready fields of ``connectors.smart.brands``), so a patient's search never re-reads a raw bundle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, Select, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from connectors.smart.brands import Brand, BrandPortal, BrandsBundle
from store.models import Base, new_id, utcnow

__all__ = [
    "BrandDirectory",
    "brand_from_json",
    "delete_directory",
    "directory_versions",
    "list_directories",
    "save_directory",
    "tenant_brands",
]


class BrandDirectory(Base):
    """The brands of one bundle a tenant loaded, as JSON (``Brand`` fields)."""

    __tablename__ = "brand_directories"
    __table_args__ = (UniqueConstraint("tenant_id", "source", name="uq_brand_directories_tenant_source"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    bundle_timestamp: Mapped[str | None] = mapped_column(String(64))
    brand_count: Mapped[int] = mapped_column(Integer, default=0)
    brands: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def _to_json(brand: Brand) -> dict[str, Any]:
    return {
        "key": brand.key,
        "name": brand.name,
        "aliases": list(brand.aliases),
        "logo": brand.logo,
        "website": brand.website,
        "locations": list(brand.locations),
        "portals": [{**p.__dict__, "endpoints": list(p.endpoints)} for p in brand.portals],
    }


def brand_from_json(data: dict[str, Any]) -> Brand:
    portals = tuple(BrandPortal(**{**p, "endpoints": tuple(p["endpoints"])}) for p in data.get("portals", []))
    return Brand(
        key=str(data["key"]),
        name=str(data["name"]),
        aliases=tuple(data.get("aliases", [])),
        logo=data.get("logo"),
        website=data.get("website"),
        locations=tuple(data.get("locations", [])),
        portals=portals,
    )


def save_directory(session: Session, tenant_id: str, source: str, bundle: BrandsBundle) -> BrandDirectory:
    """Insert or replace the tenant's directory ``source`` with the brands of ``bundle``."""
    row = session.scalar(
        select(BrandDirectory).where(BrandDirectory.tenant_id == tenant_id, BrandDirectory.source == source)
    )
    if row is None:
        row = BrandDirectory(tenant_id=tenant_id, source=source)
        session.add(row)
    row.bundle_timestamp = bundle.timestamp[:64] if bundle.timestamp else None
    row.brand_count = len(bundle.brands)
    row.brands = [_to_json(b) for b in bundle.brands]
    row.loaded_at = utcnow()
    session.flush()
    return row


def delete_directory(session: Session, tenant_id: str, source: str) -> bool:
    row = session.scalar(
        select(BrandDirectory).where(BrandDirectory.tenant_id == tenant_id, BrandDirectory.source == source)
    )
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def list_directories(session: Session, tenant_id: str) -> list[BrandDirectory]:
    stmt = select(BrandDirectory).where(BrandDirectory.tenant_id == tenant_id).order_by(BrandDirectory.source)
    return list(session.scalars(stmt))


def directory_versions(tenant_id: str) -> Select[str, str, datetime]:
    """What identifies the current content of a tenant's directories (cheap: no brands read)."""
    return (
        select(BrandDirectory.id, BrandDirectory.source, BrandDirectory.loaded_at)
        .where(BrandDirectory.tenant_id == tenant_id)
        .order_by(BrandDirectory.source)
    )


def tenant_brands(session: Session, tenant_id: str) -> list[Brand]:
    """Every brand the tenant loaded, source by source (a brand listed by two sources appears twice)."""
    return [brand_from_json(item) for row in list_directories(session, tenant_id) for item in row.brands]

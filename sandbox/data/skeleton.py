"""The per-patient skeleton every type builder shares (demographics, encounters), cheap to recompute."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sandbox.data import vocab
from sandbox.data.timefmt import ANCHOR_TS, DAY, YEAR, instant

N_PRACTITIONERS = 12
N_ORGANIZATIONS = 4
N_LOCATIONS = 6
N_MEDICATIONS = len(vocab.MEDICATIONS)


@dataclass(frozen=True, slots=True)
class Encounter:
    id: str
    start: int
    end: int
    practitioner: int
    location: int
    klass: int
    has_labs: bool


@dataclass(frozen=True, slots=True)
class Skeleton:
    index: int
    seed: int
    female: bool
    given: str
    family: str
    birth_day: int
    organization: int
    practitioner: int
    city: int
    street_no: int
    street: int
    updated: int
    encounters: tuple[Encounter, ...]

    @property
    def id(self) -> str:
        return f"pat{self.index}"

    @property
    def ref(self) -> str:
        return f"Patient/pat{self.index}"

    def rng(self, salt: int) -> random.Random:
        """An independent stream per (seed, patient, type) so building one type never shifts another."""
        return random.Random((self.seed * 1_000_003 + self.index) * 97 + salt)


def base_meta(ts: int) -> dict[str, str]:
    """Version 1 of a generated resource, last updated no later than a minute before the anchor."""
    return {"versionId": "1", "lastUpdated": instant(min(ts, ANCHOR_TS - 60))}


def updated_after(rng: random.Random, enc: Encounter) -> int:
    """When a resource recorded at an encounter was last touched: a minute to a week after the visit ended."""
    return enc.end + rng.randint(60, 7 * DAY)


def build_skeleton(seed: int, index: int) -> Skeleton:
    rng = random.Random(seed * 1_000_003 + index)
    female = rng.random() < 0.52
    n_enc = rng.randint(5, 10)
    # Encounters spread over the five years before the anchor; newest last.
    starts = sorted(ANCHOR_TS - rng.randint(2 * DAY, 5 * YEAR) for _ in range(n_enc))
    encounters = []
    for k, start in enumerate(starts):
        start -= start % 60
        klass = 0 if rng.random() < 0.8 else rng.randint(1, 2)
        length = rng.randint(15, 90) * 60 if klass == 0 else rng.randint(4, 72) * 3600
        encounters.append(
            Encounter(
                id=f"enc{index}-{k}",
                start=start,
                end=start + length,
                practitioner=rng.randrange(N_PRACTITIONERS),
                location=rng.randrange(N_LOCATIONS),
                klass=klass,
                has_labs=rng.random() < 0.5,
            )
        )
    age_days = rng.randint(2 * 365, 92 * 365)
    return Skeleton(
        index=index,
        seed=seed,
        female=female,
        given=rng.choice(vocab.GIVEN_F if female else vocab.GIVEN_M),
        family=rng.choice(vocab.FAMILY),
        birth_day=ANCHOR_TS // DAY - age_days,
        organization=rng.randrange(N_ORGANIZATIONS),
        practitioner=rng.randrange(N_PRACTITIONERS),
        city=rng.randrange(len(vocab.CITIES)),
        street_no=rng.randint(1, 9999),
        street=rng.randrange(len(vocab.STREETS)),
        updated=min(ANCHOR_TS - 3600, starts[-1] + rng.randint(3600, 30 * DAY)),
        encounters=tuple(encounters),
    )

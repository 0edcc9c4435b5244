"""What the ``model-updates`` topic carries (DESIGN.md §3): an alias moved to a version.

One record per alias move, keyed by the alias (the topic is compacted, so the latest announcement
per alias survives for replicas that start later). The value is JSON::

    {"alias": "champion", "version": "v0003-1a2b3c4d", "manifest_digest": "<64 hex>",
     "previous_version": "v0002-…", "registry": "/srv/registry",
     "announced_at": "2024-05-01T12:00:00Z"}

``manifest_digest`` is :meth:`scoring.registry.ModelManifest.digest` of the version: a service that
follows the topic loads the version and refuses it unless the manifest it reads has that digest
(the manifest in turn pins every artifact's SHA-256). Unknown fields are ignored, so a newer
publisher does not break older readers.

This module knows nothing about Kafka (``stream.announce`` produces and reads the records).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from scoring.registry import ModelRegistry, UnknownModelError

__all__ = ["BadAnnouncement", "ModelAnnouncement", "announcement_for"]

# The registry's alias rule (scoring.registry._ALIAS_RE): the key must name an alias it accepts.
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
DIGEST_PATTERN = r"^[0-9a-f]{64}$"


class BadAnnouncement(ValueError):  # noqa: N818 -- the name callers know (a bad record)
    """A ``model-updates`` record that is not a valid announcement; the message says why.

    ``fields`` names the offending fields (empty when the record is not a JSON object at all).
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class ModelAnnouncement(BaseModel):
    """``alias`` now points at ``version``, whose manifest has digest ``manifest_digest``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    alias: str = Field(pattern=ALIAS_PATTERN, description="The alias that moved, e.g. champion.")
    version: str = Field(min_length=1, description="The version the alias points at now.")
    manifest_digest: str = Field(
        pattern=DIGEST_PATTERN, description="ModelManifest.digest() of that version."
    )
    previous_version: str | None = Field(
        default=None, description="The version the alias pointed at before, if any."
    )
    registry: str = Field(min_length=1, description="The registry's storage.describe().")
    announced_at: AwareDatetime = Field(description="When the move was announced (UTC).")

    @field_validator("announced_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def key(self) -> bytes:
        """The record key: the alias, so compaction keeps one live announcement per alias."""
        return self.alias.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelAnnouncement:
        """Decode a record value; :class:`BadAnnouncement` (never a pydantic error) when invalid."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise _bad(exc) from None


def _bad(exc: ValidationError) -> BadAnnouncement:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return BadAnnouncement(f"model announcement is not JSON ({detail})")
    if any(not e["loc"] for e in errors):  # the JSON is a list, a string, …
        return BadAnnouncement("model announcement is not a JSON object")
    fields = tuple(dict.fromkeys(str(e["loc"][0]) for e in errors))
    problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors)
    return BadAnnouncement(f"bad model announcement: {problems}", fields)


def announcement_for(
    registry: ModelRegistry, alias: str, previous: str | None
) -> ModelAnnouncement:
    """The announcement for ``alias`` as the registry has it now (``previous``: its version
    before the change). Raises :class:`~scoring.registry.UnknownModelError` for an unset alias."""
    state = registry.aliases().get(alias)
    if state is None:
        raise UnknownModelError(f"no alias {alias!r} in {registry.storage.describe()}")
    manifest = registry.get(state.version)
    return ModelAnnouncement(
        alias=alias,
        version=manifest.version,
        manifest_digest=manifest.digest(),
        previous_version=previous,
        registry=registry.storage.describe(),
        announced_at=datetime.now(UTC),
    )

"""Model announcements (the ``model-updates`` records): encoding, refusing bad ones, and building
one from a real registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scoring.announcements import BadAnnouncement, ModelAnnouncement, announcement_for
from scoring.registry import ModelRegistry, UnknownModelError

MODELS_DIR = Path(__file__).parents[1] / "models"
SINGLE_TREE = MODELS_DIR / "single_tree.txt"  # 4 features, Column_0..3 (as in test_registry.py)
FEATURES = ["amount", "card_tx_count_1h", "seconds_since_prev", "merchant_fraud_rate"]
DIGEST = "0123456789abcdef" * 4


def announcement(**overrides: object) -> ModelAnnouncement:
    fields: dict[str, object] = {
        "alias": "champion",
        "version": "v0003-1a2b3c4d",
        "manifest_digest": DIGEST,
        "previous_version": "v0002-99aa88bb",
        "registry": "/srv/registry",
        "announced_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return ModelAnnouncement.model_validate(fields)


def value(**overrides: object) -> bytes:
    """A record value as JSON, with fields replaced (or dropped when the override is ...)."""
    data = json.loads(announcement().to_bytes())
    for name, new in overrides.items():
        if new is ...:
            del data[name]
        else:
            data[name] = new
    return json.dumps(data).encode()


def test_round_trip() -> None:
    original = announcement()
    decoded = ModelAnnouncement.from_bytes(original.to_bytes())
    assert decoded == original
    assert original.key() == b"champion"
    assert json.loads(original.to_bytes())["manifest_digest"] == DIGEST


def test_round_trip_without_a_previous_version() -> None:
    first = announcement(previous_version=None)
    assert ModelAnnouncement.from_bytes(first.to_bytes()).previous_version is None
    assert ModelAnnouncement.from_bytes(value(previous_version=...)).previous_version is None


def test_announced_at_is_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    a = announcement(announced_at=datetime(2024, 5, 1, 14, 0, tzinfo=paris))
    assert a.announced_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert a.announced_at.utcoffset() == timedelta(0)
    assert json.loads(a.to_bytes())["announced_at"] == "2024-05-01T12:00:00Z"


def test_unknown_fields_are_ignored() -> None:
    """A newer publisher may add fields; older readers must still take the announcement."""
    assert ModelAnnouncement.from_bytes(value(schema_version=2)) == announcement()


@pytest.mark.parametrize("garbage", [b"", b"not json", b"\xff\xfe\x00", b'{"alias": "champ'])
def test_garbage_is_not_json(garbage: bytes) -> None:
    with pytest.raises(BadAnnouncement, match="not JSON") as caught:
        ModelAnnouncement.from_bytes(garbage)
    assert caught.value.fields == ()
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("data", [b"[1, 2]", b'"champion"', b"null", b"42"])
def test_json_that_is_not_an_object(data: bytes) -> None:
    with pytest.raises(BadAnnouncement, match="not a JSON object"):
        ModelAnnouncement.from_bytes(data)


@pytest.mark.parametrize(
    "field", ["alias", "version", "manifest_digest", "registry", "announced_at"]
)
def test_a_missing_field_is_named(field: str) -> None:
    with pytest.raises(BadAnnouncement) as caught:
        ModelAnnouncement.from_bytes(value(**{field: ...}))
    assert caught.value.fields == (field,)
    assert f"{field}: Field required" in str(caught.value)


@pytest.mark.parametrize(
    "digest",
    [
        "ABCDEF" + DIGEST[6:],  # upper case
        DIGEST[:-1],  # 63 digits
        DIGEST + "0",  # 65 digits
        "g" + DIGEST[1:],  # not hex
        "",
        42,
    ],
)
def test_a_bad_digest_is_named(digest: object) -> None:
    with pytest.raises(BadAnnouncement, match="manifest_digest") as caught:
        ModelAnnouncement.from_bytes(value(manifest_digest=digest))
    assert caught.value.fields == ("manifest_digest",)


def test_several_problems_are_all_named_and_no_pydantic_error_leaks() -> None:
    data = value(manifest_digest="nope", announced_at="2024-05-01T12:00:00", alias="Champion!")
    with pytest.raises(BadAnnouncement) as caught:
        ModelAnnouncement.from_bytes(data)
    assert set(caught.value.fields) == {"manifest_digest", "announced_at", "alias"}
    message = str(caught.value)
    assert "timezone" in message
    assert "pydantic" not in message and "errors.pydantic.dev" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_constructing_directly_also_validates() -> None:
    with pytest.raises(ValueError, match="manifest_digest"):
        announcement(manifest_digest="abc")
    with pytest.raises(ValueError, match="timezone"):
        announcement(announced_at=datetime(2024, 5, 1))  # naive


# ---------------------------------------------------------------------------- from a registry


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", cache_dir=tmp_path / "cache")


def test_announcement_for_reads_the_alias_and_the_manifest_digest(registry: ModelRegistry) -> None:
    first = registry.register(SINGLE_TREE, feature_names=FEATURES)
    second = registry.register(SINGLE_TREE, feature_names=FEATURES, metrics={"auc": 0.9})
    registry.promote(first.version)
    registry.promote(second.version)

    before = datetime.now(UTC)
    a = announcement_for(registry, "champion", first.version)
    assert a.alias == "champion" and a.key() == b"champion"
    assert a.version == second.version
    assert a.manifest_digest == second.digest() == registry.get(second.version).digest()
    assert a.manifest_digest != first.digest()
    assert a.previous_version == first.version
    assert a.registry == registry.storage.describe()
    assert before <= a.announced_at <= datetime.now(UTC)
    assert ModelAnnouncement.from_bytes(a.to_bytes()) == a

    registry.rollback()
    back = announcement_for(registry, "champion", second.version)
    assert back.version == first.version and back.manifest_digest == first.digest()


def test_announcement_for_an_unset_alias(registry: ModelRegistry) -> None:
    manifest = registry.register(SINGLE_TREE, feature_names=FEATURES)
    registry.promote(manifest.version, "challenger")
    assert announcement_for(registry, "challenger", None).version == manifest.version
    with pytest.raises(UnknownModelError, match="champion"):
        announcement_for(registry, "champion", None)

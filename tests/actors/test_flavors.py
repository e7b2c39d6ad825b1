"""The flavor catalogue: the bundled file and the validation of any catalogue (ECS-1, ECS-3)."""

from __future__ import annotations

import re

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.flavors import FLAVORS, LOCAL_DISK_GB_MAX, Flavor, get_flavor, load_catalogue
from runtime.errors import ConfigError, InvalidRequest

NAME = re.compile(r"^(?P<series>[a-z]+\d)\.(?P<size>small|medium|large|xlarge|(?P<n>\d+)xlarge)\.(?P<ratio>\d+)$")


def test_bundled_catalogue_has_at_least_12_flavors_ECS_1() -> None:
    assert len(FLAVORS) >= 12
    assert load_catalogue() == FLAVORS
    assert all(name == flavor.name for name, flavor in FLAVORS.items())


def test_bundled_catalogue_has_flavors_with_and_without_local_disk_ECS_3() -> None:
    with_disk = {f.name.split(".")[0] for f in FLAVORS.values() if f.has_local_disk}
    without = {f.name.split(".")[0] for f in FLAVORS.values() if not f.has_local_disk}
    assert with_disk == {"d2", "i3"}
    assert without == {"s3", "c3", "m3"}


def test_bundled_local_disks_respect_the_24_x_1_8_TB_limit_ECS_3() -> None:
    assert LOCAL_DISK_GB_MAX == 24 * 1800
    assert max(f.local_disk_gb for f in FLAVORS.values()) == LOCAL_DISK_GB_MAX
    assert FLAVORS["d2.12xlarge.8"].local_disk_gb == LOCAL_DISK_GB_MAX


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_bundled_flavor_matches_its_name_ECS_1(name: str) -> None:
    """<series>.<size>.<ratio>: size gives the vCPUs, ratio the GB of RAM per vCPU."""
    match = NAME.match(name)
    assert match is not None, name
    size, n = match["size"], match["n"]
    vcpus = {"small": 1, "medium": 1, "large": 2, "xlarge": 4}.get(size) or 4 * int(n)
    flavor = FLAVORS[name]
    assert flavor.vcpus == vcpus
    assert flavor.ram_mb == vcpus * int(match["ratio"]) * 1024


def test_flavor_is_a_frozen_value() -> None:
    flavor = get_flavor("s3.large.2")
    assert flavor == Flavor("s3.large.2", 2, 4096)
    assert not flavor.has_local_disk
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        flavor.vcpus = 4  # type: ignore[misc]


def test_has_local_disk_follows_local_disk_gb_ECS_2() -> None:
    assert Flavor("x", 1, 1024, 1).has_local_disk
    assert not Flavor("x", 1, 1024).has_local_disk


def test_load_catalogue_parses_text_with_default_local_disk() -> None:
    text = """
        [flavor]
        "a.large.2" = { vcpus = 2, ram_mb = 4096 }
        "b.large.8" = { vcpus = 2, ram_mb = 16384, local_disk_gb = 1800 }
    """
    assert load_catalogue(text, "test.toml") == {
        "a.large.2": Flavor("a.large.2", 2, 4096, 0),
        "b.large.8": Flavor("b.large.8", 2, 16384, 1800),
    }


BAD_ENTRIES = [
    ('"f.1" = { ram_mb = 1024 }', "vcpus", "missing required field"),
    ('"f.1" = { vcpus = true, ram_mb = 1024 }', "vcpus", "expected an integer"),
    ('"f.1" = { vcpus = "2", ram_mb = 1024 }', "vcpus", "expected an integer"),
    ('"f.1" = { vcpus = 0, ram_mb = 1024 }', "vcpus", "out of range"),
    ('"f.1" = { vcpus = 1, ram_mb = 0 }', "ram_mb", "out of range"),
    ('"f.1" = { vcpus = 1, ram_mb = 1.5 }', "ram_mb", "expected an integer"),
    ('"f.1" = { vcpus = 1, ram_mb = 1024, local_disk_gb = -1 }', "local_disk_gb", "out of range"),
    ('"f.1" = { vcpus = 1, ram_mb = 1024, local_disk_gb = 43201 }', "local_disk_gb", "out of range"),
    ('"f.1" = { vcpus = 1, ram_mb = 1024, disk = 10 }', "disk", "unknown field"),
]


@pytest.mark.parametrize(("entry", "field", "problem"), BAD_ENTRIES)
def test_bad_entry_names_source_flavor_and_field(entry: str, field: str, problem: str) -> None:
    text = f'[flavor]\n"ok.1" = {{ vcpus = 1, ram_mb = 1024 }}\n{entry}\n'
    with pytest.raises(ConfigError) as info:
        load_catalogue(text, "partner.toml")
    assert info.value.where == f'partner.toml: flavor."f.1".{field}'
    assert problem in info.value.problem
    assert str(info.value).startswith(f'partner.toml: flavor."f.1".{field}: ')


def test_entry_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_catalogue('[flavor]\n"f.1" = 4\n', "x.toml")
    assert info.value.where == 'x.toml: flavor."f.1"'
    assert "expected a table" in info.value.problem


def test_name_with_spaces_is_refused() -> None:
    with pytest.raises(ConfigError, match="without spaces"):
        load_catalogue('[flavor]\n"s3 large" = { vcpus = 1, ram_mb = 1 }\n', "x.toml")


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("", "x.toml", "no flavors defined"),
        ("[flavor]\n", "x.toml", "no flavors defined"),
        ("flavor = 3\n", "x.toml", "no flavors defined"),
        ('[flavors]\n"a" = { vcpus = 1, ram_mb = 1 }\n', "x.toml: flavors", "unknown top-level key"),
        ("[flavor\n", "x.toml", "not valid TOML"),
    ],
)
def test_malformed_catalogue_is_refused(text: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalogue(text, "x.toml")
    assert info.value.where == where
    assert problem in info.value.problem


def test_invalid_toml_chains_the_parser_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_catalogue('[flavor]\n"a" = { vcpus = 1, vcpus = 2 }\n', "dup.toml")
    assert info.value.__cause__ is not None


def test_get_flavor_unknown_name_lists_close_names() -> None:
    with pytest.raises(InvalidRequest) as info:
        get_flavor("s3.large.3")
    message = str(info.value)
    assert "unknown flavor 's3.large.3'" in message
    assert "did you mean" in message
    assert "s3.large.2" in message
    assert isinstance(info.value, ValueError)


def test_get_flavor_unknown_name_without_close_match_lists_a_few_valid_names() -> None:
    with pytest.raises(InvalidRequest) as info:
        get_flavor("zzz")
    message = str(info.value)
    assert "valid flavors include: " + ", ".join(sorted(FLAVORS)[:5]) in message
    assert f"({len(FLAVORS)} flavors in the catalogue)" in message


def test_get_flavor_uses_the_given_catalogue() -> None:
    catalogue = {"tiny.1": Flavor("tiny.1", 1, 512)}
    assert get_flavor("tiny.1", catalogue) is catalogue["tiny.1"]
    with pytest.raises(InvalidRequest, match="tiny.1"):
        get_flavor("s3.large.2", catalogue)


flavors_st = st.dictionaries(
    keys=st.from_regex(r"[a-z][a-z0-9]{0,3}\.[a-z0-9]{1,6}\.[0-9]{1,2}", fullmatch=True),
    values=st.tuples(st.integers(1, 512), st.integers(1, 4 * 1024 * 1024), st.integers(0, LOCAL_DISK_GB_MAX)),
    min_size=1,
    max_size=10,
)


@settings(max_examples=50, deadline=None)
@given(flavors_st)
def test_any_valid_catalogue_round_trips(entries: dict[str, tuple[int, int, int]]) -> None:
    lines = ["[flavor]"] + [
        f'"{name}" = {{ vcpus = {v}, ram_mb = {r}, local_disk_gb = {d} }}' for name, (v, r, d) in entries.items()
    ]
    catalogue = load_catalogue("\n".join(lines), "gen.toml")
    assert catalogue == {name: Flavor(name, v, r, d) for name, (v, r, d) in entries.items()}

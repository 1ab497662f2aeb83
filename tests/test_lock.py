"""The lock files: every package that `pyproject.toml` asks for, in every extra, is pinned in each flavour's lock
to a version its range admits, so `make` (which installs through the lock) and the image resolve the same."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FLAVOURS = {"cpu": "faiss-cpu", "gpu": "faiss-gpu"}
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)\s*(?:;\s*(.+))?$")


def lock_pins(flavour: str) -> dict[str, list[tuple[Version, Marker | None]]]:
    """The pins of requirements/<flavour>.txt by package: (version, marker or None) for each line."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in (ROOT / "requirements" / f"{flavour}.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        assert m, f"requirements/{flavour}.txt: {line!r} is not an exact pin"
        marker = Marker(m.group(3)) if m.group(3) else None
        pins.setdefault(canonicalize_name(m.group(1)), []).append((Version(m.group(2)), marker))
    return pins


def wanted(flavour: str) -> list[Requirement]:
    """What pyproject asks for with every extra but the other flavour's FAISS."""
    extras = PROJECT["optional-dependencies"]
    other = next(f for f in FLAVOURS if f != flavour)
    reqs = list(PROJECT["dependencies"])
    for name, items in extras.items():
        if name != other:
            reqs += items
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_every_requirement_of_every_extra_is_pinned_within_its_range(flavour):
    pins = lock_pins(flavour)
    missing, outside = [], []
    for req in wanted(flavour):
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
        elif not any(req.specifier.contains(v, prereleases=True) for v, _ in pins[name]):
            outside.append(f"{req} (locked {[str(v) for v, _ in pins[name]]})")
    fix = "run `make lock` and commit requirements/"
    assert not missing, f"requirements/{flavour}.txt lacks {missing}: {fix}"
    assert not outside, f"requirements/{flavour}.txt pins outside pyproject's ranges: {outside}: {fix}"


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_lock_pins_the_public_torch_build_and_only_its_flavours_faiss(flavour):
    pins = lock_pins(flavour)
    # a local build label (2.13.0+cpu) exists on no public index: the CPU wheel is chosen by where torch
    # is installed from (the Makefile), and 2.13.0+cpu satisfies the lock's 2.13.0
    assert [str(v) for v, _ in pins["torch"]] == ["2.13.0"]
    assert not [n for n, vs in pins.items() for v, _ in vs if v.local], "no local version labels in a lock"
    assert FLAVOURS[flavour] in pins
    assert all(f not in pins for f in FLAVOURS.values() if f != FLAVOURS[flavour])


def test_makefile_and_image_install_through_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/$(FAISS_EXTRA).txt" in makefile
    install = re.search(r"^\$\(VENV\)/\.installed: (.*)$", makefile, re.M)
    assert install and "$(LOCK)" in install.group(1).split(), "the install stamp must depend on the lock"
    assert "pip install -q -c $(LOCK) -e '.[dev,$(FAISS_EXTRA)]'" in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*-c requirements/gpu\.txt", dockerfile)

"""``requirements.lock`` (what ``scripts/bootstrap.sh`` installs) and ``pyproject.toml`` agree:
every runtime and dev dependency is pinned exactly, within its range. After changing one, run
``scripts/lock.sh``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def declared() -> dict[str, list[Requirement]]:
    """pyproject's requirements by group: ``runtime``, then each extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"runtime": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(line) for line in lines] for group, lines in groups.items()}


def pins() -> dict[str, Version]:
    """The lock's pins by canonical name; every line that is not a comment must be one."""
    pinned: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = PIN.fullmatch(text)
        assert match, f"requirements.lock:{number}: not an exact pin: {text!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pinned, f"requirements.lock:{number}: {name} pinned twice"
        pinned[name] = Version(match.group(2))
    return pinned


def test_the_lock_pins_every_runtime_and_dev_dependency_within_its_range() -> None:
    groups = declared()
    pinned = pins()
    problems = []
    for requirement in groups["runtime"] + groups["dev"]:
        name = canonicalize_name(requirement.name)
        version = pinned.get(name)
        if version is None:
            problems.append(f"{requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"requirements.lock pins {name}=={version}, outside {requirement}")
    assert problems == [], "run scripts/lock.sh:\n" + "\n".join(problems)


def test_the_lock_leaves_out_the_samples_extra_which_bootstrap_does_not_install() -> None:
    pinned = pins()
    only_samples = {canonicalize_name(r.name) for r in declared()["samples"]}
    assert only_samples and only_samples.isdisjoint(pinned)


def test_python_multipart_is_locked_at_a_release_without_known_advisories() -> None:
    # 0.0.31: the fix of CVE-2026-53540, the latest published advisory (pyproject.toml).
    assert pins()["python-multipart"] >= Version("0.0.31")

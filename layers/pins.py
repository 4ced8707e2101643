"""Pin a layer's requirements, and everything they pull in, to the versions installed in
this environment (the ones the tests ran), for the target platform's markers."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


class PinError(Exception):
    """A requirement this environment cannot pin: not installed, or the wrong version."""


@dataclass
class Pins:
    versions: dict[str, str] = field(default_factory=dict)
    """Project name (normalised) -> the installed version."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Dependencies left out, with the reason."""

    def specifiers(self) -> list[str]:
        return [f"{name}=={version}" for name, version in sorted(self.versions.items())]


def target_environment(arch: str, python: str = "3.12") -> dict[str, str]:
    """Marker values of Lambda's Python runtime on `arch` (aarch64 or x86_64)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }


def installed_version(name: str) -> tuple[str, list[str]] | None:
    """(version, requirements) of an installed distribution, None if absent."""
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return distribution.version, list(distribution.requires or [])


def pin(
    requirements: Iterable[str],
    environment: Mapping[str, str],
    *,
    leave_out: Mapping[str, str],
    installed: Callable[[str], tuple[str, list[str]] | None] = installed_version,
) -> Pins:
    """The closure of `requirements` over installed distributions, each pinned to its
    installed version. What `leave_out` names is recorded, not followed."""
    pins = Pins()
    pending = [(spec, frozenset({""})) for spec in requirements]
    while pending:
        spec, extras = pending.pop()
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as error:
            raise PinError(f"{spec}: {error}") from None
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name in leave_out:
            pins.excluded[name] = leave_out[name]
            continue
        found = installed(name)
        if found is None:
            raise PinError(
                f"{requirement.name} is not installed here, so its version cannot be pinned: "
                "pip install -e '.[runtime,gpu]'"
            )
        version, dependencies = found
        if not requirement.specifier.contains(version, prereleases=True):
            raise PinError(
                f"{requirement.name} {version} is installed, but {spec} is required: "
                "reinstall the project's extras"
            )
        known = pins.versions.get(name)
        pins.versions[name] = version
        if known is None or requirement.extras:
            pending.extend(
                (dependency, frozenset({"", *requirement.extras})) for dependency in dependencies
            )
    return pins

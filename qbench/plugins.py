"""The plugin families and how members reach them.

Built-in members live one module per member in their family's folder and register on import;
every module of those folders is imported (no central list to edit). Other packages add
members through the `qbench.plugins` entry-point group, and the QBENCH_PLUGINS environment
variable names extra modules (comma-separated) — child processes inherit it, so a member
registered that way is known where the cell runs too.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from qbench.registry import Registry

ENTRY_POINT_GROUP = "qbench.plugins"
ENV_VAR = "QBENCH_PLUGINS"


@dataclass(frozen=True)
class Families:
    models: Registry[Any]
    datasets: Registry[Any]
    methods: Registry[Any]
    backends: Registry[Any]
    power_meters: Registry[Any]
    transports: Registry[Any]
    executors: Registry[Any]

    def by_name(self, family: str) -> Registry[Any]:
        return getattr(self, family.replace("-", "_"))

    @property
    def names(self) -> tuple[str, ...]:
        return (
            "models",
            "datasets",
            "methods",
            "backends",
            "power_meters",
            "transports",
            "executors",
        )


# Attributes each family's members must define; checked when a member registers.
models: Registry[Any] = Registry("model", ("Params", "dataset", "format", "load"))
datasets: Registry[Any] = Registry("dataset", ("load", "labelled"))
methods: Registry[Any] = Registry("method", ("Params", "produces", "make", "execution"))
backends: Registry[Any] = Registry("backend", ("Params", "loads", "requires", "open"))
power_meters: Registry[Any] = Registry("power meter", ("Params", "available"))
transports: Registry[Any] = Registry("transport", ("Params", "run_cell"))
executors: Registry[Any] = Registry("executor", ("Params", "execute"))

FAMILIES = Families(models, datasets, methods, backends, power_meters, transports, executors)

_FOLDERS = ("models", "datasets", "methods", "backends", "power", "transports", "executors")
_loaded = False


def load_builtin(folder: str, family: str, wanted: tuple[str, ...] = ()) -> Families:
    """Import the built-in members of one family's folder only (e.g. "power", "power_meters"):
    a process that needs one family (the measure stage's power meters) does not import every
    backend's runtime. Where a `wanted` member is not built in (a plugin's), load_all."""
    registry = FAMILIES.by_name(family)
    package = importlib.import_module(f"qbench.{folder}")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"qbench.{folder}.{info.name}")
    if any(name not in registry for name in wanted):
        return load_all()
    return FAMILIES


def load_all() -> Families:
    """Import built-in members, entry points and QBENCH_PLUGINS modules (once per process)."""
    global _loaded
    if _loaded:
        return FAMILIES
    _loaded = True
    for folder in _FOLDERS:
        package = importlib.import_module(f"qbench.{folder}")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and info.name != "base":
                importlib.import_module(f"qbench.{folder}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if callable(loaded) and not isinstance(loaded, type(sys)):
                loaded(FAMILIES)
        except Exception as exc:  # a broken plugin package: one line naming it, not a traceback
            dist = ep.dist.name if ep.dist is not None else "?"
            raise PluginError(f"plugin entry point {ep.name} = {ep.value} (package {dist}) "
                              f"failed to load: {_one_line(exc)}") from None  # fmt: skip
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"{ENV_VAR}: module {module!r} cannot be imported: "
                              f"{_one_line(exc)}") from None  # fmt: skip
    return FAMILIES


def load_members(wanted: dict[str, tuple[str, str]]) -> Families:
    """Import only the modules that define the named members, {family: (name, module)}: the
    measure stage's process then holds one backend's runtime, not every family's imports
    (its peak memory is the cell's own). A member its module does not register by itself
    (an entry point's function registers it) falls back to `load_all`."""
    for family, (name, module) in wanted.items():
        if name in FAMILIES.by_name(family):
            continue
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
        if name not in FAMILIES.by_name(family):
            return load_all()
    return FAMILIES


class PluginError(ValueError):
    """A plugin named by an entry point or QBENCH_PLUGINS that cannot be loaded (one line)."""


def plugin_modules() -> list[str]:
    """The modules QBENCH_PLUGINS names, in order."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]

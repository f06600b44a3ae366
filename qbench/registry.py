"""Plugin registries: one `Registry` per family, members registered by decorator.

Members are validated when they register (pluggy's lesson): a member without a description,
with a malformed name or missing the attributes its family requires fails at import, not at
the first run that needs it. Registries are plain objects that tests can copy and reset.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9_.\-]*$")


class RegistryError(ValueError):
    """A member failed validation, or a lookup named no member."""


@dataclass
class Registry(Generic[T]):
    """Named members of one plugin family.

    `required` lists attributes every member must define (checked at registration).
    """

    family: str
    required: tuple[str, ...] = ()
    _members: dict[str, T] = field(default_factory=dict)

    def register(self, obj: T | None = None, *, name: str | None = None) -> Any:
        """Register `obj` (usable bare or as a decorator). The name is `obj.name` unless given."""

        def add(member: T) -> T:
            member_name = name or getattr(member, "name", None)
            if not isinstance(member_name, str) or not _NAME.match(member_name):
                raise RegistryError(
                    f"{self.family}: member {member!r} needs a lowercase `name` "
                    f"matching {_NAME.pattern}, got {member_name!r}"
                )
            description = getattr(member, "description", "")
            if not isinstance(description, str) or not description.strip():
                raise RegistryError(
                    f"{self.family}: member {member_name!r} needs a one-line `description`"
                )
            missing = [a for a in self.required if not hasattr(member, a)]
            if missing:
                raise RegistryError(
                    f"{self.family}: member {member_name!r} lacks {', '.join(missing)}"
                )
            if member_name in self._members and self._members[member_name] is not member:
                warnings.warn(
                    f"{self.family}: {member_name!r} registered twice; the later one wins",
                    stacklevel=3,
                )
            self._members[member_name] = member
            return member

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._members[name]
        except KeyError:
            known = ", ".join(sorted(self._members)) or "none"
            raise RegistryError(f"unknown {self.family} {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._members))

    def __len__(self) -> int:
        return len(self._members)

    def names(self, pattern: str = "*") -> list[str]:
        """Member names matching an fnmatch pattern, sorted (timm's `list_models` style)."""
        return [n for n in sorted(self._members) if fnmatch.fnmatch(n, pattern)]

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._members.items())

    def copy(self) -> Registry[T]:
        return Registry(self.family, self.required, dict(self._members))

    def unregister(self, name: str) -> None:
        self._members.pop(name, None)


Factory = Callable[..., Any]

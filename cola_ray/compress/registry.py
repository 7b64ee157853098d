"""The registry of compression recipes: a name -> a function that builds llm-compressor modifiers.

A recipe is one plain builder function whose keyword parameters ARE its overridable settings
(their defaults are the recipe's defaults), so a new method is one decorated function, and the
parameters a user may set from YAML are read off the signature instead of a second list that
could drift. Several names may share one builder with different defaults (stacked decorators).
The built-in recipes are the modules of this package that register themselves (found by
`cola_ray.registry.Registry` on the first lookup: a new method is one new file).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cola_ray.errors import UserError
from cola_ray.registry import Registry

Builder = Callable[..., list]

# The module class most recipes target (llm-compressor matches class names and "re:" patterns).
LINEAR = ("Linear",)


@dataclass(frozen=True)
class Recipe:
    """A registered recipe: its builder, the defaults this name gives it, and whether it needs
    calibration data (round-to-nearest does not, so no forward passes are spent on it)."""

    name: str
    builder: Builder
    overrides: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = True

    @property
    def defaults(self) -> dict[str, Any]:
        """Every settable parameter and its default under this recipe name."""
        params = inspect.signature(self.builder).parameters
        return {k: self.overrides.get(k, p.default) for k, p in params.items()}

    @property
    def description(self) -> str:
        return (inspect.getdoc(self.builder) or "").split("\n", 1)[0]

    def modifiers(self, params: dict[str, Any] | None = None) -> list:
        """Build fresh llm-compressor modifiers; a bad parameter is a one-line UserError."""
        params = dict(params or {})
        allowed = self.defaults
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise UserError(
                f"recipe {self.name!r}: unknown parameter {unknown[0]!r} "
                f"(expected one of {', '.join(sorted(allowed))})"
            )
        try:
            return self.builder(**{**allowed, **params})
        except UserError as e:
            raise UserError(f"recipe {self.name!r}: {e}") from e
        except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
            raise UserError(f"recipe {self.name!r} with {params}: {_first_line(e)}") from e


RECIPES: Registry[Recipe] = Registry("compression recipe", "cola_ray.compress")


def register_recipe(name: str, *, calibrated: bool = True, **overrides: Any) -> Callable[[Builder], Builder]:
    """Register `builder` under `name`; `overrides` change its defaults for this name only.

    Example: `@register_recipe("wanda-2of4", mask_structure="2:4")` above the Wanda builder
    adds a 2:4 variant without a second builder.
    """

    def decorate(builder: Builder) -> Builder:
        params = inspect.signature(builder).parameters
        unknown = set(overrides) - set(params)
        if unknown:
            raise TypeError(f"register_recipe({name!r}): {builder.__name__} has no parameter {sorted(unknown)}")
        RECIPES.add(name, Recipe(name, builder, dict(overrides), calibrated))
        return builder

    return decorate


def get_recipe(name: str) -> Recipe:
    return RECIPES.lookup(name)


def list_recipes() -> list[str]:
    return RECIPES.names()


def build_modifiers(name: str, params: dict[str, Any] | None = None) -> list:
    """The llm-compressor modifiers of recipe `name` with `params` (e.g. from YAML) applied."""
    return get_recipe(name).modifiers(params)


def _first_line(e: Exception) -> str:
    """pydantic errors span many lines; keep the line that names the field and the problem."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) >= 3 and "validation error" in lines[0]:
        return f"{lines[1]}: {lines[2].split(' [type=')[0]}"
    return lines[0] if lines else type(e).__name__

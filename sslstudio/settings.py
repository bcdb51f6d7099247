"""Declared settings: every numeric setting's valid range is written once, beside the setting.

A setting is a dataclass field made with :func:`param`; its ``field.metadata`` holds

``help``
    one line saying what the setting does;
``min`` / ``max``
    the bounds (``None``: unbounded on that side);
``min_exclusive`` / ``max_exclusive``
    ``True`` when the bound itself is not allowed ("> 0" is ``min=0, min_exclusive=True``);
    absent means ``False``;
``choices``
    the allowed values (``None``: any);
``free_on_resume``
    ``True`` for a run setting that may change when the run is resumed; absent means ``False``;
``flag``
    how a user names the setting in messages: the command-line spelling (``--image-size``) when
    there is one, else the plain name; absent means ``--`` + the field name with dashes.

and, for the window's form (:class:`sslstudio.gui.config_form.ConfigForm`), which reads nothing else:

``label``
    the form's name for the setting (``lr`` -> ``Learning rate``); absent means the field name in words;
``form``
    ``False`` for a setting the form does not show (a path the page supplies, an option for experts);
    absent means ``True``; a field without a default (``task``, ``data``...) is never in a form;
``unit`` / ``step`` / ``decimals``
    the spin box's suffix (``px``), its arrow step and a float's decimals; absent means none, 1 and
    enough decimals for the default and the bounds;
``special``
    the word the spin box shows at its minimum, when that value means something else (DeepCluster's
    ``clusters`` 0 is ``auto``).

Task configs (:mod:`sslstudio.tasks.base`), the run configs (``PretrainConfig``,
``FinetuneConfig``) and the small declarations of ``compare`` and ``preview`` use the same keys,
and :func:`check_settings` enforces them at each engine entry, so the command line, the window and
Python callers meet the same limits; the window's spin boxes take their ranges from
:func:`spin_range`. Optional settings (``None``: the task's or paper's default) are checked only
when given. No Qt here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Callable

from sslstudio.errors import ConfigError

#: Working resolution of every network input (pixels a side): 0 and 100000 used to be accepted.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
#: Upper bound of every epoch / pass count.
MAX_EPOCHS = 10_000
#: Upper bound of every batch size.
MAX_BATCH_SIZE = 65_536
#: Upper bound of a label budget in images per class.
MAX_PER_CLASS = 100_000

_INT_LIMIT = 2**31 - 1  # what a spin box can hold
_FLOAT_LIMIT = 1e9


def param(default: Any = dataclasses.MISSING, help: str = "", *, min: float | None = None,
          max: float | None = None, choices: tuple | None = None, min_exclusive: bool = False,
          max_exclusive: bool = False, flag: str | None = None,
          default_factory: Any = dataclasses.MISSING, free_on_resume: bool = False, label: str | None = None,
          form: bool = True, unit: str | None = None, step: float | None = None,
          decimals: int | None = None, special: str | None = None) -> Any:
    """A dataclass field with its help text and allowed range (what a form shows and what is checked).

    ``free_on_resume`` marks a run setting that may change when a run is resumed (the device, the
    loader workers...): it does not change what the run computes. Every other run setting is the run's
    own and is refused if changed (see :func:`sslstudio.engine.resume_config`). ``label``, ``form``,
    ``unit``, ``step``, ``decimals`` and ``special`` say how the window's form shows it (see the module's
    docstring)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults in frozen configs")
    meta: dict[str, Any] = {"help": help, "min": min, "max": max, "choices": choices}
    if min_exclusive:
        meta["min_exclusive"] = True
    if max_exclusive:
        meta["max_exclusive"] = True
    if flag:
        meta["flag"] = flag
    if free_on_resume:
        meta["free_on_resume"] = True
    shown = {"label": label, "unit": unit, "step": step, "decimals": decimals, "special": special}
    meta.update({k: v for k, v in shown.items() if v is not None})
    if not form:
        meta["form"] = False
    kwargs: dict[str, Any] = {}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(metadata=meta, **kwargs)


def _fields(declaration: Any) -> dict[str, dataclasses.Field]:
    cls = declaration if isinstance(declaration, type) else type(declaration)
    return {f.name: f for f in dataclasses.fields(cls)}


def declared(declaration: Any, name: str) -> dict:
    """The metadata (help, min, max, ...) of setting ``name`` of a declaration (class or instance)."""
    return dict(_fields(declaration)[name].metadata)


def label_of(f: dataclasses.Field) -> str:
    """How the window names a setting: its ``label``, else the field name in words (``image_size`` ->
    ``Image size``)."""
    return f.metadata.get("label") or f.name.replace("_", " ").capitalize()


def flag_of(f: dataclasses.Field) -> str:
    """How messages name a setting: its ``flag`` (e.g. ``--image-size``), else ``--`` + the name with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _num(x: Any) -> str:
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"
    return str(x)


def range_text(meta: Mapping) -> str:
    """The allowed range in words: ``between 16 and 1024``, ``greater than 0``, ``at least 0 and less than 0.5``."""
    lo, hi = meta.get("min"), meta.get("max")
    lo_x, hi_x = bool(meta.get("min_exclusive")), bool(meta.get("max_exclusive"))
    if lo is not None and hi is not None and not lo_x and not hi_x:
        return f"between {_num(lo)} and {_num(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'greater than' if lo_x else 'at least'} {_num(lo)}")
    if hi is not None:
        parts.append(f"{'less than' if hi_x else 'at most'} {_num(hi)}")
    return " and ".join(parts)


def check_value(name: str, value: Any, meta: Mapping) -> None:
    """Raise :class:`ConfigError` (one sentence naming ``name``) when ``value`` breaks ``meta``'s range or
    choices; ``None`` (the default) always passes."""
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}.")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number {range_text(meta)}; got {value!r}.")
    too_low = lo is not None and (value <= lo if meta.get("min_exclusive") else value < lo)
    too_high = hi is not None and (value >= hi if meta.get("max_exclusive") else value > hi)
    if too_low or too_high:
        raise ConfigError(f"{name} must be {range_text(meta)}; got {_num(value)}.")


def check_settings(obj_or_values: Any, declaration: Any = None, *,
                   name: Callable[[dataclasses.Field], str] = flag_of) -> None:
    """Check settings against their declaration; raise :class:`ConfigError` with a sentence on the first bad one.

    ``obj_or_values`` is a dataclass instance (its own class is the declaration unless one is given)
    or a mapping of setting names to values (names the declaration lacks are not checked; absent
    names are not checked). ``declaration`` is a dataclass made with :func:`param`. ``name`` says
    how a message names a field (default: its command-line flag).
    """
    if declaration is None:
        if isinstance(obj_or_values, Mapping):
            raise TypeError("check_settings needs a declaration for a mapping of values")
        declaration = obj_or_values
    fields = _fields(declaration)
    if isinstance(obj_or_values, Mapping):
        values = {k: v for k, v in obj_or_values.items() if k in fields}
    else:
        values = {k: getattr(obj_or_values, k) for k in fields if hasattr(obj_or_values, k)}
    for key, value in values.items():
        f = fields[key]
        check_value(name(f), value, f.metadata)


def spin_range(declaration: Any, name: str, decimals: int = 0) -> tuple:
    """The ``(minimum, maximum)`` a spin box showing ``decimals`` decimals takes for a declared setting:
    an exclusive bound moves in by one step of the box; an absent one is the box's widest."""
    meta = declared(declaration, name)
    step = 10.0 ** -decimals if decimals else 1
    lo, hi = meta.get("min"), meta.get("max")
    limit = _INT_LIMIT if not decimals else _FLOAT_LIMIT
    lo = -limit if lo is None else lo + step if meta.get("min_exclusive") else lo
    hi = limit if hi is None else hi - step if meta.get("max_exclusive") else hi
    if decimals:
        return float(round(lo, decimals)), float(round(hi, decimals))
    return int(math.ceil(lo)), int(math.floor(hi))


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def base_type(f: dataclasses.Field) -> type | None:
    """``int`` for a field annotated ``int`` or ``int | None`` (also as a string annotation)."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    names = [part.strip() for part in str(annotation).split("|") if part.strip() != "None"]
    return _TYPES.get(names[0]) if len(names) == 1 else None


def add_arguments(parser: Any, declaration: type, names: Any, *, defaults: Mapping | None = None,
                  helps: Mapping | None = None) -> None:
    """Add a command-line option for each declared setting in ``names``: its flag, type, choices and
    help come from the declaration, so the CLI cannot drift from it.

    Every option defaults to ``None`` (argparse's), so a command knows which settings were typed;
    the help says the default that applies when it was not (``defaults`` may name another one than
    the declaration's, e.g. a CLI-specific worker count). ``helps`` extends a setting's help text.
    A ``bool`` setting becomes a switch (``--compile``).
    """
    fields = _fields(declaration)
    for name in names:
        f = fields[name]
        meta = f.metadata
        text = meta.get("help", "").rstrip(".")
        if helps and name in helps:
            text = f"{text}; {helps[name]}"
        default = (defaults or {}).get(name, f.default)
        if not (default is None or default is False or default is dataclasses.MISSING) and "default" not in text:
            text += f" (default {default})"
        flag = "--" + name.replace("_", "-")
        kind = base_type(f)
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=text)
            continue
        kwargs: dict[str, Any] = {"help": text}
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if kind in (int, float):
            kwargs["type"] = kind
        parser.add_argument(flag, **kwargs)

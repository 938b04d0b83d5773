"""One parameter schema per command, read by TOML config files, click options and validation.

A :class:`Schema` is a tuple of :class:`Param`. From it come the click options
(:meth:`Schema.click_options`), and :meth:`Schema.resolve` merges, in increasing priority,
the defaults, a TOML file and the options given on the command line, then validates every
value. A bad value raises :class:`ConfigError` naming the parameter, the value and what is
allowed; the CLI turns it into a usage error (exit code 2).
"""

from __future__ import annotations

import math
import numbers
import re
import tomllib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable

import numpy as np


class ConfigError(ValueError):
    """A parameter value that is not allowed."""


# The tables a config file may hold: one per command (a shared file can configure several).
COMMANDS = ("synth", "cluster", "grid", "mnist", "teacher", "recover")


def _is_int(value) -> bool:
    """A real integer: ``int`` or a NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def parse_angle(value) -> float:
    """An angle in radians from a number or an expression such as ``pi/24`` or ``8deg``."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("an angle must be a number or an expression such as pi/24 or 7.5deg, not a boolean")
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"an angle must be a number or an expression such as pi/24 or 7.5deg, not {value!r}")
    text = value.strip().lower().replace(" ", "")
    if text.endswith("deg"):
        return math.radians(float(text[:-3]))
    m = re.fullmatch(r"(\d*\.?\d*)\*?pi(?:/(\d*\.?\d+))?", text)
    if m:
        num = float(m.group(1)) if m.group(1) else 1.0
        den = float(m.group(2)) if m.group(2) else 1.0
        if den == 0:
            raise ValueError("division by zero")
        return num * math.pi / den
    return float(text)


def parse_angles(value) -> float | tuple[float, ...]:
    """One angle (:func:`parse_angle`), or one per hidden layer: ``"pi/24,pi/5"`` or a TOML list."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list of angles")
        return tuple(parse_angle(v) for v in value)
    if isinstance(value, str) and "," in value:
        return tuple(parse_angle(v) for v in value.split(","))
    return parse_angle(value)


def parse_int_list(value) -> tuple[int, ...]:
    """``"8-4-2-1"``, ``"8x4x2x1"``, ``"2,4,8"``, ``"2 4 8"`` or a TOML list of ints.

    One separator (``-``, ``x``, ``,`` or spaces) between two numbers: an empty or
    non-integer part (``"3-x-2-1"``, ``"-1"``, ``[2, 2.5]``) is refused, never skipped.
    """
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not _is_int(v)]
        if bad:
            raise ValueError(f"every entry must be an integer, not {bad[0]!r}")
        return tuple(int(v) for v in value)
    if _is_int(value):
        return (int(value),)
    if not isinstance(value, str):
        raise ValueError(f"give integers such as 8-4-2-1 or 2,4,8, not {value!r}")
    text = value.strip()
    if not text:
        raise ValueError("empty")
    parts = re.split(r"\s*[,x-]\s*|\s+", text)
    if "" in parts:
        raise ValueError(f"{text!r} has an empty entry (a separator - x , at an end or two in a row); "
                         "give positive integers such as 8-4-2-1 or 2,4,8")
    bad = [p for p in parts if not re.fullmatch(r"\d+", p)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a positive integer (give integers such as 8-4-2-1 or 2,4,8)")
    return tuple(int(p) for p in parts)


def parse_float_list(value) -> tuple[float, ...]:
    """``"300,1000"``, one number or a TOML list of numbers (``-`` is a sign here, not a separator)."""
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not _is_number(v)]
        if bad:
            raise ValueError(f"every entry must be a number, not {bad[0]!r}")
        return tuple(float(v) for v in value)
    if _is_number(value):
        return (float(value),)
    if not isinstance(value, str):
        raise ValueError(f"give numbers such as 300,1000, not {value!r}")
    return tuple(float(p) for p in re.split(r"[, ]+", value.strip()) if p)


def parse_flag(value) -> bool:
    """A boolean: ``True``/``False`` or, from a command line, ``true/false``, ``yes/no``, ``on/off``, ``1/0``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _finite(value) -> bool:
    """No NaN or infinity anywhere in a parsed value (a float or a tuple of them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple):
        return all(_finite(v) for v in value)
    return True


@dataclass(frozen=True)
class Param:
    """One parameter.

    Attributes
    ----------
    name : str
        Python name (``n_students``); the CLI option is ``--n-students``, TOML accepts both.
    parse : callable
        Turns a CLI string or TOML value into the Python value (``int``, ``float``, ...).
    default : Any
    help : str
    allowed : str
        Human description of the allowed values, used in errors and ``--help``.
    check : callable, optional
        ``check(value) -> bool``.
    choices : tuple, optional
        Allowed values (checked in addition to ``check``).
    flag : bool
        A boolean ``--x/--no-x`` switch.
    cli : bool
        Whether the parameter is a command-line option (False: config file only).
    aliases : tuple of str
        Older or alternative spellings (Python names), accepted as options and config keys.
    type : str, optional
        The type a config file must give (``"int"``, ``"float"``, ``"bool"``, ``"str"``) when
        ``parse`` is a parser of its own (default: taken from ``parse``, see :attr:`kind`).
    infinite : bool
        Infinity is a value (``inf`` on the command line and in TOML); NaN never is.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    allowed: str = ""
    check: Callable[[Any], bool] | None = None
    choices: tuple | None = None
    flag: bool = False
    cli: bool = True
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    type: str | None = None
    infinite: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> str | None:
        """The value type a config file must give: ``"int"``, ``"float"``, ``"bool"``, ``"str"``,
        or None for a parser of its own (lists, angles, names), which checks its input itself."""
        if self.type is not None:
            return self.type
        if self.flag or self.parse in (bool, parse_flag):
            return "bool"
        return {int: "int", float: "float", str: "str"}.get(self.parse)

    @property
    def allowed_text(self) -> str:
        return self.allowed or ("true or false" if self.kind == "bool" else "see --help")

    def type_problem(self, value, strings: bool) -> str | None:
        """Why ``value`` has the wrong type for this parameter, or None.

        ``strings``: whether a string is parsed (a command-line value) or is itself a wrong
        type (a TOML value, where numbers and booleans have their own syntax).
        """
        kind = self.kind
        if value is None or kind is None:
            return None
        if isinstance(value, str):
            if kind == "str" or strings:
                return None
            wanted = {"int": "an integer", "float": "a number"}.get(kind, "true or false")
            return f"a string where {wanted} is expected (write it without quotes)"
        if kind == "int" and not _is_int(value):
            return f"{_type_name(value)} where an integer is expected"
        if kind == "float" and not _is_number(value):
            return f"{_type_name(value)} where a number is expected"
        if kind == "bool" and not isinstance(value, (bool, np.bool_)):
            return f"{_type_name(value)} where true or false is expected"
        if kind == "str" and not isinstance(value, (str, PathLike)):
            return f"{_type_name(value)} where a string is expected"
        return None

    def validate(self, value):
        if value is None:
            return None
        if isinstance(value, PathLike):
            value = str(value)
        problem = self.type_problem(value, strings=True)
        if problem:
            raise ConfigError(f"{self.option}={value!r}: {problem}; allowed: {self.allowed_text}")
        parse = parse_flag if self.kind == "bool" else self.parse
        try:
            value = parse(value)
        except (TypeError, ValueError, ArithmeticError) as exc:
            why = {"int": "not an integer", "float": "not a number"}.get(self.kind, str(exc))
            raise ConfigError(f"{self.option}={value!r}: cannot parse ({why}); allowed: {self.allowed_text}")
        if not _finite(value) and not (self.infinite and not np.isnan(value)):
            raise ConfigError(f"{self.option}={value!r}: not a finite number; allowed: {self.allowed_text}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.option}={value!r} is not allowed; allowed: {', '.join(map(str, self.choices))}")
        try:
            ok = self.check is None or self.check(value)
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        if not ok:
            raise ConfigError(f"{self.option}={value!r} is not allowed; allowed: {self.allowed}")
        return value


def _type_name(value) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table"}
    for t, name in names.items():
        if isinstance(value, t):
            return f"{name} ({value!r})" if t is not dict else name
    return f"{type(value).__name__} ({value!r})"


@dataclass(frozen=True)
class Schema:
    """The parameters of one command."""

    name: str
    params: tuple[Param, ...]
    cross_checks: tuple[Callable[[dict], str | None], ...] = field(default=())
    # Fills defaults that depend on other parameters (left None by the Param), before the
    # cross checks: ``derive(values) -> values``.
    derive: Callable[[dict], dict] | None = None

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def canonical(self) -> dict[str, str]:
        """Every accepted key (names and aliases, with ``_`` or ``-``) -> the parameter's name."""
        names = {}
        for p in self.params:
            for n in (p.name, *p.aliases):
                names[n] = names[n.replace("_", "-")] = p.name
        return names

    def resolve(self, cli_values: dict | None = None, config: str | Path | dict | None = None) -> dict:
        """Defaults < config file (or dict) < explicitly given CLI values; all validated.

        A config file holds top-level keys or a ``[<command>]`` table (then its top-level keys
        are not read); a table named after another command is skipped (one file may configure
        several commands), any other table is refused. Config values must have their
        parameter's type (``din = 2.7``, ``plots = "false"`` and ``n_students = true`` are
        errors); command-line values are strings and parsed.
        """
        values = self.defaults()
        canonical = self.canonical()
        if config is not None:
            source = str(config) if not isinstance(config, dict) else "the config"
            table = load_toml(config) if not isinstance(config, dict) else dict(config)
            tables = sorted({self.name, *COMMANDS})
            for key, val in table.items():
                if isinstance(val, dict) and key not in tables:
                    raise ConfigError(f"config table [{key}] in {source} is not a command; allowed tables: "
                                      f"{', '.join(tables)} (or parameters at the top level)")
            if isinstance(table.get(self.name), dict):
                where, table = f"[{self.name}]", table[self.name]
            else:
                where = "top level"
            for key, val in table.items():
                if isinstance(val, dict):
                    if where == "top level":
                        continue  # a table for another command in a shared file
                    raise ConfigError(f"config table [{self.name}.{key}] in {source} is not allowed; "
                                      f"[{self.name}] holds parameters only")
                if key not in canonical:
                    known = sorted(p.name for p in self.params)
                    raise ConfigError(
                        f"config key {key!r} is not a parameter of '{self.name}' ({where} of {source}); "
                        f"allowed: {', '.join(known)}"
                    )
                param = self[canonical[key]]
                problem = param.type_problem(val, strings=False)
                if problem:
                    raise ConfigError(f"config key {key!r} = {_toml_repr(val)} ({where} of {source}): {problem}; "
                                      f"allowed: {param.allowed_text}")
                values[canonical[key]] = val
        for key, val in (cli_values or {}).items():
            if val is not None and canonical.get(key, key) in values:
                values[canonical.get(key, key)] = val
        out = {p.name: p.validate(values[p.name]) for p in self.params}
        if self.derive is not None:
            out = self.derive(out)
        for check in self.cross_checks:
            msg = check(out)
            if msg:
                raise ConfigError(msg)
        return out

    def click_options(self, func):
        """Decorate a click command with one option per CLI parameter (default None, so
        that :meth:`resolve` can tell given options from defaults)."""
        import click

        for p in reversed([p for p in self.params if p.cli]):
            # a None default is derived from other parameters: the help text says how
            shown = f" [default: {p.default}]" if p.default is not None else ""
            help_text = f"{p.help}{shown}" + (f" ({p.allowed})" if p.allowed else "")
            if p.flag:
                name = p.name.replace("_", "-")
                func = click.option(f"--{name}/--no-{name}", p.name, default=None, help=help_text)(func)
            else:
                aliases = ["--" + a.replace("_", "-") for a in p.aliases]
                func = click.option(p.option, *aliases, p.name, default=None, help=help_text,
                                    metavar=p.metavar or "VALUE")(func)
        return func


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not a text (TOML) file: byte {exc.start} is not UTF-8; "
                          "give a TOML file such as configs/synth.toml") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = ("; a run's config.json is JSON, not TOML: to rerun a run, give its options on the command line"
                if path.suffix == ".json" else "")
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}{hint}") from None


def _toml_repr(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def _positive(x) -> bool:
    return x > 0


def _unit_interval(x) -> bool:
    return 0 < x <= 1


def _hidden_activation(name: str) -> str:
    from .activations import HIDDEN_ACTIVATIONS

    if name not in HIDDEN_ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(HIDDEN_ACTIVATIONS)}")
    return name


def _backend(name: str) -> str:
    from .train import backend_names

    if name not in backend_names():
        raise ValueError(f"unknown backend {name!r}; allowed: {', '.join(backend_names())}")
    return name


def gamma_n_problem(gamma: float, n_students: int) -> str | None:
    """The message for a gamma and N whose big clusters would hold a single neuron (a schema
    cross-check: the clustering refuses them, and only after the students were trained)."""
    if math.ceil(gamma * n_students - 1e-9) < 2:
        return (f"--gamma={gamma} with --n-students={n_students}: a cluster needs ceil(gamma*N) >= 2 neurons; "
                "raise gamma or N")
    return None


def reexpand_problem(reexpand: int, n_hidden: int, deep_option: str) -> str | None:
    """The message for ``--reexpand`` on a one-hidden-layer teacher (re-expansion follows
    the retraining between layers)."""
    if reexpand and n_hidden < 2:
        return f"--reexpand={reexpand} applies to deep teachers only: give {deep_option}"
    return None


# Parameters shared by several commands: defined once here, composed into each schema.
SEED = Param("seed", int, 0, "Seed of every random choice (teacher, data, students).", ">= 0", lambda s: s >= 0)
N_STUDENTS = Param("n_students", int, 20, "Number of students N.", ">= 1", lambda n: n >= 1)
RHO = Param("rho", float, 4.0, "Overparameterisation: student width = rho * teacher width.", ">= 1 and <= 1000",
            lambda r: 1 <= r <= 1000)
GAMMA = Param("gamma", float, 0.8, "Keep clusters holding at least gamma*N neurons.", "0 < gamma <= 1", _unit_interval)
BETA = Param(
    "beta",
    parse_angle,
    "pi/24",
    "Drop clusters whose median within-cluster angle exceeds beta (radians; 'pi/24' or '7.5deg' accepted).",
    "0 < beta <= pi",
    lambda b: 0 < b <= math.pi,
)
ACTIVATION = Param("act", _hidden_activation, "g", "Hidden activation (API: activation=).", "a registered activation name",
                   aliases=("activation",), type="str")
REEXPAND = Param("reexpand", int, 0, "Deep teachers: after each bias filter, retrain with this many free neurons "
                 "beside the reconstructed layer and add the neurons they agree on, when they improve the fit "
                 "(not in the paper; finds neurons the clustering missed). 0: off.", ">= 0", lambda v: v >= 0,
                 metavar="INT")
BACKEND = Param("backend", _backend, "flow", "Trainer backend.", "flow, torch, julia, gn (one hidden layer)", type="str")
JOBS = Param("jobs", int, 0, "Worker processes (0: all cores).", ">= 0", lambda j: j >= 0)
OUT = Param("out", str, "", "Run directory (default: runs/<command>-<parameters>).", "a path")

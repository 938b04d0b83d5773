"""One parameter schema per command, read by TOML config files, click options and validation.

A :class:`Schema` is a tuple of :class:`Param`. From it come the click options
(:meth:`Schema.click_options`), and :meth:`Schema.resolve` merges, in increasing priority,
the defaults, a TOML file and the options given on the command line, then validates every
value. A bad value raises :class:`ConfigError` naming the parameter, the value and what is
allowed; the CLI turns it into a usage error (exit code 2).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A parameter value that is not allowed."""


def parse_angle(value) -> float:
    """An angle in radians from a number or an expression such as ``pi/24`` or ``8deg``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if text.endswith("deg"):
        return math.radians(float(text[:-3]))
    m = re.fullmatch(r"(\d*\.?\d*)\*?pi(?:/(\d*\.?\d+))?", text)
    if m:
        num = float(m.group(1)) if m.group(1) else 1.0
        den = float(m.group(2)) if m.group(2) else 1.0
        return num * math.pi / den
    return float(text)


def parse_int_list(value) -> tuple[int, ...]:
    """``"8-4-2-1"``, ``"2,4,8"`` or a TOML list of ints."""
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    parts = [p for p in re.split(r"[,\-x ]+", str(value).strip()) if p]
    return tuple(int(p) for p in parts)


def parse_float_list(value) -> tuple[float, ...]:
    """``"300,1000"``, one number or a TOML list of numbers (``-`` is a sign here, not a separator)."""
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    return tuple(float(p) for p in re.split(r"[, ]+", str(value).strip()) if p)


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

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value):
        if value is None:
            return None
        try:
            value = self.parse(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.option}={value!r}: cannot parse ({exc}); allowed: {self.allowed or 'see --help'}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.option}={value!r} is not allowed; allowed: {', '.join(map(str, self.choices))}")
        if self.check is not None and not self.check(value):
            raise ConfigError(f"{self.option}={value!r} is not allowed; allowed: {self.allowed}")
        return value


@dataclass(frozen=True)
class Schema:
    """The parameters of one command."""

    name: str
    params: tuple[Param, ...]
    cross_checks: tuple[Callable[[dict], str | None], ...] = field(default=())

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
        """Defaults < config file (or dict) < explicitly given CLI values; all validated."""
        values = self.defaults()
        if config is not None:
            table = load_toml(config) if not isinstance(config, dict) else dict(config)
            table = table.get(self.name, table)
            canonical = self.canonical()
            for key, val in table.items():
                if isinstance(val, dict):
                    continue  # a section for another command in a shared file
                if key not in canonical:
                    known = sorted(p.name for p in self.params)
                    raise ConfigError(
                        f"config key {key!r} is not a parameter of '{self.name}'; allowed: {', '.join(known)}"
                    )
                values[canonical[key]] = val
        canonical = self.canonical()
        for key, val in (cli_values or {}).items():
            if val is not None and canonical.get(key, key) in values:
                values[canonical.get(key, key)] = val
        out = {p.name: p.validate(values[p.name]) for p in self.params}
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
            help_text = f"{p.help} [default: {p.default}]" + (f" ({p.allowed})" if p.allowed else "")
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
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


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
RHO = Param("rho", float, 4.0, "Overparameterisation: student width = rho * teacher width.", ">= 1", lambda r: r >= 1)
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
                   aliases=("activation",))
REEXPAND = Param("reexpand", int, 0, "Deep teachers: after each bias filter, retrain with this many free neurons "
                 "beside the reconstructed layer and add the neurons they agree on, when they improve the fit "
                 "(not in the paper; finds neurons the clustering missed). 0: off.", ">= 0", lambda v: v >= 0,
                 metavar="INT")
BACKEND = Param("backend", _backend, "flow", "Trainer backend.", "flow, torch, julia")
JOBS = Param("jobs", int, 0, "Worker processes (0: all cores).", ">= 0", lambda j: j >= 0)
OUT = Param("out", str, "", "Run directory (default: runs/<command>-<parameters>).", "a path")

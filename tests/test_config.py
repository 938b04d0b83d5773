import math

import pytest

from ec.config import ACTIVATION, BETA, GAMMA, RHO, SEED, ConfigError, Schema, parse_angle, parse_float_list, parse_int_list

SCHEMA = Schema("demo", (SEED, RHO, GAMMA, BETA, ACTIVATION))


def test_priority_defaults_config_cli(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('rho = 2\ngamma = 0.5\n[demo]\nbeta = "pi/12"\n')
    # a [demo] section takes precedence over top-level keys in the same file
    out = SCHEMA.resolve({"gamma": "0.9", "rho": None}, cfg)
    assert out == {"seed": 0, "rho": 4.0, "gamma": 0.9, "beta": math.pi / 12, "act": "g"}
    cfg.write_text('rho = 2\ngamma = 0.5\n')
    assert SCHEMA.resolve({}, cfg)["rho"] == 2.0


@pytest.mark.parametrize(
    "values, match",
    [
        ({"rho": "0.5"}, r"--rho=0.5 is not allowed; allowed: >= 1"),
        ({"gamma": "0"}, r"--gamma=0.0 is not allowed; allowed: 0 < gamma <= 1"),
        ({"gamma": "abc"}, r"--gamma='abc': cannot parse"),
        ({"act": "swish"}, r"unknown activation 'swish'; allowed: g, softplus"),
        ({"seed": "-1"}, r"--seed=-1 is not allowed"),
    ],
)
def test_bad_values_name_value_and_allowed(values, match):
    with pytest.raises(ConfigError, match=match):
        SCHEMA.resolve(values)


def test_unknown_config_key_and_missing_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("rhoo = 3\n")
    with pytest.raises(ConfigError, match="'rhoo' is not a parameter of 'demo'"):
        SCHEMA.resolve({}, cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        SCHEMA.resolve({}, tmp_path / "missing.toml")
    cfg.write_text("rho = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        SCHEMA.resolve({}, cfg)


def test_parsers():
    assert parse_angle("pi/24") == pytest.approx(math.pi / 24)
    assert parse_angle("2pi/3") == pytest.approx(2 * math.pi / 3)
    assert parse_angle("7.5deg") == pytest.approx(math.radians(7.5))
    assert parse_angle(0.1) == 0.1
    assert parse_int_list("8-4-2-1") == (8, 4, 2, 1)
    assert parse_int_list([2, 4]) == (2, 4)
    assert parse_int_list("2,4, 8") == (2, 4, 8)
    assert parse_float_list("300,1000") == (300.0, 1000.0)
    assert parse_float_list("1e-3 -2.5") == (1e-3, -2.5)
    assert parse_float_list(60) == (60.0,) and parse_float_list([1, 2.5]) == (1.0, 2.5)


def test_click_options_generated_from_schema():
    import click
    from click.testing import CliRunner

    @click.command()
    @SCHEMA.click_options
    def cmd(**kw):
        click.echo(SCHEMA.resolve(kw)["rho"])

    runner = CliRunner()
    assert runner.invoke(cmd, ["--rho", "8"]).output.strip() == "8.0"
    help_text = runner.invoke(cmd, ["--help"]).output
    assert "--gamma" in help_text and "0 < gamma <= 1" in help_text

"""The configuration file as an operator writes it: read from a real file, each
mistake named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import load_config
from switch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "conf" / "switch.toml"
CURRENCIES = 'currencies = ["156"]'


def _with(tmp_path: Path, currencies: str) -> Path:
    text = DEMO.read_text()
    assert CURRENCIES in text
    config = tmp_path / "switch.toml"
    config.write_text(text.replace(CURRENCIES, currencies, 1))
    (tmp_path / "dialects").symlink_to(REPO / "conf" / "dialects")
    return config


def test_settled_currencies_default_to_cny_and_may_be_listed(tmp_path: Path) -> None:
    assert load_config(_with(tmp_path, "")).switch.currencies == ("156",)
    (tmp_path / "switch.toml").unlink()
    (tmp_path / "dialects").unlink()
    listed = load_config(_with(tmp_path, 'currencies = ["156", "392"]'))
    assert listed.switch.currencies == ("156", "392")


@pytest.mark.parametrize(
    ("currencies", "named"),
    [
        ('currencies = ["156", "999"]', "switch.currencies: 999 is not an ISO 4217 currency"),
        ('currencies = ["CNY"]', "switch.currencies"),
        ("currencies = []", "switch.currencies"),
    ],
)
def test_a_currency_the_switch_cannot_settle_fails_at_start_naming_the_key(
    tmp_path: Path, currencies: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(_with(tmp_path, currencies))

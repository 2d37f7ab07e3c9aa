"""A reload that swaps the risk rules says so: the rules file's name is a config key but
its content is not, so a changed rules file (the same name) was reported by `switch
reload` as "nothing changed" although the new rules were in force. Now the answer has a
``risk.rules OLD → NEW`` line (their versions, risk.md), as the dry run has; an unchanged
file still changes nothing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio

from switch.admin.commands import ReloadAnswer, reload_lines
from tests.net.helpers import pos_client, start_switch
from tests.net.test_risk_e2e import DECISIONS, config_with_rules, sale, stop


async def test_a_reload_that_swaps_the_rules_says_so(tmp_path: Path) -> None:
    config = config_with_rules(tmp_path, DECISIONS)
    async with trio.open_nursery() as nursery:
        app = await start_switch(nursery, config)
        pos = await pos_client(app)
        before = await sale(pos, 1, 150000)
        old_version = app.risk.rules.version
        (tmp_path / "risk.toml").write_text(DECISIONS.replace("100000", "200000"))
        planned = await app.reload(app.config, dry_run=True)
        applied = await app.reload(app.config)
        after = await sale(pos, 2, 150000)
        new_version = app.risk.rules.version
        again = await app.reload(app.config)
        await stop(app)
    assert before[39] == "61" and after[39] == "00" and new_version != old_version
    printed = [
        reload_lines(msgspec.json.decode(msgspec.json.encode(result), type=ReloadAnswer))
        for result in (planned, applied, again)
    ]
    change = f'  risk.rules "{old_version}" \u2192 "{new_version}"'
    assert change in printed[0], printed[0]
    assert change in printed[1] and not printed[1][0].startswith("reloaded: nothing"), printed
    assert printed[2][0].startswith("reloaded: nothing changed"), printed[2]

"""Each command's --help shows the settings it reads, not the training config groups (before,
ctem-curate --help listed callbacks, data, trainer, ... that do not apply to it)."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import run_command

TRAINING_GROUPS = ("callbacks:", "trainer:", "stage:", "logger:", "experiment:")


@pytest.mark.slow
@pytest.mark.parametrize(("module", "own"), [("ctem.cli.eval", "model_path:"), ("ctem.cli.mine", "mining:"), ("ctem.cli.curate", "dedup:"),
                                           ("ctem.cli.score", "teacher_kind:"), ("ctem.cli.merge", "example_temperature:")])
def test_a_command_lists_its_own_settings_only(tmp_path, module, own) -> None:
    proc = run_command(module, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = "ctem-" + module.rsplit(".", 1)[1]
    assert proc.stdout.startswith(f"{command}: set any setting below as key=value") and f"\n{own}" in proc.stdout
    assert "Configuration groups" not in proc.stdout and not any(f"\n{g}" in proc.stdout or f"\n  {g}" in proc.stdout for g in TRAINING_GROUPS)
    assert not (tmp_path / "logs").exists(), "--help runs nothing"


@pytest.mark.slow
def test_ctem_train_lists_the_config_groups_it_composes_from(tmp_path) -> None:
    proc = run_command("ctem.cli.train", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "== Configuration groups ==" in proc.stdout and "trainer:" in proc.stdout, proc.stderr[-2000:]

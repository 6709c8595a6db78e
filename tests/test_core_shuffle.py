"""The shuffle policy (per-epoch | fixed | none): the core's orders, the run key, old records, the CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from ftmed_core.config import ExperimentConfig
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import epoch_permutation
from ftmed_core.records import RunRecord, run_key
from ftmed_core.variants import VARIANTS


def test_fixed_reuses_one_permutation_per_epoch_draws_a_new_one_none_keeps_file_order():
    fixed = [epoch_permutation(4, epoch, 500, "fixed") for epoch in range(4)]
    per_epoch = [epoch_permutation(4, epoch, 500, "per-epoch") for epoch in range(4)]
    for order in fixed[1:]:
        np.testing.assert_array_equal(order, fixed[0])
    assert not np.array_equal(fixed[0], np.arange(500))
    np.testing.assert_array_equal(fixed[0], per_epoch[0])  # the two policies share their first epoch
    assert not any(np.array_equal(per_epoch[0], p) for p in per_epoch[1:])
    assert not np.array_equal(epoch_permutation(5, 0, 500, "fixed"), fixed[0])  # drawn from the seed
    for epoch in range(3):
        np.testing.assert_array_equal(epoch_permutation(4, epoch, 50, "none"), np.arange(50))
    # Bools (configs written before the policy existed) keep their meaning.
    np.testing.assert_array_equal(epoch_permutation(4, 2, 50, True), epoch_permutation(4, 2, 50, "per-epoch"))
    np.testing.assert_array_equal(epoch_permutation(4, 2, 50, False), np.arange(50))
    with pytest.raises(ValueError, match="shuffle policy"):
        epoch_permutation(4, 0, 50, "sometimes")


def _hash_as_before(config: ExperimentConfig, shuffle_bool: bool) -> str:
    """config_hash as it was computed when `shuffle` was a bool."""
    data = config.to_dict()
    data.pop("name")
    data.pop("data_dir")
    data["shuffle"] = shuffle_bool
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def test_run_key_changes_with_the_policy_and_old_keys_stay():
    base = VARIANTS["baseline"].config
    keys = {policy: run_key("keras", replace(base, shuffle=policy), "0" * 32) for policy in
            ("per-epoch", "fixed", "none")}
    assert len(set(keys.values())) == 3
    # Runs finished before the policy existed keep their keys: per-epoch and none hash as True and False.
    assert base.shuffle == "per-epoch" and base.config_hash() == _hash_as_before(base, True)
    assert replace(base, shuffle="none").config_hash() == _hash_as_before(base, False)


def test_old_records_with_a_bool_still_load():
    for old, policy in ((True, "per-epoch"), (False, "none")):
        data = VARIANTS["baseline"].config.to_dict()
        data["shuffle"] = old
        record = RunRecord(run_key="k", framework="keras", status="finished", config=data, runtime={})
        assert record.experiment.shuffle == policy
        assert ExperimentConfig.from_dict(data).to_dict()["shuffle"] == policy
    with pytest.raises(ConfigError, match="unknown shuffle policy 'sometimes'; choose one of: per-epoch, fixed, none"):
        ExperimentConfig(shuffle="sometimes")


def test_cli_shuffle_option_on_train_and_compare(tmp_path):
    from cli.build import apply_overrides
    from ftmed.grid import plan
    from cli.main import app

    config = apply_overrides(VARIANTS["baseline"].config, shuffle="fixed")
    assert config.shuffle == "fixed" and config.name == "baseline"  # protocol, like the seed: same variant
    jobs = plan([VARIANTS["baseline"], VARIANTS["lr-1e-4"]], ["lightning", "keras"], [0, 1], data_md5="0" * 32,
                precision="32", epochs=2, shuffle="fixed")
    assert {job.config.shuffle for job in jobs} == {"fixed"}
    default = plan([VARIANTS["baseline"]], ["keras"], [0], data_md5="0" * 32, precision="32", epochs=2)
    fixed = [j for j in jobs if j.framework == "keras" and j.config.name == "baseline" and j.config.seed == 0]
    assert default[0].config.shuffle == "per-epoch" and default[0].run_key != fixed[0].run_key
    runner = CliRunner()
    for command in ("train", "compare"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        assert "--shuffle" in result.output and "per-epoch|fixed|none" in result.output
    bad = runner.invoke(app, ["compare", "--shuffle", "sometimes", "--runs-dir", str(tmp_path)])
    assert bad.exit_code != 0 and "sometimes" in bad.output and "Traceback" not in bad.output

"""The `msa` subcommands outside LightningCLI, and DDP-safe evaluation loaders."""

from __future__ import annotations

import pickle
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from msa_lightning.cli import main
from msa_lightning.data import MOSIDataModule


def test_data_synth_and_inspect(tmp_path, capsys):
    out = tmp_path / "sims.pkl"
    with pytest.raises(SystemExit) as e:
        main(["data", "synth", "--dataset", "sims", "--out", str(out), "--size-factor", "0.02"])
    assert e.value.code == 0 and out.is_file()
    data = pickle.load(open(out, "rb"))
    data["train"]["audio"][0, 0, :3] = [np.nan, -np.inf, np.inf]
    pickle.dump(data, open(out, "wb"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["data", "inspect", str(out), "--dataset", "sims"])
    report = capsys.readouterr().out
    assert "## train: 27 samples" in report
    assert "audio            shape (27, 400, 33)" in report
    assert "non-finite values replaced by 0: audio=3" in report
    assert "labels T:" in report and "#" in report  # unimodal label histogram


def test_console_script_help_lists_extra_commands():
    proc = subprocess.run([sys.executable, "-m", "msa_lightning.cli", "data", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "inspect" in proc.stdout and "synth" in proc.stdout


def test_eval_loader_splits_ranks_without_repeats(synthetic_mosi, cache_dir):
    """Under DDP, validation/test samples are split across ranks with no duplicates (exact metrics)."""
    seen = []
    for rank in range(2):
        dm = MOSIDataModule(str(synthetic_mosi), batch_size=4, eval_batch_size=4, cache_dir=str(cache_dir))
        dm.setup()
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        seen += [i for batch in dm.val_dataloader() for i in batch.index.tolist()]
    assert sorted(seen) == list(range(len(dm.datasets["valid"])))  # 11 samples: 6 + 5, none twice


def test_main_help_names_the_suite_commands_and_debug(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "msa seeds" in out and "msa report" in out and "--debug" in out and "fit" in out


HEAVY = ("lightning", "transformers", "litdata", "librosa", "av")
#: runs ``msa_lightning.cli.main`` on the arguments and reports which heavy libraries it imported
_REPORT_IMPORTS = f"""
import sys
from msa_lightning.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("EXIT", code, "HEAVY", sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr)
"""


def test_help_and_data_inspect_start_without_heavy_libraries(synthetic_mosi):
    """`msa --help` (the suite's overview) and `msa data inspect FILE` import none of Lightning,
    transformers, litdata, librosa or PyAV (a fresh process each)."""
    for args in (["--help"], ["data", "inspect", str(synthetic_mosi)]):
        proc = subprocess.run(
            [sys.executable, "-c", _REPORT_IMPORTS, *args], capture_output=True, text=True, timeout=120
        )
        assert proc.stderr.strip().splitlines()[-1] == "EXIT 0 HEAVY []", (args, proc.stderr[-2000:])
        assert ("msa fit" in proc.stdout) if args == ["--help"] else ("## train: 64 samples" in proc.stdout)


def test_overview_lists_every_command(capsys):
    from msa_lightning.cli.main import EXTRA_COMMANDS, LIGHTNING_COMMANDS

    with pytest.raises(SystemExit) as e:
        main([])  # no command: the overview, and the status of a usage error
    out = capsys.readouterr().out
    assert e.value.code == 2
    for command in (*LIGHTNING_COMMANDS, *EXTRA_COMMANDS):
        assert f"  msa {command} " in out, command

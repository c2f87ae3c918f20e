"""A data root with nothing to do is an error (exit status 2 and a line naming the folder), not an empty success."""

from __future__ import annotations

from aerialmd.cli.run_pipeline import main


def test_empty_data_root_is_an_error(tmp_path, capsys):
    (tmp_path / "root" / "downloaded_data").mkdir(parents=True)
    (tmp_path / "megadepth").mkdir()
    code = main(["--data_root", str(tmp_path / "root"), "--megadepth_dir", str(tmp_path / "megadepth")])
    error = capsys.readouterr().err
    assert code == 2
    assert "no scene" in error and str(tmp_path / "root" / "downloaded_data") in error
    assert not (tmp_path / "root" / "data").exists()

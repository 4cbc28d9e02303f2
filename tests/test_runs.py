import json

import nbformat
import pytest
import yaml

from astrid import cli, runs


def _notebook(path, params: str, body: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def chain(tmp_path):
    first = _notebook(
        tmp_path / "a_first.ipynb",
        'output_dir = ""\nscale = 2',
        "from astrid.runs import record_outputs, resolve_output_dir\n"
        "out = resolve_output_dir(output_dir, 'a')\n"
        "(out / 'made.txt').write_text('x')\n"
        "record_outputs(out, value=21 * scale)",
    )
    second = _notebook(
        tmp_path / "b_second.ipynb",
        'output_dir = ""\nvalue = 0',
        "from astrid.runs import record_outputs\n"
        "assert value != 13, 'unlucky value'\n"
        "record_outputs(output_dir, doubled=value * 2)",
    )
    preset = tmp_path / "chain.yaml"
    preset.write_text(yaml.safe_dump({
        "name": "chain",
        "notebooks": [{"notebook": str(first), "parameters": {"scale": 1}}, str(second)],
    }))
    return preset


def test_preset_chains_outputs_and_records_provenance(chain, tmp_path):
    result = runs.run(chain, out=tmp_path / "run1", progress=False)
    assert result.outputs["value"] == 21 and result.outputs["doubled"] == 42
    assert result.outputs["report"].endswith("b_second.html")
    # the export holds the executed outputs, not only the source
    assert "outputs.json" in (result.run_dir / "b_second.html").read_text()
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and record["astrid_version"]
    assert record["steps"][0]["parameters"]["scale"] == 1
    assert (result.run_dir / "a_first" / "made.txt").exists()
    assert (result.run_dir / "a_first.ipynb").exists()
    # an override reaches every notebook that declares it
    result = runs.run(chain, parameters={"scale": 3}, out=tmp_path / "run2", progress=False)
    assert result.outputs["doubled"] == 126


def test_never_overwrites_and_rejects_unknown_parameters(chain, tmp_path):
    runs.run(chain, out=tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError):
        runs.run(chain, out=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['colour'\]"):
        runs.run(chain, parameters={"colour": 1}, out=tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()


def test_failing_cell_is_named(chain, tmp_path, capsys):
    code = cli.main(["run", str(chain), "-p", "scale", "13", "--out", str(tmp_path / "bad")])
    assert code == 0  # 21 * 13 is not 13
    bad = _notebook(tmp_path / "c_bad.ipynb", 'output_dir = ""\nvalue = 13',
                    "assert value != 13, 'unlucky value'")
    code = cli.main(["run", str(bad), "--out", str(tmp_path / "bad2"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "c_bad.ipynb failed in cell" in err and "unlucky value" in err
    record = json.loads((tmp_path / "bad2" / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]["ename"] == "AssertionError"


def test_new_run_dirs_are_distinct(tmp_path):
    a = runs.new_run_dir("x", root=tmp_path)
    b = runs.new_run_dir("x", root=tmp_path)
    assert a != b and a.is_dir() and b.is_dir()


def test_grid_runs_each_combination(chain, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"preset": str(chain), "grid": {"scale": [1, 2]}}))
    batch, rows = runs.run_grid(grid, out=tmp_path / "batch", progress=False)
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert (batch / "000" / "run.json").exists() and (batch / "summary.csv").exists()
    assert runs._headline({"headline": [{"model": "unet", "f1": 0.5}]}) == {"unet_f1": 0.5}


def test_every_shipped_preset_matches_its_notebooks_parameters():
    presets = sorted(runs.PRESET_DIR.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"quick", "full", "real", "surveys"}
    for preset in presets:
        runs._plan(runs.load_preset(preset.stem), {})  # raises on a parameter a notebook does not declare


def test_a_parameter_papermill_cannot_read_is_named(tmp_path):
    notebook = _notebook(tmp_path / "c.ipynb", "folds = 3  # at least (>= 3)\nseed = 0", "pass")
    with pytest.raises(ValueError, match=r"c.ipynb: papermill cannot read parameter\(s\) \['folds'\]"):
        runs._declared_parameters(notebook)


def test_cli_errors_are_clear(capsys):
    assert cli.main(["run", "no_such_preset"]) == 2
    assert "no preset or notebook 'no_such_preset'" in capsys.readouterr().err
    assert cli._parse_value("3") == 3 and cli._parse_value("true") is True
    assert cli._parse_value("ztf") == "ztf" and cli._parse_value("0.5") == 0.5


def test_resolve_and_record_outputs(tmp_path):
    out = runs.resolve_output_dir("", "t")
    assert out.is_dir() and out != tmp_path
    runs.record_outputs(tmp_path, a=1)
    runs.record_outputs(tmp_path, b=tmp_path)
    assert runs.read_outputs(tmp_path) == {"a": 1, "b": str(tmp_path)}

"""Command lines generated from the config models: names, help, defaults, aliases, and the exit-code contract."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import Field

from refine_ray import cli
from refine_ray.config import StrictModel, flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Inner(StrictModel):
    use_gpu: bool = Field(False, description="one GPU each", json_schema_extra=flag("--gpu"))
    rate: float = Field(0.25, description="learning rate")


class Outer(StrictModel):
    data_dir: str | None = Field(None, description="where the data is")
    mode: Literal["fast", "exact"] = Field("exact", description="how to run")
    count: int = Field(3, description="how many")
    names: list[str] = Field(default_factory=list, description="some names")
    table: dict = Field(default_factory=dict, description="a table (YAML only)")
    secret: str | None = Field(None, json_schema_extra=flag(None))
    inner: Inner = Inner()


def test_flags_follow_the_fields():
    flags = {name: key for name, key, _ in cli.model_flags(Outer)}
    assert flags == {"--data-dir": "data_dir", "--mode": "mode", "--count": "count", "--names": "names",
                     "--gpu": "inner.use_gpu", "--rate": "inner.rate"}


def test_flags_override_the_config_file_and_types_follow_the_annotations(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("count: 7\ninner: {rate: 0.5}\ntable: {a: 1}\n")
    p = cli.parser_for(Outer, "t", None)
    cfg = cli.load(Outer, p.parse_args(["--config", str(path), "--gpu", "--names", "a", "b", "--mode", "fast"]))
    assert cfg == Outer(count=7, inner=Inner(use_gpu=True, rate=0.5), table={"a": 1}, names=["a", "b"], mode="fast")
    cfg = cli.load(Outer, p.parse_args(["--config", str(path), "--count", "9", "--no-gpu"]))
    assert cfg.count == 9 and cfg.inner.use_gpu is False and cfg.inner.rate == 0.5
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "slow"])  # choices come from the Literal


def test_help_shows_description_key_and_default_once():
    text = " ".join(cli.parser_for(Outer, "t", None).format_help().split())
    assert "how many [count; default 3]" in text
    assert "learning rate [inner.rate; default 0.25]" in text
    assert "where the data is [data_dir]" in text           # no default to show
    assert text.count("default 3") == 1
    assert "--secret" not in text and "--table" not in text


def test_two_fields_wanting_one_flag_are_refused():
    class A(StrictModel):
        seed: int = 0

    class B(StrictModel):
        a: A = A()
        seed: int = 1

    with pytest.raises(TypeError, match="--seed"):
        cli.parser_for(B, "t", None)


@pytest.mark.parametrize("job", cli.JOBS)
def test_every_job_builds_its_parser(job):
    import importlib

    module = importlib.import_module(f"refine_ray.cli.{job}")
    assert module.build_parser().format_help()


def test_exit_codes_and_one_error_line(capsys):
    assert cli.run_job(lambda: 0) == cli.EXIT_DONE
    assert cli.run_job(lambda: 1) == cli.EXIT_SOME_FAILED

    def cannot():
        raise cli.CannotRun("input x/: no scans")

    assert cli.run_job(cannot) == cli.EXIT_CANNOT_RUN
    assert capsys.readouterr().err == "error: input x/: no scans\n"

    def crash():
        raise RuntimeError("bucket gone")

    assert cli.run_job(crash) == cli.EXIT_CANNOT_RUN
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "error: the job stopped (RuntimeError: bucket gone); re-run the same command to resume"


def test_dispatcher(capsys):
    assert cli.main(["nope"]) == cli.EXIT_CANNOT_RUN
    assert "unknown job 'nope'" in capsys.readouterr().err
    assert cli.main(["--help"]) == cli.EXIT_DONE
    assert "build-3dmm" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["build-3dmm", "--help"])
    assert exc.value.code == 0 and "--synthetic-subjects" in capsys.readouterr().out


def test_job_script_runs_from_a_checkout_without_path_edits():
    """`python jobs/X.py` (what `ray job submit` runs) finds the installed package."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "synthesize.py"), "--help"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "--scans-per-subject" in out.stdout, out.stderr


def test_test_hooks_come_only_from_their_environment_variable(monkeypatch):
    from refine_ray.test_hooks import ENV, TestHooks, read_test_hooks

    monkeypatch.delenv(ENV, raising=False)
    assert read_test_hooks() == TestHooks()
    monkeypatch.setenv(ENV, '{"fail_at_step": 7}')
    assert read_test_hooks() == TestHooks(fail_at_step=7)
    for bad in ("{oops", '{"kill_everything": true}', "[1]"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            read_test_hooks()

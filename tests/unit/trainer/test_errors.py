"""The error boundary of `bpo-train`: each expected failure is one `error:` line naming what failed and the
next step, exit code 2, no traceback (BPO_DEBUG=1 or --debug shows it), before any model loads and before
anything is written into the output folder. Model ids go to a Hub on loopback (HF_ENDPOINT) that answers
as the real one does; no model is loaded by these tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import pytest
from support.trainer import closed_port_url, recording_server
from typer.testing import CliRunner

from trainer_min import dpo
from trainer_min.cli import app
from trainer_min.errors import as_user_error

ONE_ERROR_LINE = re.compile(r"error: [^\n]+\n")

# What `python -m trainer_min.dpo` prints for each argv, run in one fresh process with the given environment.
RUN_MAINS = """
import contextlib, io, json, sys
from trainer_min.dpo import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    out.append([code, err.getvalue()])
print(json.dumps({"results": out, "trl_loaded": "trl" in sys.modules}))
"""


def run_mains(argvs: list[list[str]], **env: str) -> tuple[list[tuple[int, str]], bool]:
    done = subprocess.run(
        [sys.executable, "-c", RUN_MAINS, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return [tuple(r) for r in report["results"]], report["trl_loaded"]


def hub_reply(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """The Hub's HEAD on a config.json: unknown repos 404 RepoNotFound, gated ones 403 GatedRepo."""
    if path.startswith("/nobody/unknown/"):
        return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
    if path.startswith("/meta/gated/"):
        return 403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"}, b""
    return 500, {}, b""


def test_hub_model_ids_fail_in_one_request_before_trl_loads(small_export, tmp_path):
    out = tmp_path / "run"
    base = ["--dataset", str(small_export), "--output-dir", str(out)]
    with recording_server(hub_reply) as hub:
        results, trl_loaded = run_mains(
            [[*base, "--model", "nobody/unknown"], [*base, "--model", "meta/gated"]],
            HF_ENDPOINT=hub.url,
            HF_HUB_OFFLINE="0",
        )
        requests = [call.path for call in hub.calls if "/resolve/" in call.path]
    (unknown_code, unknown), (gated_code, gated) = results
    assert unknown_code == gated_code == 2 and not trl_loaded
    assert ONE_ERROR_LINE.fullmatch(unknown) and "nobody/unknown: no such model on the Hub" in unknown
    assert ONE_ERROR_LINE.fullmatch(gated) and "is gated" in gated and "hf auth login" in gated
    assert "--model-name-or-path" in unknown and "llava-hf/llava-1.5-7b-hf" not in unknown  # no wrong hint
    assert len(requests) == 2  # one request for each id's config.json: no retries
    assert not out.exists()


def test_offline_and_unreachable_hubs_name_the_next_step(small_export, tmp_path):
    base = ["--dataset", str(small_export), "--output-dir", str(tmp_path / "run")]
    argv = [[*base, "--model", "llava-hf/llava-1.5-13b-hf"]]
    [(code, unreachable)], _ = run_mains(argv, HF_ENDPOINT=closed_port_url(), HF_HUB_OFFLINE="0")
    assert code == 2 and ONE_ERROR_LINE.fullmatch(unreachable), unreachable
    assert "cannot reach the Hub" in unreachable and "`hf download llava-hf/llava-1.5-13b-hf`" in unreachable
    [(code, offline)], _ = run_mains(argv, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    assert code == 2 and ONE_ERROR_LINE.fullmatch(offline), offline
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in offline


def test_a_model_folder_without_config_is_named(small_export, tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    argv = ["--dataset", str(small_export), "--output-dir", str(tmp_path / "run"), "--model", str(folder)]
    assert dpo.main(argv) == 2
    err = capsys.readouterr().err
    assert ONE_ERROR_LINE.fullmatch(err) and f"{folder}: the folder holds no config.json" in err
    assert dpo.main([*argv[:-1], str(tmp_path / "missing" / "model")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_a_tracker_that_is_not_installed_is_said_before_the_model_loads(
    small_export, fake_model, tmp_path, capsys
):
    from transformers.integrations import is_tensorboard_available

    if is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    argv = ["--dataset", str(small_export), "--output-dir", str(tmp_path / "run"), "--model", str(fake_model)]
    assert dpo.main([*argv, "--report-to", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert ONE_ERROR_LINE.fullmatch(err) and "pip install tensorboard" in err and "--report-to" in err


@pytest.mark.slow  # a fresh process imports transformers before it finds trl missing
def test_missing_optional_packages_print_the_install_line_literally(
    small_export, fake_model, tmp_path, monkeypatch
):
    # a module set to None in sys.modules cannot be imported: Python's own way to block a package
    blocked = "import sys; sys.modules['trl'] = None; from trainer_min.cli import app; app()"
    argv = ["dpo", "--dataset", str(small_export), "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-c", blocked, *argv, "--model", str(fake_model)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and ONE_ERROR_LINE.fullmatch(done.stderr), done.stderr
    assert done.stderr == "error: trl is not installed; install it with: pip install 'bpo-data[train]'\n"
    monkeypatch.setitem(sys.modules, "textblob", None)
    with pytest.raises(ModuleNotFoundError) as raised:
        import textblob  # noqa: F401
    message = str(as_user_error(raised.value, "eval"))
    assert message == "textblob is not installed; install it with: pip install 'bpo-data[eval]'"


def test_the_traceback_is_there_on_request(tmp_path):
    argv = ["--dataset", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "run")]
    code = f"import sys; from trainer_min.dpo import main; sys.exit(main({argv!r}))"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    debug = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BPO_DEBUG": "1"},
    )
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr


def test_debug_lets_the_exception_through(tmp_path, monkeypatch):
    from trainer_min.load import DeviceError

    monkeypatch.setenv("BPO_DEBUG", "0")  # restored after the test: --debug sets it for the process
    argv = ["eval", "--bench", "mmvet", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    argv += ["--model", "m", "--judge-model", "j", "--device", "gpu"]
    quiet = CliRunner().invoke(app, argv)
    assert quiet.exit_code == 2 and "did you mean cuda?" in quiet.output
    loud = CliRunner().invoke(app, ["--debug", *argv])
    assert isinstance(loud.exception, DeviceError) and "did you mean cuda?" in str(loud.exception)


def test_a_started_output_dir_is_refused_before_trl_loads(small_export, tmp_path):
    out = tmp_path / "started"
    (out / "checkpoint-5").mkdir(parents=True)
    [(code, err)], trl_loaded = run_mains([["--dataset", str(small_export), "--output-dir", str(out)]])
    assert code == 2 and not trl_loaded and "--resume-from-checkpoint last" in err


def test_usage_errors_of_every_command_are_one_line(tmp_path):
    runner = CliRunner()
    cases = [
        (["plot", str(tmp_path), "--to", "x.png", "--error", "var"], "'--error'"),
        (["merge", "--adapter", str(tmp_path), "--to", str(tmp_path / "m"), "--dtype", "f8"], "'--dtype'"),
        (["eval", "--bench", "mmvet"], "Missing option '--data'"),
        (["nope"], "No such command 'nope'"),
        (["merge", "--adapter", str(tmp_path), "--to", str(tmp_path / "m")], "has no adapter_config.json"),
    ]
    for argv, named in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert ONE_ERROR_LINE.fullmatch(result.output) and named in result.output, result.output
        assert "Traceback" not in result.output and "Value error," not in result.output


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_help_and_version_on_every_command_line():
    from importlib.metadata import version

    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output == f"bpo-data {version('bpo-data')}\n"
    for argv in (["-h"], ["merge", "-h"], ["plot", "-h"], ["eval", "-h"], ["report", "-h"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0 and "Usage:" in result.output, argv
    shown = runner.invoke(app, ["dpo", "-h"])
    assert shown.exit_code == 0 and "usage: bpo-train dpo" in shown.output
    evaluation = subprocess.run(
        [sys.executable, "-m", "trainer_min.eval", "--version"], capture_output=True, text=True, timeout=120
    )
    assert evaluation.returncode == 0 and evaluation.stdout.startswith("bpo-data ")


def test_dpo_help_states_each_default_once_and_whole():
    shown = CliRunner().invoke(app, ["dpo", "--help"]).output
    flat = " ".join(shown.split())
    # a default decided by the machine is said in words, not as "(default: None)"
    bf16 = flat[flat.index("--bf16 [BF16] bf16") :].split(" --fp16")[0]
    assert "Default: on when a CUDA GPU has it." in bf16 and "(default: None)" not in bf16
    assert "(default: llava-hf/llava-1.5-7b-hf)" in flat and "(default: 2e-06)" in flat


def test_library_deprecation_warnings_are_silenced(small_export, fake_model, tmp_path, capsys):
    argv = ["--dataset", str(small_export), "--output-dir", str(tmp_path / "run"), "--model", str(fake_model)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # --gradient-checkpointing is transformers' deprecated name; --eval-strategy fails after parsing
        assert dpo.main([*argv, "--gradient-checkpointing", "true", "--eval-strategy", "steps"]) == 2
    assert "--eval-split" in capsys.readouterr().err
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [str(w.message) for w in seen]

"""The command line says what it did: one JSON document or human text on stdout, the resolved data and
model before training, and one line naming the problem (exit 2) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_pattern_clip

import resfields
from resfields.backends import get_backend
from resfields.cli import main

TINY = ["--width", "8", "--rank", "2", "--steps", "3", "--batch-size", "64", "--quiet", "--no-media"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.npy"
    np.save(path, moving_pattern_clip(4, 24, 28))
    return path


@pytest.fixture(scope="module")
def video_run(clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "video"
    assert main(["fit", "video", "--data", str(clip), "--n-frames", "4", "--scale", "1", "--out", str(out), *TINY]) == 0
    return out


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"resfields {resfields.__version__}"


def test_fit_prints_what_the_options_resolved_to_then_a_text_summary(clip, tmp_path, capsys) -> None:
    argv = ["fit", "video", "--data", str(clip), "--n-frames", "3", "--scale", "0.5", "--out", str(tmp_path / "r")]
    assert main([*argv, *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"data: {clip}: 3 frames of 12x14 (from frame 0, every 1, scale 0.5); 10% of the pixels and 0 whole frames "
        "held out"
    )
    assert lines[1].startswith("model: Siren 3->8x5->3, ResField layers 1,2,3 (vm, rank 2, capacity 3, lookup); ")
    assert lines[2].startswith("fitted video on torch (cpu): 3 steps in ")
    assert lines[-1] == f"run folder: {tmp_path / 'r'}"
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON mixed into the text


def test_fit_json_is_one_document_with_the_resolved_data(clip, tmp_path, capsys) -> None:
    argv = ["fit", "video", "--data", str(clip), "--n-frames", "2", "--scale", "1", "--out", str(tmp_path / "r")]
    assert main([*argv, *TINY, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data"].endswith(
        "2 frames of 24x28 (from frame 0, every 1, scale 1); 10% of the pixels and 0 whole frames held out"
    )
    assert "capacity 2" in summary["model"] and summary["steps"] == 3 and summary["run_folder"] == str(tmp_path / "r")


def test_more_frames_than_the_clip_has_is_one_line(clip, tmp_path, capsys) -> None:
    argv = ["fit", "video", "--data", str(clip), "--n-frames", "500", "--out", str(tmp_path / "r"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"resfields: error: {clip}: asked for 500 frames (n_frames) but only 4 remain from frame 0 with frame_stride 1"
    ]
    assert not (tmp_path / "r" / "config.json").exists()


def test_eval_names_the_option_that_does_not_match(video_run, capsys) -> None:
    source = json.loads((video_run / "config.json").read_text())["metadata"]["run"]["data"]["source"]
    assert main(["eval", str(video_run), "--data", source, "--set", "n_frames=3"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("resfields: error: ") and "does not match" in line
    assert "resfield.capacity: 4 stored, 3 from the run config" in line


def test_eval_text_and_json(video_run, capsys) -> None:
    source = json.loads((video_run / "config.json").read_text())["metadata"]["run"]["data"]["source"]
    assert main(["eval", str(video_run), "--data", source]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"evaluated {video_run} (video) on torch (cpu) in ") and "test_psnr" in text
    assert main(["eval", str(video_run), "--data", source, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["test_psnr"] > 0


def test_zoo_list_json_has_every_entry_with_its_metrics(capsys) -> None:
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} >= {"resfields/nerf-bunny", "resfields/video-bikes"}
    nerf = next(r for r in rows if r["id"] == "resfields/nerf-bunny")
    assert nerf["shipped"] and nerf["check_passed"] and any("psnr" in m for m in nerf["metrics"].values())
    assert main(["zoo", "list"]) == 0
    assert "psnr" in capsys.readouterr().out  # the text listing shows metrics too


def test_a_device_torch_does_not_have_is_one_line(video_run, capsys) -> None:
    if "cuda" in get_backend("torch").devices():
        pytest.skip("this machine has a GPU: --device cuda exists")
    assert main(["eval", str(video_run), "--device", "cuda"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("resfields: error: --device cuda: ") and "valid devices here: ['cpu']" in line

"""`resfields view`: bad input is one line; the render thread draws the newest state, preview then full;
every task has something to show; and, in a real headless Chromium, the page shows the bunny and the
time slider changes it.

The browser test needs Chromium and its driver (Debian's `chromium` and `chromium-driver`, which
`.ci/run` installs) and selenium (the `dev` extra). Without them it is skipped with the reason, and
fails instead where RESFIELDS_REQUIRE_BROWSER=1 (CI sets it), so a CI run never passes it unseen.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resfields.cli import main
from resfields.errors import DataError
from resfields.zoo.viewer.progressive import Progressive

pytest.importorskip("viser", reason="the viewer needs viser: pip install 'resfields[viewer]'")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


# ----------------------------------------------------------------------------- bad input: one line


def test_an_unknown_id_is_one_line_naming_it(capsys) -> None:
    assert main(["view", "no such model!", "--port", "0"]) == 2
    line = error_line(capsys)
    assert line.startswith("resfields: error: 'no such model!' is neither a folder, nor a zoo id")


def test_an_unknown_hub_id_offline_is_one_line(capsys, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["view", "nobody/no-such-scene", "--port", "0"]) == 2
    line = error_line(capsys)
    assert line.startswith("resfields: error: ") and "nobody/no-such-scene" in line


def test_a_busy_port_is_one_line_before_the_model_loads(capsys, monkeypatch) -> None:
    import resfields.zoo.pretrained as pretrained

    monkeypatch.setattr(pretrained, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model for a busy port"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["view", "resfields/nerf-bunny", "--port", str(port)]) == 2
    assert (
        error_line(capsys) == f"resfields: error: port {port} is in use; choose another with --port (0: any free port)"
    )


def test_a_checkpoint_of_an_unknown_task_is_one_line(tmp_path, capsys) -> None:
    folder = tmp_path / "odd"
    shutil.copytree(ROOT / "zoo" / "checkpoints" / "sdf-bunny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["task"] = config["metadata"]["run"]["task"] = "hologram"
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["view", str(folder), "--port", "0"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"resfields: error: {folder}: invalid run config") and "unknown task 'hologram'" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
        (["--size", "4"], "--size must be at least 8 pixels, got 4"),
        (["--size", "64", "--preview-size", "128"], "--preview-size 128 is larger than --size 64"),
        (["--fps", "0"], "--fps must be in (0, 60], got 0.0"),
    ],
)
def test_bad_numbers_are_one_line(flags, message, capsys) -> None:
    assert main(["view", "resfields/nerf-bunny", *flags]) == 2
    assert error_line(capsys) == f"resfields: error: {message}"


def test_check_port_passes_a_free_port_and_port_zero() -> None:
    from resfields.zoo.viewer import check_port

    check_port("127.0.0.1", 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_port("127.0.0.1", port)  # bound but never listening, then closed: free
    with pytest.raises(DataError, match=r"--host no-such-host\.invalid: no such address"):
        check_port("no-such-host.invalid", 8080)


# ----------------------------------------------------------------------------- the render thread


def test_progressive_draws_the_newest_state_as_a_preview_then_in_full() -> None:
    drawn: list[tuple[Any, int]] = []
    done = threading.Event()
    gate = threading.Event()

    def render(state: Any, level: int) -> str:
        gate.wait(5)  # hold the first render until every request is in
        return f"{state}@{level}"

    def publish(result: str, state: Any, level: int, seconds: float) -> None:
        drawn.append((state, level))
        if level == 64:
            done.set()

    renderer = Progressive(render, publish, (16, 64), settle=0.05)
    try:
        for state in range(5):  # a drag: five camera states while the first preview renders
            renderer.request(state)
        gate.set()
        assert done.wait(10)
    finally:
        renderer.close(5)
    assert drawn[-2:] == [(4, 16), (4, 64)]  # the newest state, preview first
    assert all(level == 16 for _, level in drawn[:-1])  # superseded states never reach full size
    assert (0, 64) not in drawn


def test_progressive_ignores_a_repeated_state_and_survives_a_failed_render(capsys) -> None:
    calls: list[Any] = []
    shown = threading.Event()

    def render(state: Any, level: int) -> Any:
        calls.append(state)
        if state == "bad":
            raise ValueError("no such frame")
        return state

    renderer = Progressive(render, lambda *a: shown.set(), (8,), settle=0.01)
    try:
        renderer.request("bad")
        deadline = time.monotonic() + 5
        while "bad" not in calls and time.monotonic() < deadline:
            time.sleep(0.01)
        renderer.request("good")
        assert shown.wait(5)
        renderer.request("good")  # the same state again: nothing to do
        time.sleep(0.1)
    finally:
        renderer.close(5)
    assert calls == ["bad", "good"]
    assert "rendering failed: ValueError: no such frame" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cameras and content


def test_viewport_camera_round_trips_through_viser_pose() -> None:
    from resfields.tasks.common.cameras import look_at
    from resfields.zoo.viewer.cameras import image_size, pose_of, viewport_camera

    assert image_size(16 / 9, 256) == (144, 256) and image_size(0.5, 64) == (64, 32)
    from viser.transforms import SO3

    pose = look_at((2.0, 1.0, 1.5), (0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    wxyz = SO3.from_matrix(pose[:3, :3]).wxyz
    camera = viewport_camera(wxyz, pose[:3, 3], fov_y=0.7, aspect=1.5, max_side=96)
    assert (camera.height, camera.width) == (64, 96)
    np.testing.assert_allclose(camera.cam_to_world, pose, atol=1e-9)
    back_wxyz, position, fov, aspect = pose_of(camera)
    np.testing.assert_allclose(np.abs(back_wxyz @ wxyz), 1.0, atol=1e-9)  # q and -q are one rotation
    np.testing.assert_allclose(position, pose[:3, 3])
    assert fov == pytest.approx(0.7) and aspect == pytest.approx(1.5)


def test_every_task_has_something_to_show() -> None:
    import resfields
    from resfields.zoo.viewer.content import content_for

    nerf = content_for(resfields.from_pretrained("resfields/nerf-bunny"), "nerf")
    from resfields.zoo.viewer.cameras import viewport_camera

    assert np.linalg.norm(nerf.start_position()) == pytest.approx(6.0)
    camera = viewport_camera((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -4.0), 0.7, 16 / 12, 16)
    for output in ("rgb", "depth", "normals"):
        image = nerf.render(camera, 0, output)
        assert image.shape == (12, 16, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert sorted(nerf.training_cameras) == [f"cam{i:02d}" for i in range(8)]

    video = content_for(resfields.from_pretrained("resfields/video-bikes"), "video")
    assert video.n_frames == 30 and video.image(3).shape == (68, 160, 3)

    sdf = content_for(resfields.from_pretrained("resfields/sdf-bunny"), "sdf")
    vertices, faces = sdf.mesh(5, 16)
    assert len(faces) > 100 and np.abs(vertices).max() <= 1.0

    flow = content_for(resfields.from_pretrained("resfields/flow-bunny"), "flow")
    first, faces = flow.mesh(0)
    moved, same = flow.mesh(2)
    assert same is faces and moved.shape == first.shape
    assert 1e-4 < np.abs(moved - first).max() < 0.5  # carried along, not scattered


def test_a_field_checkpoint_trained_on_a_file_needs_its_data(tmp_path, capsys) -> None:
    folder = tmp_path / "own"
    shutil.copytree(ROOT / "zoo" / "checkpoints" / "video-bikes", folder)
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["run"]["data"]["source"] = "/somewhere/else/clip.mp4"
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["view", str(folder), "--port", "0"]) == 2
    line = error_line(capsys)
    assert "'/somewhere/else/clip.mp4'" in line and "pass --data PATH" in line


class _Tetrahedron:
    """Content stub: a mesh task of 4 frames whose tetrahedron grows with the frame."""

    kind, label, n_frames = "mesh", "stub", 4

    def mesh(self, frame: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        vertices = (1.0 + frame) * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) / 4
        return vertices, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_play_advances_the_frame_and_each_frame_is_meshed_in_full() -> None:
    import viser

    from resfields.zoo.viewer.app import Viewer, ViewOptions

    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    viewer = Viewer(server, _Tetrahedron(), ViewOptions(mesh_resolution=16, mesh_preview=8, fps=20.0))  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 10
        while "Meshed" not in viewer.status.content and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.match(r"Meshed frame 0: 4 faces \((preview|full)\)", viewer.status.content)
        assert viewer.frame.value == 0 and viewer.play.label == "Play"
        viewer.play.value = True  # a click
        assert viewer.play.label == "Pause"
        while viewer.frame.value == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert viewer.frame.value != 0
        viewer.play.value = True  # pause
        assert viewer.play.label == "Play"
        time.sleep(0.1)  # a step already under way when Pause came
        stopped = viewer.frame.value
        time.sleep(0.2)
        assert viewer.frame.value == stopped
        final = f"Meshed frame {stopped}: 4 faces (full)"
        while final not in viewer.status.content and time.monotonic() < deadline:
            time.sleep(0.05)
        assert viewer.status.content.startswith(final)
    finally:
        viewer.close()
        server.stop()


# ----------------------------------------------------------------------------- in a real browser


def _browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver; .ci/run does)"
    return None


@pytest.fixture
def browser() -> None:
    """Skip (or, where RESFIELDS_REQUIRE_BROWSER=1, fail) with the reason when no headless browser is here."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("RESFIELDS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here (RESFIELDS_REQUIRE_BROWSER=1), but {missing}")
        pytest.skip(f"no headless browser: {missing}")


@pytest.fixture
def viewer_url() -> Iterator[str]:
    """`resfields view resfields/nerf-bunny` in a subprocess on 127.0.0.1 (a free port), small views; ended,
    for sure, when the test ends."""
    command = [sys.executable, "-m", "resfields.cli", "view", "resfields/nerf-bunny", "--host", "127.0.0.1"]
    command += ["--port", "0", "--size", "64", "--preview-size", "24"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline, seen = time.monotonic() + 120, []
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the viewer did not start within 120 s; it printed: {''.join(seen)}")
            seen.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
            if found:
                break
            if proc.poll() is not None:
                pytest.fail(f"the viewer exited ({proc.returncode}): {''.join(seen)}")
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _screenshot(driver: Any) -> np.ndarray:
    """The viewport canvas as (H, W, 3) uint8, with viser's notifications (e.g. "software WebGL") removed."""
    import imageio.v3 as iio
    from selenium.webdriver.common.by import By

    driver.execute_script("document.querySelectorAll('.mantine-Notification-root').forEach(e => e.remove())")
    canvas = max(driver.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
    return iio.imread(io.BytesIO(canvas.screenshot_as_png))[..., :3]


def _bunny(image: np.ndarray) -> np.ndarray:
    """(H, W) mask of the NeRF's warm brown: not the white background, the grey frustums, viser's
    red / green / blue axes or its blue and grey controls."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (r - b > 25) & (g < r) & (g > 0.6 * r) & (r < 245)


def _wait_for_text(driver: Any, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.execute_script("return document.body.innerText")
        if re.search(pattern, text):
            return text
        time.sleep(0.25)
    pytest.fail(f"no {pattern!r} on the page within {timeout:.0f} s; it shows: {text!r}")


def test_the_browser_shows_the_bunny_and_the_time_slider_moves_it(browser, viewer_url, tmp_path) -> None:
    import imageio.v3 as iio
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # software WebGL: there is no GPU in CI, and viser draws everything, the NeRF's image included, with WebGL
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,600"):
        options.add_argument(flag)
    for flag in ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(viewer_url)
        _wait_for_text(driver, r"Rendered frame 0 at \d+×\d+ \(full\)", 120)
        time.sleep(0.5)  # the image is sent before the status line; let the canvas draw it
        first = _screenshot(driver)
        iio.imwrite(tmp_path / "frame_00.png", first)
        covered = _bunny(first).mean()
        assert covered > 0.01, f"the canvas shows no scene ({covered:.2%} bunny pixels; see {tmp_path})"

        slider = driver.find_element(By.CSS_SELECTOR, "[role=slider]")  # the frame slider, the only one
        assert slider.get_attribute("aria-valuemax") == "15"
        slider.send_keys(Keys.END)  # to the last frame, as a user's keyboard or drag would
        _wait_for_text(driver, r"Rendered frame 15 at \d+×\d+ \(full\)", 120)
        time.sleep(0.5)
        last = _screenshot(driver)
        iio.imwrite(tmp_path / "frame_15.png", last)
        assert slider.get_attribute("aria-valuenow") == "15"
        assert _bunny(last).mean() > 0.01
        # compare where the bunny is in either image, so the panel's own change (the status line) does not count
        region = _bunny(first) | _bunny(last)
        changed = (np.abs(first.astype(int) - last.astype(int)).max(-1) > 30) & region
        assert changed.sum() > 0.02 * region.sum(), f"frame 15 looks like frame 0 (see {tmp_path})"
    finally:
        driver.quit()

"""docker-compose.yml: valid for Compose (Debian's docker-compose validates without a Docker engine), the services and
profiles the README describes, the accelerator plumbing of each agent, and every `runner` command it runs exists."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from runner.cli import app

REPO = Path(__file__).resolve().parent.parent
ASCEND_DEVICES = {"/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}
ASCEND_MOUNTS = {"/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"}


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose not found: run `make system-deps` (apt-get install docker-compose)")
    # a clean environment: the defaults in the file are what is checked, not this shell's settings
    proc = subprocess.run([exe, "-f", str(REPO / "docker-compose.yml"), "config"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, cwd=REPO)
    assert proc.returncode == 0, f"docker-compose config rejected the file:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "dashboard", "alerts", "agent-a100", "agent-910b3"}
    # a plain `docker compose up` starts the store (postgres + its one-shot migrate) and the dashboard, nothing else
    assert {name for name, s in services.items() if not s.get("profiles")} == {"postgres", "migrate", "dashboard"}
    assert services["alerts"]["profiles"] == ["alerts"]
    assert services["agent-a100"]["profiles"] == ["a100"]
    assert services["agent-910b3"]["profiles"] == ["910b3"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["dashboard"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("migrate", "dashboard", "alerts", "agent-a100", "agent-910b3"):
        assert services[name]["environment"]["DEVCOMPARE_DB_URL"].startswith("postgresql://"), name


def test_agents_get_their_accelerators(compose):
    a100 = compose["services"]["agent-a100"]
    [gpu] = a100["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    npu = compose["services"]["agent-910b3"]
    devices = {d.split(":")[0] if isinstance(d, str) else d["source"] for d in npu["devices"]}
    assert ASCEND_DEVICES <= devices
    mounts = {v.split(":")[0] if isinstance(v, str) else v["source"] for v in npu["volumes"]}
    assert ASCEND_MOUNTS <= mounts
    for agent in (a100, npu):  # the outbox must outlive the container
        assert any(str(v).split(":")[1] == "/var/lib/devcompare" for v in agent["volumes"]), agent["volumes"]
        assert agent["stop_signal"] == "SIGTERM"


def _runner_commands(service: dict) -> list[list[str]]:
    """The `runner` argument lists a service runs: its command under the image's `runner` entrypoint, or every
    `runner ...` inside a shell command."""
    command = service.get("command") or []
    if not service.get("entrypoint"):
        return [list(command)]
    script = " ".join(command).replace("$$", "$")
    return [shlex.split(m) for m in re.findall(r"\brunner ([^;|&]+)", script)]


def test_every_command_exists_in_the_cli(compose):
    checked = 0
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("devcompare:"):
            continue
        for argv in _runner_commands(service):
            assert argv, f"{name}: no runner command"
            # --help after the arguments: click parses them first, so an unknown command or option fails here
            result = CliRunner().invoke(app, [*argv, "--help"])
            assert result.exit_code == 0, f"{name}: `runner {' '.join(argv)}` is not a valid command:\n{result.output}"
            checked += 1
    assert checked == 5  # migrate, dashboard, alerts, two agents


def test_dockerfile_builds_what_compose_uses():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and re.search(r"^ARG TORCH_INSTALL=", text, re.M)
    assert 'exec runner \\"$@\\"' in text  # the entrypoint is the CLI
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _dockerfile_default(name: str) -> str:
    m = re.search(rf'^ARG {name}=(?:"([^"]*)"|(\S*))$', (REPO / "Dockerfile").read_text(), re.M)
    assert m, f"Dockerfile has no ARG {name}=..."
    return m.group(1) if m.group(1) is not None else m.group(2)


def test_images_follow_the_supported_stack_table(compose):
    """The Dockerfile's defaults build the CPU image and compose's agents the CUDA and Ascend ones, each exactly as
    runner/preflight/stacks.py says; a pin changed in one place only fails here."""
    from runner.preflight import stacks

    cpu = stacks.IMAGES["cpu"]
    assert (_dockerfile_default("BASE_IMAGE"), _dockerfile_default("TORCH_INSTALL")) == (cpu.base_image,
                                                                                          cpu.torch_install)
    for service, kind in (("agent-a100", "cuda"), ("agent-910b3", "npu")):
        args = compose["services"][service]["build"]["args"]
        image = stacks.IMAGES[kind]
        assert (args["BASE_IMAGE"], args["TORCH_INSTALL"]) == (image.base_image, image.torch_install), service


def test_pyproject_pins_follow_the_table():
    import tomllib

    from packaging.requirements import Requirement

    from runner.preflight import stacks

    deps = {Requirement(d).name: d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
            ["dependencies"]}
    assert {name: deps[name] for name in stacks.requirements()} == stacks.requirements()


def test_the_table_is_consistent():
    """Every image's torch satisfies the torch and transformers rules; the Ascend image is a row of Ascend's table;
    torch-npu X.postN goes with torch X."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    from runner.preflight import stacks

    minimum = SpecifierSet(f">={stacks.TORCH_MIN}")
    for row in stacks.ASCEND:
        assert Version(row.torch) in minimum and Version(row.torch_npu).base_version == row.torch
    assert stacks.IMAGE_ASCEND in stacks.ASCEND and Version(stacks.IMAGE_TORCH) in minimum
    assert stacks.IMAGE_CUDA in stacks.CUDA_DRIVERS
    for kind in ("cpu", "npu"):
        assert f"torch=={stacks.IMAGE_TORCH} " in stacks.IMAGES[kind].torch_install + " "
    assert f":{stacks.IMAGE_TORCH}-cuda{stacks.IMAGE_CUDA}-" in stacks.IMAGES["cuda"].base_image


def test_readme_shows_the_table():
    from runner.preflight import stacks

    readme = (REPO / "README.md").read_text()
    for device_type in ("npu", "cuda", "cpu"):
        assert stacks.markdown(device_type) in readme, f"README's {device_type} stack table differs from the code"

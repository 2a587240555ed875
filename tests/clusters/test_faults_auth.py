"""Open doors (issue 11, item 9): no documented cluster path runs an open Ray dashboard.

A plain ``ray start --head`` on a fresh machine starts without token authentication (Ray 2.60),
and anyone who reaches the dashboard's job API runs code. So: the shipped KubeRay manifests
enable ``authOptions: {mode: token}`` and the ``ray up`` YAMLs start the head with
``RAY_AUTH_MODE=token``; ``clusters.validate`` rejects a manifest or YAML that serves the
dashboard beyond loopback without it (naming the key, the value and the fix, with an explicit
``--allow-open-dashboard`` opt-out); and every ``ray start --head`` / ``ray job submit`` the
READMEs, the YAML headers and the study docstrings show runs with ``RAY_AUTH_MODE=token`` and a
token. The slow test runs the README's block against a real head on a fresh ``HOME``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from clusters import validate as cv
from tests.fixtures import AUTOSCALER, CLUSTERS, KUBERAY, file_ids, load_manifests, write_file

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ["landscape", "lora_vs_full", "loss_types", "lr_robustness", "replay_size"]
TOKEN_PATH = "$HOME/.ray-gere/auth_token"
AUTH_LINE = "-e RAY_AUTH_MODE=token"


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def _ray_doc(name: str) -> tuple[list[dict], dict]:
    docs = load_manifests(name)
    return docs, next(d for d in docs if d.get("apiVersion") == "ray.io/v1")


def _rejected(path: Path, validate=cv.validate_kuberay_manifest) -> str:
    with pytest.raises(cv.ClusterConfigError) as exc:
        validate(path)
    return str(exc.value)


# --------------------------------------------------------------------------------------------
# KubeRay manifests


def test_the_crd_schema_knows_auth_options():
    """authOptions is a real RayClusterSpec field of the stored CRDs (and of a RayJob's
    rayClusterSpec), with token among its modes: the validator checks it, not just passes it."""
    for kind, path in (("RayCluster", ["spec"]), ("RayJob", ["spec", "rayClusterSpec"])):
        node = cv.kuberay_schema(kind)["openAPIV3Schema"]
        for key in path:
            node = node["properties"][key]
        assert "token" in node["properties"]["authOptions"]["properties"]["mode"]["enum"]


@pytest.mark.parametrize("name", file_ids(KUBERAY))
def test_shipped_manifests_enable_token_auth(name):
    _, doc = _ray_doc(name)
    spec = _cluster_spec(doc)
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    text = (CLUSTERS / "kuberay" / name).read_text()
    assert "# authOptions:" not in text, "enabled, not commented out"
    cv.validate_kuberay_manifest(CLUSTERS / "kuberay" / name)  # no opt-out needed


AUTH_KEY = {"raycluster.yaml": "spec.authOptions", "rayjob.yaml": "spec.rayClusterSpec.authOptions"}


@pytest.mark.parametrize("name", file_ids(KUBERAY))
def test_a_manifest_without_auth_options_is_rejected_naming_the_key(tmp_path, name):
    docs, doc = _ray_doc(name)
    del _cluster_spec(doc)["authOptions"]
    path = write_file(tmp_path, name, yaml.safe_dump_all(docs, sort_keys=False))
    message = _rejected(path)
    assert str(path) in message
    assert f"{AUTH_KEY[name]}: missing, so the head serves the dashboard on '0.0.0.0'" in message
    assert "without token authentication" in message
    assert "Add authOptions: {mode: token}" in message  # the fix
    assert "--allow-open-dashboard" in message  # the opt-out
    # The opt-out is explicit: in the API and on the command line.
    cv.validate_kuberay_manifest(path, allow_open_dashboard=True)
    assert cv.main([str(path)]) == 1
    assert cv.main(["--allow-open-dashboard", str(path)]) == 0


def _edit_head(name: str, tmp_path: Path, edit) -> Path:
    docs, doc = _ray_doc(name)
    spec = _cluster_spec(doc)
    edit(spec, spec["headGroupSpec"])
    return write_file(tmp_path, name, yaml.safe_dump_all(docs, sort_keys=False))


def _no_auth(spec: dict) -> None:
    del spec["authOptions"]


OPEN_HEADS = {
    # name: (edit of (spec, head), expected text)
    "default-host": (
        lambda spec, head: (_no_auth(spec), head["rayStartParams"].pop("dashboard-host")),
        "spec.authOptions: missing, so the head serves the dashboard on 0.0.0.0 (KubeRay's default",
    ),
    "other-host": (
        lambda spec, head: (_no_auth(spec), head["rayStartParams"].update({"dashboard-host": "10.0.0.5"})),
        "on '10.0.0.5' (headGroupSpec.rayStartParams.dashboard-host)",
    ),
    "mode-disabled": (
        lambda spec, head: spec.update({"authOptions": {"mode": "disabled"}}),
        "spec.authOptions.mode: 'disabled', so the head serves the dashboard on '0.0.0.0'",
    ),
    "mode-missing": (
        lambda spec, head: spec.update({"authOptions": {}}),
        "spec.authOptions.mode: missing, so the head serves the dashboard",
    ),
    "env-disabled": (
        lambda spec, head: (
            _no_auth(spec),
            head["template"]["spec"]["containers"][0]["env"].append({"name": "RAY_AUTH_MODE", "value": "disabled"}),
        ),
        "spec.authOptions: missing",
    ),
}  # fmt: skip


@pytest.mark.parametrize("how", OPEN_HEADS)
def test_an_open_kuberay_head_is_rejected(tmp_path, how):
    edit, expected = OPEN_HEADS[how]
    message = _rejected(_edit_head("raycluster.yaml", tmp_path, edit))
    assert expected in message, message
    assert "RayCluster gere" in message


CLOSED_HEADS = {
    "loopback": lambda spec, head: (_no_auth(spec), head["rayStartParams"].update({"dashboard-host": "127.0.0.1"})),
    "no-dashboard": lambda spec, head: (_no_auth(spec), head["rayStartParams"].update({"include-dashboard": "false"})),
    # Token auth wired by hand (operators before 1.5.1): RAY_AUTH_MODE=token + a Secret.
    "manual-env": lambda spec, head: (
        _no_auth(spec),
        head["template"]["spec"]["containers"][0]["env"].append({"name": "RAY_AUTH_MODE", "value": "token"}),
    ),
}  # fmt: skip


@pytest.mark.parametrize("how", CLOSED_HEADS)
def test_a_kuberay_head_not_open_to_the_network_passes_without_auth_options(tmp_path, how):
    cv.validate_kuberay_manifest(_edit_head("raycluster.yaml", tmp_path, CLOSED_HEADS[how]))


TOKEN_MODE_PROBLEMS = {
    "old-ray": ({"rayVersion": "2.51.0"}, "spec.rayVersion: '2.51.0': authOptions.mode 'token' needs Ray >= 2.52.0"),
    "typo-mode": ({"authOptions": {"mode": "tokn"}}, "spec.authOptions.mode: 'tokn' is not one of ['disabled', 'token'] (did you mean 'token'?)"),
    "typo-key": ({"authOptions": {"mod": "token"}}, "spec.authOptions: unknown key 'mod' (did you mean 'mode'?)"),
}  # fmt: skip


@pytest.mark.parametrize("how", TOKEN_MODE_PROBLEMS)
def test_token_mode_is_checked_like_the_operator_checks_it(tmp_path, how):
    update, expected = TOKEN_MODE_PROBLEMS[how]
    docs, doc = _ray_doc("raycluster.yaml")
    doc["spec"].update(update)
    if how == "old-ray":  # keep the images in step, so that only the auth rule speaks
        for group in [doc["spec"]["headGroupSpec"], *doc["spec"]["workerGroupSpecs"]]:
            for container in group["template"]["spec"]["containers"]:
                container["image"] = "rayproject/ray:2.51.0-py311-gpu"
    path = write_file(tmp_path, "raycluster.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    assert expected in _rejected(path)


def test_token_mode_without_a_ray_version_is_rejected(tmp_path):
    docs, doc = _ray_doc("raycluster.yaml")
    del doc["spec"]["rayVersion"]
    path = write_file(tmp_path, "raycluster.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    assert "spec.rayVersion: missing, but authOptions.mode is 'token'" in _rejected(path)


# --------------------------------------------------------------------------------------------
# Ray autoscaler YAMLs


@pytest.mark.parametrize("path", AUTOSCALER, ids=file_ids(AUTOSCALER))
def test_shipped_autoscaler_yamls_start_the_head_with_token_auth(path):
    raw = yaml.safe_load(path.read_text())
    assert "RAY_AUTH_MODE=token" in " ".join(raw["docker"]["run_options"])
    assert any("--dashboard-host=0.0.0.0" in c for c in raw["head_start_ray_commands"])
    cfg = cv.validate_autoscaler_yaml(path)  # no opt-out needed
    assert cv._autoscaler_auth_problems(cfg) == []


def _autoscaler(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = (CLUSTERS / name).read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return write_file(tmp_path, name, text)


NO_AUTH = (f"    - {AUTH_LINE}\n", "")


@pytest.mark.parametrize("name", file_ids(AUTOSCALER))
def test_an_autoscaler_yaml_without_auth_is_rejected(tmp_path, name):
    path = _autoscaler(tmp_path, name, NO_AUTH)
    message = _rejected(path, cv.validate_autoscaler_yaml)
    assert str(path) in message
    assert (
        "head_start_ray_commands[1]: `ray start --head` serves the dashboard on "
        "--dashboard-host=0.0.0.0 without token authentication (RAY_AUTH_MODE is not set for it)"
    ) in message
    assert f"docker.run_options {AUTH_LINE}" in message  # the fix
    assert "--allow-open-dashboard" in message
    cv.validate_autoscaler_yaml(path, allow_open_dashboard=True)
    assert cv.main([str(path)]) == 1
    assert cv.main(["--allow-open-dashboard", str(path)]) == 0


HEAD = "ray start --head --port=6379"
OPEN_STARTS = {
    # name: (edits to aws-gpu.yaml, expected text)
    "mode-disabled": ([(AUTH_LINE, "-e RAY_AUTH_MODE=disabled")], "(RAY_AUTH_MODE is 'disabled' for it)"),
    "command-disables": ([(HEAD, f"RAY_AUTH_MODE=disabled {HEAD}")], "(RAY_AUTH_MODE is 'disabled' for it)"),
    # Each command of the list runs in a shell of its own: an export in another one is lost.
    "export-elsewhere": ([NO_AUTH, ("  - ray stop\n  - >-\n    ulimit", "  - export RAY_AUTH_MODE=token\n  - >-\n    ulimit")],
                         "head_start_ray_commands[1]: `ray start --head`"),
    "host-elsewhere": ([NO_AUTH, ("--dashboard-host=0.0.0.0", "--dashboard-host 10.1.2.3")], "--dashboard-host=10.1.2.3"),
    # No head_start_ray_commands of its own: Ray's default (which serves on 0.0.0.0) is checked.
    "default-commands": ([NO_AUTH, ("head_start_ray_commands:", "unused_head_start_ray_commands:")],
                         "head_start_ray_commands[1] (Ray's default for the provider; set your own)"),
}  # fmt: skip


@pytest.mark.parametrize("how", OPEN_STARTS)
def test_an_open_autoscaler_head_is_rejected(tmp_path, how):
    edits, expected = OPEN_STARTS[how]
    text = (CLUSTERS / "aws-gpu.yaml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    if how == "default-commands":  # drop the renamed (unknown) key again
        raw = yaml.safe_load(text)
        del raw["unused_head_start_ray_commands"]
        text = yaml.safe_dump(raw, sort_keys=False)
    message = _rejected(write_file(tmp_path, "aws.yaml", text), cv.validate_autoscaler_yaml)
    assert expected in message, message
    assert len(message.split("\n  - ")) == 2, message  # that one problem, once


CLOSED_STARTS = {
    "command-prefix": [NO_AUTH, (HEAD, f"RAY_AUTH_MODE=token {HEAD}")],
    "export-same-command": [NO_AUTH, ("ulimit -n 65536; ray start --head", "export RAY_AUTH_MODE=token; ulimit -n 65536; ray start --head")],
    "head-run-options": [NO_AUTH, ("  pull_before_run: true\n", f"  pull_before_run: true\n  head_run_options: ['{AUTH_LINE}']\n")],
    "loopback": [NO_AUTH, (" --dashboard-host=0.0.0.0", "")],
    "no-dashboard": [NO_AUTH, ("--dashboard-host=0.0.0.0", "--dashboard-host=0.0.0.0 --include-dashboard=false")],
}  # fmt: skip


@pytest.mark.parametrize("how", CLOSED_STARTS)
def test_an_autoscaler_head_with_auth_or_no_open_dashboard_passes(tmp_path, how):
    cv.validate_autoscaler_yaml(_autoscaler(tmp_path, "aws-gpu.yaml", *CLOSED_STARTS[how]))


# --------------------------------------------------------------------------------------------
# The documented commands


def _shell_blocks() -> list[tuple[str, str]]:
    """(where, shell text) for every bash block of the READMEs, the header comment of every
    cluster YAML (its usage lines; later comments are prose) and the Commands section of every
    study docstring."""
    blocks = []
    for md in (ROOT / "README.md", ROOT / "docs" / "running.md", CLUSTERS / "README.md"):
        for i, block in enumerate(re.findall(r"```bash\n(.*?)```", md.read_text(), re.S)):
            blocks.append((f"{md.relative_to(ROOT)} bash block {i}", block))
    for path in AUTOSCALER + KUBERAY:
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line[1:].removeprefix(" "))
        blocks.append((f"{path.relative_to(ROOT)} header", "\n".join(header)))
    for study in STUDIES:
        doc = ast.get_docstring(ast.parse((ROOT / "studies" / f"{study}.py").read_text()))
        blocks.append((f"studies/{study}.py docstring", doc.split("Commands:", 1)[1]))
    return blocks


def _commands(block: str) -> list[str]:
    """The block's shell commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    joined = re.sub(r"(\|\||&&)[ \t]*(#[^\n]*)?\n", r"\1 ", joined)  # `a ||  # c` + next line
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def _ray_commands() -> list[tuple[str, str, str]]:
    """(where, command, environment text in effect) for every `ray start --head` and
    `ray job submit` shown: what the command line sets before `ray`, plus earlier exports."""
    found = []
    for where, block in _shell_blocks():
        exported = ""
        for command in _commands(block):
            if command.startswith("export "):
                exported += " " + command
                continue
            m = re.search(r"\bray (start\b.*--head|job submit)\b", command)
            if m:
                found.append((where, command, exported + " " + command[: m.start()]))
    return found


RAY_COMMANDS = _ray_commands()


def test_the_docs_show_ray_start_and_job_submit_where_expected():
    where = {w for w, _, _ in RAY_COMMANDS}
    readme = [c for w, c, _ in RAY_COMMANDS if w.startswith("docs/running.md")]
    assert any(c.startswith("ray start --head") for c in readme)
    assert any("ray job submit" in c for c in readme)
    for study in STUDIES:
        assert f"studies/{study}.py docstring" in where
    assert any(w.startswith("clusters/README.md") for w in where)
    assert any(w.startswith("clusters/kuberay/raycluster.yaml") for w in where)
    assert {"clusters/aws-gpu.yaml header", "clusters/gcp-gpu.yaml header"} <= where


@pytest.mark.parametrize(
    ("where", "command", "env"), RAY_COMMANDS, ids=[f"{w}: {c[:30]}" for w, c, _ in RAY_COMMANDS]
)
def test_documented_ray_commands_run_with_token_auth(where, command, env):
    assert re.search(r"\bRAY_AUTH_MODE=token\b", env), f"{where}: {command}"
    assert re.search(r"\bRAY_AUTH_TOKEN(_PATH)?=", env), f"{where}: {command} (no token source)"


def test_study_docstrings_use_the_clusters_readme_token_file():
    readme = (CLUSTERS / "README.md").read_text()
    assert f"RAY_AUTH_TOKEN_PATH={TOKEN_PATH}" in readme
    for study in STUDIES:
        doc = ast.get_docstring(ast.parse((ROOT / "studies" / f"{study}.py").read_text()))
        assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={TOKEN_PATH}" in doc, study


def test_readme_makes_the_token_before_exporting_its_path():
    """A RAY_AUTH_TOKEN_PATH naming a missing or empty file is an error in Ray 2.60, and
    `ray get-auth-token --generate > FILE` with it exported would empty FILE first."""
    text = (ROOT / "docs" / "running.md").read_text()
    section = text[text.index("### On a cluster: `ray job submit`") :]
    commands = _commands(re.search(r"```bash\n(.*?)```", section, re.S).group(1))
    make = next(i for i, c in enumerate(commands) if "ray get-auth-token --generate" in c)
    export = next(i for i, c in enumerate(commands) if "RAY_AUTH_TOKEN_PATH=" in c)
    start = next(i for i, c in enumerate(commands) if c.startswith("ray start --head"))
    assert make < export < start
    assert "[ -s ~/.ray-gere/auth_token ] ||" in commands[make]  # a rerun keeps the token
    assert "env -u RAY_AUTH_TOKEN_PATH" in commands[make]


# --------------------------------------------------------------------------------------------
# The README's block against a real head (slow: ~1 min)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _readme_block() -> str:
    text = (ROOT / "docs" / "running.md").read_text()
    section = text[text.index("### On a cluster: `ray job submit`") :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
@pytest.mark.ray
def test_readme_block_starts_a_head_that_refuses_clients_without_the_token(tmp_path):
    """The README's lines, on a fresh HOME and private ports: the head asks for the token; a
    client with the README's environment submits, one without it is refused. The head runs
    with --block in its own process group, stopped by killing that group (no `ray stop`)."""
    home = tmp_path / "home"
    home.mkdir()
    # Ray's socket paths under --temp-dir must stay below 108 bytes: a short directory.
    temp = Path(tempfile.mkdtemp(prefix="rauth", dir="/tmp"))
    ports = _free_ports(10)
    dash = ports[1]
    start_opts = (
        f"--port={ports[0]} --dashboard-port={dash} --ray-client-server-port={ports[2]} "
        f"--dashboard-agent-listen-port={ports[3]} --dashboard-agent-grpc-port={ports[4]} "
        f"--metrics-export-port={ports[5]} --runtime-env-agent-port={ports[6]} "
        f"--node-manager-port={ports[7]} --object-manager-port={ports[8]} --num-cpus=1 "
        f"--temp-dir={temp} --disable-usage-stats --include-dashboard=true --block"
    )
    block = _readme_block()
    setup = block.split("\nray start --head", 1)[0]  # the token and the exports
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["HOME"] = str(home)
    script = f"{setup}\nexec ray start --head {start_opts}"
    log = tmp_path / "head.log"
    head = subprocess.Popen(
        ["bash", "-c", script],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dash}/", timeout=2)
                break
            except OSError:
                assert head.poll() is None, log.read_text()[-3000:]
                assert time.time() < deadline, "the head did not come up"
                time.sleep(1)
        token = (home / ".ray-gere" / "auth_token").read_text()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        submit = ["ray", "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--"]
        job = ["python", "-c", "print('job ran')"]
        client = subprocess.run(
            ["bash", "-c", f'{setup}\nexec "$@"', "bash", *submit, *job],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert client.returncode == 0, (client.stdout + client.stderr)[-3000:]
        assert "job ran" in client.stdout
        bare = subprocess.run([*submit, *job], env=env, capture_output=True, text=True, timeout=120)
        assert bare.returncode != 0
        assert "Missing authentication token" in bare.stdout + bare.stderr
        assert "job ran" not in bare.stdout
    finally:
        _kill_group(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_group(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        _kill_group(head.pid, signal.SIGKILL)  # children still in the group
        # Ray processes that left the group, identified by this test's temp dir.
        leftover = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True)
        for pid in leftover.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)

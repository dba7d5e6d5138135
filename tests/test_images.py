"""The container images: every Dockerfile parsed and held to the image map, the stage graph and the
cluster's numbers; `make images` / `make kind-load` run against stand-in docker and kind executables
that record their arguments (no container engine here). `make check-images` proves the images'
contents by installing each dependency set for real; it is slower and runs outside this file."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from contribflow import __version__, cli
from contribflow.cluster import k8s
from contribflow.cluster.imagemap import DEFAULT_REGISTRY, IMAGES
from contribflow.graph import EXIT_STAGE, PARAMETERS, STAGES, by_name, render_args
from contribflow.warehouse import transform

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("imagetool", ROOT / "images" / "imagetool.py")
imagetool = importlib.util.module_from_spec(_spec)
sys.modules["imagetool"] = imagetool
_spec.loader.exec_module(imagetool)

RULES = imagetool.dockerignore_rules((ROOT / ".dockerignore").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


DOCKERFILE = ROOT / "images" / "Dockerfile"


def stages_of(name: str) -> list[imagetool.BuildStage]:
    """Every stage of the image's Dockerfile, as written (not flattened)."""
    return imagetool.image_stages(name)[0]


def final(name: str) -> imagetool.BuildStage:
    """The image's target, flattened: what it inherits from the shared stage, then its own."""
    return imagetool.image_stages(name)[1]


def builder(name: str) -> imagetool.BuildStage:
    """The stage, flattened, whose /opt/venv the image's target copies."""
    return imagetool.image_stages(name)[2]


env_of = imagetool.env_of


def labels_of(stage: imagetool.BuildStage) -> dict[str, str]:
    return dict(w.partition("=")[::2] for i in stage.all("LABEL") for w in shlex.split(i.value))


# --- the image map and the Dockerfiles ---------------------------------------------------------------

def test_one_dockerfile_whose_targets_are_exactly_the_image_map():
    """One Dockerfile (the shared stages written once, so the images cannot drift apart), one target
    per image, named as the image (`make images` passes the name as --target); every stage that no
    other stage builds on or copies from is an image of the map."""
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "images").rglob("*Dockerfile")
               if p.parent.name != "standin"}
    assert on_disk == {image.dockerfile for image in IMAGES.values()} == {"images/Dockerfile"}
    assert all(image.target == image.name for image in IMAGES.values())
    stages = imagetool.parse_dockerfile(DOCKERFILE.read_text())
    names = [s.name for s in stages]
    assert all(names) and len(set(names)) == len(names), "every stage named, once"
    used = {s.base for s in stages} | {imagetool.copy_sources(i)[2]["from"] for s in stages
                                       for i in s.all("COPY") if "from" in imagetool.copy_sources(i)[2]}
    assert {n for n in names if n not in used} == set(IMAGES)


def test_every_image_is_the_shared_runtime_stage_plus_its_own_venv():
    """Every target is FROM the one runtime stage, which holds what the images share (ENV, USER,
    entrypoint, …); a target adds only its labels, ENV, and COPYs: no RUN, no second USER."""
    stages = imagetool.parse_dockerfile(DOCKERFILE.read_text())
    for name in IMAGES:
        target = imagetool.stage_by_name(stages, name)
        assert target.base == "runtime", name
        assert {i.keyword for i in target.instructions} <= {"LABEL", "ENV", "COPY"}, name
    builders = {builder(name).name for name in IMAGES}
    assert builders == {f"{name}-venv" for name in IMAGES}, "each image's venv is built by its own stage"


def test_every_stage_of_the_graph_is_served_by_an_image():
    served = {stage for image in IMAGES.values() for stage in image.stages}
    assert served == {s.name for s in (*STAGES, EXIT_STAGE)}


@pytest.mark.parametrize("name", IMAGES)
def test_entrypoint_runs_the_contribflow_cli_for_each_stage_of_the_image(name: str):
    last = final(name)
    entrypoints = last.all("ENTRYPOINT")
    assert len(entrypoints) == 1, "exactly one ENTRYPOINT in the final stage"
    entrypoint = imagetool.exec_form(entrypoints[0].value)
    assert entrypoint == ["contribflow"], "exec form, so the CLI is PID 1's program and gets signals"
    assert PYPROJECT["project"]["scripts"]["contribflow"] == "contribflow.cli:main"
    assert "/opt/venv/bin" in env_of(last)["PATH"].split(":")
    cmd = [imagetool.exec_form(i.value) for i in last.all("CMD")]
    assert cmd == [["--help"]], "without arguments the image prints its usage"
    # The workflow's pod: command ["contribflow"] (the entrypoint restated), args [<stage>, …].
    for stage_name in IMAGES[name].stages:
        stage = by_name((*STAGES, EXIT_STAGE))[stage_name]
        assert stage.command[0] == entrypoint[0]
        values = {**PARAMETERS, "run-date": "2026-01-15"}
        args = render_args(stage.command[1:], lambda kind, key, _, values=values: values.get(key, "Succeeded"))
        parsed = cli.build_parser().parse_args(args)
        assert parsed.command == stage_name


@pytest.mark.parametrize("name", IMAGES)
def test_user_is_the_fixed_non_root_numeric_uid(name: str):
    users = final(name).all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and gid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) == int(gid) == k8s.RUN_AS_USER != 0
    last_user_line = users[-1].line
    assert all(i.line < last_user_line for i in final(name).all("RUN")), "no RUN as root after USER"


def test_bases_are_one_pinned_slim_python():
    """Every stage of the Dockerfile, followed down its FROM chain, starts from the same base: the
    venvs built in the builders run on the same interpreter."""
    stages = imagetool.parse_dockerfile(DOCKERFILE.read_text())
    bases = {imagetool.flatten(stages, stage).base for stage in stages}
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    for name in IMAGES:
        assert builder(name).base == final(name).base == base
    assert str(PYPROJECT["project"]["requires-python"]) == ">=3.11"


def test_the_dockerfile_takes_its_base_as_one_build_arg():
    """BASE_IMAGE chooses the base of every stage (a mirror, a hardened base, the stand-in of
    `make base-image`); its default is the one pinned official image. A FROM names either the build
    arg or an earlier stage of the file."""
    text = DOCKERFILE.read_text()
    assert imagetool.global_args(text).keys() == {"BASE_IMAGE"}
    froms = [line.split() for line in text.splitlines() if line.startswith("FROM ")]
    earlier: list[str] = []
    for words in froms:
        assert words[1] == "${BASE_IMAGE}" or words[1] in earlier, f"FROM {words[1]}: neither the build arg nor an earlier stage"
        assert words[2:3] == ["AS"], words
        earlier.append(words[3])
    assert [w[1] for w in froms].count("${BASE_IMAGE}") >= 2, "the build side and the run side"


def test_a_from_naming_an_arg_without_default_is_refused():
    with pytest.raises(ValueError, match="no global ARG with a default"):
        imagetool.parse_dockerfile("ARG BASE\nFROM ${BASE}\n")
    assert imagetool.parse_dockerfile("ARG B=x:1\nFROM $B AS one\n")[0].base == "x:1"


def test_ingest_builder_imports_the_extension_from_the_venv_and_requires_it():
    """The check must not import from the current folder (WORKDIR /src): `import contribflow` would
    find the copied sources, without the .so; -I keeps it off sys.path. And the extension, optional in setup.py, is made
    mandatory for the image's install, so a compile error fails the build. Only ingest's builder
    copies setup.py (and has a compiler): the other images install without the extension, as before."""
    run = " ".join(i.value for i in builder("ingest").all("RUN") if "_copyrows" in i.value)
    assert "CONTRIBFLOW_REQUIRE_EXTENSION=1 python -m pip" in run
    check = run[run.index("import contribflow.ingest._copyrows") - 80:]
    assert re.search(r"/opt/venv/bin/python -I -c \"import contribflow.ingest._copyrows as m; "
                     r"assert m.__file__.startswith\('/opt/venv/'\)", check), check
    stages = stages_of("ingest")
    for name in IMAGES:
        sent = {src for i in imagetool.context_copies(stages, builder(name)) for src in imagetool.copy_sources(i)[0]}
        runs = " ".join(i.value for i in builder(name).all("RUN"))
        assert ("setup.py" in sent) == ("gcc" in runs) == ("CONTRIBFLOW_REQUIRE_EXTENSION=1" in runs) == (name == "ingest")


@pytest.mark.parametrize("required", ["", "1"])
def test_a_compile_error_of_the_encoder_fails_the_build_only_when_required(required: str, tmp_path: Path):
    """setup.py on a copy of the tree whose encoder does not compile: optional by default (a warning,
    exit 0), an error under CONTRIBFLOW_REQUIRE_EXTENSION=1, as the ingest image builds it."""
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "contribflow" / "ingest").mkdir(parents=True)
    source = (ROOT / "contribflow" / "ingest" / "_copyrows.c").read_text()
    (tmp_path / "contribflow" / "ingest" / "_copyrows.c").write_text(source + "\n#error deliberately broken\n")
    env = {k: v for k, v in os.environ.items() if k != "CONTRIBFLOW_REQUIRE_EXTENSION"}
    if required:
        env["CONTRIBFLOW_REQUIRE_EXTENSION"] = required
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "deliberately broken" in done.stderr + done.stdout
    assert (done.returncode != 0) == bool(required), done.stderr[-2000:]


def test_apt_installs_float_within_the_base_s_release_by_policy():
    """No Debian version pins (a point release removes them from the mirror); the policy is stated
    in .hadolint.yaml, which ignores DL3008 for that reason and nothing else."""
    for stage in imagetool.parse_dockerfile(DOCKERFILE.read_text()):
        for run in stage.all("RUN"):
            installs = re.findall(r"apt-get install ([^&;]+)", run.value)
            assert all("=" not in word for i in installs for word in i.split() if not word.startswith("-")), run.value
    import yaml
    config = yaml.safe_load((ROOT / ".hadolint.yaml").read_text())
    assert config.get("ignored") == ["DL3008"]
    assert "point release" in (ROOT / ".hadolint.yaml").read_text()


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_holds_only_the_venv_from_the_builder(name: str):
    last = final(name)
    copies = [imagetool.copy_sources(i) for i in last.all("COPY")]
    from_builder = [(s, d) for s, d, flags in copies if flags.get("from") == builder(name).name]
    assert from_builder == [(["/opt/venv"], "/opt/venv")]
    assert not last.all("RUN"), "nothing is installed in the final stage"


@pytest.mark.parametrize("name", IMAGES)
def test_builder_installs_exactly_the_image_map_extras_pinned_by_the_lock(name: str):
    runs = " ".join(i.value for i in builder(name).all("RUN"))
    assert "python -m venv --without-pip /opt/venv" in runs, "the venv holds the image's packages only"
    installs = re.findall(r"pip --python (\S+) install (.+?)(?:&&|$)", runs)
    assert len(installs) == 1
    target, arguments = installs[0]
    assert target == "/opt/venv/bin/python", "installs into the venv the final stage copies"
    words = shlex.split(arguments)
    targets = [w for w in words if not w.startswith("-") and words[words.index(w) - 1] != "--constraint"]
    assert targets == [f".[{','.join(IMAGES[name].extras)}]"], "non-editable, exactly the map's extras"
    lock = f"images/{name}/requirements.txt"
    assert words[words.index("--constraint") + 1] == lock
    copied = [src for i in builder(name).all("COPY") for src in imagetool.copy_sources(i)[0]]
    assert lock in copied
    others = {f"images/{other}/requirements.txt" for other in IMAGES if other != name}
    stages = stages_of(name)
    sent = {src for i in imagetool.context_copies(stages, builder(name)) for src in imagetool.copy_sources(i)[0]}
    assert not others & sent, "no other image's lock reaches this builder"


@pytest.mark.parametrize("name", IMAGES)
def test_every_copy_source_is_in_the_build_context_and_not_ignored(name: str):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked_files = set(tracked.stdout.split())
    for stage in stages_of(name):  # every stage of the file, whichever images use it
        for instruction in stage.all("COPY"):
            sources, _, flags = imagetool.copy_sources(instruction)
            if "from" in flags:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} (line {instruction.line}) does not exist"
                sent = set(imagetool.context_files(source, ROOT, RULES))
                assert sent, f"{name}: COPY {source} sends nothing past .dockerignore"
                prefix = source.rstrip("/")
                wanted = {f for f in tracked_files if f == prefix or f.startswith(prefix + "/")}
                assert wanted <= sent | {f for f in wanted if not (ROOT / f).exists()}, (
                    f"{name}: .dockerignore drops tracked files of COPY {source}: {sorted(wanted - sent)[:5]}")


@pytest.mark.parametrize("name", IMAGES)
def test_writes_go_to_tmp_for_a_read_only_root_filesystem(name: str):
    env = env_of(final(name))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["CONTRIBFLOW_OUTPUTS_DIR"] == k8s.OUTPUTS_DIR
    for key in ("HOME", "CONTRIBFLOW_STATE_DIR", "CONTRIBFLOW_OUTPUTS_DIR", "CONTRIBFLOW_DBT_TARGET_DIR"):
        if key in env:
            assert env[key] == "/tmp" or env[key].startswith("/tmp/"), f"{key}={env[key]} is not under /tmp"
    if "CONTRIBFLOW_LANDING_DIR" in env:
        assert env["CONTRIBFLOW_LANDING_DIR"] == k8s.LANDING_MOUNT


def test_dbt_image_carries_the_dbt_project_where_its_settings_point():
    last = final("dbt")
    env = env_of(last)
    copies = [imagetool.copy_sources(i) for i in last.all("COPY")]
    assert (["dbt/"], "/app/dbt/") in [(s, d) for s, d, _ in copies]
    assert env["CONTRIBFLOW_DBT_PROJECT_DIR"] == "/app/dbt"
    assert env["CONTRIBFLOW_DBT_TARGET_DIR"] == k8s.DBT_TARGET_DIR
    assert env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false", "no usage cookie written to the read-only project"
    others = [c for name in IMAGES if name != "dbt" for c in final(name).all("COPY")]
    assert all("dbt/" not in imagetool.copy_sources(c)[0] for c in others)


def test_dbt_image_ships_the_saved_parse_made_with_the_final_stage_s_project_venv_and_base():
    """The parse stage: same base and venv as the final stage, the project at the path the final stage
    has it (dbt's saved parse records the project's files by path and checksum), no connection setting
    but the database (transform.PARSE_CONNECTION stands in for the rest: nothing secret is built in);
    the final stage copies only the saved parse, to where CONTRIBFLOW_DBT_SAVED_PARSE points."""
    last = final("dbt")
    parse = imagetool.copied_from(stages_of("dbt"), last, "/app/dbt-parse/partial_parse.msgpack")
    assert parse.name == "dbt-parse" and parse.base == last.base
    copies = [imagetool.copy_sources(i) for i in parse.all("COPY")]
    assert (["/opt/venv"], "/opt/venv", {"from": builder("dbt").name}) in copies
    assert (["dbt/"], env_of(last)["CONTRIBFLOW_DBT_PROJECT_DIR"] + "/", {}) in copies
    (run,) = parse.all("RUN")
    assert "/opt/venv/bin/python -m contribflow.warehouse.transform --save-parse" in run.value
    assert "CONTRIBFLOW_DBT_PROJECT_DIR=/app/dbt " in run.value and 'PGDATABASE="${DBT_PARSE_DATABASE}"' in run.value
    assert not re.search(r"PG(HOST|PORT|USER|PASSWORD|SSLMODE)=", run.value), "only the database is built in"
    shipped = [(s, d) for s, d, flags in (imagetool.copy_sources(i) for i in last.all("COPY")) if flags.get("from") == "dbt-parse"]
    saved = env_of(last)["CONTRIBFLOW_DBT_SAVED_PARSE"]
    assert shipped == [(["/app/dbt-parse/partial_parse.msgpack"], saved)]
    assert saved.endswith("/" + transform.SAVED_PARSE) and not saved.startswith("/tmp/"), "in the image, not the emptyDir"


@pytest.mark.parametrize("name", IMAGES)
def test_oci_labels_and_healthcheck(name: str):
    labels = labels_of(final(name))
    assert labels["org.opencontainers.image.title"] == IMAGES[name].repository
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    # The label names the base actually built FROM: the build arg, re-declared in the final stage.
    assert labels["org.opencontainers.image.base.name"] == "${BASE_IMAGE}"
    assert [i.value for i in final(name).all("ARG")] == ["BASE_IMAGE"]
    assert labels["org.opencontainers.image.description"]
    assert [i.value for i in final(name).all("HEALTHCHECK")] == ["NONE"]


# --- the locks: what each image installs ---------------------------------------------------------------

@pytest.mark.parametrize("name", IMAGES)
def test_lock_pins_every_declared_dependency_within_its_range_and_nothing_forbidden(name: str):
    pins = imagetool.read_lock(imagetool.lock_file(name))
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    declared += [Requirement(r) for e in IMAGES[name].extras for r in extras[e]]
    for requirement in declared:
        key = requirement.name.lower().replace("_", "-")
        assert key in pins, f"{name}: {requirement} is not pinned (run make lock-images)"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"{name}: locked {key}=={pins[key]} is outside {requirement} (run make lock-images)")
    assert not imagetool.forbidden_packages(name) & pins.keys()
    assert "contribflow" not in pins


def test_forbidden_packages_come_from_the_other_images_extras():
    assert {"dbt-core", "dbt-postgres"} <= imagetool.forbidden_packages("ingest")
    assert {"pandas", "pandera"} <= imagetool.forbidden_packages("dbt")
    assert not {"pandas", "pandera"} & imagetool.forbidden_packages("ingest")
    assert {"pandas", "dbt-core"} <= imagetool.forbidden_packages("migrations")
    assert "psycopg" not in imagetool.forbidden_packages("dbt"), "the shared core dependency is in every image"


def test_read_lock_refuses_a_loose_pin(tmp_path: Path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("# header\npandas==3.1.1\nnumpy>=2\n")
    with pytest.raises(ValueError, match=r"requirements.txt:3: 'numpy>=2' is not an exact pin"):
        imagetool.read_lock(lock)


# --- .dockerignore --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/config", ".tools/checkov-venv/bin/checkov", "data/landing/x.csv",
    ".contribflow/pgdata/PG_VERSION", "dbt/target/manifest.json", "dbt/logs/dbt.log", ".env",
    "contribflow/__pycache__/cli.cpython-311.pyc", "tests/test_images.py", "helm/Chart.yaml",
    "contribflow.egg-info/PKG-INFO", "images/Dockerfile", "images/imagetool.py",
])
def test_dockerignore_keeps_local_state_and_secrets_out(path: str):
    assert imagetool.ignored(path, RULES)


@pytest.mark.parametrize("path", [
    "pyproject.toml", "README.md", "contribflow/cli.py", "contribflow/warehouse/migrations/0001_raw_and_meta.sql",
    "dbt/dbt_project.yml", "dbt/models/marts/fct_contributions.sql", "images/dbt/requirements.txt",
])
def test_dockerignore_sends_what_the_builds_need(path: str):
    assert not imagetool.ignored(path, RULES)


def test_dockerignore_matcher_follows_docker_syntax():
    rules = imagetool.dockerignore_rules("*\n!src/\n**/*.pyc\nsrc/secret?.txt\n")
    assert imagetool.ignored("a.txt", rules) and imagetool.ignored("deep/a.txt", rules)
    assert not imagetool.ignored("src/a/b.py", rules)
    assert imagetool.ignored("src/a/b.pyc", rules)
    assert imagetool.ignored("src/secret1.txt", rules) and not imagetool.ignored("src/secret10.txt", rules)


def test_dockerignore_matcher_follows_the_legacy_builder_s_walk():
    """Docker's legacy builder (the one on this project's machines) skips an excluded folder unless an
    exception names a path under it literally: a wildcard folder in the exception sends nothing."""
    wildcard = imagetool.dockerignore_rules("*\n!images/*/requirements.txt\n")
    assert imagetool.ignored("images/dbt/requirements.txt", wildcard)
    literal = imagetool.dockerignore_rules("*\n!images/dbt/requirements.txt\n")
    assert not imagetool.ignored("images/dbt/requirements.txt", literal)
    assert imagetool.ignored("images/dbt/other.txt", literal) and imagetool.ignored("images/ingest/requirements.txt", literal)


def test_dockerfile_parser_reports_a_dangling_continuation():
    with pytest.raises(ValueError, match="continuation"):
        imagetool.parse_dockerfile("FROM python:3.11.14-slim-bookworm\nRUN true \\\n")
    with pytest.raises(ValueError, match="line 1: RUN before the first FROM"):
        imagetool.parse_dockerfile("RUN true\nFROM x\n")


def test_image_filesystem_maps_the_images_paths_and_env(tmp_path: Path):
    fs = imagetool.ImageFilesystem(tmp_path)
    fs.add_files("dbt")
    assert (fs.app / "dbt" / "dbt_project.yml").is_file()
    assert (fs.app / "dbt" / "models" / "marts" / "fct_contributions.sql").is_file()
    assert not (fs.app / "dbt" / "target").exists() and not (fs.app / "dbt" / "logs").exists()
    venv = tmp_path / "venv"
    env = fs.env("dbt", venv)
    assert env["CONTRIBFLOW_DBT_PROJECT_DIR"] == str(fs.app / "dbt")
    assert env["CONTRIBFLOW_DBT_TARGET_DIR"] == str(fs.tmp / "dbt-target")
    assert env["HOME"] == str(fs.tmp)
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert "CONTRIBFLOW_OUTPUTS_DIR" not in env, "the runner gives each step its own, as the workflow does"
    assert fs.env("ingest", venv)["CONTRIBFLOW_LANDING_DIR"] == str(fs.data / "landing")


def test_builder_context_is_what_the_dockerfile_copies(tmp_path: Path):
    imagetool.builder_context("dbt", tmp_path)
    sent = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "README.md", "contribflow/cli.py", "images/dbt/requirements.txt"} <= sent
    assert any(p.startswith("contribflow/warehouse/migrations/") for p in sent)
    assert not any("__pycache__" in p or p.startswith(("dbt/", "tests/")) for p in sent)


# --- make images / make kind-load, with stand-in executables ---------------------------------------------

STANDIN = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
sub = sys.argv[1] if len(sys.argv) > 1 else ""
sys.exit(int(os.environ.get("STANDIN_EXIT_" + name + "_" + sub, "0")))
"""


OUTER_MAKE_VARIABLES = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DOCKER", "KIND", "KIND_CLUSTER",
                        "IMAGE_REGISTRY", "IMAGE_TAG", "VENV", "BIN", "BASE_IMAGE", "EXTRA_CA_FILE",
                        "POSTGRES_IMAGE"}


def _path_without(*tools: str) -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not any(os.access(Path(d) / t, os.X_OK) for t in tools))


def make(target: str, tmp_path: Path, tools: tuple[str, ...] = ("docker", "kind"), absent: tuple[str, ...] = (),
         **variables: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run ``make <target>`` with stand-ins for ``tools`` first on PATH and ``absent`` nowhere on it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        (bin_dir / tool).write_text(STANDIN.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    path = _path_without(*absent) if absent else os.environ["PATH"]
    for tool in absent:
        assert shutil.which(tool, path=path) is None
    # Nothing of an outer `make test` (MAKEFLAGS carries its command-line variables) or of the
    # caller's environment (make's ?= reads it) may change what the target does here.
    inherited = {k: v for k, v in os.environ.items() if k not in OUTER_MAKE_VARIABLES}
    env = dict(inherited, PATH=f"{bin_dir}{os.pathsep}{path}", STANDIN_LOG=str(log))
    env.update({k: v for k, v in variables.items() if k.startswith("STANDIN_")})
    make_vars = [f"{k}={v}" for k, v in variables.items() if not k.startswith("STANDIN_")]
    # -o: never reinstall the venv from inside a test, whatever pyproject.toml's timestamp.
    result = subprocess.run([shutil.which("make"), "--no-print-directory", "-o", ".venv/.installed",
                             target, *make_vars], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_make_images_builds_exactly_the_image_map(tmp_path: Path):
    result, calls = make("images", tmp_path)
    assert result.returncode == 0, result.stderr
    builds = [c for c in calls if c[:2] == ["docker", "build"]]
    assert [c[:8] for c in builds] == [
        ["docker", "build", "-f", "images/Dockerfile", "--target", image.name,
         "-t", image.reference(DEFAULT_REGISTRY, __version__)]
        for image in IMAGES.values()]
    revision = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    base = imagetool.global_args(DOCKERFILE.read_text())["BASE_IMAGE"]
    for call in builds:
        assert call[-1] == ".", "the build context is the repository root"
        assert f"org.opencontainers.image.version={__version__}" in call
        assert f"org.opencontainers.image.revision={revision}" in call, "uncommitted changes show as -dirty"
        assert f"BASE_IMAGE={base}" in call[call.index("--build-arg") + 1:][:1]
    assert calls[0] == ["docker", "info"], "the daemon is checked before any build"
    assert not list((ROOT / "images" / "build-ca").glob("*.crt")), "the CA copy is removed after the builds"


def test_make_images_passes_the_base_and_refuses_a_missing_ca_file(tmp_path: Path):
    result, calls = make("images", tmp_path, BASE_IMAGE="mirror.example/python:3.11-slim-bookworm")
    assert result.returncode == 0, result.stderr
    assert all("BASE_IMAGE=mirror.example/python:3.11-slim-bookworm" in c for c in calls if c[1] == "build")
    result, calls = make("images", tmp_path, EXTRA_CA_FILE=str(tmp_path / "missing.pem"))
    assert result.returncode != 0 and "is not a readable file" in result.stderr
    assert [c for c in calls if c[1] == "build"] == [c for c in calls if c[1] == "build"][:len(IMAGES)]


def test_make_images_takes_registry_and_tag(tmp_path: Path):
    result, calls = make("images", tmp_path, IMAGE_REGISTRY="localhost:5001/cf", IMAGE_TAG="9.9.9-rc1")
    assert result.returncode == 0, result.stderr
    refs = [c[c.index("-t") + 1] for c in calls if c[:2] == ["docker", "build"]]
    assert refs == [image.reference("localhost:5001/cf", "9.9.9-rc1") for image in IMAGES.values()]


def test_make_images_without_docker_says_what_to_install(tmp_path: Path):
    result, calls = make("images", tmp_path, tools=(), absent=("docker",))
    assert result.returncode != 0
    assert "'docker' was not found on PATH" in result.stderr
    assert "Install Docker Engine" in result.stderr and "docs.docker.com" in result.stderr
    assert calls == []


def test_make_images_with_docker_but_no_daemon_says_so(tmp_path: Path):
    result, calls = make("images", tmp_path, tools=("docker",), STANDIN_EXIT_docker_info="1")
    assert result.returncode != 0
    assert "cannot reach its daemon" in result.stderr
    assert calls == [["docker", "info"]], "no build is attempted"


def test_make_images_stops_at_the_first_failed_build(tmp_path: Path):
    result, calls = make("images", tmp_path, tools=("docker",), STANDIN_EXIT_docker_build="1")
    assert result.returncode != 0
    assert [c[:2] for c in calls] == [["docker", "info"], ["docker", "build"]]


def test_make_kind_load_loads_every_image_into_the_cluster(tmp_path: Path):
    result, calls = make("kind-load", tmp_path)
    assert result.returncode == 0, result.stderr
    loads = [c for c in calls if c[0] == "kind"]
    assert loads == [["kind", "load", "docker-image", image.reference(), "--name", "contribflow"]
                     for image in IMAGES.values()]


def test_make_kind_load_takes_the_cluster_name(tmp_path: Path):
    result, calls = make("kind-load", tmp_path, KIND_CLUSTER="ci-7", IMAGE_TAG="dev")
    assert result.returncode == 0, result.stderr
    assert [c[3:] for c in calls if c[0] == "kind"] == [[image.reference(tag="dev"), "--name", "ci-7"]
                                                         for image in IMAGES.values()]


def test_make_kind_load_refuses_before_loading_when_an_image_was_not_built(tmp_path: Path):
    result, calls = make("kind-load", tmp_path, STANDIN_EXIT_docker_image="1")
    assert result.returncode != 0
    assert f"{IMAGES['migrations'].reference()} is not among docker's images: run make images first" in result.stderr
    assert not [c for c in calls if c[0] == "kind"]


def test_make_kind_load_checks_every_image_is_built_first(tmp_path: Path):
    result, calls = make("kind-load", tmp_path)
    assert result.returncode == 0, result.stderr
    inspected = [c[3] for c in calls if c[:3] == ["docker", "image", "inspect"]]
    assert inspected == [image.reference() for image in IMAGES.values()]
    assert calls.index(["docker", "image", "inspect", inspected[-1]]) < [c[0] for c in calls].index("kind")


def test_make_kind_load_without_kind_says_what_to_install(tmp_path: Path):
    result, calls = make("kind-load", tmp_path, tools=("docker",), absent=("kind",))
    assert result.returncode != 0
    assert "'kind' was not found on PATH" in result.stderr and "kind.sigs.k8s.io" in result.stderr
    assert not [c for c in calls if c[0] == "kind"]


# --- the rendered workflows run what `make images` builds, as the user the images declare -----------

def _walk(node, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def rendered_workflows() -> list:
    import yaml

    files = sorted((ROOT / "workflows" / "rendered").glob("*.yaml"))
    assert files, "workflows/rendered/ holds the rendered Argo objects"
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


def test_every_image_the_rendered_workflows_run_is_built_by_make_images(tmp_path: Path):
    result, calls = make("images", tmp_path, tools=("docker",))
    assert result.returncode == 0, result.stderr
    built = {c[c.index("-t") + 1] for c in calls if c[:2] == ["docker", "build"]}
    used = {image for doc in rendered_workflows() for image in _walk(doc, "image")}
    assert used and used <= built, sorted(used - built)


def test_rendered_workflows_run_as_the_images_user_with_tmp_writable():
    (uid, gid), = {tuple(final(n).all("USER")[-1].value.split(":")) for n in IMAGES}
    contexts = [c for doc in rendered_workflows() for c in _walk(doc, "securityContext")]
    users = {c["runAsUser"] for c in contexts if "runAsUser" in c}
    groups = {c["runAsGroup"] for c in contexts if "runAsGroup" in c}
    assert users == {int(uid)} and groups == {int(gid)}
    containers = [t["container"] for doc in rendered_workflows()
                  for templates in _walk(doc, "templates") for t in templates if "container" in t]
    assert containers
    for container in containers:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert container["command"] == imagetool.exec_form(final("migrations").all("ENTRYPOINT")[0].value)

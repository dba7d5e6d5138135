"""Prove each image's contents without a container engine, and pin what each image installs.

``lock``  — resolve each image's dependency set (``.[<extras>]`` from pyproject.toml) in a fresh
            virtualenv and write the exact versions to ``images/<image>/requirements.txt``, the
            constraints file its builder stage in ``images/Dockerfile`` installs with.
``check`` — for each image, build a fresh virtualenv the way the builder of its target in
            ``images/Dockerfile`` builds ``/opt/venv`` (non-editable ``pip install --constraint
            images/<image>/requirements.txt '.[<extras>]'`` from a copy of exactly what reaches that
            builder from the build context), then prove it: the installed packages
            are the lock, every stage of the image answers ``contribflow <stage> --help``, the
            packages of other images' extras (dbt in ingest, pandas in dbt, …) are absent, and,
            with ``--pipeline``, the whole stage graph runs against a real PostgreSQL with every
            stage executed by its own image's virtualenv.

Run with the project's dev virtualenv (it imports the image map and the stage graph):
``.venv/bin/python images/imagetool.py check``. ``make check-images`` and ``make lock-images``
wrap it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# --- Dockerfile and .dockerignore parsing (also used by tests/test_images.py) ---------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class BuildStage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


ARG_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def global_args(text: str) -> dict[str, str | None]:
    """The ``ARG``s declared before the first ``FROM``, with their defaults (None: no default)."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            break
        if keyword.upper() == "ARG":
            name, eq, default = value.strip().partition("=")
            found[name] = default if eq else None
    return found


def parse_dockerfile(text: str) -> list[BuildStage]:
    """Instructions grouped by build stage; continuation lines joined, comments dropped. A ``FROM``
    naming a global ``ARG`` gets that ARG's default as its base (what a plain ``docker build`` uses)."""
    stages: list[BuildStage] = []
    defaults = global_args(text)

    def resolve(word: str, line: int) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            if defaults.get(name) is None:
                raise ValueError(f"line {line}: FROM uses ${name}, which is no global ARG with a default")
            return defaults[name]
        return ARG_REFERENCE.sub(value, word)

    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            if words and words[0].startswith("--"):
                words = words[1:]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(BuildStage(resolve(words[0], start), name, []))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {start}: {keyword} before the first FROM")
            continue
        else:
            stages[-1].instructions.append(Instruction(keyword, value, start))
    if pending:
        raise ValueError("the last instruction ends with a line continuation")
    if not stages:
        raise ValueError("no FROM instruction")
    return stages


def stage_by_name(stages: list[BuildStage], name: str, before: int | None = None) -> BuildStage | None:
    """The stage called ``name`` (Docker compares stage names case-insensitively) among the first
    ``before`` stages (a FROM or COPY --from can only name an earlier stage), or None."""
    for stage in stages[:before]:
        if stage.name and stage.name.lower() == name.lower():
            return stage
    return None


def flatten(stages: list[BuildStage], stage: BuildStage) -> BuildStage:
    """The stage as the image it builds: its base is the image at the root of its ``FROM <stage>``
    chain, its instructions those of the whole chain, root first (what it inherits, then its own)."""
    chain = [stage]
    while (parent := stage_by_name(stages, chain[0].base, _position(stages, chain[0]))) is not None:
        chain.insert(0, parent)
    return BuildStage(chain[0].base, stage.name, [i for s in chain for i in s.instructions])


def _position(stages: list[BuildStage], stage: BuildStage) -> int:
    return next(n for n, s in enumerate(stages) if s is stage)


def target_stage(stages: list[BuildStage], target: str) -> BuildStage:
    """The image ``docker build --target <target>`` makes, flattened (see flatten)."""
    stage = stage_by_name(stages, target)
    if stage is None:
        raise ValueError(f"no build stage named {target!r}")
    return flatten(stages, stage)


def copied_from(stages: list[BuildStage], stage: BuildStage, path: str) -> BuildStage:
    """The stage, flattened, that ``stage`` copies ``path`` from (``COPY --from=<stage> <path> …``)."""
    for instruction in stage.all("COPY"):
        sources, _, flags = copy_sources(instruction)
        if "from" in flags and path in sources:
            found = stage_by_name(stages, flags["from"])
            if found is None:
                raise ValueError(f"line {instruction.line}: COPY --from={flags['from']} names no earlier stage")
            return flatten(stages, found)
    raise ValueError(f"stage {stage.name!r} copies {path} from no other stage")


def context_copies(stages: list[BuildStage], stage: BuildStage) -> list[Instruction]:
    """The COPYs from the build context whose files reach the (flattened) stage: its own, and those
    of the stages it copies from (``COPY --from=<stage>``), transitively."""
    found: list[Instruction] = []
    for instruction in stage.all("COPY"):
        flags = copy_sources(instruction)[2]
        if "from" not in flags:
            found.append(instruction)
        elif (source := stage_by_name(stages, flags["from"])) is not None:
            found += [i for i in context_copies(stages, flatten(stages, source)) if i not in found]
    return found


def exec_form(value: str) -> list[str] | None:
    """The JSON (exec) form of ENTRYPOINT/CMD, or None for the shell form."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, flags) of a COPY; the JSON form is accepted too."""
    words = exec_form(instruction.value) or shlex.split(instruction.value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if len(words) < 2:
        raise ValueError(f"line {instruction.line}: COPY needs a source and a destination")
    return words[:-1], words[-1], flags


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax: ``**`` spans folders, ``*`` and ``?`` stay within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}$")


Rule = tuple[bool, re.Pattern[str], str]


def dockerignore_rules(text: str) -> list[Rule]:
    """(excludes, regex, pattern) per line, in order; the last rule that matches a path decides."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((not negate, _pattern_regex(pattern), pattern))
    return rules


def _matched_out(parts: tuple[str, ...], rules: list[Rule]) -> bool:
    """Docker's matcher: a rule matches a path or any of its parent folders; the last match decides."""
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for excludes, regex, _ in rules:
        if any(regex.match(c) for c in candidates):
            excluded = excludes
    return excluded


def ignored(path: str, rules: list[Rule]) -> bool:
    """Whether the builder leaves ``path`` (relative to the context) out: as Docker's matcher decides,
    and as Docker's legacy builder (no BuildKit) walks the context, the stricter of the two builders:
    it skips an excluded folder, and everything in it, unless an exception (``!pattern``) starts with
    that folder's path literally; so ``!images/*/requirements.txt`` sends nothing from ``images/dbt/``
    (BuildKit would send it), while ``!images/dbt/requirements.txt`` does."""
    parts = Path(path).parts
    for n in range(1, len(parts)):
        folder = "/".join(parts[:n]) + "/"
        if _matched_out(parts[:n], rules) and not any(
                not excludes and (pattern + "/").startswith(folder) for excludes, _, pattern in rules):
            return True
    return _matched_out(parts, rules)


def context_files(source: str, context: Path, rules: list[Rule]) -> list[str]:
    """The files a COPY source sends from the context (after .dockerignore), relative paths."""
    base = context / source
    if base.is_file():
        files = [base]
    elif base.is_dir():
        files = [p for p in sorted(base.rglob("*")) if p.is_file()]
    else:
        files = [p for p in sorted(context.glob(source)) if p.is_file()]
    return [rel for p in files if not ignored(rel := p.relative_to(context).as_posix(), rules)]


# --- the image map and the dependency sets ----------------------------------------------------------

def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def extras_requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, set[str]]:
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    return {name: {_requirement_name(r) for r in reqs} for name, reqs in extras.items()}


def forbidden_packages(image_name: str) -> set[str]:
    """Packages other images' extras bring and this image must not contain."""
    from contribflow.cluster.imagemap import IMAGES

    extras = extras_requirements()
    own = set().union(*(extras[e] for e in IMAGES[image_name].extras))
    others = set().union(*(extras[e] for img in IMAGES.values() for e in img.extras))
    return others - own


def lock_file(image_name: str) -> Path:
    return ROOT / "images" / image_name / "requirements.txt"


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"{path}:{number}: {raw!r} is not an exact pin name==version")
        pins[name.strip().lower()] = version.strip()
    return pins


# --- fresh virtualenvs built like the images' ------------------------------------------------------

def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, **kwargs)


def _must(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    result = _run(cmd, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({shlex.join(cmd)}):\n{result.stdout}{result.stderr}")
    return result


def image_stages(image_name: str) -> tuple[list[BuildStage], BuildStage, BuildStage]:
    """(every stage of the image's Dockerfile, its target flattened, the builder of its /opt/venv
    flattened): what ``docker build --target <image>`` makes and where its venv comes from."""
    from contribflow.cluster.imagemap import IMAGES

    stages = parse_dockerfile((ROOT / IMAGES[image_name].dockerfile).read_text())
    final = target_stage(stages, IMAGES[image_name].target)
    return stages, final, copied_from(stages, final, "/opt/venv")


def builder_context(image_name: str, into: Path) -> Path:
    """Copy into ``into`` exactly what reaches the builder of the image's venv from the build context."""
    stages, _, builder = image_stages(image_name)
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    for instruction in context_copies(stages, builder):
        for source in copy_sources(instruction)[0]:
            for rel in context_files(source, ROOT, rules):
                target = into / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
    return into


def fresh_venv(path: Path, python: str) -> Path:
    """As the Dockerfiles make /opt/venv: without pip or setuptools of its own."""
    shutil.rmtree(path, ignore_errors=True)
    _must([python, "-m", "venv", "--without-pip", str(path)], f"creating {path}")
    return path


def pip(python: str, venv: Path, *args: str) -> list[str]:
    """``python -m pip --python <venv> …``: the interpreter's pip working on the venv, as in the builder."""
    return [python, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return dict(env, PIP_DISABLE_PIP_VERSION_CHECK="1")


def install_image(image_name: str, venv: Path, python: str) -> None:
    """What the Dockerfile's builder does, into ``venv``."""
    from contribflow.cluster.imagemap import IMAGES

    extras = ",".join(IMAGES[image_name].extras)
    fresh_venv(venv, python)
    # The builder's RUN may make the compiled extension mandatory (ingest): so is it here.
    runs = " ".join(i.value for i in image_stages(image_name)[2].all("RUN"))
    env = pip_env()
    if "CONTRIBFLOW_REQUIRE_EXTENSION=1" in runs:
        env["CONTRIBFLOW_REQUIRE_EXTENSION"] = "1"
    with tempfile.TemporaryDirectory(prefix=f"contribflow-{image_name}-context-") as tmp:
        context = builder_context(image_name, Path(tmp))
        _must(pip(python, venv, "install", "--quiet", "--no-cache-dir",
                  "--constraint", str(lock_file(image_name)), f".[{extras}]"),
              f"installing the {image_name} image's dependency set", cwd=context, env=env)


def installed(venv: Path, python: str) -> dict[str, str]:
    listing = _must(pip(python, venv, "list", "--format", "json"), "pip list", env=pip_env())
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listing.stdout)}


# --- lock --------------------------------------------------------------------------------------------

def lock(image_names: list[str], work: Path, python: str) -> None:
    from contribflow.cluster.imagemap import IMAGES

    for name in image_names:
        image = IMAGES[name]
        venv = fresh_venv(work / f"lock-{name}", python)
        report = work / f"lock-{name}.json"
        with tempfile.TemporaryDirectory(prefix=f"contribflow-{name}-context-") as tmp:
            context = builder_context(name, Path(tmp))
            _must(pip(python, venv, "install", "--quiet", "--dry-run", "--ignore-installed",
                      "--report", str(report), f".[{','.join(image.extras)}]"),
                  f"resolving the {name} image's dependency set", cwd=context, env=pip_env())
        items = json.loads(report.read_text())["install"]
        pins = sorted((i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"])
                      for i in items if i["metadata"]["name"].lower() != "contribflow")
        header = (f"# The {name} image's third-party packages, pinned: its Dockerfile and `make check-images`\n"
                  f"# install `.[{','.join(image.extras)}]` with this file as constraints.\n"
                  f"# Generated by `make lock-images` (Python {sys.version_info.major}.{sys.version_info.minor}, "
                  f"linux); do not edit by hand.\n")
        lock_file(name).write_text(header + "".join(f"{n}=={v}\n" for n, v in pins))
        print(f"lock {name}: {len(pins)} packages -> {lock_file(name).relative_to(ROOT)}")


# --- check -------------------------------------------------------------------------------------------

def check_image(name: str, venv: Path, python: str) -> list[str]:
    """Problems with the image's virtualenv; empty when it holds what its stages need and no more."""
    from contribflow.cluster.imagemap import IMAGES

    problems = []
    have = {n: v for n, v in installed(venv, python).items() if n != "contribflow"}
    pins = read_lock(lock_file(name))
    if have != pins:
        extra = sorted(f"{n}=={v}" for n, v in have.items() if pins.get(n) != v)
        missing = sorted(f"{n}=={v}" for n, v in pins.items() if have.get(n) != v)
        problems.append(f"installed packages differ from {lock_file(name).relative_to(ROOT)}: "
                        f"installed but not locked {extra}, locked but not installed {missing} "
                        "(run `make lock-images`)")
    present = sorted(forbidden_packages(name) & have.keys())
    if present:
        problems.append(f"holds packages of other images: {present}")
    probe = _run([str(venv / "bin" / "python"), "-I", "-c",
                  "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])",
                  *sorted(import_names(forbidden_packages(name)))], cwd=venv)
    if probe.returncode != 0 or probe.stdout.strip() != "[]":
        problems.append(f"can import modules of other images: {probe.stdout.strip()} {probe.stderr.strip()}")
    where = _run([str(venv / "bin" / "python"), "-I", "-c", "import contribflow; print(contribflow.__file__)"],
                 cwd=venv)
    if not where.stdout.strip().startswith(str(venv)):
        problems.append(f"contribflow is not installed into the venv (editable?): {where.stdout}{where.stderr}")
    if "ingest" in IMAGES[name].stages:
        compiled = _run([str(venv / "bin" / "python"), "-I", "-c", "import contribflow.ingest._copyrows"], cwd=venv)
        if compiled.returncode != 0:
            problems.append("ingest's compiled encoder (contribflow.ingest._copyrows) was not built: "
                            f"{compiled.stderr.strip()[-300:]}")
    for stage in IMAGES[name].stages:
        result = _run([str(venv / "bin" / "contribflow"), stage, "--help"], cwd=venv)
        if result.returncode != 0 or f"usage: contribflow {stage}" not in result.stdout:
            problems.append(f"`contribflow {stage} --help` failed (exit {result.returncode}): "
                            f"{result.stderr.strip()[-500:]}")
    return problems


def import_names(distributions: set[str]) -> set[str]:
    """Top-level modules of these distributions, from the dev virtualenv that has them all."""
    from importlib.metadata import packages_distributions

    names = set()
    for module, dists in packages_distributions().items():
        if module.startswith("_") or "-" in module:
            continue
        if {d.lower().replace("_", "-") for d in dists} & distributions:
            names.add(module)
    return names


def env_of(stage: BuildStage) -> dict[str, str]:
    """The ENV a build stage sets (``KEY=value`` form)."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.value):
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"line {instruction.line}: ENV {word!r} is not in KEY=value form")
            env[key] = value
    return env


class ImageFilesystem:
    """The images' absolute paths mapped into a work folder: /opt/venv to the image's venv, /app,
    /tmp and /data (the landing volume) to folders of their own."""

    def __init__(self, work: Path):
        self.app, self.tmp, self.data = work / "app", work / "tmp", work / "data"
        for folder in (self.app, self.tmp, self.data):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)

    def path(self, image_path: str, venv: Path) -> str:
        for prefix, here in (("/opt/venv", venv), ("/app", self.app), ("/tmp", self.tmp), ("/data", self.data)):
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return str(here) + image_path[len(prefix):]
        return image_path

    def add_files(self, name: str) -> None:
        """What the image's target COPYs from the build context (the dbt project), as Docker sends it."""
        rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
        for instruction in image_stages(name)[1].all("COPY"):
            sources, destination, flags = copy_sources(instruction)
            if "from" in flags:
                continue
            for source in sources:
                for rel in context_files(source, ROOT, rules):
                    inside = rel[len(source.rstrip("/")):].lstrip("/") or Path(rel).name
                    target = Path(self.path(destination.rstrip("/"), Path("/nonexistent"))) / inside
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / rel, target)

    def env(self, name: str, venv: Path) -> dict[str, str]:
        """The image's ENV with its paths mapped (``$PATH`` in its PATH is this machine's PATH).
        CONTRIBFLOW_OUTPUTS_DIR is left to the runner, as the workflow sets it per step."""
        env = env_of(image_stages(name)[1])
        env.pop("CONTRIBFLOW_OUTPUTS_DIR", None)
        mapped = {key: self.path(value, venv) for key, value in env.items() if key != "PATH"}
        path = env.get("PATH", "$PATH").split(":")
        mapped["PATH"] = os.pathsep.join(os.environ.get("PATH", "") if p == "$PATH" else self.path(p, venv)
                                         for p in path)
        return mapped


def run_pipeline(venvs: dict[str, Path], work: Path) -> list[str]:
    """The stage graph against a real PostgreSQL, each stage run by its own image's virtualenv with
    its image's ENV (paths mapped by ImageFilesystem), from the images' working folder /app. Nothing
    may be written under /app or into the venvs: in the cluster they are on the read-only root
    filesystem; only /tmp (an emptyDir) and the landing volume are writable."""
    from contribflow.cluster.imagemap import image_for
    from contribflow.graph import EXIT_STAGE, STAGES, by_name
    from contribflow.local import embedded, runner
    from contribflow.settings import Settings

    stages = by_name((*STAGES, EXIT_STAGE))
    fs = ImageFilesystem(work)
    for name in venvs:
        fs.add_files(name)
    read_only = [fs.app, *venvs.values()]
    shipped = {folder: _snapshot(folder) for folder in read_only}
    db = embedded.start(Path(tempfile.gettempdir()) / f"contribflow-images-pg-{os.getpid()}")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONTRIBFLOW_", "PG", "VIRTUAL_ENV", "PYTHONPATH", "DBT_"))}
    env.update(db, CONTRIBFLOW_STATE_DIR=str(work / "runner"), CONTRIBFLOW_PSEUDONYM_KEY="image-check-key-not-a-secret")
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(fs.app)
    try:
        def cli_command(stage, args):
            name = image_for(stages[stage.name].image).name
            image_env = [f"{k}={v}" for k, v in fs.env(name, venvs[name]).items()]
            return ["env", *image_env, str(venvs[name] / "bin" / "contribflow"), stage.name, *args]

        settings = Settings.from_env()
        day = dt.date(2026, 1, 15)
        results = runner.run_graph(settings, {"run-date": day.isoformat(), "rows": "500", "defect-rate": "0.01"},
                                   command=cli_command)
    finally:
        os.chdir(ROOT)
        os.environ.clear()
        os.environ.update(saved)
        embedded.stop(Path(db["PGHOST"]))
        shutil.rmtree(db["PGHOST"], ignore_errors=True)
    problems = [f"stage {r.stage}: {r.state} {r.note}" for r in results if r.state not in ("ok", "skipped")]
    for folder in read_only:
        written = sorted(set(_snapshot(folder).items()) - set(shipped[folder].items()))
        if written:
            problems.append(f"wrote into {folder} (read-only in the cluster): "
                            + ", ".join(path for path, _ in written[:10]))
    return problems


def _snapshot(folder: Path) -> dict[str, float]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime for p in folder.rglob("*")}


def check(image_names: list[str], work: Path, python: str, pipeline: bool) -> int:
    venvs, failures = {}, 0
    for name in image_names:
        started = time.monotonic()
        venv = work / name
        install_image(name, venv, python)
        problems = check_image(name, venv, python)
        venvs[name] = venv
        verdict = "ok" if not problems else "FAILED"
        print(f"check-images {name}: {verdict} in {time.monotonic() - started:.0f}s", flush=True)
        for problem in problems:
            print(f"  {name}: {problem}", file=sys.stderr)
        failures += bool(problems)
    if pipeline and not failures:
        started = time.monotonic()
        problems = run_pipeline(venvs, work)
        verdict = "ok" if not problems else "FAILED"
        print(f"check-images pipeline (every stage in its image's venv): {verdict} "
              f"in {time.monotonic() - started:.0f}s", flush=True)
        for problem in problems:
            print(f"  pipeline: {problem}", file=sys.stderr)
        failures += bool(problems)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    from contribflow.cluster.imagemap import IMAGES

    parser = argparse.ArgumentParser(prog="imagetool", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("lock", "check"))
    parser.add_argument("images", nargs="*", help=f"default: all of {', '.join(IMAGES)}")
    parser.add_argument("--work", type=Path, default=ROOT / ".tools" / "image-venvs",
                        help="where the fresh virtualenvs go (default .tools/image-venvs)")
    parser.add_argument("--python", default="python3", help="the interpreter the venvs are made from")
    parser.add_argument("--pipeline", action="store_true",
                        help="check: also run the stage graph, each stage in its image's venv")
    args = parser.parse_args(argv)
    unknown = [n for n in args.images if n not in IMAGES]
    if unknown:
        parser.error(f"not in the image map: {unknown}; known: {', '.join(IMAGES)}")
    names = args.images or list(IMAGES)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.action == "lock":
        lock(names, args.work.resolve(), args.python)
        return 0
    return check(names, args.work.resolve(), args.python, args.pipeline)


if __name__ == "__main__":
    sys.exit(main())

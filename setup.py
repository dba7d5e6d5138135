"""The package's one compiled module; everything else about the package is in pyproject.toml.

contribflow/ingest/_copyrows.c is ingest's encoder for the usual file: the record hashes, the taxpayer
keys and the binary COPY, built without the GIL. Its SHA-256 and HMAC come from OpenSSL's libcrypto
(headers: Debian's libssl-dev). It is optional: without a C compiler or those headers ingest builds
the same rows in Python, slower. tests/test_copyrows.py requires it where the tests run.

CONTRIBFLOW_REQUIRE_EXTENSION=1 makes it mandatory: a compile error then fails the install instead
of falling back silently. The ingest image builds with it set (its `ingest-venv` stage in
images/Dockerfile), so an image without the encoder cannot be built.
"""

import os

from setuptools import Extension, setup

REQUIRED = os.environ.get("CONTRIBFLOW_REQUIRE_EXTENSION", "") not in ("", "0")

setup(ext_modules=[Extension("contribflow.ingest._copyrows", ["contribflow/ingest/_copyrows.c"], libraries=["crypto"],
                             optional=not REQUIRED)])

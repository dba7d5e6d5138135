"""The package's one compiled module; everything else about the package is in pyproject.toml.

contribflow/_copyrows.c is ingest's encoder for the usual file: the record hashes, the taxpayer
keys and the binary COPY, built without the GIL. Its SHA-256 and HMAC come from OpenSSL's libcrypto
(headers: Debian's libssl-dev). It is optional: without a C compiler or those headers ingest builds
the same rows in Python, slower. tests/test_copyrows.py requires it where the tests run, and the
ingest image fails to build without it.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("contribflow._copyrows", ["contribflow/_copyrows.c"], libraries=["crypto"],
                             optional=True)])

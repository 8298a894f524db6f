"""Software versions for manifests, cards and run records, read from package metadata.

``importlib.metadata`` reads a package's version without importing it: importing torch,
transformers and vLLM only to read ``__version__`` took seconds per process.
"""

from __future__ import annotations

import platform
from importlib import metadata

GENERATION_PACKAGES = ("bpo-data", "torch", "transformers", "datasets", "pyarrow", "openai", "vllm")


def installed(packages: tuple[str, ...] = GENERATION_PACKAGES) -> dict[str, str]:
    """Python and each installed package's version; packages that are not installed are left out."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found

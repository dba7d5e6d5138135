"""The one image map: image name → Dockerfile and target → repository:tag, with the tag following the
package version. Hera (workflows/), the Makefile (``contribflow images``) and the Helm chart's values read it;
which stages an image serves comes from the stage graph, not from a second list here."""

from __future__ import annotations

import json
from dataclasses import dataclass

from contribflow import __version__
from contribflow.graph import EXIT_STAGE, STAGES

DEFAULT_REGISTRY = "ghcr.io/contribflow"


@dataclass(frozen=True)
class Image:
    name: str
    extras: tuple[str, ...]
    """The pyproject extras the image installs: exactly its stages' dependencies."""

    @property
    def dockerfile(self) -> str:
        """One Dockerfile for every image, so that what they share cannot drift apart."""
        return "images/Dockerfile"

    @property
    def target(self) -> str:
        """The image's build stage in the Dockerfile (``docker build --target``)."""
        return self.name

    @property
    def repository(self) -> str:
        return f"contribflow-{self.name}"

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s.name for s in (*STAGES, EXIT_STAGE) if s.image == self.name)

    def reference(self, registry: str = DEFAULT_REGISTRY, tag: str = __version__) -> str:
        return f"{registry}/{self.repository}:{tag}"


IMAGES: dict[str, Image] = {
    image.name: image
    for image in (
        Image("migrations", ("migrations",)),
        Image("generate", ("generate",)),
        Image("ingest", ("ingest",)),
        Image("dbt", ("dbt",)),
    )
}


def image_for(stage_image: str) -> Image:
    try:
        return IMAGES[stage_image]
    except KeyError:
        raise KeyError(f"stage image {stage_image!r} is not in the image map {sorted(IMAGES)}") from None


def as_json(registry: str = DEFAULT_REGISTRY, tag: str = __version__) -> str:
    return json.dumps({
        name: {"dockerfile": img.dockerfile, "target": img.target, "repository": img.repository,
               "image": img.reference(registry, tag), "extras": list(img.extras), "stages": list(img.stages)}
        for name, img in IMAGES.items()
    }, indent=2)

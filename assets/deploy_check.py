"""Images are pulled by digest: a tag can be moved to other content, a digest cannot.

`pinned_image` refuses a reference without a `@sha256:<64 hex>` digest (and `latest`, which says nobody chose a
version); the training pods go through it. `python -m assets.deploy_check deploy/values.yaml` checks every image
of the Helm values the same way, and that the training pods' image (FLYWHEEL_IMAGE) is the code server's, before
anything is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FIX = (
    "pin it by digest, `REPOSITORY[:TAG]@sha256:<64 hex digits>` (`docker push` prints the digest, "
    "`docker buildx imagetools inspect IMAGE` shows it)"
)


def pinned_image(ref: str | None, setting: str) -> str:
    """`ref` when it names an image by digest; else a ValueError naming `setting` and the fix."""
    if not ref:
        raise ValueError(f"{setting} is not set: {_FIX}")
    name = ref.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
    if tag == "latest":
        raise ValueError(f"{setting}={ref!r} uses the tag `latest`, which moves: {_FIX}")
    if "SET-THE-DIGEST" in ref:
        raise ValueError(f"{setting}={ref!r} still holds the placeholder digest: {_FIX}")
    if not _DIGEST.search(ref):
        raise ValueError(f"{setting}={ref!r} has no valid digest (a tag alone can be pushed over): {_FIX}")
    return ref


def helm_images(values: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(setting, image reference) of every image the Helm values name: `image: {repository, tag}` blocks (the
    chart pulls `repository:tag`), and FLYWHEEL_IMAGE in `env` lists and `envVars` strings."""
    if isinstance(values, dict):
        image = values.get("image")
        if isinstance(image, dict) and "repository" in image:
            tag = image.get("tag")
            yield f"{path}.image", f"{image['repository']}:{tag}" if tag else str(image["repository"])
        if values.get("name") == "FLYWHEEL_IMAGE" and "value" in values:
            yield f"{path}.value", str(values["value"])
        for key, value in values.items():
            if key != "image":
                yield from helm_images(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, list):
        for i, value in enumerate(values):
            if isinstance(value, str) and value.startswith("FLYWHEEL_IMAGE="):
                yield f"{path}[{i}]", value.split("=", 1)[1]
            else:
                yield from helm_images(value, f"{path}[{i}]")


def check_helm_values(values: dict) -> list[str]:
    """Every problem of the values' images, one sentence each; empty when all are pinned and consistent."""
    images = list(helm_images(values))
    problems = []
    for setting, ref in images:
        try:
            pinned_image(ref, setting)
        except ValueError as e:
            problems.append(str(e))
    code_server = {ref for s, ref in images if s.startswith("dagster-user-deployments.") and s.endswith(".image")}
    for setting, ref in images:
        if not setting.endswith(".image") and ref not in code_server:
            problems.append(
                f"{setting}={ref!r} (FLYWHEEL_IMAGE, the training pods' image) is not the code server's image "
                f"{sorted(code_server)}: set both to the same image and digest"
            )
    return problems


def main(argv: list[str]) -> int:
    import yaml

    if not argv:
        print("usage: python -m assets.deploy_check VALUES.yaml [...]", file=sys.stderr)
        return 2
    failed = False
    for arg in argv:
        problems = check_helm_values(yaml.safe_load(Path(arg).read_text()) or {})
        for problem in problems:
            print(f"{arg}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{arg}: every image is pinned by digest")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

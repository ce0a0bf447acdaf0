"""The images of one repository on a Docker host (newest first): what deploys/parts/
source_image.py needs to know whether a content tag is built and which ones to prune."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase
from typing_extensions import override

HEADER = "images:"


def parse_images(output: list[str]) -> list[dict[str, Any]] | None:
    """`docker image ls --format '{{.Tag}} {{.ID}} {{.CreatedAt}}'` lines after the header;
    None when the header is missing (docker absent or not answering)."""
    if HEADER not in output:
        return None
    found = []
    for line in output[output.index(HEADER) + 1:]:
        tag, _, rest = line.strip().partition(" ")
        image_id, _, created = rest.partition(" ")
        if tag and image_id and tag != "<none>":
            found.append({"tag": tag, "id": image_id, "created": created})
    return found


class RepositoryImages(FactBase[list]):
    """`[{"tag", "id", "created"}, ...]` of `repository`, newest first (docker's order);
    None when docker does not answer (e.g. not installed yet)."""

    @override
    def command(self, repository: str) -> str:
        r = shlex.quote(repository)
        fmt = shlex.quote("{{.Tag}} {{.ID}} {{.CreatedAt}}")
        return f'out=$(docker image ls {r} --format {fmt} 2>/dev/null) && echo {HEADER} && printf "%s\\n" "$out"'

    @staticmethod
    @override
    def default():
        return None

    @override
    def process(self, output: list[str]):
        return parse_images(output)

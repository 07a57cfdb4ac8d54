"""Print the requirements of pyproject.toml (the client's + the extras named), one per line,
so an image installs its dependencies in a layer of their own, before the code is copied:
a code change then rebuilds only the last, small layer. These are ranges; the image installs
them with `-c requirements/lock.txt`, the exact versions CI tests.

    python requirements.py pyproject.toml worker --exclude torch
"""

from __future__ import annotations

import argparse
import re

import tomllib

parser = argparse.ArgumentParser()
parser.add_argument("pyproject")
parser.add_argument("extras", nargs="*")
parser.add_argument("--exclude", nargs="*", default=[], help="names installed elsewhere")
args = parser.parse_args()
with open(args.pyproject, "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project["dependencies"])
for extra in args.extras:
    reqs += project["optional-dependencies"][extra]
skip = {name.lower() for name in args.exclude}
for req in dict.fromkeys(reqs):
    name = re.split(r"[\[=<>!~; ]", req, maxsplit=1)[0].lower()
    if name not in skip:
        print(req)

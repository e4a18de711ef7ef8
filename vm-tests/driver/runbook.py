"""The operations runbook's commands, for the scenarios that run them as written.

docs/operations.md (and docs/compatibility.md) mark each command block a scenario runs with an
info string:

    ```sh runbook=export-shards
    spike-operator recover /root/spike-shards
    ```

`loader(text)` returns `runbook(name)`: the block's text with `set -e` in front, so it runs as a
shell script that fails at its first failing command. A missing or repeated name is an error, so the doc and the tests
cannot drift apart silently. The NixOS tests get the same file and the same doc through
vm-tests/scenario.nix.
"""


import re

_FENCE = re.compile(r"^\s*```sh runbook=([a-z0-9-]+)\s*$")


def blocks(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        if name is None:
            m = _FENCE.match(line)
            if m:
                name, lines = m.group(1), []
        elif line.strip() == "```":
            if name in found:
                raise ValueError(f"runbook block {name!r} appears twice in docs/operations.md")
            found[name] = "set -e\n" + "\n".join(lines) + "\n"
            name = None
        else:
            lines.append(line.strip())
    if name is not None:
        raise ValueError(f"runbook block {name!r} is not closed in docs/operations.md")
    return found


def loader(text: str):
    table = blocks(text)

    def runbook(name: str) -> str:
        if name not in table:
            raise KeyError(f"docs/operations.md has no block ```sh runbook={name}")
        return table[name]

    return runbook

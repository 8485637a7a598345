"""``python -m tests.k8s.node up|down|status|traces``: the node of this checkout's control plane."""

from __future__ import annotations

import json
import sys

from tests.k8s.cluster import ControlPlane
from tests.k8s.node import Node, NodeUnavailable


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    node = Node(ControlPlane())
    if command == "up":
        if not node.plane.running():
            print("the control plane does not run (make k8s-up)", file=sys.stderr)
            return 1
        try:
            seconds = node.up()
        except NodeUnavailable as exc:
            print(f"no node: {exc}", file=sys.stderr)
            return 3
        print(f"node {node.address} Ready in {seconds:.1f} s")
        return 0
    if command == "down":
        node.down()
        print("node removed")
        return 0
    if command == "status":
        print("running" if node.running() else "not running")
        return 0 if node.running() else 1
    if command == "traces":
        print(json.dumps(node.traces(), indent=2))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

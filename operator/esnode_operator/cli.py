"""The ``esnode-operator`` command: ``run`` (the default) wraps kopf's operator; ``crds`` prints the CRDs;
``uninstall`` deletes the served fleets and waits for them (the chart's pre-delete hook)."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import kopf

from esnode_operator import (
    __version__,
    handlers,  # noqa: F401  # importing it registers the handlers with kopf
)
from esnode_operator.api.crd import render_crds
from esnode_operator.context import OperatorOptions
from esnode_operator.kube import Kube, new_api_client
from esnode_operator.metrics import DEFAULT_METRICS_PORT
from esnode_operator.reconcile.auth_delegation import DEFAULT_AUTH_DELEGATOR_BINDING
from esnode_operator.reconcile.node_status_access import DEFAULT_NODE_STATUS_BINDING
from esnode_operator.uninstall import Uninstall

PROG = "esnode-operator"
COMMANDS = ("run", "crds", "uninstall")
# Replicas pick distinct priorities so that kopf's peering keeps exactly one of them active.
_RANDOM_PRIORITY_RANGE = (1, 1_000_000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="esnode operator: EsnodeFleet -> node agents.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the operator (the default command)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="serve fleets in this namespace (repeatable; globs as in kopf)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve fleets in every namespace")
    peering = run.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering: this is the only replica")
    peering.add_argument(
        "-P",
        "--peering",
        metavar="NAME",
        help="kopf peering object shared by the replicas; one replica is active at a time",
    )
    run.add_argument(
        "-p",
        "--priority",
        type=int,
        help="peering priority; the highest live one is active (default: random per replica)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"port of the operator's /metrics (default {DEFAULT_METRICS_PORT}; 0: off)",
    )
    run.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="address the operator's /metrics listens on (default 0.0.0.0: every interface)",
    )
    run.add_argument(
        "--agent-node-status-binding",
        metavar="NAME",
        default=DEFAULT_NODE_STATUS_BINDING,
        help="ClusterRoleBinding (rbac/agents.yaml) listing the agents of fleets with "
        f"spec.nodeCondition (default {DEFAULT_NODE_STATUS_BINDING})",
    )
    run.add_argument(
        "--agent-auth-delegator-binding",
        metavar="NAME",
        default=DEFAULT_AUTH_DELEGATOR_BINDING,
        help="ClusterRoleBinding (rbac/agents.yaml) to system:auth-delegator listing the agents of fleets "
        f"with spec.metricsAuth kubernetes (default {DEFAULT_AUTH_DELEGATOR_BINDING})",
    )
    run.add_argument(
        "-L", "--liveness", metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("-d", "--debug", action="store_true")
    crds = commands.add_parser("crds", help="print the CRDs the operator needs, or write them to a folder")
    crds.add_argument("--out", type=Path, help="folder to write one YAML file per CRD group into")
    uninstall = commands.add_parser(
        "uninstall",
        help="delete the fleets the operator serves and wait until they and their children are gone",
    )
    where = uninstall.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="fleets in this namespace (repeatable)",
    )
    where.add_argument("-A", "--all-namespaces", action="store_true", help="fleets in every namespace")
    uninstall.add_argument(
        "--wait-seconds",
        type=float,
        default=120.0,
        help="how long to wait for them to go (default 120); exit 1 if some remain",
    )
    return parser  # fmt: skip


def _crds(out: Path | None) -> int:
    rendered = render_crds()
    if out is None:
        sys.stdout.write("---\n".join(rendered.values()))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / name).write_text(text)
    return 0


def _run(args: argparse.Namespace) -> int:
    kopf.configure(verbose=args.verbose, debug=args.debug)
    priority = args.priority
    if priority is None and not args.standalone:
        priority = random.randint(*_RANDOM_PRIORITY_RANGE)
    memo = kopf.Memo(
        options=OperatorOptions(
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
            node_status_binding=args.agent_node_status_binding,
            cluster_scanning=any(_is_pattern(namespace) for namespace in args.namespaces),
            auth_delegator_binding=args.agent_auth_delegator_binding,
        )
    )
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespaces,
        standalone=args.standalone or None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    return 0


def _is_pattern(namespace: str) -> bool:
    """A kopf namespace glob or negation, which kopf resolves by listing and watching namespaces."""
    return any(mark in namespace for mark in "!*?,")


def _uninstall(args: argparse.Namespace) -> int:
    kopf.configure(verbose=True)  # kopf's log format, as `run` writes it
    api_client = new_api_client()
    try:
        remaining = Uninstall(Kube(api_client), args.namespaces).run(args.wait_seconds)
    finally:
        api_client.close()  # type: ignore[no-untyped-call]
    if remaining:
        print(
            f"{PROG} uninstall: still there after {args.wait_seconds:g} s: {', '.join(remaining)}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in (*COMMANDS, "-h", "--help", "--version"):
        arguments.insert(0, "run")
    args = _parser().parse_args(arguments)
    if args.command == "crds":
        return _crds(args.out)
    if args.command == "uninstall":
        return _uninstall(args)
    if not args.all_namespaces and not args.namespaces:
        _parser().error("say which fleets to serve: --namespace NAME (repeatable) or --all-namespaces")
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())

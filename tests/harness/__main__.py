"""CLI: `python -m tests.harness up|down|status|build-image` (wired to make hosts-up/down).

    engine                start a Docker engine if none answers (dockerd / systemd)
    up [--hosts NAME[:group,group] ...] [--docker] [--dns] [--acme]
    down [--dir DIR ...]  (default: the INFRA_HOSTS_DIR cluster and the demo's)
    status
    build-image [--variant base|docker|docker-v1|helper|all]
    prune-images          (remove infra-testhost images no current recipe produces)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._util import DEMO_DIR, HOSTS_DIR, HarnessError, docker
from .engine import ensure_engine
from .hosts import Cluster, HostSpec
from .image import ALL_VARIANTS, ensure_image, prune_images


def parse_host(text: str, docker_variant: bool) -> HostSpec:
    """`music:web,db` -> HostSpec("music", ("web", "db"))."""
    name, _, groups = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"bad host spec {text!r}: expected NAME[:group,group]")
    return HostSpec(name, tuple(g for g in groups.split(",") if g), docker=docker_variant)


def cmd_up(args: argparse.Namespace) -> int:
    cluster = Cluster(owner="cli")
    try:
        cluster.start(dns=args.dns, acme=args.acme)
        cluster.add_hosts([parse_host(h, args.docker) for h in args.hosts])
    except BaseException:
        cluster.down()  # never leave half a cluster behind
        raise
    _print_summary(cluster)
    return 0


def _load(hosts_dir: Path) -> Cluster | None:
    """The recorded cluster; an unreadable state file is a clear error, not a traceback."""
    try:
        return Cluster.load(hosts_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"{hosts_dir / 'state.json'} is unreadable ({exc!r}); remove the "
                           "containers labelled infra-test=<run id> by hand and delete the file") from exc


def cmd_engine(_: argparse.Namespace) -> int:
    ensure_engine()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    for hosts_dir in dict.fromkeys(args.dir or [HOSTS_DIR, DEMO_DIR]):
        cluster = _load(hosts_dir)
        if cluster is None:
            print(f"no test cluster recorded in {hosts_dir / 'state.json'}; nothing to do")
            continue
        ensure_engine()
        cluster.down()
        print(f"removed test cluster {cluster.run_id} ({hosts_dir})")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    cluster = _load(HOSTS_DIR)
    if cluster is None:
        print("no test cluster is up")
        return 0
    print(f"cluster {cluster.run_id} (started by {cluster.owner}, pid {cluster.pid}), "
          f"network {cluster.network['name'] if cluster.network else '-'}")
    members = ([cluster.helper] if cluster.helper else []) + list(cluster.hosts.values())
    for host in members:
        state = docker("inspect", "--format", "{{.State.Status}}", host.container_id,
                       check=False).stdout.strip() or "gone"
        print(f"  {host.name:<12} {state:<8} {host.address:<15} ssh 127.0.0.1:{host.ssh_port}"
              f"  groups={','.join(host.groups) or '-'}")
    if cluster.records:
        print("  dns records: " + ", ".join(f"{n}={ip}" for n, ip in cluster.records.items()))
    return 0


def cmd_build_image(args: argparse.Namespace) -> int:
    ensure_engine()
    for variant in ALL_VARIANTS if args.variant == "all" else [args.variant]:
        print(ensure_image(variant))
    return 0


def cmd_prune_images(_: argparse.Namespace) -> int:
    ensure_engine()
    removed = prune_images()
    print("\n".join(f"removed {tag}" for tag in removed) or "nothing to prune")
    return 0


def _print_summary(cluster: Cluster) -> None:
    print(f"\ntest cluster {cluster.run_id} is up; inventory: {cluster.inventory_path}")
    for host in cluster.hosts.values():
        print(f"  ssh -F {cluster.ssh_config_path} {host.name}"
              f"    # or: ssh -i {host.key_path} -p {host.ssh_port} root@127.0.0.1   ({host.address})")
    if cluster.dns_address:
        print(f"  dns:  {cluster.dns_address}:53 (dnsmasq; hosts resolve through it)")
    if cluster.acme_directory:
        print(f"  acme: {cluster.acme_directory}  (CA bundle: {cluster.acme_ca_bundle})")
    print("tear down with: python -m tests.harness down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a test cluster and write .hosts/inventory.json")
    up.add_argument("--hosts", nargs="+", default=["h1"], metavar="NAME[:group,group]")
    up.add_argument("--docker", action="store_true", help="hosts run a Docker engine (compose v1+v2)")
    up.add_argument("--dns", action="store_true", help="dnsmasq helper as the hosts' resolver")
    up.add_argument("--acme", action="store_true", help="pebble ACME helper (implies --dns)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("engine", help="start a Docker engine if none answers").set_defaults(func=cmd_engine)
    down = sub.add_parser("down", help="remove the recorded test clusters (hosts-up and demo)")
    down.add_argument("--dir", type=Path, action="append", help="a state dir (repeatable)")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="show the recorded test cluster").set_defaults(func=cmd_status)
    build = sub.add_parser("build-image", help="build (or find cached) host images")
    build.add_argument("--variant", choices=[*ALL_VARIANTS, "all"], default="base")
    build.set_defaults(func=cmd_build_image)
    sub.add_parser("prune-images", help="remove outdated infra-testhost images"
                   ).set_defaults(func=cmd_prune_images)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

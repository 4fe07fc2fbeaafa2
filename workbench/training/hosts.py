"""Where a data-parallel job's ranks run, and whether they can, checked before any rank starts.

The hosts come from the job's `hosts`: none (this machine), a list of addresses, or a hostfile in
mlx.launch's JSON format under `<home>/hosts/`. They are read with mlx.launch's own parser, and the
job keeps them as a hostfile in its run folder, which mlx.launch is then given. A remote host is
reached as mlx.launch reaches it, by ssh, and must run the same Python path and the same project;
this module's `probe` (`python -m workbench.training.hosts`) runs there to say so, and to say
whether the other hosts' ring addresses route from it (docs/architecture.md, "Distributed training").
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlx._distributed_utils.common import Hostfile

from workbench.errors import InputError

LOCAL = "127.0.0.1"  # the one address mlx.launch starts a rank at without ssh
PROBE_TIMEOUT_S = 20.0
SSH = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def resolve(config, home: Path) -> Hostfile:
    """The job's hosts as mlx.launch's Hostfile, one entry a rank (InputError naming `hosts`, or
    `num_workers` with it, when they cannot hold the job)."""
    world = config.num_workers
    if config.hostfile:
        path = home / "hosts" / config.hostfile
        if not path.is_file():
            raise InputError("hosts", f"no hostfile {config.hostfile} in {home / 'hosts'}")
        try:
            found = Hostfile.from_file(path)
        except ValueError as exc:  # mlx.launch's own message: the file and what is wrong with it
            raise InputError("hosts", str(exc)) from None
        if len(found.hosts) != world:
            raise InputError("hosts", f"{config.hostfile} lists {len(found.hosts)} hosts, one a rank, where "
                             f"num_workers is {world}")
    else:
        names = config.hosts or [LOCAL]
        if world % len(names):
            raise InputError("hosts", f"num_workers ({world}) must divide by the {len(names)} hosts: each "
                             "host runs the same number of ranks")
        found = Hostfile.from_list(",".join(names), world // len(names))
    machines = {h.ssh_hostname for h in found.hosts}
    if LOCAL in machines and len(machines) > 1:
        raise InputError("hosts", f"{LOCAL} cannot be reached from the other hosts: name this machine by "
                         "an address they reach")
    return found


def per_host(found: Hostfile) -> int:
    """The most ranks any one host runs."""
    return max(Counter(h.ssh_hostname for h in found.hosts).values())


def require_ips(found: Hostfile) -> None:
    if bare := [h.ssh_hostname for h in found.hosts if not h.ips]:
        raise InputError("hosts", f"the ring backend connects to IP addresses, and {bare[0]} is a name: "
                         "give its address, or a hostfile with its ssh name and its ips")


def check(found: Hostfile, home: Path) -> dict[str, dict]:
    """Ask every remote host, over ssh, whether it can run a rank: the same Python and project, the
    first host sharing this workbench's home (rank 0 writes the store there), and a route to each
    other host's ring addresses. InputError naming `hosts` and the host otherwise. Answers each
    host's report (its cores, the source address toward each peer)."""
    machines = list(dict.fromkeys(h.ssh_hostname for h in found.hosts))
    if machines == [LOCAL]:
        return {}
    token = home / "hosts" / f".probe-{uuid.uuid4().hex}"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.touch()
    try:
        with ThreadPoolExecutor(len(machines)) as pool:
            reports = dict(zip(machines, pool.map(lambda m: _ask(m, found, token), machines)))
    finally:
        token.unlink(missing_ok=True)
    here = _report(token_path=str(token), peers=[])
    for machine, report in reports.items():
        for what in ("workbench", "mlx"):
            if report[what] != here[what]:
                raise InputError("hosts", f"{machine} runs {what} {report[what]} where this machine runs "
                                 f"{here[what]}: every host needs the same project version")
        for ip, route in report["routes"].items():
            if "error" in route:
                raise InputError("hosts", f"{machine} has no route to {ip}, another host's ring address "
                                 f"({route['error']})")
    first = found.hosts[0].ssh_hostname
    if not reports[first]["shares_home"]:
        raise InputError("hosts", f"rank 0 runs on {first} and writes the job's store and checkpoints in "
                         f"{home}, which {first} does not see: list this machine first, or share that folder")
    return reports


def split_cores(found: Hostfile, reports: dict[str, dict]) -> None:
    """Give each rank its share of its host's cores for BLAS, unless the environment already says
    how many threads BLAS runs: ranks that each start a thread per core oversubscribe the host
    (measured in bench/RESULTS.md, "Data-parallel jobs")."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    local = len(os.sched_getaffinity(0))
    counts = Counter(h.ssh_hostname for h in found.hosts)
    threads = min(max(reports.get(m, {}).get("cores", local) // n, 1) for m, n in counts.items())
    found.envs.append(f"OPENBLAS_NUM_THREADS={threads}")


def _ask(machine: str, found: Hostfile, token: Path) -> dict:
    """One host's report, by ssh, in the working directory mlx.launch would give its ranks."""
    peers = [ip for h in found.hosts if h.ssh_hostname != machine for ip in h.ips]
    program = shlex.join([sys.executable, "-m", "workbench.training.hosts", json.dumps(
        {"token_path": str(token), "peers": list(dict.fromkeys(peers))})])
    command = f"cd {shlex.quote(os.getcwd())} 2>/dev/null; {program}"
    try:
        done = subprocess.run([*SSH, machine, command], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InputError("hosts", f"{machine} did not answer within {PROBE_TIMEOUT_S:g} s") from None
    said = (done.stderr.strip().splitlines() or [""])[-1][:300]
    if done.returncode == 255:
        raise InputError("hosts", f"{machine} does not answer over ssh, which mlx.launch uses: {said}")
    if done.returncode == 127 or "No such file" in said:
        raise InputError("hosts", f"{machine} has no {sys.executable}: mlx.launch runs the same Python "
                         "path on every host")
    if "No module named" in said:
        raise InputError("hosts", f"{machine}'s {sys.executable} lacks the workbench: {said}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise InputError("hosts", f"{machine} answered the probe with exit code {done.returncode}: "
                         f"{said or done.stdout[-300:]}") from None


def _report(token_path: str, peers: list[str]) -> dict:
    """What this host says of itself: versions, cores, whether it sees the token (the same home),
    and the local address the kernel would send from toward each peer (a route lookup: UDP sends
    nothing on connect)."""
    import mlx.core as mx

    import workbench

    routes = {}
    for ip in peers:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((ip, 9))
                routes[ip] = {"source": probe.getsockname()[0]}
            except OSError as exc:
                routes[ip] = {"error": exc.strerror or str(exc)}
    return {"workbench": workbench.__version__, "mlx": mx.__version__, "python": sys.executable,
            "cores": len(os.sched_getaffinity(0)), "shares_home": Path(token_path).exists(),
            "routes": routes}


def save(found: Hostfile, run_dir: Path, envs: dict[str, str]) -> Path:
    """The job's hostfile, as mlx.launch reads it, with the environment every rank gets (a rank
    reached by ssh inherits none of the launcher's)."""
    path = run_dir / "hosts.json"
    ours = [f"{name}={value}" for name, value in envs.items()]
    path.write_text(json.dumps(found.to_json() | {"envs": found.envs + ours}, indent=1))
    return path


def load(run_dir: Path) -> Hostfile:
    """The hosts, backend and environment a job was submitted with (save)."""
    return Hostfile.from_file(run_dir / "hosts.json")


if __name__ == "__main__":
    print(json.dumps(_report(**json.loads(sys.argv[1]))))

"""`fedrec deploy`: run fedrec on Flower's Deployment Engine (SuperLink + SuperNodes over gRPC).

``fedrec deploy local --nodes N [overrides]`` starts, on 127.0.0.1, one ``flower-superlink``
(TLS, SuperNode authentication, Fleet API over gRPC-rere) and N ``flower-supernode`` processes
(one EC key pair each, registered with ``flwr supernode register``; node k hosts partition k of N
through ``--node-config``), submits the app with ``flwr run``, streams progress, and stops every
process it started on exit, Ctrl-C and failure. The ServerApp writes the same run directory and
summary.json as ``fedrec simulate``; the deployment's files live in ``<run>/deploy/`` and each
node's private state in ``<run>/nodes/<k>/`` (the node's own disk; never exported).

``fedrec deploy superlink`` / ``fedrec deploy supernode`` print (or run, with ``--run``) the same
commands for a real multi-machine deployment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.deploy_pki import make_node_keys, make_server_credentials
from experiments.deploy_procs import Processes

log = logging.getLogger(__name__)
CONNECTION = "fedrec-local"
APP_PACKAGES = ("client", "server", "strategies", "privacy", "secure_agg", "recommender", "configs")
REPO = Path(__file__).resolve().parent.parent


class DeployError(RuntimeError):
    """The deployment could not start or its run failed; the message names the step and the log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def stage_app(dest: Path) -> Path:
    """Copy the Flower app (fedrec's packages + a pyproject with only [tool.flwr.app]) to ``dest``.

    ``flwr run .`` on the repository would migrate (rewrite) its ``[tool.flwr.federations]`` and
    bundle tests and docs; the staged copy is exactly what the FAB needs.
    """
    if dest.exists():
        shutil.rmtree(dest)
    for pkg in APP_PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    import tomli_w

    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = {k: conf["project"][k] for k in ("name", "version", "description", "requires-python",
                                                "license", "dependencies") if k in conf["project"]}  # fmt: skip
    out = {"build-system": conf["build-system"], "project": project, "tool": {"flwr": {"app": conf["tool"]["flwr"]["app"]}}}
    (dest / "pyproject.toml").write_text(tomli_w.dumps(out))
    return dest


def write_flwr_config(flwr_home: Path, address: str, ca_cert: Path, name: str = CONNECTION) -> Path:
    """The ``flwr`` CLI's SuperLink connection (``$FLWR_HOME/config.toml``) with the CA to trust."""
    import tomli_w

    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(tomli_w.dumps({"superlink": {"default": name, name: {
        "address": address, "root-certificates": str(ca_cert)}}}))  # fmt: skip
    return path


def superlink_command(creds_dir: Path, fleet: str, control_host: str, control_port: int,
                      database: Path | None = None) -> list[str]:  # fmt: skip
    cmd = ["flower-superlink", "--ssl-ca-certfile", str(creds_dir / "ca.crt"),
           "--ssl-certfile", str(creds_dir / "server.pem"), "--ssl-keyfile", str(creds_dir / "server.key"),
           "--enable-supernode-auth", "--fleet-api-type", "grpc-rere", "--fleet-api-address", fleet,
           "--host", control_host, "--port", str(control_port),
           "--disable-runtime-dependency-installation"]  # fmt: skip
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def supernode_command(superlink: str, ca_cert: Path, private_key: Path, partition: int, partitions: int,
                      runtime_port: int = 9094) -> list[str]:  # fmt: skip
    return ["flower-supernode", "--grpc-rere", "--superlink", superlink, "--root-certificates", str(ca_cert),
            "--auth-supernode-private-key", str(private_key),
            "--node-config", f"partition-id={partition} num-partitions={partitions}",
            "--port", str(runtime_port)]  # fmt: skip


def run_config_arg(rounds: int, overrides: list[str]) -> str:
    """``flwr run --run-config`` value: TOML key=value pairs (the overrides as one TOML string)."""
    return f"num-server-rounds={rounds} fedrec-overrides={json.dumps(shlex.join(overrides))}"


@dataclass
class LocalDeployment:
    """One SuperLink and ``nodes`` SuperNodes on loopback, running one fedrec run.

    Parameters
    ----------
    nodes : int
    overrides : list of str
        Hydra overrides of the run (as for ``fedrec simulate``).
    echo : callable
        Where progress lines go (default: print).
    """

    nodes: int
    overrides: list[str]
    echo: Any = print
    host: str = "127.0.0.1"
    procs: Processes | None = None
    run_id: str | None = None
    times: dict[str, float] = field(default_factory=dict)
    node_ids: list[str] = field(default_factory=list)

    # ---- configuration -----------------------------------------------------------------------
    def resolve(self) -> None:
        from configs.store import compose_config
        from server.resume import resume_config

        over = [o for o in self.overrides if not o.startswith(("simulation.nodes=", "runs_dir="))]
        runs_dir = next((o.split("=", 1)[1] for o in self.overrides if o.startswith("runs_dir=")), "runs")
        over += [f"simulation.nodes={self.nodes}", f"runs_dir={Path(runs_dir).resolve()}"]
        cfg = compose_config(over)
        if cfg.resume:
            cfg = resume_config(cfg, over)
            if cfg.simulation.nodes != self.nodes:
                raise DeployError(f"resume: the run used {cfg.simulation.nodes} nodes, not --nodes {self.nodes}")
            self.run_dir = Path(cfg.resume).resolve()
            over = [o for o in over if not o.startswith("resume=")] + [f"resume={self.run_dir}"]
        else:
            self.run_dir = Path(cfg.runs_dir) / cfg.name
        self.cfg, self.server_overrides = cfg, over

    def prepare_run_dir(self) -> None:
        """Refuse to clobber a run (the same rule as ``fedrec simulate``) and lay out deploy/."""
        from server.rundir import RunDir, RunDirError

        rd = RunDir(self.run_dir)
        if self.cfg.resume:
            if not rd.checkpoint.is_file():
                raise RunDirError(f"{self.run_dir} has no checkpoints/last.pt: nothing to resume")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not self.cfg.overwrite:
                raise RunDirError(f"{self.run_dir} already exists; pass overwrite=true to replace it, "
                                  f"resume={self.run_dir} to continue it, or choose another name=")  # fmt: skip
            shutil.rmtree(self.run_dir)
        self.deploy_dir = self.run_dir / "deploy"
        for sub in ("pki", "flwr_home", "app", "state"):
            shutil.rmtree(self.deploy_dir / sub, ignore_errors=True)
        self.deploy_dir.mkdir(parents=True, exist_ok=True)

    # ---- steps -------------------------------------------------------------------------------
    def _flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        env = {**os.environ, "FLWR_HOME": str(self.flwr_home), "NO_COLOR": "1"}
        res = subprocess.run(["flwr", *args], capture_output=True, text=True, timeout=timeout, env=env)
        if res.returncode != 0:
            raise DeployError(f"`flwr {' '.join(args)}` failed ({res.returncode}): {res.stdout[-800:]} {res.stderr[-800:]}")
        return res

    def _json(self, res: subprocess.CompletedProcess) -> dict:
        text = res.stdout
        return json.loads(text[text.index("{"):])

    def start(self) -> None:
        t0 = time.perf_counter()
        d = self.deploy_dir
        self.creds = make_server_credentials(d / "pki", [self.host, "localhost"])
        self.keys = [make_node_keys(d / "pki" / "nodes", f"node{k}") for k in range(self.nodes)]
        self.fleet_port, self.control_port = free_port(self.host), free_port(self.host)
        self.fleet = f"{self.host}:{self.fleet_port}"
        self.flwr_home = d / "flwr_home"
        write_flwr_config(self.flwr_home, f"{self.host}:{self.control_port}", self.creds.ca_cert)
        self.app_dir = stage_app(d / "app")
        env = {"FLWR_HOME": str(self.flwr_home), "GRPC_VERBOSITY": "ERROR", "PYTHONUNBUFFERED": "1"}
        if os.environ.get("FEDREC_DATA"):
            env["FEDREC_DATA"] = os.environ["FEDREC_DATA"]
        self.procs = Processes(d / "logs", env=env)
        (d / "state").mkdir(exist_ok=True)
        self.procs.start("superlink", superlink_command(d / "pki", self.fleet, self.host, self.control_port,
                                                        d / "state" / "superlink.db"), cwd=d)  # fmt: skip
        if not (wait_port(self.host, self.control_port, 60) and wait_port(self.host, self.fleet_port, 30)):
            raise DeployError(f"the SuperLink did not open its ports; see {self.procs.log_path('superlink')}")
        self.times["superlink_seconds"] = time.perf_counter() - t0
        for k, key in enumerate(self.keys):
            out = self._json(self._flwr("supernode", "register", str(key.public_key), CONNECTION,
                                        "--name", f"node{k}", "--format", "json"))  # fmt: skip
            self.node_ids.append(str(out["node-id"]))
        self.echo(f"registered {self.nodes} SuperNode keys: {', '.join(self.node_ids)}")
        for k in range(self.nodes):
            self.start_node(k)
        self.wait_online(self.nodes, self.cfg.simulation.connect_timeout)
        self.times["setup_seconds"] = time.perf_counter() - t0

    def start_node(self, k: int) -> None:
        state = self.run_dir / "nodes" / str(k)
        state.mkdir(parents=True, exist_ok=True)
        self.procs.start(f"supernode{k}", supernode_command(self.fleet, self.creds.ca_cert, self.keys[k].private_key,
                                                            k, self.nodes, free_port(self.host)),
                         env={"FEDREC_DEVICE": "1", "FEDREC_NODE_STATE": str(state)}, cwd=state)  # fmt: skip

    def node_status(self) -> dict[str, str]:
        """{node id: status} from ``flwr supernode list`` (registered / online / offline)."""
        out = self._json(self._flwr("supernode", "list", CONNECTION, "--format", "json"))
        return {str(n["node-id"]): n["status"] for n in out.get("nodes", [])}

    def wait_online(self, need: int, timeout: float) -> dict[str, str]:
        """Wait (bounded) until ``need`` registered SuperNodes are online; report them."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.node_status()
            online = [n for n, s in status.items() if s == "online"]
            if len(online) >= need:
                self.echo(f"{len(online)}/{len(status)} SuperNodes online over TLS gRPC at {self.fleet}: "
                          + ", ".join(f"node{self.node_ids.index(n)}={n}" if n in self.node_ids else n for n in online))
                return status
            for name, proc in self.procs.procs.items():
                if name.startswith("supernode") and proc.poll() is not None:
                    raise DeployError(f"{name} exited ({proc.returncode}); see {self.procs.log_path(name)}")
            if time.monotonic() > deadline:
                raise DeployError(f"only {len(online)} of {need} SuperNodes came online within {timeout:.0f}s "
                                  f"(simulation.connect_timeout); statuses: {status}; logs in {self.procs.log_dir}")
            time.sleep(1.0)

    def submit(self) -> None:
        args = ["flwr", "run", str(self.app_dir), CONNECTION, "--stream",
                "--run-config", run_config_arg(self.cfg.simulation.rounds, self.server_overrides)]  # fmt: skip
        self.t_submit = time.perf_counter()
        self.procs.start("run", args, env={"NO_COLOR": "1"}, cwd=self.app_dir)

    def monitor(self, on_round=None) -> dict[str, Any]:
        """Stream progress until the run ends; returns summary.json. Failure of the SuperLink or of
        the ServerApp raises; a SuperNode that dies is reported and the run goes on without it."""
        summary_path = self.run_dir / "summary.json"
        run_log = self.procs.log_path("run")
        shown, offset, dead = 0, 0, set()
        run_proc = self.procs.procs["run"]
        while True:
            if run_log.is_file():
                with open(run_log, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    if self.run_id is None and (m := re.search(r"started run (\d+)", line)):
                        self.run_id = m.group(1)
                    if re.search(r"WARNING|ERROR|Traceback|nodes connected|server\.", line):
                        self.echo("  | " + line.strip())
            summary = _read_json(summary_path)
            if summary and summary.get("per_round"):
                for rec in summary["per_round"][shown:]:
                    self.echo(_round_line(rec, summary["rounds_planned"]))
                    if on_round:
                        on_round(rec)
                shown = len(summary["per_round"])
            for name, proc in self.procs.procs.items():
                if name.startswith("supernode") and proc.poll() is not None and name not in dead:
                    dead.add(name)
                    self.echo(f"warning: {name} exited ({proc.returncode}); the run continues without it")
            if self.procs.procs["superlink"].poll() is not None:
                raise DeployError(f"the SuperLink exited; see {self.procs.log_path('superlink')}")
            if run_proc.poll() is not None:
                summary = _read_json(summary_path) or {}
                if not summary.get("finished"):
                    raise DeployError(f"the run ended unfinished (flwr run exited {run_proc.returncode}); "
                                      f"see {run_log}")
                return summary
            time.sleep(0.5)

    def stop(self) -> list[int]:
        if self.procs is None:
            return []
        if self.run_id and self.procs.procs["run"].poll() is None:
            try:
                self._flwr("stop", self.run_id, CONNECTION, timeout=20)
            except (DeployError, subprocess.TimeoutExpired) as exc:
                log.warning("could not stop run %s: %s", self.run_id, exc)
        return self.procs.stop()

    def run(self, on_round=None) -> dict[str, Any]:
        """Everything: resolve, start, submit, monitor, record, stop (always)."""
        t0 = time.perf_counter()
        self.resolve()
        self.prepare_run_dir()
        try:
            self.start()
            self.submit()
            summary = self.monitor(on_round)
            self.times["run_seconds"] = time.perf_counter() - self.t_submit
        finally:
            left = self.stop()
        self.times["process_seconds"] = time.perf_counter() - t0
        return self.record(summary, left)

    def record(self, summary: dict[str, Any], left: list[int]) -> dict[str, Any]:
        """Add the deployment's facts and timings to summary.json (atomically)."""
        summary["process_seconds"] = self.times.get("process_seconds")
        summary["deployment"] = {
            "engine": "flower-deployment", "transport": "grpc-rere", "tls": True, "supernode_auth": True,
            "fleet_address": self.fleet, "supernodes": self.nodes, "node_ids": self.node_ids,
            "flwr_run_id": self.run_id, **{k: round(v, 3) for k, v in self.times.items()},
            "processes_left": left,
        }  # fmt: skip
        from recommender.model_store import atomic_write_json

        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _round_line(rec: dict, total: int) -> str:
    if rec.get("skipped"):
        return f"round {rec['round']}/{total}: skipped ({rec.get('skip_reason', 'too few replies')})"
    parts = [f"loss {rec.get('train-loss', float('nan')):.3f}", f"users {rec.get('users', 0)}/{rec.get('users_planned', 0)}",
             f"{rec.get('seconds', 0):.1f}s"]  # fmt: skip
    parts += [f"{k} {rec[k]:.4f}" for k in ("hr@10", "full-ndcg@10", "epsilon") if k in rec]
    return f"round {rec['round']}/{total}: " + "  ".join(parts)


# ---- CLI ---------------------------------------------------------------------------------------
def _local(args: argparse.Namespace) -> None:
    import signal

    dep = LocalDeployment(args.nodes, list(args.overrides))

    def on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: the finally blocks stop everything
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        summary = dep.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: every process was stopped; the last completed round is saved; "
              f"continue with: fedrec deploy local --nodes {args.nodes} resume={getattr(dep, 'run_dir', '?')}",
              file=sys.stderr)  # fmt: skip
        sys.exit(130)
    except DeployError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        sys.exit(1)
    final, d = summary["final"], summary["deployment"]
    print(f"run {summary['name']}: {summary['rounds']} rounds on {d['supernodes']} SuperNodes (gRPC+TLS, node auth) "
          f"in {d['run_seconds']:.0f}s (+{d['setup_seconds']:.0f}s setup); HR@10 {final.get('hr@10')}, "
          f"full NDCG@10 {final.get('full-ndcg@10')} -> {dep.run_dir}")  # fmt: skip


def _superlink(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    host = args.address.rsplit(":", 1)[0] if args.address.count(":") == 1 else args.address
    creds = make_server_credentials(out, [host, *(args.san or [])])
    cmd = superlink_command(out, f"0.0.0.0:{args.fleet_port}", "0.0.0.0", args.control_port, out / "superlink.db")
    print(f"# credentials in {out}: give {creds.ca_cert} to every SuperNode and to the flwr CLI; keep *.key private")
    print(shlex.join(cmd))
    print(f"\n# flwr CLI connection ($FLWR_HOME/config.toml, default ~/.flwr/config.toml):\n"
          f'[superlink.fedrec]\naddress = "{host}:{args.control_port}"\n'
          f'root-certificates = "{creds.ca_cert}"')  # fmt: skip
    print(f"\n# register each SuperNode's public key, then submit the app:\n"
          f"flwr supernode register node0.pub fedrec\n"
          f"fedrec deploy stage-app app && cd app && flwr run . fedrec --stream "
          f"--run-config {shlex.quote(run_config_arg(3, ['runs_dir=/srv/fedrec/runs', 'name=prod']))}")  # fmt: skip
    if args.run:
        os.execvp(cmd[0], cmd)


def _supernode(args: argparse.Namespace) -> None:
    key = Path(args.key)
    if not key.exists():
        keys = make_node_keys(key.parent, key.name)
        print(f"# new key pair: register {keys.public_key} on the SuperLink (flwr supernode register)")
    cmd = supernode_command(args.superlink, Path(args.ca), key, args.partition, args.partitions, args.runtime_port)
    state = Path(args.state_dir).resolve()
    print(f"FEDREC_DEVICE=1 FEDREC_NODE_STATE={shlex.quote(str(state))} {shlex.join(cmd)}")
    if args.run:
        os.environ.update({"FEDREC_DEVICE": "1", "FEDREC_NODE_STATE": str(state)})
        os.execvp(cmd[0], cmd)


def _stage(args: argparse.Namespace) -> None:
    print(stage_app(Path(args.dest).resolve()))


def add_commands(subparsers) -> None:
    dep = subparsers.add_parser("deploy", help="run on Flower's Deployment Engine (SuperLink/SuperNodes, gRPC)")
    sub = dep.add_subparsers(dest="deploy_command", required=True)
    loc = sub.add_parser("local", help="SuperLink + N SuperNodes on 127.0.0.1 with TLS and node auth")
    loc.add_argument("--nodes", type=int, default=2)
    loc.add_argument("overrides", nargs="*", help="Hydra overrides, as for `fedrec simulate`")
    loc.set_defaults(func=_local)
    sl = sub.add_parser("superlink", help="make credentials and print (or --run) the SuperLink command")
    sl.add_argument("--address", required=True, help="the SuperLink's public address, e.g. 203.0.113.10")
    sl.add_argument("--san", action="append", help="extra certificate names (repeatable); default the address")
    sl.add_argument("--out", default="superlink-credentials")
    sl.add_argument("--fleet-port", type=int, default=9092)
    sl.add_argument("--control-port", type=int, default=9093)
    sl.add_argument("--run", action="store_true", help="exec the SuperLink instead of printing")
    sl.set_defaults(func=_superlink)
    sn = sub.add_parser("supernode", help="print (or --run) a SuperNode command (makes its key pair if missing)")
    sn.add_argument("--superlink", required=True, help="Fleet API address, e.g. 203.0.113.10:9092")
    sn.add_argument("--ca", required=True, help="the deployment's ca.crt")
    sn.add_argument("--key", required=True, help="this node's private key (created with .pub if missing)")
    sn.add_argument("--partition", type=int, required=True)
    sn.add_argument("--partitions", type=int, required=True)
    sn.add_argument("--state-dir", default="fedrec-node-state", help="where private embeddings persist")
    sn.add_argument("--runtime-port", type=int, default=9094)
    sn.add_argument("--run", action="store_true")
    sn.set_defaults(func=_supernode)
    st = sub.add_parser("stage-app", help="copy the Flower app (what `flwr run` bundles) to a directory")
    st.add_argument("dest")
    st.set_defaults(func=_stage)

"""The deployment's parts without a deployment: credentials, process cleanup, run config, resume rules."""

import shlex
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from configs.schema import to_yaml
from configs.store import compose_config
from experiments.deploy import run_config_arg, stage_app
from experiments.deploy_pki import make_node_keys, make_server_credentials
from experiments.deploy_procs import Processes, tagged_pids
from server.resume import resume_config
from server.rundir import RunDir, RunDirError


def test_server_certificate_names_loopback_and_chains_to_the_ca(tmp_path):
    creds = make_server_credentials(tmp_path, ["127.0.0.1", "localhost"])
    cert = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ctx = ssl.create_default_context(cafile=str(creds.ca_cert))  # the CA loads as a trust anchor
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert oct(creds.server_key.stat().st_mode & 0o777) == "0o600"


def test_node_keys_are_what_flower_loads(tmp_path):
    keys = make_node_keys(tmp_path, "node0")
    pub = serialization.load_ssh_public_key(keys.public_key.read_bytes())  # flwr supernode register
    priv = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)  # flower-supernode
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp384r1"
    assert priv.public_key().public_numbers() == pub.public_numbers()


def test_stop_reaches_processes_that_left_the_group(tmp_path):
    procs = Processes(tmp_path)
    # the child starts a grandchild in a new session, as the SuperLink does with its SuperExec
    procs.start("parent", ["bash", "-c", "setsid sleep 300 & exec sleep 300"])
    for _ in range(50):
        if len(tagged_pids(procs.tag)) >= 2:
            break
        import time

        time.sleep(0.1)
    assert len(procs.alive()) >= 2
    assert procs.stop(timeout=5) == []
    assert tagged_pids(procs.tag) == []


def test_run_config_round_trips_through_flwr():
    from flwr.common.config import parse_config_args

    over = ["data=synthetic", "name=a b", "runs_dir=/tmp/x"]
    parsed = parse_config_args([run_config_arg(3, over)])
    assert parsed["num-server-rounds"] == 3 and shlex.split(parsed["fedrec-overrides"]) == over


def test_staged_app_has_only_the_app(tmp_path):
    import tomllib

    app = stage_app(tmp_path / "app")
    conf = tomllib.loads((app / "pyproject.toml").read_text())
    assert "federations" not in conf["tool"]["flwr"]  # `flwr run` would rewrite them in place
    assert conf["tool"]["flwr"]["app"]["components"] == {"serverapp": "server.app:app", "clientapp": "client.app:app"}
    assert (app / "client" / "app.py").is_file() and not (app / "tests").exists()


def test_rundir_keeps_deployment_infrastructure(tmp_path):
    run = tmp_path / "r"
    (run / "deploy" / "logs").mkdir(parents=True)
    (run / "nodes" / "0").mkdir(parents=True)
    RunDir(run).prepare_new(overwrite=False)  # deploy/ and nodes/ are not a run
    (run / "summary.json").write_text("{}")
    with pytest.raises(RunDirError):
        RunDir(run).prepare_new(overwrite=False)
    RunDir(run).prepare_new(overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["deploy", "nodes"]


def test_resume_keeps_the_saved_config(tmp_path):
    base = ["data=synthetic", "data.users=50", "data.items=200", "simulation.rounds=3", "simulation.nodes=2"]
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(compose_config(base)))
    cfg = resume_config(compose_config([f"resume={run}", "simulation.rounds=5"]), [f"resume={run}", "simulation.rounds=5"])
    assert cfg.data.users == 50 and cfg.simulation.nodes == 2 and cfg.simulation.rounds == 5
    with pytest.raises(RunDirError, match="simulation.nodes"):
        resume_config(compose_config([f"resume={run}", "simulation.nodes=3"]), [f"resume={run}", "simulation.nodes=3"])
    with pytest.raises(RunDirError, match="no config.yaml"):
        resume_config(compose_config([f"resume={tmp_path}"]), [])

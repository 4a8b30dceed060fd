"""`fedrec bench secagg --quick --json`: runs and writes every documented key."""

import json

from experiments.cli import main


def test_bench_secagg_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "secagg.json"
    main(["bench", "secagg", "--quick", "--json", str(out)])
    res = json.loads(out.read_text())
    assert {"d", "neighbours", "rates", "results", "round", "command"} <= set(res)
    assert res["quick"] and res["round"] == {"skipped": "--quick"}
    assert {(r["n"], r["dropout"]) for r in res["results"]} == {(8, 0.0), (8, 0.1), (16, 0.0), (16, 0.1)}
    # rates measured before and after the grid; the floor uses the faster of each
    assert len(res["rate_samples"]) == 2
    assert res["rates"] == {k: max(s[k] for s in res["rate_samples"]) for k in res["rates"]}
    for r in res["results"]:
        assert {"fedrec", "flower", "plain", "floor", "ratios"} <= set(r)
        for system in ("fedrec", "flower"):
            assert set(r[system]["stages"]) == {"advertise_keys", "share_keys", "masked_input", "unmask"}
            for st in r[system]["stages"].values():
                assert {"client_seconds", "server_seconds", "bytes_up", "bytes_down"} <= set(st)
        # both protocols recover the mean of the survivors' updates
        assert r["fedrec"]["max_abs_error"] <= r["fedrec"]["quantisation_bound"] * r["fedrec"]["survivors"]
        assert r["flower"]["max_abs_error"] < 1e-3
        assert r["fedrec"]["survivors"] == r["n"] - round(r["dropout"] * r["n"])
        assert set(r["ratios"]) == {"fedrec_vs_floor", "fedrec_vs_plain", "flower_vs_fedrec", "fedrec_masking_vs_floor",
                                    "fedrec_vs_floor_plus_envelope"}  # fmt: skip
        # one RSA unwrap per upload: advertise and share from everyone, masked input and unmask from survivors
        assert r["floor"]["envelope_unwraps"] == 2 * r["n"] + 2 * r["fedrec"]["survivors"]
        assert r["floor"]["envelope_seconds"] == r["floor"]["envelope_unwraps"] / res["rates"]["rsa_oaep_unwraps_per_s"]
    assert "Flower / fedrec" in capsys.readouterr().out


def test_bench_secagg_flower_max_n_skips_flower_above_it(tmp_path, capsys):
    out = tmp_path / "secagg.json"
    main(["bench", "secagg", "--quick", "--flower-max-n", "8", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["command"].endswith("--flower-max-n 8") and res["flower_max_n"] == 8
    for r in res["results"]:
        if r["n"] == 8:
            assert "total_seconds" in r["flower"] and "flower_vs_fedrec" in r["ratios"]
        else:
            assert "skipped" in r["flower"] and "flower_vs_fedrec" not in r["ratios"]
    assert "skipped" in capsys.readouterr().out


def test_bench_secagg_round_inprocess_measures_cpu_per_round(tmp_path, capsys):
    out = tmp_path / "round.json"
    main(["bench", "secagg", "--quick", "--round-only", "--round-inprocess", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["results"] == [] and res["command"].endswith("--quick --round-inprocess --round-only")
    rd = res["round"]
    assert rd["clock"] == "process_time" and rd["rounds"] == 3
    for mode in ("off", "on"):
        assert len(rd[mode]["cpu_seconds"]) == 3 and all(c > 0 for c in rd[mode]["cpu_seconds"])
        assert rd[mode]["users"] == [20, 20, 20]  # every round trained (and, on, unmasked) 20 users
    assert rd["overhead"] == rd["on"]["median_cpu_seconds"] / rd["off"]["median_cpu_seconds"] - 1
    assert "in-process round loop" in capsys.readouterr().out

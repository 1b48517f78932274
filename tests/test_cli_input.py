"""Bad input to the CLI and its files ends as one line `error: ...` naming the file, field or value,
exit status 2, nothing half-written, and never a traceback (issue 14). Nothing here starts Triton:
where a command would, the server's start is made to fail the test."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator import cli
from orchestrator.catalog import Catalog
from orchestrator.cluster import Cluster
from orchestrator.errors import UserError
from orchestrator.files import write_atomic
from orchestrator.profiles import ProfileSet
from orchestrator.scenarios import small_resnet

NOT_UTF8 = b"name = \"caf\xe9\"\n"  # Latin-1, not UTF-8


def one_error(capsys, *flags: str, code: int = 2) -> str:
    """Run `orchestrator FLAGS...`; assert it exits `code` with exactly one stderr line; return that line."""
    assert cli.main(list(flags)) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Commands with default output paths write under tmp_path, never into the checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCHESTRATOR_TOKEN", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_DEBUG", raising=False)


@pytest.fixture
def files(tmp_path):
    """cluster.toml (remote devices), profiles.json and variants.json of the small-resnet scenario."""
    return small_resnet(devices=2).write(tmp_path / "sc")


# --- cluster.toml ---------------------------------------------------------------------------

DEVICE = 'class = "cpu-1t"\nkind = "cpu"\nmemory_mb = 500\n'


def cluster_file(tmp_path, device_body: str, top: str = "", embedded: str = "threads = 1\n"):
    path = tmp_path / "cluster.toml"
    path.write_text(f'{top}[[device]]\n{device_body}[device.embedded]\n{embedded}')
    return path


def test_device_id_with_a_shell_payload_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "INJECTED"
    dev_id = f"a$(touch${{IFS}}{marker})b"
    path = cluster_file(tmp_path, f"id = {json.dumps(dev_id)}\n" + DEVICE)
    with pytest.raises(UserError) as err:
        Cluster.load(path)
    assert f"{path}: device #1: field 'id' must be a letter or digit" in str(err.value)
    assert repr(dev_id) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("top, device, embedded, message", [
    ("", 'id = "a/b"\n' + DEVICE, "", "device #1: field 'id' must be a letter or digit"),
    ('name = "../up"\n', 'id = "cpu0"\n' + DEVICE, "", "field 'name' must be a letter or digit"),
    ("model_repository = 5\n", 'id = "cpu0"\n' + DEVICE, "", "field 'model_repository' must be a path"),
    ("", 'id = "cpu0"\nclass = "c"\nkind = "cpu"\nmemory_mb = nan\n', "", "field 'memory_mb' must be a positive finite"),
    ("", 'id = "cpu0"\nclass = "c"\nkind = "cpu"\nmemory_mb = inf\n', "", "field 'memory_mb' must be a positive finite"),
    ("", 'id = "cpu0"\n' + DEVICE + "cost_per_hour = nan\n", "", "field 'cost_per_hour' must be a finite number"),
    ("", 'id = "cpu0"\n' + DEVICE + "cost_per_hour = inf\n", "", "field 'cost_per_hour' must be a finite number"),
    ("", 'id = "cpu0"\nclass = "../c"\nkind = "cpu"\nmemory_mb = 500\n', "", "field 'class' must be a letter or digit"),
    ("", 'id = "cpu0"\n' + DEVICE + 'config = "../../etc/x"\n', "", "field 'config' must be a letter or digit"),
    ("", 'id = "cpu0"\n' + DEVICE, 'host = "localhost"\n', "field 'embedded.host' must be an IP address"),
    ("", 'id = "cpu0"\n' + DEVICE, 'host = "300.1.2.3"\n', "field 'embedded.host' must be an IP address"),
    ("", 'id = "cpu0"\n' + DEVICE, "host = 2130706433\n", "field 'embedded.host' must be an IP address"),
])
def test_bad_cluster_fields_are_one_line_errors(tmp_path, capsys, top, device, embedded, message):
    path = cluster_file(tmp_path, device, top=top, embedded=embedded)
    err = one_error(capsys, "solve", "--cluster", str(path), "--profiles", "p.json", "--demand", "resnet=1")
    assert err.startswith(f"error: {path}: ") and message in err


def test_embedded_host_is_read_and_defaults_to_loopback(tmp_path):
    path = cluster_file(tmp_path, 'id = "cpu0"\n' + DEVICE, embedded='host = "0.0.0.0"\n')
    assert Cluster.load(path).devices[0].embedded.host == "0.0.0.0"
    path = cluster_file(tmp_path, 'id = "cpu0"\n' + DEVICE, embedded='host = "::1"\n')
    assert Cluster.load(path).devices[0].embedded.host == "::1"
    path = cluster_file(tmp_path, 'id = "cpu0"\n' + DEVICE)
    assert Cluster.load(path).devices[0].embedded.host == "127.0.0.1"


def test_cluster_file_that_is_not_utf8_or_is_a_directory(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes(NOT_UTF8)
    err = one_error(capsys, "solve", "--cluster", str(path), "--profiles", "p.json")
    assert f"{path}: not a UTF-8 text file" in err
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    err = one_error(capsys, "solve", "--cluster", str(folder), "--profiles", "p.json")
    assert f"{folder}: is a directory" in err


# --- variants.json ----------------------------------------------------------------------------

def catalog_entries() -> list[dict]:
    return [v.to_dict() for v in small_resnet().catalog.variants.values()]


@pytest.mark.parametrize("key, value, message", [
    ("name", "a/b", "field 'name' must be a letter or digit"),
    ("name", "resnet..18", "field 'name' must be a letter or digit"),
    ("family", "res net", "field 'family' must be a letter or digit"),
    ("family", 7, "field 'family' has a bad value 7"),
    ("accuracy", "high", "field 'accuracy' has a bad value 'high'"),
    ("accuracy", 120.0, "field 'accuracy' must be a top-1 percentage"),
    ("max_batch_size", 0, "field 'max_batch_size' must be an integer >= 1"),
    ("inputs", [{"name": "x", "dtype": "FP32", "shape": ["3"]}], "inputs[0]: field 'shape'"),
    ("outputs", [{"name": "y", "dtype": "FLOAT", "shape": [10]}], "outputs[0]: field 'dtype' must be one of"),
    ("flops", None, "field 'flops' is missing"),
])
def test_bad_catalog_entries_name_the_file_the_entry_and_the_field(tmp_path, key, value, message):
    entries = catalog_entries()
    if value is None:
        del entries[1][key]
    else:
        entries[1][key] = value
    path = tmp_path / "variants.json"
    path.write_text(json.dumps({"variants": entries}))
    with pytest.raises(UserError) as err:
        Catalog.load(tmp_path)
    assert str(err.value).startswith(f"{path}: variant #2: ") and message in str(err.value)


@pytest.mark.parametrize("content, message", [
    ({"variants": [5]}, "variant #1: not an object"),
    ({"variants": {"resnet18": {}}}, "expected an object with a 'variants' list"),
    ({"variants": catalog_entries()[:1] * 2}, "variant #2: duplicate name 'resnet18'"),
])
def test_malformed_catalog_is_a_user_error(tmp_path, content, message):
    (tmp_path / "variants.json").write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        Catalog.load(tmp_path)


def test_catalog_that_is_not_utf8_or_is_a_directory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "variants.json").write_bytes(b'{"variants": [], "x": "\xe9"}')
    with pytest.raises(UserError, match="variants.json: not a UTF-8 text file"):
        Catalog.load(tmp_path / "a")
    (tmp_path / "b" / "variants.json").mkdir(parents=True)
    with pytest.raises(UserError, match="variants.json: is a directory"):
        Catalog.load(tmp_path / "b")


# --- profiles.json ----------------------------------------------------------------------------

def profile_records() -> list[dict]:
    return json.loads(small_resnet().profiles.to_json())["records"][:3]


@pytest.mark.parametrize("key, value, message", [
    ("throughput_rps", -1.0, "field 'throughput_rps' must be a finite number >= 0, not -1.0"),
    ("throughput_rps", float("nan"), "field 'throughput_rps' must be a finite number >= 0, not nan"),
    ("throughput_rps", float("inf"), "field 'throughput_rps' must be a finite number >= 0, not inf"),
    ("batch_size", 0, "field 'batch_size' must be an integer >= 1, not 0"),
    ("batch_size", -2, "field 'batch_size' must be an integer >= 1, not -2"),
    ("batch_size", 2.5, "field 'batch_size' must be an integer >= 1, not 2.5"),
    ("batch_size", "4", "field 'batch_size' must be an integer >= 1, not '4'"),
    ("p50_ms", float("nan"), "field 'p50_ms' must be a finite number >= 0, not nan"),
    ("p95_ms", float("inf"), "field 'p95_ms' must be a finite number >= 0, not inf"),
    ("p99_ms", -3.0, "field 'p99_ms' must be a finite number >= 0, not -3.0"),
])
def test_bad_profile_records_name_the_file_the_record_and_the_field(tmp_path, capsys, key, value, message):
    records = profile_records()
    records[2][key] = value
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"records": records}))  # NaN and Infinity as Python's json writes them
    with pytest.raises(UserError) as err:
        ProfileSet.load(path)
    assert str(err.value) == f"{path}: record #3: {message}"
    err = one_error(capsys, "profile", "--show", "--out", str(path))
    assert f"{path}: record #3: {message}" in err


def test_profile_record_that_is_not_an_object(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"records": [profile_records()[0], 42]}))
    with pytest.raises(UserError, match=r"profiles.json: record #2: expected an object .* not 42"):
        ProfileSet.load(path)


def test_profiles_file_that_is_not_utf8_or_is_a_directory(tmp_path, capsys):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"records": [], "note": "\xe9"}')
    assert f"{path}: not a UTF-8 text file" in one_error(capsys, "profile", "--show", "--out", str(path))
    folder = tmp_path / "profiles.json"
    folder.mkdir()
    assert f"{folder}: is a directory" in one_error(capsys, "profile", "--show", "--out", str(folder))


# --- outputs ----------------------------------------------------------------------------------

GENERATE = ["trace", "generate", "--rate", "5", "--duration", "10", "--family", "resnet"]


def test_trace_out_that_is_a_directory_or_in_a_missing_directory(tmp_path, capsys):
    folder = tmp_path / "traces"
    folder.mkdir()
    assert f"--out {folder}: is a directory" in one_error(capsys, *GENERATE, "--out", str(folder))
    assert list(folder.iterdir()) == []  # no temporary file left behind
    missing = tmp_path / "nope" / "t.csv"
    assert f"the directory {missing.parent} does not exist" in one_error(capsys, *GENERATE, "--out", str(missing))
    assert not missing.parent.exists()
    good = tmp_path / "t.csv"
    assert cli.main([*GENERATE, "--out", str(good)]) == 0
    capsys.readouterr()
    assert f"--out {folder}: is a directory" in one_error(capsys, "trace", "merge", str(good), "--out", str(folder))


def test_write_atomic_onto_a_directory_is_a_user_error_and_leaves_nothing(tmp_path):
    folder = tmp_path / "x.json"
    folder.mkdir()
    with pytest.raises(UserError, match="x.json: is a directory"):
        write_atomic(folder, "{}")
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_profile_out_that_is_a_directory(tmp_path, capsys):
    folder = tmp_path / "profiles.json"
    folder.mkdir()
    csv = tmp_path / "pa.csv"
    csv.write_text("Concurrency,Inferences/Second,p50 latency,p95 latency,p99 latency\n1,10,9000,9500,9900\n")
    err = one_error(capsys, "profile", "--import-perf-analyzer", str(csv), "--variant", "resnet18",
                    "--device-class", "cpu-1t", "--out", str(folder))
    assert f"--out {folder}: is a directory" in err


def test_simulate_and_bench_out_that_is_a_file(tmp_path, capsys, files):
    afile = tmp_path / "results"
    afile.write_text("not a folder")
    err = one_error(capsys, "simulate", "--scenario", "small-resnet", "--duration", "5", "--out", str(afile))
    assert f"--out {afile}: is a file" in err
    err = one_error(capsys, "bench", "--trace", "t.csv", "--cluster", str(files["cluster"]), "--out", str(afile))
    assert f"--out {afile}: is a file" in err
    assert afile.read_text() == "not a folder"


# --- serve and demo: checked before any Triton server starts -------------------------------------

@pytest.fixture
def no_triton(monkeypatch):
    """Starting an embedded Triton (or exporting models) fails the test."""
    from orchestrator.commands import demo
    from orchestrator.triton.embedded import EmbeddedServer

    def refuse(*args, **kwargs):
        raise AssertionError("a Triton server was started (or models exported) before the input was checked")

    monkeypatch.setattr(EmbeddedServer, "start", refuse)
    monkeypatch.setattr(demo, "ensure_exported", refuse)


@pytest.fixture
def embedded_cluster(tmp_path):
    """cluster.toml with one embedded device, profiles.json beside it, and a repository holding only variants.json."""
    sc = small_resnet(devices=1)
    repo = tmp_path / "repo"
    repo.mkdir()
    sc.catalog.save(repo)
    sc.profiles.save(tmp_path / "profiles.json")
    path = tmp_path / "cluster.toml"
    path.write_text(f'name = "t"\nmodel_repository = "repo"\n[[device]]\nid = "cpu0"\n{DEVICE}'
                    f'[device.embedded]\nthreads = 1\n')
    return path


def test_serve_db_in_a_missing_directory_fails_fast_before_triton(tmp_path, capsys, embedded_cluster, no_triton):
    db = tmp_path / "missing" / "dir" / "state.sqlite"
    started = time.monotonic()
    err = one_error(capsys, "serve", "--cluster", str(embedded_cluster), "--db", str(db))
    assert time.monotonic() - started < 5
    assert f"--db {db}: the directory {db.parent} does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_serve_db_that_is_a_directory(tmp_path, capsys, embedded_cluster, no_triton):
    err = one_error(capsys, "serve", "--cluster", str(embedded_cluster), "--db", str(tmp_path))
    assert f"--db {tmp_path}: is a directory" in err


@pytest.mark.parametrize("flags, message", [
    (["--slo", "resnet=nan"], "--slo expects FAMILY=MS with MS a finite number of milliseconds >= 1, not 'resnet=nan'"),
    (["--slo", "resnet=inf"], "not 'resnet=inf'"),
    (["--tick", "nan"], "argument --tick: must be a finite number, not 'nan'"),
    (["--tick", "inf"], "argument --tick: must be a finite number, not 'inf'"),
    (["--dwell", "nan"], "argument --dwell: must be a finite number"),
    (["--dwell", "inf"], "argument --dwell: must be a finite number"),
    (["--drain", "nan"], "argument --drain: must be a finite number"),
    (["--drain=-inf"], "argument --drain: must be a finite number"),
    (["--slo", "nosuch=100"], "--slo names family 'nosuch', which has no variant in"),
    (["--port", "70000"], "argument --port: must be a port number in 0..65535, not 70000"),
    (["--demand-floor", "resnet=-2"], "--demand-floor expects FAMILY=RPS with RPS a number of requests/s in 0..1e7, "
                                      "not 'resnet=-2'"),
    (["--demand-floor", "resnet"], "not 'resnet'"),
    (["--demand-floor", "nosuch=40"], "--demand-floor names family 'nosuch', which has no variant in"),
])
def test_serve_refuses_bad_flag_values_before_triton(tmp_path, capsys, embedded_cluster, no_triton, flags, message):
    err = one_error(capsys, "serve", "--cluster", str(embedded_cluster), "--db", str(tmp_path / "s.sqlite"), *flags)
    assert message in err
    if "nosuch" in flags[-1]:
        assert "(families: resnet)" in err


@pytest.mark.parametrize("flags, message", [
    (["--db", "missing/dir/state.sqlite"], "the directory missing/dir does not exist"),
    (["--slo", "resnet=inf"], "not 'resnet=inf'"),
    (["--dwell", "nan"], "argument --dwell: must be a finite number"),
    (["--spike-s", "0"], "argument --spike-s: must be positive"),
])
def test_demo_refuses_bad_input_before_exporting_or_starting_triton(capsys, embedded_cluster, no_triton, flags,
                                                                    message):
    assert message in one_error(capsys, "demo", "--cluster", str(embedded_cluster), *flags)


class FakeServer:
    """Stands in for ControlPlaneServer: records the config, starts nothing."""

    made: list = []

    def __init__(self, cluster, profiles, config, **kwargs):
        self.config = config
        self.url = "http://127.0.0.1:1"
        FakeServer.made.append(self)

    def start(self, log=print):
        return self

    def stop(self):
        pass


@pytest.fixture
def fake_serve(monkeypatch):
    from orchestrator.commands import serve

    def interrupt():
        raise KeyboardInterrupt

    FakeServer.made = []
    monkeypatch.setattr(serve, "ControlPlaneServer", FakeServer)
    monkeypatch.setattr(serve, "wait_for_interrupt", interrupt)
    return FakeServer.made


def test_serve_prints_a_token_only_when_it_made_one(tmp_path, capsys, monkeypatch, embedded_cluster, fake_serve):
    base = ["serve", "--cluster", str(embedded_cluster), "--db", str(tmp_path / "s.sqlite")]
    assert cli.main(base + ["--token", "s3cret-flag"]) == 0
    out = capsys.readouterr().out
    assert "(token: from --token)" in out and "s3cret-flag" not in out
    assert fake_serve[-1].config.token == "s3cret-flag"

    monkeypatch.setenv("ORCHESTRATOR_TOKEN", "s3cret-env")
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    assert "(token: from $ORCHESTRATOR_TOKEN)" in out and "s3cret-env" not in out
    assert fake_serve[-1].config.token == "s3cret-env"

    monkeypatch.delenv("ORCHESTRATOR_TOKEN")
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    token = fake_serve[-1].config.token
    assert token and len(token) >= 16 and f"(token: {token})" in out


# --- solve, simulate, trace, profile: numbers -------------------------------------------------

@pytest.mark.parametrize("slo", ["resnet=inf", "resnet=1e-300", "resnet=nan", "resnet=0.5", "resnet=-1"])
def test_solve_refuses_an_slo_that_is_not_a_finite_millisecond_or_more(capsys, files, slo):
    err = one_error(capsys, "solve", "--cluster", str(files["cluster"]), "--profiles", str(files["profiles"]),
                    "--slo", slo, "--demand", "resnet=5")
    assert f"--slo expects FAMILY=MS with MS a finite number of milliseconds >= 1, not {slo!r}" in err


@pytest.mark.parametrize("flags, message", [
    (["--devices", "0"], "argument --devices: must be a positive integer, not 0"),
    (["--devices", "-5"], "argument --devices: must be a positive integer, not -5"),
    (["--duration", "nan"], "argument --duration: must be a finite number"),
    (["--duration", "0"], "argument --duration: must be positive"),
    (["--peak-factor", "0.5"], "argument --peak-factor: must be >= 1"),
    (["--peak-factor", "inf"], "argument --peak-factor: must be a finite number"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--load-fixed", "-1"], "argument --load-fixed: must be >= 0"),
    (["--load-per-gb", "nan"], "argument --load-per-gb: must be a finite number"),
    (["--dwell", "inf"], "argument --dwell: must be a finite number"),
    (["--hysteresis", "nan"], "argument --hysteresis: must be a finite number"),
    (["--hold-factor", "inf"], "argument --hold-factor: must be a finite number"),
    (["--slo", "resnet=inf"], "not 'resnet=inf'"),
    (["--slo", "nosuch=100"], "--slo names family 'nosuch', which has no variant in the small-resnet scenario"),
    (["--demand-floor", "resnet=nan"], "--demand-floor expects FAMILY=RPS with RPS a number of requests/s in 0..1e7"),
    (["--demand-floor", "nosuch=40"], "--demand-floor names family 'nosuch', which has no variant in the small-resnet"),
])
def test_simulate_refuses_bad_numbers(tmp_path, capsys, flags, message):
    err = one_error(capsys, "simulate", "--scenario", "small-resnet", "--duration", "5", "--policies", "milp",
                    "--out", str(tmp_path / "sim"), *flags)
    assert message in err
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--deadline-ms", "nan"], "argument --deadline-ms: must be a finite number"),
    (["--family", "a,b"], "--family must be a letter or digit"),
    (["--rate", "inf"], "argument --rate: must be a finite number"),
    (["--burst-s", "0"], "argument --burst-s: must be positive"),
    (["--period", "nan"], "argument --period: must be a finite number"),
])
def test_trace_generate_refuses_bad_values(tmp_path, capsys, flags, message):
    out = tmp_path / "t.csv"
    assert message in one_error(capsys, *GENERATE, "--out", str(out), *flags)
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--time-limit", "inf"], "argument --time-limit: must be a finite number"),
    (["--time-limit", "0"], "argument --time-limit: must be positive"),
    (["--utilisation-cap", "1.5"], "argument --utilisation-cap: must be in (0, 1]"),
    (["--latency-fraction", "nan"], "argument --latency-fraction: must be a finite number"),
])
def test_solve_refuses_bad_numbers(capsys, files, flags, message):
    assert message in one_error(capsys, "solve", "--cluster", str(files["cluster"]), "--profiles",
                                str(files["profiles"]), "--demand", "resnet=5", *flags)


def test_trace_show_refuses_a_nan_window(tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert cli.main([*GENERATE, "--out", str(out)]) == 0
    capsys.readouterr()
    assert "argument --window: must be a finite number, not 'nan'" in one_error(capsys, "trace", "show", str(out),
                                                                                  "--window", "nan")


@pytest.mark.parametrize("flags, message", [
    (["--slo", "nan"], "argument --slo: must be a finite number"),
    (["--latency-fraction", "0"], "argument --latency-fraction: must be in (0, 1]"),
    (["--latency-fraction", "1.5"], "argument --latency-fraction: must be in (0, 1]"),
    (["--samples", "0"], "argument --samples: must be a positive integer"),
    (["--max-seconds", "inf"], "argument --max-seconds: must be a finite number"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
])
def test_profile_refuses_bad_numbers(capsys, files, flags, message):
    assert message in one_error(capsys, "profile", "--show", "--out", str(files["profiles"]), *flags)


# --- the CLI itself ---------------------------------------------------------------------------

def test_a_usage_error_is_one_line(capsys):
    err = one_error(capsys, "simulate", "--no-such-flag")
    assert "unrecognized arguments: --no-such-flag" in err and "orchestrator --help" in err
    err = one_error(capsys, "simulate", "--devices")
    assert "argument --devices: expected one argument" in err and "orchestrator simulate --help" in err


def test_an_unexpected_exception_is_one_line_exit_1_unless_debugging(capsys, monkeypatch):
    from orchestrator.commands import compile as compile_command

    def boom(args):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(compile_command, "run", boom)
    err = one_error(capsys, "compile", "--status", code=1)
    assert err == ("error: internal error (RuntimeError: something broke over two lines); "
                   "set ORCHESTRATOR_DEBUG=1 for the traceback")
    monkeypatch.setenv("ORCHESTRATOR_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["compile", "--status"])

"""The architecture the tree shows, kept: which parts may import what."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.speech import ROOT

HEAVY = ("torch", "jina", "faster_whisper", "ctranslate2", "diffusers", "transformers", "whisper", "docarray")
CLIENT_SAFE = ("client", "ui", "speech2image", "speech2image.client", "speech2image.errors", "speech2image.limits",
               "speech2image.options", "speech2image.asr", "speech2image.asr.options", "speech2image.imaging",
               "speech2image.imaging.options")
JINA_CLIENT = "speech2image/client.py"  # Jina's client behind the project's calls: it imports jina when it calls


def imported(path: Path) -> set[str]:
    """The top-level names of every module a file imports, wherever in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names} | {name for name in names}


def test_the_library_never_imports_jina():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "speech2image").rglob("*.py") if "jina" in imported(p)]
    assert offenders == [JINA_CLIENT]  # and the gateway, the executors and the entry points


def test_what_the_client_and_the_page_import_needs_no_model_library_and_no_jina():
    code = (f"import sys\nfor m in {CLIENT_SAFE!r}: __import__(m)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tests_never_import_benchmarks_and_benchmarks_share_only_tests_support():
    for path in (ROOT / "tests").rglob("*.py"):
        assert "bench" not in imported(path), path
    for path in (ROOT / "bench").glob("*.py"):
        tests_modules = {name for name in imported(path) if name.startswith("tests")} - {"tests"}
        assert all(name.startswith("tests.support") for name in tests_modules), (path, tests_modules)


def test_each_domain_stands_alone():
    """An executor image holds the core and its own domain only: asr and imaging never import each other."""
    for domain, other in (("asr", "imaging"), ("imaging", "asr")):
        for path in (ROOT / "speech2image" / domain).glob("*.py"):
            source = path.read_text()
            assert f"speech2image.{other}" not in source and f"..{other}" not in source, path


def test_metric_and_stage_names_live_in_a_leaf_that_domain_code_reads_them_from():
    """names.py imports nothing; code that only names a metric or a stage never loads the metrics module."""
    names = ROOT / "speech2image" / "observability" / "names.py"
    assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(ast.parse(names.read_text())))
    readers = [*(ROOT / "speech2image").glob("asr/*.py"), *(ROOT / "speech2image").glob("imaging/*.py"),
               *(ROOT / "speech2image").glob("serving/*.py"), *(ROOT / "bench").glob("*.py"),
               *(ROOT / "tools").glob("*.py")]
    for path in readers:
        source = path.read_text()
        assert "observability.metrics" not in source and "observability import metrics" not in source, path


JINA_INTERNALS = ROOT / "gateway" / "jina_internals.py"
# what Jina keeps to itself, by the names the project reaches for; a `_name` of another object is
# caught by its underscore (grpc's namedtuple `_replace` and `os._exit` are public)
JINA_PRIVATE = {"send_requests_once", "get_replicas", "get_all_connections", "get_next_connection", "pod_args",
                "shards", "worker", "_server_kwargs", "_request_handler", "_ReplicaList"}
PUBLIC_UNDERSCORED = {"_replace", "_exit"}
NOT_JINAS = {"_actions", "_HelpAction"}  # argparse's: the configuration page reads app.py's parser


def test_jinas_internals_are_touched_in_one_module_only():
    paths = [ROOT / "app.py", *(ROOT / "gateway").glob("*.py"), *(ROOT / "tools").glob("*.py"),
             *(ROOT / "executors").rglob("*.py")]
    offenders = []
    for path in paths:
        if path == JINA_INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                name = node.attr
                of_another = (name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORED | NOT_JINAS
                              and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")))
                if name in JINA_PRIVATE or of_another:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
            elif isinstance(node, ast.Name) and node.id.startswith("_") and node.id in JINA_PRIVATE:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.id}")
    assert offenders == []


def test_another_jina_stops_the_import_of_its_internals_with_one_line(tmp_path):
    fake = tmp_path / "jina"
    fake.mkdir()
    (fake / "__init__.py").write_text('__version__ = "3.35.0"\n')
    done = subprocess.run([sys.executable, "-c", "import gateway.jina_internals"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "ImportError: speech2image uses Jina 3.34's internals (the gateway's connection pool, a Flow's pods), not "
        "those of jina 3.35.0; install jina==3.34.0 as constraints.txt pins it")

"""Security checks over the repository's files (``git ls-files``: tracked, plus new files git does not
ignore, i.e. everything a commit could contain): no token or password is written anywhere, and every
documented or scripted Dagster UI binds 127.0.0.1.

Scanned: Hugging Face tokens, AWS access keys and secret keys, GitHub/Slack/OpenAI-style tokens,
private keys, and ``password``/``secret``/``token``-named keys given a literal value in YAML, TOML,
INI, env files, Dockerfiles, Makefiles, shell, Markdown and Python (``{env: VAR}``, ``${VAR}``,
empty values and ``...``/``<placeholder>`` are fine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 2_000_000

TOKEN_PATTERNS = {
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key\W{0,4}[:=]\s*[\"']?[A-Za-z0-9/+=]{40}\b"
    ),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "API secret key": re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}\b"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"{}$<]{3,}@[\w.-]+"),
}
# key = value / key: value where the key NAMES a credential (not e.g. max_new_tokens, eos_token)
KEY = r"[\w.-]*?(?:password|passwd|secret|secret_?key|token|api_?key|access_?key|private_?key)"
NOT_CRED = re.compile(r"(?i)(?:bos|eos|pad|unk|sep|cls|mask|special|stop|wait|new|max|num)_?tokens?$")
ASSIGN = re.compile(rf"(?i)(?P<key>\b{KEY})[\"']?\s*(?::|=|\s-?-?from-literal=)\s*(?P<val>[^\s#,;)]*)")
PLACEHOLDER = re.compile(
    r"^(?:|\.\.\.|\*+|x+|<[^>]*>|\$.*|\{.*|\[.*|%\(.*|~|null|none|true|false|[|>])$", re.I
)
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".sh", ".md", ".txt", ".json"}


def repo_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        msg = "not a git checkout (git ls-files is what this test scans)"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()[:MAX_BYTES]
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def is_config(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.suffix.lower() in CONFIG_SUFFIXES
        or name in {"dockerfile", "makefile"}
        or name.startswith(".env")
    )


def literal_credentials(path: Path, line: str) -> list[str]:
    """``password: hunter2``-style lines; in Python only quoted literals count (names are variables)."""
    hits = []
    for m in ASSIGN.finditer(line):
        key, val = m.group("key"), m.group("val")
        if NOT_CRED.search(key):
            continue
        quoted = val[:1] in "\"'"
        val = val.strip("\"'")
        if (path.suffix == ".py" or not val[:1].isalnum()) and not quoted:
            continue  # a Python name, or prose like `password:`/`token:` in Markdown
        if not (path.suffix == ".py" or is_config(path)) or PLACEHOLDER.match(val):
            continue
        if re.search(r"pass(?:wd|word)$", key, re.I) or (
            len(val) >= 16 and re.search(r"[A-Za-z]", val) and re.search(r"\d", val)
        ):
            hits.append(f"{key} = {val[:4]}…")
    return hits


def scan(path: Path, text: str) -> list[str]:
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in TOKEN_PATTERNS.items():
            if pattern.search(line):
                found.append(f"{where}:{n}: {what}")
        for hit in literal_credentials(path, line):
            found.append(f"{where}:{n}: literal credential {hit}")
    return found


def test_no_tokens_or_passwords_in_repository():
    files = repo_files()
    assert any(p.name == "pyproject.toml" for p in files)
    found = []
    for path in files:
        text = text_of(path)
        if text is not None:
            found += scan(path, text)
    assert not found, "credentials in repository files:\n" + "\n".join(found)


def test_scanner_catches_and_spares():
    """The scanner itself: synthetic secrets (built at run time, so this file holds none) are caught;
    environment references and tokenizer keys are not."""
    y, p = Path("x.yaml"), Path("x.py")
    bad = {
        y: [
            "token: " + "hf" + "_" + "aB3dE6gH9j" * 4,
            "aws_access_key_id: " + "AKIA" + "ABCDEFGHIJKLMNOP",
            "aws_secret_access_key: " + "a1B2c3D4e5" * 4,
            "password: " + "hunter2",
            "password: " + "'!Qaz2wsx'",
            "postgresqlPassword: " + "test",
            "url: postgresql://bt:" + "s3cr3tpw" + "@db.example.com/bt",
        ],
        p: ["API_TOKEN = '" + "Zx9" * 8 + "'", "connect(password=" + '"' + "hunter2" + '")'],
    }
    good = {
        y: [
            "password: {env: DAGSTER_PG_PASSWORD}",
            'postgresqlPassword: ""',
            "postgresqlSecretName: bt-dagster-postgresql",
            "TOKENIZERS_PARALLELISM: " + '"false"',
            "max_new_tokens: 512",
            "eos_token: " + '"<|endoftext|>"',
            "# kubectl create secret generic x --from-literal=postgresql-password=...",
            "HF_TOKEN: ${HF_TOKEN}",
            "literal `password:`/`token:` values",
        ],
        p: ["password = secrets.token_urlsafe(18)", '"DAGSTER_PG_PASSWORD": password,'],
    }
    for path, lines in bad.items():
        for line in lines:
            assert scan(path, line), line
    for path, lines in good.items():
        for line in lines:
            assert not scan(path, line), line


WEBSERVER = re.compile(r"\b(?:dagster dev|dg dev|dagster-webserver|dagit)\b(?P<args>.*)")


def test_webserver_binds_localhost():
    """Every command line in the docs, Makefile and scripts that starts the UI passes ``-h 127.0.0.1``;
    nothing starts it on 0.0.0.0 (the gRPC code server in deploy/k8s is not the UI)."""
    checked = 0
    for path in repo_files():
        if not (is_config(path) or path.name.lower() == "makefile") or path.suffix == ".json":
            continue
        text = text_of(path) or ""
        for n, line in enumerate(text.splitlines(), 1):
            m = WEBSERVER.search(line)
            if not m or not re.search(r"\s-[hpw]\b|--(?:host|port)\b", m.group("args")):
                continue  # prose, not a command line
            checked += 1
            where = f"{path.relative_to(ROOT)}:{n}"
            assert re.search(r"(?:-h|--host)[ =](?:127\.0\.0\.1|localhost)\b", m.group("args")), where
    assert checked >= 2, "expected the Makefile's and the README's `dg dev` command lines"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"(?:dagster|dg) dev .*-h 127\.0\.0\.1", makefile)


def test_lock_pins_every_requirement():
    """requirements.lock (what the image installs and ``make audit`` checks) pins every requirement of
    ``.[dev,deploy]`` at a version the requirement allows; torch as the PyPI release (no ``+cpu``)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["deploy"]]
    assert "torch" in lock and "+" not in lock["torch"]
    for spec in wanted:
        req = Requirement(spec)
        key = canonicalize_name(req.name)
        assert key in lock, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[key], prereleases=True), f"{spec} vs lock {lock[key]}: make lock"

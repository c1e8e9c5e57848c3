"""The Java programs the tests run (java/*.java, Kafka Connect's worker): their classpaths from
Maven and their compiled classes, built once and shared.

Maven's local repository (~/.m2) is not safe for two Maven processes that download into it at
once, and parallel test workers (pytest -n) would start several. So every Maven run and every
compile here holds one file lock, and what they produce is kept under CACHE_DIR, keyed by the
content it was made from (the pom, the sources, the classpath): the first test that needs a
classpath resolves it, every later one (in any worker, or a later run) reads it back.
Under pytest-xdist the controller resolves the classpaths before the workers start
(conftest.py's pytest_sessionstart), so no test's time bound is spent waiting for a download.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS_DIR = Path(__file__).parent
JAVA_DIR = CLIENTS_DIR / "java"
CLIENTS_POM = JAVA_DIR / "pom.xml"
CONNECT_POM = CLIENTS_DIR / "connect" / "pom.xml"
# scripts/librdkafka-suite.sh takes the same lock around its Maven run.
CACHE_DIR = Path.home() / ".cache" / "spate" / "tests"


@contextlib.contextmanager
def cache_lock():
    """Held around every Maven run and every compile into CACHE_DIR."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(*parts):
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else str(part).encode())
        sha.update(b"\0")
    return sha.hexdigest()[:24]


def resolve_classpath(pom, timeout):
    """The classpath of `pom`'s dependencies (Maven's dependency:build-classpath), from the
    cache when every jar it names is still there. Returns (classpath, None), or (None, why)
    when Maven is missing or cannot get them."""
    if not shutil.which("mvn") or not shutil.which("java"):
        return None, "Java 17 and Maven are needed"
    cached = CACHE_DIR / f"classpath-{_digest(pom.read_bytes())}.txt"
    with cache_lock():
        if cached.exists():
            classpath = cached.read_text().strip()
            if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
                return classpath, None
        output = cached.with_suffix(f".{os.getpid()}.tmp")
        try:
            done = subprocess.run(["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                                   f"-Dmdep.outputFile={output}"], capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, (f"Maven did not resolve {pom} within {timeout} s "
                          "(Maven Central unreachable?)")
        if done.returncode != 0 or not output.exists():
            return None, (f"Maven could not resolve {pom} (Maven Central unreachable?): "
                          + done.stdout.decode(errors="replace")[-300:])
        os.replace(output, cached)
        return cached.read_text().strip(), None


def maven_classpath(pom, timeout, what):
    """resolve_classpath, or a skip of the test (as when Maven cannot reach Maven Central)."""
    classpath, why = resolve_classpath(pom, timeout)
    if classpath is None:
        pytest.skip(f"{what}: {why}")
    return classpath


def compile_java(*programs):
    """Compiles java/<program>.java for each program against kafka-clients (a skip without
    Java or Maven); returns the classpath to run them with. The classes are compiled once for
    each content of the sources (and classpath) and shared by every test."""
    if not shutil.which("javac"):
        pytest.skip("Java 17 and Maven are needed for the Java client test")
    classpath = maven_classpath(CLIENTS_POM, 240, "the Java client test")
    sources = [JAVA_DIR / f"{program}.java" for program in programs]
    javac = os.path.realpath(shutil.which("javac"))
    key = _digest(javac, classpath, *(part for source in sources
                                      for part in (source.name, source.read_bytes())))
    classes = CACHE_DIR / f"classes-{key}"
    with cache_lock():
        if not classes.is_dir():
            building = classes.with_name(f"{classes.name}.{os.getpid()}.tmp")
            shutil.rmtree(building, ignore_errors=True)
            subprocess.run(["javac", "-d", str(building), "-cp", classpath,
                            *(str(source) for source in sources)], check=True, timeout=120)
            os.rename(building, classes)
    return f"{classes}{os.pathsep}{classpath}"

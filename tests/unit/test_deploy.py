"""Consistency of the cluster deployment files (no Docker engine or Kubernetes cluster here):
every file parses; versions and image tags agree with pyproject.toml, pom-deps.txt and the
local stack; every path, volume, ConfigMap, Secret key and setting a file names exists; the
Flink options the job relies on are the same on the local stack, in docker-compose and on
Kubernetes; and the image installs with the local setup's own scripts."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from common.settings import ENV_PREFIX, REPO_ROOT, Settings, duration_seconds
from deploy import flink_run
from deploy.local.stack import PROMETHEUS_REPORTER

DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker" / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "k8s"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
IMAGE_HOME = "/opt/anomaly"  # where the Dockerfile puts the project

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PINS = dict(d.split("==") for d in PYPROJECT["project"]["dependencies"])
FLINK_VERSION = PINS["apache-flink"]
PROJECT_IMAGE = f"flink-anomaly:{PYPROJECT['project']['version']}"
SETTING_VARIABLES = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomize-config.yaml":  # kustomize's own, not a resource
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s_kind(kind: str) -> list[dict]:
    return [d for d in k8s_documents() if d.get("kind") == kind]


def flink_deployment() -> dict:
    (fd,) = k8s_kind("FlinkDeployment")
    return fd


def pod_specs() -> list[dict]:
    """Every pod spec of the Kubernetes manifests (workloads, jobs, the Flink pod template)."""
    specs = []
    for fd in k8s_kind("FlinkDeployment"):
        specs.append(fd["spec"]["podTemplate"]["spec"])
        specs += [
            fd["spec"][role]["podTemplate"]["spec"]
            for role in ("jobManager", "taskManager")
            if "podTemplate" in fd["spec"][role]
        ]
    for d in k8s_documents():
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "CronJob":
            specs.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


def containers(spec: dict) -> list[dict]:
    """A pod spec's containers, init containers included."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def made_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, as deploy/k8s/make-secrets.sh creates them."""
    text = (K8S / "make-secrets.sh").read_text()
    return {
        name: set(keys.split())
        for name, keys in re.findall(r"^make_secret ([a-z-]+) ([A-Z_ ]+)$", text, re.M)
    }


def secret_names(container: dict) -> set[str]:
    """The Secrets a container reads (whole, or key by key)."""
    names = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            names.add(ref["name"])
    return names


def compose_flink_properties() -> dict[str, str]:
    text = compose()["x-flink-properties"]["FLINK_PROPERTIES"]
    props = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            props[key.strip()] = value.strip()
    return props


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def local_flink_conf() -> dict[str, object]:
    return flatten(yaml.safe_load((DEPLOY / "local" / "flink-config.yaml").read_text()))


def make_env_keys() -> set[str]:
    return set(re.findall(r'echo "([A-Z_]+)=', (DEPLOY / "docker" / "make-env.sh").read_text()))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- every file parses ----------------------------------------------------------------------


def test_every_deploy_file_parses():
    yaml_files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    assert len(yaml_files) >= 15
    for path in yaml_files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(docs), f"{path} is empty"
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())
    for path in DEPLOY.rglob("*.sh"):
        subprocess.run(["bash", "-n", str(path)], check=True)
    instructions = dockerfile_instructions()
    known = {"FROM", "RUN", "COPY", "ENV", "WORKDIR", "USER", "ARG", "EXPOSE", "ENTRYPOINT"}
    assert {word for word, _ in instructions} <= known, instructions
    for doc in k8s_documents():
        meta = doc["metadata"]
        assert (
            doc.get("apiVersion")
            and doc.get("kind")
            and (meta.get("name") or meta.get("generateName"))
        ), doc


# --- versions -------------------------------------------------------------------------------


def test_images_match_the_pinned_versions():
    froms = [args.split()[0] for word, args in dockerfile_instructions() if word == "FROM"]
    assert froms[-1] == f"flink:{FLINK_VERSION}-scala_2.12-java17", froms
    # Kafka: the broker version the local stack runs.
    pom = ET.parse(DEPLOY / "local" / "kafka-broker-pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    kafka = next(
        d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind(".//m:dependency", ns)
        if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13"
    )
    images = {name: svc["image"] for name, svc in compose()["services"].items()}
    assert images["kafka"] == f"apache/kafka:{kafka}"
    # TimescaleDB: at least the PostgreSQL major Grafana's data source is told about (the
    # local stack's), and one TimescaleDB still builds images for (17; 15 was dropped in 2026).
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "anomaly.yaml").read_text()
    )
    pg_floor = datasource["datasources"][0]["jsonData"]["postgresVersion"] // 100
    tag = re.fullmatch(r"timescale/timescaledb:2\.\d+\.\d+-pg(\d+)", images["timescaledb"])
    assert tag and int(tag[1]) >= max(pg_floor, 17), images["timescaledb"]
    # The project's own image carries the project's version.
    for name in ("init", "jobmanager", "taskmanager", "submitter", "simulator", "api", "notifier"):
        assert images[name] == PROJECT_IMAGE, name
    # Kubernetes runs the same images as docker-compose.
    k8s_images = {c["image"] for spec in pod_specs() for c in containers(spec) if "image" in c}
    k8s_images.add(flink_deployment()["spec"]["image"])
    same = {
        images[n] for n in ("kafka", "timescaledb", "grafana", "prometheus", "alertmanager", "init")
    }
    assert k8s_images == same, k8s_images ^ same
    kustomized = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    assert kustomized == [{"name": "flink-anomaly", "newTag": PYPROJECT["project"]["version"]}]


def test_flink_deployment_matches_the_flink_version_and_the_job():
    spec = flink_deployment()["spec"]
    major, minor, _ = FLINK_VERSION.split(".")
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    job = spec["job"]
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{FLINK_VERSION}.jar"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    script = job["args"][job["args"].index("-py") + 1]
    assert script == f"{IMAGE_HOME}/{flink_run.JOB_SCRIPT.relative_to(REPO_ROOT)}"
    settings = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    # The job sets parallelism.default from its settings: both must say the same.
    assert int(settings["ANOMALY_PARALLELISM"]) == job["parallelism"]
    assert job["upgradeMode"] == "savepoint"
    # flinkConfiguration values are strings (the CRD's type).
    assert all(isinstance(v, str) for v in spec["flinkConfiguration"].values())


def test_connector_jars_come_from_pom_deps_in_the_image_and_locally():
    copies = [a for w, a in dockerfile_instructions() if w == "COPY"]
    runs = " ".join(a for w, a in dockerfile_instructions() if w == "RUN")
    assert "pom-deps.txt ./" in copies
    assert "deploy/fetch-jars.sh /jars" in runs
    assert "cp .deps/jars/*.jar /opt/flink/lib/" in runs
    setup = (DEPLOY / "local" / "setup.sh").read_text()
    assert "deploy/fetch-jars.sh .deps/jars" in setup
    assert "dependency:copy -Dartifact" not in setup  # one way to fetch them: the script


def test_the_image_installs_python_with_the_local_setup_script_and_pins():
    runs = [a for w, a in dockerfile_instructions() if w == "RUN"]
    assert any("PYTHON=/usr/bin/python3.11 deploy/install-python.sh .venv" in r for r in runs)
    setup = (DEPLOY / "local" / "setup.sh").read_text()
    assert "deploy/install-python.sh .venv dev" in setup
    assert "pip install" not in setup  # the script is the one place that installs
    script = (DEPLOY / "install-python.sh").read_text()
    assert "-c constraints.txt" in script
    # Python: the minor version pyproject requires, in the image too.
    assert PYPROJECT["project"]["requires-python"] == "==3.11.*"
    assert any("python3.11 python3.11-venv" in r for r in runs)
    # The image's project folder holds what the job, init and training need, and no more
    # than the build context offers.
    copies = [
        a.split()[0] for w, a in dockerfile_instructions() if w == "COPY" and "--from" not in a
    ]
    for source in copies:
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    for package in (*flink_run.SHIPPED_PACKAGES, *flink_run.SHIPPED_DATA, "training"):
        assert f"{package}/" in copies, package
    env = " ".join(a for w, a in dockerfile_instructions() if w == "ENV")
    assert f"ANOMALY_MODELS_DIR={IMAGE_HOME}/models" in env
    assert f"PYFLINK_CLIENT_EXECUTABLE={IMAGE_HOME}/.venv/bin/python" in env
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".deps", ".state", "models"} <= set(ignore)


# --- the Flink options the job relies on ------------------------------------------------------


def test_flink_options_agree_between_local_compose_and_kubernetes():
    local = local_flink_conf()
    composed = compose_flink_properties()
    k8s = flink_deployment()["spec"]["flinkConfiguration"]
    same_everywhere = (
        "classloader.parent-first-patterns.additional",
        "metrics.reporter.prom.factory.class",
    )
    local.update({f"metrics.reporter.prom.{k}": v for k, v in flatten(PROMETHEUS_REPORTER).items()})
    for key in same_everywhere:
        assert str(local[key]) == composed[key] == k8s[key], key
    # Flink picks the first free port of the local range; the clusters use its first port.
    port = str(local["metrics.reporter.prom.port"]).split("-")[0]
    assert composed["metrics.reporter.prom.port"] == k8s["metrics.reporter.prom.port"] == port
    # Every JVM in UTC; the TaskManagers with the same JVM options everywhere.
    assert (
        str(local["env.java.opts.all"])
        == composed["env.java.opts.all"]
        == k8s["env.java.opts.all"]
        == "-Duser.timezone=UTC"
    )
    assert (
        local["env.java.opts.taskmanager"]
        == composed["env.java.opts.taskmanager"]
        == k8s["env.java.opts.taskmanager"]
        == "-XX:G1HeapRegionSize=8m"
    )
    for props in (composed, k8s):
        assert "env.java.opts.jobmanager" not in props
        assert props["python.executable"] == f"{IMAGE_HOME}/.venv/bin/python"
    # The image's entrypoint deletes every blank of a FLINK_PROPERTIES line.
    assert not any(re.search(r"\s", v) for v in composed.values()), composed


def test_prometheus_scrapes_the_reporter_port():
    port = int(compose_flink_properties()["metrics.reporter.prom.port"])
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prom["scrape_configs"]
        for c in job.get("static_configs", [])
        for t in c["targets"]
    }
    assert targets == {f"jobmanager:{port}"}
    (dns,) = [c for job in prom["scrape_configs"] for c in job.get("dns_sd_configs", [])]
    assert dns["names"] == ["taskmanager"] and dns["port"] == port
    annotations = flink_deployment()["spec"]["podTemplate"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    k8s_prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-k8s.yml").read_text())
    assert k8s_prom["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"


# --- docker-compose: references ---------------------------------------------------------------


def test_compose_references_resolve():
    doc = compose()
    services = doc["services"]
    volumes = set(doc["volumes"])
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health check"
            if cond["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", dep
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        if "build" in svc:
            context = COMPOSE_FILE.parent / svc["build"]["context"]
            assert context.resolve() == REPO_ROOT
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    # The job's chain of start-up: stores healthy -> init done -> job submitted.
    assert services["submitter"]["depends_on"]["init"]["condition"] == (
        "service_completed_successfully"
    )
    assert set(services["init"]["depends_on"]) == {"kafka", "timescaledb"}


def test_compose_variables_and_settings_exist():
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required and required <= make_env_keys(), required - make_env_keys()
    env = compose()["x-anomaly-env"]
    unknown = set(env) - SETTING_VARIABLES
    assert not unknown, f"not settings (common/settings.py): {unknown}"
    # Containers reach each other by service name, not the local stack's 127.0.0.1.
    assert env["ANOMALY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["ANOMALY_PG_HOST"] == "timescaledb"
    assert env["ANOMALY_FLINK_REST_URL"] == "http://jobmanager:8081"
    # Every container that reads the models folder mounts the same volume at the image's path.
    for name in ("init", "jobmanager", "taskmanager", "submitter"):
        assert f"models:{IMAGE_HOME}/models" in compose()["services"][name]["volumes"], name
    grafana = compose()["services"]["grafana"]["environment"]
    provisioning = " ".join(
        p.read_text() for p in (DEPLOY / "grafana" / "provisioning").rglob("*.yaml")
    )
    for variable in re.findall(r"\$\{([A-Z_]+)\}", provisioning):
        assert variable in grafana, f"Grafana's provisioning reads {variable}; compose sets none"
    for key in grafana:
        if key.startswith(ENV_PREFIX):
            assert key in SETTING_VARIABLES or key == "ANOMALY_PROMETHEUS_URL", key


def test_compose_commands_name_real_modules_and_options():
    services = compose()["services"]
    for name in ("init", "submitter", "simulator", "notifier"):
        cmd = services[name]["command"]
        assert cmd[:2] == ["python", "-m"], name
        module = cmd[2]
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO_ROOT
        )
        assert proc.returncode == 0, f"{name}: python -m {module} --help: {proc.stderr}"
        for option in (a for a in cmd[3:] if a.startswith("--")):
            assert option in proc.stdout, f"{name}: {module} has no option {option}"
    # The notifier's subcommand is one of its choices ({run,once,status}).
    proc = subprocess.run(
        [sys.executable, "-m", "alerting.notifier", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    choices = re.search(r"\{([a-z,]+)\}", proc.stdout)[1].split(",")
    assert services["notifier"]["command"][3:] == ["run"] and "run" in choices


# --- Kubernetes: references -------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_file():
    kustom = yaml.safe_load(KUSTOMIZATION.read_text())
    resources = set(kustom["resources"])
    on_disk = {
        p.relative_to(DEPLOY).as_posix()
        for p in K8S.glob("*.yaml")
        if p.name not in ("retrain-job.yaml", "retrain-cronjob.yaml", "kustomize-config.yaml")
    }
    assert resources == on_disk
    for path in kustom["configurations"]:
        assert (DEPLOY / path).is_file()
    generated = {}
    for cm in kustom["configMapGenerator"]:
        files = [f.split("=")[-1] for f in cm["files"]]
        for f in files:
            assert (DEPLOY / f).is_file(), f"{cm['name']}: {f} does not exist"
        generated[cm["name"]] = files
    # Grafana gets every dashboard the repository has, no stale one.
    dashboards = sorted(
        p.relative_to(DEPLOY).as_posix() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")
    )
    assert sorted(generated["grafana-dashboards"]) == dashboards
    # Alertmanager's configuration is the example file docker-compose mounts and the local
    # stack renders (deploy/alertmanager/alertmanager.yml), under the name its pod reads.
    assert generated["alertmanager-config"] == ["alertmanager/alertmanager.yml"]
    # Every ConfigMap, PVC and Secret a pod names is defined (the Secret by the README's command).
    config_maps = set(generated) | {d["metadata"]["name"] for d in k8s_kind("ConfigMap")}
    claims = {d["metadata"]["name"] for d in k8s_kind("PersistentVolumeClaim")}
    secret_keys = make_env_keys()
    k8s_secrets = made_secrets()
    for spec in pod_specs():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
        for container in containers(spec):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in k8s_secrets, source
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in k8s_secrets.get(ref["name"], ()), ref
    # make-secrets.sh makes the Secrets the pods name, with the keys compose's .env holds.
    assert {key for keys in k8s_secrets.values() for key in keys} == secret_keys


def test_kubernetes_settings_and_names_resolve():
    settings = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    assert set(settings) <= SETTING_VARIABLES, set(settings) - SETTING_VARIABLES
    Settings.from_env(settings)  # the values are valid settings, too
    services = {d["metadata"]["name"] for d in k8s_kind("Service")}
    host = settings["ANOMALY_PG_HOST"]
    assert host in services
    broker = settings["ANOMALY_KAFKA_BOOTSTRAP"]
    assert re.fullmatch(r"kafka-0\.kafka:9092", broker) and "kafka" in services
    # The operator names the JobManager's REST service <deployment>-rest.
    name = flink_deployment()["metadata"]["name"]
    assert settings["ANOMALY_FLINK_REST_URL"] == f"http://{name}-rest:8081"
    models = settings["ANOMALY_MODELS_DIR"]
    checkpoints = settings["ANOMALY_CHECKPOINT_DIR"].removeprefix("file://")
    mounts = {
        m["mountPath"]
        for c in flink_deployment()["spec"]["podTemplate"]["spec"]["containers"]
        for m in c["volumeMounts"]
    }
    assert models in mounts
    assert any(checkpoints.startswith(m + "/") for m in mounts), checkpoints
    for doc in k8s_kind("StatefulSet"):
        assert doc["spec"]["serviceName"] in services


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_whole_deployment():
    proc = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"FlinkDeployment", "StatefulSet", "Deployment", "ConfigMap"} <= kinds
    assert all(
        d["metadata"].get("namespace") == "anomaly" for d in docs if d["kind"] != "Namespace"
    )
    (fd,) = [d for d in docs if d["kind"] == "FlinkDeployment"]
    assert fd["spec"]["image"] == PROJECT_IMAGE
    # The generated ConfigMaps carry the repository's files as they are.
    (dashboards,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("grafana-dashboards")
    ]
    job_health = DEPLOY / "grafana" / "dashboards" / "anomaly-job-health.json"
    assert dashboards["data"]["anomaly-job-health.json"] == job_health.read_text()
    # Alertmanager's configuration: the example file as it is, under the generated (hashed)
    # name its StatefulSet mounts, so that a changed file rolls the pod.
    (am_config,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("alertmanager-config-")
    ]
    example = DEPLOY / "alertmanager" / "alertmanager.yml"
    assert am_config["data"] == {"alertmanager.yml": example.read_text()}
    (am,) = [
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "alertmanager"
    ]
    volumes = am["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": am_config["metadata"]["name"]}} in volumes
    (notifier,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "notifier"
    ]
    (container,) = notifier["spec"]["template"]["spec"]["containers"]
    assert container["image"] == PROJECT_IMAGE
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert "alertmanager" in services


# --- the remote submission script ---------------------------------------------------------------


def test_flink_run_command_lines(tmp_path):
    image = flink_run.Submission(
        jobmanager="http://flink.example.net:8081/",
        parallelism=2,
        python_exec="/opt/anomaly/.venv/bin/python",
        job_args=["--bounded"],
        flink_bin=Path("/opt/flink/bin/flink"),
    )
    cmd = image.command()
    assert cmd[:4] == ["/opt/flink/bin/flink", "run", "--detached", "--jobmanager"]
    assert cmd[4] == "flink.example.net:8081"
    assert cmd[cmd.index("--parallelism") + 1] == "2"
    assert cmd[cmd.index("-pyexec") + 1] == "/opt/anomaly/.venv/bin/python"
    assert "-pyfs" not in cmd and "-pyarch" not in cmd
    assert cmd[-2:] == [str(flink_run.JOB_SCRIPT), "--bounded"]
    shipped = dataclasses.replace(image, ship=True, model_dir=Path("/m/v1"), from_savepoint="s3")
    cmd = shipped.command(tmp_path)
    assert cmd[cmd.index("-pyfs") + 1] == str(tmp_path / "project.zip")
    assert cmd[cmd.index("-pyarch") + 1] == f"{tmp_path / 'model.zip'}#anomaly_model"
    assert cmd[cmd.index("--fromSavepoint") + 1] == "s3"
    tail = cmd[cmd.index("--python") + 1 :]
    assert tail == [
        str(flink_run.JOB_SCRIPT),
        "--bounded",
        "--shipped-model",
        "anomaly_model",
        "--model-dir",
        "/m/v1",
    ]
    with pytest.raises(ValueError, match="staging"):
        shipped.command(None)


def test_flink_run_archives_hold_the_code_and_the_model(tmp_path):
    import zipfile

    project = flink_run.stage_project(tmp_path)
    names = set(zipfile.ZipFile(project).namelist())
    for module in ("udfs/onnx_scorer.py", "common/settings.py", "jobs/score_telemetry.py"):
        assert module in names
    assert "sql/flink/window_features.sql" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    model = tmp_path / "v1"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    (model / "card.json").write_text("{}")
    archive = flink_run.stage_model(model, tmp_path)
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["card.json", "model.onnx"]


# --- the defects found by reading the cluster files, each held here -------------------------


def test_the_operator_accepts_the_upgrade_mode():
    """The operator's validator (DefaultValidator.validateJobSpec) refuses savepoint and
    last-state upgrades without a checkpoint folder, and savepoint upgrades without a savepoint
    folder; the job's own checkpoint setting names the same folder."""
    fd = flink_deployment()["spec"]
    conf = fd["flinkConfiguration"]
    mode = fd["job"]["upgradeMode"]

    def folder(key: str, legacy: str) -> str:
        return str(conf.get(key) or conf.get(legacy) or "").strip()

    if mode != "stateless":
        assert folder("execution.checkpointing.dir", "state.checkpoints.dir"), mode
    if mode == "savepoint":
        assert folder("execution.checkpointing.savepoint-dir", "state.savepoints.dir"), mode
    settings = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    assert settings["ANOMALY_CHECKPOINT_DIR"] == conf["execution.checkpointing.dir"]
    # Compose (a session cluster): the savepoint folder under Flink 2's key, on a volume.
    composed = compose_flink_properties()
    savepoints = composed["execution.checkpointing.savepoint-dir"].removeprefix("file://")
    mounts = [v.split(":")[1] for v in compose()["services"]["jobmanager"]["volumes"]]
    assert savepoints in mounts, (savepoints, mounts)


def test_stateful_data_lives_in_a_folder_of_its_volume_writable_by_the_image_user():
    """A block volume's root holds lost+found and belongs to root: Kafka (uid 1000) and
    PostgreSQL get a folder below their mount, and Kafka's pod makes the volume its group's.
    The same folders in docker-compose."""

    def below_a_mount(path: str, mounts: list[str]) -> bool:
        return any(path.startswith(m.rstrip("/") + "/") for m in mounts)

    (kafka,) = [d for d in k8s_kind("StatefulSet") if d["metadata"]["name"] == "kafka"]
    pod = kafka["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for log_dir in env["KAFKA_LOG_DIRS"].split(","):
        assert below_a_mount(log_dir, mounts), (log_dir, mounts)
    security = pod["securityContext"]
    assert security["fsGroup"] == security["runAsUser"] == security["runAsGroup"] == 1000
    (pg,) = [d for d in k8s_kind("StatefulSet") if d["metadata"]["name"] == "timescaledb"]
    (container,) = pg["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert below_a_mount(env["PGDATA"], mounts), (env["PGDATA"], mounts)
    # Every claim template is mounted by its StatefulSet's container (no data left in the
    # container's own filesystem).
    for sts in k8s_kind("StatefulSet"):
        names = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
        used = {
            m["name"]
            for c in sts["spec"]["template"]["spec"]["containers"]
            for m in c.get("volumeMounts", [])
        }
        assert names <= used, sts["metadata"]["name"]
    services = compose()["services"]
    for name, variable in (("kafka", "KAFKA_LOG_DIRS"), ("timescaledb", "PGDATA")):
        mounts = [v.split(":")[1] for v in services[name]["volumes"]]
        for folder in str(services[name]["environment"][variable]).split(","):
            assert below_a_mount(folder, mounts), (name, folder, mounts)


def test_the_job_starts_only_once_the_first_model_exists(tmp_path):
    """The job's Python client needs a model (resolve_model_dir). On Kubernetes the JobManager
    pod's init container waits, bounded, until resolve_model_dir would find one on the models
    volume, which the preparation step trains; in compose the submitter waits for `init` to
    complete. The wait script runs here against a models folder of the test's own."""
    from common.models import resolve_model_dir

    settings = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    models = settings["ANOMALY_MODELS_DIR"]
    jm = flink_deployment()["spec"]["jobManager"]["podTemplate"]["spec"]
    (wait,) = jm["initContainers"]
    assert wait["command"][:2] == ["sh", "-c"]
    script = wait["command"][2]
    assert re.search(r"seq \d+", script) and "exit 1" in script, "the wait is bounded"
    assert models in {m["mountPath"] for m in wait["volumeMounts"]}
    volumes = {v["name"]: v for v in flink_deployment()["spec"]["podTemplate"]["spec"]["volumes"]}
    (mount,) = [m for m in wait["volumeMounts"] if m["mountPath"] == models]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    # Quick: two rounds, no sleeping, the test's folder for the volume.
    quick = re.sub(r"seq \d+", "seq 2", script).replace("sleep 5", "true")
    quick = quick.replace(models, str(tmp_path))

    def waits_out() -> bool:
        proc = subprocess.run(["sh", "-c", quick], capture_output=True, text=True, timeout=30)
        assert proc.returncode in (0, 1), proc.stderr
        if proc.returncode:
            assert "no model" in proc.stderr, proc.stderr
        return proc.returncode == 0

    local = Settings.from_env({**settings, "ANOMALY_MODELS_DIR": str(tmp_path)})

    def resolvable() -> bool:
        try:
            resolve_model_dir(local)
        except FileNotFoundError:
            return False
        return True

    assert not waits_out() and not resolvable()  # an empty volume
    (tmp_path / "CURRENT").write_text("v1\n")
    assert not waits_out() and not resolvable()  # CURRENT names a version not there
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "model.onnx").write_bytes(b"onnx")
    assert waits_out() and resolvable()
    # Whoever trains that first model mounts the same claim at the same path.
    (api,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "anomaly-api"]
    pod = api["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "--train-if-missing" in init["command"]
    (mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == models]
    api_volumes = {v["name"]: v for v in pod["volumes"]}
    assert api_volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    services = compose()["services"]
    assert services["submitter"]["depends_on"]["init"] == {
        "condition": "service_completed_successfully"
    }
    assert "--train-if-missing" in services["init"]["command"]


def test_the_jobmanager_has_room_for_the_python_client():
    """The job's Python client runs in the JobManager pod beside the JVM, outside Flink's
    memory budget (jobmanager.memory.process.size, the resource's memory): the container's
    limit (memory x kubernetes.jobmanager.memory.limit-factor) leaves it room."""
    spec = flink_deployment()["spec"]
    resource = spec["jobManager"]["resource"]
    memory_mib = int(re.fullmatch(r"(\d+)m", resource["memory"])[1])
    factor = float(spec["flinkConfiguration"].get("kubernetes.jobmanager.memory.limit-factor", 1))
    assert memory_mib >= 2048, resource
    assert memory_mib * (factor - 1) >= 512, "no room beside the JVM for the Python client"
    assert float(resource["cpu"]) >= 2, resource


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_a_new_image_tag_applies_again(tmp_path):
    """The README's upgrade: a new tag, `kubectl apply -k` again. A Job's pod template is
    immutable (the apply would fail), so nothing applied is a Job, and the new tag reaches
    every pod of the project's image, the preparation step included."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [base],
                "images": [
                    {
                        "name": "flink-anomaly",
                        "newName": "registry.example.com:5000/flink-anomaly",
                        "newTag": "9.9.9",
                    }
                ],
            }
        )
    )
    for target in (DEPLOY, overlay):
        proc = subprocess.run(
            ["kubectl", "kustomize", str(target)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Job"]
    ours = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        for c in containers(d["spec"]["template"]["spec"])
        if "flink-anomaly" in c["image"]
    }
    (fd,) = [d for d in docs if d["kind"] == "FlinkDeployment"]
    ours |= {c["image"] for c in containers(fd["spec"]["jobManager"]["podTemplate"]["spec"])}
    ours.add(fd["spec"]["image"])
    assert ours == {"registry.example.com:5000/flink-anomaly:9.9.9"}, ours


def test_compose_publishes_every_port_on_loopback_only():
    """Flink's REST API runs uploaded jars, Kafka has no authentication, PostgreSQL's port
    reaches the superuser: none is published beyond the Docker host's loopback."""
    published = [
        (name, port) for name, svc in compose()["services"].items() for port in svc.get("ports", [])
    ]
    assert published
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
        assert port.count(":") == 2, (name, port)


# Which Secrets each container may read, by (workload, container): the least each one needs.
K8S_SECRETS_NEEDED = {
    # Every Flink pod (JobManager, TaskManagers): the job writes, as the writer.
    ("anomaly-scoring", "flink-main-container"): {"anomaly-db-writer"},
    ("anomaly-scoring", "wait-for-model"): set(),
    # The preparation step: the owner creates the writer and reader roles with their passwords.
    ("anomaly-api", "init"): {"anomaly-db-owner", "anomaly-db-writer", "anomaly-db-reader"},
    ("anomaly-api", "api"): {"anomaly-db-reader", "anomaly-db-writer", "anomaly-api"},
    ("timescaledb", "timescaledb"): {"anomaly-db-owner"},
    ("grafana", "grafana"): {"anomaly-db-reader", "grafana-admin"},
    ("kafka", "kafka"): set(),
    ("simulator", "simulator"): set(),
    ("prometheus", "prometheus"): set(),
    # The notifier records what Alertmanager accepted, as the writer.
    ("notifier", "notifier"): {"anomaly-db-writer"},
    ("alertmanager", "alertmanager"): set(),
}
COMPOSE_PASSWORDS_NEEDED = {
    "jobmanager": set(),
    "taskmanager": set(),
    "submitter": {"ANOMALY_PG_WRITER_PASSWORD"},
    "simulator": set(),
    "init": {"ANOMALY_PG_PASSWORD", "ANOMALY_PG_WRITER_PASSWORD", "ANOMALY_PG_READER_PASSWORD"},
    "api": {
        "ANOMALY_PG_READER_PASSWORD",
        "ANOMALY_PG_WRITER_PASSWORD",
        "ANOMALY_API_TOKEN",
        "ANOMALY_API_ADMIN_TOKEN",
    },
    "timescaledb": {"ANOMALY_PG_PASSWORD"},
    "grafana": {"ANOMALY_PG_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD"},
    "kafka": set(),
    "prometheus": set(),
    "notifier": {"ANOMALY_PG_WRITER_PASSWORD"},
    "alertmanager": set(),
}
# The passwords that open everything: the schema owner (PostgreSQL's superuser in the
# TimescaleDB image) and Grafana's admin.
MASTER_KEYS = {"ANOMALY_PG_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}


def k8s_containers() -> dict[tuple[str, str], dict]:
    """(workload, container) -> container, init containers and the Flink pod templates
    (common, JobManager, TaskManager; the operator merges them by container name) included."""
    out: dict[tuple[str, str], dict] = {}
    for fd in k8s_kind("FlinkDeployment"):
        specs = [fd["spec"]["podTemplate"]["spec"]] + [
            fd["spec"][role]["podTemplate"]["spec"]
            for role in ("jobManager", "taskManager")
            if "podTemplate" in fd["spec"][role]
        ]
        for spec in specs:
            for c in containers(spec):
                merged = out.setdefault((fd["metadata"]["name"], c["name"]), {})
                for field in ("env", "envFrom"):
                    merged.setdefault(field, []).extend(c.get(field, []))
    for d in k8s_documents():
        if d["kind"] in ("Deployment", "StatefulSet"):
            for c in containers(d["spec"]["template"]["spec"]):
                out[(d["metadata"]["name"], c["name"])] = c
    return out


def secret_keys_reached(container: dict) -> set[str]:
    """The Secret keys a container's environment holds (a whole Secret brings all its keys)."""
    made = made_secrets()
    keys = {
        key
        for s in container.get("envFrom", [])
        if "secretRef" in s
        for key in made[s["secretRef"]["name"]]
    }
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            keys.add(ref["key"])
    return keys


def test_each_pod_gets_only_the_secrets_it_needs():
    """The Flink pods (JobManager and TaskManagers, which run user code) get the writer's
    password only, and the API the reader's and its tokens: neither the owner's, nor Grafana's
    admin. The owner's password reaches only TimescaleDB and the preparation step."""
    got = {key: secret_names(c) for key, c in k8s_containers().items()}
    assert got == K8S_SECRETS_NEEDED
    for (workload, name), container in k8s_containers().items():
        if workload == "anomaly-scoring" or (workload, name) == ("anomaly-api", "api"):
            reached = secret_keys_reached(container)
            assert not reached & MASTER_KEYS, (workload, name, reached)
            if workload == "anomaly-scoring":
                assert reached <= {"ANOMALY_PG_WRITER_PASSWORD"}, (name, reached)
    notifier = k8s_containers()[("notifier", "notifier")]
    assert secret_keys_reached(notifier) == {"ANOMALY_PG_WRITER_PASSWORD"}
    # In compose, a password reaches a container only as an ${...} of its environment.
    for name, svc in compose()["services"].items():
        text = yaml.safe_dump(svc.get("environment", {}))
        passwords = set(re.findall(r"\$\{([A-Z_]+):\?", text))
        assert passwords == COMPOSE_PASSWORDS_NEEDED[name], name
        assert "env_file" not in svc, name  # a whole .env would bring every password
    for name in ("jobmanager", "taskmanager", "submitter", "api", "notifier"):
        assert not COMPOSE_PASSWORDS_NEEDED[name] & MASTER_KEYS, name


def test_the_api_runs_on_the_cluster_with_its_tokens():
    """Off loopback the API needs its tokens (it refuses to start without): both deployments
    hand them over from a secret, and serve on every address of the container."""
    api = compose()["services"]["api"]
    assert api["command"][:3] == ["python", "-m", "query.api"]
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    tokens = {"ANOMALY_API_TOKEN", "ANOMALY_API_ADMIN_TOKEN"}
    for key in tokens:
        assert api["environment"][key].startswith("${" + key + ":?"), key
    assert tokens <= make_env_keys()  # make-env.sh generates them with the passwords
    assert not set(api["environment"]) & MASTER_KEYS
    assert "127.0.0.1:8000:8000" in api["ports"]
    (deployment,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "anomaly-api"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "query.api"]
    assert container["command"][container["command"].index("--host") + 1] == "0.0.0.0"
    assert made_secrets()["anomaly-api"] == tokens
    # Both tokens from a Secret; of the database, the reader's (queries) and the writer's (a
    # retraining records its version) passwords, never the owner's.
    reached = secret_keys_reached(container)
    assert reached == tokens | {"ANOMALY_PG_READER_PASSWORD", "ANOMALY_PG_WRITER_PASSWORD"}
    assert not any("value" in v for v in container.get("env", []) if v["name"] in tokens)
    (service,) = [d for d in k8s_kind("Service") if d["metadata"]["name"] == "anomaly-api"]
    assert service["spec"]["ports"][0]["port"] == container["ports"][0]["containerPort"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_retraining_job_and_its_schedule_run_the_checked_retraining():
    """retrain-job.yaml (on demand) and retrain-cronjob.yaml (weekly) run `python -m
    query.retrain` (POST /retrain's checks: a refused candidate never becomes CURRENT) with
    options it has, once a run, with the reader's and the writer's passwords only, and write
    into the models volume where the settings say the models are."""
    (job,) = k8s_kind("Job")
    (cron,) = k8s_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    proc = subprocess.run(
        [sys.executable, "-m", "query.retrain", "--help"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    settings = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    for spec in (job["spec"], cron["spec"]["jobTemplate"]["spec"]):
        assert spec["backoffLimit"] == 0  # a refused candidate is not tried again
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        command = container["command"]
        assert command[:3] == ["python", "-m", "query.retrain"], command
        for option in (a for a in command[3:] if a.startswith("--")):
            assert option in proc.stdout, option
        duration_seconds(command[command.index("--since") + 1])
        assert secret_keys_reached(container) == {
            "ANOMALY_PG_READER_PASSWORD",
            "ANOMALY_PG_WRITER_PASSWORD",
        }
        (mount,) = container["volumeMounts"]
        assert mount["mountPath"] == settings["ANOMALY_MODELS_DIR"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == "anomaly-models"


def alertmanager_flags(args: list[str]) -> dict[str, str]:
    """--flag=value arguments of Alertmanager's command line, as a dict."""
    return dict(a.removeprefix("--").partition("=")[::2] for a in args)


def test_alertmanager_and_the_notifier_run_on_the_cluster():
    """Alertmanager (the example configuration, its data on a volume, one instance) and the
    notifier (the project's image, the writer's password only, Alertmanager by its service
    name) in both deployments, alike."""
    services = compose()["services"]
    # docker-compose: Alertmanager reads the example file, read-only, where its flags say,
    # keeps silences and the notification log in a named volume, on loopback only.
    am = services["alertmanager"]
    flags = alertmanager_flags(am["command"])
    assert flags["cluster.listen-address"] == ""  # one instance: no gossip port
    mounts = {m.split(":")[1]: m for m in am["volumes"]}
    config = mounts[flags["config.file"]]
    assert config == f"../alertmanager/alertmanager.yml:{flags['config.file']}:ro"
    assert (COMPOSE_FILE.parent / config.split(":")[0]).resolve() == (
        DEPLOY / "alertmanager" / "alertmanager.yml"
    )
    data = mounts[flags["storage.path"]].split(":")[0]
    assert data in compose()["volumes"], data
    assert am["ports"] == ["127.0.0.1:9093:9093"]
    assert am["restart"] == "unless-stopped"
    # The notifier: the project's settings, Alertmanager by service name, after `init`.
    notifier = services["notifier"]
    assert notifier["command"] == ["python", "-m", "alerting.notifier", "run"]
    assert notifier["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    assert "alertmanager" in notifier["depends_on"]
    assert notifier["restart"] == "unless-stopped"
    env = notifier["environment"]
    assert {k: v for k, v in env.items() if k in compose()["x-anomaly-env"]} == compose()[
        "x-anomaly-env"
    ]
    url = env["ANOMALY_ALERTMANAGER_URL"]
    assert url == "http://alertmanager:9093"
    assert am["ports"][0].endswith(":" + url.rsplit(":", 1)[1])  # the port it listens on
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= SETTING_VARIABLES
    plain = {k: str(v) for k, v in env.items() if not str(v).startswith("${")}
    assert Settings.from_env(plain).alertmanager_url == url
    assert "ports" not in notifier  # it listens on nothing
    # Kubernetes: the same image and flags, one replica, the configuration from the generated
    # ConfigMap at the --config.file path, the data on the claim template, not as root.
    (sts,) = [d for d in k8s_kind("StatefulSet") if d["metadata"]["name"] == "alertmanager"]
    assert sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == am["image"]
    assert alertmanager_flags(container["args"]) == flags
    k8s_mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, _, config_key = flags["config.file"].rpartition("/")
    assert volumes[k8s_mounts[config_dir]]["configMap"]["name"] == "alertmanager-config"
    assert config_key == "alertmanager.yml"  # the generated ConfigMap's key (the file's name)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert k8s_mounts[flags["storage.path"]] == claim["metadata"]["name"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["fsGroup"] == security["runAsGroup"]  # the fresh volume is writable
    assert {"requests", "limits"} <= set(container["resources"])
    (service,) = [d for d in k8s_kind("Service") if d["metadata"]["name"] == "alertmanager"]
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["port"] == port["containerPort"] == 9093
    # The notifier's Deployment: the compose command, the same Alertmanager address (the
    # Service's name and port), one pod at a time.
    (deployment,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == "notifier"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["image"] == PROJECT_IMAGE
    assert container["command"] == notifier["command"]
    assert {"configMapRef": {"name": "anomaly-settings"}} in container["envFrom"]
    k8s_env = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    assert k8s_env["ANOMALY_ALERTMANAGER_URL"] == url
    assert set(k8s_env) <= SETTING_VARIABLES
    assert {"requests", "limits"} <= set(container["resources"])
    # The example configuration is valid for Alertmanager (amtool, where installed).
    if shutil.which("amtool"):
        proc = subprocess.run(
            ["amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("prometheus-alertmanager") is None, reason="no local Alertmanager")
def test_alertmanager_image_matches_the_local_version():
    """The clusters run the Alertmanager version the local stack runs (and the suite tests
    the example configuration against)."""
    proc = subprocess.run(
        ["prometheus-alertmanager", "--version"], capture_output=True, text=True, check=False
    )
    local = re.search(r"version (\d+\.\d+\.\d+)", proc.stdout + proc.stderr)[1]
    assert compose()["services"]["alertmanager"]["image"] == f"prom/alertmanager:v{local}"


def test_the_shared_claims_can_be_given_a_read_write_many_class(tmp_path):
    """The shared claims need ReadWriteMany, which most default storage classes cannot give:
    the kustomization carries a commented patch naming a class for every claim it applies,
    and that patch, uncommented, is a valid JSON patch of exactly those claims."""
    claims = k8s_kind("PersistentVolumeClaim")
    assert claims
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], claim["metadata"]["name"]
        assert "storageClassName" not in claim["spec"]  # the kustomization's patch sets it
    lines = KUSTOMIZATION.read_text().splitlines()
    start = lines.index("# patches:")
    block = []
    for line in lines[start:]:
        if not line.startswith("# ") or (block and not line.startswith("#  ")):
            break
        block.append(line[2:])
    (patch,) = yaml.safe_load("\n".join(block))["patches"]
    assert patch["target"] == {"kind": "PersistentVolumeClaim"}
    ops = yaml.safe_load(patch["patch"])
    assert ops == [{"op": "add", "path": "/spec/storageClassName", "value": "nfs-client"}]
    if shutil.which("kubectl") is None:
        return
    # Uncommented, kustomize applies it to both shared claims (the StatefulSets' own claims
    # are templates, left to the default class).
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    text = "\n".join(
        line[2:] if start <= i < start + len(block) else line for i, line in enumerate(lines)
    )
    (copy / "kustomization.yaml").write_text(text + "\n")
    proc = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    classes = {
        d["metadata"]["name"]: d["spec"].get("storageClassName")
        for d in rendered
        if d["kind"] == "PersistentVolumeClaim"
    }
    assert classes == {c["metadata"]["name"]: "nfs-client" for c in claims}


def test_nothing_applied_is_an_immutable_job():
    """A Job's pod template is immutable: re-applying the kustomization with a new image tag
    would fail ("field is immutable"). The preparation step (deploy.init) runs as the init
    container of a Deployment instead, whose template rolls out."""
    applied = yaml.safe_load(KUSTOMIZATION.read_text())["resources"]
    kinds = {
        d["kind"] for path in applied for d in yaml.safe_load_all((DEPLOY / path).read_text()) if d
    }
    assert "Job" not in kinds and "CronJob" not in kinds, kinds
    runs_init = [
        (d["kind"], where, c["name"])
        for d in k8s_documents()
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
        for where in ("initContainers", "containers")
        for c in d["spec"]["template"]["spec"].get(where, [])
        if c.get("command", [])[:3] == ["python", "-m", "deploy.init"]
    ]
    assert runs_init == [("Deployment", "initContainers", "init")], runs_init


def test_a_savepoint_the_new_plan_cannot_take_is_named_with_the_way_on(tmp_path, monkeypatch):
    """`flink run` from a savepoint whose state the job's plan has no operator for: the error
    says so and how to go on, not the CLI's last lines."""
    from common.settings import Settings

    fake = tmp_path / "flink"
    fake.write_text(
        "#!/bin/sh\necho 'java.lang.IllegalStateException: Failed to rollback to checkpoint/"
        "savepoint file:/sp. Cannot map checkpoint/savepoint state for operator f82e to the "
        "new program'\necho 'Python process exits with code: 1'\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(flink_run, "jobs_overview", lambda jobmanager: [])
    settings = Settings.from_env().replace(state_dir=tmp_path / "state")
    submission = flink_run.Submission(
        jobmanager="127.0.0.1:1", from_savepoint="file:/sp", flink_bin=fake
    )
    with pytest.raises(flink_run.SubmitError) as exc:
        flink_run.submit(submission, settings)
    message = str(exc.value)
    assert "file:/sp holds state of an operator this job's plan does not have" in message
    assert "without -s" in message and "Python process" not in message
    without = dataclasses.replace(submission, from_savepoint=None)
    with pytest.raises(flink_run.SubmitError, match="exit 1"):
        flink_run.submit(without, settings)

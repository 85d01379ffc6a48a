# The front door. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: help setup demo demo-agent up stop status psql notifications migrate api grafana-check dashboards plot train retrain onboard replay evaluate-csv evaluate evaluate-simulator evaluate-all evaluate-correlation models submit upgrade rollback test test-unit multihost bench bench-simulator bench-format bench-onnx bench-udf bench-state bench-notifier bench-agents bench-reference lint format lock

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: ## install what is missing: apt packages, pinned Python packages, jars (idempotent)
	@deploy/local/setup.sh

demo: setup ## set up, start the local stack, train a first model, stream, submit the job
	@$(PY) -m deploy.local.stack demo

demo-agent: setup ## this host's collectd -> Kafka -> a second job (catalogue host), then a first model (AGENT_ARGS="--windows 64 --hostname h")
	@$(PY) -m deploy.local.stack demo-agent $(AGENT_ARGS)

up: setup ## start PostgreSQL, Kafka and the Flink cluster only
	@$(PY) -m deploy.local.stack up

stop: ## cancel the jobs, stop the simulator, collectd and every service (data stays in .state/)
	@if [ -x $(PY) ]; then $(PY) -m deploy.local.stack down; fi

status: ## what runs where
	@$(PY) -m deploy.local.stack status

psql: ## an SQL prompt on the results database of the local stack (SQL="SELECT ...": run that and exit)
	@cmd=$$($(PY) -m deploy.local.stack psql) && if [ -n "$$SQL" ]; then eval "$$cmd"' -c "$$SQL"'; else eval "$$cmd"; fi

notifications: ## what the local stack's Alertmanager delivered (its inbox stands in for the pager and the chat)
	@$(PY) -m alerting.inbox --show --file $${ANOMALY_STATE_DIR:-.state}/notifications.jsonl

migrate: setup ## apply pending database migrations and list every version (idempotent)
	@$(PY) -m common.db migrate

api: setup ## serve the HTTP API on http://127.0.0.1:8000 (OpenAPI at /docs)
	@$(PY) -m query.api $(API_ARGS)

grafana-check: ## run every Grafana panel's SQL against the database (last 6 h) and check its shape
	@$(PY) -m deploy.grafana.check $(CHECK_ARGS)

dashboards: ## regenerate deploy/grafana/dashboards/*.json from deploy/grafana/dashboards.py
	@$(PY) -m deploy.grafana.dashboards

plot: ## PNG of a device's metric: make plot PLOT_ARGS="--device dev-00003 --metric latency_ms --since 2h"
	@$(PY) -m query.plot $(PLOT_ARGS)

train: setup ## train a model and make it CURRENT: on a fresh simulator dump, or TRAIN_ARGS="--csv data/ --fraction 0.15"
	@if [ -n "$(TRAIN_ARGS)" ]; then $(PY) -m training.train $(TRAIN_ARGS); else $(PY) -m deploy.local.stack train; fi

retrain: setup ## retrain on the windows the job stored, promoted only if it passes POST /retrain's checks: make retrain RETRAIN_ARGS="--since 14d"
	@$(PY) -m query.retrain $(RETRAIN_ARGS)

onboard: setup ## a catalogue and a settings file for your CSVs: make onboard ONBOARD_ARGS="data/ --name shop --label-column label"
	@$(PY) -m training.onboard $(ONBOARD_ARGS)

replay: up ## stream CSVs into the events topic: make replay REPLAY_ARGS="data/ --label-column label"
	@$(PY) -m simulator.replay $(REPLAY_ARGS)

evaluate-csv: setup ## accuracy on your labelled CSVs beside two baselines: make evaluate-csv EVAL_ARGS="data/ --label-column label --train-fraction 0.15"
	@$(PY) -m training.evaluate csv $(EVAL_ARGS)

evaluate: setup ## accuracy on SKAB (its protocol): our models and baselines beside the published leaderboard
	@$(PY) -m training.evaluate skab

evaluate-simulator: setup ## accuracy on labelled simulator data: our models beside two baselines
	@$(PY) -m training.evaluate simulator

evaluate-all: setup ## every dataset at once, one table (SKAB, simulator, ops simulator, CSV folders): make evaluate-all EVAL_ARGS="--csv data/smd"
	@$(PY) -m training.evaluate all $(EVAL_ARGS)

evaluate-correlation: up ## cascades collapsed into one incident with the true root, unrelated failures kept apart (simulator runs through the job)
	@$(PY) -m training.evaluate_correlation $(EVAL_ARGS)

models: ## list model versions (* marks CURRENT)
	@$(PY) -m common.models list

submit: setup ## flink run the job on a cluster: make submit SUBMIT_ARGS="-m host:8081 -p 2 [--ship]"
	@$(PY) -m deploy.flink_run $(SUBMIT_ARGS)

upgrade: ## switch the running job to the CURRENT model / new code: stop with savepoint, resubmit from it
	@$(PY) -m deploy.local.stack upgrade

rollback: ## make the previously current model version current again
	@$(PY) -m common.models rollback

test: setup ## set up, lint, and run the whole test suite (starts the real stack it needs)
	@$(PY) -m ruff check . && $(PY) -m ruff format --check . >/dev/null \
	  || { echo "make test: lint failed (\`make format\` fixes most of it)" >&2; exit 1; }
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$rc

test-unit: setup ## only the fast tests that need no services
	@$(PY) -m pytest -m "not stack and not multihost" $(PYTEST_ARGS)

multihost: setup ## the cluster on 7 hosts of this machine (network namespaces; root): remote submit, a TaskManager host cut off, JobManager failover through ZooKeeper
	@$(PY) -m pytest -s tests/e2e/test_multihost.py $(PYTEST_ARGS)

bench: up ## the benchmark: throughput, latency, memory, the consumer-loop baseline (5M events; BENCH_ARGS), then sparse against dense input
	@$(PY) -m bench.pipeline $(BENCH_ARGS)
	@$(PY) -m bench.agents

bench-simulator: up ## simulator events/s into the local Kafka, 1 and 2 processes (10k devices)
	@$(PY) -m bench.simulator_throughput $(BENCH_ARGS)

bench-format: setup ## the telemetry-json format's CPU per message beside Flink's own JSON format (no stack needed)
	@$(PY) -m bench.format $(BENCH_ARGS)

bench-onnx: setup ## IsolationForest scoring: scikit-learn vs skl2onnx vs one-node ONNX (1000 trees)
	@$(PY) -m bench.onnx_scoring $(BENCH_ARGS)

bench-udf: setup ## the scoring UDF alone: vectorized ONNX vs per-row ONNX vs per-row scikit-learn
	@$(PY) -m bench.scoring_udf $(BENCH_ARGS)


bench-notifier: up ## one notifier cycle (read, correlate, record, plan) with 100 to 10,000 incidents in its horizon
	@$(PY) -m bench.notifier $(BENCH_ARGS)

bench-agents: up ## sparse (collectd, one metric a message) against dense (flat) input, with and without keyed counters
	@$(PY) -m bench.agents $(BENCH_ARGS)

bench-state: up ## the job's Flink state per stage once 1,000 devices have filled the context horizons
	@$(PY) -m bench.job_state $(BENCH_ARGS)

bench-reference: up ## the TaskManager's heap with the reference tables held whole against per-key cached (200,000 devices)
	@$(PY) -m bench.reference_cache $(BENCH_ARGS)

lint: setup ## ruff lint + format check
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup ## ruff format + autofix
	@$(PY) -m ruff format . && $(PY) -m ruff check --fix .

lock: ## re-pin every Python package (constraints.txt) from the current .venv
	@{ echo "# Every Python package of the project, pinned (pip freeze of a working install)."; \
	   echo "# Used as pip constraints by deploy/local/setup.sh; regenerate with \`make lock\`."; \
	   $(PY) -m pip freeze --exclude-editable; } > constraints.txt

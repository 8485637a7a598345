# `make run` and `make test` bootstrap everything they need into .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SDK    := sdk/js
NODE_STAMP := $(SDK)/node_modules/.package-lock.json
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test lint unit proto clean sdk sdk-check sdk-lint sdk-test chromium deps-system k8s-build k8s-up k8s-down k8s-image

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(VENV)/bin/webrtc-broker up --servers 2 --demo

# The suite runs under coverage (the broker's child processes too; settings in
# pyproject.toml); the report is printed whether or not a test failed.
test: lint sdk-check sdk-test chromium deps-system
	$(PY) -m tests.k8s.build build --optional
	rm -rf .cache/coverage && mkdir -p .cache/coverage
	$(VENV)/bin/coverage run -m pytest; status=$$?; \
		$(VENV)/bin/coverage combine -q && $(VENV)/bin/coverage report; exit $$status

# The in-process tests (pytest marker `unit`, set by folder in tests/conftest.py;
# also -m e2e, browser, k8s, helm): the quick loop while changing code.
unit: $(STAMP)
	$(VENV)/bin/pytest -m unit -q -n 3  # three processes: much of a unit test is waiting out a timeout

lint: $(STAMP) sdk-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

proto: $(STAMP)
	cd webrtc_broker/wire && PATH="$(abspath $(VENV))/bin:$$PATH" \
		$(abspath $(PY)) -m grpc_tools.protoc -I. --python_out=. --mypy_out=. broker.proto

# The browser SDK and the demo page's script, built from sdk/js into
# webrtc_broker/static (committed, so installs need no Node.js). `sdk-check`
# rebuilds and fails if the committed files were not current.
sdk: $(STAMP) $(NODE_STAMP)
	cd $(SDK) && PYTHON=$(abspath $(PY)) node scripts/build.mjs

sdk-check: $(STAMP) $(NODE_STAMP)
	cd $(SDK) && PYTHON=$(abspath $(PY)) node scripts/build.mjs --check

# The TypeScript's lint and format check (Biome, pinned by package-lock.json;
# `cd sdk/js && npm run format` applies its fixes), and its unit tests (Node's
# test runner over esbuild's output; the browser tests drive it in Chromium).
sdk-lint: $(NODE_STAMP)
	cd $(SDK) && node_modules/.bin/biome ci --colors=off .

sdk-test: $(STAMP) $(NODE_STAMP)
	cd $(SDK) && PYTHON=$(abspath $(PY)) node scripts/test.mjs

$(NODE_STAMP): $(SDK)/package-lock.json
	cd $(SDK) && npm ci --no-audit --no-fund
	touch $@

# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# Debian's packages the tests run, installed only when missing (no recommends:
# prometheus-node-exporter would take port 9100 on hosts with systemd):
# Prometheus for the metrics tests; containerd, runc, the CNI plugins, iptables
# and conntrack for the local Kubernetes node (nft removes the empty tables
# iptables-nft leaves behind); buildah and mmdebstrap for the
# broker's image; coturn (turnserver) for the TURN tests. On hosts with systemd, the prometheus package also starts a
# Prometheus service on :9090, the coordinator's default port:
# `systemctl disable --now prometheus` frees it (the tests run their own).
SYSTEM_TOOLS := prometheus:prometheus promtool:prometheus containerd:containerd \
	runc:runc iptables:iptables conntrack:conntrack buildah:buildah \
	mmdebstrap:mmdebstrap /usr/lib/cni/bridge:containernetworking-plugins \
	nft:nftables turnserver:coturn
deps-system:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do tool=$${pair%%:*}; \
		[ -x "$$tool" ] || command -v "$$tool" >/dev/null || echo "$${pair##*:}"; \
		done | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's $$missing"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends $$missing; \
	fi

# A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler; tests/k8s/). Built with Go from
# pinned module versions into ~/.cache/webrtc-broker (once per machine: many
# minutes); state and kubeconfig in .cache/k8s. `make k8s-up` then
# `export KUBECONFIG=$$PWD/.cache/k8s/kubeconfig`; the tests reuse a running one.
k8s-build: $(STAMP)
	$(PY) -m tests.k8s.build build

k8s-up: $(STAMP)
	$(PY) -m tests.k8s.cluster up

k8s-down: $(STAMP)
	$(PY) -m tests.k8s.cluster down

# The broker's image for the local cluster's node, from the Dockerfile with no
# registry: buildah on a Debian base made by mmdebstrap (tests/k8s/image.py;
# cached in ~/.cache/webrtc-broker/image-v1), imported into the node's
# containerd (namespace k8s.io) when one runs, else built only.
k8s-image: $(STAMP)
	$(PY) -m tests.k8s.image import --optional

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache $(SDK)/node_modules $(SDK)/src/gen $(SDK)/dist

